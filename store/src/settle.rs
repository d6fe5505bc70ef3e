//! Settlement: every way a job stops being run. A worker's verdict on its attempt
//! (completed, retry, snoozed, failed → dead), the rescue of an attempt whose worker was
//! lost, and the archive's dead-lettering of a job's message all go through
//! [`settle_on`], which writes any mix of them for many jobs with a fixed number of
//! statements, whatever the batch's size:
//!
//! 1. one `UPDATE jobs … FROM UNNEST(…)` with the attempt rows in the same statement
//!    (`INSERT INTO job_attempts … SELECT` from its `RETURNING`), guarded per job by
//!    `state = 'running' AND attempt = n AND worker_id = w` (the archive's guard is
//!    "not final yet");
//! 2. when some job died: one insert of their dead letters;
//! 3. when some job runs again: one `NOTIFY` for the dispatchers;
//! 4. when some job was not settled: one read of the states, to say why.
//!
//! Statement 1 also carries the webhook effect: a CTE inserting the `webhook.deliver`
//! jobs the changed rows owe ([`crate::webhooks::deliveries_cte`]), so deliveries commit
//! with the transition even on the one-statement hot path; without subscriptions and
//! callbacks it is a join with an empty table.
//!
//! A batch of completions (the hot path) is statement 1 alone, without a transaction.
//!
//! The one rule that depends on the row as it is when written: a cancel requested while
//! the job ran turns an ending that would run it again (a retry, a snooze, a loss) into
//! `cancelled` ([`NEW_STATE`]).
//!
//! # Adding an outcome
//! Add a variant to [`Ending`] (or to [`jobs::Outcome`]) and map it in [`plan`]: the
//! state it leads to, its attempt row, whether a cancel overrides it, its result, error
//! and delay. Nothing else changes: the statements take the plan's columns.
//!
//! # Adding an effect
//! Everything that must happen when a job changes state happens in [`settle_on`], after
//! the `UPDATE`, from the rows it changed ([`Changed`]: id, new state, queue, kind):
//! write it there, as one statement for the batch (as the dead letters and the `NOTIFY`
//! are), so it commits with the transition. An effect that must follow the commit (an
//! event published to the broker) belongs in [`Store::settle`] after `commit`, from the
//! same rows; a handler that settles inside its own transaction commits them itself.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use jobs::{AttemptOutcome, DeadReason, JobEvent, JobId, JobState, Outcome, WorkerId};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::Store;
use crate::archive::DeadMessage;
use crate::claim::states_of;
use crate::error::Error;
use crate::sql::{NewLetter, clamp_i32, insert_dead_letters, millis, notify_due};
use crate::webhooks::{TRANSITION_COLUMNS, deliveries_cte};

/// One job to settle.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    /// The job.
    pub id: JobId,
    /// How its run ended.
    pub ending: Ending,
}

/// How a job's run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// A worker's attempt ended with a verdict. Written only while that attempt of that
    /// worker holds the job.
    Attempt {
        /// The attempt the worker claimed.
        attempt: u32,
        /// The worker that ran it.
        worker: WorkerId,
        /// When the attempt started (`None`: as the job row says).
        started_at: Option<DateTime<Utc>>,
        /// The verdict.
        outcome: Outcome,
    },
    /// The worker running this attempt stopped heartbeating (the dispatcher's rescue):
    /// the job runs again now, or is dead when it has no attempts left. The attempt is
    /// recorded `lost`.
    Lost {
        /// The attempt the lost worker held.
        attempt: u32,
        /// The lost worker.
        worker: WorkerId,
        /// Whether another attempt is allowed.
        attempts_left: bool,
        /// For the job's `last_error` and the attempt row.
        error: String,
    },
    /// RabbitMQ dead-lettered the job's message (a crash loop past the delivery limit):
    /// dead unless already final, with the message as its dead letter. No attempt row.
    DeadLettered(DeadMessage),
}

