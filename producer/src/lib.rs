//! How a job enters: the HTTP intake. Validates a request against its kind, records the
//! job in the ledger, publishes it with a confirm, and answers `202 {id, state}`. Every
//! error is `application/problem+json` naming the failing field; bad input stores
//! nothing. The OpenAPI document is generated from the same route registrations that
//! build the router, so a route cannot be missing from it.
//!
//! # Layout
//! - [`settings`] — [`ProducerSettings`].
//! - [`problem`] — [`ApiError`], its problem+json rendering, and the middleware that logs
//!   server-side errors with their causes.
//! - [`extract`] — the JSON body and query extractors, rejecting as problem+json.
//! - [`auth`] — API keys (hashed, constant-time) and per-key rate limits.
//! - [`marks`] — noting confirmed publishes in the ledger, late and in bulk.
//! - [`routes`] — the handlers per resource, the wire types, the pure request → job
//!   conversion.
//! - [`schedules`] — the schedules API.
//! - [`app`](fn@app) — the router with its middleware.
//! - [`conn`] — [`serve`]: the accept loop, with per-connection time bounds and caps
//!   on open connections ([`ConnectionLimits`]).

pub mod auth;
pub mod conn;
pub mod extract;
pub mod marks;
pub mod problem;
pub mod routes;
pub mod schedules;
pub mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use axum::{Router, http};
use broker::Publisher;
use jobs::{Catalog, NewJob};
use store::{Coalescer, Insert, Store};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use conn::{ConnectionLimits, serve};
pub use problem::ApiError;
pub use settings::ProducerSettings;

/// Renders the `/metrics` page (Prometheus text).
pub type MetricsRender =
    Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, String> + Send + Sync>;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Renders `/metrics`; without it the route answers 404.
    pub metrics: Option<MetricsRender>,
    /// The ledger.
    pub store: Store,
    /// The confirmed publisher.
    pub publisher: Arc<Publisher>,
    /// Kinds intake accepts.
    pub catalog: Arc<Catalog>,
    /// Limits and defaults.
    pub settings: Arc<ProducerSettings>,
    /// Accepted API keys (empty: no authentication, loopback only).
    pub keys: Arc<auth::Keys>,
    /// Per-caller rate limit, when configured.
    pub limiter: Option<Arc<auth::Limiter>>,
    /// Groups the inserts of concurrent single-job requests into one statement.
    pub inserts: Coalescer<NewJob, Result<Insert, store::Error>>,
    /// Notes confirmed publishes in the ledger, late and many per statement.
    pub published: marks::PublishMarks,
}

impl AppState {
    /// State for `settings`.
    ///
    /// # Errors
    /// A malformed `producer.api_keys` entry, named by index.
    pub fn new(
        store: Store,
        publisher: Arc<Publisher>,
        catalog: Arc<Catalog>,
        settings: ProducerSettings,
    ) -> Result<Self, String> {
        let keys = auth::Keys::parse(&settings.api_keys).map_err(|i| {
            format!("configuration key `producer.api_keys[{i}]`: expected sha256:<64 hex digits> (make one with `conveyor keys new`)")
        })?;
        let insert_store = store.clone();
        let inserts = Coalescer::start(move |jobs: Vec<NewJob>| {
            let store = insert_store.clone();
            async move { store.insert_each(&jobs).await }
        });
        let published = marks::PublishMarks::start(
            store.clone(),
            Duration::from_millis(settings.mark_published_after_ms),
        );
        Ok(Self {
            metrics: None,
            inserts,
            published,
            store,
            publisher,
            catalog,
            limiter: settings.rate_limit.map(|r| Arc::new(auth::Limiter::new(r))),
            settings: Arc::new(settings),
            keys: Arc::new(keys),
        })
    }
}

