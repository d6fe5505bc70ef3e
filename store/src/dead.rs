//! The dead-letter store and operator actions on jobs: list, group, show, replay,
//! purge, cancel, retry. Each action is one transaction guarded by the state it expects,
//! so two operators replaying the same set never run a job twice at once.

use chrono::{DateTime, Utc};
use jobs::{AttemptOutcome, DeadReason, JobId, JobState};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::Store;
use crate::audit::{self, AuditAction, AuditContext};
use crate::error::Error;
use crate::sql::notify_due;
use crate::webhooks::{TRANSITION_COLUMNS, deliveries_cte};

/// Which dead letters an operator means. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct DeadFilter {
    /// Exact queue.
    pub queue: Option<String>,
    /// Exact kind.
    pub kind: Option<String>,
    /// Case-insensitive substring of the error.
    pub error: Option<String>,
    /// Died at or after.
    pub since: Option<DateTime<Utc>>,
    /// Died before.
    pub until: Option<DateTime<Utc>>,
    /// At most this many (newest first).
    pub limit: Option<u32>,
    /// Only kinds matching one of these SQL `LIKE` patterns (a key's kind globs);
    /// empty: every kind. A dead letter without a kind matches only when empty.
    pub kind_patterns: Vec<String>,
    /// Only queues matching one of these SQL `LIKE` patterns (a key's queue globs);
    /// empty: every queue.
    pub queue_patterns: Vec<String>,
    /// Keyset cursor: only dead letters older than this (`died_at`, `id`) pair, the
    /// last one of the previous page.
    pub before: Option<(DateTime<Utc>, Uuid)>,
}

impl DeadFilter {
    /// The filter as recorded in the audit log (what an operator asked for).
    pub fn describe(&self) -> Value {
        let mut out = serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                out.insert(k.to_owned(), v);
            }
        };
        put("queue", self.queue.clone().map(Value::from));
        put("kind", self.kind.clone().map(Value::from));
        put("error", self.error.clone().map(Value::from));
        put("since", self.since.map(|t| Value::from(t.to_rfc3339())));
        put("until", self.until.map(|t| Value::from(t.to_rfc3339())));
        put("limit", self.limit.map(Value::from));
        Value::Object(out)
    }
}

/// One open dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The dead letter's id.
    pub id: Uuid,
    /// The job, when it was one.
    pub job_id: Option<JobId>,
    /// Queue it died on.
    pub queue: Option<String>,
    /// Kind, when known.
    pub kind: Option<String>,
    /// Short cause.
    pub reason: DeadReason,
    /// The error.
    pub error: Option<String>,
    /// Attempts the job made.
    pub attempts: Option<u32>,
    /// Times the job was replayed before.
    pub replay_count: Option<u32>,
    /// When it died.
    pub died_at: DateTime<Utc>,
}

/// Dead letters sharing one error fingerprint (the error with ids and numbers masked).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ErrorGroup {
    /// The masked error.
    pub fingerprint: String,
    /// How many.
    #[sqlx(rename = "n")]
    pub count: i64,
    /// Kinds involved.
    pub kinds: Vec<String>,
    /// Earliest death.
    pub first: DateTime<Utc>,
    /// Latest death.
    pub last: DateTime<Utc>,
}

/// One attempt of a job.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AttemptRecord {
    /// Attempt number.
    pub attempt: i32,
    /// How it ended.
    #[sqlx(try_from = "String")]
    pub outcome: AttemptOutcome,
    /// The error.
    pub error: Option<String>,
    /// Worker that ran it.
    pub worker_id: Option<Uuid>,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Finished.
    pub finished_at: DateTime<Utc>,
    /// For a retry or snooze: when the job was scheduled to run again.
    pub retry_at: Option<DateTime<Utc>>,
}

/// A dead letter with everything an operator needs to understand it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterDetail {
    /// The summary.
    #[serde(flatten)]
    pub letter: DeadLetter,
    /// The job's arguments (for a job) or the raw payload as text (lossy).
    pub payload: Value,
    /// AMQP headers of a raw message.
    pub headers: Option<Value>,
    /// Every attempt, oldest first.
    pub attempts_history: Vec<AttemptRecord>,
    /// When replayed or purged.
    pub resolved_at: Option<DateTime<Utc>>,
    /// `replayed` or `purged`.
    pub resolution: Option<String>,
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReplayOutcome {
    /// The job is scheduled to run now with a fresh attempt budget.
    Replayed {
        /// The job.
        job_id: JobId,
    },
    /// Nothing was done, and why.
    Skipped {
        /// For a person.
        reason: String,
    },
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job will not run.
    Cancelled,
    /// The job is running: it finishes its attempt but will not be retried.
    Requested,
    /// Nothing to cancel: the job is already in this final state.
    AlreadyFinal(JobState),
    /// No such job.
    NotFound,
}

