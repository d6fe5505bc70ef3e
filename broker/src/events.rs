//! Live job events over RabbitMQ: the namespace's topic exchange `{ns}.events`.
//!
//! - [`Events`] publishes. The process that wrote a transition hands its
//!   [`JobEvent`] over *after* the commit; `publish` never waits: the event goes into a
//!   bounded buffer and one task per process sends it, transient and unconfirmed, on a
//!   connection of its own. A full buffer, or a broker that is away, drops the event
//!   (`conveyor_events_dropped_total`): Postgres is the truth every stream starts
//!   from, and a stream re-reads it whenever it may have missed something.
//! - [`Subscriptions`] receives, for an intake's event streams and `wait`s: one
//!   server-named, exclusive, bounded queue per process bound to every event, opened
//!   on the first subscription and fanned out in the process (per job, and to every
//!   firehose). When the subscription is (re)established, its generation moves on and
//!   every subscriber is told to re-read the ledger ([`Signal::Resync`]): what was
//!   published while it was away is in the ledger, and what follows arrives live.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use jobs::{JobEvent, JobId};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};

use crate::error::Error;
use crate::nodes::Nodes;
use crate::session::{close_channel, close_connection};
use crate::settings::{BrokerSettings, bounded};
use crate::topology::Topology;

/// How long a publisher that lost the broker drops events before it tries again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// Events held by an intake's subscription queue at most (the oldest go first).
const SUBSCRIPTION_MAX_LENGTH: i32 = 100_000;
/// Unacked events the broker may push to the subscriber.
const SUBSCRIPTION_PREFETCH: u16 = 1_000;
/// Acks are sent for this many events at once (`multiple`).
const ACK_EVERY: u64 = 100;
/// Events buffered per job subscriber; a subscriber this far behind re-reads the ledger.
const PER_JOB_BUFFER: usize = 32;
/// Events buffered per firehose subscriber.
const FIREHOSE_BUFFER: usize = 4_096;

enum Command {
    Publish { key: String, body: Vec<u8> },
    Close(oneshot::Sender<()>),
}

/// Publishes job events without waiting (see the module docs). Cloning is cheap; a
/// disabled handle publishes nothing.
#[derive(Clone)]
pub struct Events {
    sender: Option<mpsc::Sender<Command>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("enabled", &self.sender.is_some())
            .finish()
    }
}

impl Events {
    /// A handle that publishes nothing (`events.enabled = false`).
    pub fn disabled() -> Self {
        Self { sender: None }
    }

    /// Starts the publishing task on a connection named `name`, with a buffer of
    /// `capacity` events. Connects on the first event.
    pub fn start(
        settings: &BrokerSettings,
        topology: &Topology,
        name: impl Into<String>,
        capacity: usize,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let task = PublishTask {
            nodes: Nodes::new(settings),
            limit: settings.connect_timeout(),
            exchange: topology.events_exchange(),
            name: name.into(),
            live: None,
            retry_at: None,
        };
        tokio::spawn(task.run(receiver));
        Self {
            sender: Some(sender),
        }
    }

    /// True unless disabled.
    pub fn enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Hands `event` to the publishing task, or drops it (counted) when the buffer is
    /// full. Never waits.
    pub fn publish(&self, event: &JobEvent) {
        let Some(sender) = &self.sender else {
            return;
        };
        let body = match serde_json::to_vec(event) {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(job_id = %event.id, error = %e, "an event could not be encoded");
                return;
            }
        };
        let command = Command::Publish {
            key: event.routing_key(),
            body,
        };
        if sender.try_send(command).is_err() {
            metrics::counter!("conveyor_events_dropped_total", "reason" => "buffer_full")
                .increment(1);
        }
    }

    /// [`Events::publish`] for each event.
    pub fn publish_all<'a>(&self, events: impl IntoIterator<Item = &'a JobEvent>) {
        if self.sender.is_some() {
            for event in events {
                self.publish(event);
            }
        }
    }

    /// Sends what is buffered (bounded by `limit`), then closes the connection.
    pub async fn close(&self, limit: Duration) {
        let Some(sender) = &self.sender else {
            return;
        };
        let (done, closed) = oneshot::channel();
        let _ = tokio::time::timeout(limit, async {
            if sender.send(Command::Close(done)).await.is_ok() {
                let _ = closed.await;
            }
        })
        .await;
    }
}

struct PublishTask {
    nodes: Nodes,
    limit: Duration,
    exchange: String,
    name: String,
    live: Option<(Connection, Channel, usize)>,
    retry_at: Option<tokio::time::Instant>,
}

