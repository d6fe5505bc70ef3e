//! API keys over HTTP, for principals with `keys:manage` and no kind or queue limits:
//! create (the key is in the answer, once), list, revoke.

use access::manage::{self, CreateKey, KeyRequestError};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use jobs::ValidationErrors;
use serde::{Deserialize, Serialize};
use store::{ApiKeyRecord, RevokeOutcome};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Auth, RequestId};
use crate::extract::ApiJson;
use crate::problem::{ApiError, Problem};

/// A kind or queue glob in a key request (`order.*`), as the document shows it
/// ([`access::Glob::parse`] is what the server enforces).
struct Glob;

impl utoipa::PartialSchema for Glob {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(128))
            .pattern(Some("^[A-Za-z0-9._*-]+$"))
            .into()
    }
}

impl utoipa::ToSchema for Glob {}

/// `POST /v1/keys` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// A name for people (`web-shop`), 1 to 100 characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\x00-\\x1f\\x7f-\\x9f\\s][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub name: String,
    /// `producer`, `viewer`, `operator` or `admin`.
    #[schema(pattern = "^(producer|viewer|operator|admin)$")]
    pub role: String,
    /// Kind globs the key is limited to (`order.*`); absent or empty: every kind.
    #[serde(default)]
    #[schema(inline, value_type = Vec<Glob>)]
    pub kinds: Vec<String>,
    /// Queue globs the key is limited to; absent or empty: every queue.
    #[serde(default)]
    #[schema(inline, value_type = Vec<Glob>)]
    pub queues: Vec<String>,
    /// When it stops working: an age (`90d`, `12h`) or an RFC 3339 time; absent: never.
    #[serde(default)]
    #[schema(
        pattern = "^([1-9][0-9]{0,3}[smhd]|(2[1-9][0-9]{2}|[3-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"
    )]
    pub expires: Option<String>,
}

/// A key as listed (never the key itself).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its role.
    #[schema(pattern = "^(producer|viewer|operator|admin)$")]
    pub role: String,
    /// Kind globs; empty: every kind.
    pub kinds: Vec<String>,
    /// Queue globs; empty: every queue.
    pub queues: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// By whom.
    pub created_by: String,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last request seen with it (noted within seconds, in bulk).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// By whom.
    pub revoked_by: Option<String>,
}

impl From<ApiKeyRecord> for KeyView {
    fn from(r: ApiKeyRecord) -> Self {
        Self {
            id: r.id,
            name: r.name,
            role: r.role,
            kinds: r.kinds,
            queues: r.queues,
            created_at: r.created_at,
            created_by: r.created_by,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
            revoked_by: r.revoked_by,
        }
    }
}

/// `201` body: the new key, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKeyView {
    /// The key: hand it to its holder now; it is not stored and cannot be shown again.
    pub key: String,
    /// What was stored.
    #[serde(flatten)]
    pub record: KeyView,
}

/// `GET /v1/keys` body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList {
    /// Every key, revoked ones included, newest first.
    pub keys: Vec<KeyView>,
}

fn refused(e: KeyRequestError) -> ApiError {
    match e {
        KeyRequestError::Invalid(errors) => ApiError::Validation(errors),
        KeyRequestError::Denied(denied) => ApiError::from(denied),
        KeyRequestError::Random => ApiError::Internal("the random source failed".into()),
        KeyRequestError::Store(e) => ApiError::from(e),
    }
}

/// `POST /v1/keys`: create a key with a role, optionally limited to kinds and queues
/// and expiring. The answer holds the key, once; only its hash is stored.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    request_body(content = CreateKeyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; the key is in the body, this once", body = CreatedKeyView),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks keys:manage, or is limited to some kinds or queues", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name, role, globs or expiry, each named", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["keys:manage"]))
)]
pub async fn create_key(
    State(state): State<AppState>,
    auth: Auth,
    request_id: RequestId,
    body: Result<ApiJson<CreateKeyRequest>, ApiError>,
) -> Result<(StatusCode, Json<CreatedKeyView>), ApiError> {
    manage::require_manager(&auth)?;
    let ApiJson(request) = body?;
    let created = manage::create_key(
        &state.store,
        &auth,
        &auth.audit(request_id.0),
        CreateKey {
            name: request.name,
            role: request.role,
            kinds: request.kinds,
            queues: request.queues,
            expires: request.expires,
        },
        Utc::now(),
    )
    .await
    .map_err(refused)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKeyView {
            key: created.key.expose().to_owned(),
            record: created.record.into(),
        }),
    ))
}

/// `GET /v1/keys`: every key (never the key itself), revoked ones included.
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    responses(
        (status = 200, description = "The keys", body = KeyList),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks keys:manage, or is limited to some kinds or queues", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["keys:manage"]))
)]
pub async fn list_keys(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<KeyList>, ApiError> {
    manage::require_manager(&auth)?;
    let keys = state
        .store
        .keys()
        .await?
        .into_iter()
        .map(KeyView::from)
        .collect();
    Ok(Json(KeyList { keys }))
}

/// `DELETE /v1/keys/{id}`: revoke a key; every intake refuses it within a second.
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    tag = "keys",
    params(("id" = uuid::Uuid, Path, description = "Key id (UUID)")),
    responses(
        (status = 200, description = "Revoked", body = KeyView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks keys:manage, or is limited to some kinds or queues", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already revoked", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["keys:manage"]))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    auth: Auth,
    request_id: RequestId,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    manage::require_manager(&auth)?;
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::Validation(ValidationErrors::one("id", "must be a UUID")))?;
    match state
        .store
        .revoke_key(id, &auth.audit(request_id.0))
        .await?
    {
        RevokeOutcome::Revoked(record) => Ok(Json(record.into())),
        RevokeOutcome::AlreadyRevoked(record) => Err(ApiError::Conflict(format!(
            "key {id} ({}) was already revoked",
            record.name
        ))),
        RevokeOutcome::NotFound => Err(ApiError::NotFound(format!("no key with id {id}"))),
    }
}
