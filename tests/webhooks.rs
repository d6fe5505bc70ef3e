//! Webhooks end to end, with a real HTTP receiver in the test: a subscriber verifies
//! the Standard Webhooks signature with the secret it was shown; a 500 is retried under
//! the same `webhook-id`; an unreachable receiver ends dead and `conveyor dead replay`
//! delivers once it is up; private targets are refused without the setting; a job's
//! `callback_url` is told of its final state; subscriptions filter by kind and state,
//! and deleting one stops its deliveries.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use common::{TestApp, error_fields, free_port, spawn_app, spawn_app_with};
use conveyor::app::Roles;
use serde_json::{Value, json};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Clone, Default)]
struct Script {
    received: Arc<Mutex<Vec<Received>>>,
    /// Answers to give, in order; 200 once they run out.
    answers: Arc<Mutex<VecDeque<(u16, String)>>>,
}

/// A webhook receiver: a real HTTP server on 127.0.0.1 recording every request.
struct Receiver {
    addr: SocketAddr,
    script: Script,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Self {
        Self::start_on(0).await
    }

    async fn start_on(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the receiver binds");
        let addr = listener.local_addr().unwrap();
        let script = Script::default();
        async fn hook(
            State(script): State<Script>,
            uri: axum::http::Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> (StatusCode, String) {
            script.received.lock().unwrap().push(Received {
                path: uri.path().to_owned(),
                headers,
                body,
            });
            let (status, body) = script
                .answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or((200, String::new()));
            (StatusCode::from_u16(status).unwrap(), body)
        }
        let router = axum::Router::new()
            .fallback(axum::routing::post(hook))
            .with_state(script.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, script, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn answer(&self, status: u16, body: &str) {
        self.script
            .answers
            .lock()
            .unwrap()
            .push_back((status, body.to_owned()));
    }

    fn received(&self) -> Vec<Received> {
        self.script.received.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` requests to `path` have arrived.
    async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got: Vec<Received> = self
                .received()
                .into_iter()
                .filter(|r| r.path == path)
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} received {} requests, not {n}, within 30s",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An app whose webhooks may call 127.0.0.1 (the receiver).
async fn app_allowing_private(configure: impl FnOnce(&mut conveyor::config::Settings)) -> TestApp {
    spawn_app_with(
        |s| {
            s.webhooks.allow_private_targets = true;
            s.webhooks.connect_timeout_ms = 1_000;
            s.webhooks.response_timeout_ms = 5_000;
            configure(s);
        },
        Roles::ALL,
    )
    .await
}

async fn subscribe(app: &TestApp, body: Value) -> Value {
    let response = app
        .client
        .post(format!("{}/v1/webhooks", app.address))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// The signature a receiver computes itself, per the Standard Webhooks specification.
fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .expect("base64");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let tag = ring::hmac::sign(&key, &signed);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    )
}

/// The `webhook.deliver` jobs about job `id`, oldest first: (delivery id, state, url).
async fn deliveries_about(app: &TestApp, id: &str) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT id::text, state, args->>'url' FROM jobs \
         WHERE kind = 'webhook.deliver' AND args->'event'->'data'->>'id' = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(app.store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_subscriber_verifies_the_signature_with_the_secret_it_was_shown() {
    let app = app_allowing_private(|_| {}).await;
    let receiver = Receiver::start().await;
    let created = subscribe(
        &app,
        json!({"url": receiver.url("/hook"), "kind": "noop", "states": ["completed"]}),
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    // The secret is shown once: never listed.
    let listed: Value = app
        .client
        .get(format!("{}/v1/webhooks", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["webhooks"][0]["id"], created["id"]);
    assert!(!listed.to_string().contains(&secret));

    let id = app.enqueue(common::noop()).await;
    let got = receiver.wait_for("/hook", 1).await;
    let delivery = &got[0];
    let (webhook_id, timestamp) = (
        delivery.header("webhook-id"),
        delivery.header("webhook-timestamp"),
    );
    assert!(webhook_id.starts_with("msg_"), "{webhook_id}");
    let sent_at: i64 = timestamp.parse().expect("unix seconds");
    assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 300);
    assert_eq!(
        delivery.header("webhook-signature"),
        expected_signature(&secret, &webhook_id, &timestamp, &delivery.body)
    );
    // A receiver holding another secret rejects it.
    let other = access::webhooks::generate_secret().unwrap();
    assert_ne!(
        delivery.header("webhook-signature"),
        expected_signature(&other, &webhook_id, &timestamp, &delivery.body)
    );
    let event = delivery.json();
    assert_eq!(event["type"], "job.completed");
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(event["data"]["kind"], "noop");
    assert_eq!(event["data"]["state"], "completed");
    assert_eq!(event["data"]["attempt"], 1);
    assert!(event["timestamp"].is_string(), "{event}");
    // The delivery is a job of its own, completed.
    let deliveries = deliveries_about(&app, &id).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    app.wait_for_state(&deliveries[0].0, "completed").await;
    // Its creation is audited.
    let audited = app
        .count("SELECT count(*) FROM audit_log WHERE action = 'webhook.create'")
        .await;
    assert_eq!(audited, 1);
    app.teardown().await;
}

#[tokio::test]
async fn a_500_is_retried_under_the_same_webhook_id_and_keeps_1_kib_of_the_answer() {
    let app = app_allowing_private(|_| {}).await;
    let receiver = Receiver::start().await;
    receiver.answer(500, &"x".repeat(5_000));
    subscribe(&app, json!({"url": receiver.url("/hook"), "kind": "noop"})).await;

    let id = app.enqueue(common::noop()).await;
    let got = receiver.wait_for("/hook", 2).await;
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert_eq!(got[0].body, got[1].body, "the same event both times");
    let deliveries = deliveries_about(&app, &id).await;
    let delivery = &deliveries[0].0;
    let done = app.wait_for_state(delivery, "completed").await;
    assert_eq!(done["attempt"], 2, "{done}");
    let attempts = app.attempts(delivery).await;
    assert_eq!(attempts[0].1, "retry");
    let error = attempts[0].2.clone().unwrap();
    assert!(error.starts_with("HTTP 500: xxx"), "{error}");
    assert!(
        error.len() <= "HTTP 500: ".len() + 1024,
        "{} bytes kept",
        error.len()
    );
    app.teardown().await;
}

#[tokio::test]
async fn an_unreachable_receiver_ends_dead_and_dead_replay_delivers_it() {
    let app = app_allowing_private(|_| {}).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    subscribe(&app, json!({"url": url, "kind": "noop", "max_attempts": 2})).await;

    let id = app.enqueue(common::noop()).await;
    app.wait_for_state(&id, "completed").await;
    let delivery = deliveries_about(&app, &id).await[0].0.clone();
    app.wait_for_state(&delivery, "dead").await;
    let attempts = app.attempts(&delivery).await;
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts[1].2.as_deref().unwrap().contains("cannot connect"),
        "{attempts:?}"
    );

    let receiver = Receiver::start_on(port).await;
    let replayed = app.cli_json(&["dead", "replay", &delivery, "--json"]).await;
    assert_eq!(replayed["replayed"], 1, "{replayed}");
    let got = receiver.wait_for("/hook", 1).await;
    assert_eq!(got[0].json()["data"]["id"], id.as_str());
    assert_eq!(
        got[0].header("webhook-id"),
        format!("msg_{}", delivery.replace('-', "")),
        "a replay keeps the delivery's id"
    );
    app.wait_for_state(&delivery, "completed").await;
    app.teardown().await;
}

#[tokio::test]
async fn private_targets_are_refused_without_the_setting() {
    let app = spawn_app().await;
    for target in [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest",
        "http://[::1]/hook",
        "http://[::ffff:192.168.0.1]/hook",
        "http://localhost/hook",
    ] {
        let response = app
            .post_job(&json!({"kind": "noop", "args": {}, "callback_url": target}))
            .await;
        assert_eq!(response.status(), 422, "{target}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(error_fields(&body), ["callback_url"], "{body}");
        assert!(body.to_string().contains("allow_private_targets"), "{body}");

        let response = app
            .client
            .post(format!("{}/v1/webhooks", app.address))
            .json(&json!({"url": target}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{target}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(error_fields(&body), ["url"], "{body}");
    }
    // A batch names the job.
    let response = app
        .client
        .post(format!("{}/v1/jobs/batch", app.address))
        .json(&json!({"jobs": [{"kind": "noop"}, {"kind": "noop", "callback_url": "http://10.0.0.1/"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_fields(&body), ["jobs[1].callback_url"], "{body}");
    // Malformed URLs and enqueuing deliveries by hand are refused too.
    for (body, field) in [
        (
            json!({"kind": "noop", "callback_url": "ftp://example.com/"}),
            "callback_url",
        ),
        (
            json!({"kind": "noop", "callback_url": "not a url"}),
            "callback_url",
        ),
        (
            json!({"kind": "webhook.deliver", "args": {"url": "https://example.com/", "event": {}}}),
            "kind",
        ),
    ] {
        let response = app.post_job(&body).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(error_fields(&problem), [field], "{problem}");
    }
    let (ok, _, stderr) = app
        .cli(&["webhooks", "add", "--url", "http://127.0.0.1:9/hook"])
        .await;
    assert!(!ok);
    assert!(
        stderr.contains("--url") && stderr.contains("loopback"),
        "{stderr}"
    );
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_subscriptions")
            .await,
        0
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_callback_url_is_told_of_completion_and_of_a_cancel_signed_with_the_callback_secret() {
    let secret = access::webhooks::generate_secret().unwrap();
    let configured = secret.clone();
    let app = app_allowing_private(move |s| {
        s.webhooks.callback_secret = Some(configured.into());
    })
    .await;
    let receiver = Receiver::start().await;

    let response = app
        .post_job(&json!({"kind": "noop", "args": {}, "callback_url": receiver.url("/done")}))
        .await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = receiver.wait_for("/done", 1).await;
    let event = got[0].json();
    assert_eq!(event["type"], "job.completed");
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(
        got[0].header("webhook-signature"),
        expected_signature(
            &secret,
            &got[0].header("webhook-id"),
            &got[0].header("webhook-timestamp"),
            &got[0].body
        )
    );

    // A job cancelled by an operator before it ran.
    let response = app
        .post_job(&json!({"kind": "noop", "delay_ms": 3_600_000, "callback_url": receiver.url("/cancelled")}))
        .await;
    let later = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancel = app
        .client
        .post(format!("{}/v1/jobs/{later}/cancel", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let got = receiver.wait_for("/cancelled", 1).await;
    assert_eq!(got[0].json()["type"], "job.cancelled");
    assert_eq!(got[0].json()["data"]["id"], later.as_str());
    // Only final states are told: one delivery each.
    assert_eq!(deliveries_about(&app, &id).await.len(), 1);
    assert_eq!(deliveries_about(&app, &later).await.len(), 1);
    app.teardown().await;
}

#[tokio::test]
async fn subscriptions_filter_by_kind_and_state_and_deleting_one_stops_its_deliveries() {
    let app = app_allowing_private(|_| {}).await;
    let receiver = Receiver::start().await;
    let completed_noops = subscribe(
        &app,
        json!({"url": receiver.url("/noop"), "kind": "noop", "states": ["completed"]}),
    )
    .await;
    subscribe(
        &app,
        json!({"url": receiver.url("/dead"), "kind": "test.*", "states": ["dead"]}),
    )
    .await;
    subscribe(
        &app,
        json!({"url": receiver.url("/accepted"), "kind": "test.fail", "states": ["enqueued"]}),
    )
    .await;

    let noop = app.enqueue(common::noop()).await;
    let fail = app
        .enqueue(json!({"kind": "test.fail", "args": {"message": "boom"}}))
        .await;
    let got = receiver.wait_for("/noop", 1).await;
    assert_eq!(got[0].json()["data"]["id"], noop.as_str());
    let got = receiver.wait_for("/dead", 1).await;
    let event = got[0].json();
    assert_eq!(event["type"], "job.dead");
    assert_eq!(event["data"]["id"], fail.as_str());
    assert_eq!(event["data"]["error"], "boom");
    let got = receiver.wait_for("/accepted", 1).await;
    assert_eq!(got[0].json()["type"], "job.enqueued");
    assert_eq!(got[0].json()["data"]["id"], fail.as_str());
    // Exactly the matching ones: one delivery per job, none for the deliveries
    // themselves.
    assert_eq!(deliveries_about(&app, &noop).await.len(), 1);
    assert_eq!(deliveries_about(&app, &fail).await.len(), 2);

    let id = completed_noops["id"].as_str().unwrap();
    let deleted = app
        .client
        .delete(format!("{}/v1/webhooks/{id}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let gone = app
        .client
        .get(format!("{}/v1/webhooks/{id}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    let second = app.enqueue(common::noop()).await;
    app.wait_for_state(&second, "completed").await;
    // The completion and its deliveries commit together: none were owed.
    assert!(deliveries_about(&app, &second).await.is_empty());
    assert_eq!(receiver.wait_for("/noop", 1).await.len(), 1);
    let audited = app
        .count("SELECT count(*) FROM audit_log WHERE action = 'webhook.delete'")
        .await;
    assert_eq!(audited, 1);
    app.teardown().await;
}

#[tokio::test]
async fn the_cli_adds_lists_and_removes_webhooks_and_shows_the_secret_once() {
    let app = spawn_app_with(|s| s.webhooks.allow_private_targets = false, Roles::NONE).await;
    let added = app
        .cli_json(&[
            "webhooks",
            "add",
            "--url",
            "https://203.0.113.10/hook",
            "--kind",
            "order.*",
            "--states",
            "completed,dead",
            "--by",
            "ana",
            "--json",
        ])
        .await;
    assert!(added["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(added["states"], json!(["completed", "dead"]));
    let id = added["id"].as_str().unwrap().to_owned();
    let (ok, listed, _) = app.cli(&["webhooks", "list"]).await;
    assert!(
        ok && listed.contains(&id) && listed.contains("order.*"),
        "{listed}"
    );
    assert!(!listed.contains("whsec_"), "{listed}");
    let (ok, _, stderr) = app
        .cli(&[
            "webhooks",
            "add",
            "--url",
            "https://203.0.113.10/",
            "--states",
            "running",
        ])
        .await;
    assert!(!ok && stderr.contains("--states"), "{stderr}");
    let (ok, out, _) = app.cli(&["webhooks", "remove", &id, "--by", "ana"]).await;
    assert!(ok, "{out}");
    let (ok, _, stderr) = app.cli(&["webhooks", "remove", &id]).await;
    assert!(!ok && stderr.contains("no webhook"), "{stderr}");
    let actors: Vec<(String, String)> =
        sqlx::query_as("SELECT action, actor FROM audit_log ORDER BY id")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    assert_eq!(
        actors,
        [
            ("webhook.create".to_owned(), "ana".to_owned()),
            ("webhook.delete".to_owned(), "ana".to_owned())
        ]
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_viewer_key_cannot_manage_webhooks() {
    let (_, hash) = producer::auth::new_key().unwrap();
    let app = spawn_app_with(move |s| s.producer.api_keys = vec![hash], Roles::INTAKE).await;
    let admin = access::Principal::cli("test");
    let viewer = access::manage::create_key(
        &app.store,
        &admin,
        &admin.audit(None),
        access::CreateKey {
            name: "support".into(),
            role: "viewer".into(),
            ..Default::default()
        },
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let key = viewer.key.expose().to_owned();
    let existing = webhook_made_by_cli(&app).await;
    let list = format!("{}/v1/webhooks", app.address);
    // The intake loads new keys within a second: 401 until then, then the verdict.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = app
            .client
            .get(&list)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status();
        if status != 401 || tokio::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 403);
    let create = app
        .client
        .post(&list)
        .bearer_auth(&key)
        .json(&json!({"url": "https://203.0.113.10/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 403);
    let problem: Value = create.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("webhooks:manage"),
        "{problem}"
    );
    for request in [
        app.client.get(format!("{list}/{existing}")),
        app.client.delete(format!("{list}/{existing}")),
    ] {
        assert_eq!(
            request.bearer_auth(&key).send().await.unwrap().status(),
            403
        );
    }
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_subscriptions")
            .await,
        1
    );
    app.teardown().await;
}

async fn webhook_made_by_cli(app: &TestApp) -> String {
    let added = app
        .cli_json(&[
            "webhooks",
            "add",
            "--url",
            "https://203.0.113.10/hook",
            "--json",
        ])
        .await;
    added["id"].as_str().unwrap().to_owned()
}
