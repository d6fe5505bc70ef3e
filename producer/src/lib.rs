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
//! - [`auth`] — authentication (the request's [`access::Principal`]), failed-attempt
//!   and per-key rate limits.
//! - [`guard`] — scopes, kinds and queues applied to jobs; redaction of arguments.
//! - [`marks`] — noting confirmed publishes in the ledger, late and in bulk.
//! - [`routes`] — the handlers per resource, the wire types, the pure request → job
//!   conversion.
//! - [`operator`] — the operator API: dead letters, retry, stats, keys, audit.
//! - [`schedules`] — the schedules API.
//! - [`app`](fn@app) — the router with its middleware.
//! - [`conn`] — [`serve`]: the accept loop, with per-connection time bounds and caps
//!   on open connections ([`ConnectionLimits`]); it also keeps the key ring current.

pub mod auth;
pub mod conn;
pub mod extract;
pub mod guard;
pub mod marks;
pub mod operator;
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
    /// Accepted API keys: configured hashes and the stored keys (none anywhere: no
    /// authentication, loopback only).
    pub keys: Arc<access::KeyRing>,
    /// Failed authentications per client address.
    pub auth_failures: Arc<auth::Limiter>,
    /// Per-caller rate limit, when configured.
    pub limiter: Option<Arc<auth::Limiter>>,
    /// Groups the inserts of concurrent single-job requests into one statement.
    pub inserts: Coalescer<NewJob, Result<Insert, store::Error>>,
    /// Notes confirmed publishes in the ledger, late and many per statement.
    pub published: marks::PublishMarks,
    /// Which webhook targets (`callback_url`, subscriptions) may be called.
    pub webhook_targets: jobs::kinds::webhook::TargetPolicy,
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
        let configured = auth::parse_configured(&settings.api_keys).map_err(|i| {
            format!("configuration key `producer.api_keys[{i}]`: expected sha256:<64 hex digits> (make one with `conveyor keys new`)")
        })?;
        let ring_store = store.clone();
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
            auth_failures: Arc::new(auth::Limiter::new(settings.auth_failures)),
            keys: Arc::new(access::KeyRing::new(configured, Some(ring_store))),
            settings: Arc::new(settings),
            webhook_targets: jobs::kinds::webhook::TargetPolicy::default(),
        })
    }
}

impl AppState {
    /// Reads the stored API keys through `store` (a small pool of its own, so the
    /// key ring's reloads neither wait behind intake traffic nor keep the intake's
    /// connections busy).
    #[must_use]
    pub fn with_key_store(mut self, store: Store) -> Self {
        // The hashes were validated by `AppState::new`.
        let configured = auth::parse_configured(&self.settings.api_keys).unwrap_or_default();
        self.keys = Arc::new(access::KeyRing::new(configured, Some(store)));
        self
    }

    /// Checks webhook targets with `policy` (`webhooks.allow_private_targets`).
    #[must_use]
    pub fn with_webhook_targets(mut self, policy: jobs::kinds::webhook::TargetPolicy) -> Self {
        self.webhook_targets = policy;
        self
    }

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
        description = "Durable background jobs: POST a job, follow it to completion. Errors are application/problem+json.\n\n\
            Authentication: `Authorization: Bearer <key>`. Each protected operation lists the one scope it needs in its \
            `bearer` security requirement (e.g. `jobs:enqueue`); a key's role grants scopes, and its kinds and queues \
            limit which jobs it may touch. No or an unknown key: 401; a key without the scope, or a kind or queue \
            outside its reach: 403. An intake with no key configured or stored serves loopback only and needs no key: \
            its document then lists an empty requirement beside `bearer` (authentication optional).",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "jobs", description = "Enqueue, inspect, list and cancel jobs"),
        (name = "operations", description = "Dead letters, retries, stats and the audit log"),
        (name = "keys", description = "API keys (admins)"),
        (name = "webhooks", description = "Webhook subscriptions: signed deliveries of job transitions (admins)"),
        (name = "schedules", description = "Periodic jobs: create, inspect, change, pause, resume, trigger"),
        (name = "health", description = "Liveness and readiness")
    )
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
        .merge(schedules::router())
        .merge(operator::routes());
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

