//! Per-queue numbers for operators and autoscalers: how much work waits, how old the
//! oldest ready job is, and what finished in the last minute.

use serde::Serialize;
use sqlx::Row;

use crate::Store;
use crate::error::Error;

/// One queue's state, as `conveyor stats` and `/metrics` show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueStats {
    /// The Conveyor queue.
    pub queue: String,
    /// Enqueued: published or about to be, waiting for a worker.
    pub ready: i64,
    /// Being run by a worker.
    pub running: i64,
    /// Waiting for `run_at`.
    pub scheduled: i64,
    /// Waiting for a retry.
    pub retrying: i64,
    /// Dead and not replayed.
    pub dead: i64,
    /// Seconds since the oldest ready job became runnable (0 when none waits): the
    /// signal to autoscale workers on.
    pub oldest_ready_age_seconds: f64,
    /// Attempts completed in the last minute.
    pub completed_last_minute: i64,
    /// Attempts that failed (retry, failed, lost) in the last minute.
    pub failed_last_minute: i64,
}

impl Store {
    /// Every queue with jobs that are not completed or cancelled, or with attempts in
    /// the last minute, sorted by name.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn queue_stats(&self) -> Result<Vec<QueueStats>, Error> {
        let rows = sqlx::query(
            "WITH live AS ( \
                SELECT queue, \
                    count(*) FILTER (WHERE state = 'enqueued') AS ready, \
                    count(*) FILTER (WHERE state = 'running') AS running, \
                    count(*) FILTER (WHERE state = 'scheduled') AS scheduled, \
                    count(*) FILTER (WHERE state = 'retrying') AS retrying, \
                    count(*) FILTER (WHERE state = 'dead') AS dead, \
                    COALESCE(EXTRACT(EPOCH FROM now() - min(run_at) FILTER (WHERE state = 'enqueued')), 0)::float8 AS oldest \
                FROM jobs WHERE state IN ('enqueued', 'running', 'scheduled', 'retrying', 'dead') \
                GROUP BY queue), \
             recent AS ( \
                SELECT j.queue, \
                    count(*) FILTER (WHERE a.outcome = 'completed') AS completed, \
                    count(*) FILTER (WHERE a.outcome IN ('retry', 'failed', 'lost')) AS failed \
                FROM job_attempts a JOIN jobs j ON j.id = a.job_id \
                WHERE a.finished_at > now() - interval '1 minute' GROUP BY j.queue) \
             SELECT COALESCE(l.queue, r.queue) AS queue, \
                COALESCE(l.ready, 0) AS ready, COALESCE(l.running, 0) AS running, \
                COALESCE(l.scheduled, 0) AS scheduled, COALESCE(l.retrying, 0) AS retrying, \
                COALESCE(l.dead, 0) AS dead, GREATEST(COALESCE(l.oldest, 0), 0) AS oldest, \
                COALESCE(r.completed, 0) AS completed, COALESCE(r.failed, 0) AS failed \
             FROM live l FULL OUTER JOIN recent r ON r.queue = l.queue ORDER BY 1",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(QueueStats {
                    queue: row.try_get("queue")?,
                    ready: row.try_get("ready")?,
                    running: row.try_get("running")?,
                    scheduled: row.try_get("scheduled")?,
                    retrying: row.try_get("retrying")?,
                    dead: row.try_get("dead")?,
                    oldest_ready_age_seconds: row.try_get("oldest")?,
                    completed_last_minute: row.try_get("completed")?,
                    failed_last_minute: row.try_get("failed")?,
                })
            })
            .collect()
    }
}
