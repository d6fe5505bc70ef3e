//! `order.process` end to end, on real Postgres, RabbitMQ and SMTP: an order placed over
//! HTTP is priced, takes stock, is recorded once however often it is delivered, and its
//! customer is told by email.

mod common;

use std::time::Duration;

use common::{spawn_app, spawn_app_with};
use conveyor::app::Roles;
use serde_json::{Value, json};

const CATALOG: &str = "sku,name,unit_price_minor,currency,stock
MUG,Blue mug,1250,USD,10
TEE,T-shirt,600,USD,3
TOTE,Tote bag,1200,EUR,5
";

fn order(order_id: &str, items: &[(&str, i64)]) -> Value {
    json!({
        "order_id": order_id,
        "customer": {"email": "ada@example.com", "name": "Ada Lovelace"},
        "items": items
            .iter()
            .map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity}))
            .collect::<Vec<_>>(),
    })
}

fn order_job(args: &Value) -> Value {
    json!({"kind": "order.process", "args": args})
}

#[tokio::test]
async fn an_order_over_http_is_confirmed_takes_stock_and_sends_the_confirmation() {
    let app = spawn_app().await;
    app.seed_products(CATALOG).await;

    let id = app
        .enqueue(order_job(&order("A-1", &[("MUG", 2), ("TEE", 1)])))
        .await;
    let job = app.wait_for_state(&id, "completed").await;

    let result = &job["result"];
    assert_eq!(result["status"], "confirmed", "{result}");
    assert_eq!(result["total_minor"], 3100);
    assert_eq!(result["currency"], "USD");
    assert_eq!(result["lines"][0]["sku"], "MUG");
    assert_eq!(result["lines"][0]["line_total_minor"], 2500);
    assert_eq!(result["lines"][1]["unit_price_minor"], 600);
    assert_eq!(
        app.order_row("A-1").await,
        ("confirmed".into(), None, Some(3100))
    );
    assert_eq!(app.stock_of("MUG").await, 8);
    assert_eq!(app.stock_of("TEE").await, 2);
    let attempts = app.attempts(&id).await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].1, "completed");

    let email_job = result["email_job_id"].as_str().expect("an email job");
    app.wait_for_state(email_job, "completed").await;
    let emails = app.wait_for_emails(1, Duration::from_secs(30)).await;
    assert_eq!(emails.len(), 1, "{emails:?}");
    let email = &emails[0];
    assert_eq!(email.to, ["ada@example.com"]);
    assert_eq!(email.subject, "Your order A-1 is confirmed");
    assert_eq!(email.message_id, format!("<{email_job}@conveyor>"));
    for line in [
        "MUG  Blue mug  2 x 12.50 USD  25.00 USD",
        "TEE  T-shirt  1 x 6.00 USD  6.00 USD",
        "Total: 31.00 USD",
    ] {
        assert!(email.body.contains(line), "{line:?} not in {}", email.body);
    }
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM emails WHERE job_id = '{email_job}'"
        ))
        .await,
        1
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_redelivered_job_and_a_second_job_for_one_order_place_it_once() {
    // One order job at a time, so deliveries are handled in order.
    let app = spawn_app_with(
        |s| {
            s.worker.queues.insert("orders".into(), 1);
            s.worker.queues.insert("emails".into(), 2);
        },
        Roles::ALL,
    )
    .await;
    app.seed_products(CATALOG).await;
    let args = order("A-2", &[("MUG", 3)]);
    let first = app.enqueue(order_job(&args)).await;
    let placed = app.wait_for_state(&first, "completed").await;

    // The same job's message delivered again, then a sentinel behind it.
    let envelope = json!({"id": first, "kind": "order.process", "queue": "orders",
        "args": args, "enqueued_at": "2026-01-01T00:00:00Z"});
    app.publish_raw("orders", envelope.to_string().as_bytes())
        .await;
    let sentinel = app
        .enqueue(json!({"kind": "noop", "args": {}, "queue": "orders"}))
        .await;
    app.wait_for_state(&sentinel, "completed").await;
    // A second job for the same order id.
    let second = app.enqueue(order_job(&args)).await;
    let again = app.wait_for_state(&second, "completed").await;

    assert_ne!(first, second);
    assert_eq!(again["result"], placed["result"]);
    assert_eq!(placed["result"]["status"], "confirmed");
    assert_eq!(app.attempts(&first).await.len(), 1, "the redelivery ran");
    assert_eq!(app.attempts(&second).await.len(), 1);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM order_items").await, 1);
    assert_eq!(app.stock_of("MUG").await, 7, "stock moved more than once");
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE kind = 'email.send'")
            .await,
        1,
        "the customer was told more than once"
    );
    app.teardown().await;
}

