//! One delivery, start to ack: decode the envelope, claim the job row, run the kind's
//! handler in a task of its own under a timeout (a panic is a failed attempt, not a dead
//! worker), commit the outcome and the attempt row, and only then say "ack".

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jobs::{Envelope, JobId, JobMeta, JobState, Outcome, Registry, WorkerId};
use store::{Claim, ClaimedJob, Ending, Settled, Settlement, Store};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::batch::Batcher;
use crate::decide::{RunResult, decide};
use crate::retry::until_ok;

pub use broker::Disposition;

/// Runs deliveries for one worker process.
#[derive(Clone)]
pub struct Executor {
    store: Store,
    registry: Registry,
    worker: WorkerId,
    /// Fires when in-flight work must be given up (the shutdown grace is over).
    abandon: CancellationToken,
    /// Coalesces claims and completions across concurrent deliveries.
    batcher: Batcher,
    /// Where the live events of this executor's transitions go, after their commits.
    events: broker::Events,
    /// Deliveries in this process per job id, from before the claim until the outcome is
    /// written: a claim retried after a lost reply may take the job back only when no
    /// other delivery of it is in this process (which may be the one running it).
    handling: Arc<Mutex<HashMap<JobId, usize>>>,
}

/// Counts one delivery of a job in [`Executor::handling`] while it lives.
struct Handling<'a> {
    map: &'a Mutex<HashMap<JobId, usize>>,
    id: JobId,
}

impl<'a> Handling<'a> {
    fn enter(map: &'a Mutex<HashMap<JobId, usize>>, id: JobId) -> Self {
        // A poisoned lock only means another delivery panicked while counting.
        *map.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_default() += 1;
        Self { map, id }
    }

