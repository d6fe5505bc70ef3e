//! A job to enqueue: its kind and arguments ([`JobRequest`]) and the options the intake
//! accepts ([`EnqueueOptions`]), serialized as the body of `POST /v1/jobs`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::{JobArgs, ValidationErrors};
use serde::Serialize;
use serde_json::Value;

use crate::Error;

/// Longest delay (or distance of `run_at`) the intake accepts: a year.
pub const MAX_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest per-job timeout the intake accepts: a day.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);
/// Longest idempotency key the intake accepts, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// Options of one job; each is optional and overrides the kind's default. These are the
/// options the intake accepts (`POST /v1/jobs`), no more.
///
/// ```
/// use std::time::Duration;
/// use conveyor_client::EnqueueOptions;
///
/// let options = EnqueueOptions::new()
///     .delay(Duration::from_secs(60))
///     .idempotency_key("order-A-1001")
///     .max_attempts(3);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueOptions {
    /// Queue override (`a-z 0-9 _ -`, up to 64).
    pub queue: Option<String>,
    /// Attempts override, 1 to the server's `producer.max_attempts_limit` (100).
    pub max_attempts: Option<u32>,
    /// When the job runs: at an instant, or after a delay (one or the other).
    pub when: Option<When>,
    /// Per-attempt timeout override (at most a day).
    pub timeout: Option<Duration>,
    /// Dedupe key: the same key returns the same job; the same key with a different
    /// job is a `409`.
    pub idempotency_key: Option<String>,
    /// An `http(s)` URL told of the job's final state by a signed POST.
    pub callback_url: Option<String>,
}

/// When a job may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// No earlier than this instant.
    At(DateTime<Utc>),
    /// No earlier than this long after the intake accepts it.
    After(Duration),
}

impl EnqueueOptions {
    /// No overrides: the kind's defaults, due now.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends the job to `queue` instead of its kind's.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Allows `n` attempts instead of the kind's default.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Runs the job no earlier than `delay` from now (millisecond precision).
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.when = Some(When::After(delay));
        self
    }

    /// Runs the job no earlier than `at`.
    #[must_use]
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.when = Some(When::At(at));
        self
    }

    /// Bounds one attempt by `timeout` instead of the kind's default.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Dedupes by `key`: enqueueing again with the same key answers the first job.
    #[must_use]
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Has Conveyor POST the job's final state to `url` (signed, as webhooks are).
    #[must_use]
    pub fn callback_url(mut self, url: impl Into<String>) -> Self {
        self.callback_url = Some(url.into());
        self
    }

    /// The bounds the intake enforces that need no server state, checked here so a bad
    /// option fails before a round trip. The server checks everything again.
    pub(crate) fn check(&self, errors: &mut ValidationErrors) {
        if let Some(queue) = &self.queue
            && !valid_queue_name(queue)
        {
            errors.add(
                "queue",
                "must be 1 to 64 characters of a-z, 0-9, '_' and '-'",
            );
        }
        if self.max_attempts == Some(0) {
            errors.add("max_attempts", "must be at least 1");
        }
        if let Some(timeout) = self.timeout
            && (timeout < Duration::from_millis(1) || timeout > MAX_TIMEOUT)
        {
            errors.add("timeout_ms", "must be between 1 and 86400000 (one day)");
        }
        match self.when {
            Some(When::After(delay)) if delay > MAX_DELAY => {
                errors.add("delay_ms", "must be at most a year");
            }
            Some(When::At(at)) if at - Utc::now() > chrono_max_delay() => {
                errors.add("run_at", "must be within a year from now");
            }
            _ => {}
        }
        if let Some(key) = &self.idempotency_key
            && (key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control))
        {
            errors.add(
                "idempotency_key",
                "must be 1 to 255 characters, without control characters",
            );
        }
    }
}

fn chrono_max_delay() -> chrono::Duration {
    chrono::Duration::from_std(MAX_DELAY).unwrap_or(chrono::Duration::MAX)
}

/// The intake's queue-name rule: 1 to 64 of `a-z 0-9 _ -`.
pub(crate) fn valid_queue_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// One job to enqueue: a kind, its arguments as JSON and its options. Made from typed
/// arguments ([`JobRequest::new`], validated by the kind's own rules) or from a kind
/// name and JSON ([`JobRequest::raw`], validated by the server alone).
///
/// ```
/// use conveyor_client::{EnqueueOptions, JobRequest};
/// use jobs::kinds::order::{CustomerArgs, LineArgs, ProcessOrder};
///
/// let order = ProcessOrder {
///     order_id: "A-1001".into(),
///     customer: CustomerArgs { email: "ada@example.com".into(), name: "Ada".into() },
///     items: vec![LineArgs { sku: "MUG-BLUE".into(), quantity: 2 }],
///     currency: None,
/// };
/// let typed = JobRequest::new(&order)?.with(EnqueueOptions::new().idempotency_key("A-1001"));
/// let raw = JobRequest::raw("noop", serde_json::json!({}));
/// assert_eq!(typed.kind(), "order.process");
/// # Ok::<(), conveyor_client::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct JobRequest {
    kind: String,
    args: Value,
    options: EnqueueOptions,
}

