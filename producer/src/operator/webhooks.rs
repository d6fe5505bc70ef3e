//! Webhook subscriptions over HTTP, for principals with `webhooks:manage` (admins):
//! create (the signing secret is in the answer, once), list, show, delete. Creating
//! and deleting write their audit row in the same transaction.

use access::webhooks::{self, CreateWebhook, WebhookRequestError};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use jobs::ValidationErrors;
use serde::{Deserialize, Serialize};
use store::SubscriptionRecord;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Auth, RequestId};
use crate::extract::ApiJson;
use crate::problem::{ApiError, Problem};

/// A state a webhook can follow, as the document shows it.
struct WebhookState;

impl utoipa::PartialSchema for WebhookState {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(
                "^(scheduled|enqueued|retrying|completed|dead|cancelled)$",
            ))
            .into()
    }
}

impl utoipa::ToSchema for WebhookState {}

/// `POST /v1/webhooks` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where deliveries are POSTed: an `http(s)` URL whose host does not resolve to a
    /// loopback, private or link-local address (unless
    /// `webhooks.allow_private_targets`).
    #[schema(max_length = 2048, pattern = "^[hH][tT][tT][pP][sS]?://[^/?#\\s]+")]
    pub url: String,
    /// Kind glob (`order.*`); absent: every kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// The states delivered, from `scheduled`, `enqueued`, `retrying`, `completed`,
    /// `dead`, `cancelled`; absent or empty: `completed`, `dead`, `cancelled`.
    #[serde(default)]
    #[schema(inline, value_type = Vec<WebhookState>)]
    pub states: Vec<String>,
    /// A note for people, up to 200 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// Attempts of each delivery, 1 to 25 (default 8).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 25)]
    pub max_attempts: Option<u32>,
}

/// A subscription as listed (never its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    /// Its id.
    pub id: Uuid,
    /// Where deliveries go.
    pub url: String,
    /// Kind glob.
    pub kind: String,
    /// The states delivered.
    pub states: Vec<String>,
    /// A note for people.
    pub description: Option<String>,
    /// Attempts of each delivery.
    pub max_attempts: u32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// By whom.
    pub created_by: String,
}

impl From<SubscriptionRecord> for WebhookView {
    fn from(r: SubscriptionRecord) -> Self {
        Self {
            id: r.id,
            url: r.url,
            kind: r.kind,
            states: r.states,
            description: r.description,
            max_attempts: r.max_attempts,
            created_at: r.created_at,
            created_by: r.created_by,
        }
    }
}

/// `201` body: the subscription and its signing secret, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedWebhookView {
    /// The Standard Webhooks secret (`whsec_` + base64): give it to the receiver now;
    /// it is never shown again.
    pub secret: String,
    /// What was stored.
    #[serde(flatten)]
    pub record: WebhookView,
}

/// `GET /v1/webhooks` body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    /// Every subscription, newest first.
    pub webhooks: Vec<WebhookView>,
}

fn refused(e: WebhookRequestError) -> ApiError {
    match e {
        WebhookRequestError::Invalid(errors) => ApiError::Validation(errors),
        WebhookRequestError::Denied(denied) => ApiError::from(denied),
        WebhookRequestError::Random => ApiError::Internal("the random source failed".into()),
        WebhookRequestError::Store(e) => ApiError::from(e),
    }
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse()
        .map_err(|_| ApiError::Validation(ValidationErrors::one("id", "must be a UUID")))
}

/// `POST /v1/webhooks`: subscribe a URL to the transitions of matching jobs. The answer
/// holds the signing secret, once.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    request_body(content = CreateWebhookRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; the secret is in the body, this once", body = CreatedWebhookView),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks webhooks:manage", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid url (or a refused target), kind, states, description or max_attempts, each named", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["webhooks:manage"]))
)]
pub async fn create_webhook(
    State(state): State<AppState>,
    auth: Auth,
    request_id: RequestId,
    body: Result<ApiJson<CreateWebhookRequest>, ApiError>,
) -> Result<Response, ApiError> {
    webhooks::require_manager(&auth)?;
    let ApiJson(request) = body?;
    let created = webhooks::create_webhook(
        &state.store,
        &auth,
        &auth.audit(request_id.0),
        &state.webhook_targets,
        CreateWebhook {
            url: request.url,
            kind: request.kind,
            states: request.states,
            description: request.description,
            max_attempts: request.max_attempts,
        },
    )
    .await
    .map_err(refused)?;
    let location = format!("/v1/webhooks/{}", created.record.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(CreatedWebhookView {
            secret: created.secret,
            record: created.record.into(),
        }),
    )
        .into_response())
}

/// `GET /v1/webhooks`: every subscription (never a secret).
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    responses(
        (status = 200, description = "The subscriptions", body = WebhookList),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks webhooks:manage", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["webhooks:manage"]))
)]
pub async fn list_webhooks(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<WebhookList>, ApiError> {
    webhooks::require_manager(&auth)?;
    let webhooks = state
        .store
        .subscriptions()
        .await?
        .into_iter()
        .map(WebhookView::from)
        .collect();
    Ok(Json(WebhookList { webhooks }))
}

/// `GET /v1/webhooks/{id}`: one subscription (never its secret).
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "Subscription id (UUID)")),
    responses(
        (status = 200, description = "The subscription", body = WebhookView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks webhooks:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["webhooks:manage"]))
)]
pub async fn get_webhook(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    webhooks::require_manager(&auth)?;
    let id = parse_id(&id)?;
    match state.store.subscription(id).await? {
        Some(record) => Ok(Json(record.into())),
        None => Err(ApiError::NotFound(format!("no webhook with id {id}"))),
    }
}

/// `DELETE /v1/webhooks/{id}`: stop delivering to a subscription. Deliveries already
/// owed to it complete without sending.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "Subscription id (UUID)")),
    responses(
        (status = 200, description = "Deleted", body = WebhookView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks webhooks:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["webhooks:manage"]))
)]
pub async fn delete_webhook(
    State(state): State<AppState>,
    auth: Auth,
    request_id: RequestId,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    webhooks::require_manager(&auth)?;
    let id = parse_id(&id)?;
    match state
        .store
        .delete_subscription(id, &auth.audit(request_id.0))
        .await?
    {
        Some(record) => Ok(Json(record.into())),
        None => Err(ApiError::NotFound(format!("no webhook with id {id}"))),
    }
}
