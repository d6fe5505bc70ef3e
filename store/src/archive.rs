//! The dead-letter archive's writes: a message RabbitMQ dead-lettered (or a worker
//! rejected) becomes a row in `dead_letters`. When it names a job that is not final yet,
//! that job is settled dead through [`crate::settle`] ([`Ending::DeadLettered`]), with
//! the message as its dead letter.

use jobs::{DeadReason, JobEvent, JobId};
use serde_json::Value;
use uuid::Uuid;

use crate::Store;
use crate::error::Error;
use crate::settle::{Ending, Settled, Settlement, settle_on};
use crate::sql::{NewLetter, insert_dead_letters};

/// A dead-lettered message, as the archive classified it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadMessage {
    /// The message's id: a redelivered dead letter is stored once.
    pub key: Uuid,
    /// The job it names, when it decodes.
    pub job_id: Option<JobId>,
    /// The Conveyor queue it died on.
    pub queue: Option<String>,
    /// The kind it names.
    pub kind: Option<String>,
    /// Why it is dead.
    pub reason: DeadReason,
    /// For a person.
    pub error: String,
    /// The raw body.
    pub payload: Vec<u8>,
    /// The AMQP headers, as JSON.
    pub headers: Value,
}

impl Store {
    /// Archives a dead-lettered message. When it names an existing job that is not final
    /// yet, that job is settled dead with the message as its dead letter; a stale copy of
    /// a job that already finished is dropped (nothing is lost); a message naming no job
    /// is stored raw. Idempotent per [`DeadMessage::key`].
    ///
    /// Returns the live event of the job it settled dead, if any (committed).
    ///
    /// # Errors
    /// When the database fails (the message stays in the dead-letter queue).
    pub async fn archive_dead_letter(
        &self,
        message: &DeadMessage,
    ) -> Result<Option<JobEvent>, Error> {
        let mut tx = self.pool().begin().await?;
        if let Some(id) = message.job_id {
            let settled = settle_on(
                &mut tx,
                &[Settlement {
                    id,
                    ending: Ending::DeadLettered(message.clone()),
                }],
            )
            .await?;
            match settled.answers.first() {
                // Settled dead, with the message as its dead letter.
                Some(Settled::Recorded(_)) => {
                    tx.commit().await?;
                    return Ok(settled.events.into_iter().next());
                }
                // No such row (a forged or purged id): stored raw below.
                Some(Settled::TakenOver(None)) => {}
                // A stale copy of a job that already finished: nothing to keep.
                _ => {
                    tx.rollback().await?;
                    return Ok(None);
                }
            }
        }
        insert_dead_letters(
            &mut tx,
            &[NewLetter {
                id: message.key,
                job_id: None,
                queue: message.queue.clone(),
                kind: message.kind.clone(),
                reason: message.reason,
                error: Some(message.error.clone()),
                payload: Some(message.payload.clone()),
                headers: Some(message.headers.clone()),
            }],
        )
        .await?;
        tx.commit().await?;
        Ok(None)
    }
}
