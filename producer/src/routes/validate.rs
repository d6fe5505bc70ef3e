//! The request → job conversion, pure: everything it needs is passed in (the
//! [`Catalog`], the [`Limits`], the current time, the headers' values already read), so
//! every rule is unit-tested without a database, a broker or a clock.

use std::time::Duration;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use jobs::NewJob;
use jobs::{Catalog, JobId, ValidationErrors};
use serde_json::Value;

use super::wire::CreateJobRequest;
use crate::ProducerSettings;

/// Longest accepted delay or distance of `run_at` into the future.
pub const MAX_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest accepted idempotency key.
pub const MAX_KEY_LEN: usize = 255;
/// Longest accepted per-job timeout, in milliseconds (one day).
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// The configured limits a request is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `max_attempts` a request may ask for (`producer.max_attempts_limit`).
    pub max_attempts: u32,
    /// How long an idempotency key dedupes (`producer.idempotency_ttl_secs`).
    pub idempotency_ttl: Duration,
}

impl Limits {
    /// The limits `settings` configure.
    pub fn of(settings: &ProducerSettings) -> Self {
        Self {
            max_attempts: settings.max_attempts_limit,
            idempotency_ttl: Duration::from_secs(settings.idempotency_ttl_secs),
        }
    }
}

/// What a request's headers add to its jobs, already read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FromHeaders {
    /// The `Idempotency-Key` header (see [`header_key`]); only single-job requests have
    /// one.
    pub idempotency_key: Option<String>,
    /// The W3C trace context the jobs carry.
    pub traceparent: Option<String>,
}

/// Converts requests into jobs: the catalog and limits to check against, and the
/// instant that `delay_ms` counts from.
#[derive(Debug, Clone, Copy)]
pub struct Intake<'a> {
    /// Kinds intake accepts.
    pub catalog: &'a Catalog,
    /// The configured bounds.
    pub limits: Limits,
    /// Now.
    pub now: DateTime<Utc>,
}

impl Intake<'_> {
    /// Validates `request` into a job to record, with a fresh id. Every broken rule is
    /// reported at once, each with its field path (`args.items[0].sku`).
    ///
    /// # Errors
    /// Every invalid field, in the order: `kind`, `args…`, `queue`, `max_attempts`,
    /// `timeout_ms`, `callback_url` (its text; where it resolves is checked by
    /// [`check_callback`]), `run_at`/`delay_ms`, `idempotency_key`.
    pub fn job(
        &self,
        request: CreateJobRequest,
        headers: FromHeaders,
    ) -> Result<NewJob, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let args = request
            .args
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
        let spec = match self.catalog.get(&request.kind) {
            Ok(spec) => Some(*spec),
            Err(_) => {
                errors.add(
                    "kind",
                    format!(
                        "unknown job kind {:?}; known kinds: {}",
                        request.kind,
                        self.catalog.kinds().join(", ")
                    ),
                );
                None
            }
        };
        if let Some(spec) = &spec
            && let Err(e) = spec.validate(&args)
        {
            errors.extend(e.prefixed("args"));
        }
        if let Some(path) = nul_in(&args, "args") {
            errors.add(
                &path,
                "must not contain the NUL character (\\u0000): the ledger cannot store it",
            );
        }
        if let Some(queue) = &request.queue
            && !broker::topology::valid_queue_name(queue)
        {
            errors.add(
                "queue",
                "must be 1 to 64 characters of a-z, 0-9, '_' and '-'",
            );
        }
        let limit = self.limits.max_attempts;
        if let Some(n) = request.max_attempts
            && !(1..=limit).contains(&n)
        {
            errors.add("max_attempts", format!("must be between 1 and {limit}"));
        }
        if let Some(ms) = request.timeout_ms
            && !(1..=MAX_TIMEOUT_MS).contains(&ms)
        {
            errors.add("timeout_ms", "must be between 1 and 86400000 (one day)");
        }
        if request.kind == jobs::kinds::webhook::KIND {
            errors.add(
                "kind",
                "webhook.deliver jobs are made by Conveyor for webhooks; they cannot be enqueued",
            );
        }
        if let Some(url) = &request.callback_url
            && let Err(e) = jobs::kinds::webhook::parse_url(url)
        {
            errors.add("callback_url", e);
        }
        let run_at = self.run_at(request.run_at, request.delay_ms, &mut errors);
        let key = idempotency_key(headers.idempotency_key, request.idempotency_key)
            .map_err(|e| errors.extend(e))
            .ok()
            .flatten();
        errors.into_result()?;
        let Some(spec) = spec else {
            // Unreachable: an unknown kind is an error above.
            return Err(ValidationErrors::one("kind", "unknown"));
        };
        Ok(NewJob {
            id: JobId::new(),
            kind: request.kind,
            queue: request
                .queue
                .unwrap_or_else(|| spec.options.queue.to_owned()),
            args,
            max_attempts: request.max_attempts.unwrap_or(spec.options.max_attempts),
            run_at,
            timeout: request.timeout_ms.map(Duration::from_millis),
            idempotency_key: key,
            idempotency_ttl: self.limits.idempotency_ttl,
            traceparent: headers.traceparent,
            fired_by: None,
            callback_url: request.callback_url,
        })
    }

    /// When the job is due: `None` for now (an `enqueued` job), `Some` for a
    /// `scheduled` one. A `run_at` in the past stays a scheduled job due at once.
    fn run_at(
        &self,
        run_at: Option<DateTime<Utc>>,
        delay_ms: Option<u64>,
        errors: &mut ValidationErrors,
    ) -> Option<DateTime<Utc>> {
        let max = chrono::Duration::from_std(MAX_DELAY).unwrap_or(chrono::Duration::MAX);
        match (run_at, delay_ms) {
            (Some(_), Some(_)) => {
                errors.add("delay_ms", "give either run_at or delay_ms, not both");
                None
            }
            (Some(at), None) => {
                if at - self.now > max {
                    errors.add("run_at", "must be within a year from now");
                }
                Some(at)
            }
            (None, Some(ms)) => {
                if Duration::from_millis(ms) > MAX_DELAY {
                    errors.add("delay_ms", "must be at most a year");
                    None
                } else if ms == 0 {
                    None
                } else {
                    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
                    Some(self.now + chrono::Duration::milliseconds(ms))
                }
            }
            (None, None) => None,
        }
    }
}

