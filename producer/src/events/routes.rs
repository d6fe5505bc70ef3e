//! The event routes: `GET /v1/jobs/{id}/events` (one job's stream), `GET /v1/events`
//! (the firehose), and the `wait` of `GET /v1/jobs/{id}` ([`wait_until_final`]).

use std::convert::Infallible;
use std::time::Duration;

use access::Scope;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use broker::{FirehoseSignal, Signal};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use jobs::{Cursor, JobEvent, JobId, JobRecord, JobState, ValidationErrors};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::budget::{Refusal, StreamPermit};
use crate::AppState;
use crate::auth::{Auth, Caller};
use crate::extract::ApiQuery;
use crate::guard;
use crate::problem::{ApiError, Problem};
use crate::routes::jobs::parse_id;

/// One event as a stream sends it (the SSE `data`; the SSE `event` is the state and,
/// on a job's stream, the SSE `id` is `seq`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventView {
    /// The job.
    #[schema(value_type = uuid::Uuid)]
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// The state it entered.
    #[schema(value_type = String, example = "completed")]
    pub state: JobState,
    /// The job's transition counter: orders its events (the SSE `id`).
    pub seq: u64,
    /// Attempts started (for `running`: this attempt).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When the transition was written.
    pub at: DateTime<Utc>,
    /// When it runs next (`scheduled`, `retrying`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// The result (`completed`; absent when redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// The error (`retrying`, `dead`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True for `completed`, `dead` and `cancelled`: a job's stream ends after it.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// True when the result was withheld: the caller lacks `jobs:read_args`.
    pub redacted: bool,
}

impl EventView {
    /// `event` as a caller sees it (`read_args`: with its result).
    pub fn of(event: &JobEvent, read_args: bool) -> Self {
        Self {
            id: event.id,
            kind: event.kind.clone(),
            queue: event.queue.clone(),
            state: event.state,
            seq: event.seq,
            attempt: event.attempt,
            max_attempts: event.max_attempts,
            at: event.at,
            run_at: event.run_at,
            result: if read_args {
                event.result.clone()
            } else {
                None
            },
            error: event.error.clone(),
            is_final: event.is_final(),
            redacted: !read_args,
        }
    }
}

/// `GET /v1/jobs/{id}/events` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobEventsQuery {
    /// A status link's token (from `status_url`): opens this job's stream without an
    /// API key.
    pub token: Option<String>,
}

/// `GET /v1/events` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FirehoseQuery {
    /// Only this queue's jobs.
    pub queue: Option<String>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only transitions into this state.
    pub state: Option<String>,
}

/// The subscriptions, or a 404 naming the key that turned events off.
fn subscriptions(state: &AppState) -> Result<&broker::Subscriptions, ApiError> {
    state
        .events
        .subscriptions
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("live events are off (events.enabled)".into()))
}

/// A place in the stream budget for `caller`, or a 429.
fn permit(state: &AppState, caller: &Caller) -> Result<StreamPermit, ApiError> {
    state.events.budget.acquire(caller).map_err(|refusal| {
        metrics::counter!("conveyor_event_streams_refused_total", "reason" => refusal.as_str())
            .increment(1);
        ApiError::TooManyStreams(match refusal {
            Refusal::Total => "this intake serves as many event streams and waits as it may (events.max_streams)",
            Refusal::PerKey => "this key holds as many event streams and waits as it may (events.max_streams_per_key)",
        })
    })
}

fn last_event_id(headers: &HeaderMap) -> Option<&str> {
    headers.get("last-event-id").and_then(|v| v.to_str().ok())
}

fn sse_event(event: &JobEvent, read_args: bool, with_id: bool) -> Event {
    let view = EventView::of(event, read_args);
    let mut sse = Event::default().event(event.state.as_str());
    if with_id {
        sse = sse.id(event.seq.to_string());
    }
    // Serializing plain data cannot fail; an empty event would only be skipped.
    sse.json_data(&view).unwrap_or_default()
}

/// `GET /v1/jobs/{id}/events`: the job's state now, then each transition as it
/// happens; the stream ends after a final state, or at `events.max_stream_lifetime_ms`
/// (reconnect with `Last-Event-ID`: nothing is missed). Opens with an API key
/// (`jobs:read`) or, without one, with the `token` of the job's `status_url`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/events",
    tag = "jobs",
    params(
        ("id" = String, Path, description = "Job id (UUID)"),
        ("Last-Event-ID" = Option<String>, Header, description = "The last event's id: resume after it (the current state is sent unless the client has it)"),
        JobEventsQuery,
    ),
    responses(
        (status = 200, description = "`text/event-stream`: events named by state, `data` an EventView, `id` the job's seq", body = EventView, content_type = "text/event-stream"),
        (status = 204, description = "The client already has the job's final state (Last-Event-ID): EventSource stops reconnecting"),
        (status = 401, description = "No valid API key, or the status token expired or is not for this job", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope, or the kind or queue is outside its reach", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job, or events are off", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many open streams (Retry-After)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["jobs:read"]))
)]
pub async fn job_events(
    State(state): State<AppState>,
    auth: Auth,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<ApiQuery<JobEventsQuery>, ApiError>,
) -> Result<Response, ApiError> {
    auth.require(Scope::JobsRead)?;
    let _ = query?;
    let id = parse_id(&id)?;
    let subscriptions = subscriptions(&state)?;
    let permit = permit(&state, &caller)?;
    // Subscribe first, then read: nothing committed after the read can be missed.
    let subscription = subscriptions.job(id);
    let record = guard::load_job(&state, &auth, id, "read").await?;
    let mut cursor = Cursor::resume(last_event_id(&headers));
    let current = JobEvent::of_record(&record);
    let first = cursor.admit(&current).then_some(current);
    if first.is_none() && record.state.is_final() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let stream = JobStream {
        state: state.clone(),
        id,
        read_args: auth.can(Scope::JobsReadArgs),
        subscription,
        cursor,
        first,
        done: false,
        deadline: tokio::time::Instant::now()
            + Duration::from_millis(state.events.settings.max_stream_lifetime_ms),
        _permit: permit,
    };
    Ok(sse(&state, stream.into_stream()).into_response())
}

