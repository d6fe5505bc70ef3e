//! Creating keys, one way for the CLI (`conveyor keys create`) and the API
//! (`POST /v1/keys`): validate the request (every problem at once, by field), generate
//! the key, store its hash with the `key.create` audit row, and hand the key back once.

use chrono::{DateTime, Utc};
use jobs::ValidationErrors;
use serde::Serialize;
use store::{ApiKeyRecord, AuditContext, NewApiKey, Store};
use uuid::Uuid;

use crate::glob::Glob;
use crate::key::ApiKey;
use crate::principal::Principal;
use crate::scope::{Role, Scope};

/// What a new key should be; unvalidated text, as typed or posted.
#[derive(Debug, Clone, Default)]
pub struct CreateKey {
    /// A name for people, 1 to 100 characters.
    pub name: String,
    /// `producer`, `viewer`, `operator` or `admin`.
    pub role: String,
    /// Kind globs; empty: every kind.
    pub kinds: Vec<String>,
    /// Queue globs; empty: every queue.
    pub queues: Vec<String>,
    /// When it stops working: an age from now (`90d`, `12h`, `30m`) or an RFC 3339
    /// instant; `None`: never.
    pub expires: Option<String>,
}

/// A key just created: the key itself (shown once) and its record.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedKey {
    /// The key: give it to its holder now, it is not kept.
    #[serde(serialize_with = "expose")]
    pub key: ApiKey,
    /// What was stored.
    #[serde(flatten)]
    pub record: ApiKeyRecord,
}

fn expose<S: serde::Serializer>(key: &ApiKey, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(key.expose())
}

/// Why a key was not created.
#[derive(Debug, thiserror::Error)]
pub enum KeyRequestError {
    /// The request is invalid; each error names its field.
    #[error("invalid key request: {0}")]
    Invalid(ValidationErrors),
    /// The creator may not manage keys, or not keys like this one.
    #[error("{0}")]
    Denied(#[from] crate::principal::Denied),
    /// The random source failed.
    #[error("the system random source failed")]
    Random,
    /// The database failed; nothing was stored.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Parses an expiry: an age from `now` (`90d`, `12h`, `30m`, `45s`) or an RFC 3339
/// instant, which must be in the future.
///
/// # Errors
/// What is wrong with it.
pub fn parse_expiry(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let at = if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        at.with_timezone(&Utc)
    } else {
        // The last character is the unit, and need not be one byte.
        let (number, unit) = text
            .char_indices()
            .last()
            .map_or((text, ""), |(i, _)| text.split_at(i));
        let seconds: i64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => 0,
        };
        match number.parse::<i64>() {
            Ok(n) if seconds > 0 && n > 0 && n <= 36_500 * 86_400 / seconds => {
                now + chrono::Duration::seconds(n * seconds)
            }
            _ => {
                return Err(format!(
                    "{text:?} is neither an age like 90d, 12h, 30m nor an RFC 3339 time"
                ));
            }
        }
    };
    if at <= now {
        return Err(format!("{} is not in the future", at.to_rfc3339()));
    }
    Ok(at)
}

/// Creates a key for `creator`, whose audit row names them. Only a principal holding
/// `keys:manage` and limited to no kinds or queues may create keys (so no key can
/// hand out more than it has).
///
/// # Errors
/// Denied, an invalid request (every field at once), or the database failed.
pub async fn create_key(
    store: &Store,
    creator: &Principal,
    context: &AuditContext,
    request: CreateKey,
    now: DateTime<Utc>,
) -> Result<CreatedKey, KeyRequestError> {
    require_manager(creator)?;
    let mut errors = ValidationErrors::new();
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        errors.add(
            "name",
            "must be 1 to 100 characters, without control characters",
        );
    }
    if let Err(e) = request.role.parse::<Role>() {
        errors.add("role", e);
    }
    let mut globs = |field: &str, list: &[String]| -> Vec<String> {
        let mut out = Vec::new();
        for (i, text) in list.iter().enumerate() {
            match Glob::parse(text.trim()) {
                Ok(g) => out.push(String::from(g)),
                Err(e) => errors.add(format!("{field}[{i}]"), e),
            }
        }
        out
    };
    let kinds = globs("kinds", &request.kinds);
    let queues = globs("queues", &request.queues);
    let expires_at = match request
        .expires
        .as_deref()
        .map(|t| parse_expiry(t.trim(), now))
    {
        None => None,
        Some(Ok(at)) => Some(at),
        Some(Err(e)) => {
            errors.add("expires", e);
            None
        }
    };
    errors.into_result().map_err(KeyRequestError::Invalid)?;
    let key = ApiKey::generate().map_err(|_| KeyRequestError::Random)?;
    let new = NewApiKey {
        id: Uuid::now_v7(),
        name: name.to_owned(),
        role: request.role,
        kinds,
        queues,
        hash: key.hash().0,
        expires_at,
    };
    let record = store.create_key(&new, context).await?;
    Ok(CreatedKey { key, record })
}

/// Requires that `principal` may manage keys: `keys:manage`, and no kind or queue
/// limits.
///
/// # Errors
/// A [`Denied`](crate::Denied) saying which.
pub fn require_manager(principal: &Principal) -> Result<(), crate::principal::Denied> {
    principal.require(Scope::KeysManage)?;
    if principal.is_limited() {
        return Err(crate::principal::Denied(
            "this key may not manage keys: it is limited to some kinds or queues".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_ages_or_instants_in_the_future() {
        let now = Utc::now();
        assert_eq!(
            parse_expiry("90d", now).unwrap(),
            now + chrono::Duration::days(90)
        );
        assert_eq!(
            parse_expiry("12h", now).unwrap(),
            now + chrono::Duration::hours(12)
        );
        assert!(
            parse_expiry("2020-01-01T00:00:00Z", now)
                .unwrap_err()
                .contains("future")
        );
        assert!(parse_expiry("soon", now).is_err());
        assert!(parse_expiry("0d", now).is_err());
        assert!(parse_expiry("1\u{80}", now).is_err());
        assert!(parse_expiry("", now).is_err());
    }
}
