//! The end-to-end harness: each test gets its own database (uuid-named, migrated), its
//! own broker namespace and its own SMTP sink, and runs Conveyor's roles in-process
//! against the real Postgres and RabbitMQ. Helpers are named for what a user does.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod smtp;

use std::time::Duration;

use broker::lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use broker::lapin::types::FieldTable;
use broker::lapin::{BasicProperties, Connection, ConnectionProperties};
use conveyor::app::{self, Roles, Running};
use conveyor::config::Settings;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sqlx::Row;
use store::Store;
use tokio_util::sync::CancellationToken;

/// Postgres server to create test databases on (no database name).
pub fn postgres_base() -> String {
    std::env::var("CONVEYOR_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// RabbitMQ URL.
pub fn amqp_url() -> String {
    std::env::var("CONVEYOR_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Logs for a test run when TEST_LOG is set.
pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        conveyor::telemetry::init(conveyor::telemetry::LogFormat::Pretty);
    }
}

/// Settings for an isolated test: fresh database name and namespace, quick timers.
pub fn test_settings() -> Settings {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut settings = Settings {
        namespace: format!("t{}", &id[..12]),
        ..Settings::default()
    };
    settings.database.url =
        SecretString::from(format!("{}/conveyor_test_{}", postgres_base(), &id[..16]));
    settings.database.max_connections = 8;
    settings.broker.url = SecretString::from(amqp_url());
    settings.producer.listen = "127.0.0.1:0".parse().expect("a literal address");
    settings.worker.test_kinds = true;
    settings.worker.heartbeat_interval_ms = 200;
    settings.worker.lost_after_ms = 3_000;
    settings.worker.grace_ms = 15_000;
    settings.dispatcher.poll_interval_ms = 100;
    settings.dispatcher.unconfirmed_after_ms = 1_000;
    settings
}

pub struct TestApp {
    pub address: String,
    pub settings: Settings,
    pub store: Store,
    pub client: reqwest::Client,
    /// Where `email.send` delivers.
    pub smtp: smtp::SmtpSink,
    shutdown: CancellationToken,
    running: Option<Running>,
}

/// Every role, default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}, Roles::ALL).await
}

/// Every role named in `roles`, with settings adjusted by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings), roles: Roles) -> TestApp {
    init_logs();
    let mut settings = test_settings();
    let sink = smtp::SmtpSink::start();
    settings.smtp.host = "127.0.0.1".into();
    settings.smtp.port = sink.port();
    settings.smtp.timeout_ms = 5_000;
    configure(&mut settings);
    app::migrate(&settings)
        .await
        .expect("test database migrates");
    let shutdown = CancellationToken::new();
    let running = app::start(settings.clone(), roles, shutdown.clone())
        .await
        .expect("roles start");
    let address = running
        .producer_addr
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    let store = running.store.clone();
    TestApp {
        address,
        settings,
        store,
        client: reqwest::Client::new(),
        smtp: sink,
        shutdown,
        running: Some(running),
    }
}

impl TestApp {
    pub async fn post_job(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/jobs", self.address))
            .json(body)
            .send()
            .await
            .expect("intake answers")
    }

    pub async fn post_raw(
        &self,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/v1/jobs", self.address))
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request.send().await.expect("intake answers")
    }

    /// Posts a job and returns its id, asserting 202.
    pub async fn enqueue(&self, body: Value) -> String {
        let response = self.post_job(&body).await;
        let status = response.status();
        let json: Value = response.json().await.expect("json body");
        assert_eq!(status, 202, "enqueue failed: {json}");
        json["id"].as_str().expect("an id").to_owned()
    }

    pub async fn get_job(&self, id: &str) -> Value {
        let response = self
            .client
            .get(format!("{}/v1/jobs/{id}", self.address))
            .send()
            .await
            .expect("intake answers");
        assert_eq!(response.status(), 200, "GET job {id}");
        response.json().await.expect("json body")
    }

    /// Posts an `order.process` job with these args.
    pub async fn post_order(&self, args: &Value) -> reqwest::Response {
        self.post_job(&json!({"kind": "order.process", "args": args}))
            .await
    }

    /// Loads products into the catalog from CSV lines (the `conveyor demo seed`
    /// format, header included).
    pub async fn seed_products(&self, csv: &str) {
        let products = store::parse_catalog(csv).expect("test catalog parses");
        self.store
            .upsert_products(&products)
            .await
            .expect("products upsert");
    }

