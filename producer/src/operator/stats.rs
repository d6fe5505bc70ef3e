//! `GET /v1/stats`: the ledger's per-queue numbers, as `conveyor stats` shows them.

use access::Scope;
use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::AppState;
use crate::auth::Auth;
use crate::problem::{ApiError, Problem};

/// One queue's numbers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueStatsView {
    /// The queue.
    pub queue: String,
    /// Enqueued, waiting for a worker.
    pub ready: i64,
    /// Being run.
    pub running: i64,
    /// Waiting for `run_at`.
    pub scheduled: i64,
    /// Waiting for a retry.
    pub retrying: i64,
    /// Dead and not replayed.
    pub dead: i64,
    /// Seconds the oldest ready job has waited.
    pub oldest_ready_age_seconds: f64,
    /// Attempts completed in the last minute.
    pub completed_last_minute: i64,
    /// Attempts failed (retry, failed, lost) in the last minute.
    pub failed_last_minute: i64,
}

/// `GET /v1/stats` body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// Every queue with open jobs or recent attempts (within the key's queues).
    pub queues: Vec<QueueStatsView>,
}

/// `GET /v1/stats`: per queue, ready, running, scheduled, retrying and dead jobs, the
/// oldest ready job's age, and attempts completed and failed in the last minute.
#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "operations",
    responses(
        (status = 200, description = "Per-queue numbers", body = Stats),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks jobs:read", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["jobs:read"]))
)]
pub async fn stats(State(state): State<AppState>, auth: Auth) -> Result<Json<Stats>, ApiError> {
    auth.require(Scope::JobsRead)?;
    let queues = state
        .store
        .queue_stats()
        .await?
        .into_iter()
        .filter(|q| auth.reach_queue("read", Some(&q.queue)).is_ok())
        .map(|q| QueueStatsView {
            queue: q.queue,
            ready: q.ready,
            running: q.running,
            scheduled: q.scheduled,
            retrying: q.retrying,
            dead: q.dead,
            oldest_ready_age_seconds: q.oldest_ready_age_seconds,
            completed_last_minute: q.completed_last_minute,
            failed_last_minute: q.failed_last_minute,
        })
        .collect();
    Ok(Json(Stats { queues }))
}
