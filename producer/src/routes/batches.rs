//! `POST /v1/jobs/batch`: many jobs, accepted all or none.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jobs::JobRecord;
use jobs::{JobState, ValidationErrors};
use store::Insert;

use super::jobs::{accepted, intake, publish_all, reserve, traceparent};
use super::validate::{FromHeaders, check_callback};
use super::wire::{BatchAccepted, BatchRequest};
use crate::AppState;
use crate::auth::Auth;
use crate::extract::ApiJson;
use crate::guard;
use crate::problem::{ApiError, Problem};
use access::Scope;

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
    body: Result<ApiJson<BatchRequest>, ApiError>,
) -> Result<Response, ApiError> {
    auth.require(Scope::JobsEnqueue)?;
    let ApiJson(request) = body?;
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
    // One trace for the batch; idempotency keys come from each job's body only.
    let from_headers = FromHeaders {
        idempotency_key: None,
        traceparent: traceparent(&headers),
    };
    let intake = intake(&state);
    let mut errors = ValidationErrors::new();
    let mut jobs = Vec::with_capacity(request.jobs.len());
    for (i, job) in request.jobs.into_iter().enumerate() {
        match intake.job(job, from_headers.clone()) {
            Ok(job) => jobs.push(job),
            Err(e) => errors.extend(e.prefixed(&format!("jobs[{i}]"))),
        }
    }
    errors.into_result()?;
    let mut errors = ValidationErrors::new();
    for (i, job) in jobs.iter().enumerate() {
        if let Err(e) = check_callback(&state.webhook_targets, job, &format!("jobs[{i}].")).await {
            errors.extend(e);
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
            accepted(&state, record);
        }
    }
    let fresh: Vec<&JobRecord> = records
        .iter()
        .zip(&jobs)
        .filter(|(record, job)| record.id == job.id && record.state == JobState::Enqueued)
        .map(|(record, _)| record)
        .collect();
    publish_all(&state, &reservation, &fresh).await;
    let read_args = auth.can(Scope::JobsReadArgs);
    let body = BatchAccepted {
        ids: records.iter().map(|r| r.id).collect(),
        status_urls: records
            .iter()
            .map(|r| state.events.status_url(r.id, read_args))
            .collect(),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