/// What settling one job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Written: the job is now in this state.
    Recorded(JobState),
    /// The handler already completed this attempt inside its own transaction (as
    /// `order.process` does, so the order and the completion commit together); there
    /// was nothing left to write.
    AlreadyCompleted,
    /// The job is no longer held as the settlement expected (the dispatcher rescued it,
    /// an operator cancelled it, it was settled already; `None`: the row is gone):
    /// nothing was written. Its state now.
    TakenOver(Option<JobState>),
}

/// The state a settled row takes: the planned one, unless a cancel was requested while
/// the job ran and the plan would run it again. `$1`: `cancelled`.
const NEW_STATE: &str = "CASE WHEN i.yields AND j.cancel_requested THEN $1 ELSE i.next END";

/// One settlement as the statement's columns.
struct Plan<'a> {
    attempt: Option<i32>,
    worker: Option<Uuid>,
    started_at: Option<DateTime<Utc>>,
    next: JobState,
    /// A cancel requested meanwhile turns it into `cancelled`.
    yields: bool,
    /// Gives the attempt back (a snooze).
    gives_back: bool,
    result: Option<&'a Value>,
    error: Option<&'a str>,
    /// Runs again this long after the commit.
    delay_ms: Option<i64>,
    /// The attempt row's outcome; `None` writes no attempt row.
    outcome: Option<AttemptOutcome>,
    /// Why it is dead, when it dies.
    reason: Option<DeadReason>,
}

/// Maps an ending to what is written. The only place an ending's meaning is defined.
fn plan(ending: &Ending) -> Plan<'_> {
    fn unguarded<'a>(started_at: Option<DateTime<Utc>>) -> Plan<'a> {
        Plan {
            attempt: None,
            worker: None,
            started_at,
            next: JobState::Completed,
            yields: false,
            gives_back: false,
            result: None,
            error: None,
            delay_ms: None,
            outcome: None,
            reason: None,
        }
    }
    let held = |attempt: u32, worker: WorkerId, started_at| Plan {
        attempt: Some(clamp_i32(u64::from(attempt))),
        worker: Some(worker.0),
        ..unguarded(started_at)
    };
    match ending {
        Ending::Attempt {
            attempt,
            worker,
            started_at,
            outcome,
        } => {
            let base = held(*attempt, *worker, *started_at);
            let outcome_row = Some(outcome.attempt_outcome());
            match outcome {
                Outcome::Completed { result } => Plan {
                    result: Some(result),
                    outcome: outcome_row,
                    ..base
                },
                Outcome::Retry { error, delay } => Plan {
                    next: JobState::Retrying,
                    yields: true,
                    error: Some(error),
                    delay_ms: Some(millis(*delay)),
                    outcome: outcome_row,
                    ..base
                },
                Outcome::Dead { error, reason } => Plan {
                    next: JobState::Dead,
                    error: Some(error),
                    outcome: outcome_row,
                    reason: Some(*reason),
                    ..base
                },
                Outcome::Snooze { delay } => Plan {
                    next: JobState::Scheduled,
                    yields: true,
                    gives_back: true,
                    delay_ms: Some(millis(*delay)),
                    outcome: outcome_row,
                    ..base
                },
            }
        }
        Ending::Lost {
            attempt,
            worker,
            attempts_left,
            error,
        } => Plan {
            next: if *attempts_left {
                JobState::Retrying
            } else {
                JobState::Dead
            },
            yields: true,
            error: Some(error),
            delay_ms: attempts_left.then_some(0),
            outcome: Some(AttemptOutcome::Lost),
            reason: (!attempts_left).then_some(DeadReason::AttemptsExhausted),
            ..held(*attempt, *worker, None)
        },
        Ending::DeadLettered(message) => Plan {
            next: JobState::Dead,
            error: Some(&message.error),
            reason: Some(message.reason),
            ..unguarded(None)
        },
    }
}

