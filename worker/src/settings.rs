//! Worker and dispatcher settings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a worker process consumes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Queue → concurrency (jobs of that queue running at once). Empty means: every
    /// queue the registered kinds default to, at `concurrency`.
    pub queues: BTreeMap<String, u16>,
    /// Concurrency of queues listed without one, and of the default queues.
    pub concurrency: u16,
    /// Messages a queue's channel may hold per running slot (the AMQP prefetch is
    /// concurrency × this). Above 1, the next messages are already here when a job
    /// ends, at the cost of holding them while this worker is busy.
    pub prefetch_multiplier: u16,
    /// On shutdown, how long in-flight jobs may take to finish before they are left
    /// unacked for redelivery.
    pub grace_ms: u64,
    /// How often the worker records that it is alive.
    pub heartbeat_interval_ms: u64,
    /// A running job whose worker has not heartbeat for this long is rescued.
    pub lost_after_ms: u64,
    /// Name shown in logs and in the broker's connection list (default: generated).
    pub name: Option<String>,
    /// Registers the misbehaving `test.*` kinds (for Conveyor's own tests only).
    pub test_kinds: bool,
    /// Where the worker serves `/metrics`, `/healthz` and `/readyz` (off when unset).
    pub listen: Option<std::net::SocketAddr>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            queues: BTreeMap::new(),
            concurrency: 16,
            prefetch_multiplier: 4,
            grace_ms: 30_000,
            heartbeat_interval_ms: 5_000,
            lost_after_ms: 30_000,
            name: None,
            test_kinds: false,
            listen: None,
        }
    }
}

impl WorkerSettings {
    /// The AMQP prefetch of a queue running `concurrency` jobs at once.
    pub fn prefetch(&self, concurrency: u16) -> u16 {
        concurrency.saturating_mul(self.prefetch_multiplier.max(1))
    }

    /// The shutdown grace period.
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms)
    }

    /// The heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.max(1))
    }

    /// The orphan threshold.
    pub fn lost_after(&self) -> Duration {
        Duration::from_millis(self.lost_after_ms)
    }
}

/// How the dispatcher publishes due work.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatcherSettings {
    /// Whether this process runs a dispatcher (many may; they never double-publish).
    pub enabled: bool,
    /// Longest sleep between scans when nothing wakes it.
    pub poll_interval_ms: u64,
    /// Jobs published per scan, at most.
    pub batch_size: u32,
    /// An enqueued job whose publish was not confirmed for this long is published
    /// again (the producer crashed, or the broker was down at intake).
    pub unconfirmed_after_ms: u64,
    /// A schedule's slot seen at most this late is on time and fires whatever the
    /// schedule's `catch_up`; a later one is missed unless `catch_up` fires it.
    pub schedule_grace_ms: u64,
}

impl Default for DispatcherSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval_ms: 1_000,
            batch_size: 500,
            unconfirmed_after_ms: 10_000,
            schedule_grace_ms: 60_000,
        }
    }
}
