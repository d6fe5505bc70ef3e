//! Coalesces the claims and completions of concurrent deliveries into one statement
//! each ([`store::Coalescer`]), so a busy worker pays one commit per batch instead of
//! one per job.

use jobs::{JobId, WorkerId};
use store::{Claim, Coalescer, Settled, Settlement, Store};

/// Hands claims and completions to the batching tasks.
#[derive(Debug, Clone)]
pub struct Batcher {
    claims: Coalescer<JobId, Claim>,
    completions: Coalescer<Settlement, Settled>,
}

impl Batcher {
    /// Starts the batching tasks for `worker`; they end when every handle is dropped.
    pub fn start(store: Store, worker: WorkerId) -> Self {
        let claim_store = store.clone();
        let claims = Coalescer::start(move |ids: Vec<JobId>| {
            let store = claim_store.clone();
            async move { store.claim_many(&ids, worker).await }
        });
        let completions = Coalescer::start(move |settlements: Vec<Settlement>| {
            let store = store.clone();
            async move { store.settle(&settlements).await }
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

    /// Settles one completed attempt, batched with concurrent completions (one
    /// statement for the batch, see [`Store::settle`]).
    ///
    /// # Errors
    /// The batch's database error.
    pub async fn complete(&self, settlement: Settlement) -> Result<Settled, store::Error> {
        self.completions.submit(settlement).await
    }
}
