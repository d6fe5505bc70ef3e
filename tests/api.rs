//! The intake as a door: keys, protected mode, limits, batches, listing, OpenAPI,
//! hygiene.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{spawn_app_with, test_settings};
use conveyor::app::{self, Roles};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fn key_pair() -> (String, String) {
    producer::auth::new_key().unwrap()
}

#[tokio::test]
async fn without_a_valid_key_the_intake_answers_401_and_stores_nothing() {
    let (key, hash) = key_pair();
    let app = spawn_app_with(move |s| s.producer.api_keys = vec![hash], Roles::INTAKE).await;
    let url = format!("{}/v1/jobs", app.address);

    let missing = app
        .client
        .post(&url)
        .json(&common::noop())
        .send()
        .await
        .unwrap();
    let wrong = app
        .client
        .post(&url)
        .bearer_auth("cvk_not_the_key")
        .json(&common::noop())
        .send()
        .await
        .unwrap();
    let listing = app.client.get(&url).send().await.unwrap();
    let health = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    let right = app
        .client
        .post(&url)
        .bearer_auth(&key)
        .json(&common::noop())
        .send()
        .await
        .unwrap();

    for response in [missing, wrong, listing] {
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    assert_eq!(health.status(), 200, "health stays public");
    assert_eq!(right.status(), 202);
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 1);
    app.teardown().await;
}

