//! Broker settings and connecting.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// How to reach RabbitMQ and how patient to be with it. `url` is a secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSettings {
    /// `amqp://user:password@host:port/vhost`.
    #[serde(serialize_with = "expose")]
    pub url: SecretString,
    /// Bound on connecting and on declaring topology.
    pub connect_timeout_ms: u64,
    /// Bound on waiting for a publisher confirm; past it the publish is unconfirmed.
    pub publish_timeout_ms: u64,
    /// Publishes awaiting confirms, at most (per publisher); beyond it intake answers 503.
    pub max_in_flight: usize,
    /// Deliveries of one message before RabbitMQ dead-letters it (a crash loop).
    pub delivery_limit: u32,
}

fn expose<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f"),
            connect_timeout_ms: 5_000,
            publish_timeout_ms: 5_000,
            max_in_flight: 4_096,
            delivery_limit: 5,
        }
    }
}

impl BrokerSettings {
    /// [`BrokerSettings::connect_timeout_ms`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// [`BrokerSettings::publish_timeout_ms`] as a duration.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }
}

/// Opens a connection named `name` (visible in the management UI and in
/// `rabbitmqctl list_connections`), bounded by the connect timeout.
///
/// # Errors
/// When the broker is unreachable, refuses, or does not answer in time.
pub(crate) async fn connect(settings: &BrokerSettings, name: &str) -> Result<Connection, Error> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    tokio::time::timeout(
        settings.connect_timeout(),
        Connection::connect(settings.url.expose_secret(), properties),
    )
    .await
    .map_err(|_| Error::Timeout(settings.connect_timeout()))?
    .map_err(Error::from)
}

/// Bounds any broker await by `limit`.
///
/// # Errors
/// [`Error::Timeout`] when it takes longer, or the operation's own error.
pub(crate) async fn bounded<T>(
    limit: Duration,
    operation: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(limit, operation)
        .await
        .map_err(|_| Error::Timeout(limit))?
        .map_err(Error::from)
}

impl BrokerSettings {
    /// True when `url` parses as an AMQP URI.
    pub fn url_is_valid(&self) -> bool {
        let url = self.url.expose_secret();
        (url.starts_with("amqp://") || url.starts_with("amqps://"))
            && url.parse::<lapin::uri::AMQPUri>().is_ok()
    }
}
