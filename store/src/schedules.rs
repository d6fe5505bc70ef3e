//! Schedules: their rows, and taking a slot. A dispatcher fires a schedule by moving
//! its cursor forward with a compare-and-set (`UPDATE … WHERE cursor = $seen`) in the
//! transaction that inserts the slot's job through the intake's one insert path, keyed
//! `schedule:{name}:{slot}`. Whoever loses the compare-and-set inserts nothing, so any
//! number of dispatchers, a restart mid-fire, or two clocks a little apart give one job
//! per slot; the database's clock (`now()`) decides what is due.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::schedule::{Cadence, CatchUp, FiredBy, Overlap, Plan, ScheduleDef};
use jobs::{JobId, JobRecord, NewJob};
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use crate::Store;
use crate::error::Error;
use crate::intake::{Insert, insert_keyed};
use crate::sql::notify_due;

/// How long a slot's idempotency key is kept: far longer than any cursor could be
/// set back.
const SLOT_KEY_TTL: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

const SCHEDULE_COLUMNS: &str = "name, cron, timezone, kind, queue, args, max_attempts, \
    catch_up, catch_up_limit, overlap, source, enabled, paused, cursor, next_slot, fired, \
    missed, skipped_overlap, last_fired_at, created_at, updated_at";

/// Where a schedule is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleSource {
    /// `[[schedules]]` in `conveyor.toml`, upserted at start-up; changed there only.
    Config,
    /// Created over the API.
    Api,
}

impl ScheduleSource {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ScheduleSource::Config => "config",
            ScheduleSource::Api => "api",
        }
    }
}

/// One schedule as stored.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleRecord {
    /// Name.
    pub name: String,
    /// Cron expression.
    pub cron: String,
    /// IANA zone.
    pub timezone: String,
    /// Kind of the jobs it fires.
    pub kind: String,
    /// Their queue.
    pub queue: String,
    /// Their arguments.
    pub args: Value,
    /// Their attempts.
    pub max_attempts: u32,
    /// Missed-slot policy.
    pub catch_up: CatchUp,
    /// Bound of `catch_up = "all"`.
    pub catch_up_limit: u32,
    /// Overlap policy.
    pub overlap: Overlap,
    /// Where it is declared.
    pub source: ScheduleSource,
    /// `false`: removed from `conveyor.toml`; kept for its history, never fires.
    pub enabled: bool,
    /// Paused by an operator: slots pass without firing.
    pub paused: bool,
    /// The latest slot handled (fired, missed or skipped).
    pub cursor: DateTime<Utc>,
    /// The next slot.
    pub next_slot: Option<DateTime<Utc>>,
    /// Slots fired so far.
    pub fired: u64,
    /// Slots missed (passed while no dispatcher fired them, let go by `catch_up`).
    pub missed: u64,
    /// Slots skipped because the previous job had not finished.
    pub skipped_overlap: u64,
    /// When a slot last fired.
    pub last_fired_at: Option<DateTime<Utc>>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last change of definition or state.
    pub updated_at: DateTime<Utc>,
}

fn corrupt(column: &str, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("schedules.{column}: {e}"))
}

fn count(row: &PgRow, column: &str) -> Result<u64, Error> {
    let n: i64 = row.try_get(column)?;
    u64::try_from(n).map_err(|e| corrupt(column, e))
}

fn small(row: &PgRow, column: &str) -> Result<u32, Error> {
    let n: i32 = row.try_get(column)?;
    u32::try_from(n).map_err(|e| corrupt(column, e))
}

