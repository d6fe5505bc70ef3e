//! Retries, backoff, snooze, scheduling and cancellation, end to end.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{spawn_app, spawn_app_with};
use conveyor::app::Roles;
use serde_json::json;
use sqlx::Row;

#[tokio::test]
async fn a_job_failing_twice_then_succeeding_has_three_attempts_with_growing_delays() {
    let app = spawn_app().await;

    let id = app
        .enqueue(json!({"kind": "test.flaky", "args": {"failures": 2}}))
        .await;
    let job = app.wait_for_state(&id, "completed").await;

    assert_eq!(job["attempt"], 3);
    assert_eq!(job["result"]["succeeded_on_attempt"], 3);
    let rows = sqlx::query("SELECT attempt, outcome, finished_at, retry_at FROM job_attempts WHERE job_id = $1::uuid ORDER BY id")
        .bind(&id)
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    let outcomes: Vec<String> = rows.iter().map(|r| r.get("outcome")).collect();
    assert_eq!(outcomes, ["retry", "retry", "completed"]);
    // test.flaky backs off from 200 ms: the first delay is in [100, 200] ms, the second in
    // [200, 400] ms, and the job never ran before its retry time.
    let delay = |i: usize| {
        let finished: DateTime<Utc> = rows[i].get("finished_at");
        let retry_at: DateTime<Utc> = rows[i].get("retry_at");
        (retry_at - finished).num_milliseconds()
    };
    let (first, second) = (delay(0), delay(1));
    assert!((90..=210).contains(&first), "first delay {first} ms");
    assert!((190..=410).contains(&second), "second delay {second} ms");
    assert!(second >= first, "delays grew: {first} ms then {second} ms");
    let attempts = app
        .store
        .attempts(jobs::JobId(id.parse().unwrap()))
        .await
        .unwrap();
    for pair in attempts.windows(2) {
        assert!(
            pair[1].started_at >= pair[0].retry_at.unwrap(),
            "ran before its retry time"
        );
    }
    app.teardown().await;
}

#[tokio::test]
async fn a_panic_and_a_timeout_are_failed_attempts_with_clear_errors() {
    let app = spawn_app().await;

    let panicking = app.enqueue(json!({"kind": "test.panic", "args": {}})).await;
    let slow = app
        .enqueue(json!({"kind": "test.sleep", "args": {"ms": 5_000}, "timeout_ms": 200, "max_attempts": 1}))
        .await;

    let panicked = app.wait_for_state(&panicking, "dead").await;
    let timed_out = app.wait_for_state(&slow, "dead").await;
    let attempts = app.attempts(&panicking).await;
    assert_eq!(
        attempts.len(),
        2,
        "test.panic allows two attempts: {attempts:?}"
    );
    assert!(
        attempts[0]
            .2
            .as_deref()
            .unwrap()
            .contains("panicked: test.panic asked to panic")
    );
    assert!(
        panicked["last_error"]
            .as_str()
            .unwrap()
            .contains("panicked")
    );
    assert!(
        timed_out["last_error"]
            .as_str()
            .unwrap()
            .starts_with("timed out after 200ms"),
        "{timed_out}"
    );
    // The worker survived both: a new job still completes.
    let after = app.enqueue(common::noop()).await;
    app.wait_for_state(&after, "completed").await;
    app.teardown().await;
}

#[tokio::test]
async fn a_permanent_failure_is_dead_at_once() {
    let app = spawn_app().await;

    let id = app
        .enqueue(json!({"kind": "test.fail", "args": {"message": "card declined"}}))
        .await;
    let job = app.wait_for_state(&id, "dead").await;

    assert_eq!(job["attempt"], 1);
    assert_eq!(job["last_error"], "card declined");
    assert_eq!(
        app.count("SELECT count(*) FROM dead_letters WHERE reason = 'failed'")
            .await,
        1
    );
    app.teardown().await;
}

