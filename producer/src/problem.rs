//! API errors as RFC 9457 `application/problem+json`. Client errors name the field and
//! the reason; server errors are opaque (details go to the log, not the client).
//!
//! Nothing here logs. A response made from an [`ApiError`] carries the error in its
//! extensions ([`Logged`]), and [`log_errors`] (a middleware around every route) logs
//! the server-side ones with their cause chain: user mistakes (4xx) are not logged.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jobs::ValidationErrors;
use serde::Serialize;

/// Everything intake can answer besides success.
#[derive(thiserror::Error)]
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
    /// Past the stream budget (`events.max_streams`, `events.max_streams_per_key`):
    /// 429 with `Retry-After`; the message names the cap.
    #[error("{0}")]
    TooManyStreams(&'static str),
    /// Conflicts with existing state (an idempotency key reused with another body).
    #[error("{0}")]
    Conflict(String),
    /// The broker cannot take more work now (blocked by an alarm, or confirms stalling);
    /// nothing was stored. 503, retry later.
    #[error("the broker cannot take more work right now ({0}); retry later")]
    Overloaded(#[source] broker::Error),
    /// The job store failed: 503 when the failure is transient (retry later), otherwise
    /// 500 (details are logged, not returned).
    #[error("the job store failed")]
    Store(#[source] store::Error),
    /// The request took too long.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// A server-side failure outside the store (the random source, a route wired
    /// without authentication): 500; the message is logged, not returned.
    #[error("{0}")]
    Internal(String),
}

/// Walks the cause chain, so a logged `?error` shows every layer.
impl std::fmt::Debug for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")?;
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            write!(f, "\n  caused by: {error}")?;
            cause = error.source();
        }
        Ok(())
    }
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
            ApiError::RateLimited(_) | ApiError::TooManyStreams(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Overloaded(_) | ApiError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told: the message for client errors, an opaque sentence for
    /// server errors.
    fn detail(&self) -> String {
        match self {
            ApiError::Store(e) if e.is_transient() => {
                "the job store is unavailable; retry later".to_owned()
            }
            ApiError::Store(_) | ApiError::Internal(_) => "an internal error occurred".to_owned(),
            other => other.to_string(),
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
            ApiError::TooManyStreams(_) => ("/problems/too-many-streams", "Too many streams"),
            ApiError::MethodNotAllowed => ("/problems/method-not-allowed", "Method not allowed"),
            ApiError::Conflict(_) => ("/problems/conflict", "Conflict"),
            ApiError::Overloaded(_) => ("/problems/unavailable", "Service unavailable"),
            ApiError::Store(e) if e.is_transient() => {
                ("/problems/unavailable", "Service unavailable")
            }
            ApiError::Store(_) | ApiError::Internal(_) => ("/problems/internal", "Internal error"),
            ApiError::Timeout(_) => ("/problems/timeout", "Request timed out"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (kind, title) = self.slug();
        let detail = self.detail();
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
            ApiError::Overloaded(_) | ApiError::Timeout(_) | ApiError::TooManyStreams(_) => Some(1),
            ApiError::Store(_) if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            ApiError::RateLimited(wait) => {
                Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            }
            _ => None,
        };
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        // Handed to `log_errors`, which logs server-side failures with their causes.
        response.extensions_mut().insert(Logged(Arc::new(self)));
        response
    }
}

/// The error a response was made from, in the response's extensions, for
/// [`log_errors`].
#[derive(Debug, Clone)]
pub struct Logged(pub Arc<ApiError>);

/// Middleware: logs the error behind every 5xx answer with its cause chain (a warning
/// when the answer says "retry later", an error otherwise). Client errors (4xx) are the
/// client's business and are not logged.
pub async fn log_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(Logged(error)) = response.extensions().get::<Logged>() {
        let status = response.status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error.message = %error, error.cause_chain = ?error, %status, "answering 503");
        } else if status.is_server_error() {
            tracing::error!(error.message = %error, error.cause_chain = ?error, %status, "request failed");
        }
    }
    response
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

/// A reused idempotency key is the client's conflict (409); every other store error
/// keeps its cause for the log.
impl From<store::Error> for ApiError {
    fn from(error: store::Error) -> Self {
        match error {
            store::Error::IdempotencyConflict(key) => ApiError::Conflict(format!(
                "idempotency key {key:?} was already used for a different job"
            )),
            e => ApiError::Store(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_store_error_is_503_with_retry_after_and_keeps_its_cause() {
        let error = ApiError::from(store::Error::Sqlx(sqlx_pool_timeout()));
        let chain = format!("{error:?}");
        let response = error.into_response();

        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert!(chain.contains("caused by: database error"), "{chain}");
        let logged = response.extensions().get::<Logged>().unwrap();
        assert!(matches!(*logged.0, ApiError::Store(_)));
    }

    #[test]
    fn a_permanent_store_error_is_an_opaque_500() {
        let error = ApiError::from(store::Error::Corrupt("state \"odd\"".into()));
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error.detail(), "an internal error occurred");
        assert!(format!("{error:?}").contains("corrupt row: state"));
    }

    #[test]
    fn a_reused_idempotency_key_is_a_409_naming_it() {
        let error = ApiError::from(store::Error::IdempotencyConflict("k1".into()));
        assert_eq!(error.status(), StatusCode::CONFLICT);
        assert!(error.detail().contains("\"k1\""), "{}", error.detail());
    }

    fn sqlx_pool_timeout() -> sqlx::Error {
        sqlx::Error::PoolTimedOut
    }
}
