//! The intake's request and response types: what travels over HTTP, with their
//! OpenAPI schemas.

use chrono::{DateTime, Utc};
use jobs::JobRecord;
use jobs::{JobId, JobState};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v1/jobs` body. Unknown fields are refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobRequest {
    /// The job's kind (`noop`, `order.process`, …). `/openapi.json` lists the kinds
    /// this intake accepts.
    #[schema(min_length = 1)]
    pub kind: String,
    /// Arguments for the kind (default `{}`), validated per kind.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub args: Option<Value>,
    /// Queue override (default: the kind's queue).
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub queue: Option<String>,
    /// Attempts override (default: the kind's), 1 to `producer.max_attempts_limit`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// Dedupe key (or the `Idempotency-Key` header): 1 to 255 characters, no control
    /// characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
    /// Run no earlier than this instant (RFC 3339).
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    /// Run no earlier than this many milliseconds from now (at most a year; give
    /// either this or `run_at`).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 31_622_400_000_u64)]
    pub delay_ms: Option<u64>,
    /// Per-job timeout override in milliseconds (at most a day).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub timeout_ms: Option<u64>,
    /// An `http(s)` URL told of the job's final state (`completed`, `dead`,
    /// `cancelled`) by a signed `webhook.deliver` job. Its host must not resolve to a
    /// loopback, private or link-local address (unless
    /// `webhooks.allow_private_targets`).
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 2048,
        pattern = "^[hH][tT][tT][pP][sS]?://[^/?#\\s]+"
    )]
    pub callback_url: Option<String>,
}

/// `202` body: the accepted job.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The job's id.
    #[schema(value_type = uuid::Uuid)]
    pub id: JobId,
    /// Its state (`enqueued` or `scheduled` right after intake).
    #[schema(value_type = String, example = "enqueued")]
    pub state: JobState,
    /// A link that opens this job's event stream without an API key
    /// (`new EventSource(status_url)` in a browser): `/v1/jobs/{id}/events?token=…`,
    /// signed, valid for `events.token_ttl_secs`. Absent when events are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
}

/// `POST /v1/jobs/batch` body: up to `producer.max_batch` jobs, accepted all or none.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The jobs, each shaped like a `POST /v1/jobs` body: 1 to `producer.max_batch`
    /// (1,000 by default).
    #[schema(min_items = 1, max_items = 1000)]
    pub jobs: Vec<CreateJobRequest>,
}

/// `202` body of a batch: the jobs' ids in request order.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchAccepted {
    /// One id per job, in request order.
    #[schema(value_type = Vec<uuid::Uuid>)]
    pub ids: Vec<JobId>,
    /// One status link per job, in request order (see `Accepted.status_url`). Absent
    /// when events are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_urls: Option<Vec<String>>,
}

/// `GET /v1/jobs/{id}` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetJobQuery {
    /// Wait up to this long for the job to be final (`30s`, `500ms`, `1m`, or seconds;
    /// at most `events.max_wait_ms`): the answer comes as soon as it is, or at the
    /// bound with the job as it is then (`final` says which).
    pub wait: Option<String>,
}

/// `GET /v1/jobs` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this state.
    #[param(pattern = "^(scheduled|enqueued|running|retrying|completed|dead|cancelled)$")]
    pub state: Option<String>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs in this queue.
    pub queue: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(format = Uuid)]
    pub cursor: Option<String>,
}

/// `GET /v1/jobs` body: a page of jobs, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A job as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    /// Id.
    #[schema(value_type = uuid::Uuid)]
    pub id: JobId,
    /// Kind.
    pub kind: String,
    /// Queue.
    pub queue: String,
    /// Arguments (`null` when redacted).
    #[schema(value_type = Option<Object>)]
    pub args: Value,
    /// State: scheduled, enqueued, running, retrying, completed, dead or cancelled.
    #[schema(value_type = String)]
    pub state: JobState,
    /// Attempts started.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Next (or last) run time.
    pub run_at: DateTime<Utc>,
    /// Result once completed (`null` when redacted).
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Latest error.
    pub last_error: Option<String>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// W3C trace context of the request that enqueued it (the parent of every attempt).
    pub traceparent: Option<String>,
    /// Times replayed.
    pub replay_count: u32,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Last attempt start.
    pub started_at: Option<DateTime<Utc>>,
    /// Final state reached at.
    pub finished_at: Option<DateTime<Utc>>,
    /// The schedule and slot that fired it (absent for other jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schedules::FiredByView>)]
    pub fired_by: Option<jobs::schedule::FiredBy>,
    /// True when `args` and `result` were withheld: the key lacks `jobs:read_args`.
    pub redacted: bool,
    /// True when the job is completed, dead or cancelled (what `wait` waits for).
    #[serde(rename = "final")]
    pub is_final: bool,
}

impl From<JobRecord> for JobView {
    fn from(r: JobRecord) -> Self {
        Self {
            id: r.id,
            kind: r.kind,
            queue: r.queue,
            args: r.args,
            state: r.state,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            run_at: r.run_at,
            result: r.result,
            last_error: r.last_error,
            idempotency_key: r.idempotency_key,
            traceparent: r.traceparent,
            replay_count: r.replay_count,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            fired_by: r.fired_by,
            redacted: false,
            is_final: r.state.is_final(),
        }
    }
}
