//! The ledger: every query Conveyor runs against Postgres. Each state transition is one
//! statement or one transaction, guarded by the state it expects, so a redelivered
//! message or a second dispatcher finds nothing to do instead of doing it twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::{JobId, JobState};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::error::Error;
use crate::settings::DatabaseSettings;

/// Identity of one worker process (one row in `workers`, heartbeating).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerId(pub Uuid);

impl WorkerId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for WorkerId {
    fn default() -> Self {
        Self::new()
    }
}

/// Which jobs to list: filters and a keyset cursor (ids sort by creation time).
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only jobs older than this one (the previous page's last id).
    pub before: Option<JobId>,
    /// Page size.
    pub limit: u32,
}

/// A job as intake records it.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Assigned by the producer.
    pub id: JobId,
    /// Validated kind.
    pub kind: String,
    /// Target queue.
    pub queue: String,
    /// Validated arguments.
    pub args: Value,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// `Some` for a job that waits (state `scheduled`); `None` runs now (`enqueued`).
    pub run_at: Option<DateTime<Utc>>,
    /// Per-job timeout override.
    pub timeout: Option<Duration>,
    /// Client-chosen dedupe key.
    pub idempotency_key: Option<String>,
    /// How long the key dedupes.
    pub idempotency_ttl: Duration,
    /// W3C trace context of the request that enqueued it.
    pub traceparent: Option<String>,
}

/// The result of an insert.
#[derive(Debug, Clone)]
pub enum Insert {
    /// A new job was recorded.
    Created(JobRecord),
    /// The idempotency key named an existing job with the same content.
    Existing(JobRecord),
}

/// One job as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobRecord {
    /// Id.
    pub id: JobId,
    /// Kind.
    pub kind: String,
    /// Queue.
    pub queue: String,
    /// Arguments.
    pub args: Value,
    /// Current state.
    pub state: JobState,
    /// Attempts started so far.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When it runs (for scheduled and retrying jobs) or ran.
    pub run_at: DateTime<Utc>,
    /// Per-job timeout, in milliseconds.
    pub timeout_ms: Option<u32>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// The handler's result, once completed.
    pub result: Option<Value>,
    /// The latest failure.
    pub last_error: Option<String>,
    /// Whether cancellation was requested while running.
    pub cancel_requested: bool,
    /// Times replayed from the dead letters.
    pub replay_count: u32,
    /// Last replay.
    pub replayed_at: Option<DateTime<Utc>>,
    /// Who replayed it last.
    pub replayed_by: Option<String>,
    /// Trace context of the enqueuing request.
    pub traceparent: Option<String>,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// Last transition.
    pub updated_at: DateTime<Utc>,
    /// Last attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// Reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
}

const JOB_COLUMNS: &str = "id, kind, queue, args, state, attempt, max_attempts, run_at, \
    timeout_ms, idempotency_key, result, last_error, cancel_requested, replay_count, \
    replayed_at, replayed_by, traceparent, created_at, updated_at, started_at, finished_at";

fn state_of(row: &PgRow, column: &str) -> Result<JobState, Error> {
    let text: String = row.try_get(column)?;
    text.parse().map_err(|e| Error::Corrupt(format!("{e}")))
}

fn u32_of(row: &PgRow, column: &str) -> Result<u32, Error> {
    let value: i32 = row.try_get(column)?;
    u32::try_from(value).map_err(|_| Error::Corrupt(format!("{column} is negative")))
}