#[tokio::test]
async fn snooze_does_not_consume_an_attempt() {
    let app = spawn_app().await;

    let id = app
        .enqueue(json!({"kind": "test.snooze", "args": {"times": 2, "ms": 50}, "max_attempts": 1}))
        .await;
    let job = app.wait_for_state(&id, "completed").await;

    assert_eq!(job["attempt"], 1, "{job}");
    assert_eq!(job["result"]["runs"], 3);
    let outcomes: Vec<(i32, String)> = app
        .attempts(&id)
        .await
        .into_iter()
        .map(|(a, o, _)| (a, o))
        .collect();
    assert_eq!(
        outcomes,
        [
            (1, "snoozed".into()),
            (1, "snoozed".into()),
            (1, "completed".into())
        ]
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_scheduled_job_does_not_run_before_run_at() {
    let app = spawn_app().await;

    let delayed = app
        .post_job(&json!({"kind": "noop", "delay_ms": 1_200}))
        .await;
    assert_eq!(delayed.status(), 202);
    let delayed: serde_json::Value = delayed.json().await.unwrap();
    assert_eq!(delayed["state"], "scheduled");
    let at = (Utc::now() + chrono::Duration::milliseconds(800)).to_rfc3339();
    let timed = app.enqueue(json!({"kind": "noop", "run_at": at})).await;
    let delayed = delayed["id"].as_str().unwrap().to_owned();

    assert_eq!(app.state_of(&delayed).await, "scheduled");
    for id in [&delayed, &timed] {
        let job = app.wait_for_state(id, "completed").await;
        let run_at: DateTime<Utc> = job["run_at"].as_str().unwrap().parse().unwrap();
        let started: DateTime<Utc> = job["started_at"].as_str().unwrap().parse().unwrap();
        assert!(
            started >= run_at,
            "job {id} started {started} before its run_at {run_at}"
        );
    }
    app.teardown().await;
}

#[tokio::test]
async fn a_cancelled_scheduled_job_never_runs() {
    let app = spawn_app().await;
    let id = app.enqueue(json!({"kind": "noop", "delay_ms": 600})).await;

    let response = app
        .client
        .post(format!("{}/v1/jobs/{id}/cancel", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["state"], "cancelled");

    // A job scheduled after it has run (so the dispatcher has passed the cancelled one).
    let later = app.enqueue(json!({"kind": "noop", "delay_ms": 900})).await;
    app.wait_for_state(&later, "completed").await;
    assert_eq!(app.state_of(&id).await, "cancelled");
    assert!(app.attempts(&id).await.is_empty(), "a cancelled job ran");
    let again = app
        .client
        .post(format!("{}/v1/jobs/{id}/cancel", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    app.teardown().await;
}

#[tokio::test]
async fn a_cancelled_running_job_is_not_retried() {
    let app = spawn_app().await;
    let id = app
        .enqueue(json!({"kind": "test.sleep", "args": {"ms": 800, "fail": true}}))
        .await;
    app.wait_for_state(&id, "running").await;

    let response = app
        .client
        .post(format!("{}/v1/jobs/{id}/cancel", app.address))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 202);
    let job = app.wait_for_state(&id, "cancelled").await;
    assert_eq!(job["attempt"], 1);
    assert_eq!(app.attempts(&id).await.len(), 1);
    app.teardown().await;
}

#[tokio::test]
async fn jobs_retry_runs_a_waiting_retry_now() {
    let app = spawn_app_with(|_| {}, Roles::ALL).await;
    // Fails once, then waits ~100-200 ms; `jobs retry` pulls it forward (harmless either way),
    // and a cancelled job is revived with a fresh budget.
    let cancelled = app
        .enqueue(json!({"kind": "noop", "delay_ms": 60_000}))
        .await;
    let (ok, _, stderr) = app.cli(&["jobs", "cancel", &cancelled]).await;
    assert!(ok, "{stderr}");
    assert_eq!(app.state_of(&cancelled).await, "cancelled");

    let (ok, stdout, stderr) = app.cli(&["jobs", "retry", &cancelled, "--by", "ops"]).await;

    assert!(ok, "{stderr}");
    assert!(stdout.contains("scheduled to run now"));
    let job = app.wait_for_state(&cancelled, "completed").await;
    assert_eq!(job["replay_count"], 1);
    let (ok, _, stderr) = app.cli(&["jobs", "retry", &cancelled]).await;
    assert!(!ok, "retrying a completed job must fail");
    assert!(stderr.contains("completed"), "{stderr}");
    let (ok, _, stderr) = app.cli(&["jobs", "show", "not-a-uuid"]).await;
    assert!(!ok);
    assert!(stderr.contains("not a job"), "{stderr}");
    tokio::time::timeout(Duration::from_secs(1), async {})
        .await
        .unwrap();
    app.teardown().await;
}
