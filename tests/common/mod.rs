//! The end-to-end harness: each test gets its own database (uuid-named, migrated), its
//! own broker namespace and its own SMTP sink, and runs Conveyor's roles in-process
//! against the real Postgres and RabbitMQ. Helpers are named for what a user does.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod cluster;
pub mod proxy;
pub mod smtp;

use std::time::Duration;

use conveyor::app::{self, Roles, Running};
use conveyor::config::Settings;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
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
    settings.producer.mark_published_after_ms = 200;
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
    let app = TestApp {
        address,
        settings,
        store,
        // Every request bounded: a stuck intake fails the test instead of hanging it.
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("a reqwest client"),
        smtp: sink,
        shutdown,
        running: Some(running),
    };
    if roles.worker {
        let queue = app
            .settings
            .worker
            .queues
            .keys()
            .next()
            .cloned()
            .unwrap_or_else(|| "default".into());
        app.wait_until_consuming(&queue).await;
    }
    app
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

    /// Posts a noop job to the intake at `base` as a caller in trace context
    /// `traceparent`, and returns the job once it completed.
    pub async fn complete_traced_noop_at(&self, base: &str, traceparent: &str) -> Value {
        let response = self
            .client
            .post(format!("{base}/v1/jobs"))
            .header("traceparent", traceparent)
            .json(&noop())
            .send()
            .await
            .expect("the intake answers");
        let id = response.json::<Value>().await.expect("json body")["id"]
            .as_str()
            .expect("an id")
            .to_owned();
        self.wait_for_state_at(base, None, &id, "completed", Duration::from_secs(30))
            .await
    }

    pub async fn get_job(&self, id: &str) -> Value {
        self.get_job_at(&self.address, None, id).await
    }

    /// `GET /v1/jobs/{id}` on the intake at `base`, asserting 200.
    pub async fn get_job_at(&self, base: &str, key: Option<&str>, id: &str) -> Value {
        let mut request = self.client.get(format!("{base}/v1/jobs/{id}"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("intake answers");
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

    /// How one product's stock moved: what left the shelf against what confirmed
    /// orders sold (equal when no order was placed twice or half-way).
    pub async fn stock_move(&self, sku: &str, initial: i64) -> StockMove {
        let taken = initial - i64::from(self.stock_of(sku).await);
        let sold = sqlx::query_scalar(
            "SELECT COALESCE(sum(quantity), 0)::bigint FROM order_items i JOIN orders o USING (order_id) \
             WHERE o.status = 'confirmed' AND i.sku = $1",
        )
        .bind(sku)
        .fetch_one(self.store.pool())
        .await
        .expect("sold quantity");
        StockMove { taken, sold }
    }

    /// The books after a run of `order.process` jobs against the products `SCARCE` and
    /// `PLENTY` (seeded with `scarce` and `plenty` units): what the fault tests check.
    pub async fn order_books(&self, scarce: i64, plenty: i64) -> OrderBooks {
        let order_jobs = self
            .count("SELECT count(*) FROM jobs WHERE kind = 'order.process'")
            .await;
        OrderBooks {
            order_jobs,
            completed: self
                .count("SELECT count(*) FROM jobs WHERE kind = 'order.process' AND state = 'completed'")
                .await,
            dead: self
                .count("SELECT count(*) FROM jobs WHERE kind = 'order.process' AND state = 'dead'")
                .await,
            placed: self.count("SELECT count(*) FROM orders").await,
            confirmed: self
                .count("SELECT count(*) FROM orders WHERE status = 'confirmed'")
                .await,
            emails_completed: self
                .count("SELECT count(*) FROM jobs WHERE kind = 'email.send' AND state = 'completed'")
                .await,
            doubled: self
                .count(
                    "SELECT count(*) FROM (SELECT job_id FROM job_attempts WHERE outcome = 'completed' \
                     GROUP BY job_id HAVING count(*) > 1) d",
                )
                .await,
            re_run_attempts: self
                .count(
                    "SELECT count(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id \
                     WHERE j.kind = 'order.process'",
                )
                .await
                - order_jobs,
            scarce: self.stock_move("SCARCE", scarce).await,
            plenty: self.stock_move("PLENTY", plenty).await,
        }
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
        self.wait_for_state_at(&self.address, None, id, state, limit)
            .await
    }

    /// Waits (bounded) until the intake at `base` (this test's, or a child process's)
    /// shows the job in `state`, authenticating with `key` when given.
    pub async fn wait_for_state_at(
        &self,
        base: &str,
        key: Option<&str>,
        id: &str,
        state: &str,
        limit: Duration,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let job = self.get_job_at(base, key, id).await;
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

    /// A broker session of the test's own.
    async fn session(&self) -> broker::Session {
        broker::Session::open(&self.settings.broker, "conveyor-test-probe")
            .await
            .expect("test connects to RabbitMQ")
    }

    /// Messages ready in a Conveyor queue (`None` when the queue does not exist).
    pub async fn queue_depth(&self, queue: &str) -> Option<u32> {
        let session = self.session().await;
        let name = format!("{}.q.{queue}", self.settings.namespace);
        let result = session.inspect(&name).await;
        session.close().await;
        result.ok().map(|q| q.message_count())
    }

    /// Waits (bounded) until a worker consumes `queue`, so raw publishes are routed.
    pub async fn wait_until_consuming(&self, queue: &str) {
        let session = self.session().await;
        let name = format!("{}.q.{queue}", self.settings.namespace);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let declared = session.inspect(&name).await;
            if let Ok(queue) = declared
                && queue.consumer_count() > 0
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no worker consumed {name} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        session.close().await;
    }

    /// Closes, from the server side, every broker connection whose name starts with
    /// `prefix` (`rabbitmqctl close_connection`). Returns how many were closed.
    pub async fn close_broker_connections(&self, prefix: &str) -> usize {
        let listed = tokio::process::Command::new("rabbitmqctl")
            .args(["-q", "list_connections", "pid", "client_properties"])
            .output()
            .await
            .expect("rabbitmqctl runs");
        let text = String::from_utf8_lossy(&listed.stdout);
        let needle = format!("\"connection_name\",\"{prefix}");
        let mut closed = 0;
        for line in text.lines().filter(|l| l.contains(&needle)) {
            let Some(pid) = line.split_whitespace().next() else {
                continue;
            };
            let status = tokio::process::Command::new("rabbitmqctl")
                .args([
                    "-q",
                    "close_connection",
                    pid,
                    "closed by a Conveyor fault test",
                ])
                .status()
                .await
                .expect("rabbitmqctl runs");
            if status.success() {
                closed += 1;
            }
        }
        closed
    }

    /// Makes Postgres refuse this test's database (and drops its sessions) until
    /// [`TestApp::allow_database`].
    pub async fn refuse_database(&self) {
        let name = self.database_name();
        admin(&format!(
            "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
        ))
        .await;
        admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await;
    }

    /// Lets Postgres accept this test's database again.
    pub async fn allow_database(&self) {
        admin(&format!(
            "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true",
            self.database_name()
        ))
        .await;
    }

    pub fn database_name(&self) -> String {
        database_name(&self.settings)
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
        // Every queue the test's jobs named, besides the standard ones.
        let used: Vec<String> = sqlx::query_scalar("SELECT DISTINCT queue FROM jobs")
            .fetch_all(self.store.pool())
            .await
            .unwrap_or_default();
        self.store.pool().close().await;
        delete_broker_objects(&self.settings, used).await;
        drop_database(&self.settings).await;
    }
}

/// The fields a problem+json body names, in order.
pub fn error_fields(body: &Value) -> Vec<&str> {
    body["errors"]
        .as_array()
        .expect("a problem body lists its errors")
        .iter()
        .map(|e| e["field"].as_str().expect("each error names its field"))
        .collect()
}

pub fn noop() -> Value {
    json!({"kind": "noop", "args": {}})
}

impl TestApp {
    /// The environment a child `conveyor` process needs to share this test's database,
    /// namespace and test kinds.
    pub fn child_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "CONVEYOR_DATABASE__URL".into(),
                self.settings.database.url.expose_secret().to_owned(),
            ),
            ("CONVEYOR_BROKER__URL".into(), amqp_url()),
            ("CONVEYOR_NAMESPACE".into(), self.settings.namespace.clone()),
            ("CONVEYOR_WORKER__TEST_KINDS".into(), "true".into()),
            ("CONVEYOR_LOG_FORMAT".into(), "json".into()),
            (
                "CONVEYOR_SMTP__HOST".into(),
                self.settings.smtp.host.clone(),
            ),
            (
                "CONVEYOR_SMTP__PORT".into(),
                self.settings.smtp.port.to_string(),
            ),
        ]
    }

    /// A `conveyor` child process command for this test's database and namespace.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor"));
        command
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("AMQP_URL")
            .env_remove("CONVEYOR_CONFIG")
            .envs(self.child_env())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs the `conveyor` CLI to completion; returns (exit success, stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let output = tokio::time::timeout(Duration::from_secs(120), self.command(args).output())
            .await
            .expect("the CLI finishes within 2 minutes")
            .expect("the CLI runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Runs the CLI, asserts success, parses stdout as JSON.
    pub async fn cli_json(&self, args: &[&str]) -> Value {
        let (ok, stdout, stderr) = self.cli(args).await;
        assert!(ok, "conveyor {args:?} failed: {stderr}");
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("conveyor {args:?} printed no JSON ({e}): {stdout}"))
    }

    /// Posts many jobs with bounded concurrency; returns their ids in order.
    pub async fn enqueue_many(&self, bodies: Vec<Value>, concurrency: usize) -> Vec<String> {
        use futures_util::StreamExt;
        futures_util::stream::iter(bodies)
            .map(|body| self.enqueue(body))
            .buffered(concurrency)
            .collect()
            .await
    }
}

impl TestApp {
    /// Starts `conveyor ARGS` as a child process on this test's database and namespace.
    pub fn spawn_child(&self, args: &[&str], env: &[(&str, String)]) -> tokio::process::Child {
        let mut command = self.command(args);
        command
            .env("CONVEYOR_WORKER__HEARTBEAT_INTERVAL_MS", "200")
            .env("CONVEYOR_WORKER__LOST_AFTER_MS", "3000")
            .env("CONVEYOR_DISPATCHER__POLL_INTERVAL_MS", "100")
            .env("CONVEYOR_DISPATCHER__UNCONFIRMED_AFTER_MS", "1000")
            .env("CONVEYOR_PRODUCER__MARK_PUBLISHED_AFTER_MS", "200")
            .stdout(std::process::Stdio::null());
        if std::env::var_os("TEST_LOG").is_none() {
            command.stderr(std::process::Stdio::null());
        }
        for (key, value) in env {
            command.env(key, value);
        }
        command.spawn().expect("conveyor starts")
    }

    /// Starts `conveyor ARGS` as a child process like [`TestApp::spawn_child`], with its
    /// stdout and stderr collected into a [`ChildOutput`].
    pub fn spawn_child_with_output(
        &self,
        args: &[&str],
        env: &[(&str, String)],
    ) -> (tokio::process::Child, ChildOutput) {
        let mut command = self.command(args);
        command
            .env("CONVEYOR_WORKER__HEARTBEAT_INTERVAL_MS", "200")
            .env("CONVEYOR_WORKER__LOST_AFTER_MS", "3000")
            .env("CONVEYOR_DISPATCHER__POLL_INTERVAL_MS", "100")
            .env("CONVEYOR_DISPATCHER__UNCONFIRMED_AFTER_MS", "1000")
            .env("CONVEYOR_PRODUCER__MARK_PUBLISHED_AFTER_MS", "200")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("conveyor starts");
        let output = ChildOutput::default();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        output.collect(stdout);
        output.collect(stderr);
        (child, output)
    }

    /// Waits (bounded) until an intake at `base` answers /readyz with 200.
    pub async fn wait_ready(&self, base: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self
                .client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{base} never became ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The database a test's settings name.
pub fn database_name(settings: &Settings) -> String {
    settings
        .database
        .url
        .expose_secret()
        .rsplit('/')
        .next()
        .and_then(|name| name.split('?').next())
        .unwrap_or_default()
        .to_owned()
}

/// Deletes a test namespace's queues (the standard ones and `extra`) and exchanges.
pub async fn delete_broker_objects(settings: &Settings, extra: Vec<String>) {
    let session = broker::Session::open(&settings.broker, "conveyor-test-cleanup")
        .await
        .expect("the test broker answers");
    // The queues of the built-in kinds (webhook deliveries included: left behind, a
    // quorum queue per test run slows every later connection to the shared broker).
    let mut queues: Vec<&str> = ["default", "orders", "emails", jobs::kinds::webhook::QUEUE]
        .into_iter()
        .chain(extra.iter().map(String::as_str))
        .collect();
    queues.sort_unstable();
    queues.dedup();
    session
        .delete_namespace(&app::topology(settings), &queues)
        .await;
    session.close().await;
}

/// Drops a test's database (for tests that start Conveyor without a `TestApp`).
pub async fn drop_database(settings: &Settings) {
    admin(&format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        database_name(settings)
    ))
    .await;
}

/// Runs one statement as the server's administrator (on the `postgres` database).
pub async fn admin(sql: &str) {
    let pool = sqlx::PgPool::connect(&format!("{}/postgres", postgres_base()))
        .await
        .expect("admin connects");
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("`{sql}` failed: {e}"));
    pool.close().await;
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Sends SIGTERM to a child.
pub fn terminate(child: &tokio::process::Child) {
    let pid = child.id().expect("the child is running");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
}

/// The lines a child process printed (stdout and stderr), collected as they come.
#[derive(Debug, Clone, Default)]
pub struct ChildOutput {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    readers: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl ChildOutput {
    fn collect(&self, stream: impl tokio::io::AsyncRead + Unpin + Send + 'static) {
        use tokio::io::AsyncBufReadExt;
        let lines = std::sync::Arc::clone(&self.lines);
        let reader = tokio::spawn(async move {
            let mut stream = tokio::io::BufReader::new(stream).lines();
            while let Ok(Some(line)) = stream.next_line().await {
                lines.lock().unwrap().push(line);
            }
        });
        self.readers.lock().unwrap().push(reader);
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The log lines at `ERROR` level.
    pub fn errors(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| is_error_log(line))
            .collect()
    }

    /// Waits for the streams to end (the child exited); every line is then collected.
    pub async fn finished(&self) -> Vec<String> {
        let readers: Vec<_> = self.readers.lock().unwrap().drain(..).collect();
        for reader in readers {
            tokio::time::timeout(Duration::from_secs(30), reader)
                .await
                .expect("the child's output ends when it exits")
                .expect("the reader finishes");
        }
        self.lines()
    }

    /// Waits (bounded) until a line reports an error; returns the error lines.
    pub async fn wait_for_error(&self, limit: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let errors = self.errors();
            if !errors.is_empty() {
                return errors;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no ERROR line within {limit:?}:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// True when `line` is a log line at `ERROR` level, in the JSON format child processes
/// use (`"level":"ERROR"`) or the pretty one (the level after the timestamp); a table
/// column named ERROR is not one.
pub fn is_error_log(line: &str) -> bool {
    if let Ok(Value::Object(record)) = serde_json::from_str::<Value>(line) {
        return record.get("level").and_then(Value::as_str) == Some("ERROR");
    }
    let mut plain = String::with_capacity(line.len());
    let mut in_escape = false;
    for c in line.chars() {
        match (in_escape, c) {
            (false, '\u{1b}') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, c) => plain.push(c),
        }
    }
    plain.split_whitespace().nth(1) == Some("ERROR")
}

/// One product's stock movement ([`TestApp::stock_move`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockMove {
    /// Units that left the shelf.
    pub taken: i64,
    /// Units in confirmed orders.
    pub sold: i64,
}

/// The books after a run of orders ([`TestApp::order_books`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderBooks {
    /// `order.process` jobs in the ledger.
    pub order_jobs: i64,
    /// Of them, completed.
    pub completed: i64,
    /// Of them, dead.
    pub dead: i64,
    /// Rows in `orders`.
    pub placed: i64,
    /// Of them, confirmed.
    pub confirmed: i64,
    /// Completed `email.send` jobs.
    pub emails_completed: i64,
    /// Jobs with more than one completed attempt (never allowed).
    pub doubled: i64,
    /// Order attempts beyond one per job (re-runs after faults).
    pub re_run_attempts: i64,
    /// `SCARCE`'s stock movement.
    pub scarce: StockMove,
    /// `PLENTY`'s stock movement.
    pub plenty: StockMove,
}

impl std::fmt::Display for OrderBooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "order jobs {}, completed {}, dead {}, orders placed {} ({} confirmed), doubled {}, \
             re-run attempts {}, emails sent {}, SCARCE taken {} / sold {}, PLENTY taken {} / sold {}",
            self.order_jobs,
            self.completed,
            self.dead,
            self.placed,
            self.confirmed,
            self.doubled,
            self.re_run_attempts,
            self.emails_completed,
            self.scarce.taken,
            self.scarce.sold,
            self.plenty.taken,
            self.plenty.sold,
        )
    }
}
