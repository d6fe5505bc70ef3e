//! Dead letters: what cannot run is kept, listed, shown and replayed — never dropped.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{spawn_app, spawn_app_with};
use conveyor::app::Roles;
use serde_json::{Value, json};

#[tokio::test]
async fn an_exhausted_job_is_listed_dead_and_replay_completes_it_keeping_history() {
    let app = spawn_app().await;
    let id = app
        .enqueue(json!({"kind": "test.flaky", "args": {"failures": 2}, "max_attempts": 2}))
        .await;
    app.wait_for_state(&id, "dead").await;

    let listed = app.cli_json(&["dead", "list", "--json"]).await;
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["job_id"] == id.as_str())
        .expect("the dead job is listed");
    assert_eq!(entry["reason"], "attempts_exhausted");
    assert_eq!(entry["attempts"], 2);
    let shown = app.cli_json(&["dead", "show", &id, "--json"]).await;
    assert_eq!(shown["attempts_history"].as_array().unwrap().len(), 2);
    assert_eq!(shown["payload"], json!({"failures": 2}));

    let replay = app
        .cli_json(&["dead", "replay", &id, "--by", "alice", "--json"])
        .await;

    assert_eq!(replay["replayed"], 1);
    let job = app.wait_for_state(&id, "completed").await;
    assert_eq!(job["attempt"], 3);
    assert_eq!(job["replay_count"], 1);
    let outcomes: Vec<String> = app
        .attempts(&id)
        .await
        .into_iter()
        .map(|(_, o, _)| o)
        .collect();
    assert_eq!(outcomes, ["retry", "failed", "completed"], "history kept");
    let record = app
        .store
        .get_job(jobs::JobId(id.parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.replayed_by.as_deref(), Some("alice"));
    assert!(
        app.cli_json(&["dead", "list", "--json"])
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    // A second replay of the same id finds nothing to do.
    let again = app.cli_json(&["dead", "replay", &id, "--json"]).await;
    assert_eq!(again["replayed"], 0);
    assert_eq!(again["skipped"], 1);
    app.teardown().await;
}

#[tokio::test]
async fn garbage_and_unknown_kinds_on_the_queue_are_dead_letters_and_workers_carry_on() {
    let app = spawn_app().await;

    app.publish_raw("default", b"\xff\xfe this is not json")
        .await;
    let unknown = json!({"id": uuid::Uuid::now_v7(), "kind": "mystery.kind", "queue": "default", "args": {}, "enqueued_at": "2026-01-01T00:00:00Z"});
    app.publish_raw("default", unknown.to_string().as_bytes())
        .await;
    let orphan = json!({"id": uuid::Uuid::now_v7(), "kind": "noop", "queue": "default", "args": {}, "enqueued_at": "2026-01-01T00:00:00Z"});
    app.publish_raw("default", orphan.to_string().as_bytes())
        .await;

    app.wait_for_count(
        "SELECT count(*) FROM dead_letters",
        3,
        Duration::from_secs(30),
    )
    .await;
    let listed = app.cli_json(&["dead", "list", "--json"]).await;
    let reasons: BTreeSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["no_such_job", "undecodable", "unknown_kind"])
    );
    let raw = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["reason"] == "undecodable")
        .unwrap();
    let shown = app
        .cli_json(&["dead", "show", raw["id"].as_str().unwrap(), "--json"])
        .await;
    assert!(
        shown["payload"]
            .as_str()
            .unwrap()
            .contains("this is not json"),
        "raw payload kept: {shown}"
    );
    assert_eq!(shown["queue"], "default");
    // The workers are unharmed.
    let id = app.enqueue(common::noop()).await;
    app.wait_for_state(&id, "completed").await;
    app.teardown().await;
}

#[tokio::test]
async fn an_unknown_kind_with_a_job_row_is_dead_with_its_reason() {
    // The intake knows test kinds; a worker that does not is a different deployment.
    let intake = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let id = intake
        .enqueue(json!({"kind": "test.sleep", "args": {"ms": 1}}))
        .await;
    let settings = intake.settings.clone();
    let worker = spawn_app_with(
        move |s| {
            s.namespace = settings.namespace.clone();
            s.database.url = settings.database.url.clone();
            s.worker.test_kinds = false;
        },
        Roles::ALL,
    )
    .await;

    let job = worker.wait_for_state(&id, "dead").await;

    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("unknown job kind"),
        "{job}"
    );
    assert_eq!(
        worker
            .count("SELECT count(*) FROM dead_letters WHERE reason = 'unknown_kind'")
            .await,
        1
    );
    intake.teardown().await;
    worker.teardown().await;
}

