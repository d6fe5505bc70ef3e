//! Public routes for probes and scrapers: `/healthz`, `/readyz`, `/metrics`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::AppState;
use crate::problem::ApiError;

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Up", body = Object)))]
pub async fn healthz() -> Json<Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: the database and the broker answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = Object),
        (status = 503, description = "A dependency is unavailable (Retry-After)", body = Object),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let limit = Duration::from_secs(2);
    let database = match tokio::time::timeout(limit, state.store.ping()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("unavailable: {}", redact(&e.to_string())),
        Err(_) => "unavailable: timed out".to_owned(),
    };
    let broker = match tokio::time::timeout(limit, state.publisher.ensure_connected()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("unavailable: {e}"),
        Err(_) => "unavailable: timed out".to_owned(),
    };
    let ready = database == "ok" && broker == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "unavailable" },
        "database": database,
        "broker": broker,
    });
    let mut response = (status, Json(body)).into_response();
    if !ready {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    response
}

/// `GET /metrics`: Prometheus text — this process's job counters and latency
/// histograms, and per-queue gauges from the ledger (ready, running, scheduled,
/// retrying, dead, oldest ready age).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(render) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            render().await,
        )
            .into_response(),
        None => {
            ApiError::NotFound("metrics are not enabled in this process".into()).into_response()
        }
    }
}

/// Removes anything that looks like URL credentials from a message.
fn redact(message: &str) -> String {
    match (message.find("://"), message.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &message[..scheme], &message[at..])
        }
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_redacted() {
        assert_eq!(
            redact("error connecting to postgres://user:secret@db:5432/x"),
            "error connecting to postgres://***@db:5432/x"
        );
        assert_eq!(redact("pool timed out"), "pool timed out");
    }
}