impl PublishTask {
    async fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        while let Some(command) = receiver.recv().await {
            match command {
                Command::Publish { key, body } => self.send(&key, &body).await,
                Command::Close(done) => {
                    self.disconnect().await;
                    let _ = done.send(());
                    return;
                }
            }
        }
        self.disconnect().await;
    }

    async fn send(&mut self, key: &str, body: &[u8]) {
        let dropped = |reason: &'static str| {
            metrics::counter!("conveyor_events_dropped_total", "reason" => reason).increment(1);
        };
        if self.live.is_none() {
            if self
                .retry_at
                .is_some_and(|at| tokio::time::Instant::now() < at)
            {
                dropped("broker_unavailable");
                return;
            }
            match self.connect().await {
                Ok(live) => {
                    self.live = Some(live);
                    self.retry_at = None;
                }
                Err(e) => {
                    tracing::warn!(connection = %self.name, error = %e, "the events publisher cannot reach the broker; dropping events for a while");
                    self.retry_at = Some(tokio::time::Instant::now() + RECONNECT_AFTER);
                    dropped("broker_unavailable");
                    return;
                }
            }
        }
        let Some((_, channel, node)) = &self.live else {
            return;
        };
        // Transient (delivery mode 1), not mandatory, no confirm: an event nobody
        // subscribes to is dropped by the exchange, which is the point.
        let published = bounded(
            self.limit,
            channel.basic_publish(
                self.exchange.as_str().into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_delivery_mode(1)
                    .with_content_type("application/json".into()),
            ),
        )
        .await;
        match published {
            Ok(_) => metrics::counter!("conveyor_events_published_total").increment(1),
            Err(e) => {
                tracing::warn!(connection = %self.name, error = %e, "an event could not be published; reconnecting");
                self.nodes.lost(*node);
                self.disconnect().await;
                dropped("broker_unavailable");
            }
        }
    }

    async fn connect(&self) -> Result<(Connection, Channel, usize), Error> {
        let (connection, node) = self.nodes.connect(&self.name).await?;
        let channel = bounded(self.limit, connection.create_channel()).await?;
        declare_exchange(&channel, &self.exchange, self.limit).await?;
        Ok((connection, channel, node))
    }

    async fn disconnect(&mut self) {
        if let Some((connection, channel, _)) = self.live.take() {
            close_channel(&channel, self.limit).await;
            close_connection(&connection, self.limit).await;
        }
    }
}

/// What a subscriber is told.
#[derive(Debug, Clone)]
pub enum Signal {
    /// A transition of the job (or of a job the firehose lets through).
    Event(Arc<JobEvent>),
    /// Events may have been missed (the subscription was re-established after a loss,
    /// became live for the first time, or this subscriber fell behind): read the
    /// ledger.
    Resync,
}

type JobSenders = HashMap<JobId, Vec<(u64, mpsc::Sender<Arc<JobEvent>>, Arc<Notify>)>>;

struct Hub {
    settings: BrokerSettings,
    topology: Topology,
    name: String,
    jobs: Mutex<JobSenders>,
    all: broadcast::Sender<Arc<JobEvent>>,
    /// Moves on each time the broker subscription becomes live.
    generation: watch::Sender<u64>,
    started: AtomicBool,
    next_id: AtomicU64,
    stop: Notify,
    stopped: AtomicBool,
}

/// An intake's subscription to every event of its namespace, shared by its streams
/// (see the module docs). Cloning is cheap.
#[derive(Clone)]
pub struct Subscriptions {
    hub: Arc<Hub>,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions")
            .field("name", &self.hub.name)
            .finish_non_exhaustive()
    }
}

impl Subscriptions {
    /// A subscription on connection `name`, opened when the first subscriber comes.
    pub fn new(settings: BrokerSettings, topology: Topology, name: impl Into<String>) -> Self {
        let (all, _) = broadcast::channel(FIREHOSE_BUFFER);
        let (generation, _) = watch::channel(0);
        Self {
            hub: Arc::new(Hub {
                settings,
                topology,
                name: name.into(),
                jobs: Mutex::new(HashMap::new()),
                all,
                generation,
                started: AtomicBool::new(false),
                next_id: AtomicU64::new(0),
                stop: Notify::new(),
                stopped: AtomicBool::new(false),
            }),
        }
    }

