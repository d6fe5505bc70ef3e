//! The intake's extractors. Their rejections are the API's own problem+json errors, so
//! a handler never parses a body or a query by hand:
//! - [`ApiJson`]: a JSON body — 415 for another content type, 413 above the body limit,
//!   400 for broken JSON syntax, 422 for the wrong shape with the failing field's path;
//! - [`ApiQuery`]: a query string — 422 naming what is wrong with it.
//!
//! Shape errors are worded by [`jobs::registry::shape_error`], the same rewriting the
//! per-kind argument validation uses.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use jobs::ValidationErrors;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::problem::ApiError;

/// A JSON request body of type `T`, decoded strictly (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        check_content_type(request.headers())?;
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(state.settings.max_body_bytes)
                } else {
                    ApiError::BadRequest(format!("could not read the request body: {rejection}"))
                }
            })?;
        decode(&body).map(ApiJson)
    }
}

/// Refuses a body that does not say it is JSON (`application/json` or
/// `application/*+json`, any parameters).
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        return Ok(());
    }
    let shown = if content_type.is_empty() {
        "none"
    } else {
        content_type
    };
    Err(ApiError::UnsupportedMediaType(shown.to_owned()))
}

/// Decodes a JSON body: a syntax error (or trailing data) is a 400; a shape error a 422
/// naming the field (`body` when it is the body itself).
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let not_json =
        |e: &serde_json::Error| ApiError::BadRequest(format!("body is not valid JSON: {e}"));
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => {
            deserializer.end().map_err(|e| not_json(&e))?;
            Ok(value)
        }
        Err(err) if err.inner().classify() == serde_json::error::Category::Data => Err(
            ApiError::Validation(at_body(jobs::registry::shape_error(&err))),
        ),
        Err(err) => Err(not_json(err.inner())),
    }
}

/// Names an error about the whole body `body` rather than leaving its field empty.
fn at_body(errors: ValidationErrors) -> ValidationErrors {
    ValidationErrors(
        errors
            .0
            .into_iter()
            .map(|mut e| {
                if e.field.is_empty() {
                    "body".clone_into(&mut e.field);
                }
                e
            })
            .collect(),
    )
}

/// A query string of type `T`; a malformed one is a 422 on `query`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                let text = text
                    .rfind(" at line ")
                    .map_or(text.as_str(), |i| &text[..i]);
                Err(ApiError::Validation(ValidationErrors::one("query", text)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // Fields are read by the decoder only.
    struct Body {
        kind: String,
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)] // Fields are read by the decoder only.
    struct Item {
        quantity: u32,
    }

    fn fields(error: &ApiError) -> Vec<(String, String)> {
        match error {
            ApiError::Validation(errors) => errors
                .0
                .iter()
                .map(|e| (e.field.clone(), e.message.clone()))
                .collect(),
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn json_and_json_suffix_types_pass_and_others_are_415() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            check_content_type(&headers)
        };
        assert!(with("application/json").is_ok());
        assert!(with("Application/JSON; charset=utf-8").is_ok());
        assert!(with("application/problem+json").is_ok());
        let err = with("text/plain").unwrap_err();
        assert_eq!(err.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(err.to_string().contains("text/plain"), "{err}");
        let err = check_content_type(&HeaderMap::new()).unwrap_err();
        assert!(err.to_string().contains("got none"), "{err}");
    }

    #[test]
    fn broken_syntax_and_trailing_data_are_400() {
        for body in [&b"{\"kind\": "[..], b"{\"kind\": \"a\", \"items\": []} x"] {
            let err = decode::<Body>(body).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{err:?}");
            assert!(err.to_string().contains("not valid JSON"), "{err}");
        }
    }

    #[test]
    fn a_wrong_shape_is_422_with_the_field_path_and_no_position() {
        let missing = decode::<Body>(br#"{"kind": "a", "items": [{}]}"#).unwrap_err();
        assert_eq!(
            fields(&missing),
            [("items[0].quantity".to_owned(), "is required".to_owned())]
        );
        let wrong = decode::<Body>(br#"{"kind": 7, "items": []}"#).unwrap_err();
        let wrong = fields(&wrong);
        assert_eq!(wrong[0].0, "kind");
        assert!(!wrong[0].1.contains(" at line "), "{wrong:?}");
        let unknown = decode::<Body>(br#"{"kind": "a", "items": [], "extra": 1}"#).unwrap_err();
        assert!(fields(&unknown)[0].1.contains("extra"));
        let missing_top = decode::<Body>(br#"{"items": []}"#).unwrap_err();
        assert_eq!(fields(&missing_top)[0].0, "kind");
    }

    #[test]
    fn a_body_of_the_wrong_type_is_named_body() {
        let err = decode::<Body>(b"\"text\"").unwrap_err();
        assert_eq!(fields(&err)[0].0, "body");
    }
}
