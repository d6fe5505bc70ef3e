//! Coalesces the claims and completions of concurrent deliveries into one statement
//! each ([`store::Coalescer`]), so a busy worker pays one commit per batch instead of
//! one per job. Each batch's live events (`running` for the claims, the settlement's
//! own for the completions) are handed to [`broker::Events`] once it committed.

use broker::Events;
use jobs::{JobId, WorkerId};
use store::{Claim, Coalescer, Settled, Settlement, Store};

/// Hands claims and completions to the batching tasks.
#[derive(Debug, Clone)]
pub struct Batcher {
    claims: Coalescer<JobId, Claim>,
    completions: Coalescer<Settlement, Settled>,
}

impl Batcher {
    /// Starts the batching tasks for `worker`, publishing the events of what they
    /// commit to `events`; they end when every handle is dropped.
    pub fn start(store: Store, worker: WorkerId, events: Events) -> Self {
        let claim_store = store.clone();
        let claim_events = events.clone();
        let claims = Coalescer::start(move |ids: Vec<JobId>| {
            let store = claim_store.clone();
            let events = claim_events.clone();
            async move {
                let claims = store.claim_many(&ids, worker).await?;
                if events.enabled() {
                    for claim in &claims {
                        if let Claim::Claimed(job) = claim {
                            events.publish(&job.event());
                        }
                    }
                }
                Ok(claims)
            }
        });
        let completions = Coalescer::start(move |settlements: Vec<Settlement>| {
            let store = store.clone();
            let events = events.clone();
            async move {
                let report = store.settle(&settlements).await?;
                events.publish_all(&report.events);
                Ok(report.answers)
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