impl JobRecord {
    fn from_row(row: &PgRow) -> Result<Self, Error> {
        let timeout_ms: Option<i32> = row.try_get("timeout_ms")?;
        Ok(Self {
            id: JobId(row.try_get("id")?),
            kind: row.try_get("kind")?,
            queue: row.try_get("queue")?,
            args: row.try_get::<Json<Value>, _>("args")?.0,
            state: state_of(row, "state")?,
            attempt: u32_of(row, "attempt")?,
            max_attempts: u32_of(row, "max_attempts")?,
            run_at: row.try_get("run_at")?,
            timeout_ms: timeout_ms.and_then(|t| u32::try_from(t).ok()),
            idempotency_key: row.try_get("idempotency_key")?,
            result: row
                .try_get::<Option<Json<Value>>, _>("result")?
                .map(|j| j.0),
            last_error: row.try_get("last_error")?,
            cancel_requested: row.try_get("cancel_requested")?,
            replay_count: u32_of(row, "replay_count")?,
            replayed_at: row.try_get("replayed_at")?,
            replayed_by: row.try_get("replayed_by")?,
            traceparent: row.try_get("traceparent")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

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
}

/// How an attempt ended, as the executor decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Succeeded with this result.
    Completed {
        /// The handler's output.
        result: Value,
    },
    /// Failed; runs again after `delay` (from the moment the outcome commits).
    Retry {
        /// Why it failed.
        error: String,
        /// Backoff before the next attempt.
        delay: Duration,
    },
    /// Will not run again: attempts exhausted, permanent failure or unknown kind.
    Dead {
        /// Why it failed.
        error: String,
        /// Short machine-readable cause (`attempts_exhausted`, `failed`, `unknown_kind`).
        reason: &'static str,
    },
    /// Not ready; runs again after `delay` without consuming an attempt.
    Snooze {
        /// How long to wait.
        delay: Duration,
    },
}

/// The record of one finished attempt.
#[derive(Debug, Clone)]
pub struct Finish {
    /// The job.
    pub id: JobId,
    /// The attempt the worker claimed.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: WorkerId,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// How it ended.
    pub outcome: Outcome,
}

/// What [`Store::finish`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// The outcome is written.
    Recorded,
    /// The handler already completed this attempt inside its own transaction (as
    /// `order.process` does, so the order and the completion commit together); there
    /// was nothing left to write.
    AlreadyCompleted,
    /// The job is no longer this worker's running attempt (the dispatcher rescued it,
    /// an operator cancelled it; `None`: the row is gone): the outcome was dropped.
    TakenOver(Option<JobState>),
}

/// A job the dispatcher is about to publish.
#[derive(Debug, Clone)]
pub struct DueJob {
    /// Id.
    pub id: JobId,
    /// Kind.
    pub kind: String,
    /// Queue.
    pub queue: String,
    /// Arguments.
    pub args: Value,
    /// Trace context.
    pub traceparent: Option<String>,
}

/// The ledger.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

fn claimed_job(row: &PgRow) -> Result<ClaimedJob, Error> {
    let timeout_ms: Option<i32> = row.try_get("timeout_ms")?;
    Ok(ClaimedJob {
        id: JobId(row.try_get("id")?),
        kind: row.try_get("kind")?,
        queue: row.try_get("queue")?,
        args: row.try_get::<Json<Value>, _>("args")?.0,
        attempt: u32_of(row, "attempt")?,
        max_attempts: u32_of(row, "max_attempts")?,
        timeout: timeout_ms
            .and_then(|t| u64::try_from(t).ok())
            .map(Duration::from_millis),
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        traceparent: row.try_get("traceparent")?,
    })
}

fn rows_contains(rows: &[PgRow], id: JobId) -> bool {
    rows.iter()
        .any(|r| r.try_get::<Uuid, _>("id").ok() == Some(id.as_uuid()))
}

fn clamp_i32(value: u64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

impl Store {
    /// A store over a lazily connecting pool.
    ///
    /// # Errors
    /// When the URL is invalid.
    pub fn connect(settings: &DatabaseSettings) -> Result<Self, Error> {
        Ok(Self {
            pool: settings.pool()?,
        })
    }

    /// A store over an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool, for callers that compose their own transactions (tests, handlers'
    /// adapters).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations.
    ///
    /// # Errors
    /// When a migration fails or the database is unreachable.
    pub async fn migrate(&self) -> Result<(), Error> {
        crate::MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Checks the database answers.
    ///
    /// # Errors
    /// When it does not.
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Records many jobs in one transaction: all of them, or (on any error, including an
    /// idempotency conflict) none.
    ///
    /// # Errors
    /// Conflict, or the database failed; nothing was stored.
    pub async fn insert_jobs(&self, jobs: &[NewJob]) -> Result<Vec<Insert>, Error> {
        let mut tx = self.pool.begin().await?;
        let inserted = insert_many_on(&mut tx, jobs).await?;
        let mut settled = Vec::with_capacity(jobs.len());
        for (job, insert) in jobs.iter().zip(inserted) {
            settled.push(match insert {
                Some(insert) => insert,
                None => insert_on(&mut tx, job).await?,
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
        let mut conn = self.pool.acquire().await?;
        let inserted = match insert_many_on(&mut conn, jobs).await {
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
                Some(insert) => Ok(insert),
                None => match insert_on(&mut conn, job).await {
                    Err(e) if e.is_transient() => return Err(e),
                    other => other,
                },
            });
        }
        Ok(settled)
    }

    /// Jobs matching `query`, newest first, after its cursor.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<JobRecord>, Error> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs \
             WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR kind = $2) \
               AND ($3::text IS NULL OR queue = $3) AND ($4::uuid IS NULL OR id < $4) \
             ORDER BY id DESC LIMIT $5"
        )))
        .bind(query.state.map(|s| s.as_str()))
        .bind(&query.kind)
        .bind(&query.queue)
        .bind(query.before.map(|id| id.as_uuid()))
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(JobRecord::from_row).collect()
    }

