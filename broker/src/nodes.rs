//! The RabbitMQ nodes a process may connect to, and which one it tries first.
//!
//! A process starts at one node ([`NodeOrder::Random`]: chosen at random once per
//! process, so many producers and workers spread over a cluster; [`NodeOrder::Listed`]:
//! the first one listed) and stays there while the connection lives. When a connection
//! is lost ([`Nodes::lost`]) the next attempt starts at the next node; a connect attempt
//! tries every node once, in order, and takes the first that answers. The caller keeps
//! its own backoff and jitter between attempts that found no node at all.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};

use crate::error::Error;
use crate::settings::{BrokerSettings, NodeOrder};

/// One configured node: its URL (a secret) and a label safe to log (`host:port/vhost`).
#[derive(Debug, Clone)]
struct Node {
    url: SecretString,
    label: String,
}

/// The nodes of one broker (a single node or a cluster) with a cursor: the node to try
/// first.
#[derive(Debug)]
pub struct Nodes {
    nodes: Vec<Node>,
    cursor: AtomicUsize,
    connect_timeout: std::time::Duration,
}

/// Where this process starts in any node list: drawn once, so every component of one
/// process (intake, dispatcher, worker) starts at the same node.
fn process_start() -> usize {
    static START: OnceLock<usize> = OnceLock::new();
    *START.get_or_init(|| fastrand::usize(..))
}

impl Nodes {
    /// The nodes `settings` name, the cursor at the node this process starts at.
    pub fn new(settings: &BrokerSettings) -> Self {
        let nodes: Vec<Node> = settings
            .node_urls()
            .into_iter()
            .map(|(_, url)| Node {
                label: label(url.expose_secret()),
                url: url.clone(),
            })
            .collect();
        let start = match settings.node_order {
            NodeOrder::Random => process_start() % nodes.len().max(1),
            NodeOrder::Listed => 0,
        };
        Self {
            nodes,
            cursor: AtomicUsize::new(start),
            connect_timeout: settings.connect_timeout(),
        }
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no node is configured (settings validation prevents it).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The loggable label (`host:port/vhost`, no credentials) of node `index`.
    pub fn label(&self, index: usize) -> &str {
        self.nodes.get(index).map_or("", |n| n.label.as_str())
    }

    /// The node the next connect tries first.
    pub fn current(&self) -> usize {
        self.cursor.load(Ordering::Relaxed) % self.nodes.len().max(1)
    }

    /// Opens a connection named `name` to the first node that answers, starting at the
    /// cursor; each node is bounded by the connect timeout. Returns the connection and
    /// the index of its node, which becomes the cursor.
    ///
    /// # Errors
    /// The last node's error when none answered.
    pub(crate) async fn connect(&self, name: &str) -> Result<(Connection, usize), Error> {
        let count = self.nodes.len();
        let first = self.current();
        let mut last_error = Error::Unavailable(std::time::Duration::ZERO);
        for step in 0..count {
            let index = (first + step) % count;
            let node = &self.nodes[index];
            match connect_to(node, self.connect_timeout, name).await {
                Ok(connection) => {
                    self.cursor.store(index, Ordering::Relaxed);
                    if step > 0 {
                        metrics::counter!("conveyor_broker_failovers_total").increment(1);
                        tracing::info!(connection = %name, node = %node.label, "connected to another broker node");
                    } else {
                        tracing::debug!(connection = %name, node = %node.label, "connected to the broker");
                    }
                    return Ok((connection, index));
                }
                Err(e) => {
                    if count > 1 {
                        tracing::warn!(connection = %name, node = %node.label, error = %e, "broker node unreachable; trying the next");
                    }
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    /// Notes that the connection to node `index` was lost: unless another connection
    /// already moved on, the next connect starts at the node after it.
    pub fn lost(&self, index: usize) {
        let count = self.nodes.len().max(1);
        let _ = self.cursor.compare_exchange(
            index,
            (index + 1) % count,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

async fn connect_to(
    node: &Node,
    limit: std::time::Duration,
    name: &str,
) -> Result<Connection, Error> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    tokio::time::timeout(
        limit,
        Connection::connect(node.url.expose_secret(), properties),
    )
    .await
    .map_err(|_| Error::Timeout(limit))?
    .map_err(Error::from)
}

/// `host:port/vhost` of an AMQP URL, without credentials; `"?"` when it does not parse.
fn label(url: &str) -> String {
    url.parse::<lapin::uri::AMQPUri>().map_or_else(
        |_| "?".to_owned(),
        |uri| {
            format!(
                "{}:{}/{}",
                uri.authority.host, uri.authority.port, uri.vhost
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(urls: &[&str], order: NodeOrder) -> BrokerSettings {
        BrokerSettings {
            urls: urls.iter().map(|u| SecretString::from(*u)).collect(),
            node_order: order,
            connect_timeout_ms: 30_000,
            ..BrokerSettings::default()
        }
    }

    #[test]
    fn labels_carry_no_credentials() {
        assert_eq!(
            label("amqp://user:secret@rmq-a:5673/prod"),
            "rmq-a:5673/prod"
        );
        assert_eq!(label("amqp://user:secret@rmq-b/%2f"), "rmq-b:5672//");
    }

    #[test]
    fn every_process_component_starts_at_the_same_node_and_listed_starts_first() {
        let urls = ["amqp://a", "amqp://b", "amqp://c"];
        let one = Nodes::new(&settings(&urls, NodeOrder::Random));
        let two = Nodes::new(&settings(&urls, NodeOrder::Random));
        assert_eq!(one.current(), two.current());
        assert_eq!(Nodes::new(&settings(&urls, NodeOrder::Listed)).current(), 0);
    }

    #[test]
    fn a_lost_node_moves_the_cursor_once() {
        let nodes = Nodes::new(&settings(
            &["amqp://a", "amqp://b", "amqp://c"],
            NodeOrder::Listed,
        ));
        nodes.lost(0);
        assert_eq!(nodes.current(), 1);
        // A second report of the same loss (another channel of the same connection)
        // does not skip the next node.
        nodes.lost(0);
        assert_eq!(nodes.current(), 1);
        nodes.lost(1);
        nodes.lost(2);
        assert_eq!(nodes.current(), 0, "wraps around");
    }

    #[tokio::test]
    async fn connect_skips_a_refusing_node_and_remembers_the_one_that_answered() {
        // A port with nothing listening refuses at once.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let broker = std::env::var("CONVEYOR_TEST_AMQP")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let refusing = format!("amqp://guest:guest@127.0.0.1:{closed}/%2f");
        let nodes = Nodes::new(&settings(&[&refusing, &broker], NodeOrder::Listed));

        let (connection, index) = nodes
            .connect("conveyor-nodes-test")
            .await
            .expect("the second node answers");

        assert_eq!(index, 1);
        assert_eq!(
            nodes.current(),
            1,
            "the next connect starts at the node that answered"
        );
        let _ = connection.close(200, "done".into()).await;
        nodes.lost(1);
        assert_eq!(nodes.current(), 0);
        let only_refusing = Nodes::new(&settings(&[&refusing], NodeOrder::Listed));
        assert!(only_refusing.connect("conveyor-nodes-test").await.is_err());
    }
}
