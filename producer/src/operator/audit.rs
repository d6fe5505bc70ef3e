//! `GET /v1/audit`: who changed what, newest first.

use access::Scope;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use jobs::ValidationErrors;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{AuditAction, AuditQuery, AuditRecord};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Auth;
use crate::problem::{ApiError, Problem};

/// `GET /v1/audit` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditListQuery {
    /// Only this action: `job.cancel`, `job.retry`, `dead.replay`, `dead.purge`,
    /// `key.create`, `key.revoke`, `queue.pause`, `queue.resume`.
    #[param(
        pattern = "^(job\\.cancel|job\\.retry|dead\\.replay|dead\\.purge|key\\.create|key\\.revoke|queue\\.pause|queue\\.resume|webhook\\.create|webhook\\.delete)$"
    )]
    pub action: Option<String>,
    /// Only this actor (a key's name, a CLI user).
    #[param(pattern = "^[^\\x00]*$")]
    pub actor: Option<String>,
    /// Only rows at or after: RFC 3339, or an age like `15m`, `2h`, `7d`.
    #[param(
        pattern = "^([0-9]{1,6}[smhd]|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"
    )]
    pub since: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

/// One change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntryView {
    /// Sequence number.
    pub id: i64,
    /// When it committed.
    pub at: DateTime<Utc>,
    /// `key`, `config` (a key in producer.api_keys), `cli` or `local`.
    pub actor_kind: String,
    /// The API key's id (never the key).
    pub actor_id: Option<Uuid>,
    /// The key's name, the CLI user, or the client address.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// The jobs (dead letters, key) changed.
    pub targets: Vec<Uuid>,
    /// The filter of a bulk operation.
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// How many things changed.
    pub count: i64,
    /// The request's `x-request-id`.
    pub request_id: Option<String>,
    /// Anything else recorded.
    #[schema(value_type = Option<Object>)]
    pub detail: Option<Value>,
}

impl From<AuditRecord> for AuditEntryView {
    fn from(r: AuditRecord) -> Self {
        Self {
            id: r.id,
            at: r.at,
            actor_kind: r.actor.kind.as_str().to_owned(),
            actor_id: r.actor.id,
            actor: r.actor.name,
            action: r.action.as_str().to_owned(),
            targets: r.targets,
            filter: r.filter,
            count: r.count,
            request_id: r.request_id,
            detail: r.detail,
        }
    }
}

/// `GET /v1/audit` body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<AuditEntryView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /v1/audit`: every change made through the API or the CLI, newest first.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "operations",
    params(AuditListQuery),
    responses(
        (status = 200, description = "A page of audit entries", body = AuditPage),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks audit:read", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad filter, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["audit:read"]))
)]
pub async fn list_audit(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<Query<AuditListQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    auth.require(Scope::AuditRead)?;
    let query = super::query(query)?;
    let mut errors = ValidationErrors::new();
    let limit = super::page_size(query.limit, 100, 1000, &mut errors);
    let action = match query.action.as_deref().map(str::parse::<AuditAction>) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            errors.add("action", e);
            None
        }
    };
    let since = match query
        .since
        .as_deref()
        .map(|t| access::select::parse_time(t, Utc::now()))
    {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            errors.add("since", e);
            None
        }
    };
    // Postgres text holds no NUL: refused here rather than failing in the database.
    if query.actor.as_deref().is_some_and(|a| a.contains('\0')) {
        errors.add("actor", "must not contain NUL characters");
    }
    let before = match query.cursor.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            errors.add("cursor", "is not a cursor returned by this API");
            None
        }
    };
    errors.into_result()?;
    let rows = state
        .store
        .audit_log(&AuditQuery {
            action,
            actor: query.actor,
            before,
            since,
            limit: limit + 1,
        })
        .await?;
    let more = rows.len() > limit as usize;
    let entries: Vec<AuditEntryView> = rows
        .into_iter()
        .take(limit as usize)
        .map(AuditEntryView::from)
        .collect();
    let next_cursor = if more {
        entries.last().map(|e| e.id.to_string())
    } else {
        None
    };
    Ok(Json(AuditPage {
        entries,
        next_cursor,
    }))
}