fn sse<S>(state: &AppState, stream: S) -> Sse<axum::response::sse::KeepAliveStream<S>>
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_millis(state.events.settings.keep_alive_ms))
            .text("keep-alive"),
    )
}

/// One job's open stream.
struct JobStream {
    state: AppState,
    id: JobId,
    read_args: bool,
    subscription: broker::JobSubscription,
    cursor: Cursor,
    /// The current state, when the client does not have it yet.
    first: Option<JobEvent>,
    done: bool,
    deadline: tokio::time::Instant,
    _permit: StreamPermit,
}

impl JobStream {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send {
        futures_util::stream::unfold(self, |mut s| async move {
            let event = s.next().await?;
            Some((Ok(event), s))
        })
    }

    fn send(&mut self, event: &JobEvent) -> Event {
        self.done = event.is_final();
        sse_event(event, self.read_args, true)
    }

    async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        if let Some(first) = self.first.take() {
            // Tell EventSource to come back soon after a lifetime close.
            return Some(self.send(&first).retry(Duration::from_secs(1)));
        }
        loop {
            let signal = tokio::select! {
                () = tokio::time::sleep_until(self.deadline) => return None,
                () = self.state.events.closing.cancelled() => return None,
                signal = self.subscription.next() => signal,
            };
            let event = match signal {
                Signal::Event(event) if event.id == self.id => (*event).clone(),
                Signal::Event(_) => continue,
                Signal::Resync => match self.state.store.get_job(self.id).await {
                    Ok(Some(record)) => JobEvent::of_record(&record),
                    Ok(None) => return None,
                    Err(e) => {
                        tracing::warn!(job_id = %self.id, error = %e, "an event stream could not re-read its job");
                        continue;
                    }
                },
            };
            if self.cursor.admit(&event) {
                return Some(self.send(&event));
            }
        }
    }
}

/// `GET /v1/events`: every transition of the jobs the caller may read, filtered by
/// queue, kind and state, as it happens (no replay of the past; events missed by a
/// slow client are reported as a `missed` comment). Ends at
/// `events.max_stream_lifetime_ms`.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "operations",
    params(FirehoseQuery),
    responses(
        (status = 200, description = "`text/event-stream`: events named by state, `data` an EventView", body = EventView, content_type = "text/event-stream"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope, or the kind or queue filter is outside its reach", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Events are off", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad filter", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many open streams (Retry-After)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["jobs:read"]))
)]
pub async fn firehose(
    State(state): State<AppState>,
    auth: Auth,
    Extension(caller): Extension<Caller>,
    query: Result<ApiQuery<FirehoseQuery>, ApiError>,
) -> Result<Response, ApiError> {
    auth.require(Scope::JobsRead)?;
    let ApiQuery(query) = query?;
    let wanted_state = match query.state.as_deref().map(str::parse::<JobState>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            return Err(ApiError::Validation(ValidationErrors::one(
                "state",
                e.to_string(),
            )));
        }
    };
    if let Some(kind) = &query.kind {
        auth.0.reach_kind("read", Some(kind))?;
    }
    if let Some(queue) = &query.queue {
        auth.0.reach_queue("read", Some(queue))?;
    }
    let subscriptions = subscriptions(&state)?;
    let permit = permit(&state, &caller)?;
    let stream = Firehose {
        subscription: subscriptions.all(),
        read_args: auth.can(Scope::JobsReadArgs),
        auth,
        queue: query.queue,
        kind: query.kind,
        state: wanted_state,
        deadline: tokio::time::Instant::now()
            + Duration::from_millis(state.events.settings.max_stream_lifetime_ms),
        closing: state.events.closing.clone(),
        _permit: permit,
    };
    Ok(sse(&state, stream.into_stream()).into_response())
}

struct Firehose {
    subscription: broker::FirehoseSubscription,
    auth: Auth,
    read_args: bool,
    queue: Option<String>,
    kind: Option<String>,
    state: Option<JobState>,
    deadline: tokio::time::Instant,
    closing: tokio_util::sync::CancellationToken,
    _permit: StreamPermit,
}