impl ScheduleRecord {
    fn from_row(row: &PgRow) -> Result<Self, Error> {
        let source: String = row.try_get("source")?;
        Ok(Self {
            name: row.try_get("name")?,
            cron: row.try_get("cron")?,
            timezone: row.try_get("timezone")?,
            kind: row.try_get("kind")?,
            queue: row.try_get("queue")?,
            args: row.try_get::<Json<Value>, _>("args")?.0,
            max_attempts: small(row, "max_attempts")?,
            catch_up: row
                .try_get::<String, _>("catch_up")?
                .parse()
                .map_err(|e| corrupt("catch_up", e))?,
            catch_up_limit: small(row, "catch_up_limit")?,
            overlap: row
                .try_get::<String, _>("overlap")?
                .parse()
                .map_err(|e| corrupt("overlap", e))?,
            source: match source.as_str() {
                "config" => ScheduleSource::Config,
                "api" => ScheduleSource::Api,
                other => return Err(corrupt("source", other)),
            },
            enabled: row.try_get("enabled")?,
            paused: row.try_get("paused")?,
            cursor: row.try_get("cursor")?,
            next_slot: row.try_get("next_slot")?,
            fired: count(row, "fired")?,
            missed: count(row, "missed")?,
            skipped_overlap: count(row, "skipped_overlap")?,
            last_fired_at: row.try_get("last_fired_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    /// The schedule's cadence (expression in its zone).
    ///
    /// # Errors
    /// When the stored expression or zone no longer parses (a corrupt row).
    pub fn cadence(&self) -> Result<Cadence, Error> {
        Cadence::parse(&self.cron, &self.timezone).map_err(|e| corrupt("cron", format!("{e:?}")))
    }
}

/// What a change to one schedule found.
#[derive(Debug, Clone)]
pub enum ScheduleChange {
    /// Done; the schedule as it is now.
    Done(Box<ScheduleRecord>),
    /// No schedule has this name.
    Missing,
    /// It is declared in `conveyor.toml`: change it there.
    Declared,
}

/// What [`Store::sync_config_schedules`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSync {
    /// Schedules written from the configuration.
    pub upserted: usize,
    /// Schedules no longer in the configuration, now disabled.
    pub disabled: Vec<String>,
}

/// What one [`Store::fire_schedule`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Firing {
    /// The schedule.
    pub schedule: String,
    /// Each fired slot (in the schedule's zone) and its job.
    pub fired: Vec<(String, JobId)>,
    /// Slots let go by `catch_up`.
    pub missed: u64,
    /// Slots skipped because the previous job had not finished.
    pub skipped_overlap: u64,
}

fn new_slot_job(record: &ScheduleRecord, fired_by: FiredBy, run_at: DateTime<Utc>) -> NewJob {
    NewJob {
        id: JobId::new(),
        kind: record.kind.clone(),
        queue: record.queue.clone(),
        args: record.args.clone(),
        max_attempts: record.max_attempts,
        // A `scheduled` job due at its slot: the dispatcher publishes it like any other
        // due job, so the row is the record from the moment the slot is taken.
        run_at: Some(run_at),
        timeout: None,
        idempotency_key: Some(fired_by.idempotency_key()),
        idempotency_ttl: SLOT_KEY_TTL,
        traceparent: None,
        fired_by: Some(fired_by),
        callback_url: None,
    }
}

async fn write_definition(
    conn: &mut PgConnection,
    def: &ScheduleDef,
    source: ScheduleSource,
    cursor: DateTime<Utc>,
    upsert: bool,
) -> Result<Option<ScheduleRecord>, Error> {
    let next = def.cadence.next_after(cursor);
    let conflict = if upsert {
        "ON CONFLICT (name) DO UPDATE SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, \
             kind = EXCLUDED.kind, queue = EXCLUDED.queue, args = EXCLUDED.args, \
             max_attempts = EXCLUDED.max_attempts, catch_up = EXCLUDED.catch_up, \
             catch_up_limit = EXCLUDED.catch_up_limit, overlap = EXCLUDED.overlap, \
             source = EXCLUDED.source, enabled = true, next_slot = EXCLUDED.next_slot, \
             cursor = EXCLUDED.cursor, updated_at = now()"
    } else {
        "ON CONFLICT (name) DO NOTHING"
    };
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO schedules (name, cron, timezone, kind, queue, args, max_attempts, catch_up, \
             catch_up_limit, overlap, source, cursor, next_slot) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) {conflict} \
         RETURNING {SCHEDULE_COLUMNS}"
    )))
    .bind(&def.name)
    .bind(def.cadence.expression())
    .bind(def.cadence.zone().name())
    .bind(&def.kind)
    .bind(&def.queue)
    .bind(Json(&def.args))
    .bind(i32::try_from(def.max_attempts).unwrap_or(i32::MAX))
    .bind(def.catch_up.as_str())
    .bind(i32::try_from(def.catch_up_limit).unwrap_or(i32::MAX))
    .bind(def.overlap.as_str())
    .bind(source.as_str())
    .bind(cursor)
    .bind(next)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(ScheduleRecord::from_row).transpose()
}

async fn db_now(conn: &mut PgConnection) -> Result<DateTime<Utc>, Error> {
    Ok(sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *conn)
        .await?)
}

async fn locked(conn: &mut PgConnection, name: &str) -> Result<Option<ScheduleRecord>, Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = $1 FOR UPDATE"
    )))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(ScheduleRecord::from_row).transpose()
}

