//! The confirmed publisher. Every message is persistent and `mandatory`; every publish
//! waits for the broker's confirm (many confirms stay in flight at once on one channel,
//! so concurrent callers pipeline). An unroutable return or a nack is an error; a confirm
//! that does not come in time is an error too, and the caller treats the job as
//! unpublished (the dispatcher publishes it later; a duplicate message is harmless).
//!
//! The publisher connects lazily and reconnects on the next publish after a failure,
//! starting at the next node of a cluster ([`Nodes`]). While no node is reachable it
//! fails fast (with a growing, jittered retry delay) instead of making every caller wait
//! for a connect timeout. A publish in flight when its node dies gets no confirm: it
//! fails (lost connection or timeout) and the job stays unpublished in the ledger.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use jobs::Envelope;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::{Mutex, Semaphore, SemaphorePermit};

use crate::error::Error;
use crate::nodes::Nodes;
use crate::session::{close_channel, close_connection};
use crate::settings::{BrokerSettings, bounded};
use crate::topology::Topology;

const MIN_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);

struct Live {
    connection: Connection,
    channel: Channel,
    generation: u64,
    /// The node connected to (an index into [`Publisher::nodes`]).
    node: usize,
}

#[derive(Default)]
struct Slot {
    live: Option<Arc<Live>>,
    generation: u64,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    /// Queues declared on the current connection.
    declared: HashSet<String>,
}

