//! The contract between Conveyor and the code that does a job: [`JobArgs`] says what a
//! kind's arguments are and how they are checked, [`Handler`] does the work.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backoff::RetryPolicy;
use crate::error::{JobError, ValidationErrors};
use crate::model::JobId;

/// Per-kind defaults. Intake may override `queue` and `max_attempts` per job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobOptions {
    /// The queue jobs of this kind go to unless the request names another.
    pub queue: &'static str,
    /// Runs (attempts) before the job is dead. At least 1.
    pub max_attempts: u32,
    /// How long one attempt may run before it counts as failed.
    pub timeout: Duration,
    /// Delay between attempts.
    pub retry: RetryPolicy,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            queue: "default",
            max_attempts: 5,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// Arguments of one kind of job, serialized as JSON. Carry ids, not copies of rows.
///
/// ```
/// use jobs::{JobArgs, ValidationErrors};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Resize { image_id: u64, width: u32 }
///
/// impl JobArgs for Resize {
///     const KIND: &'static str = "image.resize";
///
///     fn validate(&self) -> Result<(), ValidationErrors> {
///         if self.width == 0 {
///             return Err(ValidationErrors::one("width", "must be at least 1"));
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait JobArgs: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Stable wire name, e.g. `order.process`. It is persisted in every job row and
    /// message: **never rename a kind** that has jobs in flight.
    const KIND: &'static str;

    /// Per-kind defaults (queue, attempts, timeout, backoff).
    fn options() -> JobOptions {
        JobOptions::default()
    }

    /// Checks beyond the shape, run at intake before anything is stored. Paths are
    /// relative to the args object (`items[2].quantity`).
    ///
    /// # Errors
    /// Every invalid field.
    fn validate(&self) -> Result<(), ValidationErrors> {
        Ok(())
    }
}

/// What a handler knows about the job it runs besides its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMeta {
    /// The job's id; stable across attempts and replays (use it as a dedupe key).
    pub id: JobId,
    /// The job's kind.
    pub kind: String,
    /// The queue it was consumed from.
    pub queue: String,
    /// This attempt's number, 1-based.
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// When the job was accepted.
    pub created_at: DateTime<Utc>,
    /// The worker running this attempt: a handler that settles its own job in its own
    /// transaction (`order.process`) names it, so only this attempt can settle it.
    pub worker: crate::WorkerId,
}

/// A job as a handler sees it: metadata plus typed arguments.
#[derive(Debug, Clone)]
pub struct Job<A> {
    /// Identity and attempt.
    pub meta: JobMeta,
    /// The validated arguments.
    pub args: A,
}

/// Does the work for one kind. Collaborators (a database port, a mailer) are fields,
/// injected at start-up. A handler returns a verdict and never touches the broker.
///
/// ```
/// use jobs::{Handler, Job, JobArgs, JobError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Ping { n: u32 }
/// impl JobArgs for Ping { const KIND: &'static str = "ping"; }
///
/// struct PingHandler;
/// impl Handler for PingHandler {
///     type Args = Ping;
///     async fn handle(&self, job: Job<Ping>) -> Result<serde_json::Value, JobError> {
///         if job.args.n == 0 {
///             return Err(JobError::fail("n must not be zero"));
///         }
///         Ok(serde_json::json!({ "pong": job.args.n }))
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// The kind's arguments.
    type Args: JobArgs;

    /// Runs one attempt. `Ok(result)` completes the job with `result`; an `Err` is the
    /// verdict ([`JobError`]). Must be safe to run more than once for one job: delivery
    /// is at least once.
    fn handle(
        &self,
        job: Job<Self::Args>,
    ) -> impl Future<Output = Result<serde_json::Value, JobError>> + Send;
}
