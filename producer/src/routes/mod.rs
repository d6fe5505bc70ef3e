//! The intake's routes, one module per resource. Each handler is registered with
//! utoipa-axum in `crate::routers`, so the router and `/openapi.json` cannot disagree.
//!
//! - [`jobs`] — `POST /v1/jobs`, `GET /v1/jobs`, `GET /v1/jobs/{id}`,
//!   `POST /v1/jobs/{id}/cancel`;
//! - [`batches`] — `POST /v1/jobs/batch`;
//! - [`health`] — `/healthz`, `/readyz`, `/metrics`;
//! - [`wire`] — the request and response types;
//! - [`validate`] — the pure request → job conversion;
//! - [`not_found`], [`method_not_allowed`] — the fallbacks, as problem+json.

pub mod batches;
pub mod health;
pub mod jobs;
pub mod validate;
pub mod wire;

use crate::problem::ApiError;

/// Unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Known route, wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