/// A row the `UPDATE` changed.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Changed {
    #[sqlx(try_from = "Uuid")]
    pub(crate) id: JobId,
    #[sqlx(try_from = "String")]
    pub(crate) state: JobState,
    pub(crate) queue: String,
    pub(crate) kind: String,
    /// Only for a dead job: its arguments, for its dead letter.
    args: Option<Json<Value>>,
    seq: i64,
    #[sqlx(try_from = "i32")]
    attempt: u32,
    #[sqlx(try_from = "i32")]
    max_attempts: u32,
    run_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Changed {
    /// The live event of this row's transition; the result and error come from the
    /// ending (the statement does not send them back).
    fn event(&self, ending: Option<&Ending>) -> JobEvent {
        let plan = ending.map(plan);
        let (result, error) = match self.state {
            JobState::Completed => (plan.as_ref().and_then(|p| p.result.cloned()), None),
            JobState::Retrying | JobState::Dead => {
                (None, plan.as_ref().and_then(|p| p.error.map(str::to_owned)))
            }
            _ => (None, None),
        };
        JobEvent {
            id: self.id,
            kind: self.kind.clone(),
            queue: self.queue.clone(),
            state: self.state,
            seq: u64::try_from(self.seq).unwrap_or(0),
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            at: self.updated_at,
            run_at: matches!(self.state, JobState::Retrying | JobState::Scheduled)
                .then_some(self.run_at),
            result,
            error,
        }
    }
}

/// What a settlement did: the answer for each job, in order, and the live events of
/// the transitions it wrote, for the caller to publish once they are committed
/// ([`Store::settle`] has committed them when it returns; a caller of [`settle_on`]
/// publishes them after its own commit).
#[derive(Debug, Clone, PartialEq)]
pub struct SettleReport {
    /// One answer per settlement, in order.
    pub answers: Vec<Settled>,
    /// One event per job whose state the settlement wrote, and one per job its handler
    /// had completed in its own transaction (`Settled::AlreadyCompleted`).
    pub events: Vec<JobEvent>,
}

impl Store {
    /// Settles many jobs: any mix of endings, with the statements [`settle_on`] lists,
    /// in one transaction (a batch of completions needs none: it is one statement).
    /// The answer for each, in order, and the events of what it wrote, committed: the
    /// caller publishes them (the one place a transition's live event comes from).
    ///
    /// # Errors
    /// When the database fails; nothing was written.
    pub async fn settle(&self, settlements: &[Settlement]) -> Result<SettleReport, Error> {
        let one_statement = settlements.iter().all(|s| {
            matches!(
                s.ending,
                Ending::Attempt {
                    outcome: Outcome::Completed { .. },
                    ..
                }
            )
        });
        if one_statement {
            let mut conn = self.pool().acquire().await?;
            return settle_on(&mut conn, settlements).await;
        }
        let mut tx = self.pool().begin().await?;
        let settled = settle_on(&mut tx, settlements).await?;
        tx.commit().await?;
        Ok(settled)
    }
}

/// Settles many jobs on `conn` (an open transaction, when the caller commits other
/// effects with them, as `order.process` does): see the module docs.
///
/// # Errors
/// When the database fails.
pub(crate) async fn settle_on(
    conn: &mut PgConnection,
    settlements: &[Settlement],
) -> Result<SettleReport, Error> {
    if settlements.is_empty() {
        return Ok(SettleReport {
            answers: Vec::new(),
            events: Vec::new(),
        });
    }
    let changed = write(conn, settlements).await?;
    let by_id: HashMap<JobId, &Settlement> = settlements.iter().map(|s| (s.id, s)).collect();
    // Effects of the transition, one statement each for the whole batch.
    let letters: Vec<NewLetter> = changed
        .iter()
        .filter(|row| row.state == JobState::Dead)
        .filter_map(|row| Some(dead_letter(row, &by_id.get(&row.id)?.ending)))
        .collect();
    insert_dead_letters(conn, &letters).await?;
    if changed
        .iter()
        .any(|row| matches!(row.state, JobState::Retrying | JobState::Scheduled))
    {
        notify_due(conn).await?;
    }
    let mut events: Vec<JobEvent> = changed
        .iter()
        .map(|row| row.event(by_id.get(&row.id).map(|s| &s.ending)))
        .collect();
    let (answers, completed_by_handler) = answer(conn, settlements, &changed).await?;
    events.extend(completed_by_handler);
    Ok(SettleReport { answers, events })
}

