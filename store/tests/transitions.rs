//! ARCHITECTURE.md's "who writes which state", row by row, against a fresh database:
//! each transition, and each guarded write that must find nothing to do.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{TestDb, attempt, completed, new_job, retry, snooze};
use jobs::{DeadReason, JobState, NewJob, Outcome, WorkerId};
use serde_json::json;
use store::{CancelOutcome, Claim, DeadMessage, Ending, Insert, Settled, Settlement};
use uuid::Uuid;

#[tokio::test]
async fn intake_records_enqueued_or_scheduled_jobs_and_a_key_names_one_job() {
    let db = TestDb::new().await;
    let now = db.insert(new_job()).await;
    let later = db
        .insert(NewJob {
            run_at: Some(Utc::now() + chrono::Duration::hours(1)),
            ..new_job()
        })
        .await;
    assert_eq!(db.state(now).await, JobState::Enqueued);
    assert_eq!(db.state(later).await, JobState::Scheduled);

    let keyed = NewJob {
        idempotency_key: Some("k-1".into()),
        ..new_job()
    };
    let again = NewJob {
        id: jobs::JobId::new(),
        ..keyed.clone()
    };
    let other = NewJob {
        id: jobs::JobId::new(),
        args: json!({"different": true}),
        ..keyed.clone()
    };
    let answers = db
        .store
        .insert_each(&[keyed.clone(), again, other])
        .await
        .unwrap();
    assert!(matches!(&answers[0], Ok(Insert::Created(r)) if r.id == keyed.id));
    assert!(
        matches!(&answers[1], Ok(Insert::Existing(r)) if r.id == keyed.id),
        "the same content under a taken key is the existing job: {:?}",
        answers[1]
    );
    assert!(
        matches!(&answers[2], Err(store::Error::IdempotencyConflict(k)) if k == "k-1"),
        "{:?}",
        answers[2]
    );
    assert_eq!(db.count("SELECT count(*) FROM jobs").await, 3);
    db.drop().await;
}

#[tokio::test]
async fn the_dispatcher_takes_each_due_job_once_and_retakes_unconfirmed_ones() {
    let db = TestDb::new().await;
    let due = db
        .insert(NewJob {
            run_at: Some(Utc::now() - chrono::Duration::seconds(1)),
            ..new_job()
        })
        .await;
    let waiting = db
        .insert(NewJob {
            run_at: Some(Utc::now() + chrono::Duration::hours(1)),
            ..new_job()
        })
        .await;
    let hour = Duration::from_secs(3600);
    let next = db.store.next_due_in().await.unwrap();
    assert_eq!(next, Some(Duration::ZERO), "a due job is due now");
    assert_eq!(db.take_due(hour).await, [due]);
    assert_eq!(db.state(due).await, JobState::Enqueued);
    assert_eq!(db.state(waiting).await, JobState::Scheduled);
    assert!(
        db.take_due(hour).await.is_empty(),
        "a job taken once is not taken again while its publish may be confirmed"
    );
    let next = db.store.next_due_in().await.unwrap().expect("one waits");
    assert!(next > Duration::from_secs(3000), "{next:?}");

    // Unconfirmed for longer than the window: taken again; confirmed: never.
    assert_eq!(db.take_due(Duration::ZERO).await, [due]);
    db.store.mark_published(&[due]).await.unwrap();
    assert!(db.take_due(Duration::ZERO).await.is_empty());
    db.drop().await;
}

#[tokio::test]
async fn a_claim_runs_an_enqueued_job_once() {
    let db = TestDb::new().await;
    let worker = WorkerId::new();
    let id = db.insert(new_job()).await;
    let scheduled = db
        .insert(NewJob {
            run_at: Some(Utc::now() + chrono::Duration::hours(1)),
            ..new_job()
        })
        .await;
    let missing = jobs::JobId::new();
    let claims = db
        .store
        .claim_many(&[id, id, scheduled, missing], worker)
        .await
        .unwrap();
    let Claim::Claimed(job) = &claims[0] else {
        panic!("{:?}", claims[0])
    };
    assert_eq!(job.attempt, 1);
    assert!(matches!(claims[1], Claim::Skip(JobState::Running)));
    assert!(matches!(claims[2], Claim::Skip(JobState::Scheduled)));
    assert!(matches!(claims[3], Claim::Missing));
    // A duplicate delivery claims nothing, whichever worker receives it.
    let again = db.store.claim_many(&[id], WorkerId::new()).await.unwrap();
    assert!(matches!(again[0], Claim::Skip(JobState::Running)));
    assert_eq!(db.store.get_job(id).await.unwrap().unwrap().attempt, 1);
    db.drop().await;
}