    /// One job by id.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn get_job(&self, id: JobId) -> Result<Option<JobRecord>, Error> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
        )))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(JobRecord::from_row).transpose()
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Claims many enqueued jobs for `worker` in one statement; the answer for each id,
    /// in order. An id given twice is claimed once (the second is a `Skip`).
    ///
    /// # Errors
    /// When the database fails (nothing was claimed).
    pub async fn claim_many(&self, ids: &[JobId], worker: WorkerId) -> Result<Vec<Claim>, Error> {
        let unique: Vec<Uuid> = {
            let mut seen = std::collections::HashSet::new();
            ids.iter()
                .map(JobId::as_uuid)
                .filter(|id| seen.insert(*id))
                .collect()
        };
        let rows = sqlx::query(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, worker_id = $2, \
                 started_at = now(), updated_at = now() \
             WHERE id = ANY($1) AND state = 'enqueued' \
             RETURNING id, kind, queue, args, attempt, max_attempts, timeout_ms, created_at, \
                 started_at, traceparent",
        )
        .bind(&unique)
        .bind(worker.0)
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let job = claimed_job(row)?;
            claimed.insert(job.id, job);
        }
        let others: Vec<Uuid> = unique
            .iter()
            .copied()
            .filter(|id| !claimed.contains_key(&JobId(*id)))
            .collect();
        let mut states = std::collections::HashMap::new();
        if !others.is_empty() {
            for row in sqlx::query("SELECT id, state FROM jobs WHERE id = ANY($1)")
                .bind(&others)
                .fetch_all(&self.pool)
                .await?
            {
                states.insert(JobId(row.try_get("id")?), state_of(&row, "state")?);
            }
        }
        Ok(ids
            .iter()
            .map(|id| match claimed.remove(id) {
                Some(job) => Claim::Claimed(job),
                // Claimed for an earlier copy of this id in the batch, or not enqueued.
                None => states.get(id).map_or_else(
                    || {
                        if unique.contains(&id.as_uuid()) && rows_contains(&rows, *id) {
                            Claim::Skip(JobState::Running)
                        } else {
                            Claim::Missing
                        }
                    },
                    |state| Claim::Skip(*state),
                ),
            })
            .collect())
    }

    /// Records many successful attempts in one statement (job rows and attempt rows).
    /// For each: [`Finished::Recorded`]; [`Finished::AlreadyCompleted`] when the handler
    /// completed it at that attempt in its own transaction; `None` when it was not
    /// running at that attempt for that worker for another reason — settle those with
    /// [`Store::finish`], which says why.
    ///
    /// # Errors
    /// When the database fails (nothing was written).
    pub async fn complete_many(&self, finishes: &[Finish]) -> Result<Vec<Option<Finished>>, Error> {
        let mut ids = Vec::with_capacity(finishes.len());
        let mut attempts = Vec::with_capacity(finishes.len());
        let mut results = Vec::with_capacity(finishes.len());
        let mut started = Vec::with_capacity(finishes.len());
        let mut workers = Vec::with_capacity(finishes.len());
        for finish in finishes {
            let Outcome::Completed { result } = &finish.outcome else {
                return Err(Error::Corrupt(
                    "complete_many takes completed outcomes only".into(),
                ));
            };
            ids.push(finish.id.as_uuid());
            attempts.push(clamp_i32(u64::from(finish.attempt)));
            results.push(result.clone());
            started.push(finish.started_at);
            workers.push(finish.worker.0);
        }
        let done: Vec<Uuid> = sqlx::query_scalar(
            "WITH input AS (SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::jsonb[], $4::timestamptz[], $5::uuid[]) \
                 AS t(id, attempt, result, started_at, worker_id)), \
             done AS (UPDATE jobs j SET state = 'completed', result = i.result, worker_id = NULL, \
                     published_at = NULL, updated_at = now(), finished_at = now() \
                 FROM input i \
                 WHERE j.id = i.id AND j.state = 'running' AND j.attempt = i.attempt AND j.worker_id = i.worker_id \
                 RETURNING j.id, i.attempt, i.started_at, i.worker_id) \
             INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, outcome) \
             SELECT id, attempt, worker_id, started_at, 'completed' FROM done RETURNING job_id",
        )
        .bind(&ids)
        .bind(&attempts)
        .bind(&results)
        .bind(&started)
        .bind(&workers)
        .fetch_all(&self.pool)
        .await?;
        let done: std::collections::HashSet<Uuid> = done.into_iter().collect();
        // The rest were not running at that attempt for that worker: most often a
        // handler completed its job in its own transaction (`order.process`), which one
        // read tells apart without a transaction per job.
        let others: Vec<Uuid> = ids
            .iter()
            .copied()
            .filter(|id| !done.contains(id))
            .collect();
        let mut now_at = std::collections::HashMap::new();
        if !others.is_empty() {
            for row in sqlx::query("SELECT id, state, attempt FROM jobs WHERE id = ANY($1)")
                .bind(&others)
                .fetch_all(&self.pool)
                .await?
            {
                let id: Uuid = row.try_get("id")?;
                now_at.insert(id, (state_of(&row, "state")?, u32_of(&row, "attempt")?));
            }
        }
        Ok(finishes
            .iter()
            .map(|f| {
                if done.contains(&f.id.as_uuid()) {
                    Some(Finished::Recorded)
                } else {
                    match now_at.get(&f.id.as_uuid()) {
                        Some((JobState::Completed, attempt)) if *attempt == f.attempt => {
                            Some(Finished::AlreadyCompleted)
                        }
                        _ => None,
                    }
                }
            })
            .collect())
    }

    /// Records how an attempt ended, in one transaction: the job's new state, the
    /// attempt row, and for a dead job its dead letter. When the job is no longer this
    /// worker's running attempt, changes nothing and says why: the handler completed it
    /// in its own transaction ([`Finished::AlreadyCompleted`]), or the dispatcher
    /// rescued it or an operator cancelled it ([`Finished::TakenOver`]).
    ///
    /// # Errors
    /// When the database fails; nothing was written.
    pub async fn finish(&self, finish: &Finish) -> Result<Finished, Error> {
        let mut tx = self.pool.begin().await?;
        let written = record_outcome(
            &mut tx,
            finish.id,
            finish.attempt,
            Some(finish.worker),
            Some(finish.started_at),
            &finish.outcome,
        )
        .await?;
        if written {
            tx.commit().await?;
            return Ok(Finished::Recorded);
        }
        let row = sqlx::query("SELECT state, attempt FROM jobs WHERE id = $1")
            .bind(finish.id.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
        tx.rollback().await?;
        let Some(row) = row else {
            return Ok(Finished::TakenOver(None));
        };
        let state = state_of(&row, "state")?;
        // Completed at the very attempt this worker ran: only the handler's own
        // transaction does that (a rescue or replay moves the attempt on first).
        if state == JobState::Completed && u32_of(&row, "attempt")? == finish.attempt {
            Ok(Finished::AlreadyCompleted)
        } else {
            Ok(Finished::TakenOver(Some(state)))
        }
    }

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
        let after_ms = i64::try_from(unconfirmed_after.as_millis()).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "WITH due AS (SELECT id FROM jobs \
                WHERE state IN ('scheduled', 'retrying') AND run_at <= now() \
                ORDER BY run_at LIMIT $1 FOR UPDATE SKIP LOCKED), \
             unconfirmed AS (SELECT id FROM jobs \
                WHERE state = 'enqueued' AND published_at IS NULL \
                  AND updated_at <= now() - make_interval(secs => $2::bigint / 1000.0) \
                ORDER BY updated_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             UPDATE jobs SET state = 'enqueued', published_at = NULL, updated_at = now() \
             WHERE id IN (SELECT id FROM due UNION ALL SELECT id FROM unconfirmed) \
             RETURNING id, kind, queue, args, traceparent",
        )
        .bind(i64::from(limit))
        .bind(after_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DueJob {
                    id: JobId(row.try_get("id")?),
                    kind: row.try_get("kind")?,
                    queue: row.try_get("queue")?,
                    args: row.try_get::<Json<Value>, _>("args")?.0,
                    traceparent: row.try_get("traceparent")?,
                })
            })
            .collect()
    }

    /// How long until the next scheduled or retrying job is due (`None` when there is
    /// none), so the dispatcher can sleep exactly that long.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn next_due_in(&self) -> Result<Option<Duration>, Error> {
        let row = sqlx::query(
            "SELECT GREATEST(0, EXTRACT(EPOCH FROM (min(run_at) - now())) * 1000)::bigint AS ms \
             FROM jobs WHERE state IN ('scheduled', 'retrying')",
        )
        .fetch_one(&self.pool)
        .await?;
        let ms: Option<i64> = row.try_get("ms")?;
        Ok(ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))))
    }

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
        .execute(&self.pool)
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
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Rescues running jobs whose worker stopped heartbeating for `lost_after` (or is
    /// gone): each gets a `lost` attempt row and is retried now, or is dead when it has
    /// no attempts left. Returns how many were rescued.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn rescue_orphans(&self, lost_after: Duration) -> Result<u64, Error> {
        let after_ms = i64::try_from(lost_after.as_millis()).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT j.id, j.attempt, j.max_attempts, j.worker_id, j.started_at, j.queue, j.kind, \
                 j.args FROM jobs j LEFT JOIN workers w ON w.id = j.worker_id \
             WHERE j.state = 'running' \
               AND j.started_at <= now() - make_interval(secs => $1::bigint / 1000.0) \
               AND (w.id IS NULL OR w.heartbeat_at <= now() - make_interval(secs => $1::bigint / 1000.0)) \
             ORDER BY j.started_at LIMIT 500 FOR UPDATE OF j SKIP LOCKED",
        )
        .bind(after_ms)
        .fetch_all(&mut *tx)
        .await?;
        let error = "worker lost: it stopped heartbeating while running this job";
        for row in &rows {
            let id: Uuid = row.try_get("id")?;
            let attempt: i32 = row.try_get("attempt")?;
            let max_attempts: i32 = row.try_get("max_attempts")?;
            let dead = attempt >= max_attempts;
            sqlx::query(
                "UPDATE jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' \
                     WHEN $2 THEN 'dead' ELSE 'retrying' END, \
                     run_at = now(), last_error = $3, worker_id = NULL, published_at = NULL, \
                     updated_at = now(), \
                     finished_at = CASE WHEN $2 OR cancel_requested THEN now() END \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(dead)
            .bind(error)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, outcome, error) \
                 VALUES ($1, $2, $3, COALESCE($4, now()), 'lost', $5)",
            )
            .bind(id)
            .bind(attempt)
            .bind(row.try_get::<Option<Uuid>, _>("worker_id")?)
            .bind(row.try_get::<Option<DateTime<Utc>>, _>("started_at")?)
            .bind(error)
            .execute(&mut *tx)
            .await?;
            if dead {
                sqlx::query(
                    "INSERT INTO dead_letters (id, job_id, queue, kind, reason, error, payload) \
                     VALUES ($1, $2, $3, $4, 'attempts_exhausted', $5, $6)",
                )
                .bind(Uuid::now_v7())
                .bind(id)
                .bind(row.try_get::<String, _>("queue")?)
                .bind(row.try_get::<String, _>("kind")?)
                .bind(error)
                .bind(
                    serde_json::to_vec(&row.try_get::<Json<Value>, _>("args")?.0)
                        .unwrap_or_default(),
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        if !rows.is_empty() {
            sqlx::query("SELECT pg_notify('conveyor_due', '')")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// Archives a message that never became a runnable job (undecodable, unknown kind,
    /// no such job, or dead-lettered by RabbitMQ). When it names an existing job that is
    /// not final yet, that job is marked dead too. Idempotent per `message_key`: a
    /// redelivered dead letter is stored once.
    ///
    /// # Errors
    /// When the database fails (the message stays in the dead-letter queue).
    #[allow(clippy::too_many_arguments)]
    pub async fn archive_dead_letter(
        &self,
        message_key: Uuid,
        job_id: Option<JobId>,
        queue: Option<&str>,
        kind: Option<&str>,
        reason: &str,
        error: &str,
        payload: &[u8],
        headers: &Value,
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        // Only a job that exists gets linked (a forged id must not fail the insert).
        let job = match job_id {
            Some(id) => sqlx::query(
                "UPDATE jobs SET state = 'dead', last_error = $2, worker_id = NULL, \
                     updated_at = now(), finished_at = now() \
                 WHERE id = $1 AND state NOT IN ('completed', 'dead', 'cancelled') \
                 RETURNING id",
            )
            .bind(id.as_uuid())
            .bind(error)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get::<Uuid, _>("id"))
            .transpose()?,
            None => None,
        };
        if job.is_none()
            && let Some(id) = job_id
            && sqlx::query("SELECT 1 FROM jobs WHERE id = $1")
                .bind(id.as_uuid())
                .fetch_optional(&mut *tx)
                .await?
                .is_some()
        {
            // A stale copy of a job that already finished: nothing is lost, nothing to keep.
            tx.rollback().await?;
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO dead_letters (id, job_id, queue, kind, reason, error, payload, headers) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(message_key)
        .bind(job)
        .bind(queue)
        .bind(kind)
        .bind(reason)
        .bind(error)
        .bind(payload)
        .bind(Json(headers))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Inserts many jobs on `conn` with one statement. `Some(Created)` for each job
/// inserted; `None` for a job whose idempotency key is already taken (by an earlier
/// job, or an earlier job of this same call), which the caller settles with
/// [`insert_on`].
async fn insert_many_on(
    conn: &mut sqlx::PgConnection,
    jobs: &[NewJob],
) -> Result<Vec<Option<Insert>>, Error> {
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
    for job in jobs {
        ids.push(job.id.as_uuid());
        kinds.push(job.kind.as_str());
        queues.push(job.queue.as_str());
        args.push(Json(&job.args));
        states.push(initial_state(job).as_str());
        max_attempts.push(clamp_i32(u64::from(job.max_attempts)));
        run_ats.push(job.run_at);
        timeouts.push(timeout_ms(job));
        keys.push(job.idempotency_key.as_deref());
        ttls.push(ttl_ms(job));
        traces.push(job.traceparent.as_deref());
    }
    let rows = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO jobs (id, kind, queue, args, state, max_attempts, attempt_budget, run_at, \
             timeout_ms, idempotency_key, idempotency_expires_at, traceparent) \
         SELECT id, kind, queue, args, state, max_attempts, max_attempts, COALESCE(run_at, now()), \
             timeout_ms, key, \
             CASE WHEN key IS NULL THEN NULL ELSE now() + make_interval(secs => ttl_ms / 1000.0) END, \
             traceparent \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::int[], \
             $7::timestamptz[], $8::int[], $9::text[], $10::bigint[], $11::text[]) \
             AS t(id, kind, queue, args, state, max_attempts, run_at, timeout_ms, key, ttl_ms, traceparent) \
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING {JOB_COLUMNS}"
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
    .fetch_all(&mut *conn)
    .await?;
    let mut created = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let record = JobRecord::from_row(row)?;
        created.insert(record.id, record);
    }
    Ok(jobs
        .iter()
        .map(|job| created.remove(&job.id).map(Insert::Created))
        .collect())
}

fn initial_state(job: &NewJob) -> JobState {
    if job.run_at.is_some() {
        JobState::Scheduled
    } else {
        JobState::Enqueued
    }
}

fn timeout_ms(job: &NewJob) -> Option<i32> {
    job.timeout
        .map(|t| clamp_i32(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)))
}

fn ttl_ms(job: &NewJob) -> i64 {
    i64::try_from(job.idempotency_ttl.as_millis()).unwrap_or(i64::MAX)
}

/// Inserts one job on `conn` (a pooled connection or an open transaction). With an
/// idempotency key that is already taken (and not expired), returns the existing job
/// when kind, queue, args and max_attempts are the same, and
/// [`Error::IdempotencyConflict`] otherwise; an expired key is released and the insert
/// tried again. Concurrent inserts with one key yield one job.
async fn insert_on(conn: &mut sqlx::PgConnection, job: &NewJob) -> Result<Insert, Error> {
    // Two rounds at most: the second after freeing an expired key.
    for _ in 0..2 {
        let state = initial_state(job);
        let inserted = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO jobs (id, kind, queue, args, state, max_attempts, attempt_budget, run_at, \
                 timeout_ms, idempotency_key, idempotency_expires_at, traceparent) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, COALESCE($7, now()), $8, $9, \
                 CASE WHEN $9::text IS NULL THEN NULL \
                      ELSE now() + make_interval(secs => $10::bigint / 1000.0) END, $11) \
             ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
             RETURNING {JOB_COLUMNS}"
        )))
        .bind(job.id.as_uuid())
        .bind(&job.kind)
        .bind(&job.queue)
        .bind(Json(&job.args))
        .bind(state.as_str())
        .bind(clamp_i32(u64::from(job.max_attempts)))
        .bind(job.run_at)
        .bind(timeout_ms(job))
        .bind(&job.idempotency_key)
        .bind(ttl_ms(job))
        .bind(&job.traceparent)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = inserted {
            return Ok(Insert::Created(JobRecord::from_row(&row)?));
        }
        // The key is taken: by the same request (a client retry), a different one,
        // or an expired one.
        let Some(key) = &job.idempotency_key else {
            return Err(Error::Corrupt("insert without a key conflicted".into()));
        };
        let existing = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS}, idempotency_expires_at < now() AS expired \
             FROM jobs WHERE idempotency_key = $1"
        )))
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = existing else { continue };
        if row.try_get::<Option<bool>, _>("expired")?.unwrap_or(false) {
            sqlx::query(
                "UPDATE jobs SET idempotency_key = NULL \
                 WHERE idempotency_key = $1 AND idempotency_expires_at < now()",
            )
            .bind(key)
            .execute(&mut *conn)
            .await?;
            continue;
        }
        let record = JobRecord::from_row(&row)?;
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