#[tokio::test]
async fn twenty_concurrent_orders_for_five_in_stock_confirm_exactly_five() {
    let app = spawn_app_with(
        |s| {
            s.worker.queues.insert("orders".into(), 8);
            s.worker.queues.insert("emails".into(), 8);
            s.database.max_connections = 24;
        },
        Roles::ALL,
    )
    .await;
    app.seed_products("sku,name,unit_price_minor,currency,stock\nLAMP,Lamp,8900,USD,5\n")
        .await;

    let orders: Vec<Value> = (0..20)
        .map(|i| order(&format!("C-{i}"), &[("LAMP", 1)]))
        .collect();
    let responses =
        futures_util::future::join_all(orders.iter().map(|args| app.post_order(args))).await;
    for response in responses {
        assert_eq!(response.status(), 202);
    }
    app.wait_for_count(
        "SELECT count(*) FROM jobs WHERE kind = 'order.process' AND state = 'completed'",
        20,
        Duration::from_secs(60),
    )
    .await;

    assert_eq!(
        app.count("SELECT count(*) FROM orders WHERE status = 'confirmed'")
            .await,
        5
    );
    assert_eq!(
        app.count("SELECT count(*) FROM orders WHERE status = 'rejected'")
            .await,
        15
    );
    assert_eq!(app.stock_of("LAMP").await, 0);
    assert_eq!(
        app.count(
            "SELECT COALESCE(sum(i.quantity), 0)::bigint FROM order_items i \
             JOIN orders o USING (order_id) WHERE o.status = 'confirmed'"
        )
        .await,
        5,
        "stock taken differs from units confirmed"
    );
    // No attempt failed: the orders queued on the row lock instead of tripping over it.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id \
             WHERE j.kind = 'order.process'"
        )
        .await,
        20
    );
    let emails = app.wait_for_emails(20, Duration::from_secs(60)).await;
    assert_eq!(
        emails
            .iter()
            .filter(|e| e.subject.ends_with("is confirmed"))
            .count(),
        5
    );
    app.teardown().await;
}

#[tokio::test]
async fn out_of_stock_unknown_sku_and_wrong_currency_orders_are_rejected_and_take_no_stock() {
    let app = spawn_app().await;
    app.seed_products(CATALOG).await;
    let mut in_euros = order("R-3", &[("MUG", 1)]);
    in_euros["currency"] = json!("EUR");

    let short = app
        .enqueue(order_job(&order("R-1", &[("MUG", 1), ("TEE", 4)])))
        .await;
    let unknown = app.enqueue(order_job(&order("R-2", &[("NOPE", 1)]))).await;
    let euros = app.enqueue(order_job(&in_euros)).await;

    let cases = [
        (short, "R-1", "SKU \"TEE\": 4 requested, 3 in stock"),
        (unknown, "R-2", "unknown SKU \"NOPE\""),
        (euros, "R-3", "SKU \"MUG\" is priced in USD, not EUR"),
    ];
    for (id, order_id, reason) in &cases {
        let job = app.wait_for_state(id, "completed").await;
        assert_eq!(job["result"]["status"], "rejected");
        assert_eq!(job["result"]["reason"], *reason);
        assert_eq!(
            app.order_row(order_id).await,
            ("rejected".into(), Some((*reason).into()), None)
        );
        let attempts = app.attempts(id).await;
        assert_eq!(
            attempts.len(),
            1,
            "a rejection is not a retry: {attempts:?}"
        );
        assert_eq!(attempts[0].1, "completed");
    }
    assert_eq!(app.stock_of("MUG").await, 10);
    assert_eq!(app.stock_of("TEE").await, 3);
    assert_eq!(app.count("SELECT count(*) FROM order_items").await, 0);
    let emails = app.wait_for_emails(3, Duration::from_secs(30)).await;
    for (_, order_id, reason) in &cases {
        let email = emails
            .iter()
            .find(|e| e.subject == format!("Your order {order_id} could not be accepted"))
            .unwrap_or_else(|| panic!("no rejection email for {order_id}: {emails:?}"));
        assert!(email.body.contains(reason), "{}", email.body);
    }
    app.teardown().await;
}