/// Checks where a job's `callback_url` resolves (after [`Intake::job`] checked its
/// text), under the intake's target policy.
///
/// # Errors
/// `callback_url` (prefixed with `prefix`, as `jobs[2].`), when it does not resolve or
/// resolves to a refused address.
pub async fn check_callback(
    policy: &jobs::kinds::webhook::TargetPolicy,
    job: &NewJob,
    prefix: &str,
) -> Result<(), ValidationErrors> {
    match &job.callback_url {
        Some(url) => {
            access::webhooks::check_target(policy, &format!("{prefix}callback_url"), url).await
        }
        None => Ok(()),
    }
}

/// The `Idempotency-Key` header's value, if sent.
///
/// # Errors
/// A value that is not visible ASCII, named `Idempotency-Key`.
pub fn header_key(headers: &HeaderMap) -> Result<Option<String>, ValidationErrors> {
    headers
        .get("idempotency-key")
        .map(|value| {
            value
                .to_str()
                .map(str::to_owned)
                .map_err(|_| ValidationErrors::one("Idempotency-Key", "must be visible ASCII"))
        })
        .transpose()
}

/// The job's idempotency key: the header's or the body's (they must agree when both are
/// given), 1 to [`MAX_KEY_LEN`] characters without control characters.
fn idempotency_key(
    header: Option<String>,
    body: Option<String>,
) -> Result<Option<String>, ValidationErrors> {
    let key = match (header, body) {
        (Some(h), Some(b)) if h != b => {
            return Err(ValidationErrors::one(
                "idempotency_key",
                "differs from the Idempotency-Key header",
            ));
        }
        (Some(h), _) => Some(h),
        (None, b) => b,
    };
    if let Some(key) = &key
        && (key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control))
    {
        return Err(ValidationErrors::one(
            "idempotency_key",
            format!("must be 1 to {MAX_KEY_LEN} characters, without control characters"),
        ));
    }
    Ok(key)
}

