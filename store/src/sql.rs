//! What the ledger's modules share: the job row and its columns, the one way a duration
//! reaches SQL, the one wake-up of the dispatchers, and the one insert of dead letters.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::{DeadReason, JobId, JobRecord, JobState};
use serde_json::Value;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::Error;

/// The columns of [`JobRow`], in its order.
pub(crate) const JOB_COLUMNS: &str = "id, kind, queue, args, state, attempt, max_attempts, \
    run_at, timeout_ms, idempotency_key, result, last_error, cancel_requested, replay_count, \
    replayed_at, replayed_by, traceparent, created_at, updated_at, started_at, finished_at, \
    schedule_name, schedule_slot, seq";

/// The expression that wakes the dispatchers (`LISTEN conveyor_due`); Postgres delivers it
/// when the transaction commits, once however often it was called.
pub(crate) const NOTIFY_DUE: &str = concat!("pg_notify('", due_channel!(), "', '')");

/// A duration as the milliseconds SQL takes: every interval is written
/// `$n::bigint * interval '1 millisecond'`.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A count for an `integer` column, saturating.
pub(crate) fn clamp_i32(value: u64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Wakes the dispatchers (delivered when the transaction commits).
///
/// # Errors
/// When the database fails.
pub(crate) async fn notify_due(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {NOTIFY_DUE}")))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// One `jobs` row as [`JOB_COLUMNS`] selects it.
#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    #[sqlx(try_from = "Uuid")]
    id: JobId,
    kind: String,
    queue: String,
    #[sqlx(json)]
    args: Value,
    #[sqlx(try_from = "String")]
    state: JobState,
    #[sqlx(try_from = "i32")]
    attempt: u32,
    #[sqlx(try_from = "i32")]
    max_attempts: u32,
    run_at: DateTime<Utc>,
    timeout_ms: Option<i32>,
    idempotency_key: Option<String>,
    result: Option<Json<Value>>,
    last_error: Option<String>,
    cancel_requested: bool,
    #[sqlx(try_from = "i32")]
    replay_count: u32,
    replayed_at: Option<DateTime<Utc>>,
    replayed_by: Option<String>,
    traceparent: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    schedule_name: Option<String>,
    schedule_slot: Option<String>,
    seq: i64,
}

impl From<JobRow> for JobRecord {
    fn from(row: JobRow) -> Self {
        Self {
            id: row.id,
            kind: row.kind,
            queue: row.queue,
            args: row.args,
            state: row.state,
            seq: u64::try_from(row.seq).unwrap_or(0),
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            run_at: row.run_at,
            timeout_ms: row.timeout_ms.and_then(|t| u32::try_from(t).ok()),
            idempotency_key: row.idempotency_key,
            result: row.result.map(|j| j.0),
            last_error: row.last_error,
            cancel_requested: row.cancel_requested,
            replay_count: row.replay_count,
            replayed_at: row.replayed_at,
            replayed_by: row.replayed_by,
            traceparent: row.traceparent,
            created_at: row.created_at,
            updated_at: row.updated_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            fired_by: match (row.schedule_name, row.schedule_slot) {
                (Some(schedule), Some(slot)) => Some(jobs::schedule::FiredBy { schedule, slot }),
                _ => None,
            },
        }
    }
}

/// One row for `dead_letters`.
#[derive(Debug, Clone)]
pub(crate) struct NewLetter {
    /// The letter's id: a message's key (a redelivery is stored once) or a fresh one.
    pub(crate) id: Uuid,
    /// The dead job, when it was one the ledger has.
    pub(crate) job_id: Option<JobId>,
    pub(crate) queue: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) reason: DeadReason,
    pub(crate) error: Option<String>,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) headers: Option<Value>,
}

/// Writes dead letters with one statement; a letter whose id is already stored (a
/// redelivered message) is skipped.
///
/// # Errors
/// When the database fails.
pub(crate) async fn insert_dead_letters(
    conn: &mut PgConnection,
    letters: &[NewLetter],
) -> Result<(), Error> {
    if letters.is_empty() {
        return Ok(());
    }
    let n = letters.len();
    let (mut ids, mut jobs, mut queues, mut kinds) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut reasons, mut errors, mut payloads, mut headers) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for letter in letters {
        ids.push(letter.id);
        jobs.push(letter.job_id.map(|id| id.as_uuid()));
        queues.push(letter.queue.as_deref());
        kinds.push(letter.kind.as_deref());
        reasons.push(letter.reason.as_str());
        errors.push(letter.error.as_deref());
        payloads.push(letter.payload.as_deref());
        headers.push(letter.headers.as_ref().map(Json));
    }
    sqlx::query(
        "INSERT INTO dead_letters (id, job_id, queue, kind, reason, error, payload, headers) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::bytea[], $8::jsonb[]) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&jobs)
    .bind(&queues)
    .bind(&kinds)
    .bind(&reasons)
    .bind(&errors)
    .bind(&payloads)
    .bind(&headers)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
