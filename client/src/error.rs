//! What can go wrong talking to Conveyor: input refused before it was sent
//! ([`Error::Invalid`]), an answer in `application/problem+json` ([`Error::Api`], with
//! every field of the [`Problem`]), or the transport ([`Error::Http`]).

use std::fmt;
use std::time::Duration;

use jobs::ValidationErrors;
use serde::Deserialize;

/// An error from a [`Client`](crate::Client) call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The job was refused before anything was sent: its arguments broke the kind's
    /// rules ([`jobs::JobArgs::validate`]) or an option is out of bounds. Paths are
    /// those the intake would report (`args.items[0].sku`).
    #[error("invalid job: {0}")]
    Invalid(ValidationErrors),
    /// Conveyor answered with an error (4xx or 5xx), described by its problem document.
    #[error("{0}")]
    Api(Problem),
    /// The request did not complete: connection refused, timed out, or the answer was
    /// not what the API documents.
    #[error("request to Conveyor failed")]
    Http(#[from] reqwest::Error),
    /// The answer was a success whose body did not decode.
    #[error("unexpected answer from Conveyor ({status}): {source}")]
    Decode {
        /// The HTTP status.
        status: u16,
        /// Why it did not decode.
        #[source]
        source: serde_json::Error,
    },
    /// The base URL given to [`Client::new`](crate::Client::new) is not an `http(s)` URL.
    #[error("not an http(s) base URL: {0:?}")]
    BaseUrl(String),
    /// The ledger's database failed while recording a job (`enqueue_in`).
    #[cfg(feature = "sqlx")]
    #[error("the database refused the job")]
    Database(#[from] sqlx::Error),
}

impl Error {
    /// The problem document when Conveyor answered with an error.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Api(problem) => Some(problem),
            _ => None,
        }
    }

    /// The HTTP status when Conveyor answered with an error.
    pub fn status(&self) -> Option<u16> {
        self.problem().map(|p| p.status)
    }

    /// The field errors: those found before sending, or the server's `errors`.
    pub fn field_errors(&self) -> Vec<FieldProblem> {
        match self {
            Error::Invalid(errors) => errors
                .0
                .iter()
                .map(|e| FieldProblem {
                    field: e.field.clone(),
                    message: e.message.clone(),
                })
                .collect(),
            Error::Api(problem) => problem.errors.clone(),
            _ => Vec::new(),
        }
    }

    /// True when the same request may succeed later unchanged: a `429` or `503` (wait
    /// [`Problem::retry_after`]) or a transport failure.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api(problem) => matches!(problem.status, 429 | 502 | 503 | 504),
            Error::Http(e) => e.is_timeout() || e.is_connect(),
            _ => false,
        }
    }
}

/// An error answer, as RFC 9457 `application/problem+json` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Problem {
    /// A URI reference naming the problem type, e.g. `/problems/validation`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Short summary of the problem type.
    #[serde(default)]
    pub title: String,
    /// The HTTP status.
    #[serde(default)]
    pub status: u16,
    /// What happened, for a person.
    #[serde(default)]
    pub detail: String,
    /// For a `422`: each invalid field with its path (`args.items[2].quantity`).
    #[serde(default)]
    pub errors: Vec<FieldProblem>,
    /// The `Retry-After` header of a `429` or `503`: when to try again.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.title)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// One invalid field of a refused request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FieldProblem {
    /// Path of the field: dotted, with `[i]` for array elements.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Problem {
    /// The problem of an error answer: its body when it is a problem document, else one
    /// made of the status (a proxy's HTML page, an empty body).
    pub(crate) fn from_answer(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Self {
        let mut problem = serde_json::from_slice::<Problem>(body).unwrap_or_else(|_| Problem {
            kind: "about:blank".into(),
            title: reason(status).into(),
            status,
            detail: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            errors: Vec::new(),
            retry_after: None,
        });
        if problem.status == 0 {
            problem.status = status;
        }
        problem.retry_after = retry_after;
        problem
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_document_keeps_every_field() {
        let body = br#"{"type":"/problems/validation","title":"Invalid request","status":422,
            "detail":"invalid request: args.ms: is required",
            "errors":[{"field":"args.ms","message":"is required"}]}"#;

        let problem = Problem::from_answer(422, None, body);

        assert_eq!(problem.kind, "/problems/validation");
        assert_eq!(problem.title, "Invalid request");
        assert_eq!(problem.status, 422);
        assert_eq!(problem.detail, "invalid request: args.ms: is required");
        assert_eq!(
            problem.errors,
            vec![FieldProblem {
                field: "args.ms".into(),
                message: "is required".into()
            }]
        );
    }

    #[test]
    fn a_body_that_is_no_problem_document_still_gives_the_status() {
        let problem = Problem::from_answer(503, Some(Duration::from_secs(2)), b"<html>busy</html>");

        assert_eq!(problem.status, 503);
        assert_eq!(problem.title, "Service Unavailable");
        assert_eq!(problem.retry_after, Some(Duration::from_secs(2)));
        assert!(Error::Api(problem).is_retryable());
    }
}
