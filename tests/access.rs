//! Who may do what: every route × every role (and a web app's key limited to
//! `order.*`), revocation and expiry in a running intake, the audit log's one row per
//! change, the limit on failed authentications, and keys kept out of the logs.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use access::{Principal, Role, Scope};
use common::{TestApp, spawn_app_with};
use conveyor::app::Roles;
use serde_json::{Value, json};
use sqlx::Row;

/// A key made through the same code as `conveyor keys create`.
async fn make_key(
    app: &TestApp,
    name: &str,
    role: &str,
    kinds: &[&str],
    expires: Option<&str>,
) -> (String, uuid::Uuid) {
    let admin = Principal::cli("test");
    let created = access::manage::create_key(
        &app.store,
        &admin,
        &admin.audit(None),
        access::CreateKey {
            name: name.into(),
            role: role.into(),
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
            queues: Vec::new(),
            expires: expires.map(str::to_owned),
        },
        chrono::Utc::now(),
    )
    .await
    .expect("the key is created");
    (created.key.expose().to_owned(), created.record.id)
}

/// A subscription made through the same code as `conveyor webhooks add`.
async fn make_webhook(app: &TestApp) -> uuid::Uuid {
    let admin = Principal::cli("test");
    access::webhooks::create_webhook(
        &app.store,
        &admin,
        &admin.audit(None),
        &jobs::kinds::webhook::TargetPolicy::default(),
        access::webhooks::CreateWebhook {
            url: "https://203.0.113.10/hook".into(),
            kind: Some("nothing.matches".into()),
            ..Default::default()
        },
    )
    .await
    .expect("the webhook is created")
    .record
    .id
}

/// One job of each kind the matrix touches, in the states its routes need.
struct Fixture {
    /// Dead jobs (with open dead letters) by kind.
    dead: BTreeMap<&'static str, uuid::Uuid>,
    /// Scheduled jobs by kind.
    waiting: BTreeMap<&'static str, uuid::Uuid>,
}

const ORDER: &str = "order.process";
const EMAIL: &str = "email.send";

fn args_of(kind: &str) -> Value {
    if kind == ORDER {
        json!({"order_id": "o-1", "customer": {"email": "ann@example.com", "name": "Ann"}, "items": [{"sku": "TEE", "quantity": 1}]})
    } else {
        json!({"to": "ann@example.com", "subject": "hi", "text": "hello"})
    }
}

fn queue_of(kind: &str) -> &'static str {
    if kind == ORDER { "orders" } else { "emails" }
}

async fn insert_job(app: &TestApp, kind: &str, state: &str) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO jobs (id, kind, queue, args, state, attempt, max_attempts, attempt_budget, result, last_error) \
         VALUES ($1, $2, $3, $4, $5, 1, 1, 1, $6, 'boom')",
    )
    .bind(id)
    .bind(kind)
    .bind(queue_of(kind))
    .bind(sqlx::types::Json(args_of(kind)))
    .bind(state)
    .bind(sqlx::types::Json(json!({"secret": "result"})))
    .execute(app.store.pool())
    .await
    .expect("job row");
    if state == "dead" {
        sqlx::query(
            "INSERT INTO dead_letters (id, job_id, queue, kind, reason, error) VALUES ($1, $2, $3, $4, 'failed', 'boom')",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(id)
        .bind(queue_of(kind))
        .bind(kind)
        .execute(app.store.pool())
        .await
        .expect("dead letter row");
    }
    id
}

async fn fixture(app: &TestApp) -> Fixture {
    let mut dead = BTreeMap::new();
    let mut waiting = BTreeMap::new();
    for kind in [ORDER, EMAIL] {
        dead.insert(kind, insert_job(app, kind, "dead").await);
        waiting.insert(kind, insert_job(app, kind, "scheduled").await);
    }
    Fixture { dead, waiting }
}

