//! What operators rely on: metrics that move, stats that match the ledger, traces that
//! link a job to its request, and workers that share load and leave without losing any.

mod common;

use std::time::Duration;

use common::{free_port, spawn_app_with, terminate};
use conveyor::app::Roles;
use serde_json::{Value, json};

/// The value of the sample whose name and labels start with `prefix`.
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_move_as_jobs_flow() {
    // A queue of its own: counters are process-wide, and other tests run alongside.
    let queue = format!("m{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let q = queue.clone();
    let app = spawn_app_with(
        move |s| {
            s.worker.queues.insert(q, 4);
        },
        Roles::ALL,
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.enqueue(json!({"kind": "noop", "queue": queue})).await);
    }
    let failing = app
        .enqueue(json!({"kind": "test.fail", "queue": queue, "args": {"message": "no"}}))
        .await;
    let waiting = app
        .enqueue(json!({"kind": "noop", "queue": queue, "delay_ms": 600_000}))
        .await;
    for id in &ids {
        app.wait_for_state(id, "completed").await;
    }
    app.wait_for_state(&failing, "dead").await;

    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let at = |name: &str, labels: &str| sample(&metrics, &format!("{name}{{{labels}}}"));
    assert_eq!(
        at(
            "conveyor_jobs_accepted_total",
            &format!("kind=\"noop\",queue=\"{queue}\"")
        ),
        Some(4.0),
        "{metrics}"
    );
    assert_eq!(
        at(
            "conveyor_jobs_started_total",
            &format!("kind=\"noop\",queue=\"{queue}\"")
        ),
        Some(3.0)
    );
    assert_eq!(
        at(
            "conveyor_jobs_completed_total",
            &format!("kind=\"noop\",queue=\"{queue}\"")
        ),
        Some(3.0)
    );
    assert_eq!(
        at(
            "conveyor_jobs_dead_total",
            &format!("kind=\"test.fail\",queue=\"{queue}\"")
        ),
        Some(1.0)
    );
    assert!(metrics.contains(&format!(
        "conveyor_job_run_seconds_bucket{{kind=\"noop\",queue=\"{queue}\""
    )));
    assert!(metrics.contains(&format!(
        "conveyor_job_queue_wait_seconds_count{{kind=\"noop\",queue=\"{queue}\""
    )));
    assert_eq!(
        at(
            "conveyor_queue_jobs",
            &format!("queue=\"{queue}\",state=\"dead\"")
        ),
        Some(1.0)
    );
    assert_eq!(
        at(
            "conveyor_queue_jobs",
            &format!("queue=\"{queue}\",state=\"scheduled\"")
        ),
        Some(1.0)
    );
    assert_eq!(
        at(
            "conveyor_queue_jobs",
            &format!("queue=\"{queue}\",state=\"ready\"")
        ),
        Some(0.0)
    );
    assert_eq!(
        at("conveyor_worker_concurrency", &format!("queue=\"{queue}\"")),
        Some(4.0)
    );
    assert!(metrics.contains("conveyor_publish_confirm_seconds"));
    assert_eq!(app.state_of(&waiting).await, "scheduled");
    app.teardown().await;
}

#[tokio::test]
async fn stats_json_matches_the_ledger() {
    let app = spawn_app_with(|_| {}, Roles::ALL).await;
    for _ in 0..3 {
        let id = app.enqueue(common::noop()).await;
        app.wait_for_state(&id, "completed").await;
    }
    let dead = app
        .enqueue(json!({"kind": "test.fail", "args": {"message": "x"}}))
        .await;
    app.wait_for_state(&dead, "dead").await;
    app.enqueue(json!({"kind": "noop", "delay_ms": 600_000}))
        .await;
    app.enqueue(json!({"kind": "noop", "queue": "idle", "args": {}}))
        .await; // nobody consumes "idle"

    let stats = app.cli_json(&["stats", "--json"]).await;

    let row = |queue: &str| {
        stats
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["queue"] == queue)
            .cloned()
            .unwrap_or_else(|| panic!("no {queue} row: {stats}"))
    };
    let default = row("default");
    assert_eq!(
        default["scheduled"],
        app.count("SELECT count(*) FROM jobs WHERE queue = 'default' AND state = 'scheduled'")
            .await
    );
    assert_eq!(default["dead"], 1);
    assert_eq!(default["ready"], 0);
    assert_eq!(default["completed_last_minute"], 3);
    assert_eq!(default["failed_last_minute"], 1);
    assert_eq!(default["consumers"], 1);
    let idle = row("idle");
    assert_eq!(idle["ready"], 1);
    assert_eq!(idle["consumers"], 0);
    assert!(idle["oldest_ready_age_seconds"].as_f64().unwrap() >= 0.0);
    let (ok, table, _) = app.cli(&["stats"]).await;
    assert!(ok && table.starts_with("QUEUE"), "{table}");
    app.teardown().await;
}

