//! `/v1/jobs`: create one job, get one, list them, cancel one; and the steps every
//! intake route shares (reserving confirm slots, publishing what was recorded).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use jobs::JobRecord;
use jobs::{Envelope, JobId, JobState, ValidationErrors};
use store::Insert;

use super::validate::{FromHeaders, Intake, Limits, check_callback, header_key};
use super::wire::{Accepted, CreateJobRequest, GetJobQuery, JobPage, JobView, ListQuery};
use crate::AppState;
use crate::auth::{Auth, Caller, RequestId};
use crate::extract::{ApiJson, ApiQuery};
use crate::guard;
use crate::problem::{ApiError, Problem};
use access::Scope;

/// The request → job conversion with this process's catalog and limits, as of now.
pub(super) fn intake(state: &AppState) -> Intake<'_> {
    Intake {
        catalog: &state.catalog,
        limits: Limits::of(&state.settings),
        now: Utc::now(),
    }
}

/// The trace context this request's jobs carry: the caller's trace (from its
/// `traceparent` header) continued in a span of the intake's own, or a new trace.
/// Recorded on the request's span, so its log lines carry the ids.
pub(super) fn traceparent(headers: &HeaderMap) -> Option<String> {
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
    body: Result<ApiJson<CreateJobRequest>, ApiError>,
) -> Result<Response, ApiError> {
    auth.require(Scope::JobsEnqueue)?;
    let ApiJson(request) = body?;
    guard::enqueue_reach(&state, &auth, &request)?;
    let from_headers = FromHeaders {
        idempotency_key: header_key(&headers)?,
        traceparent: traceparent(&headers),
    };
    let job = intake(&state).job(request, from_headers)?;
    check_callback(&state.webhook_targets, &job, "").await?;
    let reservation = reserve(&state, 1)?;
    let record = match state.inserts.submit(job).await?? {
        Insert::Existing(record) => {
            let body = Accepted {
                id: record.id,
                state: record.state,
                status_url: state
                    .events
                    .status_url(record.id, auth.can(Scope::JobsReadArgs)),
            };
            return Ok((StatusCode::OK, Json(body)).into_response());
        }
        Insert::Created(record) => record,
    };
    accepted(&state, &record);
    if record.state == JobState::Enqueued {
        publish_all(&state, &reservation, &[&record]).await;
    }
    let location = format!("/v1/jobs/{}", record.id);
    let body = Accepted {
        id: record.id,
        state: record.state,
        status_url: state
            .events
            .status_url(record.id, auth.can(Scope::JobsReadArgs)),
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// Counts a recorded job and publishes its first event (`enqueued` or `scheduled`),
/// committed, before its message is published.
pub(super) fn accepted(state: &AppState, record: &JobRecord) {
    state
        .events
        .publisher
        .publish(&jobs::JobEvent::of_record(record));
    metrics::counter!("conveyor_jobs_accepted_total", "kind" => record.kind.clone(), "queue" => record.queue.clone())
        .increment(1);
}

/// Reserves confirm slots for `n` publishes before anything is stored: when the broker
/// blocks publishing (a memory or disk alarm) or confirms stall, intake answers 503
/// instead of accepting work it cannot hand on.
pub(super) fn reserve(
    state: &AppState,
    n: usize,
) -> Result<broker::publisher::Reservation<'_>, ApiError> {
    state.publisher.reserve(n).map_err(ApiError::Overloaded)
}

/// Publishes freshly recorded jobs (confirms pipelined on one channel) and marks the
/// confirmed ones in one statement. A failure is not the client's problem: the rows
/// are the record, and the dispatcher publishes jobs whose publish was never confirmed.
pub(super) async fn publish_all(
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

/// `GET /v1/jobs/{id}`: one job. With `wait`, answers as soon as the job is final, or
/// at the bound with the job as it is then (`final` says which); a wait counts against
/// the stream budget.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id (UUID)"), GetJobQuery),
    responses(
        (status = 200, description = "The job (`final`: whether it is completed, dead or cancelled)", body = JobView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope, or the kind or queue is outside its reach", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID, or `wait` is malformed or past `events.max_wait_ms`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "A wait past the stream budget (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["jobs:read"]))
)]
pub async fn get_job(
    State(state): State<AppState>,
    auth: Auth,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
    query: Result<ApiQuery<GetJobQuery>, ApiError>,
) -> Result<Json<JobView>, ApiError> {
    auth.require(Scope::JobsRead)?;
    let ApiQuery(query) = query?;
    let id = parse_id(&id)?;
    let wait = match query.wait.as_deref() {
        None => None,
        Some(text) => Some(
            crate::events::routes::parse_wait(
                text,
                std::time::Duration::from_millis(state.events.settings.max_wait_ms),
            )
            .map_err(|e| ApiError::Validation(ValidationErrors::one("wait", e)))?,
        ),
    };
    let record = match wait {
        Some(wait) if !wait.is_zero() => {
            let caller = caller.map_or(
                Caller::Address(std::net::IpAddr::from([127, 0, 0, 1])),
                |c| c.0,
            );
            crate::events::routes::wait_until_final(&state, &auth, &caller, id, wait).await?
        }
        _ => guard::load_job(&state, &auth, id, "read").await?,
    };
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
    params(("id" = uuid::Uuid, Path, description = "Job id (UUID)")),
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
    if status == StatusCode::OK {
        // Committed: the cancel's event, from the row as it is now.
        state
            .events
            .publisher
            .publish(&jobs::JobEvent::of_record(&record));
    }
    Ok((status, Json(guard::view(&auth, record))).into_response())
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
    query: Result<ApiQuery<ListQuery>, ApiError>,
) -> Result<Json<JobPage>, ApiError> {
    auth.require(Scope::JobsRead)?;
    let ApiQuery(query) = query?;
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
