//! Errors of the transport.

use std::time::Duration;

/// A broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The AMQP client reported an error (connection lost, channel closed, …).
    #[error("broker error: {0}")]
    Lapin(#[from] lapin::Error),
    /// The broker refused the message (negative confirm).
    #[error("the broker refused the message (nack)")]
    Nacked,
    /// No queue is bound for the routing key: the message was returned.
    #[error("message returned unroutable: no queue for {0:?}")]
    Unroutable(String),
    /// The operation did not finish in time (treated as unconfirmed).
    #[error("broker operation timed out after {0:?}")]
    Timeout(Duration),
    /// The broker was unreachable recently; not retried until the backoff passes.
    #[error("broker unavailable (retrying in {0:?})")]
    Unavailable(Duration),
    /// Too many publishes are waiting for confirms.
    #[error("too many publishes in flight")]
    Busy,
    /// The broker blocked publishing (memory or disk alarm).
    #[error("the broker blocked publishing: {0}")]
    Blocked(String),
}
