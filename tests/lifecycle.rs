//! A job's path through the whole system, on real Postgres and RabbitMQ.

mod common;

use std::time::Duration;

use common::{noop, spawn_app, spawn_app_with};
use conveyor::app::Roles;
use serde_json::json;

#[tokio::test]
async fn a_posted_job_reaches_completed_with_one_attempt_row() {
    let app = spawn_app().await;

    let id = app.enqueue(noop()).await;
    let job = app.wait_for_state(&id, "completed").await;

    assert_eq!(job["kind"], "noop");
    assert_eq!(job["attempt"], 1);
    assert!(job["finished_at"].is_string());
    let attempts = app.attempts(&id).await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].0, 1);
    assert_eq!(attempts[0].1, "completed");
    app.teardown().await;
}

#[tokio::test]
async fn the_intake_answers_202_with_id_state_and_location() {
    let app = spawn_app().await;

    let response = app.post_job(&noop()).await;

    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(response.headers().contains_key("x-request-id"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["state"], "enqueued");
    assert_eq!(
        location,
        format!("/v1/jobs/{}", body["id"].as_str().unwrap())
    );
    app.teardown().await;
}

#[tokio::test]
async fn an_unknown_job_id_is_404_and_a_malformed_one_is_422() {
    let app = spawn_app().await;

    let missing = app
        .client
        .get(format!("{}/v1/jobs/{}", app.address, uuid::Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    let malformed = app
        .client
        .get(format!("{}/v1/jobs/not-a-uuid", app.address))
        .send()
        .await
        .unwrap();

    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(malformed.status(), 422);
    let body: serde_json::Value = malformed.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "id");
    app.teardown().await;
}

#[tokio::test]
async fn health_and_readiness_report_dependencies() {
    let app = spawn_app().await;

    let health = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    let ready = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();

    assert_eq!(health.status(), 200);
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    assert_eq!(body["broker"], "ok");
    app.teardown().await;
}

#[tokio::test]
async fn a_delivery_of_an_already_completed_job_does_not_run_it_again() {
    // One job at a time on the queue, so deliveries are handled in order.
    let app = spawn_app_with(
        |s| {
            s.worker.queues.insert("default".into(), 1);
        },
        Roles::ALL,
    )
    .await;
    let id = app.enqueue(noop()).await;
    app.wait_for_state(&id, "completed").await;
    let before = app.get_job(&id).await;

    // The same job's message delivered again, then a sentinel behind it.
    let envelope = json!({"id": id, "kind": "noop", "queue": "default", "args": {}, "enqueued_at": "2026-01-01T00:00:00Z"});
    app.publish_raw("default", envelope.to_string().as_bytes())
        .await;
    let sentinel = app.enqueue(noop()).await;
    app.wait_for_state(&sentinel, "completed").await;

    let after = app.get_job(&id).await;
    assert_eq!(
        app.attempts(&id).await.len(),
        1,
        "the duplicate delivery ran the job again"
    );
    assert_eq!(after["attempt"], 1);
    assert_eq!(after["finished_at"], before["finished_at"]);
    app.teardown().await;
}

#[tokio::test]
async fn shutdown_with_jobs_in_flight_finishes_them_and_loses_none() {
    let mut app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            app.enqueue(json!({"kind": "test.sleep", "args": {"ms": 700}}))
                .await,
        );
    }
    app.wait_for_count(
        "SELECT count(*) FROM jobs WHERE state = 'running'",
        6,
        Duration::from_secs(20),
    )
    .await;

    app.shutdown().await.expect("clean shutdown");

    for id in &ids {
        assert_eq!(
            app.state_of(id).await,
            "completed",
            "job {id} was lost in shutdown"
        );
        assert_eq!(app.attempts(id).await.len(), 1);
    }
    app.teardown().await;
}

#[tokio::test]
async fn a_job_accepted_while_no_worker_runs_completes_when_one_starts() {
    // Intake alone: the job is recorded and its message waits in the queue.
    let mut intake = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let id = intake.enqueue(noop()).await;
    assert_eq!(intake.queue_depth("default").await, Some(1));
    intake.shutdown().await.unwrap();

    // A worker on the same database and namespace picks it up.
    let settings = intake.settings.clone();
    let worker = common::spawn_app_with(
        move |s| {
            s.namespace = settings.namespace.clone();
            s.database.url = settings.database.url.clone();
        },
        Roles::ALL,
    )
    .await;
    worker.wait_for_state(&id, "completed").await;
    worker.teardown().await;
}

