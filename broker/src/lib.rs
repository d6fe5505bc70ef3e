//! How a job travels: the RabbitMQ connection, the topology (work exchange, one quorum
//! queue per Conveyor queue, dead-letter exchange and queue, all under a namespace), the
//! confirmed publisher and the consumer. Nothing here decides what a job means.
//!
//! # Layout
//! - [`settings`] — [`BrokerSettings`] and connecting.
//! - [`topology`] — names and idempotent declarations.
//! - [`publisher`] — [`Publisher`], persistent + mandatory + confirmed, bounded.
//! - [`error`] — [`Error`].

pub mod error;
pub mod publisher;
pub mod settings;
pub mod topology;

pub use error::Error;
pub use lapin;
pub use publisher::Publisher;
pub use settings::{BrokerSettings, connect};
pub use topology::Topology;

/// AMQP header carrying the W3C trace context of the request that enqueued a job.
pub const TRACEPARENT_HEADER: &str = "traceparent";