/// The path of the first string (value or key) in `value` holding a NUL character,
/// which Postgres refuses in `jsonb`.
pub(crate) fn nul_in(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::String(s) => s.contains('\0').then(|| path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(path.to_owned())
            } else {
                nul_in(item, &format!("{path}.{key}"))
            }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobs::kinds::{noop::Noop, order::ProcessOrder, testing::Sleep};
    use serde_json::json;

    fn catalog() -> Catalog {
        let mut catalog = Catalog::new();
        catalog
            .add::<Noop>()
            .and_then(|c| c.add::<Sleep>())
            .and_then(|c| c.add::<ProcessOrder>())
            .unwrap();
        catalog
    }

    fn now() -> DateTime<Utc> {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }

    const LIMITS: Limits = Limits {
        max_attempts: 10,
        idempotency_ttl: Duration::from_secs(3600),
    };

    fn request(body: Value) -> CreateJobRequest {
        serde_json::from_value(body).unwrap()
    }

    fn convert(body: Value, headers: FromHeaders) -> Result<NewJob, ValidationErrors> {
        let catalog = catalog();
        let intake = Intake {
            catalog: &catalog,
            limits: LIMITS,
            now: now(),
        };
        intake.job(request(body), headers)
    }

    fn errors(body: Value) -> Vec<(String, String)> {
        errors_with(body, FromHeaders::default())
    }

    fn errors_with(body: Value, headers: FromHeaders) -> Vec<(String, String)> {
        convert(body, headers)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    fn fields(body: Value) -> Vec<String> {
        errors(body).into_iter().map(|(field, _)| field).collect()
    }

    #[test]
    fn a_valid_request_takes_the_kinds_defaults_and_the_limits() {
        let job = convert(
            json!({"kind": "order.process", "args": {"order_id": "A-1", "customer": {"email": "a@example.com", "name": "Ada"}, "items": [{"sku": "MUG", "quantity": 1}]}}),
            FromHeaders {
                idempotency_key: None,
                traceparent: Some("00-trace".into()),
            },
        )
        .unwrap();
        assert_eq!(job.kind, "order.process");
        assert_eq!(job.queue, "orders");
        assert_eq!(job.max_attempts, 5);
        assert_eq!(job.run_at, None);
        assert_eq!(job.timeout, None);
        assert_eq!(job.idempotency_key, None);
        assert_eq!(job.idempotency_ttl, Duration::from_secs(3600));
        assert_eq!(job.traceparent.as_deref(), Some("00-trace"));
    }

    #[test]
    fn overrides_replace_the_kinds_defaults() {
        let job = convert(
            json!({"kind": "noop", "queue": "bulk_1", "max_attempts": 10, "timeout_ms": 86_400_000}),
            FromHeaders::default(),
        )
        .unwrap();
        assert_eq!(job.args, json!({}), "args default to an empty object");
        assert_eq!(job.queue, "bulk_1");
        assert_eq!(job.max_attempts, 10);
        assert_eq!(job.timeout, Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn an_unknown_kind_names_it_and_lists_the_known_ones() {
        let errors = errors(json!({"kind": "no.such.kind"}));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "kind");
        assert!(errors[0].1.contains("\"no.such.kind\""), "{errors:?}");
        assert!(
            errors[0].1.contains("noop, order.process, test.sleep"),
            "{errors:?}"
        );
    }

    #[test]
    fn bad_args_are_named_by_their_path_under_args() {
        assert_eq!(fields(json!({"kind": "noop", "args": [1]})), ["args"]);
        assert_eq!(
            fields(json!({"kind": "test.sleep", "args": {"ms": "soon"}})),
            ["args.ms"]
        );
        assert_eq!(
            errors(json!({"kind": "test.sleep", "args": {}})),
            [("args.ms".to_owned(), "is required".to_owned())]
        );
        assert_eq!(
            errors(json!({"kind": "test.sleep", "args": {"ms": 999_999_999}})),
            [("args.ms".to_owned(), "must be at most 600000".to_owned())]
        );
        let order = fields(
            json!({"kind": "order.process", "args": {"order_id": "A-1", "customer": {"email": "a@example.com", "name": "Ada"}, "items": [{"sku": "MUG", "quantity": 0}]}}),
        );
        assert_eq!(order, ["args.items[0].quantity"]);
    }

    #[test]
    fn a_nul_character_anywhere_in_args_is_named_by_its_path() {
        assert_eq!(
            fields(json!({"kind": "noop", "args": {"items": [{"note": "a\u{0}b"}]}})),
            ["args.items[0].note"]
        );
        assert_eq!(
            fields(json!({"kind": "noop", "args": {"k\u{0}ey": 1}})),
            ["args"]
        );
        assert_eq!(
            fields(json!({"kind": "noop", "args": {"list": ["fine", "\u{0}"]}})),
            ["args.list[1]"]
        );
    }

    #[test]
    fn a_queue_name_outside_the_alphabet_is_refused() {
        assert_eq!(
            fields(json!({"kind": "noop", "queue": "Not A Queue"})),
            ["queue"]
        );
        assert_eq!(fields(json!({"kind": "noop", "queue": ""})), ["queue"]);
        assert!(
            convert(
                json!({"kind": "noop", "queue": "a-b_c9"}),
                FromHeaders::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn max_attempts_must_be_within_one_and_the_limit() {
        assert_eq!(
            errors(json!({"kind": "noop", "max_attempts": 0})),
            [(
                "max_attempts".to_owned(),
                "must be between 1 and 10".to_owned()
            )]
        );
        assert_eq!(
            fields(json!({"kind": "noop", "max_attempts": 11})),
            ["max_attempts"]
        );
        let job = convert(
            json!({"kind": "noop", "max_attempts": 1}),
            FromHeaders::default(),
        );
        assert_eq!(job.unwrap().max_attempts, 1);
    }

    #[test]
    fn timeout_ms_must_be_within_a_millisecond_and_a_day() {
        assert_eq!(
            fields(json!({"kind": "noop", "timeout_ms": 0})),
            ["timeout_ms"]
        );
        assert_eq!(
            fields(json!({"kind": "noop", "timeout_ms": 86_400_001})),
            ["timeout_ms"]
        );
        let job = convert(
            json!({"kind": "noop", "timeout_ms": 1}),
            FromHeaders::default(),
        );
        assert_eq!(job.unwrap().timeout, Some(Duration::from_millis(1)));
    }

    #[test]
    fn run_at_and_delay_ms_are_exclusive_and_bounded_by_a_year() {
        assert_eq!(
            errors(json!({"kind": "noop", "run_at": "2026-11-26T00:00:00Z", "delay_ms": 5})),
            [(
                "delay_ms".to_owned(),
                "give either run_at or delay_ms, not both".to_owned()
            )]
        );
        assert_eq!(
            fields(json!({"kind": "noop", "run_at": "2028-01-01T00:00:00Z"})),
            ["run_at"]
        );
        assert_eq!(
            fields(json!({"kind": "noop", "delay_ms": 366_u64 * 86_400_000 + 1})),
            ["delay_ms"]
        );
    }

    #[test]
    fn delay_ms_counts_from_now_and_zero_means_now() {
        let delayed = convert(
            json!({"kind": "noop", "delay_ms": 1500}),
            FromHeaders::default(),
        );
        assert_eq!(
            delayed.unwrap().run_at,
            Some(now() + chrono::Duration::milliseconds(1500))
        );
        let at_once = convert(
            json!({"kind": "noop", "delay_ms": 0}),
            FromHeaders::default(),
        );
        assert_eq!(at_once.unwrap().run_at, None);
    }

    #[test]
    fn a_run_at_in_the_past_is_a_scheduled_job_due_at_once() {
        let past = convert(
            json!({"kind": "noop", "run_at": "2020-01-01T00:00:00Z"}),
            FromHeaders::default(),
        );
        assert_eq!(
            past.unwrap().run_at,
            Some("2020-01-01T00:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn the_idempotency_key_comes_from_the_header_or_the_body_and_they_must_agree() {
        let header = |key: &str| FromHeaders {
            idempotency_key: Some(key.to_owned()),
            traceparent: None,
        };
        let from_header = convert(json!({"kind": "noop"}), header("h-1")).unwrap();
        assert_eq!(from_header.idempotency_key.as_deref(), Some("h-1"));
        let from_body = convert(
            json!({"kind": "noop", "idempotency_key": "b-1"}),
            FromHeaders::default(),
        )
        .unwrap();
        assert_eq!(from_body.idempotency_key.as_deref(), Some("b-1"));
        let agreeing = convert(json!({"kind": "noop", "idempotency_key": "k"}), header("k"));
        assert_eq!(agreeing.unwrap().idempotency_key.as_deref(), Some("k"));
        assert_eq!(
            errors_with(json!({"kind": "noop", "idempotency_key": "b"}), header("h")),
            [(
                "idempotency_key".to_owned(),
                "differs from the Idempotency-Key header".to_owned()
            )]
        );
    }

    #[test]
    fn an_idempotency_key_must_be_short_and_free_of_control_characters() {
        let long = "k".repeat(MAX_KEY_LEN + 1);
        for key in ["", "tab\there", long.as_str()] {
            assert_eq!(
                fields(json!({"kind": "noop", "idempotency_key": key})),
                ["idempotency_key"],
                "{key:?}"
            );
        }
        let longest = "k".repeat(MAX_KEY_LEN);
        assert!(
            convert(
                json!({"kind": "noop", "idempotency_key": longest}),
                FromHeaders::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn every_broken_rule_is_reported_at_once_in_field_order() {
        let fields = fields(json!({
            "kind": "test.sleep",
            "args": {"ms": "x"},
            "queue": "Bad Queue",
            "max_attempts": 0,
            "timeout_ms": 0,
            "run_at": "2030-01-01T00:00:00Z",
            "delay_ms": 5,
            "idempotency_key": "",
        }));
        assert_eq!(
            fields,
            [
                "args.ms",
                "queue",
                "max_attempts",
                "timeout_ms",
                "delay_ms",
                "idempotency_key"
            ]
        );
    }

    #[test]
    fn the_header_key_must_be_visible_ascii() {
        let mut headers = HeaderMap::new();
        assert_eq!(header_key(&headers).unwrap(), None);
        headers.insert("idempotency-key", "abc".parse().unwrap());
        assert_eq!(header_key(&headers).unwrap().as_deref(), Some("abc"));
        headers.insert(
            "idempotency-key",
            axum::http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        let err = header_key(&headers).unwrap_err();
        assert_eq!(err.0[0].field, "Idempotency-Key");
    }
}
