//! Jobs that talk back: a job's event stream (`GET /v1/jobs/{id}/events`), the
//! operators' filtered firehose (`GET /v1/events`), `GET /v1/jobs/{id}?wait=`, and
//! status links (`status_url`) that open one job's stream without an API key.
//!
//! Every stream and wait subscribes first ([`broker::Subscriptions`]), then reads the
//! job from Postgres, then follows the subscription: a transition committed after the
//! read arrives as an event, and whenever events may have been missed (the broker
//! subscription was re-established, or this stream fell behind) the stream reads the
//! ledger again. Events are ordered per job by the job's `seq` ([`jobs::Cursor`]), the
//! SSE `id`; `Last-Event-ID` resumes after it.
//!
//! # Layout
//! - [`settings`] — [`EventsSettings`] (`events.*`).
//! - [`token`] — [`StatusTokens`]: signed, expiring status links.
//! - [`budget`] — [`StreamBudget`]: the caps on open streams and waits.
//! - [`routes`] — the handlers and the event's wire shape.

pub mod budget;
pub mod routes;
pub mod settings;
pub mod token;

use std::sync::Arc;

use jobs::JobId;
use tokio_util::sync::CancellationToken;

pub use budget::{Refusal, StreamBudget, StreamPermit};
pub use settings::EventsSettings;
pub use token::{Grant, StatusTokens, TokenError};

/// What the event routes share.
#[derive(Debug, Clone)]
pub struct EventsState {
    /// `events.*`.
    pub settings: Arc<EventsSettings>,
    /// Publishes the intake's own transitions (`enqueued`, operator actions).
    pub publisher: broker::Events,
    /// The intake's subscription, for streams and waits (`None`: events are off).
    pub subscriptions: Option<broker::Subscriptions>,
    /// Signs and checks status links.
    pub tokens: Arc<StatusTokens>,
    /// The caps on open streams and waits.
    pub budget: Arc<StreamBudget>,
    /// Fires when the intake stops: open streams end (reconnectable).
    pub closing: CancellationToken,
}

impl EventsState {
    /// Events as `settings` say, publishing with `publisher` and streaming from
    /// `subscriptions`.
    ///
    /// # Errors
    /// When no `events.token_secret` is set and the random source fails.
    pub fn new(
        settings: EventsSettings,
        publisher: broker::Events,
        subscriptions: Option<broker::Subscriptions>,
    ) -> Result<Self, String> {
        let tokens = match &settings.token_secret {
            Some(secret) => StatusTokens::new(
                secrecy::ExposeSecret::expose_secret(secret).as_bytes(),
                settings.token_ttl_secs,
            ),
            None => StatusTokens::random(settings.token_ttl_secs)
                .map_err(|_| "the system's random source failed".to_owned())?,
        };
        Ok(Self {
            budget: StreamBudget::new(settings.max_streams, settings.max_streams_per_key),
            settings: Arc::new(settings),
            publisher,
            subscriptions,
            tokens: Arc::new(tokens),
            closing: CancellationToken::new(),
        })
    }

    /// No events: nothing published, the stream routes answer 404.
    pub fn disabled() -> Self {
        let settings = EventsSettings {
            enabled: false,
            ..EventsSettings::default()
        };
        // A fixed secret is harmless here: no stream can be opened.
        Self {
            budget: StreamBudget::new(settings.max_streams, settings.max_streams_per_key),
            tokens: Arc::new(StatusTokens::new(b"events are disabled", 1)),
            settings: Arc::new(settings),
            publisher: broker::Events::disabled(),
            subscriptions: None,
            closing: CancellationToken::new(),
        }
    }

    /// The status link of job `id` (`None` when events are off), for a caller that
    /// may (`read_args`) or may not see results.
    pub fn status_url(&self, id: JobId, read_args: bool) -> Option<String> {
        self.subscriptions.as_ref()?;
        let token = self
            .tokens
            .sign(Grant { job: id, read_args }, chrono::Utc::now());
        let base = self
            .settings
            .public_url
            .as_deref()
            .unwrap_or("")
            .trim_end_matches('/');
        Some(format!("{base}/v1/jobs/{id}/events?token={token}"))
    }
}