/// What `jobs retry` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Due now.
    Scheduled,
    /// Not retryable in this state.
    NotRetryable(JobState),
    /// No such job.
    NotFound,
}

const FILTER: &str = "d.resolved_at IS NULL \
    AND ($1::text IS NULL OR d.queue = $1) \
    AND ($2::text IS NULL OR d.kind = $2) \
    AND ($3::text IS NULL OR d.error ILIKE '%' || $3 || '%') \
    AND ($4::timestamptz IS NULL OR d.created_at >= $4) \
    AND ($5::timestamptz IS NULL OR d.created_at < $5) \
    AND (cardinality($7::text[]) = 0 OR d.kind LIKE ANY($7)) \
    AND (cardinality($8::text[]) = 0 OR d.queue LIKE ANY($8)) \
    AND ($9::timestamptz IS NULL OR (d.created_at, d.id) < ($9, $10::uuid))";

/// The error with ids, long numbers, addresses and Conveyor's attempt suffix masked.
const FINGERPRINT: &str = "regexp_replace(regexp_replace(regexp_replace(regexp_replace( \
    coalesce(d.error, d.reason), \
    ' \\(attempt [0-9]+ of [0-9]+; no attempts left\\)', '', 'g'), \
    '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'gi'), \
    '[^[:space:]<>@]+@[^[:space:]<>@]+', '<email>', 'g'), \
    '[0-9]{4,}', '<n>', 'g')";

/// A dead letter joined with its job, as [`DeadLetter`]'s queries select it.
#[derive(sqlx::FromRow)]
struct LetterRow {
    id: Uuid,
    job_id: Option<Uuid>,
    queue: Option<String>,
    kind: Option<String>,
    #[sqlx(try_from = "String")]
    reason: DeadReason,
    error: Option<String>,
    attempt: Option<i32>,
    replay_count: Option<i32>,
    created_at: DateTime<Utc>,
}

impl From<LetterRow> for DeadLetter {
    fn from(row: LetterRow) -> Self {
        Self {
            id: row.id,
            job_id: row.job_id.map(JobId),
            queue: row.queue,
            kind: row.kind,
            reason: row.reason,
            error: row.error,
            attempts: row.attempt.and_then(|a| u32::try_from(a).ok()),
            replay_count: row.replay_count.and_then(|a| u32::try_from(a).ok()),
            died_at: row.created_at,
        }
    }
}

/// A dead letter with its payload and resolution, for [`Store::dead_letter`].
#[derive(sqlx::FromRow)]
struct DetailRow {
    #[sqlx(flatten)]
    letter: LetterRow,
    payload: Option<Vec<u8>>,
    headers: Option<Json<Value>>,
    resolved_at: Option<DateTime<Utc>>,
    resolution: Option<String>,
    args: Option<Json<Value>>,
}

