//! Email on the first run: `conveyor run` with no SMTP server configured delivers to its
//! development mailbox (a loopback SMTP listener keeping messages in Postgres), says so
//! at start-up, and `conveyor mail list|show` reads it; a worker on its own refuses to
//! start without an SMTP server.

mod common;

use std::time::Duration;

use common::{free_port, spawn_app_with, terminate, test_settings};
use conveyor::app::{self, Roles};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const CATALOG: &str = "sku,name,unit_price_minor,currency,stock
MUG-BLUE,Blue mug,1250,USD,10
";

#[tokio::test]
async fn the_quick_start_without_smtp_ends_with_the_confirmation_in_the_mailbox() {
    // The test's database and namespace; Conveyor itself runs as `conveyor run`.
    let app = spawn_app_with(|_| {}, Roles::NONE).await;
    app.seed_products(CATALOG).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let (mut child, output) = app.spawn_child_with_output(
        &["run", "--listen", &format!("127.0.0.1:{port}")],
        &[("CONVEYOR_SMTP__HOST", String::new())],
    );
    app.wait_ready(&base).await;

    let accepted: serde_json::Value = app
        .client
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"kind": "order.process", "args": {
            "order_id": "A-1001",
            "customer": {"email": "ada@example.com", "name": "Ada Lovelace"},
            "items": [{"sku": "MUG-BLUE", "quantity": 2}]}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = accepted["id"].as_str().expect("an id").to_owned();
    let order = app
        .wait_for_state_at(&base, None, &id, "completed", Duration::from_secs(60))
        .await;
    let email_job = order["result"]["email_job_id"]
        .as_str()
        .expect("an email job")
        .to_owned();
    app.wait_for_state_at(
        &base,
        None,
        &email_job,
        "completed",
        Duration::from_secs(60),
    )
    .await;
    let list = app.cli_json(&["mail", "list", "--json"]).await;
    let mail_id = list[0]["id"].as_i64().expect("a message");
    let (shown, text, _) = app.cli(&["mail", "show", &mail_id.to_string()]).await;
    terminate(&child);
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;

    let lines = output.finished().await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("development mailbox") && l.contains("conveyor mail list")),
        "start-up says where email goes:\n{}",
        lines.join("\n")
    );
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["to"], json!(["ada@example.com"]));
    assert!(
        list[0]["subject"]
            .as_str()
            .is_some_and(|s| s.contains("A-1001")),
        "{list}"
    );
    assert!(shown, "{text}");
    assert!(text.contains("to:        ada@example.com"), "{text}");
    assert!(text.contains("Message-ID:"), "{text}");
    app.teardown().await;
}

#[tokio::test]
async fn a_worker_that_sends_email_refuses_to_start_without_an_smtp_server() {
    let mut settings = test_settings();
    settings.smtp = worker::SmtpSettings::default();

    let refused = app::start(settings.clone(), Roles::WORKER, CancellationToken::new())
        .await
        .expect_err("refused");
    settings.worker.queues = [("default".to_owned(), 4)].into();
    app::migrate(&settings).await.expect("migrates");
    let without_emails =
        app::start(settings.clone(), Roles::WORKER, CancellationToken::new()).await;

    let message = format!("{refused:#}");
    assert!(
        message.contains("no SMTP server is configured"),
        "{message}"
    );
    assert!(message.contains("smtp.host"), "{message}");
    assert!(message.contains("email.send"), "{message}");
    // A worker that does not consume the email queue needs no SMTP server.
    let running = without_emails.expect("starts");
    running.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(30), running.wait()).await;
    common::delete_broker_objects(&settings, Vec::new()).await;
    common::drop_database(&settings).await;
}
