//! Jobs that talk back: a job's event stream, `wait`, status links and the stream
//! budget, end to end on real Postgres and RabbitMQ (each test its own database and
//! namespace). No sleep synchronises anything: every wait is for a state, bounded.

mod common;

use std::time::Duration;

use common::{TestApp, spawn_app, spawn_app_with};
use conveyor::app::Roles;
use serde_json::{Value, json};

/// One SSE event as a test reads it.
#[derive(Debug, Clone)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: Value,
}

/// An open event stream, read event by event.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    /// The next event within `limit`; `None` when the stream ended.
    async fn next(&mut self, limit: Duration) -> Option<SseEvent> {
        tokio::time::timeout(limit, self.next_unbounded())
            .await
            .unwrap_or_else(|_| panic!("no event within {limit:?}; buffered: {:?}", self.buffer))
    }

    async fn next_unbounded(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: None,
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if data.is_empty() {
                    // A comment (keep-alive) or a retry hint.
                    continue;
                }
                event.data = serde_json::from_str(&data).expect("event data is JSON");
                return Some(event);
            }
            let chunk = self.response.chunk().await.expect("the stream reads")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads events until one is final; returns every state seen, in order.
    async fn states_until_final(&mut self, limit: Duration) -> Vec<String> {
        let mut states = Vec::new();
        while let Some(event) = self.next(limit).await {
            states.push(event.data["state"].as_str().unwrap().to_owned());
            if event.data["final"] == true {
                assert!(
                    self.next(limit).await.is_none(),
                    "the stream ends after a final state"
                );
                break;
            }
        }
        states
    }
}

/// Opens `path` as an event stream (status 200 asserted).
async fn open(app: &TestApp, path: &str, last_event_id: Option<&str>) -> EventStream {
    let response = request(app, path, last_event_id, None).await;
    assert_eq!(response.status(), 200, "{path}");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    stream_of(response)
}

fn stream_of(response: reqwest::Response) -> EventStream {
    EventStream {
        response,
        buffer: String::new(),
    }
}

