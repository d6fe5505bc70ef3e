//! Notes confirmed publishes in the ledger (`published_at`), late and in bulk.
//!
//! The note exists for one case: a job whose publish was never confirmed (the broker
//! was down, or intake died before the confirm) must be published again by the
//! dispatcher. Writing it at once would cost every job one more row version. Waiting
//! `producer.mark_published_after_ms` first means a job a worker has already claimed by
//! then needs no note (the statement skips it), and the jobs still waiting in a backlog
//! are noted many per statement; what is pending when the intake stops is noted then.
//! A note that never lands (a crash, a database error)
//! only makes the dispatcher publish the job again after
//! `dispatcher.unconfirmed_after_ms`, and the worker's claim skips the duplicate.

use std::time::Duration;

use jobs::JobId;
use store::Store;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Most ids noted in one statement.
const CHUNK: usize = 5_000;

/// Confirmed publishes waiting to be noted.
const QUEUE: usize = 100_000;

/// How long [`PublishMarks::flush`] may take.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

enum Note {
    /// A publish was confirmed at this instant.
    Confirmed(JobId, Instant),
    /// Note everything pending now, then answer.
    Flush(oneshot::Sender<()>),
}

/// Handle to the noting task; it ends when every handle is dropped.
#[derive(Debug, Clone)]
pub struct PublishMarks {
    confirmed: mpsc::Sender<Note>,
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
            if self.confirmed.send(Note::Confirmed(id, now)).await.is_err() {
                return;
            }
        }
    }

    /// Notes everything pending now (at shutdown), waiting at most a few seconds.
    pub async fn flush(&self) {
        let (done, noted) = oneshot::channel();
        let flushed = async {
            if self.confirmed.send(Note::Flush(done)).await.is_ok() {
                let _ = noted.await;
            }
        };
        if tokio::time::timeout(FLUSH_LIMIT, flushed).await.is_err() {
            tracing::warn!(
                "could not note every confirmed publish before stopping; the dispatcher will publish those jobs again"
            );
        }
    }
}

async fn run(store: Store, after: Duration, mut queue: mpsc::Receiver<Note>) {
    let mut pending: Vec<(JobId, Instant)> = Vec::new();
    loop {
        let mut flushed = None;
        if pending.is_empty() {
            match queue.recv().await {
                Some(Note::Confirmed(id, at)) => pending.push((id, at)),
                Some(Note::Flush(done)) => {
                    let _ = done.send(());
                    continue;
                }
                None => return,
            }
        }
        // Wait until the oldest note is due, taking in what arrives meanwhile.
        let due = pending[0].1 + after;
        let closed = loop {
            tokio::select! {
                () = tokio::time::sleep_until(due) => break false,
                next = queue.recv() => match next {
                    Some(Note::Confirmed(id, at)) => pending.push((id, at)),
                    Some(Note::Flush(done)) => {
                        flushed = Some(done);
                        break false;
                    }
                    None => break true,
                },
            }
        };
        let now = Instant::now();
        let ready = if closed || flushed.is_some() {
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
        if let Some(done) = flushed {
            let _ = done.send(());
        }
        if closed && pending.is_empty() {
            return;
        }
    }
}