impl Store {
    /// Open dead letters matching `filter`, newest first.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn dead_letters(&self, filter: &DeadFilter) -> Result<Vec<DeadLetter>, Error> {
        let rows: Vec<LetterRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT d.id, d.job_id, d.queue, d.kind, d.reason, d.error, d.created_at, \
                 j.attempt, j.replay_count \
             FROM dead_letters d LEFT JOIN jobs j ON j.id = d.job_id \
             WHERE {FILTER} ORDER BY d.created_at DESC, d.id DESC LIMIT $6"
        )))
        .bind(&filter.queue)
        .bind(&filter.kind)
        .bind(&filter.error)
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.limit.map_or(i64::MAX, i64::from))
        .bind(&filter.kind_patterns)
        .bind(&filter.queue_patterns)
        .bind(filter.before.map(|b| b.0))
        .bind(filter.before.map(|b| b.1))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(DeadLetter::from).collect())
    }

    /// Open dead letters matching `filter`, counted per error fingerprint, largest first.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn dead_letter_groups(&self, filter: &DeadFilter) -> Result<Vec<ErrorGroup>, Error> {
        let groups = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {FINGERPRINT} AS fingerprint, count(*) AS n, \
                 array_agg(DISTINCT coalesce(d.kind, '?')) AS kinds, \
                 min(d.created_at) AS first, max(d.created_at) AS last \
             FROM dead_letters d WHERE {FILTER} \
             GROUP BY 1 ORDER BY n DESC, fingerprint LIMIT $6"
        )))
        .bind(&filter.queue)
        .bind(&filter.kind)
        .bind(&filter.error)
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.limit.map_or(i64::MAX, i64::from))
        .bind(&filter.kind_patterns)
        .bind(&filter.queue_patterns)
        .bind(filter.before.map(|b| b.0))
        .bind(filter.before.map(|b| b.1))
        .fetch_all(self.pool())
        .await?;
        Ok(groups)
    }

    /// The newest dead letter with this id, or of the job with this id (open ones first).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetterDetail>, Error> {
        let row: Option<DetailRow> = sqlx::query_as(
            "SELECT d.id, d.job_id, d.queue, d.kind, d.reason, d.error, d.created_at, d.payload, \
                 d.headers, d.resolved_at, d.resolution, j.attempt, j.replay_count, j.args \
             FROM dead_letters d LEFT JOIN jobs j ON j.id = d.job_id \
             WHERE d.id = $1 OR d.job_id = $1 \
             ORDER BY d.resolved_at IS NULL DESC, d.created_at DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let letter = DeadLetter::from(row.letter);
        let payload = match row.args {
            Some(args) => args.0,
            None => row.payload.map_or(Value::Null, |b| {
                serde_json::from_slice(&b)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into_owned()))
            }),
        };
        let attempts_history = match letter.job_id {
            Some(job) => self.attempts(job).await?,
            None => Vec::new(),
        };
        Ok(Some(DeadLetterDetail {
            payload,
            headers: row.headers.map(|h| h.0),
            attempts_history,
            resolved_at: row.resolved_at,
            resolution: row.resolution,
            letter,
        }))
    }

    /// Every attempt of a job, oldest first.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn attempts(&self, job: JobId) -> Result<Vec<AttemptRecord>, Error> {
        let attempts = sqlx::query_as(
            "SELECT attempt, outcome, error, worker_id, started_at, finished_at, retry_at \
             FROM job_attempts WHERE job_id = $1 ORDER BY id",
        )
        .bind(job.as_uuid())
        .fetch_all(self.pool())
        .await?;
        Ok(attempts)
    }

    /// Replays open dead letters (by dead-letter or job id) in one transaction: each
    /// job keeps its id and history, gets a fresh attempt budget, optionally corrected
    /// `args` (already validated by the caller), and is due now; its dead letter is
    /// marked replayed. A dead letter being replayed concurrently (locked), already
    /// replayed, or whose job is no longer dead is skipped, so two identical replays
    /// at once never run a job twice. One `dead.replay` audit row naming the replayed
    /// jobs commits with them (none when nothing was replayed).
    ///
    /// # Errors
    /// When the database fails (nothing changed, no audit row).
    pub async fn replay_many(
        &self,
        ids: &[Uuid],
        args: Option<&Value>,
        context: &AuditContext,
    ) -> Result<Vec<(Uuid, ReplayOutcome)>, Error> {
        let mut tx = self.pool().begin().await?;
        let mut outcomes = Vec::with_capacity(ids.len());
        let mut replayed = Vec::new();
        for id in ids {
            let outcome = replay_on(&mut tx, *id, &context.actor.name, args).await?;
            if let ReplayOutcome::Replayed { job_id } = &outcome {
                replayed.push(job_id.as_uuid());
            }
            outcomes.push((*id, outcome));
        }
        if !replayed.is_empty() {
            let detail = args.map(|_| serde_json::json!({ "corrected_args": true }));
            audit::record(
                &mut tx,
                context,
                AuditAction::DeadReplay,
                &replayed,
                replayed.len() as u64,
                detail,
            )
            .await?;
            notify_due(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Replays one open dead letter (by its id or its job's id); see
    /// [`Store::replay_many`].
    ///
    /// # Errors
    /// When the database fails (nothing changed).
    pub async fn replay(
        &self,
        id: Uuid,
        args: Option<&Value>,
        context: &AuditContext,
    ) -> Result<ReplayOutcome, Error> {
        let mut outcomes = self.replay_many(&[id], args, context).await?;
        Ok(outcomes.pop().map_or_else(
            || ReplayOutcome::Skipped {
                reason: "nothing to replay".into(),
            },
            |o| o.1,
        ))
    }

    /// Deletes open dead letters (by dead-letter or job id) and their dead jobs with
    /// their history, with one `dead.purge` audit row in the same transaction (none
    /// when nothing matched). Returns how many dead letters were removed.
    ///
    /// # Errors
    /// When the database fails (nothing changed, no audit row).
    pub async fn purge(&self, ids: &[Uuid], context: &AuditContext) -> Result<u64, Error> {
        let mut tx = self.pool().begin().await?;
        let rows = sqlx::query(
            "DELETE FROM dead_letters WHERE (id = ANY($1) OR job_id = ANY($1)) AND resolved_at IS NULL \
             RETURNING id, job_id",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        let mut targets = Vec::with_capacity(rows.len());
        for row in &rows {
            let job: Option<Uuid> = row.try_get("job_id")?;
            let letter: Uuid = row.try_get("id")?;
            targets.push(job.unwrap_or(letter));
            jobs.extend(job);
        }
        sqlx::query("DELETE FROM jobs WHERE id = ANY($1) AND state = 'dead'")
            .bind(&jobs)
            .execute(&mut *tx)
            .await?;
        if !rows.is_empty() {
            audit::record(
                &mut tx,
                context,
                AuditAction::DeadPurge,
                &targets,
                rows.len() as u64,
                None,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// Cancels a job: a scheduled, enqueued or retrying job never runs; a running one
    /// finishes its attempt but is not retried. The `job.cancel` audit row commits
    /// with the change; a job with nothing to cancel records nothing.
    ///
    /// # Errors
    /// When the database fails (nothing changed).
    pub async fn cancel(&self, id: JobId, context: &AuditContext) -> Result<CancelOutcome, Error> {
        let mut tx = self.pool().begin().await?;
        // A job cancelled now owes its webhook deliveries, in this same statement.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH changed AS (UPDATE jobs j SET \
                 state = CASE WHEN j.state = 'running' THEN 'running' ELSE 'cancelled' END, \
                 cancel_requested = true, updated_at = now(), \
                 seq = j.seq + CASE WHEN j.state = 'running' THEN 0 ELSE 1 END, \
                 finished_at = CASE WHEN j.state = 'running' THEN NULL ELSE now() END \
             WHERE j.id = $1 AND j.state IN ('scheduled', 'enqueued', 'retrying', 'running') \
             RETURNING j.id, j.kind, j.queue, j.state, {TRANSITION_COLUMNS}) \
             {webhooks} \
             SELECT state FROM changed",
            webhooks = deliveries_cte("changed"),
        )))
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            let state: String = row.try_get("state")?;
            let outcome = if state == "running" {
                CancelOutcome::Requested
            } else {
                CancelOutcome::Cancelled
            };
            let detail = serde_json::json!({
                "result": if outcome == CancelOutcome::Requested { "requested" } else { "cancelled" }
            });
            audit::record(
                &mut tx,
                context,
                AuditAction::JobCancel,
                &[id.as_uuid()],
                1,
                Some(detail),
            )
            .await?;
            tx.commit().await?;
            return Ok(outcome);
        }
        drop(tx);
        Ok(match self.get_job(id).await? {
            Some(job) => CancelOutcome::AlreadyFinal(job.state),
            None => CancelOutcome::NotFound,
        })
    }

    /// Runs a job again now: a retrying or scheduled job becomes due at once; a dead
    /// job is replayed; a cancelled one gets a fresh attempt budget. The `job.retry`
    /// audit row commits with the change; a job that cannot be retried records
    /// nothing.
    ///
    /// # Errors
    /// When the database fails (nothing changed).
    pub async fn retry_now(
        &self,
        id: JobId,
        context: &AuditContext,
    ) -> Result<RetryOutcome, Error> {
        let Some(job) = self.get_job(id).await? else {
            return Ok(RetryOutcome::NotFound);
        };
        match job.state {
            JobState::Retrying | JobState::Scheduled | JobState::Cancelled | JobState::Dead => {}
            other => return Ok(RetryOutcome::NotRetryable(other)),
        }
        let by = &context.actor.name;
        let mut tx = self.pool().begin().await?;
        // A dead job is replayed through its open dead letter. Dead without one (purged
        // letters delete their job, so this is a job killed by hand): revived below.
        if job.state == JobState::Dead
            && let ReplayOutcome::Replayed { .. } =
                replay_on(&mut tx, id.as_uuid(), by, None).await?
        {
            return finish_retry(tx, id, context).await;
        }
        let updated = sqlx::query(
            "UPDATE jobs SET state = 'scheduled', run_at = now(), cancel_requested = false, \
                 max_attempts = CASE WHEN state IN ('cancelled', 'dead') THEN attempt + attempt_budget \
                                     ELSE max_attempts END, \
                 replay_count = replay_count + CASE WHEN state IN ('cancelled', 'dead') THEN 1 ELSE 0 END, \
                 replayed_at = CASE WHEN state IN ('cancelled', 'dead') THEN now() ELSE replayed_at END, \
                 replayed_by = CASE WHEN state IN ('cancelled', 'dead') THEN $2 ELSE replayed_by END, \
                 finished_at = NULL, updated_at = now(), seq = seq + 1 \
             WHERE id = $1 AND state IN ('retrying', 'scheduled', 'cancelled', 'dead') RETURNING id",
        )
        .bind(id.as_uuid())
        .bind(by)
        .fetch_optional(&mut *tx)
        .await?;
        if updated.is_none() {
            drop(tx);
            let state = self
                .get_job(id)
                .await?
                .map_or(JobState::Completed, |j| j.state);
            return Ok(RetryOutcome::NotRetryable(state));
        }
        finish_retry(tx, id, context).await
    }
}

async fn finish_retry(
    mut tx: Transaction<'static, Postgres>,
    id: JobId,
    context: &AuditContext,
) -> Result<RetryOutcome, Error> {
    audit::record(
        &mut tx,
        context,
        AuditAction::JobRetry,
        &[id.as_uuid()],
        1,
        None,
    )
    .await?;
    notify_due(&mut tx).await?;
    tx.commit().await?;
    Ok(RetryOutcome::Scheduled)
}

/// Replays one open dead letter on `tx` (see [`Store::replay_many`]); the caller
/// writes the audit row and notifies dispatchers.
async fn replay_on(
    tx: &mut Transaction<'static, Postgres>,
    id: Uuid,
    by: &str,
    args: Option<&Value>,
) -> Result<ReplayOutcome, Error> {
    let row = sqlx::query(
        "SELECT id, job_id, reason FROM dead_letters \
         WHERE (id = $1 OR job_id = $1) AND resolved_at IS NULL \
         ORDER BY created_at DESC LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(ReplayOutcome::Skipped {
            reason:
                "no open dead letter (already replayed or purged, being replayed, or unknown id)"
                    .into(),
        });
    };
    let letter: Uuid = row.try_get("id")?;
    let Some(job) = row.try_get::<Option<Uuid>, _>("job_id")? else {
        let reason: String = row.try_get("reason")?;
        return Ok(ReplayOutcome::Skipped {
            reason: format!(
                "a raw message ({reason}) that never was a job cannot be replayed; enqueue a corrected job and purge it"
            ),
        });
    };
    let replayed = sqlx::query(
        "UPDATE jobs SET state = 'scheduled', run_at = now(), \
             max_attempts = attempt + attempt_budget, args = COALESCE($3, args), \
             replay_count = replay_count + 1, replayed_at = now(), replayed_by = $2, \
             result = NULL, finished_at = NULL, cancel_requested = false, \
             published_at = NULL, worker_id = NULL, updated_at = now(), seq = seq + 1 \
         WHERE id = $1 AND state = 'dead' RETURNING id",
    )
    .bind(job)
    .bind(by)
    .bind(args.map(Json))
    .fetch_optional(&mut **tx)
    .await?;
    if replayed.is_none() {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_optional(&mut **tx)
            .await?;
        return Ok(ReplayOutcome::Skipped {
            reason: format!(
                "job {job} is {}, not dead",
                state.as_deref().unwrap_or("gone")
            ),
        });
    }
    resolve(tx, letter, "replayed").await?;
    Ok(ReplayOutcome::Replayed { job_id: JobId(job) })
}

async fn resolve(
    tx: &mut Transaction<'static, Postgres>,
    letter: Uuid,
    how: &str,
) -> Result<(), Error> {
    sqlx::query("UPDATE dead_letters SET resolved_at = now(), resolution = $2 WHERE id = $1")
        .bind(letter)
        .bind(how)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
