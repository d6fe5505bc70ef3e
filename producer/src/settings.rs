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
}

impl Default for ProducerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 256 * 1024,
            request_timeout_ms: 30_000,
            idempotency_ttl_secs: 24 * 3600,
            max_attempts_limit: 100,
        }
    }
}
