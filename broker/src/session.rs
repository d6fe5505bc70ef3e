//! A [`Session`]: one named connection and the channels opened on it, for everything
//! but publishing (consuming, declaring, inspecting, deleting). Every broker await is
//! bounded by the connect timeout.
//!
//! Closing goes in the order lapin expects: each channel first, awaited, then the
//! connection. A channel that is merely dropped asks lapin's I/O loop to close it
//! later; if the connection starts closing before that request runs, the request
//! fails on a channel already `Closing`, and lapin reports it as a connection error
//! (`ERROR lapin::channels: Connection error … Closing (channel.close)`), which is
//! not one. Real failures (the broker closing the connection, a lost socket) are
//! still reported by lapin, and end the consumers' streams.
//!
//! Failover: a session connects through a [`Nodes`] list (the first node that answers,
//! starting at the list's cursor). A long-lived component keeps one list and opens its
//! sessions with [`Session::open_on`]; when a session fails it ends it with
//! [`Session::lost`], so that the next session starts at the next node of a cluster.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use crate::consumer::{Consumer, SETTLE_TIMEOUT};
use crate::error::Error;
use crate::nodes::Nodes;
use crate::settings::{BrokerSettings, bounded};
use crate::topology::Topology;

/// One named broker connection and the channels opened on it.
pub struct Session {
    connection: Connection,
    name: String,
    limit: Duration,
    /// The node list this session was opened on, and the index of its node.
    nodes: Arc<Nodes>,
    node: usize,
    /// Channels to close before the connection, with the consumer tag each carries.
    channels: Mutex<Vec<(Channel, Option<String>)>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("name", &self.name)
            .field("node", &self.node())
            .finish_non_exhaustive()
    }
}

/// What the broker says about an existing queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueInfo {
    messages: u32,
    consumers: u32,
}

impl QueueInfo {
    /// Messages ready for delivery.
    pub fn message_count(&self) -> u32 {
        self.messages
    }

    /// Consumers subscribed to the queue.
    pub fn consumer_count(&self) -> u32 {
        self.consumers
    }
}

impl Session {
    /// Connects under `name` (visible in the management UI and in
    /// `rabbitmqctl list_connections`) to the first of `settings`' nodes that answers:
    /// a one-off session (a command, a probe). Long-lived components use
    /// [`Session::open_on`].
    ///
    /// # Errors
    /// When no node is reachable, or none answers in time.
    pub async fn open(settings: &BrokerSettings, name: &str) -> Result<Self, Error> {
        Self::open_on(&Arc::new(Nodes::new(settings)), settings, name).await
    }

    /// Connects under `name` to the first node of `nodes` that answers, starting at the
    /// list's cursor (where the last lost session left it).
    ///
    /// # Errors
    /// When no node is reachable, or none answers in time.
    pub async fn open_on(
        nodes: &Arc<Nodes>,
        settings: &BrokerSettings,
        name: &str,
    ) -> Result<Self, Error> {
        let (connection, node) = nodes.connect(name).await?;
        Ok(Self {
            connection,
            name: name.to_owned(),
            limit: settings.connect_timeout(),
            nodes: Arc::clone(nodes),
            node,
            channels: Mutex::new(Vec::new()),
        })
    }

    /// The connection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node connected to, safe to log (`host:port/vhost`, no credentials).
    pub fn node(&self) -> &str {
        self.nodes.label(self.node)
    }

    async fn channel(&self) -> Result<Channel, Error> {
        bounded(self.limit, self.connection.create_channel()).await
    }

    fn keep(&self, channel: Channel, consumer_tag: Option<String>) {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((channel, consumer_tag));
    }

    /// Declares `topology`'s exchanges and dead-letter queue, and the work queues of
    /// `queues` (idempotent), each on a channel of its own that is closed afterwards (a
    /// refused declaration closes only its own channel). Quorum queues get the
    /// topology's initial group size; a queue that exists with another one is kept.
    ///
    /// # Errors
    /// When the broker refuses (e.g. a queue exists with other arguments) or times out.
    pub async fn declare(&self, topology: &Topology, queues: &[&str]) -> Result<(), Error> {
        with_limit(self.limit, topology.declare_base(&self.connection)).await?;
        for queue in queues {
            with_limit(self.limit, topology.declare_queue(&self.connection, queue)).await?;
        }
        Ok(())
    }