#[tokio::test]
async fn dead_list_filters_and_groups_by_error() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for user in ["a@example.com", "b@example.com", "c@example.com"] {
        ids.push(app.enqueue(json!({"kind": "test.fail", "args": {"message": format!("550 5.1.1 <{user}>: mailbox unavailable")}})).await);
    }
    ids.push(
        app.enqueue(
            json!({"kind": "test.fail", "args": {"message": "card 4242424242424242 declined"}}),
        )
        .await,
    );
    for id in &ids {
        app.wait_for_state(id, "dead").await;
    }

    let groups = app
        .cli_json(&["dead", "list", "--group-by", "error", "--json"])
        .await;
    let filtered = app
        .cli_json(&["dead", "list", "--error", "DECLINED", "--json"])
        .await;
    let none = app
        .cli_json(&["dead", "list", "--kind", "noop", "--json"])
        .await;
    let recent = app
        .cli_json(&["dead", "list", "--since", "1h", "--limit", "2", "--json"])
        .await;
    let (ok, table, _) = app.cli(&["dead", "list"]).await;

    assert_eq!(groups[0]["count"], 3, "{groups}");
    assert_eq!(
        groups[0]["fingerprint"],
        "550 5.1.1 <<email>>: mailbox unavailable"
    );
    assert_eq!(groups[1]["count"], 1);
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert!(none.as_array().unwrap().is_empty());
    assert_eq!(recent.as_array().unwrap().len(), 2);
    assert!(ok && table.starts_with("ID"), "{table}");
    let (ok, _, stderr) = app.cli(&["dead", "list", "--since", "last tuesday"]).await;
    assert!(!ok && stderr.contains("--since"), "{stderr}");
    app.teardown().await;
}

