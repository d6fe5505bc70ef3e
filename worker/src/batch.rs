//! Coalesces the claims and completions of concurrent deliveries into one statement
//! each ([`store::Coalescer`]), so a busy worker pays one commit per batch instead of
//! one per job.

use jobs::JobId;
use store::{Claim, Coalescer, Finish, Finished, Store, WorkerId};

/// Hands claims and completions to the batching tasks.
#[derive(Debug, Clone)]
pub struct Batcher {
    claims: Coalescer<JobId, Claim>,
    completions: Coalescer<Finish, Option<Finished>>,
}

impl Batcher {
    /// Starts the batching tasks for `worker`; they end when every handle is dropped.
    pub fn start(store: Store, worker: WorkerId) -> Self {
        let claim_store = store.clone();
        let claims = Coalescer::start(move |ids: Vec<JobId>| {
            let store = claim_store.clone();
            async move { store.claim_many(&ids, worker).await }
        });
        let completions = Coalescer::start(move |finishes: Vec<Finish>| {
            let store = store.clone();
            async move { store.complete_many(&finishes).await }
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
        self.claims.submit(id).await
    }

    /// Records one completed attempt, batched with concurrent completions; an attempt
    /// the batch could not settle (taken over while it ran) is settled alone by
    /// [`Store::finish`] (in the caller's task, so such attempts never queue behind each
    /// other).
    ///
    /// # Errors
    /// The batch's (or the single write's) database error.
    pub async fn complete(&self, store: &Store, finish: Finish) -> Result<Finished, store::Error> {
        match self.completions.submit(finish.clone()).await? {
            Some(finished) => Ok(finished),
            None => store.finish(&finish).await,
        }
    }
}
