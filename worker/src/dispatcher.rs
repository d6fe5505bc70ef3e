//! The dispatcher publishes what is due: scheduled jobs whose `run_at` came, retries
//! whose backoff elapsed, jobs a handler enqueued in its transaction, and enqueued jobs
//! whose publish was never confirmed (the producer crashed or the broker was down at
//! intake). It also rescues running jobs whose worker stopped heartbeating, and fires
//! schedules' slots ([`crate::schedules`]), waking at the next slot.
//!
//! Each round takes due rows with `FOR UPDATE SKIP LOCKED` and commits them `enqueued`
//! (unconfirmed) before publishing, then marks the confirmed ones, so any number of
//! dispatchers can run at once without publishing a job twice, and a worker that gets
//! the message immediately finds the job ready to claim. It wakes on
//! `NOTIFY conveyor_due` (sent by transactions that make work due now), at the next
//! `run_at`, or every poll interval, whichever comes first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::Publisher;
use futures_util::future::join_all;
use jobs::Envelope;
use store::{DueListener, Store, Wake};
use tokio_util::sync::CancellationToken;

use crate::settings::DispatcherSettings;

/// Publishes due work.
pub struct Dispatcher {
    settings: DispatcherSettings,
    lost_after: Duration,
    store: Store,
    publisher: Arc<Publisher>,
    /// Where the events of its transitions (due → `enqueued`, rescues) go.
    events: broker::Events,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher that rescues jobs whose worker was silent for `lost_after`.
    pub fn new(
        settings: DispatcherSettings,
        lost_after: Duration,
        store: Store,
        publisher: Arc<Publisher>,
    ) -> Self {
        Self {
            settings,
            lost_after,
            store,
            publisher,
            events: broker::Events::disabled(),
        }
    }

    /// Publishes the live event of each transition it commits to `events`.
    #[must_use]
    pub fn with_events(mut self, events: broker::Events) -> Self {
        self.events = events;
        self
    }

    /// Runs one round: publishes up to a batch of due jobs. Returns how many were taken.
    ///
    /// # Errors
    /// When the database fails (nothing is lost: the jobs stay due).
    pub async fn publish_due(&self) -> Result<usize, store::Error> {
        let due = self
            .store
            .take_due(
                self.settings.batch_size.max(1),
                Duration::from_millis(self.settings.unconfirmed_after_ms),
            )
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        // Committed: the events go out before the jobs' messages, so a worker's
        // `running` follows this process's `enqueued` on the events exchange.
        if self.events.enabled() {
            for job in &due {
                if let Some(event) = job.event() {
                    self.events.publish(&event);
                }
            }
        }
        let now = chrono::Utc::now();
        let publishes = due.iter().map(|job| {
            let envelope = Envelope {
                id: job.id,
                kind: job.kind.clone(),
                queue: job.queue.clone(),
                args: job.args.clone(),
                enqueued_at: now,
                traceparent: job.traceparent.clone(),
            };
            let publisher = Arc::clone(&self.publisher);
            async move {
                let result = publisher
                    .publish(&envelope, job.traceparent.as_deref())
                    .await;
                (job.id, result)
            }
        });
        let mut published = Vec::with_capacity(due.len());
        let mut failed = 0usize;
        for (id, result) in join_all(publishes).await {
            match result {
                Ok(()) => published.push(id),
                Err(e) => {
                    failed += 1;
                    tracing::debug!(job_id = %id, error = %e, "publish failed; the job is published again later");
                }
            }
        }
        if failed > 0 {
            tracing::warn!(
                failed,
                published = published.len(),
                "some due jobs could not be published; retrying after dispatcher.unconfirmed_after_ms"
            );
        }
        metrics::counter!("conveyor_dispatcher_published_total").increment(published.len() as u64);
        self.store.mark_published(&published).await?;
        Ok(due.len())
    }

    /// Runs until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms.max(10));
        let rescue_every =
            (self.lost_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        let mut last_rescue = Instant::now();
        // Heartbeats missed while the database was away say nothing about whether a
        // worker died: judge orphans only after seeing the database up for a full
        // `lost_after` window, so an outage does not make every running job look lost.
        let mut db_up_since = Instant::now();
        let mut listener: Option<DueListener> = None;
        let mut failures = 0u32;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            if listener.is_none() {
                listener = self.listen().await;
            }
            let mut full = false;
            let grace = Duration::from_millis(self.settings.schedule_grace_ms);
            if let Err(e) = crate::schedules::fire_due(&self.store, grace).await {
                failures += 1;
                tracing::warn!(error = %e, "firing schedules failed");
            }
            match self.publish_due().await {
                Ok(n) => {
                    failures = 0;
                    full = n >= self.settings.batch_size as usize;
                    if n > 0 {
                        tracing::debug!(published = n, "dispatched due jobs");
                    }
                }
                Err(e) => {
                    failures += 1;
                    db_up_since = Instant::now();
                    tracing::warn!(error = %e, "dispatcher round failed");
                }
            }
            if last_rescue.elapsed() >= rescue_every && db_up_since.elapsed() >= self.lost_after {
                last_rescue = Instant::now();
                match self.store.rescue_orphans(self.lost_after).await {
                    Ok(events) if events.is_empty() => {}
                    Ok(events) => {
                        self.events.publish_all(&events);
                        let n = events.len() as u64;
                        metrics::counter!("conveyor_jobs_rescued_total").increment(n);
                        tracing::warn!(
                            rescued = n,
                            "rescued jobs whose worker stopped heartbeating"
                        );
                    }
                    Err(e) => {
                        db_up_since = Instant::now();
                        tracing::warn!(error = %e, "orphan rescue failed");
                    }
                }
            }
            if full {
                continue;
            }
            let mut wait = match self.store.next_due_in().await {
                Ok(Some(next)) => next.min(poll),
                _ => poll,
            };
            if let Ok(Some(slot)) = self.store.next_slot_in().await {
                wait = wait.min(slot);
            }
            if failures > 0 {
                wait = poll.max(Duration::from_millis(250 * u64::from(failures.min(20))));
            }
            let wait = wait.max(Duration::from_millis(5));
            tokio::select! {
                () = shutdown.cancelled() => return,
                woke = wait_for_notify(listener.as_mut(), wait) => {
                    if !woke {
                        // The listener broke; make a new one next round.
                        listener = None;
                    }
                }
            }
        }
    }

    async fn listen(&self) -> Option<DueListener> {
        match tokio::time::timeout(Duration::from_secs(5), DueListener::connect(&self.store)).await
        {
            Ok(Ok(listener)) => Some(listener),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot listen for due work; polling");
                None
            }
            Err(_) => None,
        }
    }
}

/// Waits up to `wait` for a wake-up. `false` when the listener broke.
async fn wait_for_notify(listener: Option<&mut DueListener>, wait: Duration) -> bool {
    let Some(listener) = listener else {
        tokio::time::sleep(wait).await;
        return true;
    };
    matches!(
        listener.wait(wait).await,
        Ok(Wake::Notified | Wake::TimedOut)
    )
}