#[tokio::test]
async fn replay_with_corrected_args_is_validated_like_intake() {
    let app = spawn_app().await;
    let id = app
        .enqueue(json!({"kind": "test.flaky", "args": {"failures": 5}, "max_attempts": 1}))
        .await;
    app.wait_for_state(&id, "dead").await;
    let dir = std::env::temp_dir().join(format!("conveyor-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    let good = dir.join("good.json");
    std::fs::write(&bad, r#"{"failures": "none"}"#).unwrap();
    std::fs::write(&good, r#"{"failures": 0}"#).unwrap();

    let (ok, _, stderr) = app
        .cli(&["dead", "replay", &id, "--args", bad.to_str().unwrap()])
        .await;
    assert!(!ok, "invalid args must be refused");
    assert!(stderr.contains("args.failures"), "{stderr}");
    assert_eq!(
        app.state_of(&id).await,
        "dead",
        "a refused replay changes nothing"
    );

    let (ok, _, stderr) = app
        .cli(&["dead", "replay", &id, "--args", good.to_str().unwrap()])
        .await;
    assert!(ok, "{stderr}");
    let job = app.wait_for_state(&id, "completed").await;
    assert_eq!(job["args"], json!({"failures": 0}));
    std::fs::remove_dir_all(dir).ok();
    app.teardown().await;
}

#[tokio::test]
async fn purge_asks_unless_yes_and_dry_run_changes_nothing() {
    let app = spawn_app().await;
    let id = app
        .enqueue(json!({"kind": "test.fail", "args": {"message": "nope"}}))
        .await;
    app.wait_for_state(&id, "dead").await;

    let dry = app
        .cli_json(&["dead", "replay", "--all", "--dry-run", "--json"])
        .await;
    assert_eq!(dry["would_replay"].as_array().unwrap().len(), 1);
    assert_eq!(app.state_of(&id).await, "dead");
    let (ok, _, stderr) = app.cli(&["dead", "purge", "--all"]).await;
    assert!(!ok && stderr.contains("--yes"), "{stderr}");
    let (ok, _, stderr) = app.cli(&["dead", "replay"]).await;
    assert!(!ok && stderr.contains("--all"), "{stderr}");

    let purged = app
        .cli_json(&["dead", "purge", "--all", "--yes", "--json"])
        .await;

    assert_eq!(purged["purged"], 1);
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 0);
    app.teardown().await;
}

#[tokio::test]
async fn bulk_replay_of_1000_dead_jobs_with_rate_completes_all_and_none_twice() {
    let app = spawn_app_with(|s| s.worker.concurrency = 64, Roles::ALL).await;
    let bodies = (0..1000)
        .map(|_| json!({"kind": "test.flaky", "args": {"failures": 1}, "max_attempts": 1}))
        .collect();
    let ids = app.enqueue_many(bodies, 32).await;
    app.wait_for_count(
        "SELECT count(*) FROM jobs WHERE state = 'dead'",
        1000,
        Duration::from_secs(120),
    )
    .await;

    // Two operators replay the same set at once.
    let (first, second) = tokio::join!(
        app.cli_json(&[
            "dead",
            "replay",
            "--kind",
            "test.flaky",
            "--rate",
            "2000",
            "--json"
        ]),
        app.cli_json(&[
            "dead",
            "replay",
            "--kind",
            "test.flaky",
            "--rate",
            "2000",
            "--json"
        ]),
    );

    let replayed = first["replayed"].as_u64().unwrap() + second["replayed"].as_u64().unwrap();
    println!(
        "replayed: first {} second {}",
        first["replayed"], second["replayed"]
    );
    assert_eq!(replayed, 1000, "each dead job replayed exactly once");
    app.wait_for_count(
        "SELECT count(*) FROM jobs WHERE state = 'completed'",
        1000,
        Duration::from_secs(120),
    )
    .await;
    let twice = app
        .count("SELECT count(*) FROM (SELECT job_id FROM job_attempts WHERE outcome = 'completed' GROUP BY job_id HAVING count(*) > 1) t")
        .await;
    assert_eq!(twice, 0, "a job completed twice");
    assert_eq!(app.count("SELECT count(*) FROM job_attempts").await, 2000);
    assert_eq!(ids.len(), 1000);
    app.teardown().await;
}

#[tokio::test]
async fn a_message_that_kills_its_worker_every_time_ends_dead_instead_of_looping() {
    // Intake and dispatcher in-process; workers are child processes that the job kills.
    let app = spawn_app_with(
        |s| {
            s.worker.lost_after_ms = 1_000;
        },
        Roles {
            producer: true,
            worker: false,
            dispatcher: true,
        },
    )
    .await;
    let id = app
        .enqueue(json!({"kind": "test.crash", "args": {}, "max_attempts": 2}))
        .await;

    let mut crashes = 0;
    for _ in 0..6 {
        if app.state_of(&id).await == "dead" {
            break;
        }
        let mut child = app
            .command(&["worker", "--no-dispatcher"])
            .env("CONVEYOR_WORKER__HEARTBEAT_INTERVAL_MS", "200")
            .env("CONVEYOR_WORKER__LOST_AFTER_MS", "1000")
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("worker starts");
        // The worker dies on the job, or idles once the job is dead.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(!status.success(), "the worker was killed by the job");
                crashes += 1;
                break;
            }
            if app.state_of(&id).await == "dead" || tokio::time::Instant::now() > deadline {
                child.kill().await.ok();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let job = app.wait_for_state(&id, "dead").await;
    println!("crashes injected: {crashes}; job ended {}", job["state"]);
    assert!(crashes >= 2, "each attempt killed a worker ({crashes})");
    let outcomes: Vec<String> = app
        .attempts(&id)
        .await
        .into_iter()
        .map(|(_, o, _)| o)
        .collect();
    assert_eq!(outcomes, ["lost", "lost"]);
    let listed: Value = app.cli_json(&["dead", "list", "--json"]).await;
    assert_eq!(listed[0]["job_id"], id.as_str());
    app.teardown().await;
}

#[tokio::test]
async fn a_since_ending_in_a_multi_byte_or_control_character_is_a_422_naming_the_field() {
    let app = spawn_app().await;
    // `%C2%80` is U+0080, a control character of two bytes: the age parser used to split
    // it in the middle and panic, and the connection closed without an answer.
    for query in [
        "since=1%C2%80",
        "since=%01%C2%80",
        "until=%C3%A9",
        "since=99999999999999d",
    ] {
        let response = app
            .client
            .get(format!("{}/v1/dead?{query}", app.address))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{query} is answered: {e}"));
        assert_eq!(response.status(), 422, "{query}");
        let field = query.split('=').next().unwrap();
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    app.teardown().await;
}