impl Store {
    /// Makes the stored configuration-declared schedules match `defs`, in one
    /// transaction: each is inserted or updated (and enabled; a changed expression
    /// continues from the schedule's cursor), and every configuration schedule not in
    /// `defs` is disabled, not deleted, so its history stays.
    ///
    /// # Errors
    /// When the database fails; nothing was written.
    pub async fn sync_config_schedules(&self, defs: &[ScheduleDef]) -> Result<ConfigSync, Error> {
        let mut tx = self.pool().begin().await?;
        let now = db_now(&mut tx).await?;
        for def in defs {
            let cursor = locked(&mut tx, &def.name)
                .await?
                .map_or(now, |existing| existing.cursor);
            write_definition(&mut tx, def, ScheduleSource::Config, cursor, true).await?;
        }
        let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        let disabled: Vec<String> = sqlx::query_scalar(
            "UPDATE schedules SET enabled = false, updated_at = now() \
             WHERE source = 'config' AND enabled AND NOT (name = ANY($1)) RETURNING name",
        )
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?;
        notify_due(&mut tx).await?;
        tx.commit().await?;
        Ok(ConfigSync {
            upserted: defs.len(),
            disabled,
        })
    }

    /// Creates a schedule over the API; its first slot is the first after now.
    /// `None` when the name is taken.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn create_schedule(
        &self,
        def: &ScheduleDef,
    ) -> Result<Option<ScheduleRecord>, Error> {
        let mut tx = self.pool().begin().await?;
        let now = db_now(&mut tx).await?;
        let created = write_definition(&mut tx, def, ScheduleSource::Api, now, false).await?;
        notify_due(&mut tx).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Replaces an API schedule's definition (its cursor and counts stay).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn replace_schedule(&self, def: &ScheduleDef) -> Result<ScheduleChange, Error> {
        let mut tx = self.pool().begin().await?;
        let Some(existing) = locked(&mut tx, &def.name).await? else {
            return Ok(ScheduleChange::Missing);
        };
        if existing.source == ScheduleSource::Config {
            return Ok(ScheduleChange::Declared);
        }
        let written =
            write_definition(&mut tx, def, ScheduleSource::Api, existing.cursor, true).await?;
        notify_due(&mut tx).await?;
        tx.commit().await?;
        Ok(written.map_or(ScheduleChange::Missing, |r| {
            ScheduleChange::Done(Box::new(r))
        }))
    }

    /// Deletes an API schedule. Its jobs stay, still naming it.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn delete_schedule(&self, name: &str) -> Result<ScheduleChange, Error> {
        let mut tx = self.pool().begin().await?;
        let Some(existing) = locked(&mut tx, name).await? else {
            return Ok(ScheduleChange::Missing);
        };
        if existing.source == ScheduleSource::Config {
            return Ok(ScheduleChange::Declared);
        }
        sqlx::query("DELETE FROM schedules WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ScheduleChange::Done(Box::new(existing)))
    }

    /// Every schedule, by name.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>, Error> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY name"
        )))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(ScheduleRecord::from_row).collect()
    }

    /// One schedule.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn get_schedule(&self, name: &str) -> Result<Option<ScheduleRecord>, Error> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(ScheduleRecord::from_row).transpose()
    }

    /// The schedule's most recent jobs, newest first.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn schedule_jobs(&self, name: &str, limit: u32) -> Result<Vec<JobRecord>, Error> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE schedule_name = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(name)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(job) = self.get_job(JobId(id)).await? {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    /// Pauses (slots pass without firing, and are not caught up) or resumes (the next
    /// slot is the first after now) a schedule.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<ScheduleChange, Error> {
        let mut tx = self.pool().begin().await?;
        let Some(existing) = locked(&mut tx, name).await? else {
            return Ok(ScheduleChange::Missing);
        };
        let now = db_now(&mut tx).await?;
        let (cursor, next) = if !paused && existing.paused {
            let cursor = existing.cursor.max(now);
            (cursor, existing.cadence()?.next_after(cursor))
        } else {
            (existing.cursor, existing.next_slot)
        };
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE schedules SET paused = $2, cursor = $3, next_slot = $4, updated_at = now() \
             WHERE name = $1 RETURNING {SCHEDULE_COLUMNS}"
        )))
        .bind(name)
        .bind(paused)
        .bind(cursor)
        .bind(next)
        .fetch_one(&mut *tx)
        .await?;
        notify_due(&mut tx).await?;
        tx.commit().await?;
        Ok(ScheduleChange::Done(Box::new(ScheduleRecord::from_row(
            &row,
        )?)))
    }

    /// Fires one job of the schedule now, outside its slots (its cursor does not
    /// move). `None` when there is no such schedule.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn trigger_schedule(&self, name: &str) -> Result<Option<JobRecord>, Error> {
        let mut tx = self.pool().begin().await?;
        let Some(record) = locked(&mut tx, name).await? else {
            return Ok(None);
        };
        let now = db_now(&mut tx).await?;
        let fired_by = FiredBy {
            schedule: record.name.clone(),
            slot: record.cadence()?.label(now),
        };
        let mut job = new_slot_job(&record, fired_by, now);
        let id = job.id;
        job.idempotency_key = Some(format!("schedule:{}:trigger:{id}", record.name));
        let inserted = match insert_keyed(&mut tx, &job).await? {
            Insert::Created(job) | Insert::Existing(job) => job,
        };
        notify_due(&mut tx).await?;
        tx.commit().await?;
        Ok(Some(inserted))
    }

    /// Names of live schedules whose next slot has come (by the database's clock).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn due_schedules(&self, limit: u32) -> Result<Vec<String>, Error> {
        Ok(sqlx::query_scalar(
            "SELECT name FROM schedules WHERE enabled AND NOT paused AND next_slot <= now() \
             ORDER BY next_slot LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?)
    }

    /// How long until the next slot of any live schedule (`None`: none is pending).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn next_slot_in(&self) -> Result<Option<Duration>, Error> {
        let ms: Option<i64> = sqlx::query_scalar(
            "SELECT GREATEST(0, EXTRACT(EPOCH FROM (min(next_slot) - now())) * 1000)::bigint \
             FROM schedules WHERE enabled AND NOT paused",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))))
    }

    /// Takes the due slots of one schedule, by the database's clock: plans them with
    /// the schedule's catch-up policy (a slot at most `grace` old is on time), moves
    /// the cursor with a compare-and-set on the value it read, and in the same
    /// transaction inserts one `scheduled` job per slot that fires (keyed
    /// `schedule:{name}:{slot}`, recording schedule and slot) or counts it as missed
    /// or skipped. `None` when nothing was due or another dispatcher took the slots
    /// first.
    ///
    /// # Errors
    /// When the database fails; nothing was taken.
    pub async fn fire_schedule(
        &self,
        name: &str,
        grace: Duration,
    ) -> Result<Option<Firing>, Error> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SCHEDULE_COLUMNS}, now() AS db_now FROM schedules \
             WHERE name = $1 AND enabled AND NOT paused AND next_slot <= now()"
        )))
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let record = ScheduleRecord::from_row(&row)?;
        let now: DateTime<Utc> = row.try_get("db_now")?;
        let cadence = record.cadence()?;
        let plan = cadence.plan(
            record.cursor,
            now,
            record.catch_up,
            record.catch_up_limit,
            grace,
        );
        if !take_slots(&mut tx, &record, &plan).await? {
            // Another dispatcher moved the cursor since we read it.
            return Ok(None);
        }
        let mut firing = Firing {
            schedule: record.name.clone(),
            missed: plan.missed,
            ..Firing::default()
        };
        let busy = record.overlap == Overlap::Skip
            && !plan.fire.is_empty()
            && sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE schedule_name = $1 \
                 AND state NOT IN ('completed', 'dead', 'cancelled'))",
            )
            .bind(&record.name)
            .fetch_one(&mut *tx)
            .await?;
        if busy {
            firing.skipped_overlap = plan.fire.len() as u64;
        } else {
            for slot in &plan.fire {
                let fired_by = FiredBy {
                    schedule: record.name.clone(),
                    slot: cadence.label(*slot),
                };
                let label = fired_by.slot.clone();
                match insert_keyed(&mut tx, &new_slot_job(&record, fired_by, *slot)).await? {
                    Insert::Created(job) => firing.fired.push((label, job.id)),
                    // The slot's job exists already (the cursor was set back): it
                    // counts once.
                    Insert::Existing(job) => {
                        tracing::debug!(schedule = %record.name, slot = %label, job_id = %job.id, "slot already fired");
                    }
                }
            }
        }
        sqlx::query(
            "UPDATE schedules SET fired = fired + $2, missed = missed + $3, \
                 skipped_overlap = skipped_overlap + $4, \
                 last_fired_at = CASE WHEN $2 > 0 THEN now() ELSE last_fired_at END \
             WHERE name = $1",
        )
        .bind(&record.name)
        .bind(firing.fired.len() as i64)
        .bind(i64::try_from(firing.missed).unwrap_or(i64::MAX))
        .bind(i64::try_from(firing.skipped_overlap).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        if !firing.fired.is_empty() {
            notify_due(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(Some(firing))
    }
}

/// The compare-and-set: moves the cursor from the value `record` was read with to the
/// plan's. `false` (nothing written) when another transaction moved it first; a
/// concurrent one waits for that transaction and then finds the cursor changed.
async fn take_slots(
    conn: &mut PgConnection,
    record: &ScheduleRecord,
    plan: &Plan,
) -> Result<bool, Error> {
    let taken = sqlx::query(
        "UPDATE schedules SET cursor = $3, next_slot = $4, updated_at = now() \
         WHERE name = $1 AND cursor = $2 AND enabled AND NOT paused",
    )
    .bind(&record.name)
    .bind(record.cursor)
    .bind(plan.cursor)
    .bind(plan.next)
    .execute(&mut *conn)
    .await?;
    Ok(taken.rows_affected() == 1)
}
