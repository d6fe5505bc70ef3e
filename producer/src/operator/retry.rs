//! `POST /v1/jobs/{id}/retry`: run a job again now, as `conveyor jobs retry` does.

use access::Scope;
use axum::Json;
use axum::extract::{Path, State};

use crate::AppState;
use crate::auth::{Auth, RequestId};
use crate::guard;
use crate::problem::{ApiError, Problem};
use crate::routes::jobs::parse_id;
use crate::routes::wire::JobView;

/// `POST /v1/jobs/{id}/retry`: a retrying or scheduled job becomes due now; a dead job
/// is replayed (fresh attempt budget); a cancelled one runs again. `409` for a job that
/// is enqueued, running or completed.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    tag = "operations",
    params(("id" = uuid::Uuid, Path, description = "Job id (UUID)")),
    responses(
        (status = 200, description = "Due now", body = JobView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks jobs:retry, or the job's kind or queue is outside its reach", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Enqueued, running or completed: nothing to retry", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["jobs:retry"]))
)]
pub async fn retry_job(
    State(state): State<AppState>,
    auth: Auth,
    request_id: RequestId,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    auth.require(Scope::JobsRetry)?;
    let id = parse_id(&id)?;
    guard::load_job(&state, &auth, id, "retry").await?;
    match state.store.retry_now(id, &auth.audit(request_id.0)).await? {
        store::RetryOutcome::Scheduled => {}
        store::RetryOutcome::NotRetryable(job_state) => {
            return Err(ApiError::Conflict(format!(
                "job {id} is {job_state}; only retrying, scheduled, dead or cancelled jobs can be retried"
            )));
        }
        store::RetryOutcome::NotFound => {
            return Err(ApiError::NotFound(format!("no job with id {id}")));
        }
    }
    let record = guard::load_job(&state, &auth, id, "read").await?;
    // Committed: the retry's event, from the row as it is now.
    state
        .events
        .publisher
        .publish(&jobs::JobEvent::of_record(&record));
    Ok(Json(guard::view(&auth, record)))
}
