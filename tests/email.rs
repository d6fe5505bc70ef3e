//! `email.send` end to end, through lettre's SMTP transport to an in-process SMTP sink:
//! a temporary refusal is retried, a permanent one is dead with the server's reply, and
//! a message already on record is not sent again.

mod common;

use std::time::Duration;

use common::{spawn_app, spawn_app_with};
use conveyor::app::Roles;
use serde_json::{Value, json};

fn email(subject: &str) -> Value {
    json!({"kind": "email.send", "args": {
        "to": "grace@example.com", "subject": subject, "text": "Hello from Conveyor"
    }})
}

#[tokio::test]
async fn a_451_is_retried_and_the_message_is_then_sent_once() {
    let app = spawn_app().await;
    app.smtp.refuse_next(1, 451, "4.3.0 sink: try again later");

    let id = app.enqueue(email("Retry me")).await;
    let job = app.wait_for_state(&id, "completed").await;

    let attempts = app.attempts(&id).await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].1, "retry");
    let first_error = attempts[0].2.clone().unwrap_or_default();
    assert!(first_error.contains("451"), "{first_error}");
    assert!(first_error.contains("try again later"), "{first_error}");
    assert_eq!(attempts[1].1, "completed");
    assert_eq!(app.smtp.refused(), 1);
    let received = app.smtp.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].subject, "Retry me");
    assert_eq!(received[0].message_id, format!("<{id}@conveyor>"));
    assert!(received[0].body.contains("Hello from Conveyor"));
    assert_eq!(job["result"]["message_id"], format!("<{id}@conveyor>"));
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM emails WHERE job_id = '{id}'"
        ))
        .await,
        1
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_550_makes_the_job_dead_with_the_servers_reply() {
    let app = spawn_app().await;
    app.smtp.refuse_next(1, 550, "5.1.1 sink: no such mailbox");

    let id = app.enqueue(email("Doomed")).await;
    let job = app.wait_for_state(&id, "dead").await;

    let last_error = job["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("550"), "{last_error}");
    assert!(last_error.contains("no such mailbox"), "{last_error}");
    let attempts = app.attempts(&id).await;
    assert_eq!(attempts.len(), 1, "a permanent refusal is not retried");
    assert_eq!(attempts[0].1, "failed");
    assert!(attempts[0].2.as_deref().unwrap_or_default().contains("550"));
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM dead_letters WHERE job_id = '{id}' AND reason = 'failed'"
        ))
        .await,
        1
    );
    assert!(app.smtp.received().is_empty());
    assert_eq!(app.count("SELECT count(*) FROM emails").await, 0);
    app.teardown().await;
}

#[tokio::test]
async fn an_email_already_on_record_is_not_sent_again() {
    let app = spawn_app().await;
    // Scheduled for later, so its record can be written first (as if an earlier attempt
    // had sent it and crashed before the job was marked completed), then made due.
    let mut job = email("Sent before");
    job["delay_ms"] = json!(3_600_000);
    let id = app.enqueue(job).await;
    sqlx::query(
        "INSERT INTO emails (job_id, recipient, message_id, subject) \
         VALUES ($1::uuid, 'grace@example.com', $2, 'Sent before')",
    )
    .bind(&id)
    .bind(format!("<{id}@conveyor>"))
    .execute(app.store.pool())
    .await
    .unwrap();
    sqlx::query("UPDATE jobs SET run_at = now() WHERE id = $1::uuid")
        .bind(&id)
        .execute(app.store.pool())
        .await
        .unwrap();

    let done = app.wait_for_state(&id, "completed").await;

    assert_eq!(done["result"]["message_id"], format!("<{id}@conveyor>"));
    // A later message proves the sink was reachable all along.
    let later = app.enqueue(email("After")).await;
    app.wait_for_state(&later, "completed").await;
    let received = app.wait_for_emails(1, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].subject, "After");
    app.teardown().await;
}

#[tokio::test]
async fn invalid_email_args_are_422_naming_the_field_and_store_nothing() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let cases: [(Value, &[&str]); 5] = [
        (
            json!({"to": "not an address", "subject": "Hi", "text": "x"}),
            &["args.to"],
        ),
        (
            json!({"to": "a@example.com", "subject": "Hi", "template": "order_rejected"}),
            &["args.subject"],
        ),
        (
            json!({"to": "a@example.com", "subject": "Hi"}),
            &["args.text"],
        ),
        (
            json!({"to": "a@example.com", "template": "order_rejected", "data": {"order_id": "A"}}),
            &["args.data.customer_name"],
        ),
        (
            json!({"to": "a@", "subject": "x".repeat(999), "html": "<p>x</p>"}),
            &["args.to", "args.subject"],
        ),
    ];
    for (args, fields) in cases {
        let response = app
            .post_job(&json!({"kind": "email.send", "args": args}))
            .await;
        assert_eq!(response.status(), 422, "{args}");
        let body: Value = response.json().await.unwrap();
        let named = common::error_fields(&body);
        assert_eq!(named, fields, "{body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 0);
    assert_eq!(
        app.queue_depth("emails").await,
        None,
        "something was published"
    );
    app.teardown().await;
}
