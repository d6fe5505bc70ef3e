//! Schedules end to end: one job per slot with several dispatchers in several
//! processes, catch-up after an outage, overlap, validation (API and configuration),
//! a schedule removed from the configuration, and the `schedules` commands.

mod common;

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use common::{TestApp, error_fields, spawn_app_with};
use conveyor::app::{self, Roles};
use jobs::schedule::ScheduleSpec;
use serde_json::{Value, json};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

impl TestApp {
    async fn post_schedule(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/schedules", self.address))
            .json(body)
            .send()
            .await
            .expect("intake answers")
    }

    /// Creates a schedule over the API, asserting 201.
    async fn create_schedule(&self, body: Value) -> Value {
        let response = self.post_schedule(&body).await;
        let status = response.status();
        let json: Value = response.json().await.expect("json body");
        assert_eq!(status, 201, "create failed: {json}");
        json
    }

    async fn schedule_row(&self, name: &str) -> store::ScheduleRecord {
        self.store
            .get_schedule(name)
            .await
            .expect("the store answers")
            .unwrap_or_else(|| panic!("no schedule {name}"))
    }

    /// Waits (bounded) until the schedule has handled (fired, missed or skipped) at
    /// least `n` slots; returns its row.
    async fn wait_for_slots(&self, name: &str, n: u64, limit: Duration) -> store::ScheduleRecord {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let row = self.schedule_row(name).await;
            if row.fired + row.missed + row.skipped_overlap >= n {
                return row;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "schedule {name} handled {} slot(s), expected {n} within {limit:?}: {row:?}",
                row.fired + row.missed + row.skipped_overlap
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// (slot, idempotency key, state) of the schedule's jobs, oldest first.
    async fn schedule_jobs(&self, name: &str) -> Vec<(String, String, String)> {
        sqlx::query(
            "SELECT schedule_slot, idempotency_key, state FROM jobs WHERE schedule_name = $1 \
             ORDER BY schedule_slot",
        )
        .bind(name)
        .fetch_all(self.store.pool())
        .await
        .expect("jobs query")
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    }

    /// Pretends every dispatcher was down since `cursor`: the schedule's slots after it
    /// are due now.
    async fn set_cursor(&self, name: &str, cursor: DateTime<Utc>) {
        sqlx::query("UPDATE schedules SET cursor = $2, next_slot = now() WHERE name = $1")
            .bind(name)
            .bind(cursor)
            .execute(self.store.pool())
            .await
            .expect("cursor update");
    }
}

/// A daily expression whose slot is about twelve hours away from now, so no slot comes
/// or goes while a test runs.
fn daily_far_from_now() -> String {
    format!("0 {} * * *", (Utc::now().hour() + 12) % 24)
}

fn slot_time(label: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(label)
        .expect("a slot label is RFC 3339")
        .with_timezone(&Utc)
}

#[tokio::test]
async fn two_concurrent_fires_of_the_same_slots_make_one_job_each() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    app.create_schedule(json!({
        "name": "report", "cron": daily_far_from_now(), "kind": "noop", "catch_up": "all"
    }))
    .await;
    // Three daily slots are due.
    app.set_cursor(
        "report",
        Utc::now() - chrono::Duration::hours(72) + chrono::Duration::minutes(30),
    )
    .await;

    let grace = Duration::from_secs(60);
    let (a, b) = tokio::join!(
        app.store.fire_schedule("report", grace),
        app.store.fire_schedule("report", grace)
    );
    let fired: usize = [a.unwrap(), b.unwrap()]
        .iter()
        .flatten()
        .map(|f| f.fired.len())
        .sum();

    assert_eq!(fired, 3, "the two fires took three slots between them");
    let jobs = app.schedule_jobs("report").await;
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    let row = app.schedule_row("report").await;
    assert_eq!((row.fired, row.missed), (3, 0));
    // A third fire finds nothing due.
    assert!(
        app.store
            .fire_schedule("report", grace)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(app.schedule_jobs("report").await.len(), 3);
    // A cursor set back over fired slots fires nothing twice: the slots' keys hold.
    app.set_cursor(
        "report",
        Utc::now() - chrono::Duration::hours(72) + chrono::Duration::minutes(30),
    )
    .await;
    let again = app
        .store
        .fire_schedule("report", grace)
        .await
        .unwrap()
        .unwrap();
    assert!(again.fired.is_empty(), "{again:?}");
    assert_eq!(app.schedule_jobs("report").await.len(), 3);
    app.teardown().await;
}

#[tokio::test]
async fn after_five_missed_slots_catch_up_none_latest_all_fire_0_1_5_jobs() {
    let app = spawn_app_with(|_| {}, Roles::ALL).await;
    let cron = daily_far_from_now();
    for policy in ["none", "latest", "all"] {
        app.create_schedule(json!({
            "name": format!("report-{policy}"), "cron": cron, "kind": "noop", "catch_up": policy
        }))
        .await;
    }
    // The dispatchers "were down" for five daily slots.
    let down_since = Utc::now() - chrono::Duration::days(5) + chrono::Duration::hours(6);
    for policy in ["none", "latest", "all"] {
        app.set_cursor(&format!("report-{policy}"), down_since)
            .await;
    }

    for (policy, jobs) in [("none", 0), ("latest", 1), ("all", 5)] {
        let name = format!("report-{policy}");
        let row = app.wait_for_slots(&name, 5, Duration::from_secs(30)).await;
        assert_eq!(row.fired, jobs, "{policy}: {row:?}");
        assert_eq!(row.missed, 5 - jobs, "{policy}: {row:?}");
        let fired = app.schedule_jobs(&name).await;
        assert_eq!(fired.len() as u64, jobs, "{policy}: {fired:?}");
        for (slot, key, _) in &fired {
            assert_eq!(key, &format!("schedule:{name}:{slot}"));
            assert!(slot_time(slot) < Utc::now());
        }
    }
    // Each missed or fired slot is counted for Prometheus too.
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (policy, result, n) in [
        ("none", "missed", 5),
        ("latest", "missed", 4),
        ("latest", "fired", 1),
        ("all", "fired", 5),
    ] {
        let line = format!(
            "conveyor_schedule_slots_total{{schedule=\"report-{policy}\",result=\"{result}\"}} {n}"
        );
        assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    }
    // `latest` fired the most recent missed slot, and its job runs like any other and
    // says which slot fired it.
    let (slot, _, _) = app.schedule_jobs("report-latest").await.remove(0);
    let newest = app.schedule_jobs("report-all").await.pop().unwrap().0;
    assert_eq!(slot, newest);
    let id: String =
        sqlx::query_scalar("SELECT id::text FROM jobs WHERE schedule_name = 'report-latest'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    let job = app.wait_for_state(&id, "completed").await;
    assert_eq!(
        job["fired_by"],
        json!({"schedule": "report-latest", "slot": slot})
    );
    let show = app.cli_json(&["jobs", "show", &id, "--json"]).await;
    assert_eq!(show["job"]["fired_by"]["schedule"], "report-latest");
    let (ok, text, _) = app.cli(&["jobs", "show", &id]).await;
    assert!(
        ok && text.contains(&format!("fired by     report-latest for {slot}")),
        "{text}"
    );
    app.teardown().await;
}

#[tokio::test]
async fn three_dispatchers_in_three_processes_fire_each_second_once_even_when_one_is_killed() {
    // This process serves the API only; three `conveyor worker` processes dispatch.
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let mut children: Vec<tokio::process::Child> = (0..3)
        .map(|_| app.spawn_child(&["worker", "--queues", "default=4"], &[]))
        .collect();
    app.wait_until_consuming("default").await;
    app.create_schedule(json!({
        "name": "tick", "cron": "* * * * * *", "kind": "noop", "catch_up": "all"
    }))
    .await;

    app.wait_for_slots("tick", 5, Duration::from_secs(60)).await;
    children[0].start_kill().expect("the child can be killed");
    children[0]
        .wait()
        .await
        .expect("the killed child is reaped");
    let row = app
        .wait_for_slots("tick", 10, Duration::from_secs(60))
        .await;
    let client = reqwest::Client::new();
    let paused = client
        .post(format!("{}/v1/schedules/tick/pause", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);

    let row_after = app.schedule_row("tick").await;
    assert!(row_after.fired >= row.fired);
    assert_eq!(row_after.missed, 0, "{row_after:?}");
    let jobs = app.schedule_jobs("tick").await;
    assert_eq!(jobs.len() as u64, row_after.fired, "one job per fired slot");
    let seconds: Vec<i64> = jobs
        .iter()
        .map(|(s, _, _)| slot_time(s).timestamp())
        .collect();
    for pair in seconds.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            1,
            "no slot missed, none doubled: {seconds:?}"
        );
    }
    // Every job runs (one the killed worker held is rescued).
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM jobs WHERE schedule_name = 'tick'")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    for id in &ids {
        app.wait_for_state(id, "completed").await;
    }
    for child in &mut children {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    app.teardown().await;
}

#[tokio::test]
async fn overlap_skip_skips_slots_while_the_previous_run_is_running_and_fires_after() {
    let app = spawn_app_with(|_| {}, Roles::ALL).await;
    app.create_schedule(json!({
        "name": "slow", "cron": "* * * * * *", "kind": "test.sleep", "args": {"ms": 2500},
        "overlap": "skip"
    }))
    .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let row = loop {
        let row = app.schedule_row("slow").await;
        if row.fired >= 2 && row.skipped_overlap >= 1 {
            break row;
        }
        assert!(tokio::time::Instant::now() < deadline, "{row:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    app.client
        .post(format!("{}/v1/schedules/slow/pause", app.address))
        .send()
        .await
        .unwrap();

    assert!(row.skipped_overlap >= 1);
    // No two runs overlapped: each started after the previous one finished.
    let runs = sqlx::query(
        "SELECT started_at, finished_at FROM jobs WHERE schedule_name = 'slow' \
         AND started_at IS NOT NULL ORDER BY started_at",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert!(runs.len() >= 2);
    for pair in runs.windows(2) {
        let finished: Option<DateTime<Utc>> = pair[0].get("finished_at");
        let next_started: DateTime<Utc> = pair[1].get("started_at");
        assert!(
            finished.is_some_and(|f| f <= next_started),
            "runs overlapped"
        );
    }
    app.teardown().await;
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one table of bad schedules, each with the field it must name"
)]
async fn a_bad_schedule_is_a_422_naming_each_field_and_stores_nothing() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;

    let response = app
        .post_schedule(&json!({
            "name": "nightly", "cron": "0 25 * * *", "kind": "nope", "timezone": "Mars/Olympus"
        }))
        .await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_fields(&body), ["cron", "timezone", "kind"]);

    let response = app
        .post_schedule(&json!({
            "name": "mail", "cron": "@daily", "kind": "email.send", "args": {"to": 5}
        }))
        .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert!(error_fields(&body)[0].starts_with("args"), "{body}");

    let response = app
        .post_schedule(&json!({"name": "x", "cron": "@daily", "kind": "noop", "every": 5}))
        .await;
    assert_eq!(response.status(), 422);

    let listed: Value = app
        .client
        .get(format!("{}/v1/schedules", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["schedules"], json!([]), "nothing was written");

    // A good one; then a bad change is refused and changes nothing.
    app.create_schedule(json!({"name": "tick", "cron": "*/5 * * * *", "kind": "noop"}))
        .await;
    let response = app
        .client
        .patch(format!("{}/v1/schedules/tick", app.address))
        .json(&json!({"timezone": "Nowhere"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_fields(&body), ["timezone"]);
    assert_eq!(app.schedule_row("tick").await.timezone, "UTC");
    let response = app
        .client
        .patch(format!("{}/v1/schedules/tick", app.address))
        .json(&json!({"timezone": "Europe/Berlin", "overlap": "skip"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["timezone"].as_str(), body["overlap"].as_str()),
        (Some("Europe/Berlin"), Some("skip"))
    );

    // Taken name; unknown name; delete.
    let response = app
        .post_schedule(&json!({"name": "tick", "cron": "@daily", "kind": "noop"}))
        .await;
    assert_eq!(response.status(), 409);
    let missing = app
        .client
        .get(format!("{}/v1/schedules/nope", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    for action in ["pause", "resume", "trigger"] {
        let response = app
            .client
            .post(format!("{}/v1/schedules/nope/{action}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{action}");
    }
    let deleted = app
        .client
        .delete(format!("{}/v1/schedules/tick", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert!(app.store.get_schedule("tick").await.unwrap().is_none());
    let openapi: Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/schedules",
        "/v1/schedules/{name}",
        "/v1/schedules/{name}/pause",
        "/v1/schedules/{name}/resume",
        "/v1/schedules/{name}/trigger",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path} is documented");
    }
    app.teardown().await;
}

#[tokio::test]
async fn a_bad_configured_schedule_stops_start_up_naming_the_schedule_and_field() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let dir = std::env::temp_dir().join(format!("conveyor-sched-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("conveyor.toml");
    std::fs::write(
        &file,
        "[[schedules]]\nname = \"good\"\ncron = \"0 2 * * *\"\nkind = \"noop\"\n\n\
         [[schedules]]\nname = \"nightly-report\"\ncron = \"0 2 * * *\"\nkind = \"noop\"\n\
         timezone = \"Europe/Berln\"\n",
    )
    .unwrap();

    let (ok, _, stderr) = app
        .cli(&["--config", file.to_str().unwrap(), "worker"])
        .await;

    assert!(!ok, "start-up must fail");
    assert!(
        stderr.contains("`schedules[1].timezone` (schedule \"nightly-report\")"),
        "{stderr}"
    );
    assert!(
        app.store.list_schedules().await.unwrap().is_empty(),
        "nothing half-written"
    );
    std::fs::remove_dir_all(&dir).ok();
    app.teardown().await;
}

fn spec(name: &str, cron: &str) -> ScheduleSpec {
    serde_json::from_value(json!({
        "name": name, "cron": cron, "kind": "noop", "timezone": "Europe/Berlin"
    }))
    .unwrap()
}

#[tokio::test]
async fn a_schedule_removed_from_the_configuration_is_disabled_not_deleted_and_the_cli_shows_it() {
    let app = spawn_app_with(
        |s| s.schedules = vec![spec("nightly", "0 2 * * *"), spec("cleanup", "*/5 * * * *")],
        Roles::INTAKE,
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.store.list_schedules().await.unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "configured schedules never written"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // History: one run of `cleanup`, fired by hand.
    let (ok, out, err) = app.cli(&["schedules", "trigger", "cleanup"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("fired cleanup now"), "{out}");
    // Configured schedules are changed in the file, not over the API.
    let response = app
        .client
        .delete(format!("{}/v1/schedules/cleanup", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);

    // Restart with `cleanup` removed from the configuration.
    let mut settings = app.settings.clone();
    settings.schedules = vec![spec("nightly", "0 2 * * *")];
    let token = CancellationToken::new();
    let restarted = app::start(settings, Roles::INTAKE, token.clone())
        .await
        .expect("restarts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.schedule_row("cleanup").await.enabled {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cleanup never disabled"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(app.schedule_row("nightly").await.enabled);
    assert_eq!(
        app.schedule_jobs("cleanup").await.len(),
        1,
        "its history stays"
    );

    let (ok, list, err) = app.cli(&["schedules", "list"]).await;
    assert!(ok, "{err}");
    let cleanup = list
        .lines()
        .find(|l| l.starts_with("cleanup"))
        .expect(&list);
    assert!(cleanup.contains("disabled"), "{list}");
    let nightly = list
        .lines()
        .find(|l| l.starts_with("nightly"))
        .expect(&list);
    assert!(
        nightly.contains("active") && nightly.contains("Europe/Berlin"),
        "{list}"
    );

    let shown = app
        .cli_json(&["schedules", "show", "cleanup", "--json"])
        .await;
    assert_eq!(shown["schedule"]["state"], "disabled");
    assert_eq!(shown["recent_jobs"].as_array().unwrap().len(), 1);

    let (ok, preview, err) = app
        .cli(&["schedules", "preview", "nightly", "--count", "3"])
        .await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = preview.lines().collect();
    assert_eq!(lines.len(), 3, "{preview}");
    for line in &lines {
        assert!(line.contains("T02:00:00+0"), "{preview}");
    }

    let (ok, _, _) = app.cli(&["schedules", "pause", "nightly"]).await;
    assert!(ok);
    assert!(app.schedule_row("nightly").await.paused);
    let (ok, out, _) = app.cli(&["schedules", "resume", "nightly"]).await;
    assert!(ok && out.contains("resumed nightly"), "{out}");
    assert!(!app.schedule_row("nightly").await.paused);
    let (ok, _, err) = app.cli(&["schedules", "show", "nope"]).await;
    assert!(!ok && err.contains("no schedule named \"nope\""), "{err}");

    token.cancel();
    restarted.wait().await.expect("stops cleanly");
    app.teardown().await;
}