    /// A product's stock.
    pub async fn stock_of(&self, sku: &str) -> i32 {
        sqlx::query_scalar("SELECT stock FROM products WHERE sku = $1")
            .bind(sku)
            .fetch_one(self.store.pool())
            .await
            .expect("product row")
    }

    /// (status, reason, total_minor) of an order row.
    pub async fn order_row(&self, order_id: &str) -> (String, Option<String>, Option<i64>) {
        let row = sqlx::query("SELECT status, reason, total_minor FROM orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(self.store.pool())
            .await
            .expect("order row");
        (row.get("status"), row.get("reason"), row.get("total_minor"))
    }

    /// Waits (bounded) until the sink has accepted `n` messages; returns them all.
    pub async fn wait_for_emails(&self, n: usize, limit: Duration) -> Vec<smtp::ReceivedEmail> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let received = self.smtp.received();
            if received.len() >= n {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the SMTP sink got {} messages, expected {n} within {limit:?}: {received:?}",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The job's state straight from the ledger.
    pub async fn state_of(&self, id: &str) -> String {
        let row = sqlx::query("SELECT state FROM jobs WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(self.store.pool())
            .await
            .expect("job row");
        row.get("state")
    }

    /// Waits (bounded) until the job is in `state`; panics with what it saw otherwise.
    pub async fn wait_for_state(&self, id: &str, state: &str) -> Value {
        self.wait_for_state_within(id, state, Duration::from_secs(30))
            .await
    }

    pub async fn wait_for_state_within(&self, id: &str, state: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let job = self.get_job(id).await;
            if job["state"] == state {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} did not reach {state} within {limit:?}; it is {job}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits (bounded) until `query` (returning one bigint) equals `expected`.
    pub async fn wait_for_count(&self, query: &str, expected: i64, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let n = self.count(query).await;
            if n == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{query}` stayed at {n}, expected {expected} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn count(&self, query: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(query.to_owned()))
            .fetch_one(self.store.pool())
            .await
            .expect("count query")
    }

    /// (attempt, outcome, error) rows of a job, in order.
    pub async fn attempts(&self, id: &str) -> Vec<(i32, String, Option<String>)> {
        sqlx::query(
            "SELECT attempt, outcome, error FROM job_attempts WHERE job_id = $1::uuid ORDER BY id",
        )
        .bind(id)
        .fetch_all(self.store.pool())
        .await
        .expect("attempt rows")
        .into_iter()
        .map(|r| (r.get("attempt"), r.get("outcome"), r.get("error")))
        .collect()
    }

    async fn amqp(&self) -> Connection {
        Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("test connects to RabbitMQ")
    }

    /// Publishes raw bytes straight to a Conveyor queue, bypassing intake.
    pub async fn publish_raw(&self, queue: &str, body: &[u8]) {
        let connection = self.amqp().await;
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let confirm = channel
            .basic_publish(
                format!("{}.jobs", self.settings.namespace).as_str().into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "broker confirmed the raw message");
        let _ = connection.close(200, "done".into()).await;
    }

    /// Messages ready in a Conveyor queue (`None` when the queue does not exist).
    pub async fn queue_depth(&self, queue: &str) -> Option<u32> {
        let connection = self.amqp().await;
        let channel = connection.create_channel().await.expect("channel");
        let name = format!("{}.q.{queue}", self.settings.namespace);
        let result = channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = connection.close(200, "done".into()).await;
        result.ok().map(|q| q.message_count())
    }

    /// Asks every role to stop and waits for them to drain.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.running.take() {
            Some(running) => running.wait().await,
            None => Ok(()),
        }
    }

    /// Stops the roles, then removes the test's queues and database.
    pub async fn teardown(mut self) {
        self.shutdown().await.expect("roles stop cleanly");
        self.store.pool().close().await;
        let connection = self.amqp().await;
        let channel = connection.create_channel().await.expect("channel");
        let ns = &self.settings.namespace;
        for queue in ["default", "orders", "emails"]
            .map(|q| format!("{ns}.q.{q}"))
            .into_iter()
            .chain([format!("{ns}.dead")])
        {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = connection.close(200, "done".into()).await;
        let url = self.settings.database.url.expose_secret().to_owned();
        let name = url.rsplit('/').next().unwrap_or_default().to_owned();
        if let Ok(admin) = sqlx::PgPool::connect(&format!("{}/postgres", postgres_base())).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&admin)
            .await;
        }
    }
}

pub fn noop() -> Value {
    json!({"kind": "noop", "args": {}})
}