#[tokio::test]
async fn a_batch_claims_each_job_once_and_completes_them_in_one_statement() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let first = app.enqueue(noop()).await;
    let second = app.enqueue(noop()).await;
    let ids: Vec<jobs::JobId> = [&first, &first, &second]
        .iter()
        .map(|id| id.parse().unwrap())
        .collect();
    let worker = jobs::WorkerId::new();
    let missing = jobs::JobId::new();

    let mut with_missing = ids.clone();
    with_missing.push(missing);
    let claims = app.store.claim_many(&with_missing, worker).await.unwrap();

    assert!(
        matches!(claims[0], store::Claim::Claimed(_)),
        "{:?}",
        claims[0]
    );
    assert!(
        matches!(claims[1], store::Claim::Skip(jobs::JobState::Running)),
        "the same job twice in one batch runs once: {:?}",
        claims[1]
    );
    assert!(matches!(claims[2], store::Claim::Claimed(_)));
    assert!(matches!(claims[3], store::Claim::Missing));
    let completion = |job: &store::ClaimedJob, result: serde_json::Value| store::Settlement {
        id: job.id,
        ending: store::Ending::Attempt {
            attempt: job.attempt,
            worker,
            started_at: Some(job.started_at),
            outcome: jobs::Outcome::Completed { result },
        },
    };
    let finishes: Vec<store::Settlement> = [&claims[0], &claims[2]]
        .iter()
        .map(|claim| {
            let store::Claim::Claimed(job) = claim else {
                unreachable!()
            };
            completion(job, json!({"ok": true}))
        })
        .collect();
    let finished = app.store.settle(&finishes).await.unwrap();
    let recorded = store::Settled::Recorded(jobs::JobState::Completed);
    assert_eq!(finished.answers, [recorded, recorded]);
    assert_eq!(
        finished.events.iter().map(|e| e.state).collect::<Vec<_>>(),
        [jobs::JobState::Completed, jobs::JobState::Completed],
        "a settlement returns the events of what it wrote"
    );
    // A second write of the same outcomes finds nothing running: no double completion.
    // Completed at that very attempt is what a handler's own transaction leaves.
    let again = app.store.settle(&finishes).await.unwrap();
    let already = store::Settled::AlreadyCompleted;
    assert_eq!(again.answers, [already, already]);
    assert_eq!(
        app.store.settle(&finishes[..1]).await.unwrap().answers,
        [store::Settled::AlreadyCompleted]
    );
    // A job taken from the worker while it ran is not written, and the answer says by
    // whom.
    let third = app.enqueue(noop()).await;
    let third_id: jobs::JobId = third.parse().unwrap();
    let claims = app.store.claim_many(&[third_id], worker).await.unwrap();
    let store::Claim::Claimed(job) = &claims[0] else {
        panic!("{:?}", claims[0])
    };
    sqlx::query("UPDATE jobs SET state = 'cancelled' WHERE id = $1")
        .bind(job.id.as_uuid())
        .execute(app.store.pool())
        .await
        .unwrap();
    let taken = completion(job, json!(null));
    assert_eq!(
        app.store
            .settle(std::slice::from_ref(&taken))
            .await
            .unwrap()
            .answers,
        [store::Settled::TakenOver(Some(jobs::JobState::Cancelled))]
    );
    for id in [&first, &second] {
        assert_eq!(app.state_of(id).await, "completed");
        assert_eq!(app.attempts(id).await.len(), 1);
    }
    app.teardown().await;
}

#[tokio::test]
async fn prefetched_jobs_wait_for_a_slot_and_shutdown_leaves_the_unstarted_ones_queued() {
    let mut app = spawn_app_with(
        |s| {
            s.worker.concurrency = 1;
            s.worker.prefetch_multiplier = 8;
        },
        Roles::ALL,
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            app.enqueue(json!({"kind": "test.sleep", "args": {"ms": 5000}}))
                .await,
        );
    }
    app.wait_for_count(
        "SELECT count(*) FROM jobs WHERE state = 'running'",
        1,
        Duration::from_secs(20),
    )
    .await;
    // All four are delivered to this worker (prefetch 8), one runs (concurrency 1).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while app.queue_depth("default").await != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never took all four messages"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE state = 'running'")
            .await,
        1
    );

    app.shutdown().await.expect("clean shutdown");

    let states: Vec<String> =
        futures_util::future::join_all(ids.iter().map(|id| app.state_of(id))).await;
    assert_eq!(
        states.iter().filter(|s| *s == "completed").count(),
        1,
        "the running job finishes in the grace period: {states:?}"
    );
    assert_eq!(
        states.iter().filter(|s| *s == "enqueued").count(),
        3,
        "the prefetched jobs never started: {states:?}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE attempt > 0")
            .await,
        1
    );
    // Their messages went back to the queue for the next worker.
    let settings = app.settings.clone();
    let next = spawn_app_with(
        move |s| {
            s.namespace = settings.namespace.clone();
            s.database.url = settings.database.url.clone();
        },
        Roles::ALL,
    )
    .await;
    for id in &ids {
        next.wait_for_state(id, "completed").await;
        assert_eq!(next.attempts(id).await.len(), 1, "job {id} ran twice");
    }
    next.teardown().await;
}