/// Everything a refused request must leave as it was.
async fn ledger_state(app: &TestApp) -> String {
    sqlx::query_scalar(
        "SELECT concat_ws('|', \
            (SELECT string_agg(id::text || state || replay_count, ',' ORDER BY id) FROM jobs), \
            (SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL), \
            (SELECT count(*) FROM audit_log), \
            (SELECT count(*) FROM api_keys), \
            (SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL), \
            (SELECT count(*) FROM webhook_subscriptions))",
    )
    .fetch_one(app.store.pool())
    .await
    .expect("ledger state")
}

/// The scope this test expects each documented route to need (`None`: public). A route
/// in the OpenAPI document that is missing here fails the matrix: every new route needs
/// a scope decision.
fn decision(method: &str, path: &str) -> Option<Option<Scope>> {
    Some(match (method, path) {
        ("get", "/healthz" | "/readyz" | "/metrics" | "/openapi.json") => None,
        ("post", "/v1/jobs" | "/v1/jobs/batch") => Some(Scope::JobsEnqueue),
        ("get", "/v1/jobs" | "/v1/jobs/{id}" | "/v1/stats") => Some(Scope::JobsRead),
        ("get", "/v1/jobs/{id}/events" | "/v1/events") => Some(Scope::JobsRead),
        ("post", "/v1/jobs/{id}/cancel") => Some(Scope::JobsCancel),
        ("post", "/v1/jobs/{id}/retry") => Some(Scope::JobsRetry),
        ("get", "/v1/dead" | "/v1/dead/groups" | "/v1/dead/{id}") => Some(Scope::DeadRead),
        ("post", "/v1/dead/replay") => Some(Scope::DeadReplay),
        ("post", "/v1/dead/purge") => Some(Scope::DeadPurge),
        ("post" | "get", "/v1/keys") | ("delete", "/v1/keys/{id}") => Some(Scope::KeysManage),
        ("get", "/v1/audit") => Some(Scope::AuditRead),
        ("post" | "get", "/v1/webhooks") | ("get" | "delete", "/v1/webhooks/{id}") => {
            Some(Scope::WebhooksManage)
        }
        ("get", "/v1/schedules" | "/v1/schedules/{name}") => Some(Scope::JobsRead),
        ("post", "/v1/schedules")
        | ("patch" | "delete", "/v1/schedules/{name}")
        | (
            "post",
            "/v1/schedules/{name}/pause"
            | "/v1/schedules/{name}/resume"
            | "/v1/schedules/{name}/trigger",
        ) => Some(Scope::QueuesManage),
        _ => return None,
    })
}

/// Whether a route's request names a kind (so a key limited to `order.*` is refused
/// for `email.send`).
fn kinded(path: &str) -> bool {
    path.starts_with("/v1/jobs") || path.starts_with("/v1/dead")
}