    /// Subscribes to the AMQP queue `queue` on a channel of its own, with a prefetch of
    /// `prefetch` unsettled deliveries and manual acks. The consumer tag is the
    /// session's name and the queue's.
    ///
    /// # Errors
    /// When the queue does not exist, the broker refuses, or it times out.
    pub async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer, Error> {
        let channel = self.channel().await?;
        bounded(
            self.limit,
            channel.basic_qos(prefetch, BasicQosOptions::default()),
        )
        .await?;
        let tag = format!("{}-{queue}", self.name);
        let consumer = bounded(
            self.limit,
            channel.basic_consume(
                queue.into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        self.keep(channel, Some(tag));
        Ok(Consumer::new(consumer))
    }

    /// Stops every consumer of this session (best effort, each bounded): the broker
    /// sends nothing more, and deliveries already received can still be settled.
    pub async fn stop_consuming(&self) {
        let consumers: Vec<(Channel, String)> = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(|(channel, tag)| tag.clone().map(|tag| (channel.clone(), tag)))
            .collect();
        for (channel, tag) in consumers {
            let _ = tokio::time::timeout(
                SETTLE_TIMEOUT,
                channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
            )
            .await;
        }
    }

    /// Looks at an existing queue (its ready messages and consumers) without declaring
    /// it, on a channel of its own (the broker closes the channel of a passive declare
    /// that names a missing queue).
    ///
    /// # Errors
    /// The queue does not exist, or the broker failed or timed out.
    pub async fn inspect(&self, queue: &str) -> Result<QueueInfo, Error> {
        let channel = self.channel().await?;
        let declared = bounded(
            self.limit,
            channel.queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await;
        close_channel(&channel, self.limit).await;
        let declared = declared?;
        Ok(QueueInfo {
            messages: declared.message_count(),
            consumers: declared.consumer_count(),
        })
    }

    /// Deletes a throwaway namespace (a test's, a benchmark's): the work queues of
    /// `queues`, the dead-letter queue and both exchanges. Best effort: what is missing
    /// or fails is skipped.
    pub async fn delete_namespace(&self, topology: &Topology, queues: &[&str]) {
        if let Ok(channel) = self.channel().await {
            let _ = tokio::time::timeout(self.limit, topology.delete(&channel, queues)).await;
            close_channel(&channel, self.limit).await;
        }
    }

    /// Deletes the AMQP queue `queue` (best effort).
    pub async fn delete_queue(&self, queue: &str) {
        if let Ok(channel) = self.channel().await {
            let _ = bounded(
                self.limit,
                channel.queue_delete(queue.into(), QueueDeleteOptions::default()),
            )
            .await;
            close_channel(&channel, self.limit).await;
        }
    }

    /// Closes the session's channels, then its connection (each bounded). Deliveries
    /// left unsettled return to their queues.
    pub async fn close(self) {
        let channels = std::mem::take(
            &mut *self
                .channels
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        futures_util::future::join_all(
            channels
                .iter()
                .map(|(channel, _)| close_channel(channel, self.limit)),
        )
        .await;
        close_connection(&self.connection, self.limit).await;
    }

    /// Ends a session that failed (its node died, stopped, or cannot serve the
    /// queues): closes what is left of it like [`Session::close`], and moves the node
    /// list on, so that the next session opened on it starts at the next node.
    pub async fn lost(self) {
        self.nodes.lost(self.node);
        self.close().await;
    }
}

/// Closes `channel` unless it is already closing or gone, waiting (up to `limit`) for
/// the broker's close-ok.
pub(crate) async fn close_channel(channel: &Channel, limit: Duration) {
    if channel.status().connected() {
        let _ = tokio::time::timeout(limit, channel.close(200, "done".into())).await;
    }
}

/// Closes `connection` unless it is already closing or gone (up to `limit`).
pub(crate) async fn close_connection(connection: &Connection, limit: Duration) {
    if connection.status().connected() {
        let _ = tokio::time::timeout(limit, connection.close(200, "closing".into())).await;
    }
}

async fn with_limit<T>(
    limit: Duration,
    operation: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(limit, operation)
        .await
        .map_err(|_| Error::Timeout(limit))?
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::settings::NodeOrder;

    #[tokio::test]
    async fn a_lost_session_moves_the_next_one_to_the_next_node_and_a_closed_one_does_not() {
        let broker = std::env::var("CONVEYOR_TEST_AMQP")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        // Two entries for the one test broker, told apart by their position.
        let settings = BrokerSettings {
            urls: vec![
                SecretString::from(broker.clone()),
                SecretString::from(broker),
            ],
            node_order: NodeOrder::Listed,
            connect_timeout_ms: 30_000,
            ..BrokerSettings::default()
        };
        let nodes = Arc::new(Nodes::new(&settings));

        let first = Session::open_on(&nodes, &settings, "conveyor-session-test")
            .await
            .expect("the broker answers");
        assert_eq!(first.node, 0, "a listed order starts at the first node");
        first.close().await;
        let again = Session::open_on(&nodes, &settings, "conveyor-session-test")
            .await
            .expect("the broker answers");
        assert_eq!(again.node, 0, "a clean close keeps the node");
        again.lost().await;
        let next = Session::open_on(&nodes, &settings, "conveyor-session-test")
            .await
            .expect("the broker answers");
        assert_eq!(
            next.node, 1,
            "after a lost session the next one starts at the next node"
        );
        next.close().await;
    }
}
