//! Kinds for Conveyor's own tests, registered only when `worker.test_kinds = true`.
//! They misbehave on purpose: sleep, fail a given number of times, fail permanently,
//! panic, or kill the worker process.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{JobError, ValidationErrors};
use crate::handler::{Handler, Job, JobArgs, JobOptions};

/// `test.sleep`: sleeps `ms`, then completes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sleep {
    /// Milliseconds to sleep.
    pub ms: u64,
    /// Fail (transiently) after sleeping instead of completing.
    #[serde(default)]
    pub fail: bool,
}

impl JobArgs for Sleep {
    const KIND: &'static str = "test.sleep";

    fn validate(&self) -> Result<(), ValidationErrors> {
        if self.ms > 600_000 {
            return Err(ValidationErrors::one("ms", "must be at most 600000"));
        }
        Ok(())
    }
}

/// Runs [`Sleep`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SleepHandler;

impl Handler for SleepHandler {
    type Args = Sleep;

    async fn handle(&self, job: Job<Sleep>) -> Result<Value, JobError> {
        tokio::time::sleep(Duration::from_millis(job.args.ms)).await;
        if job.args.fail {
            return Err(JobError::retry("test.sleep was asked to fail"));
        }
        Ok(json!({ "slept_ms": job.args.ms }))
    }
}

/// `test.flaky`: fails (transiently) on attempts `1..=failures`, then completes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flaky {
    /// Attempts that fail before one succeeds.
    pub failures: u32,
}

impl JobArgs for Flaky {
    const KIND: &'static str = "test.flaky";

    fn options() -> JobOptions {
        JobOptions {
            retry: crate::RetryPolicy {
                base: Duration::from_millis(200),
                cap: Duration::from_secs(5),
            },
            ..JobOptions::default()
        }
    }
}

/// Runs [`Flaky`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FlakyHandler;

impl Handler for FlakyHandler {
    type Args = Flaky;

    async fn handle(&self, job: Job<Flaky>) -> Result<Value, JobError> {
        if job.meta.attempt <= job.args.failures {
            return Err(JobError::retry(format!(
                "flaky failure on attempt {}",
                job.meta.attempt
            )));
        }
        Ok(json!({ "succeeded_on_attempt": job.meta.attempt }))
    }
}

/// `test.fail`: fails permanently with `message`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fail {
    /// The error.
    pub message: String,
}

impl JobArgs for Fail {
    const KIND: &'static str = "test.fail";
}

/// Runs [`Fail`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FailHandler;

impl Handler for FailHandler {
    type Args = Fail;

    async fn handle(&self, job: Job<Fail>) -> Result<Value, JobError> {
        Err(JobError::fail(job.args.message))
    }
}

/// `test.panic`: panics.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Panic {}

impl JobArgs for Panic {
    const KIND: &'static str = "test.panic";

    fn options() -> JobOptions {
        JobOptions {
            max_attempts: 2,
            retry: crate::RetryPolicy {
                base: Duration::from_millis(50),
                cap: Duration::from_millis(100),
            },
            ..JobOptions::default()
        }
    }
}

/// Runs [`Panic`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PanicHandler;

impl Handler for PanicHandler {
    type Args = Panic;

    #[allow(clippy::panic)]
    async fn handle(&self, _job: Job<Panic>) -> Result<Value, JobError> {
        panic!("test.panic asked to panic")
    }
}

/// `test.crash`: aborts the worker process, on every delivery (a crash loop).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crash {}

impl JobArgs for Crash {
    const KIND: &'static str = "test.crash";
}

/// Runs [`Crash`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CrashHandler;

impl Handler for CrashHandler {
    type Args = Crash;

    async fn handle(&self, _job: Job<Crash>) -> Result<Value, JobError> {
        tracing::error!("test.crash: aborting the worker process");
        std::process::abort()
    }
}

/// `test.snooze`: snoozes for `ms` on its first `times` runs, then completes. Runs are
/// counted in this process, so it is for in-process tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snooze {
    /// Runs that snooze before one completes.
    pub times: u32,
    /// Snooze length.
    pub ms: u64,
}

impl JobArgs for Snooze {
    const KIND: &'static str = "test.snooze";
}

/// Runs [`Snooze`].
#[derive(Debug, Default)]
pub struct SnoozeHandler {
    runs: std::sync::Mutex<std::collections::HashMap<crate::JobId, u32>>,
}

impl Handler for SnoozeHandler {
    type Args = Snooze;

    async fn handle(&self, job: Job<Snooze>) -> Result<Value, JobError> {
        let run = {
            // A poisoned lock only means another test thread panicked; the map is fine.
            let mut runs = self
                .runs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let run = runs.entry(job.meta.id).or_insert(0);
            *run += 1;
            *run
        };
        if run <= job.args.times {
            return Err(JobError::snooze(Duration::from_millis(job.args.ms)));
        }
        Ok(json!({ "runs": run, "attempt": job.meta.attempt }))
    }
}
