//! The dead-letter archive: consumes the namespace's dead-letter queue, where RabbitMQ
//! puts what workers rejected (undecodable messages, messages naming no job) and what it
//! dead-lettered itself (a message redelivered past `x-delivery-limit`: a crash loop),
//! and records each in `dead_letters` with its reason, raw payload, queue and headers.
//! Acked only after the row is committed; a redelivery is stored once (keyed by the
//! message id).

use broker::{Delivery, Headers, Topology};
use jobs::{DeadReason, Envelope, Registry};
use serde_json::Value;
use store::{DeadMessage, Store};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::executor::Disposition;
use crate::retry::until_ok;

/// Records dead-lettered messages.
pub struct Archive {
    store: Store,
    registry: Registry,
    topology: Topology,
    abandon: CancellationToken,
    /// Where the event of a job it settles dead goes.
    events: broker::Events,
}

/// Why a message was dead-lettered, with the job it names (if any) and its queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    /// Short cause: undecodable, unknown kind, no such job, or past the delivery limit.
    pub reason: DeadReason,
    /// For a person.
    pub error: String,
    /// The job the message names, when it decodes.
    pub job_id: Option<jobs::JobId>,
    /// The kind it names.
    pub kind: Option<String>,
    /// The Conveyor queue it was dead-lettered from.
    pub queue: Option<String>,
}

impl Archive {
    /// An archive writing to `store`.
    pub fn new(
        store: Store,
        registry: Registry,
        topology: Topology,
        abandon: CancellationToken,
    ) -> Self {
        Self {
            store,
            registry,
            topology,
            abandon,
            events: broker::Events::disabled(),
        }
    }

    /// Publishes the live event of each job it settles dead to `events`.
    #[must_use]
    pub fn with_events(mut self, events: broker::Events) -> Self {
        self.events = events;
        self
    }

    /// Classifies a dead-lettered message.
    pub fn classify(&self, body: &[u8], headers: Option<&Headers>) -> Classified {
        let header = |name: &str| headers.and_then(|h| h.text(name)).map(str::to_owned);
        let queue = header("x-first-death-queue").map(|q| {
            let prefix = self.topology.queue("");
            q.strip_prefix(&prefix).unwrap_or(&q).to_owned()
        });
        let death = header("x-first-death-reason");
        match Envelope::from_bytes(body) {
            Err(e) => Classified {
                reason: DeadReason::Undecodable,
                error: format!("message body is not a job envelope: {e}"),
                job_id: None,
                kind: None,
                queue,
            },
            Ok(envelope) => {
                let (reason, error) = if death.as_deref() == Some("delivery_limit") {
                    (
                        DeadReason::DeliveryLimit,
                        "delivered past the queue's delivery limit without an outcome \
                         (the worker crashed or lost its connection every time)"
                            .to_owned(),
                    )
                } else if self.registry.dispatch(&envelope.kind).is_err() {
                    (
                        DeadReason::UnknownKind,
                        format!("unknown job kind {:?}", envelope.kind),
                    )
                } else {
                    (
                        DeadReason::NoSuchJob,
                        format!("no job {} in the ledger", envelope.id),
                    )
                };
                Classified {
                    reason,
                    error,
                    job_id: Some(envelope.id),
                    kind: Some(envelope.kind),
                    queue: queue.or(Some(envelope.queue)),
                }
            }
        }
    }

    /// Records one dead-lettered delivery; acks once it is committed.
    pub async fn record(&self, delivery: &Delivery) -> Disposition {
        let headers = delivery.headers();
        let classified = self.classify(delivery.body(), headers.as_ref());
        let key = delivery
            .message_id()
            .and_then(|id| Uuid::parse_str(id).ok())
            .unwrap_or_else(Uuid::now_v7);
        let headers = headers.map_or(Value::Null, |h| h.to_json());
        tracing::warn!(reason = %classified.reason, error = %classified.error, "archiving a dead-lettered message");
        let message = DeadMessage {
            key,
            job_id: classified.job_id,
            queue: classified.queue,
            kind: classified.kind,
            reason: classified.reason,
            error: classified.error,
            payload: delivery.body().to_vec(),
            headers,
        };
        let result = until_ok("archiving a dead letter", &self.abandon, || {
            self.store.archive_dead_letter(&message)
        })
        .await;
        match result {
            Some(Ok(event)) => {
                self.events.publish_all(&event);
                metrics::counter!("conveyor_dead_letters_archived_total", "reason" => message.reason.as_str()).increment(1);
                Disposition::Ack
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "could not archive a dead letter; leaving it queued");
                Disposition::Abandon
            }
            None => Disposition::Abandon,
        }
    }
}