impl JobRequest {
    /// A job of `A`'s kind with these arguments, checked by [`JobArgs::validate`].
    ///
    /// # Errors
    /// [`Error::Invalid`] with every broken rule (paths under `args.`), or when the
    /// arguments do not serialize to a JSON object.
    pub fn new<A: JobArgs>(args: &A) -> Result<Self, Error> {
        args.validate()
            .map_err(|e| Error::Invalid(e.prefixed("args")))?;
        let args = serde_json::to_value(args).map_err(|e| {
            Error::Invalid(ValidationErrors::one(
                "args",
                format!("does not serialize: {e}"),
            ))
        })?;
        Ok(Self::raw(A::KIND, args))
    }

    /// A job of `kind` with `args` as they are: for kinds this crate does not know.
    /// Only the server checks them.
    pub fn raw(kind: impl Into<String>, args: Value) -> Self {
        Self {
            kind: kind.into(),
            args,
            options: EnqueueOptions::default(),
        }
    }

    /// The same job with `options`.
    #[must_use]
    pub fn with(mut self, options: EnqueueOptions) -> Self {
        self.options = options;
        self
    }

    /// The job's kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The job's arguments.
    pub fn args(&self) -> &Value {
        &self.args
    }

    /// The job's options.
    pub fn options(&self) -> &EnqueueOptions {
        &self.options
    }

    /// Checks the options' bounds and that the arguments are an object.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let mut errors = ValidationErrors::new();
        if self.kind.is_empty() {
            errors.add("kind", "must not be empty");
        }
        if !self.args.is_object() {
            errors.add("args", "must be a JSON object");
        }
        self.options.check(&mut errors);
        errors.into_result().map_err(Error::Invalid)
    }

    /// The `POST /v1/jobs` body.
    pub(crate) fn body(&self) -> WireJob<'_> {
        let (run_at, delay_ms) = match self.options.when {
            Some(When::At(at)) => (Some(at), None),
            Some(When::After(delay)) => (None, Some(millis(delay))),
            None => (None, None),
        };
        WireJob {
            kind: &self.kind,
            args: &self.args,
            queue: self.options.queue.as_deref(),
            max_attempts: self.options.max_attempts,
            idempotency_key: self.options.idempotency_key.as_deref(),
            run_at,
            delay_ms,
            timeout_ms: self.options.timeout.map(millis),
            callback_url: self.options.callback_url.as_deref(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The intake's `CreateJobRequest`, as sent: absent options are left out.
#[derive(Debug, Serialize)]
pub(crate) struct WireJob<'a> {
    kind: &'a str,
    args: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_url: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use jobs::kinds::order::{CustomerArgs, LineArgs, ProcessOrder};
    use serde_json::json;

    use super::*;

    fn order(quantity: i64) -> ProcessOrder {
        ProcessOrder {
            order_id: "A-1".into(),
            customer: CustomerArgs {
                email: "ada@example.com".into(),
                name: "Ada".into(),
            },
            items: vec![LineArgs {
                sku: "MUG".into(),
                quantity,
            }],
            currency: None,
        }
    }

    #[test]
    fn typed_args_are_checked_by_the_kinds_rules_before_sending() {
        let Err(Error::Invalid(errors)) = JobRequest::new(&order(0)) else {
            panic!("a zero quantity is refused");
        };

        assert_eq!(errors.0[0].field, "args.items[0].quantity");
    }

    #[test]
    fn the_body_carries_the_kind_the_args_and_only_the_options_given() {
        let request = JobRequest::new(&order(2)).unwrap().with(
            EnqueueOptions::new()
                .delay(Duration::from_millis(1500))
                .idempotency_key("k"),
        );

        let body = serde_json::to_value(request.body()).unwrap();

        assert_eq!(
            body,
            json!({"kind": "order.process",
                   "args": {"order_id": "A-1",
                            "customer": {"email": "ada@example.com", "name": "Ada"},
                            "items": [{"sku": "MUG", "quantity": 2}]},
                   "delay_ms": 1500, "idempotency_key": "k"})
        );
    }

    #[test]
    fn options_out_of_the_intakes_bounds_are_refused_each_named() {
        let request = JobRequest::raw("noop", json!([])).with(
            EnqueueOptions::new()
                .queue("Bad Queue")
                .max_attempts(0)
                .timeout(Duration::from_secs(86_401))
                .delay(MAX_DELAY + Duration::from_secs(1))
                .idempotency_key(""),
        );

        let Err(Error::Invalid(errors)) = request.check() else {
            panic!("refused");
        };
        let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();

        assert_eq!(
            fields,
            [
                "args",
                "queue",
                "max_attempts",
                "timeout_ms",
                "delay_ms",
                "idempotency_key"
            ]
        );
    }
}
