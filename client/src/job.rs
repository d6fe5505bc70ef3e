//! What the API answers about jobs: [`Accepted`] after an enqueue, [`Job`] when read,
//! [`Cancelled`] and [`Waited`].

use chrono::{DateTime, Utc};
use jobs::{JobId, JobState};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// An enqueued job: its id and its state right after intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Accepted {
    /// The job's id.
    pub id: JobId,
    /// `enqueued`, or `scheduled` for a delayed job (or any state, for an existing job).
    pub state: JobState,
    /// True when the idempotency key named a job enqueued before (`200`), which this
    /// call did not enqueue again.
    #[serde(skip)]
    pub existing: bool,
}

/// A job as the API shows it (`GET /v1/jobs/{id}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Job {
    /// Id.
    pub id: JobId,
    /// Kind.
    pub kind: String,
    /// Queue.
    pub queue: String,
    /// Arguments (`null` when the key may not read them: see `redacted`).
    pub args: Value,
    /// State.
    pub state: JobState,
    /// Attempts started.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Next (or last) run time.
    pub run_at: DateTime<Utc>,
    /// The handler's result once completed (`None` when redacted).
    pub result: Option<Value>,
    /// The latest error.
    pub last_error: Option<String>,
    /// Its idempotency key.
    pub idempotency_key: Option<String>,
    /// W3C trace context of the request that enqueued it.
    pub traceparent: Option<String>,
    /// Times replayed.
    pub replay_count: u32,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Last attempt's start.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// True when `args` and `result` were withheld (the key lacks `jobs:read_args`).
    #[serde(default)]
    pub redacted: bool,
}

impl Job {
    /// True once the job is `completed`, `dead` or `cancelled`: it will not change
    /// again unless an operator replays or retries it.
    pub fn is_final(&self) -> bool {
        is_final(self.state)
    }

    /// The result decoded as `T` (`None` until completed, or when redacted).
    ///
    /// # Errors
    /// When the result is not a `T`.
    pub fn result_as<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        self.result.clone().map(serde_json::from_value).transpose()
    }
}

/// True for the states a job leaves only by an operator's replay or retry.
pub(crate) fn is_final(state: JobState) -> bool {
    matches!(
        state,
        JobState::Completed | JobState::Dead | JobState::Cancelled
    )
}

/// The answer to a cancel.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancelled {
    /// It was waiting and will not run (`200`).
    Cancelled(Job),
    /// It is running: this attempt finishes and no retry follows (`202`).
    Requested(Job),
}

impl Cancelled {
    /// The job as it is after the cancel.
    pub fn job(&self) -> &Job {
        match self {
            Cancelled::Cancelled(job) | Cancelled::Requested(job) => job,
        }
    }
}

/// The answer to [`Client::wait`](crate::Client::wait): the job, and whether it was
/// final when the wait ended (`false`: the bound passed first).
#[derive(Debug, Clone, PartialEq)]
pub struct Waited {
    /// The job as last seen.
    pub job: Job,
    /// True when the job is completed, dead or cancelled.
    pub is_final: bool,
}

/// `GET /v1/jobs/{id}?wait=…`: the job's usual body plus `final`.
#[derive(Deserialize)]
pub(crate) struct WaitBody {
    #[serde(flatten)]
    pub(crate) job: Job,
    /// Absent when the server does not long-poll (it ignored `wait`).
    #[serde(rename = "final")]
    pub(crate) is_final: Option<bool>,
}

/// `POST /v1/jobs/batch`'s answer.
#[derive(Deserialize)]
pub(crate) struct BatchAccepted {
    pub(crate) ids: Vec<JobId>,
}
