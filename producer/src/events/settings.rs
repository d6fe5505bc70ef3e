//! `events.*`: live events, event streams, `wait`, status links and the stream budget.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Live events and what the intake serves from them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSettings {
    /// Publish each transition on the namespace's events exchange (`{ns}.events`) and
    /// serve event streams, `wait` and status links. Off: none of them (the routes
    /// answer 404 naming this key), and no process publishes events.
    pub enabled: bool,
    /// Events a process buffers for publishing; past it an event is dropped and
    /// counted (`conveyor_events_dropped_total`), never waited for.
    pub buffer: usize,
    /// How often an idle stream gets a keep-alive comment, so proxies keep it open.
    pub keep_alive_ms: u64,
    /// The longest `GET /v1/jobs/{id}?wait=` a client may ask for (422 above).
    pub max_wait_ms: u64,
    /// Open event streams and waits per intake process, at most (429 past it).
    pub max_streams: usize,
    /// Open event streams and waits per API key (per client address for status links
    /// and keyless intakes), at most (429 past it).
    pub max_streams_per_key: usize,
    /// How long one event stream lives; it then ends, and the client reconnects with
    /// `Last-Event-ID` (EventSource does so by itself) and misses nothing.
    pub max_stream_lifetime_ms: u64,
    /// The HMAC-SHA256 secret that signs status links (`status_url`). Unset: a random
    /// one per process, so a link works only on the intake that made it. Behind a load
    /// balancer with several intakes, set the same secret on each.
    #[serde(serialize_with = "expose_option")]
    pub token_secret: Option<SecretString>,
    /// How long a status link opens its job's stream.
    pub token_ttl_secs: u64,
    /// The intake's public base URL (`https://jobs.example.com`), prefixed to
    /// `status_url`; unset: `status_url` is a path on the intake.
    pub public_url: Option<String>,
}

fn expose_option<S: serde::Serializer>(
    secret: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => s.serialize_some(secrecy::ExposeSecret::expose_secret(secret)),
        None => s.serialize_none(),
    }
}

impl Default for EventsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            buffer: 10_000,
            keep_alive_ms: 15_000,
            max_wait_ms: 60_000,
            max_streams: 10_000,
            max_streams_per_key: 1_000,
            max_stream_lifetime_ms: 30 * 60 * 1_000,
            token_secret: None,
            token_ttl_secs: 3_600,
            public_url: None,
        }
    }
}

impl EventsSettings {
    /// Everything wrong with these settings, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let positive = [
            ("events.buffer", self.buffer as u64),
            ("events.keep_alive_ms", self.keep_alive_ms),
            ("events.max_wait_ms", self.max_wait_ms),
            ("events.max_streams", self.max_streams as u64),
            (
                "events.max_streams_per_key",
                self.max_streams_per_key as u64,
            ),
            ("events.max_stream_lifetime_ms", self.max_stream_lifetime_ms),
            ("events.token_ttl_secs", self.token_ttl_secs),
        ];
        for (key, value) in positive {
            if value == 0 {
                problems.push(format!("configuration key `{key}`: must be at least 1"));
            }
        }
        if let Some(secret) = &self.token_secret
            && secrecy::ExposeSecret::expose_secret(secret).len() < 16
        {
            problems.push(
                "configuration key `events.token_secret`: must be at least 16 characters"
                    .to_owned(),
            );
        }
        problems
    }
}
