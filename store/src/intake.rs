//! Intake: the producer records jobs (→ `enqueued`, or `scheduled` with a `run_at`), and
//! a handler records a follow-up job in its own transaction (→ `scheduled`, due now).
//! Both go through [`insert_rows`], the one `INSERT INTO jobs`.

use std::collections::HashMap;

use jobs::{JobId, JobRecord, JobState, NewJob};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::Store;
use crate::error::Error;
use crate::sql::{JOB_COLUMNS, JobRow, NOTIFY_DUE, clamp_i32, millis};
use crate::webhooks::{TRANSITION_COLUMNS, deliveries_cte};

/// The result of an insert.
#[derive(Debug, Clone)]
pub enum Insert {
    /// A new job was recorded.
    Created(JobRecord),
    /// The idempotency key named an existing job with the same content.
    Existing(JobRecord),
}

/// Which state new rows start in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Intake: `scheduled` at the job's `run_at`, or `enqueued` now.
    Requested,
    /// A follow-up job: `scheduled` and due now, with the dispatchers woken when the
    /// transaction commits.
    DueNow,
}

impl Store {
    /// Records many jobs in one transaction: all of them, or (on any error, including an
    /// idempotency conflict) none.
    ///
    /// # Errors
    /// Conflict, or the database failed; nothing was stored.
    pub async fn insert_jobs(&self, jobs: &[NewJob]) -> Result<Vec<Insert>, Error> {
        let mut tx = self.pool().begin().await?;
        let inserted = insert_rows(&mut tx, jobs, Start::Requested).await?;
        let mut settled = Vec::with_capacity(jobs.len());
        for (job, insert) in jobs.iter().zip(inserted) {
            settled.push(match insert {
                Some(record) => Insert::Created(record),
                None => insert_keyed(&mut tx, job).await?,
            });
        }
        tx.commit().await?;
        Ok(settled)
    }

