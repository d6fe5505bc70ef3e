//! The ledger's nouns, free of SQL: a job as intake records it ([`NewJob`]) and as it is
//! stored ([`JobRecord`]), the worker that runs it ([`WorkerId`]), and how an attempt
//! ended ([`Outcome`], what `worker::decide` returns and `store::settle` writes).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::model::{DeadReason, JobId, JobState};
use crate::schedule::FiredBy;

/// Identity of one worker process (one row in `workers`, heartbeating).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerId(pub Uuid);

impl WorkerId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for WorkerId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A job as intake records it.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Assigned by the producer.
    pub id: JobId,
    /// Validated kind.
    pub kind: String,
    /// Target queue.
    pub queue: String,
    /// Validated arguments.
    pub args: Value,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// `Some` for a job that waits (state `scheduled`); `None` runs now (`enqueued`).
    pub run_at: Option<DateTime<Utc>>,
    /// Per-job timeout override.
    pub timeout: Option<Duration>,
    /// Client-chosen dedupe key.
    pub idempotency_key: Option<String>,
    /// How long the key dedupes.
    pub idempotency_ttl: Duration,
    /// W3C trace context of the request that enqueued it.
    pub traceparent: Option<String>,
    /// The schedule slot this job was fired for (`None` for a job posted or enqueued
    /// by a handler).
    pub fired_by: Option<FiredBy>,
    /// Told of the job's final state by a `webhook.deliver` job (checked at intake).
    pub callback_url: Option<String>,
}

/// One job as stored.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    /// Id.
    pub id: JobId,
    /// Kind.
    pub kind: String,
    /// Queue.
    pub queue: String,
    /// Arguments.
    pub args: Value,
    /// Current state.
    pub state: JobState,
    /// Transitions so far (0 at intake, one more per state written): orders the job's
    /// live events ([`crate::JobEvent::seq`]).
    pub seq: u64,
    /// Attempts started so far.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When it runs (for scheduled and retrying jobs) or ran.
    pub run_at: DateTime<Utc>,
    /// Per-job timeout, in milliseconds.
    pub timeout_ms: Option<u32>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// The handler's result, once completed.
    pub result: Option<Value>,
    /// The latest failure.
    pub last_error: Option<String>,
    /// Whether cancellation was requested while running.
    pub cancel_requested: bool,
    /// Times replayed from the dead letters.
    pub replay_count: u32,
    /// Last replay.
    pub replayed_at: Option<DateTime<Utc>>,
    /// Who replayed it last.
    pub replayed_by: Option<String>,
    /// Trace context of the enqueuing request.
    pub traceparent: Option<String>,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// Last transition.
    pub updated_at: DateTime<Utc>,
    /// Last attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// Reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// The schedule slot it was fired for.
    pub fired_by: Option<FiredBy>,
}

/// How an attempt ended, as the executor decided (`worker::decide`).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Succeeded with this result.
    Completed {
        /// The handler's output.
        result: Value,
    },
    /// Failed; runs again after `delay` (from the moment the outcome commits).
    Retry {
        /// Why it failed.
        error: String,
        /// Backoff before the next attempt.
        delay: Duration,
    },
    /// Will not run again: attempts exhausted, permanent failure or unknown kind.
    Dead {
        /// Why it failed.
        error: String,
        /// Short machine-readable cause.
        reason: DeadReason,
    },
    /// Not ready; runs again after `delay` without consuming an attempt.
    Snooze {
        /// How long to wait.
        delay: Duration,
    },
}

impl Outcome {
    /// The name of the outcome for logs and metrics (`completed`, `retry`, `failed`,
    /// `snoozed`): the attempt row it becomes.
    pub fn attempt_outcome(&self) -> crate::AttemptOutcome {
        match self {
            Outcome::Completed { .. } => crate::AttemptOutcome::Completed,
            Outcome::Retry { .. } => crate::AttemptOutcome::Retry,
            Outcome::Dead { .. } => crate::AttemptOutcome::Failed,
            Outcome::Snooze { .. } => crate::AttemptOutcome::Snoozed,
        }
    }
}
