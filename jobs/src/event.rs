//! A job's transition as a live event: what the process that wrote a transition
//! publishes after its commit (over the namespace's events exchange) and what event
//! streams and `wait` hand to clients. Postgres stays the truth every stream starts from;
//! an event only says "this happened, at this point of the job's history".
//!
//! # Ordering
//! Every statement that moves a job to another state adds one to the row's `seq` in the
//! same write, so [`JobEvent::seq`] orders one job's events: a larger `seq` is a later
//! transition, whichever process published it and whenever it arrives. A stream keeps
//! the largest `seq` it has sent ([`Cursor`]) and drops anything older; a client that
//! reconnects with `Last-Event-ID: <seq>` is sent the job's current state unless it
//! already has exactly that one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{JobId, JobState};
use crate::record::JobRecord;

/// One transition of one job, as published after its commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// The state it entered.
    pub state: JobState,
    /// The job's transition counter after this transition: orders the job's events.
    pub seq: u64,
    /// Attempts started (for `running`: this attempt).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When the transition was written (as the publisher saw it).
    pub at: DateTime<Utc>,
    /// When it runs next, for `scheduled` and `retrying`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// The handler's result, for `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The latest error, for `retrying` and `dead`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl JobEvent {
    /// The event of `record`'s current state (a stream's first event, or the event of a
    /// transition whose writer returned the row).
    pub fn of_record(record: &JobRecord) -> Self {
        Self {
            id: record.id,
            kind: record.kind.clone(),
            queue: record.queue.clone(),
            state: record.state,
            seq: record.seq,
            attempt: record.attempt,
            max_attempts: record.max_attempts,
            at: record.updated_at,
            run_at: matches!(record.state, JobState::Scheduled | JobState::Retrying)
                .then_some(record.run_at),
            result: (record.state == JobState::Completed)
                .then(|| record.result.clone())
                .flatten(),
            error: matches!(record.state, JobState::Retrying | JobState::Dead)
                .then(|| record.last_error.clone())
                .flatten(),
        }
    }

    /// True for a final state: nothing follows unless an operator replays or retries it.
    pub fn is_final(&self) -> bool {
        self.state.is_final()
    }

    /// The routing key on the events exchange: `{queue}.{state}.{kind}` (a kind may hold
    /// dots, so it comes last: `orders.completed.#`, `*.dead.#`, `*.*.order.process`).
    pub fn routing_key(&self) -> String {
        format!("{}.{}.{}", self.queue, self.state, self.kind)
    }
}

/// What one job's stream has sent: the largest `seq`, and decides what to send next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    last: Option<u64>,
}

impl Cursor {
    /// A cursor resuming after `Last-Event-ID` (its text, when the client sent one). A
    /// value that is not an event id of this API is ignored: the client gets everything.
    pub fn resume(last_event_id: Option<&str>) -> Self {
        Self {
            last: last_event_id.and_then(|text| text.trim().parse().ok()),
        }
    }

    /// The last `seq` sent (or resumed from).
    pub fn last(self) -> Option<u64> {
        self.last
    }

    /// Whether `event` is to be sent: only when it is later than everything sent. A
    /// late event of a transition the stream already reported (read from the ledger, or
    /// published by a slower process) is dropped. Advances the cursor when it is.
    pub fn admit(&mut self, event: &JobEvent) -> bool {
        if self.last.is_some_and(|last| event.seq <= last) {
            return false;
        }
        self.last = Some(event.seq);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(state: JobState, seq: u64) -> JobEvent {
        JobEvent {
            id: JobId::new(),
            kind: "noop".into(),
            queue: "default".into(),
            state,
            seq,
            attempt: 1,
            max_attempts: 3,
            at: Utc::now(),
            run_at: None,
            result: None,
            error: None,
        }
    }

    #[test]
    fn a_cursor_sends_each_later_transition_once_and_drops_late_ones() {
        let mut cursor = Cursor::default();
        assert!(cursor.admit(&event(JobState::Enqueued, 0)));
        // The worker's `running` overtakes nothing; the intake's late `enqueued` is
        // dropped once `running` was sent.
        assert!(cursor.admit(&event(JobState::Running, 1)));
        assert!(!cursor.admit(&event(JobState::Enqueued, 0)));
        assert!(!cursor.admit(&event(JobState::Running, 1)), "a duplicate");
        assert!(cursor.admit(&event(JobState::Completed, 2)));
        assert_eq!(cursor.last(), Some(2));
    }

    #[test]
    fn a_resumed_cursor_sends_the_current_state_unless_the_client_has_it() {
        let mut has_it = Cursor::resume(Some("2"));
        assert!(!has_it.admit(&event(JobState::Completed, 2)));
        let mut behind = Cursor::resume(Some("1"));
        assert!(
            behind.admit(&event(JobState::Completed, 2)),
            "a final state the client missed is sent"
        );
        let mut garbage = Cursor::resume(Some("not-an-id"));
        assert!(garbage.admit(&event(JobState::Enqueued, 0)));
    }

    #[test]
    fn a_replayed_job_goes_on_counting_so_its_new_run_is_sent() {
        let mut cursor = Cursor::resume(Some("3"));
        // dead at seq 3, then replayed: scheduled 4, enqueued 5, running 6.
        assert!(cursor.admit(&event(JobState::Scheduled, 4)));
        assert!(cursor.admit(&event(JobState::Running, 6)));
        assert!(!cursor.admit(&event(JobState::Enqueued, 5)));
    }

    #[test]
    fn the_routing_key_puts_the_dotted_kind_last() {
        let mut e = event(JobState::Completed, 2);
        e.kind = "order.process".into();
        e.queue = "orders".into();
        assert_eq!(e.routing_key(), "orders.completed.order.process");
    }

    #[test]
    fn a_records_event_carries_what_its_state_needs() {
        let e = event(JobState::Dead, 4);
        assert!(e.is_final());
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["state"], "dead");
        assert!(json.get("result").is_none());
        let back: JobEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }
}
