//! The worker process: one AMQP connection (named, so operators can find it), one
//! channel per queue with a prefetch of `prefetch_multiplier` × that queue's concurrency,
//! one task per delivery (tracked, so shutdown can wait for it) that waits for one of the
//! queue's running slots, and a reconnect loop with backoff
//! and jitter that re-declares the topology and re-subscribes after any loss (a dropped
//! connection, a server-side consumer cancel). After a loss the next session starts at
//! the next node of a cluster ([`broker::Nodes`]).
//!
//! Shutdown: stop consuming, let in-flight jobs finish within the grace period, leave
//! the rest unacked (RabbitMQ redelivers them), close the connection, deregister.

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::{BrokerSettings, Consumer, Delivery, Nodes, Session, Topology};
use futures_util::StreamExt;
use futures_util::stream::{BoxStream, SelectAll};
use jobs::{Registry, WorkerId};
use store::Store;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::archive::Archive;
use crate::executor::{ACK_TIMEOUT, Disposition, Executor};
use crate::settings::WorkerSettings;

/// A worker process's consuming half.
pub struct Worker {
    status: Arc<WorkerStatus>,
    settings: WorkerSettings,
    broker: BrokerSettings,
    /// The broker's nodes, shared by this worker's successive sessions: a lost
    /// session moves the next one to the next node.
    nodes: Arc<Nodes>,
    topology: Topology,
    store: Store,
    registry: Registry,
    id: WorkerId,
    name: String,
    /// Where the live events of its claims, outcomes and archived jobs go.
    events: broker::Events,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What a worker reports about itself while it runs.
#[derive(Debug, Default)]
pub struct WorkerStatus {
    /// Consuming from the broker right now.
    pub connected: std::sync::atomic::AtomicBool,
}

/// One consumed queue.
struct Lane {
    queue: String,
    /// Jobs running at once.
    concurrency: u16,
    /// The channel's prefetch.
    prefetch: u16,
    /// Its running slots, shared across sessions: jobs of a lost session that are
    /// still running count against the next one's.
    slots: Arc<Semaphore>,
}

enum Source {
    /// A work queue; its running slots.
    Work(Arc<Semaphore>),
    Dead,
}

enum SessionEnd {
    Shutdown,
    Lost(String),
}

impl Worker {
    /// A worker for `registry`'s kinds.
    pub fn new(
        settings: WorkerSettings,
        broker: BrokerSettings,
        topology: Topology,
        store: Store,
        registry: Registry,
    ) -> Self {
        let id = WorkerId::new();
        let short = id.0.simple().to_string();
        let name = settings.name.clone().unwrap_or_else(|| {
            format!(
                "{}-worker-{}",
                topology.namespace(),
                &short[short.len() - 8..]
            )
        });
        Self {
            status: Arc::new(WorkerStatus::default()),
            settings,
            nodes: Arc::new(Nodes::new(&broker)),
            broker,
            topology,
            store,
            registry,
            id,
            name,
            events: broker::Events::disabled(),
        }
    }

    /// Publishes the live event of each transition it commits to `events`.
    #[must_use]
    pub fn with_events(mut self, events: broker::Events) -> Self {
        self.events = events;
        self
    }

    /// Live status, for readiness checks.
    pub fn status(&self) -> Arc<WorkerStatus> {
        Arc::clone(&self.status)
    }

    /// The queues consumed and their concurrency: the configured ones, or else
    /// `default` plus every queue a registered kind defaults to.
    pub fn queues(&self) -> Vec<(String, u16)> {
        let concurrency = self.settings.concurrency.max(1);
        if !self.settings.queues.is_empty() {
            return self
                .settings
                .queues
                .iter()
                .map(|(q, c)| (q.clone(), if *c == 0 { concurrency } else { *c }))
                .collect();
        }
        let mut queues: Vec<String> = vec!["default".to_owned()];
        for kind in self.registry.catalog().kinds() {
            if let Ok(spec) = self.registry.catalog().get(kind) {
                queues.push(spec.options.queue.to_owned());
            }
        }
        queues.sort();
        queues.dedup();
        queues.into_iter().map(|q| (q, concurrency)).collect()
    }

    /// Consumes until `shutdown` fires, then drains and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let abandon = CancellationToken::new();
        let executor = Executor::with_events(
            self.store.clone(),
            self.registry.clone(),
            self.id,
            abandon.clone(),
            self.events.clone(),
        );
        let archive = Arc::new(
            Archive::new(
                self.store.clone(),
                self.registry.clone(),
                self.topology.clone(),
                abandon.clone(),
            )
            .with_events(self.events.clone()),
        );
        let tracker = TaskTracker::new();
        let queues = self.queues();
        let lanes: Vec<Lane> = queues
            .iter()
            .map(|(queue, concurrency)| Lane {
                queue: queue.clone(),
                concurrency: *concurrency,
                prefetch: self.settings.prefetch(*concurrency),
                slots: Arc::new(Semaphore::new(usize::from(*concurrency))),
            })
            .collect();
        let queue_list = queues
            .iter()
            .map(|(q, c)| format!("{q}={c}"))
            .collect::<Vec<_>>()
            .join(",");
        tracing::info!(worker = %self.name, queues = %queue_list, "worker starting");

        let heartbeat_stop = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(
            self.store.clone(),
            self.id,
            self.name.clone(),
            queue_list.clone(),
            self.settings.heartbeat_interval(),
            // Keeps beating through the drain: jobs finishing in the grace period are
            // still held by a live worker.
            heartbeat_stop.clone(),
        ));

