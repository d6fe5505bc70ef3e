//! How a job travels: the RabbitMQ connection, the topology (work exchange, one quorum
//! queue per Conveyor queue, dead-letter exchange and queue, all under a namespace), the
//! confirmed publisher and the consumer. Nothing here decides what a job means. The
//! AMQP client (lapin) stays inside this crate: callers see sessions, consumers,
//! deliveries and headers of this crate's own types.
//!
//! # Layout
//! - [`settings`] — [`BrokerSettings`]: the nodes, timeouts, replication.
//! - [`nodes`] — [`Nodes`]: the configured nodes, which one to try first, failover;
//!   every connection (publisher, sessions) goes through it.
//! - [`topology`] — names and idempotent declarations.
//! - [`publisher`] — [`Publisher`], persistent + mandatory + confirmed, bounded.
//! - [`session`] — [`Session`]: a named connection for consuming, declaring,
//!   inspecting and deleting; closed channels first, then the connection.
//! - [`consumer`] — [`Consumer`], [`Delivery`] and [`Disposition`]: manual acks,
//!   settled in `multiple` runs by one task per channel (`acks`).
//! - [`events`] — live job events on the `{ns}.events` topic exchange: [`Events`]
//!   (fire-and-forget publishing through a bounded buffer) and [`Subscriptions`] (an
//!   intake's one subscription, fanned out per job and to firehoses).
//! - [`headers`] — [`Headers`], a message's AMQP headers as JSON.
//! - [`error`] — [`Error`].

mod acks;
pub mod consumer;
pub mod error;
pub mod events;
pub mod headers;
pub mod nodes;
pub mod publisher;
pub mod session;
pub mod settings;
pub mod topology;

pub use consumer::{Consumer, Delivery, Disposition, SETTLE_TIMEOUT};
pub use error::Error;
pub use events::{
    Events, FirehoseSignal, FirehoseSubscription, JobSubscription, Signal, Subscriptions,
};
pub use headers::Headers;
pub use nodes::Nodes;
pub use publisher::Publisher;
pub use session::{QueueInfo, Session};
pub use settings::{BrokerSettings, NodeOrder};
pub use topology::Topology;

/// AMQP header carrying the W3C trace context of the request that enqueued a job.
pub const TRACEPARENT_HEADER: &str = "traceparent";
