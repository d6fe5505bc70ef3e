//! Intake settings.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Where the intake listens and what it accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerSettings {
    /// Address to serve on.
    pub listen: SocketAddr,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Bound on one request (503 past it).
    pub request_timeout_ms: u64,
    /// How long an idempotency key dedupes.
    pub idempotency_ttl_secs: u64,
    /// Largest `max_attempts` a request may ask for.
    pub max_attempts_limit: u32,
    /// SHA-256 hashes (`sha256:<hex>`) of the API keys accepted as
    /// `Authorization: Bearer <key>` (`conveyor keys new` makes one). Empty: no
    /// authentication, and the intake refuses to listen on anything but loopback.
    pub api_keys: Vec<String>,
    /// Requests per key (per client address without keys); unset means unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Origins allowed by CORS (`https://app.example.com`, or `*`); empty: CORS off.
    pub cors_origins: Vec<String>,
    /// Jobs in one `POST /v1/jobs/batch`, at most.
    pub max_batch: usize,
    /// How long intake waits before noting confirmed publishes in the ledger, many per
    /// statement. A job claimed by then needs no note at all, so a queue that keeps up
    /// pays no write for it. Must stay below `dispatcher.unconfirmed_after_ms`, after
    /// which an unnoted job is published again (the duplicate is skipped by the claim).
    pub mark_published_after_ms: u64,
}

/// A token bucket: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once.
    pub burst: u32,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 256 * 1024,
            request_timeout_ms: 30_000,
            idempotency_ttl_secs: 24 * 3600,
            max_attempts_limit: 100,
            api_keys: Vec::new(),
            rate_limit: None,
            cors_origins: Vec::new(),
            max_batch: 1000,
            mark_published_after_ms: 2_000,
        }
    }
}