/// Statement 1: the job rows and their attempt rows.
async fn write(conn: &mut PgConnection, settlements: &[Settlement]) -> Result<Vec<Changed>, Error> {
    let n = settlements.len();
    let mut ids = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut workers = Vec::with_capacity(n);
    let mut started = Vec::with_capacity(n);
    let mut nexts = Vec::with_capacity(n);
    let mut yields = Vec::with_capacity(n);
    let mut gives_back = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut delays = Vec::with_capacity(n);
    let mut outcomes = Vec::with_capacity(n);
    for settlement in settlements {
        let plan = plan(&settlement.ending);
        ids.push(settlement.id.as_uuid());
        attempts.push(plan.attempt);
        workers.push(plan.worker);
        started.push(plan.started_at);
        nexts.push(plan.next.as_str());
        yields.push(plan.yields);
        gives_back.push(plan.gives_back);
        results.push(plan.result.map(Json));
        errors.push(plan.error);
        delays.push(plan.delay_ms);
        outcomes.push(plan.outcome.map(|o| o.as_str()));
    }
    let rows = sqlx::query_as(AssertSqlSafe(format!(
        "WITH i AS (SELECT * FROM UNNEST($2::uuid[], $3::int[], $4::uuid[], $5::timestamptz[], \
                 $6::text[], $7::bool[], $8::bool[], $9::jsonb[], $10::text[], $11::bigint[], \
                 $12::text[]) \
             AS t(id, attempt, worker_id, started_at, next, yields, gives_back, result, error, \
                 delay_ms, outcome)), \
         settled AS (UPDATE jobs j SET \
                 state = {NEW_STATE}, \
                 result = COALESCE(i.result, j.result), \
                 last_error = COALESCE(i.error, j.last_error), \
                 run_at = COALESCE(now() + i.delay_ms * interval '1 millisecond', j.run_at), \
                 attempt = CASE WHEN i.gives_back THEN j.attempt - 1 ELSE j.attempt END, \
                 worker_id = NULL, published_at = NULL, updated_at = now(), seq = j.seq + 1, \
                 finished_at = CASE WHEN {NEW_STATE} = ANY($13) THEN now() END \
             FROM i \
             WHERE j.id = i.id AND CASE WHEN i.attempt IS NULL \
                 THEN j.state NOT IN ('completed', 'dead', 'cancelled') \
                 ELSE j.state = 'running' AND j.attempt = i.attempt AND j.worker_id = i.worker_id END \
             RETURNING j.id, j.state, j.queue, j.kind, j.seq, j.attempt, j.max_attempts, \
                 j.run_at, j.updated_at, \
                 CASE WHEN j.state = 'dead' THEN j.args END AS args, \
                 i.attempt AS settled_attempt, i.worker_id AS settled_by, \
                 COALESCE(i.started_at, j.started_at, now()) AS settled_started_at, \
                 i.outcome, i.error AS settled_error, i.delay_ms, {TRANSITION_COLUMNS}), \
         attempt_rows AS (INSERT INTO job_attempts \
                 (job_id, attempt, worker_id, started_at, outcome, error, retry_at) \
             SELECT id, settled_attempt, settled_by, settled_started_at, outcome, settled_error, \
                 now() + delay_ms * interval '1 millisecond' \
             FROM settled WHERE outcome IS NOT NULL) \
         {webhooks} \
         SELECT id, state, queue, kind, args, seq, attempt, max_attempts, run_at, updated_at \
         FROM settled",
        // Effect: webhook deliveries (see the module docs), in this same statement.
        webhooks = deliveries_cte("settled"),
    )))
    .bind(JobState::Cancelled.as_str())
    .bind(&ids)
    .bind(&attempts)
    .bind(&workers)
    .bind(&started)
    .bind(&nexts)
    .bind(&yields)
    .bind(&gives_back)
    .bind(&results)
    .bind(&errors)
    .bind(&delays)
    .bind(&outcomes)
    .bind(vec![
        JobState::Completed.as_str(),
        JobState::Dead.as_str(),
        JobState::Cancelled.as_str(),
    ])
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

/// The dead letter of a job that died: the broker's message when it was dead-lettered,
/// otherwise the job's arguments.
fn dead_letter(row: &Changed, ending: &Ending) -> NewLetter {
    match ending {
        Ending::DeadLettered(message) => NewLetter {
            id: message.key,
            job_id: Some(row.id),
            queue: message.queue.clone().or_else(|| Some(row.queue.clone())),
            kind: message.kind.clone().or_else(|| Some(row.kind.clone())),
            reason: message.reason,
            error: Some(message.error.clone()),
            payload: Some(message.payload.clone()),
            headers: Some(message.headers.clone()),
        },
        ending => {
            let plan = plan(ending);
            NewLetter {
                id: Uuid::now_v7(),
                job_id: Some(row.id),
                queue: Some(row.queue.clone()),
                kind: Some(row.kind.clone()),
                reason: plan.reason.unwrap_or(DeadReason::Failed),
                error: plan.error.map(str::to_owned),
                payload: Some(
                    row.args
                        .as_ref()
                        .and_then(|args| serde_json::to_vec(&args.0).ok())
                        .unwrap_or_default(),
                ),
                headers: None,
            }
        }
    }
}

/// Statement 4, when needed: why each job that was not written was not; with the events
/// of the jobs their handlers completed in their own transactions (already committed).
async fn answer(
    conn: &mut PgConnection,
    settlements: &[Settlement],
    changed: &[Changed],
) -> Result<(Vec<Settled>, Vec<JobEvent>), Error> {
    let mut events = Vec::new();
    let mut written: HashMap<JobId, JobState> =
        changed.iter().map(|row| (row.id, row.state)).collect();
    let mut answers: Vec<Option<Settled>> = settlements
        .iter()
        .map(|s| written.remove(&s.id).map(Settled::Recorded))
        .collect();
    let others: Vec<Uuid> = settlements
        .iter()
        .zip(&answers)
        .filter(|(_, answer)| answer.is_none())
        .map(|(s, _)| s.id.as_uuid())
        .collect();
    let now = states_of(conn, &others).await?;
    for (settlement, answer) in settlements.iter().zip(answers.iter_mut()) {
        if answer.is_some() {
            continue;
        }
        *answer = Some(match now.get(&settlement.id) {
            None => Settled::TakenOver(None),
            // Completed at the very attempt this worker ran: only the handler's own
            // transaction does that (a rescue or replay moves the attempt on first).
            Some(row)
                if row.state == JobState::Completed
                    && matches!(
                        settlement.ending,
                        Ending::Attempt { attempt, .. } if attempt == row.attempt
                    ) =>
            {
                events.push(JobEvent {
                    id: row.id,
                    kind: row.kind.clone(),
                    queue: row.queue.clone(),
                    state: JobState::Completed,
                    seq: u64::try_from(row.seq).unwrap_or(0),
                    attempt: row.attempt,
                    max_attempts: row.max_attempts,
                    at: row.updated_at,
                    run_at: None,
                    result: plan(&settlement.ending).result.cloned(),
                    error: None,
                });
                Settled::AlreadyCompleted
            }
            Some(row) => Settled::TakenOver(Some(row.state)),
        });
    }
    Ok((answers.into_iter().flatten().collect(), events))
}