    /// True when this is the only delivery of the job in the process.
    fn alone(&self) -> bool {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&self.id)
            .is_some_and(|n| *n == 1)
    }
}

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.id);
            }
        }
    }
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor for `worker`. When `abandon` fires, running deliveries stop waiting
    /// and are left unacked.
    pub fn new(
        store: Store,
        registry: Registry,
        worker: WorkerId,
        abandon: CancellationToken,
    ) -> Self {
        Self::with_events(store, registry, worker, abandon, broker::Events::disabled())
    }

    /// [`Executor::new`], publishing the live event of each transition it commits to
    /// `events`.
    pub fn with_events(
        store: Store,
        registry: Registry,
        worker: WorkerId,
        abandon: CancellationToken,
        events: broker::Events,
    ) -> Self {
        let batcher = Batcher::start(store.clone(), worker, events.clone());
        Self {
            store,
            registry,
            worker,
            abandon,
            batcher,
            events,
            handling: Arc::default(),
        }
    }

    /// After a claim whose reply was lost, the job found running: when this worker
    /// holds it (the lost claim committed), the claimed job, read back; otherwise what
    /// to do with the delivery (ack: someone else holds it; abandon: shutting down).
    async fn held_claim(&self, id: JobId) -> Result<ClaimedJob, Disposition> {
        match until_ok(
            "reading back a claim whose reply was lost",
            &self.abandon,
            || self.store.held_by(id, self.worker),
        )
        .await
        {
            None => Err(Disposition::Abandon),
            Some(Ok(Some(job))) => {
                tracing::warn!("the claim committed although its reply was lost; running the job");
                Ok(job)
            }
            Some(Ok(None)) => {
                metrics::counter!("conveyor_duplicate_deliveries_total").increment(1);
                tracing::debug!("duplicate delivery of a job another worker holds; skipping");
                Err(Disposition::Ack)
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "reading back the claim failed");
                Err(Disposition::Abandon)
            }
        }
    }

    /// Runs one delivery's message body to a disposition, holding `slot` (one of its
    /// queue's running slots) while the job is claimed and its handler runs; the slot is
    /// free again while the outcome is written, so the next job starts meanwhile.
    pub async fn execute(&self, body: &[u8], slot: OwnedSemaphorePermit) -> Disposition {
        let envelope = match Envelope::from_bytes(body) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable message; dead-lettering it");
                return Disposition::Reject;
            }
        };
        let span = tracing::info_span!(
            "job",
            job_id = %envelope.id,
            kind = %envelope.kind,
            queue = %envelope.queue,
            attempt = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            parent_span_id = tracing::field::Empty,
        );
        // An OpenTelemetry parent must be set before the span starts.
        #[cfg(feature = "otlp")]
        if let Some(parent) = envelope
            .traceparent
            .as_deref()
            .and_then(jobs::TraceContext::parse)
        {
            parent.set_as_parent_of(&span);
        }
        self.execute_envelope(envelope, slot).instrument(span).await
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one attempt's life in order (claim, run, decide, settle, ack); each step's failure decides the disposition where it happens"
    )]
    async fn execute_envelope(
        &self,
        envelope: Envelope,
        slot: OwnedSemaphorePermit,
    ) -> Disposition {
        let handling = Handling::enter(&self.handling, envelope.id);
        // Set when a claim failed in a way that may have committed (the reply was lost).
        let in_doubt = AtomicBool::new(false);
        let claim = until_ok("claiming the job", &self.abandon, || {
            let claim = self.batcher.claim(envelope.id);
            let in_doubt = &in_doubt;
            async move {
                let result = claim.await;
                if result.as_ref().is_err_and(store::Error::is_transient) {
                    in_doubt.store(true, Ordering::Relaxed);
                }
                result
            }
        })
        .await;
        let job = match claim {
            None => return Disposition::Abandon,
            Some(Err(e)) => {
                // Not transient (a bug or a corrupt row): leave it for redelivery
                // rather than guess; the delivery limit ends a loop.
                tracing::error!(error = %e, "claim failed");
                return Disposition::Abandon;
            }
            Some(Ok(Claim::Claimed(job))) => job,
            Some(Ok(Claim::Skip(JobState::Running)))
                if in_doubt.load(Ordering::Relaxed) && handling.alone() =>
            {
                match self.held_claim(envelope.id).await {
                    Ok(job) => job,
                    Err(disposition) => return disposition,
                }
            }
            Some(Ok(Claim::Skip(state))) => {
                // A redelivery (its first delivery's ack was lost with its connection, or
                // the dispatcher republished an unconfirmed publish): settled already.
                metrics::counter!("conveyor_duplicate_deliveries_total").increment(1);
                tracing::debug!(%state, "duplicate delivery of a job that is not enqueued; skipping");
                return Disposition::Ack;
            }
            Some(Ok(Claim::Missing)) => {
                tracing::warn!("message names no job; dead-lettering it");
                return Disposition::Reject;
            }
        };
        let span = tracing::Span::current();
        span.record("attempt", job.attempt);
        // Each attempt is a child of the span that enqueued the job.
        if let Some(parent) = job
            .traceparent
            .as_deref()
            .and_then(jobs::TraceContext::parse)
        {
            span.record("trace_id", parent.trace_id.as_str());
            span.record("parent_span_id", parent.span_id.as_str());
            // With an OpenTelemetry exporter the span has its own id; otherwise make one.
            #[cfg(feature = "otlp")]
            let own = jobs::TraceContext::of_span(&span)
                .map_or_else(jobs::trace::new_span_id, |c| c.span_id);
            #[cfg(not(feature = "otlp"))]
            let own = jobs::trace::new_span_id();
            span.record("span_id", own.as_str());
        }
        let labels = [("kind", job.kind.clone()), ("queue", job.queue.clone())];
        metrics::counter!("conveyor_jobs_started_total", &labels).increment(1);
        let waited = (chrono::Utc::now() - envelope.enqueued_at)
            .to_std()
            .unwrap_or_default();
        metrics::histogram!("conveyor_job_queue_wait_seconds", &labels)
            .record(waited.as_secs_f64());
        let in_flight = metrics::gauge!("conveyor_worker_in_flight", "queue" => job.queue.clone());
        in_flight.increment(1.0);
        let started = std::time::Instant::now();
        let (run, policy) = self.run(&job).await;
        drop(slot);
        metrics::histogram!("conveyor_job_run_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        let outcome = decide(run, job.attempt, job.max_attempts, &policy, fastrand::f64());
        let elapsed_ms = started.elapsed().as_millis() as u64;
        // Successes are the bulk of the work and are counted in metrics; each is logged
        // at debug (`RUST_LOG=info,worker=debug`), everything else at info.
        let completed = matches!(outcome, Outcome::Completed { .. });
        if completed {
            tracing::debug!(outcome = %outcome.attempt_outcome(), elapsed_ms, "attempt finished");
        } else {
            tracing::info!(
                outcome = %outcome.attempt_outcome(),
                elapsed_ms,
                "attempt finished"
            );
        }
        let outcome_counter = match &outcome {
            Outcome::Completed { .. } => "conveyor_jobs_completed_total",
            Outcome::Retry { .. } => "conveyor_jobs_retried_total",
            Outcome::Dead { .. } => "conveyor_jobs_dead_total",
            Outcome::Snooze { .. } => "conveyor_jobs_snoozed_total",
        };
        let settlement = Settlement {
            id: job.id,
            ending: Ending::Attempt {
                attempt: job.attempt,
                worker: self.worker,
                started_at: Some(job.started_at),
                outcome,
            },
        };
        let recorded = until_ok("recording the outcome", &self.abandon, || async {
            // Successes, the bulk of the work, are written in batches; the rest one by one.
            if completed {
                self.batcher.complete(settlement.clone()).await
            } else {
                let report = self.store.settle(std::slice::from_ref(&settlement)).await?;
                self.events.publish_all(&report.events);
                report
                    .answers
                    .into_iter()
                    .next()
                    .ok_or_else(|| store::Error::Corrupt("a settlement went unanswered".into()))
            }
        })
        .await;
        in_flight.decrement(1.0);
        match recorded {
            None => Disposition::Abandon,
            Some(Ok(Settled::Recorded(_))) => {
                metrics::counter!(outcome_counter, &labels).increment(1);
                Disposition::Ack
            }
            Some(Ok(Settled::AlreadyCompleted)) => {
                tracing::debug!("the handler completed the job in its own transaction");
                metrics::counter!("conveyor_jobs_completed_total", &labels).increment(1);
                Disposition::Ack
            }
            Some(Ok(Settled::TakenOver(state))) => {
                tracing::warn!(
                    state = state.map_or("gone", |s| s.as_str()),
                    "job was taken over (rescued or cancelled) while running; outcome dropped"
                );
                Disposition::Ack
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "recording the outcome failed");
                Disposition::Abandon
            }
        }
    }

    async fn run(&self, job: &ClaimedJob) -> (RunResult, jobs::RetryPolicy) {
        let dispatch = match self.registry.dispatch(&job.kind) {
            Ok(dispatch) => dispatch,
            Err(unknown) => {
                return (
                    RunResult::UnknownKind(unknown.0),
                    jobs::RetryPolicy::default(),
                );
            }
        };
        let policy = dispatch.spec.options.retry;
        let limit = job.timeout.unwrap_or(dispatch.spec.options.timeout);
        let meta = JobMeta {
            id: job.id,
            kind: job.kind.clone(),
            queue: job.queue.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            created_at: job.created_at,
            worker: self.worker,
        };
        let future = dispatch.run(meta, job.args.clone());
        let task = tokio::spawn(tokio::time::timeout(limit, future).in_current_span());
        let result = match task.await {
            Ok(Ok(returned)) => RunResult::Returned(returned),
            Ok(Err(_elapsed)) => RunResult::TimedOut(limit),
            Err(join) if join.is_panic() => RunResult::Panicked(panic_message(join.into_panic())),
            Err(join) => RunResult::Panicked(format!("handler task ended: {join}")),
        };
        (result, policy)
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

/// How long an ack or reject may take before the channel is presumed dead.
pub const ACK_TIMEOUT: Duration = broker::SETTLE_TIMEOUT;