#[tokio::test]
async fn invalid_order_args_are_422_naming_every_bad_field_and_store_nothing() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let bad_quantity = order("V-1", &[("MUG", 1), ("TEE", 1), ("CAP", 0)]);
    let mut bad_everything = order("V 2", &[]);
    bad_everything["customer"]["email"] = json!("ada.example.com");
    bad_everything["currency"] = json!("usd");
    let mut unknown_field = order("V-3", &[("MUG", 1)]);
    unknown_field["coupon"] = json!("FREE");
    let mut missing_email = order("V-4", &[("MUG", 1)]);
    missing_email["customer"]
        .as_object_mut()
        .unwrap()
        .remove("email");

    let cases: [(&Value, &[&str]); 4] = [
        (&bad_quantity, &["args.items[2].quantity"]),
        (
            &bad_everything,
            &[
                "args.order_id",
                "args.customer.email",
                "args.items",
                "args.currency",
            ],
        ),
        (&unknown_field, &["args.coupon"]),
        (&missing_email, &["args.customer.email"]),
    ];
    for (args, fields) in cases {
        let response = app.post_order(args).await;
        assert_eq!(response.status(), 422, "{args}");
        let body: Value = response.json().await.unwrap();
        let named = common::error_fields(&body);
        assert_eq!(named, fields, "{body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 0);
    assert_eq!(
        app.queue_depth("orders").await,
        None,
        "something was published"
    );
    app.teardown().await;
}

#[tokio::test]
async fn demo_seed_loads_the_example_catalog_and_resets_stock() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let example = std::path::Path::new("examples/catalog.csv");

    let written = conveyor::app::seed_demo(&app.settings, example)
        .await
        .unwrap();
    sqlx::query("UPDATE products SET stock = 0 WHERE sku = 'LAMP-LTD'")
        .execute(app.store.pool())
        .await
        .unwrap();
    conveyor::app::seed_demo(&app.settings, example)
        .await
        .unwrap();

    assert!(written >= 10, "{written}");
    assert_eq!(
        app.count("SELECT count(*) FROM products").await,
        i64::try_from(written).unwrap()
    );
    assert_eq!(app.stock_of("LAMP-LTD").await, 2, "seeding resets stock");

    let bad = std::env::temp_dir().join(format!("catalog-{}.csv", uuid::Uuid::new_v4()));
    std::fs::write(
        &bad,
        "sku,name,unit_price_minor,currency,stock\nOK,Fine,100,USD,1\nBAD,Broken,1.5,USD,1\n",
    )
    .unwrap();
    let err = conveyor::app::seed_demo(&app.settings, &bad)
        .await
        .unwrap_err();
    std::fs::remove_file(&bad).unwrap();
    let message = format!("{err:#}");
    assert!(
        message.contains("line 3, column unit_price_minor"),
        "{message}"
    );
    app.teardown().await;
}