/// The request for `method path` about a job of `kind`, and its success status.
async fn request(
    app: &TestApp,
    fixture: &Fixture,
    method: &str,
    path: &str,
    kind: &str,
) -> (reqwest::Method, String, Option<Value>, u16) {
    let dead = fixture.dead[kind];
    let waiting = fixture.waiting[kind];
    let (url, body, ok) = match (method, path) {
        ("post", "/v1/jobs") => (
            path.to_owned(),
            Some(json!({"kind": kind, "args": args_of(kind)})),
            202,
        ),
        ("post", "/v1/jobs/batch") => (
            path.to_owned(),
            Some(json!({"jobs": [{"kind": kind, "args": args_of(kind)}]})),
            202,
        ),
        ("get", "/v1/jobs") => (format!("{path}?kind={kind}"), None, 200),
        ("get", "/v1/jobs/{id}") => (format!("/v1/jobs/{waiting}"), None, 200),
        ("get", "/v1/jobs/{id}/events") => (format!("/v1/jobs/{waiting}/events"), None, 200),
        ("get", "/v1/events") => (format!("{path}?kind={kind}"), None, 200),
        ("post", "/v1/jobs/{id}/cancel") => (format!("/v1/jobs/{waiting}/cancel"), None, 200),
        ("post", "/v1/jobs/{id}/retry") => (format!("/v1/jobs/{waiting}/retry"), None, 200),
        ("get", "/v1/stats") => (path.to_owned(), None, 200),
        ("get", "/v1/dead") => (format!("{path}?kind={kind}"), None, 200),
        ("get", "/v1/dead/groups") => (format!("{path}?kind={kind}"), None, 200),
        ("get", "/v1/dead/{id}") => (format!("/v1/dead/{dead}"), None, 200),
        ("post", "/v1/dead/replay") => (path.to_owned(), Some(json!({"ids": [dead]})), 200),
        ("post", "/v1/dead/purge") => (path.to_owned(), Some(json!({"ids": [dead]})), 200),
        ("post", "/v1/keys") => (
            path.to_owned(),
            Some(json!({"name": "made", "role": "viewer"})),
            201,
        ),
        ("get", "/v1/keys") => (path.to_owned(), None, 200),
        ("delete", "/v1/keys/{id}") => {
            let (_, id) = make_key(app, "to-revoke", "viewer", &[], None).await;
            (format!("/v1/keys/{id}"), None, 200)
        }
        ("get", "/v1/audit") => (path.to_owned(), None, 200),
        // A documentation address (TEST-NET-3): public, so no setting is needed.
        ("post", "/v1/webhooks") => (
            path.to_owned(),
            Some(json!({"url": "https://203.0.113.10/hook", "kind": "nothing.matches"})),
            201,
        ),
        ("get" | "delete", "/v1/webhooks/{id}") => {
            let id = make_webhook(app).await;
            (format!("/v1/webhooks/{id}"), None, 200)
        }
        ("post", "/v1/schedules") => (
            path.to_owned(),
            Some(
                json!({"name": format!("s-{}", uuid::Uuid::now_v7().simple()), "cron": "0 0 3 * * *", "kind": "noop"}),
            ),
            201,
        ),
        // A schedule that does not exist: past the guard, the lookup answers 404.
        (_, p) if p.starts_with("/v1/schedules/{name}") => (
            p.replace("{name}", "no-such-schedule"),
            (method == "patch").then(|| json!({"cron": "0 0 4 * * *"})),
            404,
        ),
        ("get", _) => (path.to_owned(), None, 200),
        other => panic!("no request for {other:?}"),
    };
    (method.to_uppercase().parse().unwrap(), url, body, ok)
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut request = app.client.request(method, format!("{}{url}", app.address));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("the intake answers");
    let status = response.status().as_u16();
    // An event stream does not end by itself: its status is the answer.
    let streams = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streams {
        return (status, Value::Null);
    }
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn redacted_as_expected(url: &str, body: &Value, may_read_args: bool) {
    let views: Vec<&Value> = match body.get("jobs").and_then(Value::as_array) {
        Some(jobs) => jobs.iter().collect(),
        None if body.get("args").is_some() => vec![body],
        None if body.get("payload").is_some() => {
            assert_eq!(body["redacted"], !may_read_args, "{url}: {body}");
            assert_eq!(body["payload"].is_null(), !may_read_args, "{url}: {body}");
            return;
        }
        None => return,
    };
    for view in views {
        assert_eq!(view["redacted"], !may_read_args, "{url}: {view}");
        assert_eq!(
            view["args"].is_null(),
            !may_read_args,
            "{url}: args of {view}"
        );
        if !may_read_args {
            assert!(view["result"].is_null(), "{url}: result of {view}");
        }
    }
}

/// An intake protected from the start by a configured admin key (so a stored key
/// that works is known to be checked, not waved through by an open intake).
async fn protected_app(configure: impl FnOnce(&mut conveyor::config::Settings)) -> TestApp {
    let (_, hash) = producer::auth::new_key().unwrap();
    spawn_app_with(
        move |s| {
            s.producer.api_keys = vec![hash];
            // Waiting for a new key to load is answered 401 meanwhile.
            s.producer.auth_failures = producer::settings::RateLimit {
                per_second: 100_000,
                burst: 100_000,
            };
            configure(s);
        },
        Roles::INTAKE,
    )
    .await
}

/// Waits (bounded) until the intake accepts `key` (it reloads stored keys every
/// `producer.key_refresh_ms`).
async fn wait_until_accepted(app: &TestApp, key: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = send(
            app,
            reqwest::Method::GET,
            &format!("/v1/jobs/{}", uuid::Uuid::now_v7()),
            None,
            Some(key),
        )
        .await;
        if status != 401 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the intake never accepted a new key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded by `limit`) until the intake refuses `key` with 401.
async fn wait_until_refused(app: &TestApp, key: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (status, body) = send(app, reqwest::Method::GET, "/v1/stats", None, Some(key)).await;
        if status == 401 {
            return;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key still worked after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one table of every route against every role, checked in one pass"
)]
async fn every_route_answers_each_role_exactly_and_refusals_store_nothing() {
    let (config_key, config_hash) = producer::auth::new_key().unwrap();
    let app = spawn_app_with(
        move |s| {
            s.producer.api_keys = vec![config_hash];
            // The matrix sends hundreds of bad keys on purpose.
            s.producer.auth_failures = producer::settings::RateLimit {
                per_second: 100_000,
                burst: 100_000,
            };
        },
        Roles::INTAKE,
    )
    .await;
    let mut principals: Vec<(String, Option<Role>, Vec<&str>, String)> = Vec::new();
    for role in Role::ALL {
        let (key, _) = make_key(&app, role.as_str(), role.as_str(), &[], None).await;
        principals.push((role.as_str().to_owned(), Some(role), Vec::new(), key));
    }
    let (web, _) = make_key(&app, "web-shop", "producer", &["order.*"], None).await;
    principals.push((
        "web-shop (order.*)".into(),
        Some(Role::Producer),
        vec!["order.*"],
        web,
    ));
    principals.push((
        "producer.api_keys[0]".into(),
        Some(Role::Admin),
        Vec::new(),
        config_key,
    ));
    // The intake sees keys created after it started within its refresh interval.
    for (_, _, _, key) in &principals {
        wait_until_accepted(&app, key).await;
    }

    let spec: Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = spec["paths"].as_object().unwrap();
    let mut checked = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let scope = decision(method, path)
                .unwrap_or_else(|| panic!("{method} {path} has no scope decision in this test"));
            let security = operation.get("security");
            match scope {
                None => {
                    assert!(
                        security.is_none(),
                        "{method} {path} is public but declares {security:?}"
                    );
                    continue;
                }
                Some(scope) => assert_eq!(
                    security.unwrap(),
                    &json!([{"bearer": [scope.as_str()]}]),
                    "{method} {path} declares its scope truthfully"
                ),
            }
            let scope = scope.unwrap();
            let kinds: &[&str] = if kinded(path) {
                &[ORDER, EMAIL]
            } else {
                &[ORDER]
            };
            for kind in kinds {
                // No key, and a key that is not one: 401.
                for key in [None, Some("cvk_not_a_key")] {
                    let fixture = fixture(&app).await;
                    let (m, url, body, _) = request(&app, &fixture, method, path, kind).await;
                    let before = ledger_state(&app).await;
                    let (status, problem) = send(&app, m, &url, body.as_ref(), key).await;
                    assert_eq!(status, 401, "{method} {url} with key {key:?}: {problem}");
                    assert_eq!(
                        ledger_state(&app).await,
                        before,
                        "{method} {url}: a 401 stored something"
                    );
                }
                for (name, role, globs, key) in &principals {
                    let fixture = fixture(&app).await;
                    let (m, url, body, ok) = request(&app, &fixture, method, path, kind).await;
                    let role = role.unwrap();
                    let has_scope = role.scopes().contains(scope);
                    let in_reach = globs.is_empty() || !kinded(path) || kind.starts_with("order.");
                    let may_manage = scope != Scope::KeysManage || globs.is_empty();
                    let before = ledger_state(&app).await;
                    let audit_before = app.count("SELECT count(*) FROM audit_log").await;
                    let (status, answer) = send(&app, m, &url, body.as_ref(), Some(key)).await;
                    checked += 1;
                    if has_scope && in_reach && may_manage {
                        assert_eq!(status, ok, "{name}: {method} {url}: {answer}");
                        redacted_as_expected(
                            &url,
                            &answer,
                            role.scopes().contains(Scope::JobsReadArgs),
                        );
                        // Enqueues and schedule changes write no audit row (yet).
                        let audited = method != "get"
                            && path != "/v1/jobs"
                            && path != "/v1/jobs/batch"
                            && !path.starts_with("/v1/schedules");
                        if audited {
                            assert_eq!(
                                app.count("SELECT count(*) FROM audit_log").await,
                                audit_before + 1,
                                "{name}: {method} {url} writes exactly one audit row"
                            );
                            let actor: String = sqlx::query_scalar(
                                "SELECT actor FROM audit_log ORDER BY id DESC LIMIT 1",
                            )
                            .fetch_one(app.store.pool())
                            .await
                            .unwrap();
                            let expected_actor = if name.starts_with("web-shop") {
                                "web-shop"
                            } else {
                                name.as_str()
                            };
                            assert_eq!(actor, expected_actor);
                        }
                    } else {
                        assert_eq!(status, 403, "{name}: {method} {url}: {answer}");
                        let detail = answer["detail"].as_str().unwrap_or_default();
                        if !has_scope {
                            assert!(
                                detail.contains(scope.as_str()),
                                "{name}: {method} {url}: {detail}"
                            );
                        } else if !in_reach {
                            assert!(
                                detail.contains(&format!("kind {EMAIL}")),
                                "{name}: {method} {url}: {detail}"
                            );
                            if path == "/v1/jobs" && method == "post" {
                                assert!(
                                    detail.starts_with("this key may not enqueue kind email.send"),
                                    "{detail}"
                                );
                            }
                        }
                        assert_eq!(
                            ledger_state(&app).await,
                            before,
                            "{name}: {method} {url}: a 403 stored something"
                        );
                    }
                }
            }
        }
    }
    assert!(checked > 100, "the matrix ran {checked} requests");
    app.teardown().await;
}

