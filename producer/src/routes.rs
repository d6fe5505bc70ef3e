//! The intake's handlers and wire types.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use jobs::{Envelope, JobId, JobRecord, JobState, NewJob, ValidationErrors};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::Insert;

use crate::AppState;
use crate::auth::{Auth, RequestId};
use crate::guard;
use crate::problem::{ApiError, Problem};
use access::Scope;

/// Longest accepted delay or distance of `run_at` into the future.
const MAX_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest accepted idempotency key.
const MAX_KEY_LEN: usize = 255;

/// `POST /v1/jobs` body. Unknown fields are refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobRequest {
    /// The job's kind (`noop`, `order.process`, …).
    pub kind: String,
    /// Arguments for the kind (default `{}`), validated per kind.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub args: Option<Value>,
    /// Queue override (default: the kind's queue).
    #[serde(default)]
    pub queue: Option<String>,
    /// Attempts override (default: the kind's), 1 to `producer.max_attempts_limit`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_attempts: Option<u32>,
    /// Dedupe key (or the `Idempotency-Key` header).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Run no earlier than this instant (RFC 3339).
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    /// Run no earlier than this many milliseconds from now.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Per-job timeout override in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `202` body: the accepted job.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The job's id.
    #[schema(value_type = uuid::Uuid)]
    pub id: JobId,
    /// Its state (`enqueued` or `scheduled` right after intake).
    #[schema(value_type = String, example = "enqueued")]
    pub state: JobState,
}

/// `POST /v1/jobs/batch` body: up to `producer.max_batch` jobs, accepted all or none.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The jobs, each shaped like a `POST /v1/jobs` body.
    pub jobs: Vec<CreateJobRequest>,
}

/// `202` body of a batch: the jobs' ids in request order.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchAccepted {
    /// One id per job, in request order.
    #[schema(value_type = Vec<uuid::Uuid>)]
    pub ids: Vec<JobId>,
}

