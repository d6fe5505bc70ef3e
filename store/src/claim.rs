//! A worker's claim: `enqueued` → `running`, attempt + 1, held by the worker. Guarded by
//! `state = 'enqueued'`, so a duplicate delivery (or the same id twice in one batch)
//! claims nothing and is told the job's state instead.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::{JobEvent, JobId, JobState, WorkerId};
use serde_json::Value;
use uuid::Uuid;

use crate::Store;
use crate::error::Error;

/// What a worker's claim found.
#[derive(Debug, Clone)]
pub enum Claim {
    /// The job is now `running` for this worker at this attempt.
    Claimed(ClaimedJob),
    /// The job exists but is not waiting to run (already completed, running elsewhere,
    /// cancelled, …): the delivery is a duplicate and is acked without running.
    Skip(JobState),
    /// No job has this id.
    Missing,
}

/// A job a worker has claimed.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// Id.
    pub id: JobId,
    /// Kind.
    pub kind: String,
    /// Queue.
    pub queue: String,
    /// Arguments (the row's, which a replay may have corrected).
    pub args: Value,
    /// This attempt, 1-based.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Per-job timeout override.
    pub timeout: Option<Duration>,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// Claimed at.
    pub started_at: DateTime<Utc>,
    /// Trace context of the enqueuing request.
    pub traceparent: Option<String>,
    /// The job's transition counter after the claim (see [`jobs::JobEvent::seq`]).
    pub seq: u64,
}

impl ClaimedJob {
    /// The claim's live event: `running` at this attempt.
    pub fn event(&self) -> JobEvent {
        JobEvent {
            id: self.id,
            kind: self.kind.clone(),
            queue: self.queue.clone(),
            state: JobState::Running,
            seq: self.seq,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            at: self.started_at,
            run_at: None,
            result: None,
            error: None,
        }
    }
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    #[sqlx(try_from = "Uuid")]
    id: JobId,
    kind: String,
    queue: String,
    #[sqlx(json)]
    args: Value,
    #[sqlx(try_from = "i32")]
    attempt: u32,
    #[sqlx(try_from = "i32")]
    max_attempts: u32,
    timeout_ms: Option<i32>,
    created_at: DateTime<Utc>,
    started_at: DateTime<Utc>,
    traceparent: Option<String>,
    seq: i64,
}

impl From<ClaimedRow> for ClaimedJob {
    fn from(row: ClaimedRow) -> Self {
        Self {
            id: row.id,
            kind: row.kind,
            queue: row.queue,
            args: row.args,
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            timeout: row
                .timeout_ms
                .and_then(|t| u64::try_from(t).ok())
                .map(Duration::from_millis),
            created_at: row.created_at,
            started_at: row.started_at,
            traceparent: row.traceparent,
            seq: u64::try_from(row.seq).unwrap_or(0),
        }
    }
}

/// A job's id and state, for the answers of guarded writes that found nothing to do.
#[derive(sqlx::FromRow)]
pub(crate) struct StateRow {
    #[sqlx(try_from = "Uuid")]
    pub(crate) id: JobId,
    #[sqlx(try_from = "String")]
    pub(crate) state: JobState,
    #[sqlx(try_from = "i32")]
    pub(crate) attempt: u32,
    pub(crate) kind: String,
    pub(crate) queue: String,
    pub(crate) seq: i64,
    #[sqlx(try_from = "i32")]
    pub(crate) max_attempts: u32,
    pub(crate) updated_at: DateTime<Utc>,
}

/// The states (and attempts) of these jobs now, by id; a missing id has no row.
pub(crate) async fn states_of(
    conn: &mut sqlx::PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<JobId, StateRow>, Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<StateRow> = sqlx::query_as(
        "SELECT id, state, attempt, kind, queue, seq, max_attempts, updated_at \
             FROM jobs WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.id, row)).collect())
}

impl Store {
    /// Claims many enqueued jobs for `worker` in one statement; the answer for each id,
    /// in order. An id given twice is claimed once (the second is a `Skip`).
    ///
    /// # Errors
    /// When the database fails (nothing was claimed).
    pub async fn claim_many(&self, ids: &[JobId], worker: WorkerId) -> Result<Vec<Claim>, Error> {
        let unique: Vec<Uuid> = {
            let mut seen = HashSet::new();
            ids.iter()
                .map(JobId::as_uuid)
                .filter(|id| seen.insert(*id))
                .collect()
        };
        let mut conn = self.pool().acquire().await?;
        let rows: Vec<ClaimedRow> = sqlx::query_as(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, worker_id = $2, \
                 started_at = now(), updated_at = now(), seq = seq + 1 \
             WHERE id = ANY($1) AND state = 'enqueued' \
             RETURNING id, kind, queue, args, attempt, max_attempts, timeout_ms, created_at, \
                 started_at, traceparent, seq",
        )
        .bind(&unique)
        .bind(worker.0)
        .fetch_all(&mut *conn)
        .await?;
        let mut claimed: HashMap<JobId, ClaimedJob> = rows
            .into_iter()
            .map(|row| (row.id, ClaimedJob::from(row)))
            .collect();
        let others: Vec<Uuid> = unique
            .iter()
            .copied()
            .filter(|id| !claimed.contains_key(&JobId(*id)))
            .collect();
        let states = states_of(&mut conn, &others).await?;
        let mut answered = HashSet::with_capacity(claimed.len());
        Ok(ids
            .iter()
            .map(|id| {
                if let Some(job) = claimed.remove(id) {
                    answered.insert(*id);
                    Claim::Claimed(job)
                } else if answered.contains(id) {
                    // Claimed just now for an earlier copy of this id in the batch.
                    Claim::Skip(JobState::Running)
                } else {
                    states
                        .get(id)
                        .map_or(Claim::Missing, |row| Claim::Skip(row.state))
                }
            })
            .collect())
    }

    /// The job `id` as `worker`'s claim returned it, when `worker` holds it `running`.
    /// For a claim whose commit succeeded but whose reply was lost with its connection
    /// (a database failover): the claim's retry finds the job running, held by this
    /// worker, and this reads the claimed job back instead of leaving it held forever.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn held_by(&self, id: JobId, worker: WorkerId) -> Result<Option<ClaimedJob>, Error> {
        let row: Option<ClaimedRow> = sqlx::query_as(
            "SELECT id, kind, queue, args, attempt, max_attempts, timeout_ms, created_at, \
                 started_at, traceparent, seq \
             FROM jobs WHERE id = $1 AND state = 'running' AND worker_id = $2",
        )
        .bind(id.as_uuid())
        .bind(worker.0)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(ClaimedJob::from))
    }
}
