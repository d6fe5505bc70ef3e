//! Notes confirmed publishes in the ledger (`published_at`), late and in bulk.
//!
//! The note exists for one case: a job whose publish was never confirmed (the broker
//! was down, or intake died before the confirm) must be published again by the
//! dispatcher. Writing it at once would cost every job one more row version. Waiting
//! `producer.mark_published_after_ms` first means a job a worker has already claimed by
//! then needs no note (the statement skips it), and the jobs still waiting in a backlog
//! are noted many per statement. A note that never lands (a crash, a database error)
//! only makes the dispatcher publish the job again after
//! `dispatcher.unconfirmed_after_ms`, and the worker's claim skips the duplicate.

use std::time::Duration;

use jobs::JobId;
use store::Store;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Most ids noted in one statement.
const CHUNK: usize = 5_000;

/// Confirmed publishes waiting to be noted.
const QUEUE: usize = 100_000;

/// Handle to the noting task; it ends when every handle is dropped.
#[derive(Debug, Clone)]
pub struct PublishMarks {
    confirmed: mpsc::Sender<(JobId, Instant)>,
}

impl PublishMarks {
    /// Starts the task.
    pub fn start(store: Store, after: Duration) -> Self {
        let (confirmed, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, after, queue));
        Self { confirmed }
    }

    /// Queues the note for `ids`; waits only while the queue is full.
    pub async fn confirmed(&self, ids: Vec<JobId>) {
        let now = Instant::now();
        for id in ids {
            if self.confirmed.send((id, now)).await.is_err() {
                return;
            }
        }
    }
}

async fn run(store: Store, after: Duration, mut queue: mpsc::Receiver<(JobId, Instant)>) {
    let mut pending: Vec<(JobId, Instant)> = Vec::new();
    loop {
        if pending.is_empty() {
            match queue.recv().await {
                Some(first) => pending.push(first),
                None => return,
            }
        }
        // Wait until the oldest note is due, taking in what arrives meanwhile.
        let due = pending[0].1 + after;
        let closed = loop {
            tokio::select! {
                () = tokio::time::sleep_until(due) => break false,
                next = queue.recv() => match next {
                    Some(next) => pending.push(next),
                    None => break true,
                },
            }
        };
        let now = Instant::now();
        let ready = if closed {
            pending.len()
        } else {
            pending.partition_point(|(_, at)| *at + after <= now)
        };
        let ids: Vec<JobId> = pending.drain(..ready).map(|(id, _)| id).collect();
        for chunk in ids.chunks(CHUNK) {
            if let Err(e) = store.mark_published(chunk).await {
                tracing::warn!(error = %e, jobs = chunk.len(), "could not note confirmed publishes; the dispatcher will publish those jobs again");
            }
        }
        if closed && pending.is_empty() {
            return;
        }
    }
}
