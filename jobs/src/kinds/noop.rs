//! `noop`: does nothing and completes. For smoke tests and benchmarks: it measures
//! Conveyor itself, with no business logic in the way. Accepts any JSON object as args
//! (ignored), so a benchmark can choose its payload size.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::JobError;
use crate::handler::{Handler, Job, JobArgs};

/// Arguments of `noop`: any JSON object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Noop(pub Map<String, Value>);

impl JobArgs for Noop {
    const KIND: &'static str = "noop";
}

/// Completes at once with a `null` result.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopHandler;

impl Handler for NoopHandler {
    type Args = Noop;

    async fn handle(&self, _job: Job<Noop>) -> Result<Value, JobError> {
        Ok(Value::Null)
    }
}
