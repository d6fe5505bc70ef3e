//! Webhook subscriptions, one way for the CLI (`conveyor webhooks add`) and the API
//! (`POST /v1/webhooks`): check the request (every problem at once, by field), check the
//! target (its host must not resolve to a private address unless allowed), generate the
//! Standard Webhooks secret, store it with the `webhook.create` audit row, and hand the
//! secret back once. Managing subscriptions takes `webhooks:manage` (admins).

use jobs::kinds::webhook::{
    SECRET_PREFIX, SUBSCRIBABLE_STATES, TargetError, TargetPolicy, parse_url,
};
use jobs::{JobState, ValidationErrors};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use store::{AuditContext, NewSubscription, Store, SubscriptionRecord};
use uuid::Uuid;

use crate::glob::Glob;
use crate::principal::{Denied, Principal};
use crate::scope::Scope;

/// Default attempts of each delivery.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// Most attempts a subscription may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 25;

/// What a new subscription should be; unvalidated, as typed or posted.
#[derive(Debug, Clone, Default)]
pub struct CreateWebhook {
    /// Where deliveries go: an `http` or `https` URL.
    pub url: String,
    /// Kind glob (`order.*`); `None`: every kind.
    pub kind: Option<String>,
    /// States delivered; empty: the final ones (`completed`, `dead`, `cancelled`).
    pub states: Vec<String>,
    /// A note for people.
    pub description: Option<String>,
    /// Attempts of each delivery (default [`DEFAULT_MAX_ATTEMPTS`]).
    pub max_attempts: Option<u32>,
}

/// A subscription just created, with its secret (shown this once).
#[derive(Debug, Clone, Serialize)]
pub struct CreatedWebhook {
    /// The `whsec_…` signing secret: give it to the receiver now.
    pub secret: String,
    /// What was stored.
    #[serde(flatten)]
    pub record: SubscriptionRecord,
}

/// Why a subscription was not created.
#[derive(Debug, thiserror::Error)]
pub enum WebhookRequestError {
    /// The request is invalid (a refused target included); each error names its field.
    #[error("invalid webhook: {0}")]
    Invalid(ValidationErrors),
    /// The creator may not manage webhooks.
    #[error("{0}")]
    Denied(#[from] Denied),
    /// The random source failed.
    #[error("the system random source failed")]
    Random,
    /// The database failed; nothing was stored.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Requires `webhooks:manage`.
///
/// # Errors
/// A [`Denied`] naming the scope.
pub fn require_manager(principal: &Principal) -> Result<(), Denied> {
    principal.require(Scope::WebhooksManage)
}

/// A new Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes.
///
/// # Errors
/// When the system's random source fails.
pub fn generate_secret() -> Result<String, ring::error::Unspecified> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes)?;
    Ok(format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// Checks a job's `callback_url` or a subscription's `url` as field `field`: its text,
/// then where it resolves.
///
/// # Errors
/// The field's error: malformed, unresolvable, or resolving to a refused address.
pub async fn check_target(
    policy: &TargetPolicy,
    field: &str,
    text: &str,
) -> Result<(), ValidationErrors> {
    let url = parse_url(text).map_err(|e| ValidationErrors::one(field, e))?;
    policy.check(&url).await.map(drop).map_err(|e| match e {
        TargetError::Invalid(e) => ValidationErrors::one(field, e),
        other => ValidationErrors::one(field, other.to_string()),
    })
}

/// Creates a subscription for `creator` (who needs `webhooks:manage`), checking its
/// target under `policy`.
///
/// # Errors
/// Denied, an invalid request (every field at once), or the database failed.
pub async fn create_webhook(
    store: &Store,
    creator: &Principal,
    context: &AuditContext,
    policy: &TargetPolicy,
    request: CreateWebhook,
) -> Result<CreatedWebhook, WebhookRequestError> {
    require_manager(creator)?;
    let mut errors = ValidationErrors::new();
    let url = request.url.trim().to_owned();
    if let Err(e) = parse_url(&url) {
        errors.add("url", e);
    }
    let kind = match request.kind.as_deref().map(str::trim) {
        None | Some("") => "*".to_owned(),
        Some(text) => match Glob::parse(text) {
            Ok(glob) => String::from(glob),
            Err(e) => {
                errors.add("kind", e);
                String::new()
            }
        },
    };
    let mut states: Vec<String> = Vec::new();
    for (i, text) in request.states.iter().enumerate() {
        match text.trim().parse::<JobState>() {
            Ok(state) if SUBSCRIBABLE_STATES.contains(&state) => {
                if !states.iter().any(|s| s == state.as_str()) {
                    states.push(state.as_str().to_owned());
                }
            }
            _ => errors.add(
                format!("states[{i}]"),
                format!(
                    "{text:?} is not a state a webhook can follow; states: {}",
                    SUBSCRIBABLE_STATES.map(|s| s.as_str()).join(", ")
                ),
            ),
        }
    }
    if request.states.is_empty() {
        states = ["completed", "dead", "cancelled"]
            .map(str::to_owned)
            .to_vec();
    }
    let description = request
        .description
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty());
    if let Some(d) = &description
        && (d.chars().count() > 200 || d.chars().any(char::is_control))
    {
        errors.add(
            "description",
            "must be at most 200 characters, without control characters",
        );
    }
    let max_attempts = request.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
        errors.add(
            "max_attempts",
            format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
        );
    }
    // The target is checked (a DNS lookup) only when the rest is valid.
    if errors.is_empty()
        && let Err(e) = check_target(policy, "url", &url).await
    {
        errors.extend(e);
    }
    errors.into_result().map_err(WebhookRequestError::Invalid)?;
    let secret = generate_secret().map_err(|_| WebhookRequestError::Random)?;
    let new = NewSubscription {
        id: Uuid::now_v7(),
        url,
        kind,
        states,
        secret: secret.clone(),
        description,
        max_attempts,
    };
    let record = store.create_subscription(&new, context).await?;
    Ok(CreatedWebhook { secret, record })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_whsec_and_32_random_bytes_in_base64() {
        use base64::Engine as _;
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_ne!(a, b);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(a.strip_prefix("whsec_").unwrap())
            .unwrap();
        assert_eq!(bytes.len(), 32);
    }

    #[tokio::test]
    async fn a_target_is_named_by_its_field_when_refused() {
        let errors = check_target(&TargetPolicy::default(), "callback_url", "http://10.0.0.1/")
            .await
            .unwrap_err();
        assert_eq!(errors.0[0].field, "callback_url");
        assert!(errors.0[0].message.contains("private"), "{errors}");
        let errors = check_target(&TargetPolicy::default(), "url", "gopher://x")
            .await
            .unwrap_err();
        assert!(errors.0[0].message.contains("http"), "{errors}");
    }
}