/// A job request gives `run_at` or `delay_ms`, not both (the intake refuses the pair):
/// said as a `not` of both present and non-null, which utoipa's schema model cannot
/// hold, so it is added to the JSON document.
fn exclusive_schedules(doc: &mut serde_json::Value) {
    if let Some(schema) = doc.pointer_mut("/components/schemas/CreateJobRequest") {
        schema["not"] = serde_json::json!({
            "required": ["run_at", "delay_ms"],
            "properties": {
                "run_at": {"type": "string"},
                "delay_ms": {"type": "integer"}
            }
        });
    }
}

/// A bulk dead-letter request names its letters exactly one way — non-empty `ids`, a
/// `filter` with a field set, or `all: true` — said as a `oneOf`; and its `ids` are as
/// many as fit in this intake's body limit (a larger body is 413 before it is read).
fn bulk_selection(doc: &mut serde_json::Value, max_body_bytes: usize) {
    let Some(schema) = doc.pointer_mut("/components/schemas/BulkRequest") else {
        return;
    };
    let set = |field: &str| serde_json::json!({"required": [field], "properties": {field: {"type": "string"}}});
    schema["oneOf"] = serde_json::json!([
        {"required": ["ids"], "properties": {"ids": {"minItems": 1}}},
        {"required": ["filter"], "properties": {"filter": {
            "type": "object",
            "anyOf": [set("queue"), set("kind"), set("error"), set("since"), set("until")]
        }}},
        {"required": ["all"], "properties": {"all": {"const": true}}}
    ]);
    // A quoted UUID and its separator take at most 48 bytes; 4 KiB for the rest.
    let fit = max_body_bytes.saturating_sub(4096) / 48;
    let most = fit.min(operator::dead::BULK_MAX as usize);
    if let Some(ids) = schema.pointer_mut("/properties/ids") {
        ids["maxItems"] = most.into();
    }
}

/// `GET /openapi.json`: this API's OpenAPI 3.1 document, generated from the code. On
/// an intake without keys, every protected operation also lists the empty security
/// requirement: there, authentication is optional.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, description = "The OpenAPI document", body = Object)))]
async fn openapi_json(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> impl IntoResponse {
    let mut doc = serde_json::to_value(openapi()).unwrap_or_default();
    if !state.keys.protected() {
        optional_security(&mut doc);
    }
    accepted_kinds(&mut doc, &state.catalog);
    exclusive_schedules(&mut doc);
    bulk_selection(&mut doc, state.settings.max_body_bytes);
    Json(doc)
}

/// Lists the kinds this intake accepts as the `enum` of a job's and a schedule's `kind`
/// (`webhook.deliver` is made by Conveyor only).
fn accepted_kinds(doc: &mut serde_json::Value, catalog: &Catalog) {
    let kinds: Vec<&str> = catalog
        .kinds()
        .into_iter()
        .filter(|kind| *kind != jobs::kinds::webhook::KIND)
        .collect();
    for schema in [
        "CreateJobRequest",
        "CreateScheduleRequest",
        "UpdateScheduleRequest",
    ] {
        if let Some(kind) =
            doc.pointer_mut(&format!("/components/schemas/{schema}/properties/kind"))
        {
            let mut allowed: Vec<serde_json::Value> = kinds.iter().map(|k| (*k).into()).collect();
            // An optional field's `null` stays allowed.
            if kind["type"]
                .as_array()
                .is_some_and(|types| types.iter().any(|t| t == "null"))
            {
                allowed.push(serde_json::Value::Null);
            }
            kind["enum"] = allowed.into();
        }
    }
}

/// Adds the empty requirement (no authentication) beside each operation's `bearer`.
fn optional_security(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            if let Some(security) = operation.get_mut("security").and_then(|s| s.as_array_mut()) {
                security.push(serde_json::json!({}));
            }
        }
    }
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
            auth::authenticate,
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
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([REQUEST_ID, header::RETRY_AFTER, header::LOCATION]),
    )
}

/// Checks protected mode: without API keys (configured or stored) the intake serves
/// only on loopback.
///
/// # Errors
/// A non-loopback address without keys.
pub fn check_exposure(protected: bool, addr: SocketAddr) -> Result<(), String> {
    if !protected {
        if !addr.ip().is_loopback() {
            return Err(format!(
                "refusing to serve on {addr} without API keys: anyone who can reach it could enqueue jobs and act as an admin. \
                 Create a key (`conveyor keys create --name NAME --role admin`), or set producer.api_keys \
                 (`conveyor keys new`), or listen on a loopback address"
            ));
        }
        tracing::warn!(%addr, "no API keys configured or stored: unprotected mode, serving on loopback only; every client acts as an admin");
    }
    Ok(())
}
