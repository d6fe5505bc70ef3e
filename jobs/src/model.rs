//! Identities and the lifecycle of a job: what travels on the wire and what state a job
//! is in. `store` maps [`JobState`] to a CHECK-constrained text column.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Identity of one job across broker, database and logs. Assigned by the producer
/// (UUID v7, so ids sort by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Uuid> for JobId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Defines a closed vocabulary stored as text: the enum, `ALL`, `as_str`, `Display` and
/// `FromStr` (failing with [`UnknownName`]). Each name appears once, here; SQL binds
/// `as_str()` and the migrations CHECK the same names.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable name, as stored and as shown in the API.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::model::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|value| value.as_str() == s)
                    .ok_or_else(|| $crate::model::UnknownName {
                        what: $what,
                        name: s.to_owned(),
                        expected: $name::ALL.iter().map($name::as_str).collect::<Vec<_>>().join(", "),
                    })
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::model::UnknownName;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
    };
}

pub(crate) use vocabulary;

vocabulary! {
    /// Lifecycle of a job as recorded in Postgres. Each variant says which component moves
    /// a job into it; no other component writes that state.
    pub enum JobState ("job state") {
        /// Waiting for `run_at`. Written by the producer (a `run_at`/`delay_ms` in the
        /// request), by a handler's transactional enqueue, by a snooze, by a replay, or
        /// by the dispatcher firing a schedule's slot.
        /// The dispatcher publishes it when due.
        Scheduled = "scheduled",
        /// Published (or being published) to its queue. Written by the producer at intake
        /// and by the dispatcher when it publishes a due job.
        Enqueued = "enqueued",
        /// Claimed by a worker that is running its handler. Written by the worker's claim.
        Running = "running",
        /// An attempt failed and attempts remain; runs again at `run_at`. Written by the
        /// worker's outcome, or by the dispatcher's rescue of a job whose worker died.
        Retrying = "retrying",
        /// The handler succeeded; `result` holds its output. Written by the worker: by its
        /// outcome, or inside a handler's own transaction that commits the job's business
        /// effects together with its completion (`order.process`). Final.
        Completed = "completed",
        /// Will not run again unless replayed: attempts exhausted, a permanent failure, an
        /// unknown kind, or a crash loop. Written by the worker or the dead-letter archive.
        Dead = "dead",
        /// Cancelled by an operator before it completed. Written by `cancel`, or by the
        /// settlement of an attempt that would have run again after a cancel. Final.
        Cancelled = "cancelled",
    }
}

impl JobState {
    /// True for `completed`, `dead` and `cancelled`: nothing follows unless an operator
    /// replays or retries the job.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        )
    }
}

vocabulary! {
    /// How one attempt ended, as its `job_attempts` row records it. A CHECK constraint
    /// holds the column to these names.
    pub enum AttemptOutcome ("attempt outcome") {
        /// The handler succeeded.
        Completed = "completed",
        /// It failed and the job runs again (unless a cancel was requested meanwhile).
        Retry = "retry",
        /// It failed for good: the job is dead.
        Failed = "failed",
        /// The handler asked to run later; the attempt is given back.
        Snoozed = "snoozed",
        /// Its worker stopped heartbeating while running it (recorded by the rescue).
        Lost = "lost",
    }
}

vocabulary! {
    /// Why something is in the dead letters. A CHECK constraint holds
    /// `dead_letters.reason` to these names.
    pub enum DeadReason ("dead-letter reason") {
        /// Failed on its last attempt (or lost by its worker with none left).
        AttemptsExhausted = "attempts_exhausted",
        /// The handler failed permanently.
        Failed = "failed",
        /// No handler is registered for the kind.
        UnknownKind = "unknown_kind",
        /// The message body is not a job envelope.
        Undecodable = "undecodable",
        /// The message names a job the ledger does not have.
        NoSuchJob = "no_such_job",
        /// RabbitMQ dead-lettered it past the queue's delivery limit (a crash loop).
        DeliveryLimit = "delivery_limit",
    }
}

/// The text was not one of a vocabulary's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?} (expected one of {expected})")]
pub struct UnknownName {
    /// Which vocabulary (`job state`, `attempt outcome`, `dead-letter reason`).
    pub what: &'static str,
    /// The text that matched nothing.
    pub name: String,
    /// The names that would have matched.
    pub expected: String,
}

/// What travels on the wire, one message per job run. The Postgres row stays the
/// source of truth: a worker decodes the envelope only to find the row it names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The job this message runs.
    pub id: JobId,
    /// The job's kind (`JobArgs::KIND`).
    pub kind: String,
    /// The queue the job was routed to.
    pub queue: String,
    /// The job's arguments as accepted at intake (informational: the row wins).
    pub args: serde_json::Value,
    /// When the message was published.
    pub enqueued_at: DateTime<Utc>,
    /// W3C trace context of the request that enqueued the job (also in the AMQP
    /// headers), so an attempt's span can be parented before it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Envelope {
    /// Encodes the envelope as the JSON message body.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a struct of plain data into a Vec cannot fail.
        serde_json::to_vec(self).expect("an Envelope always serializes")
    }

    /// Decodes a message body.
    ///
    /// # Errors
    /// When the bytes are not JSON or not an envelope.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), *state);
        }
        assert!("finished".parse::<JobState>().is_err());
        for outcome in AttemptOutcome::ALL {
            assert_eq!(
                outcome.as_str().parse::<AttemptOutcome>().unwrap(),
                *outcome
            );
        }
        for reason in DeadReason::ALL {
            assert_eq!(reason.to_string().parse::<DeadReason>().unwrap(), *reason);
        }
        let e = "cancelled".parse::<AttemptOutcome>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown attempt outcome \"cancelled\" (expected one of completed, retry, failed, snoozed, lost)"
        );
    }

    #[test]
    fn envelope_round_trips_and_rejects_garbage() {
        let envelope = Envelope {
            id: JobId::new(),
            kind: "noop".into(),
            queue: "default".into(),
            args: serde_json::json!({}),
            enqueued_at: Utc::now(),
            traceparent: None,
        };
        assert_eq!(
            Envelope::from_bytes(&envelope.to_bytes()).unwrap(),
            envelope
        );
        assert!(Envelope::from_bytes(b"\xff not json").is_err());
        assert!(Envelope::from_bytes(br#"{"id":"nope"}"#).is_err());
    }
}
