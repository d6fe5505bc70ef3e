//! The operator API: every operation the CLI offers on jobs, dead letters, keys and the
//! audit log, over HTTP, each guarded by its scope. The handlers call the same store
//! functions (and `access` helpers) as the CLI, so both behave alike; every change
//! writes its audit row in its own transaction, naming the key and the request id.
//!
//! # Layout
//! - [`dead`] — `GET /v1/dead`, `/v1/dead/groups`, `/v1/dead/{id}`,
//!   `POST /v1/dead/replay`, `POST /v1/dead/purge`.
//! - [`retry`] — `POST /v1/jobs/{id}/retry`.
//! - [`stats`] — `GET /v1/stats`.
//! - [`keys`] — `POST /v1/keys`, `GET /v1/keys`, `DELETE /v1/keys/{id}`.
//! - [`audit`] — `GET /v1/audit`.
//! - [`webhooks`] — `POST /v1/webhooks`, `GET /v1/webhooks`, `GET /v1/webhooks/{id}`,
//!   `DELETE /v1/webhooks/{id}`.

pub mod audit;
pub mod dead;
pub mod keys;
pub mod retry;
pub mod stats;
pub mod webhooks;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use jobs::ValidationErrors;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::problem::ApiError;

/// The operator routes, with their OpenAPI paths.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dead::list_dead))
        .routes(routes!(dead::dead_groups))
        .routes(routes!(dead::get_dead))
        .routes(routes!(dead::replay))
        .routes(routes!(dead::purge))
        .routes(routes!(retry::retry_job))
        .routes(routes!(stats::stats))
        .routes(routes!(audit::list_audit))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(webhooks::get_webhook, webhooks::delete_webhook))
}

/// A query string, or a 422 naming what is wrong with it.
pub(crate) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(q)| q).map_err(|e| {
        let text = e.body_text();
        let text = text
            .rfind(" at line ")
            .map_or(text.as_str(), |i| &text[..i]);
        ApiError::Validation(ValidationErrors::one("query", text.to_owned()))
    })
}

/// A page size: 1 to `max`, `default` when absent.
pub(crate) fn page_size(
    limit: Option<u32>,
    default: u32,
    max: u32,
    errors: &mut ValidationErrors,
) -> u32 {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        errors.add("limit", format!("must be between 1 and {max}"));
    }
    limit
}