#[tokio::test]
async fn a_revoked_or_expired_key_is_refused_within_a_second_by_a_running_intake() {
    let app = protected_app(|_| {}).await;
    let (revoked, id) = make_key(&app, "soon-revoked", "viewer", &[], None).await;
    let (expiring, _) = make_key(&app, "soon-expired", "viewer", &[], Some("3s")).await;
    wait_until_accepted(&app, &revoked).await;
    wait_until_accepted(&app, &expiring).await;

    let outcome = app
        .store
        .revoke_key(id, &Principal::cli("test").audit(None))
        .await
        .unwrap();
    assert!(matches!(outcome, store::RevokeOutcome::Revoked(_)));
    wait_until_refused(&app, &revoked, Duration::from_secs(1)).await;

    let expires_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT expires_at FROM api_keys WHERE name = 'soon-expired'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    let until_expiry = (expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    wait_until_refused(&app, &expiring, until_expiry + Duration::from_secs(1)).await;
    let (status, body) = send(
        &app,
        reqwest::Method::GET,
        "/v1/stats",
        None,
        Some(&expiring),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["detail"], "the API key has expired");
    app.teardown().await;
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one change of each kind and its audit row, in order"
)]
async fn each_change_writes_one_audit_row_with_it_and_a_failed_change_none() {
    let app = protected_app(|_| {}).await;
    let (operator, operator_id) = make_key(&app, "ops-key", "operator", &[], None).await;
    wait_until_accepted(&app, &operator).await;
    let audit = || app.count("SELECT count(*) FROM audit_log");
    let start = audit().await;

    // A change through the API: one row naming the key, its id and the request id.
    let waiting = insert_job(&app, ORDER, "scheduled").await;
    let response = app
        .client
        .post(format!("{}/v1/jobs/{waiting}/cancel", app.address))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let row = sqlx::query("SELECT actor_kind, actor_id, actor, action, targets, count, request_id FROM audit_log ORDER BY id DESC LIMIT 1")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("actor_kind"), "key");
    assert_eq!(
        row.get::<Option<uuid::Uuid>, _>("actor_id"),
        Some(operator_id)
    );
    assert_eq!(row.get::<String, _>("actor"), "ops-key");
    assert_eq!(row.get::<String, _>("action"), "job.cancel");
    assert_eq!(row.get::<Vec<uuid::Uuid>, _>("targets"), vec![waiting]);
    assert_eq!(row.get::<i64, _>("count"), 1);
    assert_eq!(row.get::<Option<String>, _>("request_id"), Some(request_id));
    assert_eq!(audit().await, start + 1);

    // Changes that fail leave none: cancelling it again (409), retrying a completed
    // job (409), replaying a job that is not dead (all skipped).
    let done = insert_job(&app, ORDER, "completed").await;
    for (url, body) in [
        (format!("/v1/jobs/{waiting}/cancel"), None),
        (format!("/v1/jobs/{done}/retry"), None),
        ("/v1/dead/replay".to_owned(), Some(json!({"ids": [done]}))),
    ] {
        let (status, answer) = send(
            &app,
            reqwest::Method::POST,
            &url,
            body.as_ref(),
            Some(&operator),
        )
        .await;
        assert!(
            status == 409 || (status == 200 && answer["replayed"] == 0),
            "{url}: {status} {answer}"
        );
    }
    assert_eq!(
        audit().await,
        start + 1,
        "a change that did not happen has no audit row"
    );

    // A change whose audit row cannot be written does not happen either: both commit
    // together or not at all.
    sqlx::query("CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit refused'; END; $$")
        .execute(app.store.pool())
        .await
        .unwrap();
    sqlx::query("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit()")
        .execute(app.store.pool())
        .await
        .unwrap();
    let dead = insert_job(&app, EMAIL, "dead").await;
    let other = insert_job(&app, EMAIL, "scheduled").await;
    let (replay, _) = send(
        &app,
        reqwest::Method::POST,
        "/v1/dead/replay",
        Some(&json!({"ids": [dead]})),
        Some(&operator),
    )
    .await;
    let (cancel, _) = send(
        &app,
        reqwest::Method::POST,
        &format!("/v1/jobs/{other}/cancel"),
        None,
        Some(&operator),
    )
    .await;
    assert_eq!((replay, cancel), (500, 500));
    assert_eq!(
        app.state_of(&dead.to_string()).await,
        "dead",
        "the replay rolled back with its audit row"
    );
    assert_eq!(
        app.state_of(&other.to_string()).await,
        "scheduled",
        "the cancel rolled back with its audit row"
    );
    let open: i64 = app
        .count(&format!(
            "SELECT count(*) FROM dead_letters WHERE job_id = '{dead}' AND resolved_at IS NULL"
        ))
        .await;
    assert_eq!(open, 1);
    sqlx::query("DROP TRIGGER refuse_audit ON audit_log")
        .execute(app.store.pool())
        .await
        .unwrap();

    // Conveyor never rewrites history: the table refuses updates and deletes.
    let update = sqlx::query("UPDATE audit_log SET actor = 'someone else'")
        .execute(app.store.pool())
        .await;
    let delete = sqlx::query("DELETE FROM audit_log")
        .execute(app.store.pool())
        .await;
    assert!(
        update.is_err() && delete.is_err(),
        "audit rows are append-only"
    );

    // The API reads it back, newest first.
    let (status, page) = send(
        &app,
        reqwest::Method::GET,
        "/v1/audit?action=job.cancel",
        None,
        Some(&operator),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page["entries"][0]["actor"], "ops-key");
    app.teardown().await;
}