        let mut delay = Duration::from_millis(100);
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let started = Instant::now();
            match self
                .session(&lanes, &executor, &archive, &tracker, &shutdown, &abandon)
                .await
            {
                SessionEnd::Shutdown => break,
                SessionEnd::Lost(why) => {
                    self.status
                        .connected
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    metrics::counter!("conveyor_reconnects_total", "component" => "worker")
                        .increment(1);
                    if started.elapsed() > Duration::from_secs(30) {
                        delay = Duration::from_millis(100);
                    }
                    let jittered = delay.mul_f64(0.5 + fastrand::f64() / 2.0);
                    tracing::warn!(worker = %self.name, reason = %why, retry_in = ?jittered, "broker session lost; reconnecting");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(jittered) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        // Jobs from an earlier, lost session may still be finishing.
        drain(&tracker, self.settings.grace(), &abandon).await;
        heartbeat_stop.cancel();
        let _ = heartbeat.await;
        if let Err(e) = self.store.deregister(self.id).await {
            tracing::warn!(error = %e, "could not deregister the worker");
        }
        self.status
            .connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(worker = %self.name, "worker stopped");
    }

    async fn session(
        &self,
        lanes: &[Lane],
        executor: &Executor,
        archive: &Arc<Archive>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        abandon: &CancellationToken,
    ) -> SessionEnd {
        let session = match tokio::select! {
            () = shutdown.cancelled() => return SessionEnd::Shutdown,
            s = Session::open_on(&self.nodes, &self.broker, &self.name) => s,
        } {
            Ok(s) => s,
            Err(e) => return SessionEnd::Lost(e.to_string()),
        };
        let limit = self.broker.connect_timeout() * 2;
        let subscribed = tokio::time::timeout(limit, self.subscribe(&session, lanes))
            .await
            .unwrap_or(Err(broker::Error::Timeout(limit)));
        let mut streams = match subscribed {
            Ok(s) => s,
            Err(e) => {
                // Whatever went wrong (the node died, stopped, or cannot serve the
                // queues), the next session starts at the next node.
                session.lost().await;
                return SessionEnd::Lost(e.to_string());
            }
        };
        tracing::info!(worker = %self.name, node = %session.node(), "consuming");
        for lane in lanes {
            metrics::gauge!("conveyor_worker_concurrency", "queue" => lane.queue.clone())
                .set(f64::from(lane.concurrency));
        }
        self.status
            .connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    session.stop_consuming().await;
                    drain(tracker, self.settings.grace(), abandon).await;
                    session.close().await;
                    return SessionEnd::Shutdown;
                }
                next = streams.next() => match next {
                    None => {
                        session.lost().await;
                        return SessionEnd::Lost("every consumer ended".into());
                    }
                    Some((_, Err(e))) => {
                        session.lost().await;
                        return SessionEnd::Lost(e.to_string());
                    }
                    Some((Source::Work(slots), Ok(delivery))) => {
                        let executor = executor.clone();
                        let shutdown = shutdown.clone();
                        tracker.spawn(async move {
                            let disposition = tokio::select! {
                                biased;
                                // Prefetched but not started: left for redelivery.
                                () = shutdown.cancelled() => Disposition::Abandon,
                                permit = slots.acquire_owned() => match permit {
                                    // The channel died while it waited: its redelivery
                                    // is already on the way to some worker.
                                    Ok(_) if !delivery.is_settleable() => Disposition::Abandon,
                                    // Boxed: the executor's future is large, and
                                    // every move of this task would copy it.
                                    Ok(slot) => Box::pin(executor.execute(delivery.body(), slot)).await,
                                    Err(_) => Disposition::Abandon,
                                },
                            };
                            delivery.settle(disposition).await;
                        });
                    }
                    Some((Source::Dead, Ok(delivery))) => {
                        let archive = Arc::clone(archive);
                        tracker.spawn(async move {
                            let disposition = Box::pin(archive.record(&delivery)).await;
                            delivery.settle(disposition).await;
                        });
                    }
                }
            }
        }
    }

    async fn subscribe(
        &self,
        session: &Session,
        lanes: &[Lane],
    ) -> Result<
        SelectAll<BoxStream<'static, (Source, Result<Delivery, broker::Error>)>>,
        broker::Error,
    > {
        let queues: Vec<&str> = lanes.iter().map(|lane| lane.queue.as_str()).collect();
        session.declare(&self.topology, &queues).await?;
        let mut streams = SelectAll::new();
        let subscriptions = lanes
            .iter()
            .map(|lane| {
                (
                    self.topology.queue(&lane.queue),
                    lane.prefetch,
                    Some(Arc::clone(&lane.slots)),
                )
            })
            .chain(std::iter::once((self.topology.dead_queue(), 16, None)));
        for (amqp_queue, prefetch, slots) in subscriptions {
            let consumer: Consumer = session.consume(&amqp_queue, prefetch).await?;
            let source = move || match &slots {
                Some(slots) => Source::Work(Arc::clone(slots)),
                None => Source::Dead,
            };
            streams.push(consumer.map(move |d| (source(), d)).boxed());
        }
        Ok(streams)
    }
}

async fn drain(tracker: &TaskTracker, grace: Duration, abandon: &CancellationToken) {
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(grace = ?grace, in_flight = tracker.len(), "grace period over; leaving in-flight deliveries unacked");
        abandon.cancel();
        let _ = tokio::time::timeout(ACK_TIMEOUT, tracker.wait()).await;
    }
    tracker.reopen();
}

async fn heartbeat(
    store: Store,
    id: WorkerId,
    name: String,
    queues: String,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = store.heartbeat(id, &name, &queues).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
    }
}
