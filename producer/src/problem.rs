//! API errors as RFC 9457 `application/problem+json`. Client errors name the field and
//! the reason; server errors are opaque (details go to the log, not the client).

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jobs::ValidationErrors;
use serde::Serialize;

/// Everything intake can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (syntax), or a parameter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The content type is not JSON.
    #[error("expected content-type application/json, got {0}")]
    UnsupportedMediaType(String),
    /// The body exceeds the limit.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// Values are invalid; each error names its field.
    #[error("invalid request: {0}")]
    Validation(ValidationErrors),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// No such method on this path.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No valid API key.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A valid key that may not do this (a scope it lacks, a kind or queue outside
    /// its reach); the message names what is missing.
    #[error("{0}")]
    Forbidden(String),
    /// Over the caller's rate limit; retry after the duration.
    #[error("rate limit exceeded; retry in {0:?}")]
    RateLimited(Duration),
    /// Conflicts with existing state (an idempotency key reused with another body).
    #[error("{0}")]
    Conflict(String),
    /// A dependency is down; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The request took too long.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// A bug or an unexpected failure; details are logged, not returned.
    #[error("internal error")]
    Internal(String),
}

/// An error response (RFC 9457 problem details), as every non-2xx answer is shaped.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type, e.g. `/problems/validation`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened, for a person.
    pub detail: String,
    /// For 422: each invalid field with its path (`args.items[2].quantity`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldProblem>>,
}

/// One invalid field.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldProblem {
    /// Path of the field: dotted, with `[i]` for array elements.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) | ApiError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => ("/problems/bad-request", "Malformed request"),
            ApiError::UnsupportedMediaType(_) => {
                ("/problems/unsupported-media-type", "Unsupported media type")
            }
            ApiError::PayloadTooLarge(_) => {
                ("/problems/payload-too-large", "Request body too large")
            }
            ApiError::Validation(_) => ("/problems/validation", "Invalid request"),
            ApiError::NotFound(_) => ("/problems/not-found", "Not found"),
            ApiError::Unauthorized(_) => ("/problems/unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => ("/problems/forbidden", "Forbidden"),
            ApiError::RateLimited(_) => ("/problems/rate-limited", "Too many requests"),
            ApiError::MethodNotAllowed => ("/problems/method-not-allowed", "Method not allowed"),
            ApiError::Conflict(_) => ("/problems/conflict", "Conflict"),
            ApiError::Unavailable(_) => ("/problems/unavailable", "Service unavailable"),
            ApiError::Timeout(_) => ("/problems/timeout", "Request timed out"),
            ApiError::Internal(_) => ("/problems/internal", "Internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (kind, title) = self.slug();
        let detail = match &self {
            ApiError::Internal(_) => "an internal error occurred".to_owned(),
            other => other.to_string(),
        };
        let errors = match &self {
            ApiError::Validation(errors) => Some(
                errors
                    .0
                    .iter()
                    .map(|e| FieldProblem {
                        field: e.field.clone(),
                        message: e.message.clone(),
                    })
                    .collect(),
            ),
            _ => None,
        };
        let body = Problem {
            kind: kind.to_owned(),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        let retry_after = match &self {
            ApiError::Unavailable(_) | ApiError::Timeout(_) => Some(1),
            ApiError::RateLimited(wait) => {
                Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            }
            _ => None,
        };
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        ApiError::Validation(errors)
    }
}

impl From<access::Denied> for ApiError {
    fn from(denied: access::Denied) -> Self {
        ApiError::Forbidden(denied.0)
    }
}

impl From<store::Error> for ApiError {
    fn from(error: store::Error) -> Self {
        match error {
            store::Error::IdempotencyConflict(key) => ApiError::Conflict(format!(
                "idempotency key {key:?} was already used for a different job"
            )),
            e if e.is_transient() => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable("the job store is unavailable; retry later".into())
            }
            e => {
                tracing::error!(error = %e, "database error");
                ApiError::Internal(e.to_string())
            }
        }
    }
}
