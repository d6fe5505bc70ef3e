//! Consuming with manual acks: a [`Consumer`] is one queue's subscription on a channel
//! of its own (opened by [`Session::consume`](crate::Session::consume)) and a stream of
//! [`Delivery`]s. Each delivery is settled once, by [`Delivery::settle`], after the
//! caller has recorded its outcome; the channel's settling task groups the acks of
//! deliveries finishing together into one `multiple` ack where that is safe.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};

use crate::acks::Acks;
use crate::error::Error;
use crate::headers::Headers;

/// How long one ack or reject may take before the channel is presumed dead.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What to tell the broker about a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The outcome is committed (or there was nothing to do): ack.
    Ack,
    /// The message can never run (undecodable, or names no job): reject without
    /// requeue, so RabbitMQ dead-letters it and the archive records it.
    Reject,
    /// Shutting down before the outcome could be committed: leave it unacked; the
    /// broker redelivers it.
    Abandon,
}

/// One queue's subscription: a stream of deliveries. The stream ends (or yields an
/// error) when the channel or the connection is lost or the broker cancels the
/// consumer; the caller then opens a new [`Session`](crate::Session).
pub struct Consumer {
    inner: lapin::Consumer,
    /// The channel's settling task.
    acks: Acks,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("tag", &self.inner.tag())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub(crate) fn new(inner: lapin::Consumer) -> Self {
        Self {
            inner,
            // One settling task per channel: delivery tags are per channel.
            acks: Acks::start(),
        }
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx).map(|next| {
            next.map(|result| {
                result.map_err(Error::from).map(|delivery| {
                    // Registered before anyone can settle it.
                    self.acks
                        .delivered(delivery.delivery_tag, delivery.acker.clone());
                    Delivery {
                        tag: delivery.delivery_tag,
                        redelivered: delivery.redelivered,
                        body: delivery.data,
                        properties: delivery.properties,
                        acker: delivery.acker,
                        acks: self.acks.clone(),
                    }
                })
            })
        })
    }
}

/// One message delivered to a [`Consumer`], unsettled until [`Delivery::settle`].
pub struct Delivery {
    tag: u64,
    redelivered: bool,
    body: Vec<u8>,
    properties: lapin::BasicProperties,
    /// Only asked whether the channel still lives; settling goes through `acks`.
    acker: lapin::Acker,
    acks: Acks,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("tag", &self.tag)
            .field("redelivered", &self.redelivered)
            .field("bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// The delivery tag (unique on its channel).
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// True when the broker delivered this message before (to any consumer).
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// The message body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The message's headers, when it has any.
    pub fn headers(&self) -> Option<Headers> {
        self.properties.headers().as_ref().map(Headers::from)
    }

    /// The message id the publisher set, if any.
    pub fn message_id(&self) -> Option<&str> {
        self.properties.message_id().as_ref().map(|id| id.as_str())
    }

    /// False once the delivery's channel is gone: settling it can no longer succeed,
    /// and the broker redelivers the message (to some consumer).
    pub fn is_settleable(&self) -> bool {
        self.acker.usable()
    }

    /// Settles the delivery as `disposition` says, grouped with other deliveries of
    /// its channel finishing now, and returns once the broker has been told (or telling
    /// it failed: the message is then redelivered). `Abandon` leaves it unsettled.
    pub async fn settle(self, disposition: Disposition) {
        self.acks.settle(self.tag, disposition).await;
    }
}