    fn ensure_started(&self) {
        if !self.hub.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(consume(Arc::clone(&self.hub)));
        }
    }

    /// Whether the broker subscription is live now (a stream opened while it is not
    /// still starts from the ledger and is told to re-read it once it is).
    pub fn generation(&self) -> u64 {
        *self.hub.generation.borrow()
    }

    /// Subscribes to job `id`'s events. Subscribe first, then read the ledger: every
    /// transition committed after that read arrives here, or a [`Signal::Resync`] does.
    pub fn job(&self, id: JobId) -> JobSubscription {
        self.ensure_started();
        let (sender, receiver) = mpsc::channel(PER_JOB_BUFFER);
        let lagged = Arc::new(Notify::new());
        let key = self.hub.next_id.fetch_add(1, Ordering::Relaxed);
        self.hub
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(id)
            .or_default()
            .push((key, sender, Arc::clone(&lagged)));
        let mut generation = self.hub.generation.subscribe();
        generation.mark_unchanged();
        JobSubscription {
            receiver,
            lagged,
            generation,
            registration: Registration {
                hub: Arc::clone(&self.hub),
                id,
                key,
            },
        }
    }

    /// Subscribes to every event (an operator's firehose; the caller filters).
    pub fn all(&self) -> FirehoseSubscription {
        self.ensure_started();
        let mut generation = self.hub.generation.subscribe();
        generation.mark_unchanged();
        FirehoseSubscription {
            receiver: self.hub.all.subscribe(),
            generation,
        }
    }

    /// Stops the subscription (closing its connection); subscribers see no more events.
    pub fn close(&self) {
        self.hub.stopped.store(true, Ordering::Release);
        self.hub.stop.notify_waiters();
        self.hub.stop.notify_one();
    }
}

struct Registration {
    hub: Arc<Hub>,
    id: JobId,
    key: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut jobs = self
            .hub
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(senders) = jobs.get_mut(&self.id) {
            senders.retain(|(key, _, _)| *key != self.key);
            if senders.is_empty() {
                jobs.remove(&self.id);
            }
        }
    }
}

/// One job's events; unsubscribes when dropped.
pub struct JobSubscription {
    receiver: mpsc::Receiver<Arc<JobEvent>>,
    lagged: Arc<Notify>,
    generation: watch::Receiver<u64>,
    registration: Registration,
}

impl std::fmt::Debug for JobSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobSubscription")
            .field("job", &self.registration.id)
            .finish_non_exhaustive()
    }
}

impl JobSubscription {
    /// The next signal. Pending forever once the subscription stopped (callers bound
    /// their waits).
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            biased;
            changed = self.generation.changed() => {
                if changed.is_err() {
                    std::future::pending::<()>().await;
                }
                Signal::Resync
            }
            () = self.lagged.notified() => Signal::Resync,
            event = self.receiver.recv() => match event {
                Some(event) => Signal::Event(event),
                None => std::future::pending().await,
            },
        }
    }
}

/// Every event of the namespace, for one firehose stream.
pub struct FirehoseSubscription {
    receiver: broadcast::Receiver<Arc<JobEvent>>,
    generation: watch::Receiver<u64>,
}

impl std::fmt::Debug for FirehoseSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirehoseSubscription")
            .finish_non_exhaustive()
    }
}

/// What a firehose subscriber gets.
#[derive(Debug, Clone)]
pub enum FirehoseSignal {
    /// An event.
    Event(Arc<JobEvent>),
    /// This many events were skipped because the subscriber fell behind, or (0) the
    /// subscription was re-established and events may have been missed meanwhile.
    Missed(u64),
}

impl FirehoseSubscription {
    /// The next event or gap. Pending forever once the subscription stopped.
    pub async fn next(&mut self) -> FirehoseSignal {
        tokio::select! {
            biased;
            changed = self.generation.changed() => {
                if changed.is_err() {
                    std::future::pending::<()>().await;
                }
                FirehoseSignal::Missed(0)
            }
            event = self.receiver.recv() => match event {
                Ok(event) => FirehoseSignal::Event(event),
                Err(broadcast::error::RecvError::Lagged(n)) => FirehoseSignal::Missed(n),
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            },
        }
    }
}

