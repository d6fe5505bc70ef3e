//! How a job enters: the HTTP intake. Validates a request against its kind, records the
//! job in the ledger, publishes it with a confirm, and answers `202 {id, state}`. Every
//! error is `application/problem+json` naming the failing field; bad input stores
//! nothing.
//!
//! # Layout
//! - [`settings`] — [`ProducerSettings`].
//! - [`problem`] — [`ApiError`] and its problem+json rendering.
//! - [`routes`] — the handlers and the request/response types.
//! - [`app`](fn@app) — the router with its middleware; [`serve`] runs it.

pub mod problem;
pub mod routes;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use broker::Publisher;
use jobs::Catalog;
use store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

pub use problem::ApiError;
pub use settings::ProducerSettings;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The ledger.
    pub store: Store,
    /// The confirmed publisher.
    pub publisher: Arc<Publisher>,
    /// Kinds intake accepts.
    pub catalog: Arc<Catalog>,
    /// Limits and defaults.
    pub settings: Arc<ProducerSettings>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The request-id header set on every request and response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        uuid::Uuid::now_v7()
            .to_string()
            .parse()
            .ok()
            .map(RequestId::new)
    }
}

/// The intake's router.
pub fn app(state: AppState) -> Router {
    let timeout = Duration::from_millis(state.settings.request_timeout_ms);
    let body_limit = state.settings.max_body_bytes;
    Router::new()
        .route("/v1/jobs", post(routes::create_job))
        .route("/v1/jobs/{id}", get(routes::get_job))
        .route("/v1/jobs/{id}/cancel", post(routes::cancel_job))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(
            move |req: Request, next: Next| async move {
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(response) => response,
                    Err(_) => ApiError::Timeout(timeout).into_response(),
                }
            },
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let request_id = request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %request_id,
                )
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, NewRequestId))
        .with_state(state)
}

/// Serves the intake on `listener` until `shutdown` fires; in-flight requests finish.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Renders any response status as problem+json when a layer produced a bare one.
pub fn problem_response(error: ApiError) -> Response {
    error.into_response()
}