#[tokio::test]
async fn confirmed_publishes_are_noted_late_and_whatever_is_pending_when_the_intake_stops() {
    let noted = |id: &str| {
        format!("SELECT count(*) FROM jobs WHERE id = '{id}' AND published_at IS NOT NULL")
    };
    // Noted after producer.mark_published_after_ms (200 ms in tests).
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let id = app.enqueue(noop()).await;
    app.wait_for_count(&noted(&id), 1, Duration::from_secs(10))
        .await;
    app.teardown().await;

    // Notes still waiting are written when the intake stops, so a restart does not make
    // the dispatcher publish those jobs again.
    let mut app = spawn_app_with(
        |s| {
            s.producer.mark_published_after_ms = 600_000;
            s.dispatcher.unconfirmed_after_ms = 1_200_000;
        },
        Roles::INTAKE,
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.enqueue(noop()).await);
    }
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE published_at IS NOT NULL")
            .await,
        0,
        "noted before the delay"
    );
    app.shutdown().await.expect("clean shutdown");
    for id in &ids {
        assert_eq!(app.count(&noted(id)).await, 1, "job {id} was not noted");
    }
    app.teardown().await;
}

#[tokio::test]
async fn cli_commands_and_a_clean_shutdown_log_no_error() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    // Work in a queue, so `stats` asks the broker for its consumers.
    let waiting = app.enqueue(noop()).await;
    let failed = app
        .enqueue(json!({"kind": "test.fail", "args": {"message": "no"}}))
        .await;

    for args in [
        &["stats"][..],
        &["stats", "--json"],
        &["jobs", "show", &waiting],
        &["dead", "list"],
    ] {
        let (ok, stdout, stderr) = app.cli(args).await;
        assert!(ok, "conveyor {args:?} failed: {stderr}");
        let errors: Vec<&str> = stdout
            .lines()
            .chain(stderr.lines())
            .filter(|line| common::is_error_log(line))
            .collect();
        assert!(
            errors.is_empty(),
            "conveyor {args:?} logged errors: {errors:?}"
        );
    }

    // Every role in one process: intake, dispatcher and worker, stopped by SIGTERM.
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let (mut child, output) = app.spawn_child_with_output(
        &["run", "--no-migrate"],
        &[("CONVEYOR_PRODUCER__LISTEN", format!("127.0.0.1:{port}"))],
    );
    app.wait_ready(&base).await;
    app.wait_for_state(&waiting, "completed").await;
    app.wait_for_state(&failed, "dead").await;
    let id = app
        .client
        .post(format!("{base}/v1/jobs"))
        .json(&noop())
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_state(&id, "completed").await;
    common::terminate(&child);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the process stops within a minute")
        .unwrap();
    let lines = output.finished().await;

    assert!(status.success(), "SIGTERM exits 0, got {status}");
    assert!(
        lines.iter().any(|l| l.contains("worker stopped")),
        "the log was collected: {lines:?}"
    );
    let errors: Vec<&String> = lines.iter().filter(|l| common::is_error_log(l)).collect();
    assert!(
        errors.is_empty(),
        "a clean run and shutdown logged errors: {errors:?}"
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_due_listener_wakes_when_work_becomes_due_and_reports_a_lost_connection() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let later = app
        .enqueue(json!({"kind": "noop", "delay_ms": 600_000}))
        .await;
    let mut listener = store::DueListener::connect(&app.store).await.unwrap();
    assert_eq!(
        listener.wait(Duration::from_millis(200)).await.unwrap(),
        store::Wake::TimedOut,
        "nothing became due"
    );

    let (ok, _, stderr) = app.cli(&["jobs", "retry", &later]).await;
    assert!(ok, "jobs retry failed: {stderr}");
    assert_eq!(
        listener.wait(Duration::from_secs(30)).await.unwrap(),
        store::Wake::Notified
    );

    common::admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{}' AND query LIKE 'LISTEN%'",
        app.database_name()
    ))
    .await;
    let after = listener.wait(Duration::from_secs(30)).await;
    assert!(
        matches!(after, Ok(store::Wake::Lost) | Err(_)),
        "a terminated listening connection is reported, got {after:?}"
    );
    // It holds one of the pool's connections, which teardown waits for.
    drop(listener);
    app.teardown().await;
}
