//! Names and declarations. Everything lives under a namespace prefix so that tests and
//! tenants share one broker without touching each other:
//!
//! | object | name | kind |
//! |---|---|---|
//! | work exchange | `{ns}.jobs` | direct, durable; routing key = Conveyor queue name |
//! | work queue | `{ns}.q.{queue}` | quorum, dead-letters to `{ns}.dead`, `x-delivery-limit` |
//! | dead-letter exchange | `{ns}.dead` | fanout, durable |
//! | dead-letter queue | `{ns}.dead` | quorum |
//!
//! Declaring is idempotent; a queue declared with other arguments is an error from the
//! broker (PRECONDITION_FAILED), reported, never silently replaced.

use lapin::Channel;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::error::Error;

/// The names of one namespace's exchanges and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    namespace: String,
    delivery_limit: u32,
}

impl Topology {
    /// The topology of `namespace`, with RabbitMQ dead-lettering a message after
    /// `delivery_limit` deliveries.
    pub fn new(namespace: impl Into<String>, delivery_limit: u32) -> Self {
        Self {
            namespace: namespace.into(),
            delivery_limit,
        }
    }

    /// The namespace prefix.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The work exchange.
    pub fn exchange(&self) -> String {
        format!("{}.jobs", self.namespace)
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

    /// Declares the exchanges and the dead-letter queue.
    ///
    /// # Errors
    /// When the broker refuses or the channel fails.
    pub(crate) async fn declare_base(&self, channel: &Channel) -> Result<(), Error> {
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
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text("quorum"));
        declare_quorum(channel, &self.dead_queue(), args).await?;
        channel
            .queue_bind(
                self.dead_queue().as_str().into(),
                self.dead_exchange().as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// Declares the work queue of Conveyor queue `queue` and binds it.
    ///
    /// # Errors
    /// When the broker refuses (e.g. the queue exists with other arguments).
    pub(crate) async fn declare_queue(&self, channel: &Channel, queue: &str) -> Result<(), Error> {
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
        declare_quorum(channel, &name, args).await?;
        channel
            .queue_bind(
                name.as_str().into(),
                self.exchange().as_str().into(),
                queue.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
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
        for exchange in [self.exchange(), self.dead_exchange()] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
}

/// Declares a durable queue with `args` (which name its type).
async fn declare_quorum(channel: &Channel, name: &str, args: FieldTable) -> Result<(), Error> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel.queue_declare(name.into(), options, args).await?;
    Ok(())
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
    fn queue_names_are_checked() {
        assert!(valid_queue_name("emails"));
        assert!(valid_queue_name("orders-eu_2"));
        assert!(!valid_queue_name(""));
        assert!(!valid_queue_name("Orders"));
        assert!(!valid_queue_name("a.b"));
        assert!(!valid_queue_name(&"x".repeat(65)));
    }
}
