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

impl FromStr for JobId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Lifecycle of a job as recorded in Postgres. Each variant says which component moves
/// a job into it; no other component writes that state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for `run_at`. Written by the producer (a `run_at`/`delay_ms` in the
    /// request), by a handler's transactional enqueue, by a snooze, or by a replay.
    /// The dispatcher publishes it when due.
    Scheduled,
    /// Published (or being published) to its queue. Written by the producer at intake
    /// and by the dispatcher when it publishes a due job.
    Enqueued,
    /// Claimed by a worker that is running its handler. Written by the worker's claim.
    Running,
    /// An attempt failed and attempts remain; runs again at `run_at`. Written by the
    /// worker's outcome, or by the dispatcher's rescue of a job whose worker died.
    Retrying,
    /// The handler succeeded; `result` holds its output. Written by the worker: by its
    /// outcome, or inside a handler's own transaction that commits the job's business
    /// effects together with its completion (`order.process`). Final.
    Completed,
    /// Will not run again unless replayed: attempts exhausted, a permanent failure, an
    /// unknown kind, or a crash loop. Written by the worker or the dead-letter archive.
    Dead,
    /// Cancelled by an operator before it completed. Written by `cancel`. Final.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 7] = [
        JobState::Scheduled,
        JobState::Enqueued,
        JobState::Running,
        JobState::Retrying,
        JobState::Completed,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// The state's stable name, as stored and as shown in the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Enqueued => "enqueued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// True when the job will not run again on its own.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not the name of a [`JobState`].
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown job state {0:?} (expected one of scheduled, enqueued, running, retrying, completed, dead, cancelled)"
)]
pub struct ParseStateError(pub String);

impl FromStr for JobState {
    type Err = ParseStateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| ParseStateError(s.to_owned()))
    }
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
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
        }
        assert!("finished".parse::<JobState>().is_err());
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
