//! Who is calling, and how fast. API keys are sent as `Authorization: Bearer <key>`
//! and checked by the [`access::KeyRing`] (configured hashes and stored keys, compared
//! in constant time, no database query per request); the request then carries its
//! [`access::Principal`], which handlers take with the [`Auth`] extractor and check
//! scopes and kinds against. Failed authentications are limited per client address;
//! requests are limited per key (per client address without keys) by token buckets.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use access::{AuthError, KeyHash, Principal, Scope};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::AppState;
use crate::problem::ApiError;
use crate::settings::RateLimit;

pub use access::key::{HASH_PREFIX, KEY_PREFIX};

/// A new random API key and the hash to configure for it.
///
/// # Errors
/// When the system's random source fails.
pub fn new_key() -> Result<(String, String), ring::error::Unspecified> {
    let key = access::ApiKey::generate()?;
    let hash = key.hash().to_configured();
    Ok((key.expose().to_owned(), hash))
}

/// The configured form of `key`: `sha256:<hex>`.
pub fn hash_key(key: &str) -> String {
    KeyHash::of(key).to_configured()
}

/// True when `hash` has the configured form.
pub fn valid_hash(hash: &str) -> bool {
    KeyHash::parse(hash).is_some()
}

/// Parses the configured `sha256:<hex>` entries.
///
/// # Errors
/// The index of the first malformed entry.
pub fn parse_configured(entries: &[String]) -> Result<Vec<KeyHash>, usize> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| KeyHash::parse(e).ok_or(i))
        .collect()
}

/// The caller a request is limited as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A stored API key, by id.
    Key(Uuid),
    /// A configured key of `producer.api_keys`, by its actor name (`producer.api_keys[0]`).
    Configured(String),
    /// A client address (no keys anywhere).
    Address(IpAddr),
}

/// The principal the request runs as, for handlers: `auth.require(Scope::JobsRead)?`.
#[derive(Debug, Clone)]
pub struct Auth(pub Arc<Principal>);

impl Auth {
    /// Requires `scope`: a 403 naming it otherwise.
    ///
    /// # Errors
    /// [`ApiError::Forbidden`].
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        self.0.require(scope).map_err(ApiError::from)
    }

    /// Requires that a job of `kind` on `queue` is within the key's reach.
    ///
    /// # Errors
    /// [`ApiError::Forbidden`] naming the kind or queue.
    pub fn reach(&self, verb: &str, kind: &str, queue: &str) -> Result<(), ApiError> {
        self.0
            .reach(verb, Some(kind), Some(queue))
            .map_err(ApiError::from)
    }
}

impl std::ops::Deref for Auth {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Arc<Principal>>()
            .cloned()
            .map(Auth)
            .ok_or_else(|| {
                ApiError::Internal("a protected route ran without authentication".into())
            })
    }
}

/// The request's id (`x-request-id`), recorded in audit rows.
#[derive(Debug, Clone)]
pub struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestId(
            parts
                .headers
                .get(crate::REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ))
    }
}

fn client_address(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip())
}

/// A request for one job's event stream carrying a status link's token (and no
/// `Authorization`): the job in the path and the token in the query.
fn status_token(request: &Request) -> Option<(jobs::JobId, &str)> {
    if request.headers().contains_key(header::AUTHORIZATION) {
        return None;
    }
    let job = request
        .uri()
        .path()
        .strip_prefix("/v1/jobs/")?
        .strip_suffix("/events")?
        .parse()
        .ok()?;
    let token = request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    Some((job, token))
}

/// What a valid status token runs as: a reader of that one job's stream (with its
/// result when the enqueuing key could read results), never audited, never more.
fn token_principal(grant: crate::events::Grant) -> Principal {
    let scopes = if grant.read_args {
        access::Scopes::of(&[Scope::JobsRead, Scope::JobsReadArgs])
    } else {
        access::Scopes::of(&[Scope::JobsRead])
    };
    Principal {
        actor: store::Actor {
            kind: store::ActorKind::Local,
            id: None,
            name: format!("status token for job {}", grant.job),
        },
        role: access::Role::Viewer,
        scopes,
        kinds: Vec::new(),
        queues: Vec::new(),
    }
}