#[tokio::test]
async fn a_jobs_traceparent_is_the_parent_of_the_workers_span() {
    let app = spawn_app_with(|_| {}, Roles::NONE).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut command = app.command(&[
        "--log-format",
        "json",
        "run",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    command
        .env("RUST_LOG", "info,worker=debug")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let child = command.spawn().unwrap();
    app.wait_ready(&base).await;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";

    let job = app
        .complete_traced_noop_at(&base, &format!("00-{caller_trace}-{caller_span}-01"))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    terminate(&child);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();

    // The intake continued the caller's trace in a span of its own…
    let stored = jobs::TraceContext::parse(job["traceparent"].as_str().unwrap())
        .expect("a traceparent is stored");
    assert_eq!(stored.trace_id, caller_trace);
    assert_ne!(stored.span_id, caller_span);
    // …and the worker's attempt span is that span's child.
    let logs = String::from_utf8_lossy(&output.stderr);
    let attempt = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "attempt finished" && line["span"]["job_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no attempt log line for {id}:\n{logs}"));
    assert_eq!(attempt["span"]["trace_id"], caller_trace, "{attempt}");
    assert_eq!(
        attempt["span"]["parent_span_id"],
        stored.span_id.as_str(),
        "{attempt}"
    );
    assert_eq!(attempt["span"]["span_id"].as_str().map(str::len), Some(16));
    app.teardown().await;
}

#[tokio::test]
async fn two_worker_processes_share_a_load_and_stopping_one_loses_nothing() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let ops_port = free_port();
    let mut first = app.spawn_child(
        &[
            "worker",
            "--queues",
            "default=4",
            "--listen",
            &format!("127.0.0.1:{ops_port}"),
        ],
        &[],
    );
    let mut second = app.spawn_child(&["worker", "--queues", "default=4"], &[]);
    app.wait_ready(&format!("http://127.0.0.1:{ops_port}"))
        .await;
    app.wait_until_consuming("default").await;
    let bodies = (0..300)
        .map(|_| json!({"kind": "test.sleep", "args": {"ms": 20}}))
        .collect();
    let ids = app.enqueue_many(bodies, 16).await;
    app.wait_for_count(
        "SELECT least(count(*), 60) FROM jobs WHERE state = 'completed'",
        60,
        Duration::from_secs(60),
    )
    .await;
    let ops_metrics = app
        .client
        .get(format!("http://127.0.0.1:{ops_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    terminate(&first);
    assert!(
        first.wait().await.unwrap().success(),
        "the stopped worker exits 0"
    );
    app.wait_for_count(
        "SELECT count(*) FROM jobs WHERE state = 'completed'",
        300,
        Duration::from_secs(120),
    )
    .await;

    let workers = app
        .count("SELECT count(DISTINCT worker_id) FROM job_attempts")
        .await;
    let attempts = app.count("SELECT count(*) FROM job_attempts").await;
    println!(
        "two workers, one stopped mid-load: accepted {}, completed 300, attempts {attempts}, workers used {workers}",
        ids.len()
    );
    assert_eq!(workers, 2, "both workers took part");
    assert_eq!(attempts, 300, "no job ran twice");
    assert!(
        ops_metrics.contains("conveyor_worker_concurrency{queue=\"default\"} 4"),
        "{ops_metrics}"
    );
    terminate(&second);
    assert!(second.wait().await.unwrap().success());
    app.teardown().await;
}

#[tokio::test]
async fn rescuing_an_orphan_counts_in_conveyor_jobs_rescued_total() {
    let app = spawn_app_with(|_| {}, Roles::ALL).await;
    let scrape = || async {
        let metrics = app
            .client
            .get(format!("{}/metrics", app.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        sample(&metrics, "conveyor_jobs_rescued_total ").unwrap_or(0.0)
    };
    // A job held by a worker that no longer exists (it never heartbeat): an orphan.
    let id = app
        .enqueue(json!({"kind": "noop", "delay_ms": 600_000}))
        .await;
    let before = scrape().await;
    sqlx::query(
        "UPDATE jobs SET state = 'running', attempt = 1, worker_id = gen_random_uuid(), \
             started_at = now() - interval '1 hour' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(app.store.pool())
    .await
    .unwrap();

    app.wait_for_state(&id, "completed").await;
    let after = scrape().await;

    assert!(
        after >= before + 1.0,
        "conveyor_jobs_rescued_total moved from {before} to {after}"
    );
    let outcomes: Vec<String> = app
        .attempts(&id)
        .await
        .into_iter()
        .map(|(_, outcome, _)| outcome)
        .collect();
    assert_eq!(outcomes, ["lost", "completed"]);
    app.teardown().await;
}