impl Firehose {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send {
        futures_util::stream::unfold(self, |mut s| async move {
            let event = s.next().await?;
            Some((Ok(event), s))
        })
    }

    fn wants(&self, event: &JobEvent) -> bool {
        self.queue.as_ref().is_none_or(|q| *q == event.queue)
            && self.kind.as_ref().is_none_or(|k| *k == event.kind)
            && self.state.is_none_or(|s| s == event.state)
            && self
                .auth
                .0
                .reach("read", Some(&event.kind), Some(&event.queue))
                .is_ok()
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            let signal = tokio::select! {
                () = tokio::time::sleep_until(self.deadline) => return None,
                () = self.closing.cancelled() => return None,
                signal = self.subscription.next() => signal,
            };
            match signal {
                FirehoseSignal::Event(event) if self.wants(&event) => {
                    return Some(sse_event(&event, self.read_args, false));
                }
                FirehoseSignal::Event(_) => {}
                FirehoseSignal::Missed(0) => {
                    return Some(Event::default().comment(
                        "events may have been missed (the subscription was re-established)",
                    ));
                }
                FirehoseSignal::Missed(n) => {
                    return Some(Event::default().comment(format!("missed {n} events")));
                }
            }
        }
    }
}

/// Parses `wait`: seconds (`30`), or a number with `ms`, `s` or `m` (`500ms`, `30s`,
/// `1m`), at most `max`.
///
/// # Errors
/// What is wrong with it, for a 422 naming `wait`.
pub fn parse_wait(text: &str, max: Duration) -> Result<Duration, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let malformed =
        || format!("must be a duration such as 30s, 500ms or 1m (or seconds), got {text:?}");
    let number: u64 = number.parse().map_err(|_| malformed())?;
    let wait = match unit {
        "" | "s" => Duration::from_secs(number),
        "ms" => Duration::from_millis(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        _ => return Err(malformed()),
    };
    if wait > max {
        return Err(format!(
            "must be at most {}s (events.max_wait_ms)",
            max.as_secs_f64()
        ));
    }
    Ok(wait)
}

/// Waits up to `wait` for job `id` to reach a final state (the `wait` of
/// `GET /v1/jobs/{id}`): subscribes, reads the job, and answers as soon as a final
/// state is committed, or at the bound with the job as it is then. No polling: the
/// ledger is read again only when an event (or a possible gap) says so.
///
/// # Errors
/// As the job read (404, 403), 429 past the stream budget, 404 when events are off.
pub async fn wait_until_final(
    state: &AppState,
    auth: &Auth,
    caller: &Caller,
    id: JobId,
    wait: Duration,
) -> Result<JobRecord, ApiError> {
    let subscriptions = subscriptions(state)?;
    let _permit = permit(state, caller)?;
    let mut subscription = subscriptions.job(id);
    let mut record = guard::load_job(state, auth, id, "read").await?;
    let deadline = tokio::time::Instant::now() + wait;
    while !record.state.is_final() {
        let signal = tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            () = state.events.closing.cancelled() => break,
            signal = subscription.next() => signal,
        };
        let read_again = match signal {
            Signal::Event(event) => event.id == id && event.seq > record.seq && event.is_final(),
            Signal::Resync => true,
        };
        if read_again && let Some(now) = state.store.get_job(id).await? {
            record = now;
        }
    }
    if !record.state.is_final() {
        // At the bound: the job as it is now.
        if let Some(now) = state.store.get_job(id).await? {
            record = now;
        }
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn wait_takes_seconds_or_a_unit() {
        assert_eq!(parse_wait("30", MAX), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("30s", MAX), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("500ms", MAX), Ok(Duration::from_millis(500)));
        assert_eq!(parse_wait("1m", MAX), Ok(Duration::from_secs(60)));
        assert_eq!(parse_wait("0", MAX), Ok(Duration::ZERO));
    }

    #[test]
    fn wait_past_the_bound_or_malformed_says_why() {
        assert!(parse_wait("61s", MAX).unwrap_err().contains("at most 60s"));
        assert!(parse_wait("2m", MAX).unwrap_err().contains("at most"));
        for bad in ["", "s", "-1", "1.5s", "10h", "ten"] {
            assert!(
                parse_wait(bad, MAX)
                    .unwrap_err()
                    .contains("must be a duration"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_view_withholds_the_result_without_read_args() {
        let event = JobEvent {
            id: JobId::new(),
            kind: "noop".into(),
            queue: "default".into(),
            state: JobState::Completed,
            seq: 2,
            attempt: 1,
            max_attempts: 3,
            at: Utc::now(),
            run_at: None,
            result: Some(serde_json::json!({"secret": 1})),
            error: None,
        };
        let redacted = EventView::of(&event, false);
        assert!(redacted.result.is_none() && redacted.redacted && redacted.is_final);
        let json = serde_json::to_value(EventView::of(&event, true)).unwrap();
        assert_eq!(json["result"]["secret"], 1);
        assert_eq!(json["final"], true);
    }
}
