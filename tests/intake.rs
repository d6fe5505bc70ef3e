//! Bad input at the intake: a clear 4xx naming the problem, and nothing stored or
//! published.

mod common;

use common::spawn_app_with;
use conveyor::app::Roles;
use serde_json::{Value, json};

/// Intake only, so a message that slipped through would sit in the queue.
async fn intake() -> common::TestApp {
    spawn_app_with(|_| {}, Roles::INTAKE).await
}

async fn assert_nothing_stored(app: &common::TestApp) {
    assert_eq!(
        app.count("SELECT count(*) FROM jobs").await,
        0,
        "a rejected request stored a job"
    );
    // The intake declares a queue only when it publishes to it.
    assert_eq!(
        app.queue_depth("default").await,
        None,
        "a rejected request published a message"
    );
}

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    body
}

#[tokio::test]
async fn an_unknown_kind_is_422_naming_kind() {
    let app = intake().await;

    let body = problem(
        app.post_job(&json!({"kind": "no.such.kind", "args": {}}))
            .await,
        422,
    )
    .await;

    assert_eq!(body["errors"][0]["field"], "kind");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no.such.kind")
    );
    assert_nothing_stored(&app).await;
    app.teardown().await;
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = intake().await;

    let body = problem(
        app.post_raw(Some("application/json"), "{\"kind\": \"noop\",")
            .await,
        400,
    )
    .await;

    assert!(body["detail"].as_str().unwrap().contains("not valid JSON"));
    assert_nothing_stored(&app).await;
    app.teardown().await;
}

#[tokio::test]
async fn a_wrong_content_type_is_415() {
    let app = intake().await;

    problem(
        app.post_raw(Some("text/plain"), json!({"kind": "noop"}).to_string())
            .await,
        415,
    )
    .await;
    problem(
        app.post_raw(None, json!({"kind": "noop"}).to_string())
            .await,
        415,
    )
    .await;

    assert_nothing_stored(&app).await;
    app.teardown().await;
}

#[tokio::test]
async fn invalid_args_are_422_naming_the_field_path() {
    let app = intake().await;

    let not_object = problem(
        app.post_job(&json!({"kind": "noop", "args": [1, 2]})).await,
        422,
    )
    .await;
    let bad_field = problem(
        app.post_job(&json!({"kind": "test.sleep", "args": {"ms": "soon"}}))
            .await,
        422,
    )
    .await;
    let missing = problem(
        app.post_job(&json!({"kind": "test.sleep", "args": {}}))
            .await,
        422,
    )
    .await;
    let rule = problem(
        app.post_job(&json!({"kind": "test.sleep", "args": {"ms": 999_999_999}}))
            .await,
        422,
    )
    .await;

    assert_eq!(not_object["errors"][0]["field"], "args");
    assert_eq!(bad_field["errors"][0]["field"], "args.ms");
    assert_eq!(missing["errors"][0]["field"], "args.ms");
    assert_eq!(missing["errors"][0]["message"], "is required");
    assert_eq!(rule["errors"][0]["field"], "args.ms");
    assert_nothing_stored(&app).await;
    app.teardown().await;
}

#[tokio::test]
async fn unknown_fields_and_bad_options_are_422_naming_each() {
    let app = intake().await;

    let unknown = problem(
        app.post_job(&json!({"kind": "noop", "priority": 1})).await,
        422,
    )
    .await;
    let options = problem(
        app.post_job(&json!({"kind": "noop", "queue": "Not A Queue", "max_attempts": 0, "delay_ms": 5, "run_at": "2030-01-01T00:00:00Z"}))
            .await,
        422,
    )
    .await;
    let kind_type = problem(app.post_job(&json!({"kind": 7})).await, 422).await;
    let missing_kind = problem(app.post_job(&json!({"args": {}})).await, 422).await;

    assert!(
        unknown["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("priority"),
        "{unknown}"
    );
    let fields = common::error_fields(&options);
    assert_eq!(fields, ["queue", "max_attempts", "delay_ms"]);
    assert_eq!(kind_type["errors"][0]["field"], "kind");
    assert_eq!(missing_kind["errors"][0]["field"], "kind");
    assert_nothing_stored(&app).await;
    app.teardown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_problem_json() {
    let app = intake().await;

    let route = app
        .client
        .get(format!("{}/v2/nothing", app.address))
        .send()
        .await
        .unwrap();
    let method = app
        .client
        .delete(format!("{}/v1/jobs", app.address))
        .send()
        .await
        .unwrap();

    problem(route, 404).await;
    problem(method, 405).await;
    app.teardown().await;
}

#[tokio::test]
async fn a_nul_character_in_args_is_422_naming_it_and_concurrent_requests_are_unaffected() {
    let app = intake().await;
    let good = json!({"kind": "noop", "args": {"note": "fine"}});
    let bad = json!({"kind": "noop", "args": {"items": [{"note": "a\u{0}b"}]}});
    // Sent together, so the intake writes them with one grouped insert.
    let responses = futures_util::future::join_all(
        (0..20).map(|i| app.post_job(if i == 7 { &bad } else { &good })),
    )
    .await;
    let mut statuses = Vec::new();
    for (i, response) in responses.into_iter().enumerate() {
        if i == 7 {
            let body = problem(response, 422).await;
            assert_eq!(body["errors"][0]["field"], "args.items[0].note");
            assert!(
                body["errors"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("NUL"),
                "{body}"
            );
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    assert_eq!(statuses, vec![202; 19]);
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 19);
    app.teardown().await;
}

#[tokio::test]
async fn a_batch_repeating_an_idempotency_key_stores_one_job_or_is_409_and_stores_none() {
    let app = intake().await;
    let job = |n: u32| json!({"kind": "noop", "args": {"n": n}, "idempotency_key": "batch-key"});
    let same = app
        .client
        .post(format!("{}/v1/jobs/batch", app.address))
        .json(&json!({"jobs": [job(1), {"kind": "noop"}, job(1)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 202);
    let body: Value = same.json().await.unwrap();
    let ids = body["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], ids[2], "one key, one job: {body}");
    assert_ne!(ids[0], ids[1]);
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 2);

    let conflicting = app
        .client
        .post(format!("{}/v1/jobs/batch", app.address))
        .json(&json!({"jobs": [
            {"kind": "noop", "idempotency_key": "fresh"},
            job(1),
            job(2),
        ]}))
        .send()
        .await
        .unwrap();
    problem(conflicting, 409).await;
    assert_eq!(
        app.count("SELECT count(*) FROM jobs").await,
        2,
        "a batch with a conflict stores none of its jobs"
    );
    app.teardown().await;
}
