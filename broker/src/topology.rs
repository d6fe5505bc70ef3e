//! Names and declarations. Everything lives under a namespace prefix so that tests and
//! tenants share one broker without touching each other:
//!
//! | object | name | kind |
//! |---|---|---|
//! | work exchange | `{ns}.jobs` | direct, durable; routing key = Conveyor queue name |
//! | work queue | `{ns}.q.{queue}` | quorum, dead-letters to `{ns}.dead`, `x-delivery-limit` |
//! | dead-letter exchange | `{ns}.dead` | fanout, durable |
//! | dead-letter queue | `{ns}.dead` | quorum |
//! | events exchange | `{ns}.events` | topic, durable; transient messages, routing key `{queue}.{state}.{kind}` |
//! | an intake's event subscription | server-named | classic, exclusive, auto-delete, bounded (`x-max-length`, drop-head) |
//!
//! Quorum queues are declared with `x-quorum-initial-group-size` when the settings give
//! one ([`Topology::with_quorum_group_size`]): how many nodes hold a replica of a *new*
//! queue. It does nothing to a queue that exists (membership then changes only with
//! `rabbitmq-queues grow`/`shrink`).
//!
//! Declaring is idempotent; a queue declared with other arguments is an error from the
//! broker (PRECONDITION_FAILED), reported, never silently replaced.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection};

use crate::error::Error;

/// The names of one namespace's exchanges and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    namespace: String,
    delivery_limit: u32,
    quorum_group_size: Option<u16>,
}

impl Topology {
    /// The topology of `namespace`, with RabbitMQ dead-lettering a message after
    /// `delivery_limit` deliveries.
    pub fn new(namespace: impl Into<String>, delivery_limit: u32) -> Self {
        Self {
            namespace: namespace.into(),
            delivery_limit,
            quorum_group_size: None,
        }
    }

    /// The same topology, its quorum queues declared with `x-quorum-initial-group-size`
    /// = `size` when given (else RabbitMQ's default: every node of the cluster).
    #[must_use]
    pub fn with_quorum_group_size(mut self, size: Option<u16>) -> Self {
        self.quorum_group_size = size;
        self
    }

    /// The `x-quorum-initial-group-size` declared, if any.
    pub fn quorum_group_size(&self) -> Option<u16> {
        self.quorum_group_size
    }

    /// The namespace prefix.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The work exchange.
    pub fn exchange(&self) -> String {
        format!("{}.jobs", self.namespace)
    }

