//! The executor's decision table: a handler's verdict, the attempt count and the kind's
//! retry policy in; the ledger outcome out. Pure, so every row is unit-tested.
//!
//! | verdict | outcome |
//! |---|---|
//! | `Ok(result)` | completed with result |
//! | `Retry`, timeout or panic, attempts left | retrying after the backoff |
//! | `Retry`, timeout or panic, attempts exhausted | dead (`attempts_exhausted`) |
//! | `Fail` | dead (`failed`) |
//! | `Snooze(d)` | scheduled after d, attempt not consumed |
//! | unknown kind | dead (`unknown_kind`) |

use jobs::{DeadReason, JobError, Outcome, RetryPolicy};
use serde_json::Value;

/// How one run of a handler ended, as seen from outside the handler.
#[derive(Debug)]
pub enum RunResult {
    /// The handler returned.
    Returned(Result<Value, JobError>),
    /// The handler ran past its timeout.
    TimedOut(std::time::Duration),
    /// The handler panicked; the message, when it was a string.
    Panicked(String),
    /// No handler is registered for the kind.
    UnknownKind(String),
}

/// Decides the ledger outcome of attempt `attempt` of `max_attempts`.
pub fn decide(
    run: RunResult,
    attempt: u32,
    max_attempts: u32,
    policy: &RetryPolicy,
    jitter: f64,
) -> Outcome {
    let retry = |error: String| {
        if attempt >= max_attempts {
            Outcome::Dead {
                error: format!("{error} (attempt {attempt} of {max_attempts}; no attempts left)"),
                reason: DeadReason::AttemptsExhausted,
            }
        } else {
            Outcome::Retry {
                error,
                delay: policy.delay_with(attempt, jitter),
            }
        }
    };
    match run {
        RunResult::Returned(Ok(result)) => Outcome::Completed { result },
        RunResult::Returned(Err(JobError::Retry(e))) => retry(error_chain(&*e)),
        RunResult::Returned(Err(JobError::Fail(e))) => Outcome::Dead {
            error: error_chain(&*e),
            reason: DeadReason::Failed,
        },
        RunResult::Returned(Err(JobError::Snooze { after })) => Outcome::Snooze { delay: after },
        RunResult::TimedOut(limit) => retry(format!("timed out after {}", human(limit))),
        RunResult::Panicked(message) => retry(format!("panicked: {message}")),
        RunResult::UnknownKind(kind) => Outcome::Dead {
            error: format!("unknown job kind {kind:?}: no handler is registered for it"),
            reason: DeadReason::UnknownKind,
        },
    }
}

/// An error and its sources, `outer: inner: root`.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

fn human(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        }
    }

    fn returned(result: Result<Value, JobError>, attempt: u32, max: u32, jitter: f64) -> Outcome {
        decide(RunResult::Returned(result), attempt, max, &policy(), jitter)
    }

    #[test]
    fn ok_completes_with_the_result() {
        let out = returned(Ok(Value::from(7)), 1, 3, 0.5);
        assert_eq!(
            out,
            Outcome::Completed {
                result: Value::from(7)
            }
        );
    }

    #[test]
    fn retry_with_attempts_left_backs_off_and_grows() {
        let first = returned(Err(JobError::retry("smtp 451")), 1, 5, 1.0);
        let second = returned(Err(JobError::retry("smtp 451")), 2, 5, 1.0);
        let (Outcome::Retry { delay: a, error }, Outcome::Retry { delay: b, .. }) = (first, second)
        else {
            panic!("expected retries");
        };
        assert_eq!(error, "smtp 451");
        assert_eq!(a, Duration::from_secs(1));
        assert_eq!(b, Duration::from_secs(2));
    }

    #[test]
    fn retry_on_the_last_attempt_is_dead() {
        let out = returned(Err(JobError::retry("boom")), 3, 3, 0.0);
        let Outcome::Dead { reason, error } = out else {
            panic!("{out:?}")
        };
        assert_eq!(reason, DeadReason::AttemptsExhausted);
        assert!(error.starts_with("boom"));
    }

    #[test]
    fn fail_is_dead_at_once() {
        let out = returned(Err(JobError::fail("550 no such user")), 1, 5, 0.0);
        assert_eq!(
            out,
            Outcome::Dead {
                error: "550 no such user".into(),
                reason: DeadReason::Failed
            }
        );
    }

    #[test]
    fn snooze_schedules_without_judging_attempts() {
        let out = returned(Err(JobError::snooze(Duration::from_secs(9))), 5, 5, 0.0);
        assert_eq!(
            out,
            Outcome::Snooze {
                delay: Duration::from_secs(9)
            }
        );
    }

    #[test]
    fn timeout_and_panic_are_failed_attempts_with_clear_errors() {
        let Outcome::Retry { error, .. } = decide(
            RunResult::TimedOut(Duration::from_secs(30)),
            1,
            2,
            &policy(),
            0.0,
        ) else {
            panic!("a timeout with attempts left retries")
        };
        assert_eq!(error, "timed out after 30s");
        let Outcome::Retry { error, .. } = decide(
            RunResult::Panicked("index out of bounds".into()),
            1,
            2,
            &policy(),
            0.0,
        ) else {
            panic!("a panic with attempts left retries")
        };
        assert_eq!(error, "panicked: index out of bounds");
        let Outcome::Dead { reason, .. } = decide(
            RunResult::TimedOut(Duration::from_millis(1500)),
            2,
            2,
            &policy(),
            0.0,
        ) else {
            panic!("a timeout on the last attempt is dead")
        };
        assert_eq!(reason, DeadReason::AttemptsExhausted);
    }

    #[test]
    fn unknown_kind_is_dead() {
        let out = decide(
            RunResult::UnknownKind("mystery".into()),
            1,
            5,
            &policy(),
            0.0,
        );
        assert!(matches!(
            out,
            Outcome::Dead {
                reason: DeadReason::UnknownKind,
                ..
            }
        ));
    }
}