/// The subscription's task: connect, declare, consume and fan out; after a loss,
/// reconnect with backoff and jitter, and move the generation on once live again.
async fn consume(hub: Arc<Hub>) {
    let nodes = Nodes::new(&hub.settings);
    let limit = hub.settings.connect_timeout();
    let mut delay = Duration::from_millis(100);
    while !hub.stopped.load(Ordering::Acquire) {
        let outcome = tokio::select! {
            () = hub.stop.notified() => break,
            outcome = subscribe_once(&hub, &nodes, limit) => outcome,
        };
        match outcome {
            Ok(()) => delay = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(connection = %hub.name, error = %e, "the event subscription was lost; subscribing again");
                metrics::counter!("conveyor_reconnects_total", "component" => "events")
                    .increment(1);
                let jittered = delay.mul_f64(0.5 + fastrand::f64() / 2.0);
                tokio::select! {
                    () = hub.stop.notified() => break,
                    () = tokio::time::sleep(jittered) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One life of the subscription: returns when the connection ends.
async fn subscribe_once(hub: &Hub, nodes: &Nodes, limit: Duration) -> Result<(), Error> {
    let (connection, node) = nodes.connect(&hub.name).await?;
    let result = serve(hub, &connection, limit).await;
    if result.is_err() {
        nodes.lost(node);
    }
    close_connection(&connection, limit).await;
    result
}

async fn serve(hub: &Hub, connection: &Connection, limit: Duration) -> Result<(), Error> {
    let channel = bounded(limit, connection.create_channel()).await?;
    let result = match declare(hub, &channel, limit).await {
        Ok(consumer) => fan_out(hub, consumer).await,
        Err(e) => Err(e),
    };
    close_channel(&channel, limit).await;
    result
}

/// Declares the namespace's durable topic exchange for events (the publisher and the
/// subscription both do: whichever comes first creates it).
async fn declare_exchange(channel: &Channel, exchange: &str, limit: Duration) -> Result<(), Error> {
    bounded(
        limit,
        channel.exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
}

/// Declares the exchange and this process's bounded queue, binds it to every event,
/// and starts consuming.
async fn declare(hub: &Hub, channel: &Channel, limit: Duration) -> Result<lapin::Consumer, Error> {
    let exchange = hub.topology.events_exchange();
    declare_exchange(channel, &exchange, limit).await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-max-length".into(),
        AMQPValue::LongInt(SUBSCRIPTION_MAX_LENGTH),
    );
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("drop-head".into()),
    );
    let queue = bounded(
        limit,
        channel.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            args,
        ),
    )
    .await?;
    bounded(
        limit,
        channel.queue_bind(
            queue.name().clone(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    bounded(
        limit,
        channel.basic_qos(SUBSCRIPTION_PREFETCH, BasicQosOptions::default()),
    )
    .await?;
    bounded(
        limit,
        channel.basic_consume(
            queue.name().clone(),
            format!("{}-events", hub.name).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

/// Hands each event to its subscribers until the consumer ends; acks in `multiple`
/// runs.
async fn fan_out(hub: &Hub, mut consumer: lapin::Consumer) -> Result<(), Error> {
    // Live: every subscriber re-reads the ledger, so nothing published while the
    // subscription was away (or before it first came) is missed.
    hub.generation.send_modify(|g| *g += 1);
    tracing::info!(connection = %hub.name, "event subscription live");
    let mut unacked = 0u64;
    let mut pending_ack = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            () = hub.stop.notified() => break Ok(()),
            _ = tick.tick() => {
                if let Some(acker) = pending_ack.take() {
                    ack(acker).await?;
                    unacked = 0;
                }
            }
            next = consumer.next() => {
                let Some(delivery) = next else {
                    break Err(Error::Unavailable(Duration::ZERO));
                };
                let delivery = delivery?;
                match serde_json::from_slice::<JobEvent>(&delivery.data) {
                    Ok(event) => dispatch(hub, Arc::new(event)),
                    Err(e) => tracing::debug!(error = %e, "an undecodable event was skipped"),
                }
                unacked += 1;
                if unacked >= ACK_EVERY {
                    ack(delivery.acker).await?;
                    unacked = 0;
                    pending_ack = None;
                } else {
                    pending_ack = Some(delivery.acker);
                }
            }
        }
    }
}

async fn ack(acker: lapin::Acker) -> Result<(), Error> {
    bounded(
        crate::SETTLE_TIMEOUT,
        acker.ack(BasicAckOptions { multiple: true }),
    )
    .await
    .map(drop)
}

fn dispatch(hub: &Hub, event: Arc<JobEvent>) {
    let _ = hub.all.send(Arc::clone(&event));
    let jobs = hub
        .jobs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(senders) = jobs.get(&event.id) {
        for (_, sender, lagged) in senders {
            if sender.try_send(Arc::clone(&event)).is_err() {
                // Behind: the subscriber re-reads the ledger instead.
                lagged.notify_one();
            }
        }
    }
}