    /// The events exchange (topic): live job transitions, routing key
    /// `{queue}.{state}.{kind}` (see `crate::events`).
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// The dead-letter exchange.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.namespace)
    }

    /// The dead-letter queue.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.namespace)
    }

    /// The AMQP queue of Conveyor queue `queue`.
    pub fn queue(&self, queue: &str) -> String {
        format!("{}.q.{queue}", self.namespace)
    }

    /// Declares the exchanges and the dead-letter queue, on a channel of its own (a
    /// refused declaration closes its channel, never the caller's).
    ///
    /// # Errors
    /// When the broker refuses or the channel fails.
    pub(crate) async fn declare_base(&self, connection: &Connection) -> Result<(), Error> {
        let channel = connection.create_channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange().as_str().into(),
                lapin::ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_exchange().as_str().into(),
                lapin::ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        close(&channel).await;
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text("quorum"));
        self.declare_quorum(
            connection,
            &self.dead_queue(),
            args,
            &self.dead_exchange(),
            "",
        )
        .await
    }

    /// Declares the work queue of Conveyor queue `queue` and binds it, on a channel of
    /// its own.
    ///
    /// # Errors
    /// When the broker refuses (e.g. the queue exists with another delivery limit).
    pub(crate) async fn declare_queue(
        &self,
        connection: &Connection,
        queue: &str,
    ) -> Result<(), Error> {
        let name = self.queue(queue);
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text("quorum"));
        args.insert("x-dead-letter-exchange".into(), text(&self.dead_exchange()));
        // At-least-once dead-lettering: RabbitMQ keeps the message until the dead-letter
        // queue confirms it (needs reject-publish overflow).
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        args.insert("x-overflow".into(), text("reject-publish"));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(self.delivery_limit).unwrap_or(i32::MAX)),
        );
        self.declare_quorum(connection, &name, args, &self.exchange(), queue)
            .await
    }

    /// Declares quorum queue `name` with `args` plus this topology's group size, and
    /// binds it to `exchange` with `routing_key`.
    ///
    /// RabbitMQ (3.10 and later) checks `x-quorum-initial-group-size` like any other
    /// argument: re-declaring a queue that exists with another size, or without one,
    /// is refused with PRECONDITION_FAILED. The size matters only when a queue is
    /// created, so processes configured differently (or a deployment that grew from one
    /// node to a cluster) must still agree: on that refusal the declaration is repeated
    /// with the size the queue already has, which checks every other argument as usual.
    async fn declare_quorum(
        &self,
        connection: &Connection,
        name: &str,
        args: FieldTable,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), Error> {
        let first = declare_sized(connection, name, args.clone(), self.quorum_group_size).await;
        let channel = match first {
            Ok(channel) => channel,
            Err(e) => match existing_group_size(&e) {
                Some(existing) => {
                    tracing::info!(
                        queue = name,
                        configured = ?self.quorum_group_size,
                        existing = ?existing,
                        "the queue exists with another initial group size, which applies only \
                         when a queue is created; keeping it (grow or shrink replicas with rabbitmq-queues)"
                    );
                    declare_sized(connection, name, args, existing).await?
                }
                None => return Err(e),
            },
        };
        channel
            .queue_bind(
                name.into(),
                exchange.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        close(&channel).await;
        Ok(())
    }

    /// Deletes a throwaway namespace (a test's, a benchmark's): the work queues named in
    /// `queues`, the dead-letter queue and both exchanges. Best effort: what is missing
    /// or fails is skipped.
    pub(crate) async fn delete(&self, channel: &Channel, queues: &[&str]) {
        for queue in queues
            .iter()
            .map(|q| self.queue(q))
            .chain([self.dead_queue()])
        {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [
            self.exchange(),
            self.dead_exchange(),
            self.events_exchange(),
        ] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
}

/// Declares durable queue `name` with `args` and, when given, an initial group size, on
/// a new channel, which it returns.
async fn declare_sized(
    connection: &Connection,
    name: &str,
    mut args: FieldTable,
    group_size: Option<u16>,
) -> Result<Channel, Error> {
    if let Some(size) = group_size {
        args.insert(GROUP_SIZE.into(), AMQPValue::LongInt(i32::from(size)));
    }
    let channel = connection.create_channel().await?;
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel.queue_declare(name.into(), options, args).await?;
    Ok(channel)
}

const GROUP_SIZE: &str = "x-quorum-initial-group-size";

/// When `error` is RabbitMQ refusing a declaration because the queue exists with another
/// `x-quorum-initial-group-size`: the size it has (`None`: declared without one).
fn existing_group_size(error: &Error) -> Option<Option<u16>> {
    let Error::Lapin(lapin) = error else {
        return None;
    };
    parse_group_size_refusal(&lapin.to_string())
}

/// Reads RabbitMQ's "inequivalent arg 'x-quorum-initial-group-size' … but current is the
/// value '3' of type …" (or "… but current is none").
fn parse_group_size_refusal(message: &str) -> Option<Option<u16>> {
    if !message.contains(&format!("inequivalent arg '{GROUP_SIZE}'")) {
        return None;
    }
    let current = &message[message.find("but current is")? + "but current is".len()..];
    if current.trim_start().starts_with("none") {
        return Some(None);
    }
    let value = current.split('\'').nth(1)?;
    value.parse().ok().map(Some)
}

async fn close(channel: &Channel) {
    if channel.status().connected() {
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            channel.close(200, "declared".into()),
        )
        .await;
    }
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

/// True when `name` is acceptable as a Conveyor queue name: 1 to 64 characters of
/// `a-z`, `0-9`, `_`, `-` (it becomes part of an AMQP queue name and a routing key).
pub fn valid_queue_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_namespaced() {
        let t = Topology::new("t1", 5);
        assert_eq!(t.exchange(), "t1.jobs");
        assert_eq!(t.queue("emails"), "t1.q.emails");
        assert_eq!(t.dead_queue(), "t1.dead");
    }

    #[test]
    fn a_refusal_over_the_group_size_names_the_size_the_queue_has() {
        let sized = "PRECONDITION_FAILED - inequivalent arg 'x-quorum-initial-group-size' for queue 'ns.q.orders' \
                     in vhost '/': received the value '2' of type 'signedint' but current is the value '3' of type 'signedint'";
        assert_eq!(parse_group_size_refusal(sized), Some(Some(3)));
        let unsized_ = "PRECONDITION_FAILED - inequivalent arg 'x-quorum-initial-group-size' for queue 'ns.q.orders' \
                        in vhost '/': received the value '3' of type 'signedint' but current is none";
        assert_eq!(parse_group_size_refusal(unsized_), Some(None));
        let other = "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'ns.q.orders' \
                     in vhost '/': received the value '5' of type 'signedint' but current is the value '3' of type 'signedint'";
        assert_eq!(parse_group_size_refusal(other), None);
    }

    #[test]
    fn queue_names_are_checked() {
        assert!(valid_queue_name("emails"));
        assert!(valid_queue_name("orders-eu_2"));
        assert!(!valid_queue_name(""));
        assert!(!valid_queue_name("Orders"));
        assert!(!valid_queue_name("a.b"));
        assert!(!valid_queue_name(&"x".repeat(65)));
    }
}
