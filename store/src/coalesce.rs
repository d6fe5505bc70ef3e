//! Coalesces concurrent requests for the same kind of write into one statement, so a
//! busy process pays one commit per batch instead of one per request (River's batch
//! completer and the group commit of databases do the same). A batch is whatever is
//! already waiting when the previous statement returns: there is no timer, so an idle
//! process adds no latency, and a loaded one batches as much as the load brings.
//!
//! The intake groups the inserts of concurrent single-job requests; workers group their
//! claims and completions.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::Error;

/// Most requests coalesced into one statement.
pub const MAX_BATCH: usize = 512;

/// How long one batched statement may take (the pool's own timeouts apply inside).
const STATEMENT_LIMIT: Duration = Duration::from_secs(60);

type Reply<R> = oneshot::Sender<Result<R, Error>>;

/// A handle that submits requests to one coalescing task. Cloning it is cheap; the task
/// ends when the last handle is dropped, after writing what is already queued.
pub struct Coalescer<T, R> {
    requests: mpsc::Sender<(T, Reply<R>)>,
}

impl<T, R> Clone for Coalescer<T, R> {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
        }
    }
}

impl<T, R> std::fmt::Debug for Coalescer<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer").finish_non_exhaustive()
    }
}

impl<T: Send + 'static, R: Send + 'static> Coalescer<T, R> {
    /// Starts the task. `write` takes a batch and answers one result per request, in
    /// order; when it fails as a whole, every request of the batch gets its error.
    pub fn start<F, Fut>(mut write: F) -> Self
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, Error>> + Send,
    {
        let (requests, mut queue) = mpsc::channel::<(T, Reply<R>)>(4 * MAX_BATCH);
        tokio::spawn(async move {
            while let Some(batch) = next_batch(&mut queue).await {
                let (items, replies): (Vec<T>, Vec<Reply<R>>) = batch.into_iter().unzip();
                let expected = items.len();
                // Boxed: a statement's future is large and would be copied into the
                // timeout's.
                let outcome = tokio::time::timeout(STATEMENT_LIMIT, Box::pin(write(items)))
                    .await
                    .unwrap_or(Err(Error::Timeout(STATEMENT_LIMIT)));
                match outcome {
                    Ok(results) if results.len() == expected => {
                        for (reply, result) in replies.into_iter().zip(results) {
                            let _ = reply.send(Ok(result));
                        }
                    }
                    Ok(results) => {
                        let e = Error::Corrupt(format!(
                            "a batched write answered {} results for {expected} requests",
                            results.len()
                        ));
                        answer_all(replies, e);
                    }
                    Err(e) => answer_all(replies, e),
                }
            }
        });
        Self { requests }
    }

    /// Submits one request and waits for its result, written with whatever else is
    /// queued.
    ///
    /// # Errors
    /// The batch's error ([`Error::Batch`]), or [`Error::BatcherStopped`].
    pub async fn submit(&self, item: T) -> Result<R, Error> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((item, reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Answers every request of a failed batch with the batch's error as its source (so
/// callers still answer 503 rather than 500 when the database is down).
fn answer_all<R>(replies: Vec<Reply<R>>, e: Error) {
    let shared = std::sync::Arc::new(e);
    for reply in replies {
        let _ = reply.send(Err(Error::Batch(shared.clone())));
    }
}

fn gone() -> Error {
    Error::BatcherStopped
}

/// Waits for one request, then takes every other one already queued (up to
/// [`MAX_BATCH`]). `None` when every sender is gone and the queue is empty.
async fn next_batch<T>(queue: &mut mpsc::Receiver<T>) -> Option<Vec<T>> {
    let first = queue.recv().await?;
    let mut batch = Vec::with_capacity(16);
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_each_request_with_its_own_result() {
        let doubler = Coalescer::start(|items: Vec<u32>| async move {
            Ok(items.into_iter().map(|i| i * 2).collect())
        });
        let handles: Vec<_> = (0..100)
            .map(|i| {
                let d = doubler.clone();
                tokio::spawn(async move { d.submit(i).await.unwrap() })
            })
            .collect();
        for (i, handle) in (0..100).zip(handles) {
            assert_eq!(handle.await.unwrap(), i * 2);
        }
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_request_with_its_transience() {
        let failing = Coalescer::start(|_: Vec<u32>| async {
            Err::<Vec<u32>, _>(Error::Timeout(Duration::from_secs(1)))
        });
        let e = failing.submit(1).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        let short = Coalescer::start(|_: Vec<u32>| async { Ok(Vec::<u32>::new()) });
        let e = short.submit(1).await.unwrap_err();
        assert!(!e.is_transient(), "{e}");
    }

    #[tokio::test]
    async fn requests_queued_during_a_write_share_the_next_one() {
        let (started, mut started_rx) = mpsc::channel::<usize>(8);
        let (release, release_rx) = tokio::sync::watch::channel(false);
        let sizes = Coalescer::start(move |items: Vec<u32>| {
            let started = started.clone();
            let mut release_rx = release_rx.clone();
            async move {
                let _ = started.send(items.len()).await;
                let _ = release_rx.wait_for(|go| *go).await;
                Ok(vec![items.len(); items.len()])
            }
        });
        let first = tokio::spawn({
            let s = sizes.clone();
            async move { s.submit(0).await.unwrap() }
        });
        assert_eq!(started_rx.recv().await, Some(1));
        // The first write is held open: these ten queue behind it.
        let rest: Vec<_> = (1..=10)
            .map(|i| {
                let s = sizes.clone();
                tokio::spawn(async move { s.submit(i).await.unwrap() })
            })
            .collect();
        let queued = tokio::time::timeout(Duration::from_secs(10), async {
            while sizes.requests.capacity() > 4 * MAX_BATCH - 10 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(queued.is_ok(), "the ten requests never queued");
        release.send(true).unwrap();
        assert_eq!(first.await.unwrap(), 1);
        for handle in rest {
            assert_eq!(handle.await.unwrap(), 10);
        }
    }
}