async fn request(
    app: &TestApp,
    path: &str,
    last_event_id: Option<&str>,
    key: Option<&str>,
) -> reqwest::Response {
    // Streams outlive the harness's 60 s request bound; each read here is bounded.
    let client = reqwest::Client::new();
    let mut request = client.get(format!("{}{path}", app.address));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    tokio::time::timeout(Duration::from_secs(30), request.send())
        .await
        .expect("the intake answers within 30 s")
        .expect("the intake answers")
}

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_jobs_stream_shows_each_transition_in_order_and_ends() {
    // Arrange: a job that waits a little, so the stream opens before it runs.
    let app = spawn_app().await;
    let id = app
        .enqueue(json!({"kind": "test.sleep", "args": {"ms": 300}, "delay_ms": 500}))
        .await;

    // Act
    let mut stream = open(&app, &format!("/v1/jobs/{id}/events"), None).await;
    let first = stream.next(LIMIT).await.expect("the current state first");
    let mut states = vec![first.data["state"].as_str().unwrap().to_owned()];
    states.extend(stream.states_until_final(LIMIT).await);

    // Assert
    assert_eq!(first.event.as_deref(), Some("scheduled"));
    assert_eq!(
        states,
        ["scheduled", "enqueued", "running", "completed"],
        "every transition, in order"
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_stream_opened_after_completion_gives_the_final_state_at_once_and_a_resume_loses_nothing()
{
    let app = spawn_app().await;
    let id = app.enqueue(common::noop()).await;
    app.wait_for_state(&id, "completed").await;

    let mut stream = open(&app, &format!("/v1/jobs/{id}/events"), None).await;
    let event = stream.next(LIMIT).await.expect("the final state");
    assert_eq!(event.data["state"], "completed");
    assert_eq!(event.data["final"], true);
    assert!(stream.next(LIMIT).await.is_none(), "and the stream ends");
    let final_id = event.id.clone().expect("events carry an id");

    // A client that saw only an earlier event gets the final state.
    let earlier = (final_id.parse::<u64>().unwrap() - 1).to_string();
    let mut resumed = open(&app, &format!("/v1/jobs/{id}/events"), Some(&earlier)).await;
    let event = resumed.next(LIMIT).await.expect("the final state again");
    assert_eq!(event.data["state"], "completed");
    assert_eq!(event.id.as_deref(), Some(final_id.as_str()));

    // A client that has the final state is told to stop (204 ends EventSource).
    let done = request(
        &app,
        &format!("/v1/jobs/{id}/events"),
        Some(&final_id),
        None,
    )
    .await;
    assert_eq!(done.status(), 204);
    app.teardown().await;
}

#[tokio::test]
async fn a_thousand_streams_each_get_their_final_state_across_a_broker_connection_loss() {
    // Arrange: an intake, and a worker in a child process that starts later.
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let bodies = (0..1_000)
        .map(|_| json!({"kind": "test.sleep", "args": {"ms": 200}}))
        .collect();
    let ids = app.enqueue_many(bodies, 50).await;
    let mut streams = Vec::with_capacity(ids.len());
    for id in &ids {
        streams.push(open(&app, &format!("/v1/jobs/{id}/events"), None).await);
    }

    // Act: the workers run, and the intake's broker connections (its publisher and
    // its event subscription) are closed by the server in the middle.
    let mut worker = app.spawn_child(&["worker", "--queues", "default=32"], &[]);
    let readers = tokio::spawn(async move {
        let mut finals = 0;
        for mut stream in streams {
            let mut last = String::new();
            while let Some(event) = stream.next(Duration::from_secs(120)).await {
                last = event.data["state"].as_str().unwrap().to_owned();
            }
            if last == "completed" {
                finals += 1;
            }
        }
        finals
    });
    app.wait_for_count(
        "SELECT (count(*) >= 50)::int::bigint FROM jobs WHERE state = 'completed'",
        1,
        Duration::from_secs(60),
    )
    .await;
    let done_before = app
        .count("SELECT count(*) FROM jobs WHERE state = 'completed'")
        .await;
    let prefix = format!("{}-producer", app.settings.namespace);
    let closed = app.close_broker_connections(&prefix).await;

    // Assert
    assert!(
        closed >= 2,
        "the intake's publisher and its event subscription were closed ({closed})"
    );
    assert!(done_before < 1_000, "the close came in the middle");
    let finals = tokio::time::timeout(Duration::from_secs(180), readers)
        .await
        .expect("every stream ends")
        .unwrap();
    assert_eq!(finals, 1_000, "every stream received its job's final state");
    let _ = worker.kill().await;
    app.teardown().await;
}

#[tokio::test]
async fn wait_answers_at_completion_or_at_its_bound() {
    let app = spawn_app().await;
    let quick = app
        .enqueue(json!({"kind": "test.sleep", "args": {"ms": 200}}))
        .await;
    let slow = app
        .enqueue(json!({"kind": "test.sleep", "args": {"ms": 20_000}}))
        .await;

    let started = std::time::Instant::now();
    let answer = request(&app, &format!("/v1/jobs/{quick}?wait=20s"), None, None).await;
    assert_eq!(answer.status(), 200);
    let job: Value = answer.json().await.unwrap();
    assert_eq!(job["state"], "completed");
    assert_eq!(job["final"], true);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "it answered at completion"
    );

    let started = std::time::Instant::now();
    let answer = request(&app, &format!("/v1/jobs/{slow}?wait=1500ms"), None, None).await;
    let job: Value = answer.json().await.unwrap();
    let waited = started.elapsed();
    assert_eq!(job["final"], false, "{job}");
    assert!(
        waited >= Duration::from_millis(1_400) && waited < Duration::from_secs(10),
        "it answered at the bound: {waited:?}"
    );
    app.teardown().await;
}

#[tokio::test]
async fn wait_past_its_bound_or_malformed_is_422_naming_wait() {
    let app = spawn_app_with(|s| s.events.max_wait_ms = 10_000, Roles::INTAKE).await;
    let id = app.enqueue(common::noop()).await;
    for bad in ["11s", "1h", "soon"] {
        let answer = request(&app, &format!("/v1/jobs/{id}?wait={bad}"), None, None).await;
        assert_eq!(answer.status(), 422, "{bad}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(common::error_fields(&body), ["wait"], "{bad}: {body}");
    }
    app.teardown().await;
}

#[tokio::test]
async fn a_status_link_opens_its_own_jobs_stream_and_nothing_else() {
    // Arrange: a protected intake, so nothing opens without a key.
    let (key, hash) = producer::auth::new_key().unwrap();
    let app = spawn_app_with(
        move |s| {
            s.producer.api_keys = vec![hash];
            s.events.token_ttl_secs = 1;
        },
        Roles::ALL,
    )
    .await;
    let post = |body: Value| {
        let app = &app;
        let key = key.clone();
        async move {
            let answer = app
                .client
                .post(format!("{}/v1/jobs", app.address))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 202);
            answer.json::<Value>().await.unwrap()
        }
    };
    let mine = post(common::noop()).await;
    let other = post(common::noop()).await;
    let status_url = mine["status_url"]
        .as_str()
        .expect("a status link")
        .to_owned();
    let token = status_url.split("token=").nth(1).unwrap().to_owned();
    let mine_id = mine["id"].as_str().unwrap();
    assert_eq!(
        status_url,
        format!("/v1/jobs/{mine_id}/events?token={token}")
    );

    // Its own stream opens without a key.
    let mut stream = open(&app, &status_url, None).await;
    let event = stream.next(LIMIT).await.expect("an event");
    assert_eq!(event.data["id"], mine_id);

    // Another job's stream, or another route, does not.
    let other_id = other["id"].as_str().unwrap();
    for path in [
        format!("/v1/jobs/{other_id}/events?token={token}"),
        format!("/v1/jobs/{mine_id}?token={token}"),
        format!("/v1/events?token={token}"),
    ] {
        let answer = request(&app, &path, None, None).await;
        assert_eq!(answer.status(), 401, "{path}");
    }

    // Expired (the link lived one second; the expiry is checked against the clock).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = request(&app, &status_url, None, None).await;
        if answer.status() == 401 {
            assert_eq!(answer.headers()["content-type"], "application/problem+json");
            let body: Value = answer.json().await.unwrap();
            assert!(
                body["detail"].as_str().unwrap().contains("expired"),
                "{body}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the link never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.teardown().await;
}

#[tokio::test]
async fn streams_past_the_per_key_cap_get_429_and_a_stream_at_its_lifetime_resumes_without_loss() {
    let app = spawn_app_with(
        |s| {
            s.events.max_streams_per_key = 2;
            s.events.max_stream_lifetime_ms = 1_000;
        },
        Roles::ALL,
    )
    .await;
    let id = app
        .enqueue(json!({"kind": "test.sleep", "args": {"ms": 2_500}}))
        .await;
    let path = format!("/v1/jobs/{id}/events");

    // Two streams are the key's cap; a third (or a wait) is refused.
    let mut first = open(&app, &path, None).await;
    let _second = open(&app, &path, None).await;
    for refused_path in [path.clone(), format!("/v1/jobs/{id}?wait=5s")] {
        let refused = request(&app, &refused_path, None, None).await;
        assert_eq!(refused.status(), 429, "{refused_path}");
        assert!(refused.headers().contains_key("retry-after"));
    }

    // The first stream ends at its lifetime, before the job is final…
    let mut last_id = None;
    while let Some(event) = first.next(LIMIT).await {
        assert_ne!(event.data["final"], true, "the job outlives the stream");
        last_id = event.id;
    }
    drop(first);
    drop(_second);
    // …and resuming from its last event misses nothing, up to the final state.
    let mut seen_final = false;
    for _ in 0..10 {
        let answer = request(&app, &path, last_id.as_deref(), None).await;
        if answer.status() == 204 {
            break;
        }
        assert_eq!(answer.status(), 200);
        let mut resumed = stream_of(answer);
        while let Some(event) = resumed.next(LIMIT).await {
            last_id = event.id.clone();
            if event.data["final"] == true {
                assert_eq!(event.data["state"], "completed");
                seen_final = true;
            }
        }
        if seen_final {
            break;
        }
    }
    assert!(seen_final, "a resumed stream delivered the final state");
    app.teardown().await;
}

#[tokio::test]
async fn an_operators_cli_cancel_reaches_an_open_stream() {
    // Arrange: a job due in an hour, and its stream open on its current state.
    let app = spawn_app().await;
    let id = app
        .enqueue(json!({"kind": "noop", "args": {}, "delay_ms": 3_600_000}))
        .await;
    let mut stream = open(&app, &format!("/v1/jobs/{id}/events"), None).await;
    let first = stream.next(LIMIT).await.expect("the current state first");
    assert_eq!(first.data["state"], "scheduled");

    // Act: an operator cancels it from the command line.
    let (ok, _, stderr) = app.cli(&["jobs", "cancel", &id]).await;
    assert!(ok, "jobs cancel failed: {stderr}");

    // Assert: the stream sees it at once (no reconnect), as final, and ends.
    assert_eq!(
        stream.states_until_final(LIMIT).await,
        ["cancelled"],
        "the CLI's cancel is published like the API's"
    );
    assert!(
        !stderr.contains("ERROR"),
        "a clean CLI run prints no ERROR line: {stderr}"
    );

    app.teardown().await;
}