/// `GET /v1/jobs` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this state.
    pub state: Option<String>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs in this queue.
    pub queue: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /v1/jobs` body: a page of jobs, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A job as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    /// Id.
    #[schema(value_type = uuid::Uuid)]
    pub id: JobId,
    /// Kind.
    pub kind: String,
    /// Queue.
    pub queue: String,
    /// Arguments (`null` when redacted).
    #[schema(value_type = Option<Object>)]
    pub args: Value,
    /// State: scheduled, enqueued, running, retrying, completed, dead or cancelled.
    #[schema(value_type = String)]
    pub state: JobState,
    /// Attempts started.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Next (or last) run time.
    pub run_at: DateTime<Utc>,
    /// Result once completed (`null` when redacted).
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Latest error.
    pub last_error: Option<String>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// W3C trace context of the request that enqueued it (the parent of every attempt).
    pub traceparent: Option<String>,
    /// Times replayed.
    pub replay_count: u32,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Last attempt start.
    pub started_at: Option<DateTime<Utc>>,
    /// Final state reached at.
    pub finished_at: Option<DateTime<Utc>>,
    /// The schedule and slot that fired it (absent for other jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schedules::FiredByView>)]
    pub fired_by: Option<jobs::schedule::FiredBy>,
    /// True when `args` and `result` were withheld: the key lacks `jobs:read_args`.
    pub redacted: bool,
}

impl From<JobRecord> for JobView {
    fn from(r: JobRecord) -> Self {
        Self {
            id: r.id,
            kind: r.kind,
            queue: r.queue,
            args: r.args,
            state: r.state,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            run_at: r.run_at,
            result: r.result,
            last_error: r.last_error,
            idempotency_key: r.idempotency_key,
            traceparent: r.traceparent,
            replay_count: r.replay_count,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            fired_by: r.fired_by,
            redacted: false,
        }
    }
}

/// Parses a JSON body strictly: JSON content type (415), JSON syntax (400), shape with
/// the failing field's path (422), size (413).
pub fn parse_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    max_body: usize,
) -> Result<T, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !(mime == "application/json"
        || (mime.starts_with("application/") && mime.ends_with("+json")))
    {
        let shown = if content_type.is_empty() {
            "none"
        } else {
            content_type
        };
        return Err(ApiError::UnsupportedMediaType(shown.to_owned()));
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(max_body)
        } else {
            ApiError::BadRequest(format!("could not read the request body: {rejection}"))
        }
    })?;
    let mut deserializer = serde_json::Deserializer::from_slice(&body);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut deserializer);
    let err = match parsed {
        Ok(value) => {
            deserializer
                .end()
                .map_err(|e| ApiError::BadRequest(format!("body is not valid JSON: {e}")))?;
            return Ok(value);
        }
        Err(err) => err,
    };
    let inner = err.inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let path = err.path().to_string();
            let message = strip_position(&inner.to_string()).to_owned();
            if let Some(name) = message
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'))
            {
                Err(ApiError::Validation(ValidationErrors::one(
                    jobs::error::join_path(root(&path), name),
                    "is required",
                )))
            } else {
                let field = if root(&path).is_empty() {
                    "body"
                } else {
                    root(&path)
                };
                Err(ApiError::Validation(ValidationErrors::one(field, message)))
            }
        }
        _ => Err(ApiError::BadRequest(format!(
            "body is not valid JSON: {inner}"
        ))),
    }
}

fn root(path: &str) -> &str {
    if path == "." { "" } else { path }
}

/// serde_json appends " at line L column C"; a field path says more.
fn strip_position(message: &str) -> &str {
    message
        .rfind(" at line ")
        .map_or(message, |i| &message[..i])
}

fn idempotency_key(
    headers: &HeaderMap,
    body_key: Option<String>,
) -> Result<Option<String>, ApiError> {
    let header_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::Validation(ValidationErrors::one(
                        "Idempotency-Key",
                        "must be visible ASCII",
                    ))
                })?
                .to_owned(),
        ),
    };
    let key = match (header_key, body_key) {
        (Some(h), Some(b)) if h != b => {
            return Err(ApiError::Validation(ValidationErrors::one(
                "idempotency_key",
                "differs from the Idempotency-Key header",
            )));
        }
        (Some(h), _) => Some(h),
        (None, b) => b,
    };
    if let Some(key) = &key
        && (key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control))
    {
        return Err(ApiError::Validation(ValidationErrors::one(
            "idempotency_key",
            format!("must be 1 to {MAX_KEY_LEN} characters, without control characters"),
        )));
    }
    Ok(key)
}

/// The trace context this request's jobs carry: the caller's trace (from its
/// `traceparent` header) continued in a span of the intake's own, or a new trace.
/// Recorded on the request's span, so its log lines carry the ids.
fn traceparent(headers: &HeaderMap) -> Option<String> {
    let caller = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(jobs::TraceContext::parse);
    let context = caller
        .as_ref()
        .map_or_else(jobs::TraceContext::new_root, jobs::TraceContext::child);
    let span = tracing::Span::current();
    // With an OpenTelemetry exporter, the request span itself is the job's parent.
    #[cfg(feature = "otlp")]
    let context = {
        // The caller's context was made the span's parent when it was created.
        match jobs::TraceContext::of_span(&span) {
            Some(own) if caller.as_ref().is_none_or(|c| c.trace_id == own.trace_id) => own,
            _ => context,
        }
    };
    span.record("trace_id", context.trace_id.as_str());
    span.record("span_id", context.span_id.as_str());
    if let Some(caller) = &caller {
        span.record("parent_span_id", caller.span_id.as_str());
    }
    Some(context.to_string())
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

/// Validates a request into a job to record. Every problem is reported at once.
///
/// # Errors
/// Every invalid field.
pub fn validate(
    state: &AppState,
    request: CreateJobRequest,
    key: Option<String>,
    traceparent: Option<String>,
) -> Result<NewJob, ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let args = request
        .args
        .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
    let spec = match state.catalog.get(&request.kind) {
        Ok(spec) => Some(*spec),
        Err(_) => {
            errors.add(
                "kind",
                format!(
                    "unknown job kind {:?}; known kinds: {}",
                    request.kind,
                    state.catalog.kinds().join(", ")
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
    let limit = state.settings.max_attempts_limit;
    if let Some(n) = request.max_attempts
        && !(1..=limit).contains(&n)
    {
        errors.add("max_attempts", format!("must be between 1 and {limit}"));
    }
    if let Some(ms) = request.timeout_ms
        && !(1..=86_400_000).contains(&ms)
    {
        errors.add("timeout_ms", "must be between 1 and 86400000 (one day)");
    }
    let now = Utc::now();
    let run_at = match (request.run_at, request.delay_ms) {
        (Some(_), Some(_)) => {
            errors.add("delay_ms", "give either run_at or delay_ms, not both");
            None
        }
        (Some(at), None) => {
            if at - now > chrono::Duration::from_std(MAX_DELAY).unwrap_or(chrono::Duration::MAX) {
                errors.add("run_at", "must be within a year from now");
            }
            // A time in the past means "now": it stays a scheduled job due at once.
            Some(at)
        }
        (None, Some(ms)) => {
            if Duration::from_millis(ms) > MAX_DELAY {
                errors.add("delay_ms", "must be at most a year");
                None
            } else if ms == 0 {
                None
            } else {
                Some(now + chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX)))
            }
        }
        (None, None) => None,
    };
    errors.into_result()?;
    let Some(spec) = spec else {
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
        idempotency_ttl: Duration::from_secs(state.settings.idempotency_ttl_secs),
        traceparent,
        fired_by: None,
    })
}

/// `POST /v1/jobs`: validate, record, publish, `202 {id, state}`. A repeated
/// idempotency key answers `200` with the existing job; with a different body, `409`.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    request_body(content = CreateJobRequest, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Dedupe key (alternative to idempotency_key)")),
    responses(
        (status = 202, description = "Accepted: recorded (and published)", body = Accepted),
        (status = 200, description = "The idempotency key names this existing job", body = Accepted),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope, or the kind or queue is outside its reach", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Idempotency key reused with a different body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid values, each named", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable or overloaded (Retry-After); nothing stored", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["jobs:enqueue"]))
)]
pub async fn create_job(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    auth.require(Scope::JobsEnqueue)?;
    let request: CreateJobRequest = parse_json(&headers, body, state.settings.max_body_bytes)?;
    guard::enqueue_reach(&state, &auth, &request)?;
    let key = idempotency_key(&headers, request.idempotency_key.clone())?;
    let job = validate(&state, request, key, traceparent(&headers))?;
    let reservation = reserve(&state, 1)?;
    let record = match state.inserts.submit(job).await?? {
        Insert::Existing(record) => {
            let body = Accepted {
                id: record.id,
                state: record.state,
            };
            return Ok((StatusCode::OK, Json(body)).into_response());
        }
        Insert::Created(record) => record,
    };
    accepted(&record);
    if record.state == JobState::Enqueued {
        publish_all(&state, &reservation, &[&record]).await;
    }
    let location = format!("/v1/jobs/{}", record.id);
    let body = Accepted {
        id: record.id,
        state: record.state,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

fn accepted(record: &JobRecord) {
    metrics::counter!("conveyor_jobs_accepted_total", "kind" => record.kind.clone(), "queue" => record.queue.clone())
        .increment(1);
}

/// Reserves confirm slots for `n` publishes before anything is stored: when the broker
/// blocks publishing (a memory or disk alarm) or confirms stall, intake answers 503
/// instead of accepting work it cannot hand on.
fn reserve(state: &AppState, n: usize) -> Result<broker::publisher::Reservation<'_>, ApiError> {
    state.publisher.reserve(n).map_err(|e| {
        tracing::warn!(error = %e, "intake overloaded; answering 503");
        ApiError::Unavailable(format!(
            "the broker cannot take more work right now ({e}); retry later"
        ))
    })
}

/// Publishes freshly recorded jobs (confirms pipelined on one channel) and marks the
/// confirmed ones in one statement. A failure is not the client's problem: the rows
/// are the record, and the dispatcher publishes jobs whose publish was never confirmed.
async fn publish_all(
    state: &AppState,
    reservation: &broker::publisher::Reservation<'_>,
    records: &[&JobRecord],
) {
    if records.is_empty() {
        return;
    }
    let now = Utc::now();
    let publishes = records.iter().map(|record| {
        let envelope = Envelope {
            id: record.id,
            kind: record.kind.clone(),
            queue: record.queue.clone(),
            args: record.args.clone(),
            enqueued_at: now,
            traceparent: record.traceparent.clone(),
        };
        async move {
            let result = state
                .publisher
                .publish_reserved(reservation, &envelope, record.traceparent.as_deref())
                .await;
            (record.id, result)
        }
    });
    let mut confirmed = Vec::with_capacity(records.len());
    for (id, result) in futures_util::future::join_all(publishes).await {
        match result {
            Ok(()) => confirmed.push(id),
            Err(e) => {
                tracing::warn!(job_id = %id, error = %e, "publish not confirmed; the dispatcher will publish the job")
            }
        }
    }
    // Noted late and in bulk (see `marks`).
    state.published.confirmed(confirmed).await;
}

/// `GET /v1/jobs/{id}`: one job.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id (UUID)")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope, or the kind or queue is outside its reach", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["jobs:read"]))
)]
pub async fn get_job(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    auth.require(Scope::JobsRead)?;
    let record = guard::load_job(&state, &auth, parse_id(&id)?, "read").await?;
    Ok(Json(guard::view(&auth, record)))
}

/// A job id from the path: a UUID, or a 422 naming `id`.
pub(crate) fn parse_id(text: &str) -> Result<JobId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::Validation(ValidationErrors::one("id", "must be a UUID")))
}

/// The job, or a 404.
async fn load(state: &AppState, id: JobId) -> Result<JobRecord, ApiError> {
    state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job with id {id}")))
}

/// `POST /v1/jobs/{id}/cancel`: a waiting job never runs (`200`, state `cancelled`); a
/// running one finishes its attempt and is not retried (`202`, state `running`); a job
/// already completed, dead or cancelled is `409`.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id (UUID)")),
    responses(
        (status = 200, description = "Cancelled: it will not run", body = JobView),
        (status = 202, description = "Running: this attempt finishes, no retry follows", body = JobView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope, or the kind or queue is outside its reach", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already completed, dead or cancelled", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["jobs:cancel"]))
)]
pub async fn cancel_job(
    State(state): State<AppState>,
    auth: Auth,
    request_id: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    auth.require(Scope::JobsCancel)?;
    let id = parse_id(&id)?;
    guard::load_job(&state, &auth, id, "cancel").await?;
    let status = match state.store.cancel(id, &auth.audit(request_id.0)).await? {
        store::CancelOutcome::Cancelled => StatusCode::OK,
        store::CancelOutcome::Requested => StatusCode::ACCEPTED,
        store::CancelOutcome::AlreadyFinal(job_state) => {
            return Err(ApiError::Conflict(format!(
                "job {id} is already {job_state}; nothing to cancel"
            )));
        }
        store::CancelOutcome::NotFound => {
            return Err(ApiError::NotFound(format!("no job with id {id}")));
        }
    };
    let record = load(&state, id).await?;
    Ok((status, Json(guard::view(&auth, record))).into_response())
}

/// `POST /v1/jobs/batch`: validates every job (a 422 lists each failing
/// `jobs[i].field`), records all in one transaction, publishes them with pipelined
/// confirms, and answers `202 {ids}`. All or nothing.
#[utoipa::path(
    post,
    path = "/v1/jobs/batch",
    tag = "jobs",
    request_body(content = BatchRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Every job accepted", body = BatchAccepted),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope, or the kind or queue is outside its reach", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An idempotency key reused with a different body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid jobs, each named by index and field; none stored", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable or overloaded (Retry-After); nothing stored", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["jobs:enqueue"]))
)]
pub async fn create_batch(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    auth.require(Scope::JobsEnqueue)?;
    let request: BatchRequest = parse_json(&headers, body, state.settings.max_body_bytes)?;
    for (i, job) in request.jobs.iter().enumerate() {
        guard::enqueue_reach(&state, &auth, job).map_err(|e| match e {
            ApiError::Forbidden(why) => ApiError::Forbidden(format!("jobs[{i}]: {why}")),
            other => other,
        })?;
    }
    let max = state.settings.max_batch;
    if request.jobs.is_empty() || request.jobs.len() > max {
        return Err(ApiError::Validation(ValidationErrors::one(
            "jobs",
            format!("must hold 1 to {max} jobs, got {}", request.jobs.len()),
        )));
    }
    let trace = traceparent(&headers);
    let mut errors = ValidationErrors::new();
    let mut jobs = Vec::with_capacity(request.jobs.len());
    for (i, job) in request.jobs.into_iter().enumerate() {
        let key = job.idempotency_key.clone();
        match validate(&state, job, key, trace.clone()) {
            Ok(job) => jobs.push(job),
            Err(e) => errors.extend(e.prefixed(&format!("jobs[{i}]"))),
        }
    }
    errors.into_result()?;
    let reservation = reserve(&state, jobs.len())?;
    let inserted = state.store.insert_jobs(&jobs).await?;
    let records: Vec<JobRecord> = inserted
        .into_iter()
        .map(|insert| match insert {
            Insert::Created(record) | Insert::Existing(record) => record,
        })
        .collect();
    for (record, job) in records.iter().zip(&jobs) {
        if record.id == job.id {
            accepted(record);
        }
    }
    let fresh: Vec<&JobRecord> = records
        .iter()
        .zip(&jobs)
        .filter(|(record, job)| record.id == job.id && record.state == JobState::Enqueued)
        .map(|(record, _)| record)
        .collect();
    publish_all(&state, &reservation, &fresh).await;
    let body = BatchAccepted {
        ids: records.iter().map(|r| r.id).collect(),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `GET /v1/jobs`: jobs newest first, filtered, paged with an opaque cursor. Pages are
/// stable: walking every page sees each job once.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobPage),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope, or the kind or queue is outside its reach", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad filter, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["jobs:read"]))
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    auth.require(Scope::JobsRead)?;
    let axum::extract::Query(query) = query.map_err(|e| {
        ApiError::Validation(ValidationErrors::one(
            "query",
            strip_position(&e.body_text()).to_owned(),
        ))
    })?;
    let mut errors = ValidationErrors::new();
    let job_state = match query.state.as_deref().map(str::parse::<JobState>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            errors.add("state", e.to_string());
            None
        }
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        errors.add("limit", "must be between 1 and 1000");
    }
    let before = match query.cursor.as_deref().map(str::parse::<JobId>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            errors.add("cursor", "is not a cursor returned by this API");
            None
        }
    };
    errors.into_result()?;
    // An explicit filter outside the key's reach is refused, not answered empty.
    if let Some(kind) = &query.kind {
        auth.0.reach_kind("read", Some(kind))?;
    }
    if let Some(queue) = &query.queue {
        auth.0.reach_queue("read", Some(queue))?;
    }
    let records = state
        .store
        .list_jobs(&store::JobQuery {
            state: job_state,
            kind: query.kind,
            queue: query.queue,
            before,
            limit: limit + 1,
            kind_patterns: auth.kind_patterns(),
            queue_patterns: auth.queue_patterns(),
        })
        .await?;
    let more = records.len() > limit as usize;
    let jobs: Vec<JobView> = records
        .into_iter()
        .take(limit as usize)
        .map(|record| guard::view(&auth, record))
        .collect();
    let next_cursor = if more {
        jobs.last().map(|j| j.id.to_string())
    } else {
        None
    };
    Ok(Json(JobPage { jobs, next_cursor }))
}

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Up", body = Object)))]
pub async fn healthz() -> Json<Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: the database and the broker answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = Object),
        (status = 503, description = "A dependency is unavailable (Retry-After)", body = Object),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let limit = Duration::from_secs(2);
    let database = match tokio::time::timeout(limit, state.store.ping()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("unavailable: {}", redact(&e.to_string())),
        Err(_) => "unavailable: timed out".to_owned(),
    };
    let broker = match tokio::time::timeout(limit, state.publisher.ensure_connected()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("unavailable: {e}"),
        Err(_) => "unavailable: timed out".to_owned(),
    };
    let ready = database == "ok" && broker == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "unavailable" },
        "database": database,
        "broker": broker,
    });
    let mut response = (status, Json(body)).into_response();
    if !ready {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    response
}

/// `GET /metrics`: Prometheus text — this process's job counters and latency
/// histograms, and per-queue gauges from the ledger (ready, running, scheduled,
/// retrying, dead, oldest ready age).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(render) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            render().await,
        )
            .into_response(),
        None => {
            ApiError::NotFound("metrics are not enabled in this process".into()).into_response()
        }
    }
}

/// Removes anything that looks like URL credentials from a message.
fn redact(message: &str) -> String {
    match (message.find("://"), message.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &message[..scheme], &message[at..])
        }
        _ => message.to_owned(),
    }
}

/// Unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Known route, wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
