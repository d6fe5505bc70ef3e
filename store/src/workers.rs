//! Worker processes: registration and heartbeats, a clean deregistration, and the
//! dispatcher's rescue of jobs whose worker stopped heartbeating (settled as
//! [`Ending::Lost`] through [`crate::settle`]).

use std::time::Duration;

use jobs::{JobEvent, JobId, WorkerId};
use uuid::Uuid;

use crate::Store;
use crate::error::Error;
use crate::settle::{Ending, Settlement, settle_on};
use crate::sql::millis;

/// Most orphans one rescue settles; the next rescue takes the rest.
const RESCUE_BATCH: i64 = 500;

/// What the rescue records as the lost attempt's error.
const LOST: &str = "worker lost: it stopped heartbeating while running this job";

#[derive(sqlx::FromRow)]
struct Orphan {
    id: Uuid,
    attempt: i32,
    max_attempts: i32,
    worker_id: Uuid,
}

impl Store {
    /// Registers a worker process (or refreshes its heartbeat).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn heartbeat(&self, worker: WorkerId, name: &str, queues: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO workers (id, name, queues) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
        )
        .bind(worker.0)
        .bind(name)
        .bind(queues)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Removes a worker that is shutting down cleanly.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn deregister(&self, worker: WorkerId) -> Result<(), Error> {
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(worker.0)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Rescues running jobs whose worker stopped heartbeating for `lost_after` (or is
    /// gone): each gets a `lost` attempt row and is retried now, or is dead when it has
    /// no attempts left (or cancelled, when a cancel was requested). Returns the live
    /// events of the rescued jobs (one each), committed, for the caller to publish.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn rescue_orphans(&self, lost_after: Duration) -> Result<Vec<JobEvent>, Error> {
        let mut tx = self.pool().begin().await?;
        // Locked until the settlement commits, so their attempt counts cannot move.
        let orphans: Vec<Orphan> = sqlx::query_as(
            "SELECT j.id, j.attempt, j.max_attempts, j.worker_id \
             FROM jobs j LEFT JOIN workers w ON w.id = j.worker_id \
             WHERE j.state = 'running' AND j.worker_id IS NOT NULL \
               AND j.started_at <= now() - $1::bigint * interval '1 millisecond' \
               AND (w.id IS NULL OR w.heartbeat_at <= now() - $1::bigint * interval '1 millisecond') \
             ORDER BY j.started_at LIMIT $2 FOR UPDATE OF j SKIP LOCKED",
        )
        .bind(millis(lost_after))
        .bind(RESCUE_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let settlements: Vec<Settlement> = orphans
            .iter()
            .map(|orphan| Settlement {
                id: JobId(orphan.id),
                ending: Ending::Lost {
                    attempt: u32::try_from(orphan.attempt).unwrap_or(0),
                    worker: WorkerId(orphan.worker_id),
                    attempts_left: orphan.attempt < orphan.max_attempts,
                    error: LOST.to_owned(),
                },
            })
            .collect();
        let settled = settle_on(&mut tx, &settlements).await?;
        tx.commit().await?;
        Ok(settled.events)
    }
}
