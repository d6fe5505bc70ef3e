//! Coalesces the claims and completions of concurrent deliveries into one statement
//! each, so a busy worker pays one commit per batch instead of one per job (River's
//! batch completer does the same). A batch is whatever is already waiting when the
//! previous statement returns: no timer, so an idle worker adds no latency.

use std::time::Duration;

use jobs::JobId;
use store::{Claim, Finish, Finished, Store, WorkerId};
use tokio::sync::{mpsc, oneshot};

/// Most requests coalesced into one statement.
const MAX_BATCH: usize = 512;

type Reply<T> = oneshot::Sender<Result<T, store::Error>>;

/// Hands claims and completions to the batching tasks.
#[derive(Debug, Clone)]
pub struct Batcher {
    claims: mpsc::Sender<(JobId, Reply<Claim>)>,
    completions: mpsc::Sender<(Finish, Reply<bool>)>,
}

fn batch_error(e: &store::Error) -> store::Error {
    store::Error::Batch {
        transient: e.is_transient(),
        message: e.to_string(),
    }
}

fn gone() -> store::Error {
    store::Error::Batch {
        transient: true,
        message: "the batching task stopped".into(),
    }
}

impl Batcher {
    /// Starts the batching tasks for `worker`; they end when every handle is dropped.
    pub fn start(store: Store, worker: WorkerId) -> Self {
        let (claims, mut claim_rx) = mpsc::channel::<(JobId, Reply<Claim>)>(4 * MAX_BATCH);
        let (completions, mut complete_rx) = mpsc::channel::<(Finish, Reply<bool>)>(4 * MAX_BATCH);
        let claim_store = store.clone();
        tokio::spawn(async move {
            while let Some(batch) = next_batch(&mut claim_rx).await {
                let ids: Vec<JobId> = batch.iter().map(|(id, _)| *id).collect();
                match bounded(claim_store.claim_many(&ids, worker)).await {
                    Ok(claims) => {
                        for ((_, reply), claim) in batch.into_iter().zip(claims) {
                            let _ = reply.send(Ok(claim));
                        }
                    }
                    Err(e) => {
                        for (_, reply) in batch {
                            let _ = reply.send(Err(batch_error(&e)));
                        }
                    }
                }
            }
        });
        tokio::spawn(async move {
            while let Some(batch) = next_batch(&mut complete_rx).await {
                let finishes: Vec<Finish> = batch.iter().map(|(f, _)| f.clone()).collect();
                match bounded(store.complete_many(&finishes)).await {
                    Ok(written) => {
                        for ((_, reply), written) in batch.into_iter().zip(written) {
                            let _ = reply.send(Ok(written));
                        }
                    }
                    Err(e) => {
                        for (_, reply) in batch {
                            let _ = reply.send(Err(batch_error(&e)));
                        }
                    }
                }
            }
        });
        Self {
            claims,
            completions,
        }
    }

    /// Claims one job, batched with concurrent claims.
    ///
    /// # Errors
    /// The batch's database error.
    pub async fn claim(&self, id: JobId) -> Result<Claim, store::Error> {
        let (reply, answer) = oneshot::channel();
        self.claims.send((id, reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Records one completed attempt, batched with concurrent completions; an attempt
    /// the batch did not find running is settled alone by [`Store::finish`] (in the
    /// caller's task, so such attempts never queue behind each other).
    ///
    /// # Errors
    /// The batch's (or the single write's) database error.
    pub async fn complete(&self, store: &Store, finish: Finish) -> Result<Finished, store::Error> {
        let (reply, answer) = oneshot::channel();
        self.completions
            .send((finish.clone(), reply))
            .await
            .map_err(|_| gone())?;
        if answer.await.map_err(|_| gone())?? {
            Ok(Finished::Recorded)
        } else {
            store.finish(&finish).await
        }
    }
}

/// Waits for one request, then takes every other one already queued (up to
/// [`MAX_BATCH`]). `None` when every sender is gone.
async fn next_batch<T>(rx: &mut mpsc::Receiver<T>) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let mut batch = Vec::with_capacity(16);
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Bounds a batched statement (the pool's own timeouts apply inside).
async fn bounded<T>(
    operation: impl Future<Output = Result<T, store::Error>>,
) -> Result<T, store::Error> {
    let limit = Duration::from_secs(60);
    tokio::time::timeout(limit, operation)
        .await
        .map_err(|_| store::Error::Timeout(limit))?
}