#[tokio::test]
async fn without_keys_the_intake_refuses_to_listen_beyond_loopback() {
    let mut settings = test_settings();
    settings.producer.listen = "0.0.0.0:0".parse().unwrap();
    app::migrate(&settings).await.unwrap();

    let refused = app::start(settings.clone(), Roles::INTAKE, CancellationToken::new()).await;

    let message = format!("{:#}", refused.expect_err("must refuse"));
    assert!(message.contains("without API keys"), "{message}");
    settings.producer.api_keys = vec![key_pair().1];
    let shutdown = CancellationToken::new();
    let running = app::start(settings.clone(), Roles::INTAKE, shutdown.clone())
        .await
        .expect("starts with keys");
    shutdown.cancel();
    running.wait().await.unwrap();
    common::delete_broker_objects(&settings, Vec::new()).await;
    common::drop_database(&settings).await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_even_when_chunked() {
    let app = spawn_app_with(|s| s.producer.max_body_bytes = 2048, Roles::INTAKE).await;
    let big = json!({"kind": "noop", "args": {"pad": "x".repeat(4096)}});

    let sized = app.post_job(&big).await;
    assert_eq!(sized.status(), 413);
    assert_eq!(sized.headers()["content-type"], "application/problem+json");

    // The same body, chunked, with no content-length.
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = big.to_string();
    let mut request = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for chunk in body.as_bytes().chunks(500) {
        request.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    request.push_str("0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .unwrap()
    .unwrap();

    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("application/problem+json"));
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 0);
    app.teardown().await;
}

#[tokio::test]
async fn over_the_rate_limit_is_429_with_retry_after() {
    let (key, hash) = key_pair();
    let app = spawn_app_with(
        move |s| {
            s.producer.api_keys = vec![hash];
            s.producer.rate_limit = Some(producer::settings::RateLimit {
                per_second: 1,
                burst: 3,
            });
        },
        Roles::INTAKE,
    )
    .await;
    let url = format!("{}/v1/jobs", app.address);

    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..5 {
        let response = app
            .client
            .post(&url)
            .bearer_auth(&key)
            .json(&common::noop())
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
        }
        statuses.push(response.status().as_u16());
    }

    assert_eq!(&statuses[..3], &[202, 202, 202]);
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(
        app.count("SELECT count(*) FROM jobs").await,
        3,
        "limited requests store nothing"
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_batch_is_accepted_whole_and_its_jobs_complete() {
    let app = spawn_app_with(|_| {}, Roles::ALL).await;
    let jobs: Vec<Value> = (0..50)
        .map(|i| json!({"kind": "noop", "args": {"i": i}}))
        .collect();

    let response = app
        .client
        .post(format!("{}/v1/jobs/batch", app.address))
        .json(&json!({"jobs": jobs}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let ids = body["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 50);
    app.wait_for_count(
        "SELECT count(*) FROM jobs WHERE state = 'completed'",
        50,
        Duration::from_secs(30),
    )
    .await;
    let first = app.get_job(ids[0].as_str().unwrap()).await;
    assert_eq!(
        first["args"],
        json!({"i": 0}),
        "ids come back in request order"
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_batch_with_one_bad_job_stores_none_and_names_each_failure() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let url = format!("{}/v1/jobs/batch", app.address);
    let batch = json!({"jobs": [
        {"kind": "noop"},
        {"kind": "test.sleep", "args": {"ms": "slow"}},
        {"kind": "noop"},
        {"kind": "nope"}
    ]});

    let bad = app.client.post(&url).json(&batch).send().await.unwrap();
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"kind": "noop"})).collect();
    let oversized = app
        .client
        .post(&url)
        .json(&json!({"jobs": too_many}))
        .send()
        .await
        .unwrap();
    let empty = app
        .client
        .post(&url)
        .json(&json!({"jobs": []}))
        .send()
        .await
        .unwrap();

    assert_eq!(bad.status(), 422);
    let body: Value = bad.json().await.unwrap();
    let fields = common::error_fields(&body);
    assert_eq!(fields, ["jobs[1].args.ms", "jobs[3].kind"]);
    assert_eq!(oversized.status(), 422);
    let body: Value = oversized.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "jobs");
    assert_eq!(empty.status(), 422);
    assert_eq!(
        app.count("SELECT count(*) FROM jobs").await,
        0,
        "an invalid batch stores nothing"
    );
    assert_eq!(
        app.queue_depth("default").await,
        None,
        "and publishes nothing"
    );
    app.teardown().await;
}

#[tokio::test]
async fn listing_pages_through_2500_jobs_without_gaps_or_repeats() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let batch_url = format!("{}/v1/jobs/batch", app.address);
    let mut posted = HashSet::new();
    for _ in 0..3 {
        let jobs: Vec<Value> = (0..834).map(|_| json!({"kind": "noop"})).collect();
        let body: Value = app
            .client
            .post(&batch_url)
            .json(&json!({"jobs": jobs}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        posted.extend(
            body["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_str().unwrap().to_owned()),
        );
    }
    let other = app
        .enqueue(json!({"kind": "test.sleep", "args": {"ms": 1}}))
        .await;
    posted.insert(other.clone());
    assert_eq!(posted.len(), 2503);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("{}/v1/jobs?limit=100&kind=noop", app.address);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        seen.extend(
            page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 100, "pagination does not end");
    }

    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 2502, "every noop job once");
    assert_eq!(unique.len(), 2502, "no repeats");
    assert!(!unique.contains(&other), "the kind filter holds");
    assert_eq!(pages, 26);
    let bad = app
        .client
        .get(format!("{}/v1/jobs?state=finished&limit=0", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let body: Value = bad.json().await.unwrap();
    let fields = common::error_fields(&body);
    assert_eq!(fields, ["state", "limit"]);
    let enqueued: Value = app
        .client
        .get(format!("{}/v1/jobs?state=enqueued&limit=5", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(enqueued["jobs"].as_array().unwrap().len(), 5);
    app.teardown().await;
}

#[tokio::test]
async fn the_openapi_document_states_the_bounds_the_intake_enforces() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;

    let spec: Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let job = &spec["components"]["schemas"]["CreateJobRequest"]["properties"];
    let kinds: Vec<&str> = job["kind"]["enum"]
        .as_array()
        .expect("the kinds are listed")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(kinds.contains(&"order.process"), "{kinds:?}");
    assert!(kinds.contains(&"noop"), "{kinds:?}");
    assert!(!kinds.contains(&"webhook.deliver"), "{kinds:?}");
    assert_eq!(job["max_attempts"]["maximum"], 100);
    assert_eq!(job["timeout_ms"]["maximum"], 86_400_000);
    assert_eq!(job["idempotency_key"]["maxLength"], 255);
    assert_eq!(job["queue"]["pattern"], "^[a-z0-9_-]{1,64}$");
    let batch = &spec["components"]["schemas"]["BatchRequest"]["properties"]["jobs"];
    assert_eq!(
        (batch["minItems"].clone(), batch["maxItems"].clone()),
        (json!(1), json!(1000))
    );
    let list = spec["paths"]["/v1/jobs"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let limit = list.iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!(
        (
            limit["schema"]["minimum"].clone(),
            limit["schema"]["maximum"].clone()
        ),
        (json!(1), json!(1000))
    );
    let id = &spec["paths"]["/v1/jobs/{id}"]["get"]["parameters"][0]["schema"];
    assert_eq!(id["format"], "uuid", "{id}");
    app.teardown().await;
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_error_shape() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;

    let spec: Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // Every route the intake serves, with its methods.
    let served = [
        ("/v1/jobs", vec!["post", "get"]),
        ("/v1/jobs/batch", vec!["post"]),
        ("/v1/jobs/{id}", vec!["get"]),
        ("/v1/jobs/{id}/cancel", vec!["post"]),
        ("/v1/jobs/{id}/events", vec!["get"]),
        ("/v1/events", vec!["get"]),
        ("/v1/schedules", vec!["post", "get"]),
        ("/v1/schedules/{name}", vec!["get", "patch", "delete"]),
        ("/v1/schedules/{name}/pause", vec!["post"]),
        ("/v1/schedules/{name}/resume", vec!["post"]),
        ("/v1/schedules/{name}/trigger", vec!["post"]),
        ("/v1/jobs/{id}/retry", vec!["post"]),
        ("/v1/dead", vec!["get"]),
        ("/v1/dead/groups", vec!["get"]),
        ("/v1/dead/{id}", vec!["get"]),
        ("/v1/dead/replay", vec!["post"]),
        ("/v1/dead/purge", vec!["post"]),
        ("/v1/stats", vec!["get"]),
        ("/v1/audit", vec!["get"]),
        ("/v1/keys", vec!["post", "get"]),
        ("/v1/keys/{id}", vec!["delete"]),
        ("/v1/webhooks", vec!["post", "get"]),
        ("/v1/webhooks/{id}", vec!["get", "delete"]),
        ("/healthz", vec!["get"]),
        ("/readyz", vec!["get"]),
        ("/metrics", vec!["get"]),
        ("/openapi.json", vec!["get"]),
    ];
    let paths = spec["paths"].as_object().unwrap();
    for (path, methods) in &served {
        for method in methods {
            assert!(
                paths.get(*path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} is missing from the spec"
            );
        }
    }
    let documented: HashSet<&str> = paths.keys().map(String::as_str).collect();
    let expected: HashSet<&str> = served.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        documented, expected,
        "the spec documents a route the test does not know"
    );
    // And each documented route is really served (not the 404 fallback).
    for path in &documented {
        let concrete = path
            .replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{name}", "no-such-schedule");
        let method = paths[*path]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .to_uppercase();
        let response = app
            .client
            .request(
                method.parse().unwrap(),
                format!("{}{concrete}", app.address),
            )
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        // An event stream (the firehose) is served by being one; it never ends by
        // itself, so its body is not read.
        let streams = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if streams {
            continue;
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(
            body["detail"], "no such route",
            "{method} {path} is documented but not served"
        );
    }
    assert!(spec["components"]["schemas"]["Problem"]["properties"]["errors"].is_object());
    let create = &paths["/v1/jobs"]["post"]["responses"];
    for status in [
        "202", "400", "401", "403", "409", "413", "415", "422", "429", "503",
    ] {
        assert!(
            create.get(status).is_some(),
            "POST /v1/jobs documents {status}"
        );
    }
    app.teardown().await;
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_cors_is_off_unless_configured() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let cors_app = spawn_app_with(
        |s| s.producer.cors_origins = vec!["https://app.example.com".into()],
        Roles::INTAKE,
    )
    .await;

    for response in [
        app.post_job(&common::noop()).await,
        app.post_raw(Some("text/plain"), "x").await,
        app.client
            .get(format!("{}/nowhere", app.address))
            .send()
            .await
            .unwrap(),
    ] {
        assert!(
            response.headers().contains_key("x-request-id"),
            "{:?}",
            response.status()
        );
    }
    let preflight = |base: String| {
        let client = app.client.clone();
        async move {
            client
                .request(reqwest::Method::OPTIONS, format!("{base}/v1/jobs"))
                .header("origin", "https://app.example.com")
                .header("access-control-request-method", "POST")
                .send()
                .await
                .unwrap()
        }
    };
    let off = preflight(app.address.clone()).await;
    let on = preflight(cors_app.address.clone()).await;
    assert!(!off.headers().contains_key("access-control-allow-origin"));
    assert_eq!(
        on.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    app.teardown().await;
    cors_app.teardown().await;
}

#[tokio::test]
async fn logs_never_contain_api_keys_or_passwords() {
    let (key, hash) = key_pair();
    let app = spawn_app_with(|_| {}, Roles::NONE).await;
    let password = format!("pw{}", uuid::Uuid::new_v4().simple());
    let db_url = app.settings.database.url.clone();
    let db_url = secrecy::ExposeSecret::expose_secret(&db_url).replacen(
        "postgres@",
        &format!("postgres:{password}@"),
        1,
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The output is read as it comes: a debug-level child blocks on a full pipe.
    let (mut child, output) = app.spawn_child_with_output(
        &["run", "--listen", &format!("127.0.0.1:{port}")],
        &[
            ("CONVEYOR_DATABASE__URL", db_url),
            ("CONVEYOR_PRODUCER__API_KEYS", format!("[\"{hash}\"]")),
            ("RUST_LOG", "debug".to_owned()),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while app
        .client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let ok = app
        .client
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&key)
        .json(&common::noop())
        .send()
        .await
        .unwrap();
    let id = ok.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = app
        .client
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(format!("{key}x"))
        .json(&common::noop())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    app.wait_for_state_at(&base, Some(&key), &id, "completed", Duration::from_secs(30))
        .await;
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    let logs = output.finished().await.join("\n");

    assert!(status.success(), "SIGTERM exits 0");
    assert!(logs.len() > 1000, "debug logs were captured");
    assert!(!logs.contains(&key), "an API key leaked into the logs");
    assert!(
        !logs.contains(&password),
        "the database password leaked into the logs"
    );
    assert!(
        !logs.contains("guest:guest"),
        "the broker password leaked into the logs"
    );
    app.teardown().await;
}