/// Writes how attempt `attempt` of job `id` ended, inside the caller's transaction: the
/// job row, its attempt row, and for a dead job its dead letter. Only while the job is
/// `running` at that attempt (and held by `worker`, when one is named); otherwise writes
/// nothing and returns `false`. The one place a worker writes an attempt's outcome:
/// [`Store::finish`] uses it, and so do handlers' adapters that complete their job in
/// their own transaction (`order.process`). The attempt row takes its worker and start
/// from the job row when the caller does not know them.
///
/// # Errors
/// When the database fails.
pub(crate) async fn record_outcome(
    conn: &mut PgConnection,
    id: JobId,
    attempt: u32,
    worker: Option<WorkerId>,
    started_at: Option<DateTime<Utc>>,
    outcome: &Outcome,
) -> Result<bool, Error> {
    let attempt = clamp_i32(u64::from(attempt));
    // A cancel requested while the job ran turns a retry or snooze into `cancelled`.
    let (state, result, error, delay, attempt_outcome) = match outcome {
        Outcome::Completed { result } => ("completed", Some(result), None, None, "completed"),
        Outcome::Retry { error, delay } => (
            "retrying",
            None,
            Some(error.as_str()),
            Some(*delay),
            "retry",
        ),
        Outcome::Dead { error, .. } => ("dead", None, Some(error.as_str()), None, "failed"),
        Outcome::Snooze { delay } => ("scheduled", None, None, Some(*delay), "snoozed"),
    };
    // Due times are computed by Postgres from the commit's own clock.
    let delay_ms = delay.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    // One statement: the job row (only while this attempt holds it) and its attempt row.
    let updated = sqlx::query(
        "WITH held AS (SELECT id, worker_id, started_at FROM jobs \
             WHERE id = $1 AND state = 'running' AND attempt = $6 \
               AND ($7::uuid IS NULL OR worker_id = $7) \
             FOR UPDATE), \
         updated AS (UPDATE jobs SET \
             state = CASE WHEN cancel_requested AND $2 IN ('retrying', 'scheduled') \
                          THEN 'cancelled' ELSE $2 END, \
             result = COALESCE($3, result), \
             last_error = COALESCE($4, last_error), \
             run_at = COALESCE(now() + make_interval(secs => $5::bigint / 1000.0), run_at), \
             attempt = CASE WHEN $2 = 'scheduled' THEN attempt - 1 ELSE attempt END, \
             worker_id = NULL, published_at = NULL, updated_at = now(), \
             finished_at = CASE WHEN $2 IN ('completed', 'dead') OR \
                 (cancel_requested AND $2 IN ('retrying', 'scheduled')) THEN now() END \
           FROM held WHERE jobs.id = held.id \
           RETURNING jobs.queue, jobs.kind, jobs.args, held.worker_id AS held_by, \
               held.started_at AS claimed_at), \
         attempt_row AS (INSERT INTO job_attempts \
             (job_id, attempt, worker_id, started_at, outcome, error, retry_at) \
           SELECT $1, $6, COALESCE($7::uuid, held_by), COALESCE($8::timestamptz, claimed_at, now()), \
               $9, $4, now() + make_interval(secs => $5::bigint / 1000.0) \
           FROM updated) \
         SELECT queue, kind, args FROM updated",
    )
    .bind(id.as_uuid())
    .bind(state)
    .bind(result.map(Json))
    .bind(error)
    .bind(delay_ms)
    .bind(attempt)
    .bind(worker.map(|w| w.0))
    .bind(started_at)
    .bind(attempt_outcome)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = updated else {
        return Ok(false);
    };
    if let Outcome::Dead { error, reason } = outcome {
        let queue: String = row.try_get("queue")?;
        let kind: String = row.try_get("kind")?;
        let args: Json<Value> = row.try_get("args")?;
        sqlx::query(
            "INSERT INTO dead_letters (id, job_id, queue, kind, reason, error, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(Uuid::now_v7())
        .bind(id.as_uuid())
        .bind(queue)
        .bind(kind)
        .bind(*reason)
        .bind(error)
        .bind(serde_json::to_vec(&args.0).unwrap_or_default())
        .execute(&mut *conn)
        .await?;
    }
    if matches!(outcome, Outcome::Retry { .. } | Outcome::Snooze { .. }) {
        notify_due(conn).await?;
    }
    Ok(true)
}

/// Records a new job inside the caller's transaction, `scheduled` and due now, so it
/// exists exactly when the transaction's other effects do (transactional enqueue). The
/// dispatcher publishes it; the `NOTIFY` wakes it when the transaction commits.
///
/// # Errors
/// When the database fails.
pub(crate) async fn enqueue_in(
    conn: &mut PgConnection,
    id: JobId,
    kind: &str,
    queue: &str,
    args: &Value,
    max_attempts: u32,
) -> Result<(), Error> {
    // One round trip: the insert, and the wake-up (delivered when the transaction
    // commits).
    sqlx::query(
        "WITH inserted AS (INSERT INTO jobs (id, kind, queue, args, state, max_attempts, \
             attempt_budget, run_at) VALUES ($1, $2, $3, $4, $5, $6, $6, now()) RETURNING id) \
         SELECT pg_notify('conveyor_due', '') FROM inserted",
    )
    .bind(id.as_uuid())
    .bind(kind)
    .bind(queue)
    .bind(Json(args))
    .bind(JobState::Scheduled.as_str())
    .bind(clamp_i32(u64::from(max_attempts)))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Wakes the dispatchers (delivered when the transaction commits).
pub(crate) async fn notify_due(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("SELECT pg_notify('conveyor_due', '')")
        .execute(&mut *conn)
        .await?;
    Ok(())
}
