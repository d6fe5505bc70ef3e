//! Who may enqueue, and how fast. API keys are sent as `Authorization: Bearer <key>`;
//! only their SHA-256 hashes are configured (`producer.api_keys`), and the comparison
//! is constant-time. Rate limits are token buckets per key (per client address when no
//! keys are configured).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::problem::ApiError;
use crate::settings::RateLimit;

/// Prefix of generated keys, so a leaked one is recognisable in a secret scanner.
pub const KEY_PREFIX: &str = "cvk_";
/// Prefix of a configured key hash.
pub const HASH_PREFIX: &str = "sha256:";

/// A new random API key and the hash to configure for it.
///
/// # Errors
/// When the system's random source fails.
pub fn new_key() -> Result<(String, String), ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes)?;
    let key = format!("{KEY_PREFIX}{}", hex(&bytes));
    let hash = hash_key(&key);
    Ok((key, hash))
}

/// The configured form of `key`: `sha256:<hex>`.
pub fn hash_key(key: &str) -> String {
    format!(
        "{HASH_PREFIX}{}",
        hex(digest::digest(&digest::SHA256, key.as_bytes()).as_ref())
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// True when `hash` has the configured form.
pub fn valid_hash(hash: &str) -> bool {
    hash.strip_prefix(HASH_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The configured key hashes, checked in constant time.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    hashes: Vec<[u8; 32]>,
}

impl Keys {
    /// Parses `sha256:<hex>` entries.
    ///
    /// # Errors
    /// The index of the first malformed entry.
    pub fn parse(entries: &[String]) -> Result<Self, usize> {
        let mut hashes = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            if !valid_hash(entry) {
                return Err(i);
            }
            let hex = &entry[HASH_PREFIX.len()..];
            let mut hash = [0u8; 32];
            for (j, byte) in hash.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * j..2 * j + 2], 16).map_err(|_| i)?;
            }
            hashes.push(hash);
        }
        Ok(Self { hashes })
    }

    /// True when no keys are configured (protected mode: loopback only).
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The matching key's index, comparing every configured hash in constant time.
    pub fn check(&self, presented: &str) -> Option<usize> {
        let digest = digest::digest(&digest::SHA256, presented.as_bytes());
        let mut found = None;
        for (i, hash) in self.hashes.iter().enumerate() {
            if bool::from(hash.as_slice().ct_eq(digest.as_ref())) {
                found = Some(i);
            }
        }
        found
    }
}

/// The caller a request is limited as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// The index of the API key used.
    Key(usize),
    /// A client address (no keys configured).
    Address(IpAddr),
}

/// Requires a valid API key when keys are configured.
pub async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.keys.is_empty() {
        let caller = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(Caller::Address(IpAddr::from([127, 0, 0, 1])), |c| {
                Caller::Address(c.0.ip())
            });
        request.extensions_mut().insert(caller);
        return next.run(request).await;
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
    match presented.and_then(|key| state.keys.check(key)) {
        Some(index) => {
            request.extensions_mut().insert(Caller::Key(index));
            next.run(request).await
        }
        None => {
            let mut response = ApiError::Unauthorized(if presented.is_some() {
                "the API key is not valid"
            } else {
                "an API key is required: send Authorization: Bearer <key>"
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
            *tokens -= cost;
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
    fn a_new_key_matches_its_hash_and_nothing_else() {
        let (key, hash) = new_key().unwrap();
        assert!(key.starts_with(KEY_PREFIX));
        let keys = Keys::parse(&[hash]).unwrap();
        assert_eq!(keys.check(&key), Some(0));
        assert_eq!(keys.check("cvk_wrong"), None);
        assert_eq!(keys.check(""), None);
    }

    #[test]
    fn malformed_hashes_are_refused_by_index() {
        let good = hash_key("x");
        assert_eq!(Keys::parse(&[good, "plaintext-key".into()]).unwrap_err(), 1);
    }

    #[test]
    fn buckets_allow_a_burst_then_say_when() {
        let limiter = Limiter::new(RateLimit {
            per_second: 10,
            burst: 3,
        });
        let caller = Caller::Key(0);
        for _ in 0..3 {
            assert!(limiter.take(&caller, 1.0).is_ok());
        }
        let wait = limiter.take(&caller, 1.0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(
            limiter.take(&Caller::Key(1), 1.0).is_ok(),
            "callers are limited separately"
        );
    }
}