#[tokio::test]
async fn two_identical_bulk_replays_at_once_replay_each_job_once() {
    let app = protected_app(|_| {}).await;
    let (operator, _) = make_key(&app, "ops", "operator", &[], None).await;
    wait_until_accepted(&app, &operator).await;
    let mut dead = Vec::new();
    for _ in 0..200 {
        dead.push(insert_job(&app, EMAIL, "dead").await);
    }
    let body = json!({"filter": {"kind": EMAIL}});

    let (a, b) = tokio::join!(
        send(
            &app,
            reqwest::Method::POST,
            "/v1/dead/replay",
            Some(&body),
            Some(&operator)
        ),
        send(
            &app,
            reqwest::Method::POST,
            "/v1/dead/replay",
            Some(&body),
            Some(&operator)
        ),
    );

    assert_eq!((a.0, b.0), (200, 200), "{} {}", a.1, b.1);
    let replayed = a.1["replayed"].as_u64().unwrap() + b.1["replayed"].as_u64().unwrap();
    assert_eq!(
        replayed, 200,
        "each dead job replayed by exactly one of them"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE replay_count = 1 AND state = 'scheduled'")
            .await,
        200
    );
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE replay_count > 1")
            .await,
        0
    );
    // One audit row per replay that changed something, their counts adding up.
    assert_eq!(
        app.count(
            "SELECT coalesce(sum(count), 0)::bigint FROM audit_log WHERE action = 'dead.replay'"
        )
        .await,
        200
    );
    // A dead letter arriving after the snapshot is not swept in by a bulk request.
    let late = insert_job(&app, EMAIL, "dead").await;
    let (status, again) = send(
        &app,
        reqwest::Method::POST,
        "/v1/dead/replay",
        Some(&json!({"ids": dead[..3]})),
        Some(&operator),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again["replayed"], 0, "already replayed: {again}");
    assert_eq!(app.state_of(&late.to_string()).await, "dead");
    app.teardown().await;
}

