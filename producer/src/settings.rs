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
    /// Bound on one request (503 past it); also how long a connection may stay
    /// blocked on a client that does not read its answers before it is closed.
    pub request_timeout_ms: u64,
    /// How long an idempotency key dedupes.
    pub idempotency_ttl_secs: u64,
    /// Largest `max_attempts` a request may ask for.
    pub max_attempts_limit: u32,
    /// SHA-256 hashes (`sha256:<hex>`) of admin API keys accepted as
    /// `Authorization: Bearer <key>` (`conveyor keys new` makes one), besides the keys
    /// in the database (`conveyor keys create`). With neither: no authentication, and
    /// the intake refuses to listen on anything but loopback.
    pub api_keys: Vec<String>,
    /// How often the intake reloads the stored keys (so a revoked key stops working
    /// within this), 50 to 1000 ms.
    pub key_refresh_ms: u64,
    /// Failed authentications allowed per client address (429 with `Retry-After`
    /// beyond, whatever key it then sends).
    pub auth_failures: RateLimit,
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
    /// How long a client has to send a request's headers, from connecting or from the
    /// first byte of a request on a kept-alive connection. Past it the connection is
    /// closed without an answer.
    pub header_read_timeout_ms: u64,
    /// How long a request body may take before [`body_min_bytes_per_sec`] applies: a
    /// body that has delivered `n` bytes must go on arriving within
    /// `body_read_timeout_ms + n / body_min_bytes_per_sec` of its headers. A large batch
    /// on a slow link earns time as it arrives; a trickle is answered `408` and closed.
    ///
    /// [`body_min_bytes_per_sec`]: Self::body_min_bytes_per_sec
    pub body_read_timeout_ms: u64,
    /// The slowest average rate a request body may arrive at, once
    /// [`body_read_timeout_ms`](Self::body_read_timeout_ms) has passed.
    pub body_min_bytes_per_sec: u64,
    /// How long a kept-alive connection may sit idle between requests before it is
    /// closed.
    pub keep_alive_idle_timeout_ms: u64,
    /// Open client connections at most; past it a new connection is answered `503`
    /// with `Retry-After` and closed. Unset: three quarters of the descriptors left by
    /// the process's file-descriptor limit after the database pool and a reserve, at
    /// most 10,000.
    pub max_connections: Option<usize>,
    /// Open connections one client address (an IPv6 /64 counts as one) may hold at most; past it a new connection
    /// from that address is answered `429` with `Retry-After` and closed. Unset: half
    /// of `max_connections`. Behind a proxy every client shares the proxy's address:
    /// set it to `max_connections` there.
    pub max_connections_per_client: Option<usize>,
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
            key_refresh_ms: 500,
            auth_failures: RateLimit {
                per_second: 1,
                burst: 20,
            },
            rate_limit: None,
            cors_origins: Vec::new(),
            max_batch: 1000,
            mark_published_after_ms: 2_000,
            header_read_timeout_ms: 5_000,
            body_read_timeout_ms: 10_000,
            body_min_bytes_per_sec: 1_024,
            keep_alive_idle_timeout_ms: 60_000,
            max_connections: None,
            max_connections_per_client: None,
        }
    }
}