#[tokio::test]
async fn a_claim_whose_reply_was_lost_is_read_back_only_by_the_worker_holding_it() {
    let db = TestDb::new().await;
    let worker = WorkerId::new();
    let id = db.insert(new_job()).await;
    // The claim commits; suppose its reply never reached the worker.
    db.store.claim_many(&[id], worker).await.unwrap();

    let retried = db.store.claim_many(&[id], worker).await.unwrap();
    let held = db.store.held_by(id, worker).await.unwrap();
    let other = db.store.held_by(id, WorkerId::new()).await.unwrap();

    assert!(matches!(retried[0], Claim::Skip(JobState::Running)));
    let job = held.expect("the worker holding the job reads its claim back");
    assert_eq!(
        (job.id, job.attempt),
        (id, 1),
        "the same attempt, not a new one"
    );
    assert!(other.is_none(), "another worker holds nothing");
    assert_eq!(db.store.get_job(id).await.unwrap().unwrap().attempt, 1);
    db.drop().await;
}

#[tokio::test]
async fn a_completion_is_written_once() {
    let db = TestDb::new().await;
    let worker = WorkerId::new();
    let job = db.running(worker, 3).await;
    let done = attempt(&job, worker, completed(json!({"ok": 1})));
    assert_eq!(
        db.settle(std::slice::from_ref(&done)).await,
        [Settled::Recorded(JobState::Completed)]
    );
    let record = db.store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Completed);
    assert_eq!(record.result, Some(json!({"ok": 1})));
    assert!(record.finished_at.is_some());
    // A double settle finds the job completed at this attempt and writes nothing.
    assert_eq!(db.settle(&[done]).await, [Settled::AlreadyCompleted]);
    assert_eq!(db.attempts(job.id).await, [(1, "completed".into(), None)]);
    db.drop().await;
}

#[tokio::test]
async fn a_stale_attempt_or_another_worker_settles_nothing() {
    let db = TestDb::new().await;
    let worker = WorkerId::new();
    let job = db.running(worker, 3).await;
    let mut stale = attempt(&job, worker, completed(json!(1)));
    if let Ending::Attempt { attempt, .. } = &mut stale.ending {
        *attempt += 1;
    }
    let intruder = attempt(&job, WorkerId::new(), completed(json!(2)));
    let failure = attempt(
        &job,
        WorkerId::new(),
        Outcome::Dead {
            error: "boom".into(),
            reason: DeadReason::Failed,
        },
    );
    assert_eq!(
        db.settle(&[stale, intruder, failure]).await,
        [Settled::TakenOver(Some(JobState::Running)); 3]
    );
    assert_eq!(db.state(job.id).await, JobState::Running);
    assert!(db.attempts(job.id).await.is_empty());
    assert!(db.letters().await.is_empty());
    // A job that is gone says so.
    let gone = Settlement {
        id: jobs::JobId::new(),
        ..attempt(&job, worker, completed(json!(3)))
    };
    assert_eq!(db.settle(&[gone]).await, [Settled::TakenOver(None)]);
    db.drop().await;
}

