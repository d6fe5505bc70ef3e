//! Broker settings: where the RabbitMQ nodes are, how patient to be with them, and how the
//! queues are replicated.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// How to reach RabbitMQ and how patient to be with it. The URLs are secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSettings {
    /// `amqp://user:password@host:port/vhost`: the one node (or load balancer) to use
    /// when [`BrokerSettings::urls`] is empty.
    #[serde(serialize_with = "expose")]
    pub url: SecretString,
    /// The nodes of a RabbitMQ cluster. When set, replaces [`BrokerSettings::url`]: each
    /// process starts at a node chosen by [`BrokerSettings::node_order`] and moves to the
    /// next one when its connection is lost or refused.
    #[serde(serialize_with = "expose_all")]
    pub urls: Vec<SecretString>,
    /// Which node a process tries first.
    pub node_order: NodeOrder,
    /// `x-quorum-initial-group-size` of the queues this process declares: how many nodes
    /// hold a replica of a new queue. Default: the number of configured nodes, at most
    /// 3; not set with a single URL (it may be a load balancer in front of a cluster, so
    /// RabbitMQ's own default, every node, applies).
    pub quorum_group_size: Option<u16>,
    /// Bound on connecting (to each node) and on declaring topology.
    pub connect_timeout_ms: u64,
    /// Bound on waiting for a publisher confirm; past it the publish is unconfirmed.
    pub publish_timeout_ms: u64,
    /// Publishes awaiting confirms, at most (per publisher); beyond it intake answers 503.
    pub max_in_flight: usize,
    /// Deliveries of one message before RabbitMQ dead-letters it (a crash loop).
    pub delivery_limit: u32,
}

/// Which configured node a process connects to first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeOrder {
    /// A node chosen at random once per process, so many processes spread over the
    /// cluster; after a loss, the next one in the list.
    #[default]
    Random,
    /// The first node listed, then the next ones in order (e.g. list the nodes of the
    /// process's own zone first).
    Listed,
}

fn expose<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

fn expose_all<S: serde::Serializer>(secrets: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(secrets.iter().map(ExposeSecret::expose_secret))
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f"),
            urls: Vec::new(),
            node_order: NodeOrder::Random,
            quorum_group_size: None,
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

    /// The configured node URLs with the key each came from (`broker.urls[i]`, or
    /// `broker.url` when `urls` is empty).
    pub fn node_urls(&self) -> Vec<(String, &SecretString)> {
        if self.urls.is_empty() {
            vec![("broker.url".to_owned(), &self.url)]
        } else {
            self.urls
                .iter()
                .enumerate()
                .map(|(i, url)| (format!("broker.urls[{i}]"), url))
                .collect()
        }
    }

    /// The `x-quorum-initial-group-size` to declare queues with, if any: the configured
    /// size, else the number of nodes up to 3 when more than one is configured.
    pub fn quorum_group_size(&self) -> Option<u16> {
        self.quorum_group_size.or_else(|| {
            let nodes = self.urls.len();
            (nodes > 1).then(|| u16::try_from(nodes.min(3)).unwrap_or(3))
        })
    }

    /// Everything wrong with these settings, each naming its key and the reason.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, url) in self.node_urls() {
            if let Err(why) = check_url(url.expose_secret()) {
                problems.push(format!("configuration key `{key}`: {why}"));
            }
        }
        if self.quorum_group_size == Some(0) {
            problems.push(
                "configuration key `broker.quorum_group_size`: must be at least 1".to_owned(),
            );
        }
        if self.connect_timeout_ms == 0 {
            problems.push(
                "configuration key `broker.connect_timeout_ms`: must be at least 1".to_owned(),
            );
        }
        if self.publish_timeout_ms == 0 {
            problems.push(
                "configuration key `broker.publish_timeout_ms`: must be at least 1".to_owned(),
            );
        }
        problems
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        return Err("not an amqp:// or amqps:// URL".to_owned());
    }
    // The parser's message may quote the URL, password included: say only that it failed.
    url.parse::<lapin::uri::AMQPUri>()
        .map(drop)
        .map_err(|_| "not a valid AMQP URL (amqp://user:password@host:port/vhost)".to_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_urls(urls: &[&str]) -> BrokerSettings {
        BrokerSettings {
            urls: urls.iter().map(|u| SecretString::from(*u)).collect(),
            ..BrokerSettings::default()
        }
    }

    #[test]
    fn a_single_url_is_the_one_node() {
        let settings = BrokerSettings::default();
        let nodes = settings.node_urls();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].0, "broker.url");
        assert_eq!(settings.quorum_group_size(), None);
    }

    #[test]
    fn urls_replace_the_single_url_and_size_the_quorum_up_to_three() {
        let two = with_urls(&["amqp://a:5672", "amqp://b:5672"]);
        assert_eq!(
            two.node_urls()
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["broker.urls[0]", "broker.urls[1]"]
        );
        assert_eq!(two.quorum_group_size(), Some(2));
        let five = with_urls(&["amqp://a", "amqp://b", "amqp://c", "amqp://d", "amqp://e"]);
        assert_eq!(five.quorum_group_size(), Some(3));
        let chosen = BrokerSettings {
            quorum_group_size: Some(5),
            ..five
        };
        assert_eq!(chosen.quorum_group_size(), Some(5));
    }

    #[test]
    fn problems_name_the_bad_entry_and_never_echo_a_password() {
        let settings = BrokerSettings {
            quorum_group_size: Some(0),
            ..with_urls(&[
                "amqp://u:pw@a:5672/%2f",
                "http://u:secret@b",
                "amqp://u:secret@b:notaport",
            ])
        };
        let problems = settings.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("configuration key `broker.urls[1]`: not an amqp://"));
        assert!(
            problems[1].starts_with("configuration key `broker.urls[2]`: not a valid AMQP URL")
        );
        assert!(problems[2].contains("`broker.quorum_group_size`: must be at least 1"));
        assert!(
            problems.iter().all(|p| !p.contains("secret")),
            "{problems:?}"
        );
    }
}