/// Authenticates a request: with keys anywhere (configured or stored), a valid,
/// unexpired, unrevoked key is required (401 otherwise); a client address with too many
/// failed attempts gets 429 with `Retry-After` before its key is even looked at.
/// Without any key, every (loopback) client runs as [`Principal::local`]. A job's
/// event stream also opens with its status link's token instead of a key (and only
/// that route does).
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = client_address(&request);
    let failures = Caller::Address(client);
    if state.keys.protected()
        && let Err(wait) = state.auth_failures.check(&failures, 1.0)
    {
        return ApiError::RateLimited(wait).into_response();
    }
    if let Some((job, token)) = status_token(&request) {
        return match state.events.tokens.verify(job, token, chrono::Utc::now()) {
            Ok(grant) => {
                request.extensions_mut().insert(failures);
                request
                    .extensions_mut()
                    .insert(Arc::new(token_principal(grant)));
                next.run(request).await
            }
            Err(error) => {
                let _ = state.auth_failures.take(&failures, 1.0);
                tracing::warn!(client = %client, reason = %error, "a status token was refused");
                ApiError::Unauthorized(match error {
                    crate::events::TokenError::Expired => "the status token has expired",
                    crate::events::TokenError::Invalid => {
                        "the status token is not valid for this job"
                    }
                })
                .into_response()
            }
        };
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match state
        .keys
        .authenticate(presented, client, chrono::Utc::now())
    {
        Ok(principal) => {
            let caller = match (&principal.actor.kind, principal.actor.id) {
                (store::ActorKind::Key, Some(id)) => Caller::Key(id),
                (store::ActorKind::Config, _) => Caller::Configured(principal.actor.name.clone()),
                _ => Caller::Address(client),
            };
            request.extensions_mut().insert(caller);
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => {
            // Spend a token of the address's failure budget; the key is never logged.
            let _ = state.auth_failures.take(&failures, 1.0);
            tracing::warn!(client = %client, reason = %error, path = %request.uri().path(), "authentication failed");
            let mut response = ApiError::Unauthorized(match error {
                AuthError::Missing => "an API key is required: send Authorization: Bearer <key>",
                AuthError::Invalid => "the API key is not valid",
                AuthError::Expired => "the API key has expired",
            })
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

/// Token buckets per caller.
#[derive(Debug)]
pub struct Limiter {
    rate: RateLimit,
    buckets: Mutex<HashMap<Caller, (f64, Instant)>>,
}

impl Limiter {
    /// A limiter allowing `rate.per_second` sustained and `rate.burst` at once.
    pub fn new(rate: RateLimit) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` tokens for `caller`, or says how long until they would be there.
    pub fn take(&self, caller: &Caller, cost: f64) -> Result<(), Duration> {
        self.settle(caller, cost, true)
    }

    /// Says whether `cost` tokens are there for `caller` without taking them.
    pub fn check(&self, caller: &Caller, cost: f64) -> Result<(), Duration> {
        self.settle(caller, cost, false)
    }

    fn settle(&self, caller: &Caller, cost: f64, take: bool) -> Result<(), Duration> {
        let per_second = f64::from(self.rate.per_second.max(1));
        let burst = f64::from(self.rate.burst.max(1)).max(cost);
        let now = Instant::now();
        // A poisoned lock only means a panic elsewhere mid-update; the map stays usable.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > 100_000 {
            // Bounded memory: forget full buckets (idle callers) first.
            buckets.retain(|_, (tokens, at)| {
                *tokens + at.elapsed().as_secs_f64() * per_second < burst
            });
        }
        let (tokens, at) = buckets.entry(caller.clone()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(burst);
        *at = now;
        if *tokens >= cost {
            if take {
                *tokens -= cost;
            }
            Ok(())
        } else {
            Err(Duration::from_secs_f64((cost - *tokens) / per_second))
        }
    }
}

/// Applies the rate limit: one token per request.
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(limiter) = &state.limiter else {
        return next.run(request).await;
    };
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Address(IpAddr::from([127, 0, 0, 1])));
    match limiter.take(&caller, 1.0) {
        Ok(()) => next.run(request).await,
        Err(wait) => ApiError::RateLimited(wait).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_matches_its_configured_hash_and_nothing_else() {
        let (key, hash) = new_key().unwrap();
        assert!(key.starts_with(KEY_PREFIX));
        let hashes = parse_configured(&[hash]).unwrap();
        assert!(hashes[0].ct_eq(&KeyHash::of(&key)));
        assert!(!hashes[0].ct_eq(&KeyHash::of("cvk_wrong")));
    }

    #[test]
    fn malformed_hashes_are_refused_by_index() {
        let good = hash_key("x");
        assert_eq!(
            parse_configured(&[good, "plaintext-key".into()]).unwrap_err(),
            1
        );
    }

    #[test]
    fn checking_a_bucket_takes_nothing() {
        let limiter = Limiter::new(RateLimit {
            per_second: 1,
            burst: 1,
        });
        let caller = Caller::Configured("producer.api_keys[0]".into());
        assert!(limiter.check(&caller, 1.0).is_ok());
        assert!(limiter.check(&caller, 1.0).is_ok());
        assert!(limiter.take(&caller, 1.0).is_ok());
        assert!(limiter.check(&caller, 1.0).is_err());
    }

    #[test]
    fn buckets_allow_a_burst_then_say_when() {
        let limiter = Limiter::new(RateLimit {
            per_second: 10,
            burst: 3,
        });
        let caller = Caller::Configured("producer.api_keys[0]".into());
        for _ in 0..3 {
            assert!(limiter.take(&caller, 1.0).is_ok());
        }
        let wait = limiter.take(&caller, 1.0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(
            limiter
                .take(&Caller::Configured("producer.api_keys[1]".into()), 1.0)
                .is_ok(),
            "callers are limited separately"
        );
    }
}
