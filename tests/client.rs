//! The Rust client (`conveyor-client`) against a running Conveyor with keys configured:
//! every call, the problems it reports, and the transactional enqueue committed and
//! rolled back.

mod common;

use std::time::Duration;

use common::{TestApp, spawn_app_with};
use conveyor::app::Roles;
use conveyor_client::{
    Cancelled, Client, EnqueueOptions, Error, JobRequest, JobState, enqueue_in, enqueue_in_with,
};
use jobs::kinds::noop::Noop;
use jobs::kinds::order::{CustomerArgs, LineArgs, OrderResult, ProcessOrder};
use serde_json::json;

const CATALOG: &str = "sku,name,unit_price_minor,currency,stock
MUG,Blue mug,1250,USD,10
";

/// Every role, with one configured key; the client holds it.
async fn app_and_client() -> (TestApp, Client) {
    let (app, client, _key) = app_client_and_key().await;
    (app, client)
}

/// As [`app_and_client`], and the key for raw requests beside the client.
async fn app_client_and_key() -> (TestApp, Client, String) {
    let (key, hash) = producer::auth::new_key().expect("a key");
    let app = spawn_app_with(move |s| s.producer.api_keys = vec![hash], Roles::ALL).await;
    let client = Client::new(&app.address, key.clone()).expect("a client");
    (app, client, key)
}

fn order(order_id: &str, quantity: i64) -> ProcessOrder {
    ProcessOrder {
        order_id: order_id.into(),
        customer: CustomerArgs {
            email: "ada@example.com".into(),
            name: "Ada Lovelace".into(),
        },
        items: vec![LineArgs {
            sku: "MUG".into(),
            quantity,
        }],
        currency: None,
    }
}

#[tokio::test]
async fn a_typed_order_is_enqueued_waited_for_and_read_back_with_its_result() {
    let (app, client) = app_and_client().await;
    app.seed_products(CATALOG).await;

    let accepted = client.enqueue(order("A-1", 2)).await.unwrap();
    let waited = client
        .wait(accepted.id, Duration::from_secs(30))
        .await
        .unwrap();
    let job = client.get(accepted.id).await.unwrap();

    assert_eq!(accepted.state, JobState::Enqueued);
    assert!(!accepted.existing);
    assert!(waited.is_final, "{:?}", waited.job);
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.kind, "order.process");
    assert_eq!(job.queue, "orders");
    let result: OrderResult = job.result_as().unwrap().expect("a result");
    assert_eq!(result.total_minor, Some(2500));
    app.teardown().await;
}

#[tokio::test]
async fn typed_args_breaking_the_kinds_rules_are_refused_before_anything_is_sent() {
    let (app, client) = app_and_client().await;

    let err = client.enqueue(order("A 1", 0)).await.unwrap_err();

    let Error::Invalid(errors) = &err else {
        panic!("refused locally: {err:?}");
    };
    let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["args.order_id", "args.items[0].quantity"]);
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 0);
    app.teardown().await;
}

#[tokio::test]
async fn the_servers_problem_reaches_the_caller_with_every_field() {
    let (app, client) = app_and_client().await;
    let stranger = Client::new(&app.address, "cvk_not_the_key").unwrap();

    let invalid = client
        .enqueue_raw("order.process", json!({"order_id": "A-1"}))
        .await
        .unwrap_err();
    let unknown = client.enqueue_raw("no.such", json!({})).await.unwrap_err();
    let refused = stranger.enqueue(Noop::default()).await.unwrap_err();
    let missing = client.get(jobs::JobId::new()).await.unwrap_err();

    let problem = invalid.problem().expect("a problem document");
    assert_eq!(problem.status, 422);
    assert_eq!(problem.kind, "/problems/validation");
    assert!(!problem.title.is_empty());
    assert!(problem.detail.contains("args.customer"), "{problem:?}");
    let fields: Vec<String> = invalid
        .field_errors()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(fields, ["args.customer"]);
    assert_eq!(unknown.field_errors()[0].field, "kind");
    assert_eq!(refused.status(), Some(401));
    assert_eq!(missing.status(), Some(404));
    assert!(!invalid.is_retryable());
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 0);
    app.teardown().await;
}

#[tokio::test]
async fn an_idempotency_key_answers_the_same_job_and_a_different_body_is_a_conflict() {
    let (app, client) = app_and_client().await;
    let options = || EnqueueOptions::new().idempotency_key("nightly-2026-11-25");

    let first = client
        .enqueue_with(Noop::default(), options())
        .await
        .unwrap();
    let again = client
        .enqueue_with(Noop::default(), options())
        .await
        .unwrap();
    let mut other = serde_json::Map::new();
    other.insert("n".into(), json!(1));
    let conflict = client
        .enqueue_with(Noop(other), options())
        .await
        .unwrap_err();

    assert_eq!(first.id, again.id);
    assert!(!first.existing);
    assert!(again.existing);
    assert_eq!(conflict.status(), Some(409));
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 1);
    app.teardown().await;
}