#[tokio::test]
async fn failed_authentications_are_limited_per_address() {
    let (key, hash) = producer::auth::new_key().unwrap();
    let app = spawn_app_with(
        move |s| {
            s.producer.api_keys = vec![hash];
            s.producer.auth_failures = producer::settings::RateLimit {
                per_second: 1,
                burst: 5,
            };
        },
        Roles::INTAKE,
    )
    .await;

    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..8 {
        let response = app
            .client
            .get(format!("{}/v1/stats", app.address))
            .bearer_auth(format!("cvk_guess_{i}"))
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            retry_after = response.headers().get("retry-after").cloned();
        }
        statuses.push(response.status().as_u16());
    }
    let (after, _) = send(&app, reqwest::Method::GET, "/v1/stats", None, Some(&key)).await;

    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    assert!(retry_after.is_some(), "429 says when to come back");
    assert_eq!(
        after, 429,
        "a locked-out address learns nothing, even with a valid key"
    );
    app.teardown().await;
}

#[tokio::test]
async fn without_any_key_the_document_says_authentication_is_optional() {
    let open = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let (_, hash) = producer::auth::new_key().unwrap();
    let protected = spawn_app_with(move |s| s.producer.api_keys = vec![hash], Roles::INTAKE).await;

    for (app, expected) in [
        (&open, json!([{"bearer": ["jobs:enqueue"]}, {}])),
        (&protected, json!([{"bearer": ["jobs:enqueue"]}])),
    ] {
        let spec: Value = app
            .client
            .get(format!("{}/openapi.json", app.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(spec["paths"]["/v1/jobs"]["post"]["security"], expected);
    }
    // And an open intake closes once a key exists: no restart.
    let (key, _) = make_key(&open, "first", "admin", &[], None).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = send(&open, reqwest::Method::GET, "/v1/stats", None, None).await;
        if status == 401 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the intake stayed open after a key was created"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = send(&open, reqwest::Method::GET, "/v1/stats", None, Some(&key)).await;
    assert_eq!(status, 200);
    open.teardown().await;
    protected.teardown().await;
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one operator session at the CLI, read top to bottom"
)]
async fn keys_and_audit_work_from_the_cli_and_no_key_reaches_a_child_process_logs() {
    let app = spawn_app_with(|_| {}, Roles::NONE).await;
    let created = app
        .cli_json(&[
            "keys",
            "create",
            "--name",
            "web",
            "--role",
            "producer",
            "--kinds",
            "order.*",
            "--expires",
            "90d",
            "--by",
            "ana",
            "--json",
        ])
        .await;
    let web = created["key"].as_str().unwrap().to_owned();
    let web_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["kinds"], json!(["order.*"]));
    let admin = app
        .cli_json(&[
            "keys", "create", "--name", "root", "--role", "admin", "--json",
        ])
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, _, stderr) = app
        .cli(&[
            "keys", "create", "--name", "x", "--role", "root", "--kinds", "a%",
        ])
        .await;
    assert!(!ok);
    assert!(
        stderr.contains("--role") && stderr.contains("--kinds"),
        "{stderr}"
    );

    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    // Its output is read as it comes: a pipe nobody drains fills up (debug logs) and
    // blocks the child mid-write, and with it every request the test sends.
    let (mut child, output) = app.spawn_child_with_output(
        &["producer", "--listen", &format!("127.0.0.1:{port}")],
        &[("RUST_LOG", "debug".to_owned())],
    );
    app.wait_ready(&base).await;
    let post = |key: String, kind: &'static str| {
        let client = app.client.clone();
        let url = format!("{base}/v1/jobs");
        async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"kind": kind, "args": args_of(kind)}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post(web.clone(), ORDER).await, 202);
    assert_eq!(post(web.clone(), EMAIL).await, 403);
    assert_eq!(post(format!("{web}x"), ORDER).await, 401);
    let listed = app
        .client
        .get(format!("{base}/v1/keys"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let listed = listed.text().await.unwrap();
    assert!(
        !listed.contains(&web) && !listed.contains(&admin),
        "a key list never holds keys"
    );

    let (ok, stdout, stderr) = app.cli(&["keys", "revoke", &web_id, "--by", "ana"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("revoked"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while post(web.clone(), ORDER).await != 401 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child intake still accepts a revoked key"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let listed = app.cli_json(&["keys", "list", "--json"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let (ok, table, _) = app.cli(&["keys", "list"]).await;
    assert!(ok && table.contains("revoked"), "{table}");

    let audit = app.cli_json(&["audit", "list", "--json"]).await;
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["actor"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(actions[0], ("key.revoke", "ana"));
    assert!(actions.contains(&("key.create", "ana")), "{actions:?}");
    let everything: String =
        sqlx::query_scalar("SELECT coalesce(string_agg(a::text, ' '), '') FROM audit_log a")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert!(
        !everything.contains(&web) && !everything.contains(&admin),
        "no key in the audit log"
    );

    common::terminate(&child);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the child intake exits within a minute of SIGTERM")
        .unwrap();
    assert!(status.success());
    let logs = output.finished().await.join("\n");
    assert!(
        logs.contains("authentication failed"),
        "failed authentications are logged"
    );
    for key in [&web, &admin] {
        assert!(!logs.contains(key.as_str()), "a key leaked into the logs");
        assert!(
            !logs.contains(&key[4..20]),
            "part of a key leaked into the logs"
        );
    }
    app.teardown().await;
}
