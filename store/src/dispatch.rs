//! The dispatcher's side of the ledger: taking due jobs to publish (`scheduled` /
//! `retrying` → `enqueued`, and unconfirmed publishes again), how long until the next
//! one, and a handler's transactional enqueue of a follow-up job.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::{JobEvent, JobId, JobState, NewJob};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Store;
use crate::error::Error;
use crate::intake::{Start, insert_rows};
use crate::sql::millis;

/// A job the dispatcher is about to publish.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueJob {
    /// Id.
    #[sqlx(try_from = "Uuid")]
    pub id: JobId,
    /// Kind.
    pub kind: String,
    /// Queue.
    pub queue: String,
    /// Arguments.
    #[sqlx(json)]
    pub args: Value,
    /// Trace context.
    pub traceparent: Option<String>,
    /// The job's transition counter.
    seq: i64,
    #[sqlx(try_from = "i32")]
    attempt: u32,
    #[sqlx(try_from = "i32")]
    max_attempts: u32,
    updated_at: DateTime<Utc>,
    /// Taken because it was due (`scheduled`/`retrying` → `enqueued`), rather than
    /// published again while already `enqueued`.
    became_due: bool,
}

impl DueJob {
    /// The live event of this job's move to `enqueued`; `None` for a job that was
    /// already enqueued (a publish that was not confirmed, sent again).
    pub fn event(&self) -> Option<JobEvent> {
        self.became_due.then(|| JobEvent {
            id: self.id,
            kind: self.kind.clone(),
            queue: self.queue.clone(),
            state: JobState::Enqueued,
            seq: u64::try_from(self.seq).unwrap_or(0),
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            at: self.updated_at,
            run_at: None,
            result: None,
            error: None,
        })
    }
}

impl Store {
    /// Takes up to `limit` jobs that should be published now and marks them
    /// `enqueued`, unconfirmed: scheduled or retrying jobs whose `run_at` has come, and
    /// enqueued jobs whose publish was not confirmed within `unconfirmed_after` (their
    /// window restarts). The transition commits *before* the caller publishes, so a
    /// worker that receives the message at once finds the job enqueued; a publish that
    /// then fails is retried after `unconfirmed_after`. Rows locked by another
    /// dispatcher are skipped, so concurrent dispatchers never take one job twice.
    ///
    /// # Errors
    /// When the database fails (nothing changed).
    pub async fn take_due(
        &self,
        limit: u32,
        unconfirmed_after: Duration,
    ) -> Result<Vec<DueJob>, Error> {
        let due = sqlx::query_as(
            "WITH due AS (SELECT id FROM jobs \
                WHERE state IN ('scheduled', 'retrying') AND run_at <= now() \
                ORDER BY run_at LIMIT $1 FOR UPDATE SKIP LOCKED), \
             unconfirmed AS (SELECT id FROM jobs \
                WHERE state = 'enqueued' AND published_at IS NULL \
                  AND updated_at <= now() - $2::bigint * interval '1 millisecond' \
                ORDER BY updated_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             UPDATE jobs SET state = 'enqueued', published_at = NULL, updated_at = now(), \
                 seq = seq + CASE WHEN state = 'enqueued' THEN 0 ELSE 1 END \
             WHERE id IN (SELECT id FROM due UNION ALL SELECT id FROM unconfirmed) \
             RETURNING id, kind, queue, args, traceparent, seq, attempt, max_attempts, \
                 updated_at, id IN (SELECT id FROM due) AS became_due",
        )
        .bind(i64::from(limit))
        .bind(millis(unconfirmed_after))
        .fetch_all(self.pool())
        .await?;
        Ok(due)
    }

    /// How long until the next scheduled or retrying job is due (`None` when there is
    /// none), so the dispatcher can sleep exactly that long.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn next_due_in(&self) -> Result<Option<Duration>, Error> {
        let ms: Option<i64> = sqlx::query_scalar(
            "SELECT GREATEST(0, EXTRACT(EPOCH FROM (min(run_at) - now())) * 1000)::bigint \
             FROM jobs WHERE state IN ('scheduled', 'retrying')",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))))
    }
}

/// Records a new job inside the caller's transaction, `scheduled` and due now, so it
/// exists exactly when the transaction's other effects do (transactional enqueue). The
/// dispatcher publishes it; the `NOTIFY` (sent in the same round trip) wakes it when the
/// transaction commits.
///
/// # Errors
/// When the database fails.
pub(crate) async fn enqueue_in(
    conn: &mut PgConnection,
    id: JobId,
    kind: &str,
    queue: &str,
    args: Value,
    max_attempts: u32,
) -> Result<(), Error> {
    let job = NewJob {
        id,
        kind: kind.to_owned(),
        queue: queue.to_owned(),
        args,
        max_attempts,
        run_at: None,
        timeout: None,
        idempotency_key: None,
        idempotency_ttl: Duration::ZERO,
        traceparent: None,
        fired_by: None,
        callback_url: None,
    };
    insert_rows(conn, std::slice::from_ref(&job), Start::DueNow).await?;
    Ok(())
}