#[tokio::test]
async fn one_settle_writes_a_mix_of_retries_snoozes_failures_and_completions() {
    let db = TestDb::new().await;
    let worker = WorkerId::new();
    let retried = db.running(worker, 3).await;
    let snoozed = db.running(worker, 3).await;
    let failed = db.running(worker, 3).await;
    let done = db.running(worker, 3).await;
    let settled = db
        .settle(&[
            attempt(&retried, worker, retry("smtp 451", Duration::from_secs(60))),
            attempt(&snoozed, worker, snooze(Duration::from_secs(60))),
            attempt(
                &failed,
                worker,
                Outcome::Dead {
                    error: "550 no such user".into(),
                    reason: DeadReason::Failed,
                },
            ),
            attempt(&done, worker, completed(json!(true))),
        ])
        .await;
    assert_eq!(
        settled,
        [
            Settled::Recorded(JobState::Retrying),
            Settled::Recorded(JobState::Scheduled),
            Settled::Recorded(JobState::Dead),
            Settled::Recorded(JobState::Completed),
        ]
    );
    let retry = db.store.get_job(retried.id).await.unwrap().unwrap();
    assert!(retry.run_at > Utc::now() + chrono::Duration::seconds(30));
    assert_eq!(retry.last_error.as_deref(), Some("smtp 451"));
    assert_eq!(retry.attempt, 1);
    assert!(retry.finished_at.is_none());
    let snooze = db.store.get_job(snoozed.id).await.unwrap().unwrap();
    assert_eq!(snooze.attempt, 0, "a snooze gives its attempt back");
    assert!(snooze.run_at > Utc::now() + chrono::Duration::seconds(30));
    assert_eq!(
        db.attempts(retried.id).await,
        [(1, "retry".into(), Some("smtp 451".into()))]
    );
    assert_eq!(db.attempts(snoozed.id).await, [(1, "snoozed".into(), None)]);
    assert_eq!(
        db.attempts(failed.id).await,
        [(1, "failed".into(), Some("550 no such user".into()))]
    );
    assert_eq!(
        db.letters().await,
        [("failed".into(), Some(failed.id.as_uuid()))]
    );
    let letter = db
        .store
        .dead_letter(failed.id.as_uuid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(letter.letter.reason, DeadReason::Failed);
    assert_eq!(letter.payload, json!({}));
    // Retries and snoozes are due later: the dispatcher takes neither now.
    assert!(db.take_due(Duration::from_secs(3600)).await.is_empty());
    db.drop().await;
}

#[tokio::test]
async fn a_cancel_requested_while_running_turns_a_retry_into_cancelled_but_not_a_completion() {
    let db = TestDb::new().await;
    let worker = WorkerId::new();
    let retried = db.running(worker, 3).await;
    let snoozed = db.running(worker, 3).await;
    let done = db.running(worker, 3).await;
    for job in [&retried, &snoozed, &done] {
        assert_eq!(
            db.store.cancel(job.id, &operator()).await.unwrap(),
            CancelOutcome::Requested
        );
    }
    let settled = db
        .settle(&[
            attempt(&retried, worker, retry("flaky", Duration::from_secs(1))),
            attempt(&snoozed, worker, snooze(Duration::from_secs(1))),
            attempt(&done, worker, completed(json!(1))),
        ])
        .await;
    assert_eq!(
        settled,
        [
            Settled::Recorded(JobState::Cancelled),
            Settled::Recorded(JobState::Cancelled),
            Settled::Recorded(JobState::Completed),
        ]
    );
    let cancelled = db.store.get_job(retried.id).await.unwrap().unwrap();
    assert!(cancelled.finished_at.is_some());
    // The attempt keeps what happened in it.
    assert_eq!(db.attempts(retried.id).await[0].1, "retry");
    // A settle after the cancel finished the job finds nothing to write.
    assert_eq!(
        db.settle(&[attempt(&retried, worker, completed(json!(2)))])
            .await,
        [Settled::TakenOver(Some(JobState::Cancelled))]
    );
    // A cancel of a waiting job is final at once; its message then claims nothing.
    let waiting = db.insert(new_job()).await;
    assert_eq!(
        db.store.cancel(waiting, &operator()).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let claims = db.store.claim_many(&[waiting], worker).await.unwrap();
    assert!(matches!(claims[0], Claim::Skip(JobState::Cancelled)));
    db.drop().await;
}

#[tokio::test]
async fn the_rescue_retries_a_lost_job_and_kills_one_without_attempts_left() {
    let db = TestDb::new().await;
    let lost = WorkerId::new();
    let retried = db.running(lost, 3).await;
    let exhausted = db.running(lost, 1).await;
    let alive = WorkerId::new();
    db.store.heartbeat(alive, "alive", "default").await.unwrap();
    let kept = db.running(alive, 3).await;

    // Not lost for long enough yet.
    assert_eq!(
        db.store
            .rescue_orphans(Duration::from_secs(3600))
            .await
            .unwrap()
            .len(),
        0
    );
    // `lost` has no heartbeat row at all; `alive` heartbeats, but not within zero.
    db.store.heartbeat(alive, "alive", "default").await.unwrap();
    sqlx::query("UPDATE workers SET heartbeat_at = now() + interval '1 hour'")
        .execute(db.store.pool())
        .await
        .unwrap();
    assert_eq!(
        db.store.rescue_orphans(Duration::ZERO).await.unwrap().len(),
        2
    );
    assert_eq!(db.state(retried.id).await, JobState::Retrying);
    assert_eq!(db.state(exhausted.id).await, JobState::Dead);
    assert_eq!(db.state(kept.id).await, JobState::Running);
    let lost_row = db.attempts(retried.id).await;
    assert_eq!(lost_row.len(), 1);
    assert_eq!(lost_row[0].1, "lost");
    assert_eq!(
        db.letters().await,
        [("attempts_exhausted".into(), Some(exhausted.id.as_uuid()))]
    );
    // Due again now.
    assert_eq!(db.take_due(Duration::from_secs(3600)).await, [retried.id]);
    // The lost worker's late outcome is dropped; a second rescue finds nothing.
    assert_eq!(
        db.settle(&[attempt(&retried, lost, completed(json!(1)))])
            .await,
        [Settled::TakenOver(Some(JobState::Enqueued))]
    );
    assert_eq!(
        db.store.rescue_orphans(Duration::ZERO).await.unwrap().len(),
        0
    );
    // A clean deregistration leaves the worker's jobs to the rescue.
    db.store.deregister(alive).await.unwrap();
    assert_eq!(
        db.store.rescue_orphans(Duration::ZERO).await.unwrap().len(),
        1
    );
    assert_eq!(db.state(kept.id).await, JobState::Retrying);
    db.drop().await;
}

#[tokio::test]
async fn a_lost_job_with_a_cancel_requested_is_cancelled_without_a_dead_letter() {
    let db = TestDb::new().await;
    let lost = WorkerId::new();
    let retried = db.running(lost, 3).await;
    let exhausted = db.running(lost, 1).await;
    db.store.cancel(retried.id, &operator()).await.unwrap();
    db.store.cancel(exhausted.id, &operator()).await.unwrap();
    assert_eq!(
        db.store.rescue_orphans(Duration::ZERO).await.unwrap().len(),
        2
    );
    assert_eq!(db.state(retried.id).await, JobState::Cancelled);
    assert_eq!(db.state(exhausted.id).await, JobState::Cancelled);
    assert!(db.letters().await.is_empty());
    db.drop().await;
}

fn delivery_limit(job_id: Option<jobs::JobId>, key: Uuid) -> DeadMessage {
    DeadMessage {
        key,
        job_id,
        queue: Some("default".into()),
        kind: Some("noop".into()),
        reason: DeadReason::DeliveryLimit,
        error: "delivered past the queue's delivery limit".into(),
        payload: b"{\"raw\":true}".to_vec(),
        headers: json!({"x-first-death-reason": "delivery_limit"}),
    }
}

#[tokio::test]
async fn the_archive_kills_an_unfinished_job_once_and_drops_a_stale_copy() {
    let db = TestDb::new().await;
    let worker = WorkerId::new();
    let crashing = db.running(worker, 3).await;
    let key = Uuid::now_v7();
    let message = delivery_limit(Some(crashing.id), key);
    db.store.archive_dead_letter(&message).await.unwrap();
    // The same message redelivered is stored once.
    db.store.archive_dead_letter(&message).await.unwrap();
    assert_eq!(db.state(crashing.id).await, JobState::Dead);
    assert_eq!(
        db.letters().await,
        [("delivery_limit".into(), Some(crashing.id.as_uuid()))]
    );
    let detail = db.store.dead_letter(key).await.unwrap().unwrap();
    assert_eq!(
        detail.headers,
        Some(json!({"x-first-death-reason": "delivery_limit"}))
    );
    // No attempt finished: none is recorded.
    assert!(db.attempts(crashing.id).await.is_empty());
    // The worker's late outcome is dropped.
    assert_eq!(
        db.settle(&[attempt(&crashing, worker, completed(json!(1)))])
            .await,
        [Settled::TakenOver(Some(JobState::Dead))]
    );

    // A stale copy of a job that completed is dropped: nothing was lost.
    let finished = db.running(worker, 3).await;
    db.settle(&[attempt(&finished, worker, completed(json!(1)))])
        .await;
    db.store
        .archive_dead_letter(&delivery_limit(Some(finished.id), Uuid::now_v7()))
        .await
        .unwrap();
    assert_eq!(db.state(finished.id).await, JobState::Completed);
    assert_eq!(db.count("SELECT count(*) FROM dead_letters").await, 1);

    // A message naming no job, or nothing decodable, is kept raw.
    let forged = jobs::JobId::new();
    db.store
        .archive_dead_letter(&DeadMessage {
            reason: DeadReason::NoSuchJob,
            ..delivery_limit(Some(forged), Uuid::now_v7())
        })
        .await
        .unwrap();
    let garbage = Uuid::now_v7();
    db.store
        .archive_dead_letter(&DeadMessage {
            reason: DeadReason::Undecodable,
            payload: b"\xff not json".to_vec(),
            ..delivery_limit(None, garbage)
        })
        .await
        .unwrap();
    let letters = db.letters().await;
    assert_eq!(
        &letters[1..],
        [("no_such_job".into(), None), ("undecodable".into(), None)]
    );
    let raw = db.store.dead_letter(garbage).await.unwrap().unwrap();
    assert_eq!(raw.payload, json!("\u{fffd} not json"));
    db.drop().await;
}

#[tokio::test]
async fn the_schema_refuses_names_outside_the_vocabularies() {
    let db = TestDb::new().await;
    let worker = WorkerId::new();
    let job = db.running(worker, 3).await;
    let bad_outcome = sqlx::query(
        "INSERT INTO job_attempts (job_id, attempt, started_at, outcome) \
         VALUES ($1, 1, now(), 'cancelled')",
    )
    .bind(job.id.as_uuid())
    .execute(db.store.pool())
    .await;
    assert!(
        bad_outcome.is_err(),
        "an attempt is never recorded cancelled"
    );
    let bad_reason = sqlx::query("INSERT INTO dead_letters (id, reason) VALUES ($1, 'because')")
        .bind(Uuid::now_v7())
        .execute(db.store.pool())
        .await;
    assert!(bad_reason.is_err());
    db.drop().await;
}

#[tokio::test]
async fn a_handler_completes_its_job_in_its_own_transaction_and_only_at_its_attempt() {
    use jobs::kinds::order::{Order, OrderLedger, ProcessOrder};
    let db = TestDb::new().await;
    let products =
        store::parse_catalog("sku,name,unit_price_minor,currency,stock\nMUG,Mug,1200,EUR,5\n")
            .unwrap();
    db.store.upsert_products(&products).await.unwrap();
    let args = json!({
        "order_id": "o-1",
        "customer": {"email": "ada@example.com", "name": "Ada"},
        "items": [{"sku": "MUG", "quantity": 2}],
    });
    let order =
        Order::try_from(&serde_json::from_value::<ProcessOrder>(args.clone()).unwrap()).unwrap();
    let worker = WorkerId::new();
    let job = db.running(worker, 3).await;
    let meta = |worker| jobs::JobMeta {
        id: job.id,
        kind: job.kind.clone(),
        queue: job.queue.clone(),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        created_at: job.created_at,
        worker,
    };
    // Another worker's copy of the attempt commits nothing: not the order, not the stock.
    let refused = db.store.place_order(&meta(WorkerId::new()), &order).await;
    assert!(
        matches!(refused, Err(jobs::LedgerError::NotRunning)),
        "{refused:?}"
    );
    assert_eq!(db.count("SELECT count(*) FROM orders").await, 0);
    // The holder's commits the order, its follow-up email job and the completion at once.
    db.store.place_order(&meta(worker), &order).await.unwrap();
    assert_eq!(db.state(job.id).await, JobState::Completed);
    assert_eq!(db.attempts(job.id).await, [(1, "completed".into(), None)]);
    assert_eq!(
        db.count("SELECT count(*) FROM jobs WHERE kind = 'email.send' AND state = 'scheduled'")
            .await,
        1
    );
    // The worker's own settlement then finds it done.
    assert_eq!(
        db.settle(&[attempt(&job, worker, completed(json!({})))])
            .await,
        [Settled::AlreadyCompleted]
    );
    db.drop().await;
}

/// An operator acting through the CLI, as the audit log names them.
fn operator() -> store::AuditContext {
    store::AuditContext::new(store::Actor {
        kind: store::ActorKind::Cli,
        id: None,
        name: "test".into(),
    })
}
