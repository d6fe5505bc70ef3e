//! With the `otlp` feature, spans are exported over OTLP/HTTP and an attempt's span is
//! in the trace of the request that enqueued the job. Run with
//! `cargo test --features otlp --test otlp`.
#![cfg(feature = "otlp")]

mod common;

use std::sync::{Arc, Mutex};

use common::{free_port, spawn_app_with, terminate};
use conveyor::app::Roles;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal OTLP/HTTP collector: records the bodies POSTed to it.
async fn collector() -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 8192];
                // Read headers, then exactly content-length bytes of body.
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buffer.len() >= end + 4 + length {
                        sink.lock()
                            .unwrap()
                            .extend_from_slice(&buffer[end + 4..end + 4 + length]);
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        buffer.drain(..end + 4 + length);
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), received)
}

#[tokio::test]
async fn spans_are_exported_and_the_attempt_is_in_the_requests_trace() {
    let app = spawn_app_with(|_| {}, Roles::NONE).await;
    let (endpoint, received) = collector().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = app
        .command(&["run", "--listen", &format!("127.0.0.1:{port}")])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    app.wait_ready(&base).await;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";

    let job = app
        .complete_traced_noop_at(&base, &format!("00-{caller_trace}-00f067aa0ba902b7-01"))
        .await;
    terminate(&child);
    let _ = child.wait_with_output().await;

    let stored = jobs::TraceContext::parse(job["traceparent"].as_str().unwrap()).unwrap();
    assert_eq!(stored.trace_id, caller_trace);
    let exported = received.lock().unwrap().clone();
    let count = |hex: &str| {
        let needle: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        exported
            .windows(needle.len())
            .filter(|w| *w == needle.as_slice())
            .count()
    };
    // Both spans (the request's and the attempt's) carry the caller's trace id; the
    // request span's own id appears as its id and as the attempt span's parent.
    assert!(
        count(caller_trace) >= 2,
        "exported {} bytes",
        exported.len()
    );
    assert!(
        count(&stored.span_id) >= 2,
        "the attempt span's parent is the request span"
    );
    app.teardown().await;
}