#[tokio::test]
async fn a_delayed_job_waits_scheduled_until_cancelled_and_a_second_cancel_conflicts() {
    let (app, client) = app_and_client().await;

    let accepted = client
        .enqueue_with(
            Noop::default(),
            EnqueueOptions::new()
                .delay(Duration::from_secs(3600))
                .max_attempts(2)
                .queue("default"),
        )
        .await
        .unwrap();
    let waited = client
        .wait(accepted.id, Duration::from_millis(300))
        .await
        .unwrap();
    let cancelled = client.cancel(accepted.id).await.unwrap();
    let again = client.cancel(accepted.id).await.unwrap_err();

    assert_eq!(accepted.state, JobState::Scheduled);
    assert!(!waited.is_final);
    assert_eq!(waited.job.state, JobState::Scheduled);
    assert_eq!(waited.job.max_attempts, 2);
    let Cancelled::Cancelled(job) = cancelled else {
        panic!("a waiting job is cancelled at once: {cancelled:?}");
    };
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(again.status(), Some(409));
    app.teardown().await;
}

#[tokio::test]
async fn a_batch_is_enqueued_all_at_once_in_order_or_refused_naming_the_job() {
    let (app, client) = app_and_client().await;
    app.seed_products(CATALOG).await;

    let ids = client
        .enqueue_batch([
            JobRequest::new(&order("B-1", 1)).unwrap(),
            JobRequest::raw("noop", json!({"i": 1})),
            JobRequest::raw("noop", json!({"i": 2})).with(EnqueueOptions::new().max_attempts(1)),
        ])
        .await
        .unwrap();
    let refused = client
        .enqueue_batch([
            JobRequest::raw("noop", json!({})),
            JobRequest::raw("order.process", json!({})),
        ])
        .await
        .unwrap_err();
    let empty = client.enqueue_batch([]).await.unwrap_err();

    assert_eq!(ids.len(), 3);
    let first = client.get(ids[0]).await.unwrap();
    let third = client.get(ids[2]).await.unwrap();
    assert_eq!(first.kind, "order.process");
    assert_eq!(third.max_attempts, 1);
    assert_eq!(refused.status(), Some(422));
    assert!(
        refused
            .field_errors()
            .iter()
            .all(|e| e.field.starts_with("jobs[1].")),
        "{:?}",
        refused.field_errors()
    );
    assert!(matches!(empty, Error::Invalid(_)));
    // The order's confirmation email is a job too; the refused batch added none.
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE kind <> 'email.send'")
            .await,
        3
    );
    app.teardown().await;
}

#[tokio::test]
async fn wait_is_answered_by_the_servers_long_poll_when_the_job_ends() {
    let (app, client, key) = app_client_and_key().await;
    let accepted = client
        .enqueue_raw("test.sleep", json!({"ms": 300}))
        .await
        .unwrap();

    // Waiting up to an hour: only an answer at completion returns within the bound.
    let waited = tokio::time::timeout(
        Duration::from_secs(60),
        client.wait(accepted.id, Duration::from_secs(3600)),
    )
    .await
    .expect("wait answers when the job ends, not at its bound")
    .unwrap();
    let body: serde_json::Value = app
        .client
        .get(format!("{}/v1/jobs/{}?wait=1s", app.address, accepted.id))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert!(waited.is_final);
    assert_eq!(waited.job.state, JobState::Completed);
    assert_eq!(body["final"], true, "{body}");
    app.teardown().await;
}

#[tokio::test]
async fn a_job_enqueued_in_a_committed_transaction_runs_and_a_rolled_back_one_never_exists() {
    let (app, client) = app_and_client().await;
    app.seed_products(CATALOG).await;
    sqlx::query("CREATE TABLE shop_orders (id text PRIMARY KEY, email text NOT NULL)")
        .execute(app.store.pool())
        .await
        .unwrap();

    let mut tx = app.store.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO shop_orders VALUES ('T-1', 'ada@example.com')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let committed = enqueue_in(&mut tx, order("T-1", 1)).await.unwrap();
    let invisible_before_commit = app
        .count(&format!(
            "SELECT count(*) FROM jobs WHERE id = '{committed}'"
        ))
        .await;
    tx.commit().await.unwrap();

    let mut tx = app.store.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO shop_orders VALUES ('T-2', 'ada@example.com')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let rolled_back = enqueue_in_with(
        &mut tx,
        order("T-2", 1),
        EnqueueOptions::new().max_attempts(3),
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();

    let waited = client
        .wait(committed, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(invisible_before_commit, 0);
    assert_eq!(waited.job.state, JobState::Completed, "{:?}", waited.job);
    assert_eq!(waited.job.queue, "orders");
    assert_eq!(app.order_row("T-1").await.0, "confirmed");
    assert_eq!(
        client.get(rolled_back).await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(
        app.count("SELECT count(*) FROM shop_orders WHERE id = 'T-2'")
            .await,
        0
    );
    app.teardown().await;
}

#[tokio::test]
async fn enqueue_in_refuses_what_intake_refuses_and_leaves_the_transaction_usable() {
    let (app, _client) = app_and_client().await;

    let mut tx = app.store.pool().begin().await.unwrap();
    let err = enqueue_in(&mut tx, order("T 3", 1)).await.unwrap_err();
    let after = enqueue_in(&mut tx, Noop::default()).await;
    tx.commit().await.unwrap();

    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert!(after.is_ok(), "{after:?}");
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 1);
    app.teardown().await;
}
