//! The dead-letter archive: consumes the namespace's dead-letter queue, where RabbitMQ
//! puts what workers rejected (undecodable messages, messages naming no job) and what it
//! dead-lettered itself (a message redelivered past `x-delivery-limit`: a crash loop),
//! and records each in `dead_letters` with its reason, raw payload, queue and headers.
//! Acked only after the row is committed; a redelivery is stored once (keyed by the
//! message id).

use broker::Topology;
use broker::lapin::message::Delivery;
use broker::lapin::types::{AMQPValue, FieldTable};
use jobs::{DeadReason, Envelope, Registry};
use serde_json::{Map, Value};
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
        }
    }

    /// Classifies a dead-lettered message.
    pub fn classify(&self, body: &[u8], headers: Option<&FieldTable>) -> Classified {
        let header = |name: &str| headers.and_then(|h| h.inner().get(name)).and_then(as_text);
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
        let headers = delivery.properties.headers().as_ref();
        let classified = self.classify(&delivery.data, headers);
        let key = delivery
            .properties
            .message_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok())
            .unwrap_or_else(Uuid::now_v7);
        let headers = headers.map_or(Value::Null, table_to_json);
        tracing::warn!(reason = %classified.reason, error = %classified.error, "archiving a dead-lettered message");
        let message = DeadMessage {
            key,
            job_id: classified.job_id,
            queue: classified.queue,
            kind: classified.kind,
            reason: classified.reason,
            error: classified.error,
            payload: delivery.data.clone(),
            headers,
        };
        let result = until_ok("archiving a dead letter", &self.abandon, || {
            self.store.archive_dead_letter(&message)
        })
        .await;
        match result {
            Some(Ok(())) => {
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

fn as_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn value_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::from(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(n) => Value::from(*n),
        AMQPValue::Double(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        other => as_text(other).map_or(Value::Null, Value::from),
    }
}

/// AMQP headers as JSON, for the record.
pub fn table_to_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), value_to_json(v)))
            .collect::<Map<_, _>>(),
    )
}