impl AppState {
    /// Serves `/metrics` with `render`.
    #[must_use]
    pub fn with_metrics(mut self, render: MetricsRender) -> Self {
        self.metrics = Some(render);
        self
    }
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
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Conveyor intake",
        description = "Durable background jobs: POST a job, follow it to completion. Errors are application/problem+json.",
    ),
    modifiers(&BearerAuth),
    tags((name = "jobs", description = "Enqueue, inspect, list and cancel jobs"), (name = "schedules", description = "Periodic jobs: create, inspect, change, pause, resume, trigger"), (name = "health", description = "Liveness and readiness"))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("API key")
                    .build(),
            ),
        );
    }
}

/// The routes that need a key, and the public ones, with their OpenAPI paths.
fn routers() -> (OpenApiRouter<AppState>, OpenApiRouter<AppState>) {
    let protected = OpenApiRouter::new()
        .routes(routes!(routes::jobs::create_job, routes::jobs::list_jobs))
        .routes(routes!(routes::batches::create_batch))
        .routes(routes!(routes::jobs::get_job))
        .routes(routes!(routes::jobs::cancel_job))
        .merge(schedules::router());
    let public = OpenApiRouter::new()
        .routes(routes!(routes::health::healthz))
        .routes(routes!(routes::health::readyz))
        .routes(routes!(routes::health::metrics))
        .routes(routes!(openapi_json));
    (protected, public)
}

/// The OpenAPI document of the intake.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (protected, public) = routers();
    let mut doc = ApiDoc::openapi();
    doc.merge(protected.into_openapi());
    doc.merge(public.into_openapi());
    doc
}

/// `GET /openapi.json`: this API's OpenAPI 3.1 document, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, description = "The OpenAPI document", body = Object)))]
async fn openapi_json() -> impl IntoResponse {
    Json(openapi())
}

/// The intake's router.
pub fn app(state: AppState) -> Router {
    let timeout = Duration::from_millis(state.settings.request_timeout_ms);
    let body_limit = state.settings.max_body_bytes;
    let (protected, public) = routers();
    let (protected, _) = protected.split_for_parts();
    let (public, _) = public.split_for_parts();
    let protected = protected
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::rate_limit,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    let mut router = protected
        .merge(public)
        .route(
            "/",
            get(|| async {
                Json(serde_json::json!({"service": "conveyor", "openapi": "/openapi.json"}))
            }),
        )
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
        // Outside the timeout, so a timed-out request's 503 is logged too.
        .layer(middleware::from_fn(problem::log_errors));
    if let Some(cors) = cors(&state.settings.cors_origins) {
        router = router.layer(cors);
    }
    router
        .layer(
            TraceLayer::new_for_http()
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::WARN))
                .make_span_with(|request: &Request| {
                    let request_id = request
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    let span = tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id = %request_id,
                        trace_id = tracing::field::Empty,
                        span_id = tracing::field::Empty,
                        parent_span_id = tracing::field::Empty,
                    );
                    // An OpenTelemetry parent must be set before the span starts.
                    #[cfg(feature = "otlp")]
                    if let Some(caller) = request
                        .headers()
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .and_then(jobs::TraceContext::parse)
                    {
                        caller.set_as_parent_of(&span);
                    }
                    span
                }),
        )
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, NewRequestId))
        .with_state(state)
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([REQUEST_ID, header::RETRY_AFTER, header::LOCATION]),
    )
}

/// Checks protected mode: without API keys the intake serves only on loopback.
///
/// # Errors
/// A non-loopback address without keys.
pub fn check_exposure(settings: &ProducerSettings, addr: SocketAddr) -> Result<(), String> {
    if settings.api_keys.is_empty() {
        if !addr.ip().is_loopback() {
            return Err(format!(
                "refusing to serve on {addr} without API keys: anyone who can reach it could enqueue jobs. \
                 Set producer.api_keys (make a key with `conveyor keys new`) or listen on a loopback address"
            ));
        }
        tracing::warn!(%addr, "no API keys configured (producer.api_keys): protected mode, serving on loopback only");
    }
    Ok(())
}