/// Publishes envelopes to their queues with confirms.
pub struct Publisher {
    settings: BrokerSettings,
    nodes: Nodes,
    topology: Topology,
    name: String,
    slot: Mutex<Slot>,
    in_flight: Semaphore,
    /// Set while the broker has blocked the current connection (resource alarm).
    blocked: Arc<AtomicBool>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("name", &self.name)
            .field("topology", &self.topology)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher whose connection is named `name`. Connects on first use.
    pub fn new(settings: BrokerSettings, topology: Topology, name: impl Into<String>) -> Self {
        let permits = settings.max_in_flight.max(1);
        Self {
            nodes: Nodes::new(&settings),
            settings,
            topology,
            name: name.into(),
            slot: Mutex::new(Slot::default()),
            in_flight: Semaphore::new(permits),
            blocked: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The topology published to.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Reserves `n` in-flight publish slots, to be used by [`Publisher::publish_reserved`].
    /// Intake reserves before it stores anything, so when the broker cannot keep up it
    /// answers 503 instead of accepting work it cannot hand on.
    ///
    /// # Errors
    /// [`Error::Blocked`] while the broker blocks publishing (memory or disk alarm);
    /// [`Error::Busy`] when fewer than `n` slots are free (confirms are stalling).
    pub fn reserve(&self, n: usize) -> Result<Reservation<'_>, Error> {
        if self.blocked.load(Ordering::Relaxed) {
            return Err(Error::Blocked("memory or disk alarm".into()));
        }
        let n = u32::try_from(n).map_err(|_| Error::Busy)?;
        self.in_flight
            .try_acquire_many(n)
            .map(|permit| Reservation { _permit: permit })
            .map_err(|_| Error::Busy)
    }

    /// Connects now (if not connected) and reports whether the broker is reachable.
    ///
    /// # Errors
    /// When it is not.
    pub async fn ensure_connected(&self) -> Result<(), Error> {
        self.live().await.map(drop)
    }

    async fn live(&self) -> Result<Arc<Live>, Error> {
        let mut slot = self.slot.lock().await;
        if let Some(live) = &slot.live {
            if live.channel.status().connected() && live.connection.status().connected() {
                return Ok(Arc::clone(live));
            }
            self.nodes.lost(live.node);
            slot.live = None;
        }
        if let Some(retry_at) = slot.retry_at {
            let now = Instant::now();
            if retry_at > now {
                return Err(Error::Unavailable(retry_at - now));
            }
        }
        match self.open().await {
            Ok((connection, channel, node)) => {
                slot.generation += 1;
                slot.retry_at = None;
                slot.retry_delay = Duration::ZERO;
                slot.declared.clear();
                let live = Arc::new(Live {
                    connection,
                    channel,
                    generation: slot.generation,
                    node,
                });
                slot.live = Some(Arc::clone(&live));
                if slot.generation > 1 {
                    metrics::counter!("conveyor_reconnects_total", "component" => "publisher")
                        .increment(1);
                }
                tracing::info!(connection = %self.name, node = %self.nodes.label(node), "publisher connected to the broker");
                Ok(live)
            }
            Err(e) => {
                slot.retry_delay = (slot.retry_delay * 2).clamp(MIN_RETRY, MAX_RETRY);
                // Jitter so that many producers do not reconnect in lockstep.
                let jittered = slot.retry_delay.mul_f64(0.5 + fastrand_unit() / 2.0);
                slot.retry_at = Some(Instant::now() + jittered);
                tracing::warn!(connection = %self.name, error = %e, retry_in = ?jittered, "publisher cannot reach the broker");
                Err(e)
            }
        }
    }

    async fn open(&self) -> Result<(Connection, Channel, usize), Error> {
        let limit = self.settings.connect_timeout();
        let (connection, node) = self.nodes.connect(&self.name).await?;
        self.blocked.store(false, Ordering::Relaxed);
        let flag = Arc::clone(&self.blocked);
        let mut events = connection.events_listener();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    lapin::Event::ConnectionBlocked(reason) => {
                        tracing::warn!(%reason, "broker blocked publishing");
                        flag.store(true, Ordering::Relaxed);
                    }
                    lapin::Event::ConnectionUnblocked => flag.store(false, Ordering::Relaxed),
                    _ => {}
                }
            }
        });
        let channel = bounded(limit, connection.create_channel()).await?;
        bounded(
            limit,
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        let declared = tokio::time::timeout(limit, self.topology.declare_base(&connection))
            .await
            .map_err(|_| Error::Timeout(limit))
            .and_then(|r| r);
        if let Err(e) = declared {
            // A node that accepts connections but cannot declare (it lost the
            // cluster's majority, say) is as good as down: try the next one next time.
            self.nodes.lost(node);
            let _ =
                tokio::time::timeout(limit, connection.close(200, "declare failed".into())).await;
            return Err(e);
        }
        Ok((connection, channel, node))
    }

    async fn forget(&self, generation: u64) {
        let mut slot = self.slot.lock().await;
        if let Some(live) = slot.live.as_ref()
            && live.generation == generation
        {
            self.nodes.lost(live.node);
            slot.live = None;
        }
    }

    async fn ensure_queue(&self, live: &Live, queue: &str) -> Result<(), Error> {
        {
            let slot = self.slot.lock().await;
            if slot.generation == live.generation && slot.declared.contains(queue) {
                return Ok(());
            }
        }
        let limit = self.settings.connect_timeout();
        tokio::time::timeout(limit, self.topology.declare_queue(&live.connection, queue))
            .await
            .map_err(|_| Error::Timeout(limit))??;
        let mut slot = self.slot.lock().await;
        if slot.generation == live.generation {
            slot.declared.insert(queue.to_owned());
        }
        Ok(())
    }

    /// Closes the channel, then the connection (each bounded), so that a clean
    /// shutdown reports no error. A later publish connects again.
    pub async fn close(&self) {
        let live = self.slot.lock().await.live.take();
        if let Some(live) = live {
            let limit = self.settings.connect_timeout();
            close_channel(&live.channel, limit).await;
            close_connection(&live.connection, limit).await;
        }
    }

    /// Publishes one job's message and waits for the broker's confirm.
    ///
    /// # Errors
    /// Unreachable, blocked, busy, nacked, unroutable or timed out: the message may or
    /// may not have been stored; treat the job as unpublished.
    pub async fn publish(
        &self,
        envelope: &Envelope,
        traceparent: Option<&str>,
    ) -> Result<(), Error> {
        let _permit = self.in_flight.try_acquire().map_err(|_| Error::Busy)?;
        self.publish_unbounded(envelope, traceparent).await
    }

    /// [`Publisher::publish`] inside a [`Reservation`] the caller holds (one slot per
    /// concurrent publish).
    ///
    /// # Errors
    /// As [`Publisher::publish`], except `Busy`.
    pub async fn publish_reserved(
        &self,
        _reservation: &Reservation<'_>,
        envelope: &Envelope,
        traceparent: Option<&str>,
    ) -> Result<(), Error> {
        self.publish_unbounded(envelope, traceparent).await
    }

    async fn publish_unbounded(
        &self,
        envelope: &Envelope,
        traceparent: Option<&str>,
    ) -> Result<(), Error> {
        let live = self.live().await?;
        if self.blocked.load(Ordering::Relaxed) {
            return Err(Error::Blocked("connection.blocked".into()));
        }
        let result = self.publish_on(&live, envelope, traceparent).await;
        if let Err(e) = &result {
            // No confirm: the job stays unpublished in the ledger, and the dispatcher
            // publishes it after `dispatcher.unconfirmed_after_ms`.
            metrics::counter!("conveyor_publish_unconfirmed_total").increment(1);
            if matches!(e, Error::Lapin(_) | Error::Timeout(_)) {
                self.forget(live.generation).await;
            }
        }
        result
    }

    async fn publish_on(
        &self,
        live: &Live,
        envelope: &Envelope,
        traceparent: Option<&str>,
    ) -> Result<(), Error> {
        self.ensure_queue(live, &envelope.queue).await?;
        let mut headers = FieldTable::default();
        if let Some(traceparent) = traceparent {
            headers.insert(
                crate::TRACEPARENT_HEADER.into(),
                AMQPValue::LongString(LongString::from(traceparent.as_bytes().to_vec())),
            );
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(uuid::Uuid::now_v7().to_string().as_str().into())
            .with_type(envelope.kind.as_str().into())
            .with_headers(headers);
        let limit = self.settings.publish_timeout();
        let body = envelope.to_bytes();
        let started = std::time::Instant::now();
        let confirm = bounded(
            limit,
            live.channel.basic_publish(
                self.topology.exchange().as_str().into(),
                envelope.queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                properties,
            ),
        )
        .await?;
        let confirmation = bounded(limit, confirm).await?;
        metrics::histogram!("conveyor_publish_confirm_seconds")
            .record(started.elapsed().as_secs_f64());
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(Error::Unroutable(envelope.queue.clone())),
            Confirmation::Nack(_) => Err(Error::Nacked),
            // Confirms are enabled on this channel at connect; reaching this is a bug.
            Confirmation::NotRequested => Err(Error::Nacked),
        }
    }
}

/// In-flight publish slots held for a request; released when dropped.
#[derive(Debug)]
pub struct Reservation<'a> {
    _permit: SemaphorePermit<'a>,
}

fn fastrand_unit() -> f64 {
    // A cheap jitter source without another dependency: the sub-second clock.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}