    /// Records independent jobs (the requests of different clients) with one statement
    /// and one commit, and answers for each on its own: a job whose idempotency key is
    /// taken is settled alone afterwards (existing job or conflict), and when the shared
    /// statement fails for a reason that is not transient (one job's bytes the database
    /// refuses), each job is retried alone so that only the bad one fails.
    ///
    /// # Errors
    /// The whole call fails only when the database is unavailable (nothing was stored).
    pub async fn insert_each(&self, jobs: &[NewJob]) -> Result<Vec<Result<Insert, Error>>, Error> {
        let mut conn = self.pool().acquire().await?;
        let inserted = match insert_rows(&mut conn, jobs, Start::Requested).await {
            Ok(inserted) => inserted,
            Err(e) if e.is_transient() || jobs.len() == 1 => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, jobs = jobs.len(), "grouped insert failed; inserting each job alone");
                vec![None; jobs.len()]
            }
        };
        let mut settled = Vec::with_capacity(jobs.len());
        for (job, insert) in jobs.iter().zip(inserted) {
            settled.push(match insert {
                Some(record) => Ok(Insert::Created(record)),
                None => match insert_keyed(&mut conn, job).await {
                    Err(e) if e.is_transient() => return Err(e),
                    other => other,
                },
            });
        }
        Ok(settled)
    }

    /// Notes that the broker confirmed messages for these enqueued jobs, so the
    /// dispatcher does not publish them again.
    ///
    /// # Errors
    /// When the database fails (the dispatcher then republishes; the duplicate message
    /// is skipped by the claim).
    pub async fn mark_published(&self, ids: &[JobId]) -> Result<(), Error> {
        let ids: Vec<Uuid> = ids.iter().map(JobId::as_uuid).collect();
        sqlx::query(
            "UPDATE jobs SET published_at = now() \
             WHERE id = ANY($1) AND state = 'enqueued' AND published_at IS NULL",
        )
        .bind(&ids)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

fn initial_state(job: &NewJob, start: Start) -> JobState {
    if start == Start::DueNow || job.run_at.is_some() {
        JobState::Scheduled
    } else {
        JobState::Enqueued
    }
}

/// Inserts jobs on `conn` with one statement: the one `INSERT INTO jobs`. For each job,
/// its record when inserted, or `None` when its idempotency key is already taken (by an
/// earlier job, or an earlier job of this same call), which [`insert_keyed`] settles.
pub(crate) async fn insert_rows(
    conn: &mut PgConnection,
    jobs: &[NewJob],
    start: Start,
) -> Result<Vec<Option<JobRecord>>, Error> {
    let n = jobs.len();
    let mut ids = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut queues = Vec::with_capacity(n);
    let mut args = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    let mut max_attempts = Vec::with_capacity(n);
    let mut run_ats = Vec::with_capacity(n);
    let mut timeouts = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut ttls = Vec::with_capacity(n);
    let mut traces = Vec::with_capacity(n);
    let mut schedules = Vec::with_capacity(n);
    let mut slots = Vec::with_capacity(n);
    let mut callbacks = Vec::with_capacity(n);
    for job in jobs {
        ids.push(job.id.as_uuid());
        kinds.push(job.kind.as_str());
        queues.push(job.queue.as_str());
        args.push(Json(&job.args));
        states.push(initial_state(job, start).as_str());
        max_attempts.push(clamp_i32(u64::from(job.max_attempts)));
        run_ats.push(job.run_at);
        timeouts.push(job.timeout.map(|t| clamp_i32(millis(t).unsigned_abs())));
        keys.push(job.idempotency_key.as_deref());
        ttls.push(millis(job.idempotency_ttl));
        traces.push(job.traceparent.as_deref());
        schedules.push(job.fired_by.as_ref().map(|f| f.schedule.as_str()));
        slots.push(job.fired_by.as_ref().map(|f| f.slot.as_str()));
        callbacks.push(job.callback_url.as_deref());
    }
    // A follow-up job wakes the dispatchers in the same round trip.
    // The jobs' webhook deliveries (subscriptions to `enqueued` / `scheduled`) are
    // inserted by the same statement.
    let rows: Vec<JobRow> = sqlx::query_as(AssertSqlSafe(format!(
        "WITH inserted AS (INSERT INTO jobs AS j (id, kind, queue, args, state, max_attempts, \
             attempt_budget, run_at, timeout_ms, idempotency_key, idempotency_expires_at, \
             traceparent, schedule_name, schedule_slot, callback_url) \
         SELECT id, kind, queue, args, state, max_attempts, max_attempts, COALESCE(run_at, now()), \
             timeout_ms, key, \
             CASE WHEN key IS NULL THEN NULL ELSE now() + ttl_ms * interval '1 millisecond' END, \
             traceparent, schedule_name, schedule_slot, callback_url \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::int[], \
             $7::timestamptz[], $8::int[], $9::text[], $10::bigint[], $11::text[], $13::text[], \
             $14::text[], $15::text[]) \
             AS t(id, kind, queue, args, state, max_attempts, run_at, timeout_ms, key, ttl_ms, \
                 traceparent, schedule_name, schedule_slot, callback_url) \
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING {JOB_COLUMNS}, {TRANSITION_COLUMNS}, \
             CASE WHEN $12 THEN {NOTIFY_DUE} END AS woke) \
         {webhooks} \
         SELECT * FROM inserted",
        webhooks = deliveries_cte("inserted"),
    )))
    .bind(&ids)
    .bind(&kinds)
    .bind(&queues)
    .bind(&args)
    .bind(&states)
    .bind(&max_attempts)
    .bind(&run_ats)
    .bind(&timeouts)
    .bind(&keys)
    .bind(&ttls)
    .bind(&traces)
    .bind(start == Start::DueNow)
    .bind(&schedules)
    .bind(&slots)
    .bind(&callbacks)
    .fetch_all(&mut *conn)
    .await?;
    let mut created: HashMap<JobId, JobRecord> = rows
        .into_iter()
        .map(|row| {
            let record = JobRecord::from(row);
            (record.id, record)
        })
        .collect();
    Ok(jobs.iter().map(|job| created.remove(&job.id)).collect())
}

/// Inserts one job whose idempotency key may be taken, on `conn` (a pooled connection or
/// an open transaction). With the key taken (and not expired), returns the existing job
/// when kind, queue, args and max_attempts are the same, and
/// [`Error::IdempotencyConflict`] otherwise; an expired key is released and the insert
/// tried again. Concurrent inserts with one key yield one job.
pub(crate) async fn insert_keyed(conn: &mut PgConnection, job: &NewJob) -> Result<Insert, Error> {
    // Two rounds at most: the second after freeing an expired key.
    for _ in 0..2 {
        let inserted = insert_rows(conn, std::slice::from_ref(job), Start::Requested).await?;
        if let Some(Some(record)) = inserted.into_iter().next() {
            return Ok(Insert::Created(record));
        }
        // The key is taken: by the same request (a client retry), a different one,
        // or an expired one.
        let Some(key) = &job.idempotency_key else {
            return Err(Error::Corrupt("insert without a key conflicted".into()));
        };
        let existing: Option<KeyedRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS}, idempotency_expires_at < now() AS expired \
             FROM jobs WHERE idempotency_key = $1"
        )))
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(existing) = existing else { continue };
        if existing.expired.unwrap_or(false) {
            sqlx::query(
                "UPDATE jobs SET idempotency_key = NULL \
                 WHERE idempotency_key = $1 AND idempotency_expires_at < now()",
            )
            .bind(key)
            .execute(&mut *conn)
            .await?;
            continue;
        }
        let record = JobRecord::from(existing.job);
        let same = record.kind == job.kind
            && record.queue == job.queue
            && record.args == job.args
            && record.max_attempts == job.max_attempts;
        return if same {
            Ok(Insert::Existing(record))
        } else {
            Err(Error::IdempotencyConflict(key.clone()))
        };
    }
    Err(Error::Corrupt(
        "idempotency key kept changing hands during insert".into(),
    ))
}

/// The job holding a key, and whether the key has expired.
#[derive(sqlx::FromRow)]
struct KeyedRow {
    #[sqlx(flatten)]
    job: JobRow,
    expired: Option<bool>,
}
