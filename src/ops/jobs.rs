//! `conveyor jobs show|cancel|retry`: each builds its value from the ledger; the caller
//! renders it.

use anyhow::{Context, bail};
use jobs::{JobId, JobRecord};
use serde::Serialize;
use store::{AttemptRecord, CancelOutcome, RetryOutcome, Store};

use super::render::{Text, View, table};

/// `jobs show`: a job and its attempts.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    /// The job.
    pub job: JobRecord,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

impl View for JobDetail {
    fn text(&self) -> Text {
        let job = &self.job;
        let mut text = Text::default();
        text.line(format!("job          {}", job.id));
        text.line(format!("kind         {}", job.kind));
        text.line(format!("queue        {}", job.queue));
        text.line(format!("state        {}", job.state));
        text.line(format!(
            "attempt      {} of {}",
            job.attempt, job.max_attempts
        ));
        text.line(format!("run at       {}", job.run_at.to_rfc3339()));
        text.line(format!("args         {}", job.args));
        if let Some(result) = &job.result {
            text.line(format!("result       {result}"));
        }
        if let Some(error) = &job.last_error {
            text.line(format!("last error   {error}"));
        }
        if job.replay_count > 0 {
            text.line(format!(
                "replayed     {} time(s), last by {} at {}",
                job.replay_count,
                job.replayed_by.as_deref().unwrap_or("?"),
                job.replayed_at
                    .map_or_else(|| "?".into(), |t| t.to_rfc3339())
            ));
        }
        if let Some(fired) = &job.fired_by {
            text.line(format!(
                "fired by     {} for {}",
                fired.schedule, fired.slot
            ));
        }
        text.line(format!("created      {}", job.created_at.to_rfc3339()));
        if !self.attempts.is_empty() {
            text.line("");
            let rows: Vec<Vec<String>> = self
                .attempts
                .iter()
                .map(|a| {
                    vec![
                        a.attempt.to_string(),
                        a.outcome.to_string(),
                        a.started_at.to_rfc3339(),
                        a.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            text.out
                .push_str(&table(&["ATTEMPT", "OUTCOME", "STARTED", "ERROR"], &rows));
        }
        text
    }
}

/// `jobs show`.
///
/// # Errors
/// No such job, or the database fails.
pub async fn show(store: &Store, id: JobId) -> anyhow::Result<JobDetail> {
    let job = store
        .get_job(id)
        .await?
        .with_context(|| format!("no job with id {id}"))?;
    let attempts = store.attempts(id).await?;
    Ok(JobDetail { job, attempts })
}

/// `jobs cancel`: what became of the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cancelled {
    /// The job.
    pub id: JobId,
    /// What happened, for a person.
    pub result: String,
}

impl View for Cancelled {
    fn text(&self) -> Text {
        let mut text = Text::default();
        text.line(format!("{}: {}", self.id, self.result));
        text
    }
}

/// `jobs cancel`: a waiting job never runs; a running one finishes its attempt and is
/// not retried.
///
/// # Errors
/// No such job, a job already final, or the database fails.
pub async fn cancel(
    store: &Store,
    id: JobId,
    context: &store::AuditContext,
) -> anyhow::Result<Cancelled> {
    let result = match store.cancel(id, context).await? {
        CancelOutcome::Cancelled => "cancelled".to_owned(),
        CancelOutcome::Requested => {
            "cancel requested: the running attempt finishes and is not retried".to_owned()
        }
        CancelOutcome::AlreadyFinal(state) => {
            bail!("job is already {state}; nothing to cancel")
        }
        CancelOutcome::NotFound => bail!("no job with id {id}"),
    };
    Ok(Cancelled { id, result })
}

/// `jobs retry`: the job is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Retried {
    /// The job.
    pub id: JobId,
}

impl View for Retried {
    fn text(&self) -> Text {
        let mut text = Text::default();
        text.line(format!("{}: scheduled to run now", self.id));
        text
    }
}

/// `jobs retry`: a retrying, scheduled, dead or cancelled job runs now.
///
/// # Errors
/// No such job, a job in another state, or the database fails.
pub async fn retry(
    store: &Store,
    id: JobId,
    context: &store::AuditContext,
) -> anyhow::Result<Retried> {
    match store.retry_now(id, context).await? {
        RetryOutcome::Scheduled => Ok(Retried { id }),
        RetryOutcome::NotRetryable(state) => bail!(
            "job {id} is {state}; only retrying, scheduled, dead or cancelled jobs can be retried"
        ),
        RetryOutcome::NotFound => bail!("no job with id {id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use jobs::JobState;
    use serde_json::{Value, json};
    use uuid::Uuid;

    use crate::ops::render::{Format, render};

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn record() -> JobRecord {
        JobRecord {
            id: JobId(Uuid::from_u128(7)),
            kind: "noop".into(),
            queue: "default".into(),
            args: json!({"n": 1}),
            state: JobState::Completed,
            seq: 4,
            attempt: 2,
            max_attempts: 5,
            run_at: at("2026-11-21T10:00:00Z"),
            timeout_ms: None,
            idempotency_key: None,
            result: Some(json!({"ok": true})),
            last_error: Some("first try failed".into()),
            cancel_requested: false,
            replay_count: 1,
            replayed_at: Some(at("2026-11-21T09:30:00Z")),
            replayed_by: Some("ops".into()),
            traceparent: None,
            created_at: at("2026-11-21T09:00:00Z"),
            updated_at: at("2026-11-21T10:00:01Z"),
            started_at: Some(at("2026-11-21T10:00:00Z")),
            finished_at: Some(at("2026-11-21T10:00:01Z")),
            fired_by: None,
        }
    }

    fn attempt(n: i32, outcome: &str, error: Option<&str>) -> AttemptRecord {
        AttemptRecord {
            attempt: n,
            outcome: outcome.parse().unwrap(),
            error: error.map(Into::into),
            worker_id: None,
            started_at: at("2026-11-21T10:00:00Z"),
            finished_at: at("2026-11-21T10:00:01Z"),
            retry_at: None,
        }
    }

    #[test]
    fn show_prints_the_job_then_its_attempts() {
        let view = JobDetail {
            job: record(),
            attempts: vec![
                attempt(1, "retry", Some("first try failed")),
                attempt(2, "completed", None),
            ],
        };
        assert_eq!(
            view.text().out,
            "job          00000000-0000-0000-0000-000000000007\n\
             kind         noop\n\
             queue        default\n\
             state        completed\n\
             attempt      2 of 5\n\
             run at       2026-11-21T10:00:00+00:00\n\
             args         {\"n\":1}\n\
             result       {\"ok\":true}\n\
             last error   first try failed\n\
             replayed     1 time(s), last by ops at 2026-11-21T09:30:00+00:00\n\
             created      2026-11-21T09:00:00+00:00\n\
             \n\
             ATTEMPT  OUTCOME    STARTED                    ERROR\n\
             1        retry      2026-11-21T10:00:00+00:00  first try failed\n\
             2        completed  2026-11-21T10:00:00+00:00  \n"
        );
    }

    #[test]
    fn show_leaves_out_what_a_fresh_job_does_not_have() {
        let mut job = record();
        job.result = None;
        job.last_error = None;
        job.replay_count = 0;
        let text = JobDetail {
            job,
            attempts: vec![],
        }
        .text()
        .out;
        assert!(!text.contains("result"), "{text}");
        assert!(!text.contains("last error"), "{text}");
        assert!(!text.contains("replayed"), "{text}");
        assert!(!text.contains("ATTEMPT"), "{text}");
        assert!(!text.contains("fired by"), "{text}");
        assert!(text.ends_with("created      2026-11-21T09:00:00+00:00\n"));
    }

    #[test]
    fn show_names_the_schedule_slot_that_fired_the_job() {
        let mut job = record();
        job.fired_by = Some(jobs::schedule::FiredBy {
            schedule: "nightly-report".into(),
            slot: "2026-11-21T02:00:00+01:00".into(),
        });
        let view = JobDetail {
            job,
            attempts: vec![],
        };
        let text = view.text().out;
        assert!(
            text.contains(
                "replayed     1 time(s), last by ops at 2026-11-21T09:30:00+00:00\n\
                 fired by     nightly-report for 2026-11-21T02:00:00+01:00\n\
                 created      2026-11-21T09:00:00+00:00\n"
            ),
            "{text}"
        );
        let json: Value = serde_json::from_str(&render(&view, Format::Json).unwrap().out).unwrap();
        assert_eq!(json["job"]["fired_by"]["schedule"], "nightly-report");
        assert_eq!(json["job"]["fired_by"]["slot"], "2026-11-21T02:00:00+01:00");
    }

    #[test]
    fn show_as_json_holds_the_job_and_its_attempts() {
        let view = JobDetail {
            job: record(),
            attempts: vec![attempt(1, "completed", None)],
        };
        let json: Value = serde_json::from_str(&render(&view, Format::Json).unwrap().out).unwrap();
        assert_eq!(json["job"]["id"], "00000000-0000-0000-0000-000000000007");
        assert_eq!(json["job"]["state"], "completed");
        assert_eq!(json["attempts"][0]["outcome"], "completed");
    }

    #[test]
    fn cancel_and_retry_say_what_happened_to_the_job() {
        let cancelled = Cancelled {
            id: JobId(Uuid::from_u128(7)),
            result: "cancelled".into(),
        };
        assert_eq!(
            cancelled.text().out,
            "00000000-0000-0000-0000-000000000007: cancelled\n"
        );
        let json: Value =
            serde_json::from_str(&render(&cancelled, Format::Json).unwrap().out).unwrap();
        assert_eq!(
            json,
            json!({"id": "00000000-0000-0000-0000-000000000007", "result": "cancelled"})
        );
        let retried = Retried {
            id: JobId(Uuid::from_u128(7)),
        };
        assert_eq!(
            retried.text().out,
            "00000000-0000-0000-0000-000000000007: scheduled to run now\n"
        );
    }
}
