//! The intake under hostile connections: slowloris floods against a connection cap,
//! slow bodies, idle keep-alive connections, per-client fairness, and a cap the
//! process's descriptor limit cannot hold. Raw sockets play the attacker; several
//! loopback addresses (127.0.0.x) play several clients.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::proxy::{Mode, Proxy};
use common::*;
use conveyor::app::Roles;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `addr` from the loopback address `from`: each 127.0.0.x is one client.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(addr).await
}

/// How a connection the test held ended.
#[derive(Debug)]
enum Ended {
    /// The server wrote this, then closed.
    Answered(String),
    /// The server closed without a byte.
    Closed,
    /// The connection was reset before a byte arrived.
    Reset,
}

/// Reads until the server closes the connection; panics if it is still open after
/// `limit` (the intake must never leave a connection hanging).
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> Ended {
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => panic!(
                "the intake left a connection open for {limit:?}; it had sent {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) if !got.is_empty() => {
                return Ended::Answered(String::from_utf8_lossy(&got).into_owned());
            }
            Ok(Ok(0)) => return Ended::Closed,
            Ok(Err(_)) => return Ended::Reset,
            Ok(Ok(n)) => got.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Reads one HTTP/1.1 response (head and a content-length body) off a kept-alive
/// connection; returns its head and body.
async fn read_response(reader: &mut BufReader<&mut TcpStream>) -> (String, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
            .await
            .expect("a response within 10 s")
            .expect("the response reads");
        assert!(n > 0, "the connection closed mid-response: {head}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().expect("a numeric content-length"))
        })
        .expect("a content-length");
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await.expect("the body reads");
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// Sends `GET /healthz` on a kept-alive connection and asserts 200.
async fn healthz_on(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: intake\r\n\r\n")
        .await
        .expect("the request is written");
    let mut reader = BufReader::new(stream);
    let (head, _) = read_response(&mut reader).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

/// A sample's value in the Prometheus text at `base/metrics` (0 when absent).
async fn metric(client: &reqwest::Client, base: &str, sample: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics reads");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Asserts a refusal answer: `status`, problem+json, `Retry-After`, then closed.
fn assert_refusal(ended: &Ended, status: &str) {
    let Ended::Answered(text) = ended else {
        panic!("expected a {status} refusal, the connection ended {ended:?}");
    };
    assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
    assert!(text.contains("retry-after: 1\r\n"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
}

/// The number of descriptors process `pid` holds open.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Raises this process's soft descriptor limit towards `wanted` (never above the hard
/// limit); returns the limit now in force.
fn raise_descriptor_limit(wanted: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return current;
    }
    let target = limit.maximum.map_or(wanted, |max| max.min(wanted));
    let raised = Rlimit {
        current: Some(target),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => target,
        Err(_) => current,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::too_many_lines,
    reason = "one attack scenario read top to bottom: flood, good clients, then the counts"
)]
async fn a_slowloris_flood_is_capped_and_closed_while_good_clients_keep_working() {
    const CAP: usize = 1_000;
    const POOL: usize = 8;
    // 5,000 attackers when this process may open them (each needs a descriptor here).
    let limit = raise_descriptor_limit(6_000);
    let attackers = 5_000.min(usize::try_from(limit).unwrap_or(usize::MAX) - 500);
    assert!(
        attackers > 2 * CAP,
        "the descriptor limit ({limit}) leaves room for only {attackers} attackers"
    );
    let app = spawn_app_with(|_| {}, Roles::NONE).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let intake_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut intake = app.spawn_child(
        &["producer", "--listen", &format!("127.0.0.1:{port}")],
        &[
            ("CONVEYOR_PRODUCER__MAX_CONNECTIONS", CAP.to_string()),
            ("CONVEYOR_PRODUCER__HEADER_READ_TIMEOUT_MS", "3000".into()),
            ("CONVEYOR_DATABASE__MAX_CONNECTIONS", POOL.to_string()),
        ],
    );
    app.wait_ready(&base).await;
    let pid = intake.id().expect("the intake runs");

    // An app server's pooled, kept-alive connection, open before the flood.
    let pooled = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    let warm = pooled
        .post(format!("{base}/v1/jobs"))
        .json(&noop())
        .send()
        .await
        .expect("the intake answers");
    assert_eq!(warm.status(), 202);
    // A client that opens a fresh connection for every request.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");

    // The flood: headers started and never finished, from ten client addresses.
    let flooding = Arc::new(AtomicBool::new(true));
    let connecting = Arc::new(tokio::sync::Semaphore::new(256));
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..attackers {
        let connecting = Arc::clone(&connecting);
        let from = [127, 0, 0, 2 + u8::try_from(i % 10).expect("a small number")];
        flood.spawn(async move {
            let permit = connecting
                .acquire_owned()
                .await
                .expect("the semaphore stays open");
            let mut stream =
                tokio::time::timeout(Duration::from_secs(30), connect_from(from, intake_addr))
                    .await
                    .expect("connecting never hangs")
                    .expect("the kernel accepts the connection");
            let written = stream
                .write_all(
                    b"POST /v1/jobs HTTP/1.1\r\nhost: intake\r\ncontent-type: application/json\r\n",
                )
                .await;
            drop(permit);
            if written.is_err() {
                return Ended::Reset;
            }
            until_closed(&mut stream, Duration::from_secs(30)).await
        });
    }

    // While it lasts: the intake's descriptors, and good clients at work.
    let peak_descriptors = {
        let flooding = Arc::clone(&flooding);
        tokio::spawn(async move {
            let mut peak = 0;
            while flooding.load(Ordering::Relaxed) {
                peak = peak.max(open_descriptors(pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };
    let pooled_statuses = {
        let (flooding, pooled, base) = (Arc::clone(&flooding), pooled.clone(), base.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while flooding.load(Ordering::Relaxed) {
                let sent = pooled
                    .post(format!("{base}/v1/jobs"))
                    .json(&noop())
                    .send()
                    .await;
                statuses.push(sent.map(|r| r.status().as_u16()).map_err(|e| e.to_string()));
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            statuses
        })
    };
    let fresh_outcomes = {
        let (flooding, fresh, base) = (Arc::clone(&flooding), fresh.clone(), base.clone());
        tokio::spawn(async move {
            let (mut accepted, mut refused) = (0usize, 0usize);
            while flooding.load(Ordering::Relaxed) {
                match fresh
                    .post(format!("{base}/v1/jobs"))
                    .json(&noop())
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 202 => accepted += 1,
                    Ok(r) => {
                        assert_eq!(r.status(), 503, "a fresh connection refused past the cap");
                        assert!(r.headers().contains_key("retry-after"));
                        refused += 1;
                    }
                    // A refusal that raced the request: reset, at once.
                    Err(e) => {
                        assert!(!e.is_timeout(), "a good client hung: {e}");
                        refused += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (accepted, refused)
        })
    };

    let mut closed_silently = 0usize;
    let mut refused = 0usize;
    while let Some(ended) = flood.join_next().await {
        match ended.expect("an attacker task") {
            Ended::Closed => closed_silently += 1,
            Ended::Reset => refused += 1,
            Ended::Answered(text) => {
                assert!(
                    text.starts_with("HTTP/1.1 503 ") || text.starts_with("HTTP/1.1 429 "),
                    "a slow connection got {text}"
                );
                assert!(text.contains("retry-after: 1\r\n"), "{text}");
                refused += 1;
            }
        }
    }
    flooding.store(false, Ordering::Relaxed);
    let peak = peak_descriptors.await.expect("the sampler");
    let pooled_statuses = pooled_statuses.await.expect("the pooled client");
    let (fresh_accepted, fresh_refused) = fresh_outcomes.await.expect("the fresh client");

    // Every slow connection ended: closed by the header timeout once admitted, or
    // refused at once past the cap.
    assert_eq!(closed_silently + refused, attackers);
    assert!(refused > 0, "the flood never reached the cap");
    let header_timeouts = metric(
        &fresh,
        &base,
        "conveyor_http_connections_timed_out_total{timeout=\"header\"}",
    )
    .await;
    assert_eq!(
        header_timeouts as usize, closed_silently,
        "each admitted slow connection is closed by the header timeout"
    );
    let refusals = metric(
        &fresh,
        &base,
        "conveyor_http_connections_refused_total{reason=\"capacity\"}",
    )
    .await;
    assert!(
        refusals as usize >= refused,
        "each refusal is counted ({refusals} counted, {refused} seen by the attackers)"
    );
    // The intake never held more than its cap plus its own pool and reserve.
    let bound = CAP + POOL + producer::conn::RESERVED_DESCRIPTORS as usize;
    assert!(
        peak > CAP / 2,
        "the flood reached the intake (peak {peak} descriptors)"
    );
    assert!(
        peak <= bound,
        "the intake held {peak} descriptors, above {bound}"
    );
    // The kept-alive client was served throughout; fresh connections were at worst
    // refused at once, and are served again once the flood is gone.
    assert!(!pooled_statuses.is_empty());
    assert!(
        pooled_statuses
            .iter()
            .all(|s| s.as_ref().is_ok_and(|s| *s == 202)),
        "the pooled client was not served throughout: {pooled_statuses:?}"
    );
    eprintln!(
        "{attackers} attackers: {closed_silently} closed by the header timeout, {refused} refused; \
         fresh good connections: {fresh_accepted} served, {fresh_refused} refused; peak {peak} descriptors"
    );
    let after = fresh
        .post(format!("{base}/v1/jobs"))
        .json(&noop())
        .send()
        .await
        .expect("the intake answers");
    assert_eq!(after.status(), 202);

    terminate(&intake);
    let _ = tokio::time::timeout(Duration::from_secs(30), intake.wait()).await;
    app.teardown().await;
}

#[tokio::test]
async fn a_slow_body_is_answered_408_and_closed() {
    let app = spawn_app_with(
        |s| {
            s.producer.body_read_timeout_ms = 1_000;
            s.producer.body_min_bytes_per_sec = 1_024;
        },
        Roles::INTAKE,
    )
    .await;
    let addr: SocketAddr = app.address.trim_start_matches("http://").parse().unwrap();
    let mut stream = connect_from([127, 0, 0, 1], addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/jobs HTTP/1.1\r\nhost: intake\r\ncontent-type: application/json\r\n\
              content-length: 200\r\n\r\n",
        )
        .await
        .unwrap();
    let (mut reading, mut writing) = stream.into_split();
    // One byte a second, until the intake gives up on it.
    let trickle = tokio::spawn(async move {
        for byte in br#"{"kind": "noop", "args": {"#.iter().cycle() {
            if writing.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), reading.read_to_end(&mut answer))
        .await
        .expect("the intake closes a trickling body")
        .ok();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.contains("/problems/body-timeout"), "{answer}");
    let timed_out = metric(
        &app.client,
        &app.address,
        "conveyor_http_connections_timed_out_total{timeout=\"body\"}",
    )
    .await;
    assert!(timed_out >= 1.0, "the body timeout is counted");
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 0);
    app.teardown().await;
}

#[tokio::test]
async fn a_large_batch_over_a_slow_link_is_accepted() {
    let app = spawn_app_with(
        |s| {
            // A fixed one-second body timeout would cut this batch off; the minimum
            // rate lets it earn time as it arrives.
            s.producer.body_read_timeout_ms = 1_000;
            s.producer.body_min_bytes_per_sec = 1_024;
        },
        Roles::INTAKE,
    )
    .await;
    let target: SocketAddr = app.address.trim_start_matches("http://").parse().unwrap();
    let link = Proxy::start(target).await;
    link.set(Mode::Throttle(16 * 1024));
    let jobs: Vec<Value> = (0..1_000).map(|_| noop()).collect();
    let body = serde_json::to_vec(&json!({ "jobs": jobs })).unwrap();
    assert!(
        body.len() > 16 * 1024,
        "the body takes more than a second on the link"
    );
    let response = app
        .client
        .post(format!("http://{}/v1/jobs/batch", link.addr))
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("the intake answers over the slow link");
    let status = response.status();
    let accepted: Value = response.json().await.expect("json");
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["ids"].as_array().map(Vec::len), Some(1_000));
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 1_000);
    app.teardown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(
        |s| {
            s.producer.keep_alive_idle_timeout_ms = 500;
            // Far longer, so only the idle bound can close it.
            s.producer.header_read_timeout_ms = 60_000;
        },
        Roles::INTAKE,
    )
    .await;
    let addr: SocketAddr = app.address.trim_start_matches("http://").parse().unwrap();
    let mut stream = connect_from([127, 0, 0, 1], addr).await.unwrap();
    // Kept alive between requests...
    healthz_on(&mut stream).await;
    healthz_on(&mut stream).await;
    // ...and closed once idle for too long.
    let ended = until_closed(&mut stream, Duration::from_secs(20)).await;
    assert!(matches!(ended, Ended::Closed), "{ended:?}");
    let idle = metric(
        &app.client,
        &app.address,
        "conveyor_http_connections_timed_out_total{timeout=\"idle\"}",
    )
    .await;
    assert!(idle >= 1.0, "the idle timeout is counted");
    app.teardown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answers_is_closed() {
    let app = spawn_app_with(|s| s.producer.request_timeout_ms = 1_000, Roles::INTAKE).await;
    let addr: SocketAddr = app.address.trim_start_matches("http://").parse().unwrap();
    let document = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    // Far more answer than the socket buffers on both ends can hold.
    let requests = (32 * 1024 * 1024 / document.len()).max(64);
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4 * 1024).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut reading, mut writing) = stream.into_split();
    let pipelined = tokio::spawn(async move {
        for _ in 0..requests {
            if writing
                .write_all(b"GET /openapi.json HTTP/1.1\r\nhost: intake\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
        }
        // Keep the sending half open; dropping it would end the requests.
        std::future::pending::<()>().await;
    });
    // The intake gives up on the connection once its writes stay blocked...
    let sample = "conveyor_http_connections_timed_out_total{timeout=\"write\"}";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metric(&app.client, &app.address, sample).await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a client that does not read kept its connection for 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and the client finds it closed once it reads what was buffered.
    let mut buffer = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match reading.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection is closed");
    pipelined.abort();
    app.teardown().await;
}

#[tokio::test]
async fn one_client_holds_at_most_its_share_and_the_cap_answers_503() {
    let app = spawn_app_with(
        |s| {
            s.producer.max_connections = Some(6);
            s.producer.max_connections_per_client = Some(3);
        },
        Roles::INTAKE,
    )
    .await;
    let addr: SocketAddr = app.address.trim_start_matches("http://").parse().unwrap();
    let mut hog = Vec::new();
    for _ in 0..3 {
        let mut held = connect_from([127, 0, 0, 2], addr).await.unwrap();
        healthz_on(&mut held).await;
        hog.push(held);
    }
    // A fourth connection from the same address: 429, at once.
    let mut extra = connect_from([127, 0, 0, 2], addr).await.unwrap();
    assert_refusal(
        &until_closed(&mut extra, Duration::from_secs(10)).await,
        "429",
    );
    // Other clients still get in, up to the cap...
    let mut others = Vec::new();
    for _ in 0..3 {
        let mut held = connect_from([127, 0, 0, 3], addr).await.unwrap();
        healthz_on(&mut held).await;
        others.push(held);
    }
    // ...past which everyone gets 503.
    let mut late = connect_from([127, 0, 0, 4], addr).await.unwrap();
    assert_refusal(
        &until_closed(&mut late, Duration::from_secs(10)).await,
        "503",
    );
    // A connection that closes frees its place.
    drop(hog.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut next = connect_from([127, 0, 0, 4], addr).await.unwrap();
        let sent = next
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: intake\r\nconnection: close\r\n\r\n")
            .await;
        let ended = until_closed(&mut next, Duration::from_secs(10)).await;
        if sent.is_ok()
            && let Ended::Answered(text) = &ended
            && text.starts_with("HTTP/1.1 200 ")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freed place was never given out: {ended:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for (reason, at_least) in [("capacity", 1.0), ("per_client", 1.0)] {
        let refused = metric(
            &app.client,
            &app.address,
            &format!("conveyor_http_connections_refused_total{{reason=\"{reason}\"}}"),
        )
        .await;
        assert!(refused >= at_least, "{reason} refusals are counted");
    }
    drop((hog, others));
    app.teardown().await;
}

#[tokio::test]
async fn start_up_sizes_the_cap_by_the_descriptor_limit_and_refuses_one_it_cannot_hold() {
    let app = spawn_app_with(|_| {}, Roles::NONE).await;
    let start = |limit: u32, env: &[(&str, &str)]| {
        let port = free_port();
        let mut command = tokio::process::Command::new("sh");
        command
            .args([
                "-c",
                &format!("ulimit -Sn {limit} && exec \"$0\" producer --listen 127.0.0.1:{port}"),
                env!("CARGO_BIN_EXE_conveyor"),
            ])
            .env_remove("DATABASE_URL")
            .env_remove("AMQP_URL")
            .env_remove("CONVEYOR_CONFIG")
            .envs(app.child_env())
            .env("CONVEYOR_DATABASE__MAX_CONNECTIONS", "16")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        command.spawn().expect("the intake starts")
    };

    // A cap the limit cannot hold beside the pool and the reserve stops start-up.
    let refused = start(256, &[("CONVEYOR_PRODUCER__MAX_CONNECTIONS", "1000")]);
    let output = tokio::time::timeout(Duration::from_secs(60), refused.wait_with_output())
        .await
        .expect("start-up ends")
        .expect("the intake ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("`producer.max_connections`"), "{stderr}");
    assert!(stderr.contains("256"), "{stderr}");

    // Without a cap, start-up derives one from the limit and reports both.
    let mut sized = start(512, &[]);
    let mut lines = BufReader::new(sized.stderr.take().expect("stderr")).lines();
    let listening = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("stderr reads") {
            if line.contains("intake listening") {
                return serde_json::from_str::<Value>(&line).expect("a JSON log line");
            }
        }
        panic!("the intake exited without listening")
    })
    .await
    .expect("the intake listens");
    assert_eq!(listening["descriptor_limit"], "512", "{listening}");
    // 512 - 16 (pool) - 64 (reserve) = 432 left; three quarters of it, half per client.
    assert_eq!(listening["max_connections"], 324, "{listening}");
    assert_eq!(listening["max_connections_per_client"], 162, "{listening}");
    terminate(&sized);
    let _ = tokio::time::timeout(Duration::from_secs(30), sized.wait()).await;
    app.teardown().await;
}
