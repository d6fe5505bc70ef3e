//! The schedules API: `POST/GET /v1/schedules`, `GET/PATCH/DELETE /v1/schedules/{name}`
//! and `POST /v1/schedules/{name}/pause|resume|trigger`, mirroring
//! `conveyor schedules`. A definition is checked like a configured one (cron, time zone,
//! kind, args for the kind): a bad one is a 422 naming each field, and nothing is
//! written. Schedules declared in `conveyor.toml` are changed there (409 here), though
//! they can be paused, resumed and triggered.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use jobs::schedule::{CatchUp, Overlap, ScheduleDef, ScheduleSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{ScheduleChange, ScheduleRecord};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Auth;
use crate::extract::ApiJson;
use crate::problem::{ApiError, Problem};
use crate::routes::wire::JobView;
use access::Scope;

/// `POST /v1/schedules` body. Unknown fields are refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScheduleRequest {
    /// Unique name: 1 to 64 characters of a-z, 0-9, `.`, `_` and `-`.
    #[schema(example = "nightly-report", pattern = "^[a-z0-9._-]{1,64}$")]
    pub name: String,
    /// Cron expression: 5 fields (minute hour day month weekday), 6 with seconds
    /// first, or an alias (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`).
    #[schema(example = "0 2 * * *")]
    pub cron: String,
    /// The kind of job each slot enqueues.
    pub kind: String,
    /// The job's arguments (default `{}`), validated for the kind.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub args: Option<Value>,
    /// Queue override (default: the kind's queue).
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub queue: Option<String>,
    /// IANA time zone the expression is read in (default `UTC`).
    #[serde(default)]
    #[schema(example = "Europe/Berlin")]
    pub timezone: Option<String>,
    /// Slots missed while no dispatcher ran: `none`, `latest` (default) or `all`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "latest", pattern = "^(none|latest|all)$")]
    pub catch_up: Option<CatchUp>,
    /// The most missed slots `catch_up = "all"` fires (default 100).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10_000)]
    pub catch_up_limit: Option<u32>,
    /// `allow` (default), or `skip` a slot while the previous job is unfinished.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "skip", pattern = "^(allow|skip)$")]
    pub overlap: Option<Overlap>,
    /// Attempts per job (default: the kind's).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
}

/// `PATCH /v1/schedules/{name}` body: the fields to change. Unknown fields are refused.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateScheduleRequest {
    /// New expression.
    pub cron: Option<String>,
    /// New kind (its queue becomes the kind's unless `queue` is given).
    pub kind: Option<String>,
    /// New arguments.
    #[schema(value_type = Option<Object>)]
    pub args: Option<Value>,
    /// New queue.
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub queue: Option<String>,
    /// New time zone.
    pub timezone: Option<String>,
    /// New catch-up policy.
    #[schema(value_type = Option<String>, pattern = "^(none|latest|all)$")]
    pub catch_up: Option<CatchUp>,
    /// New catch-up bound.
    #[schema(minimum = 1, maximum = 10_000)]
    pub catch_up_limit: Option<u32>,
    /// New overlap policy.
    #[schema(value_type = Option<String>, pattern = "^(allow|skip)$")]
    pub overlap: Option<Overlap>,
    /// New attempts per job.
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleView {
    /// Name.
    pub name: String,
    /// Cron expression.
    pub cron: String,
    /// IANA time zone.
    pub timezone: String,
    /// Kind of its jobs.
    pub kind: String,
    /// Their queue.
    pub queue: String,
    /// Their arguments (`null` when redacted).
    #[schema(value_type = Option<Object>)]
    pub args: Value,
    /// True when `args` was withheld: the key lacks `jobs:read_args`.
    pub redacted: bool,
    /// Their attempts.
    pub max_attempts: u32,
    /// `none`, `latest` or `all`.
    pub catch_up: String,
    /// Bound of `catch_up = "all"`.
    pub catch_up_limit: u32,
    /// `allow` or `skip`.
    pub overlap: String,
    /// `config` (declared in `conveyor.toml`) or `api`.
    pub source: String,
    /// `active`, `paused`, or `disabled` (removed from `conveyor.toml`).
    pub state: String,
    /// The next slot, in the schedule's zone (RFC 3339 with offset).
    pub next_slot: Option<String>,
    /// The latest slot handled (fired, missed or skipped).
    pub cursor: DateTime<Utc>,
    /// Slots fired.
    pub fired: u64,
    /// Slots missed (passed while no dispatcher ran; let go by `catch_up`).
    pub missed: u64,
    /// Slots skipped because the previous job had not finished.
    pub skipped_overlap: u64,
    /// When a slot last fired.
    pub last_fired_at: Option<DateTime<Utc>>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The schedule slot a job was fired for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FiredByView {
    /// The schedule's name.
    pub schedule: String,
    /// The slot in the schedule's zone, RFC 3339 with offset.
    #[schema(example = "2026-11-25T02:00:00+01:00")]
    pub slot: String,
}

/// `GET /v1/schedules` body.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleList {
    /// Every schedule, by name.
    pub schedules: Vec<ScheduleView>,
}

/// A schedule as `auth` may see it: its arguments only with `jobs:read_args`, as for
/// jobs.
fn shown(auth: &Auth, record: ScheduleRecord) -> ScheduleView {
    let mut view = ScheduleView::from(record);
    if !auth.can(Scope::JobsReadArgs) {
        view.args = Value::Null;
        view.redacted = true;
    }
    view
}

impl From<ScheduleRecord> for ScheduleView {
    fn from(r: ScheduleRecord) -> Self {
        let next_slot = r
            .cadence()
            .ok()
            .and_then(|c| r.next_slot.map(|slot| c.label(slot)));
        let state = if !r.enabled {
            "disabled"
        } else if r.paused {
            "paused"
        } else {
            "active"
        };
        Self {
            next_slot,
            state: state.to_owned(),
            name: r.name,
            cron: r.cron,
            timezone: r.timezone,
            kind: r.kind,
            queue: r.queue,
            args: r.args,
            redacted: false,
            max_attempts: r.max_attempts,
            catch_up: r.catch_up.to_string(),
            catch_up_limit: r.catch_up_limit,
            overlap: r.overlap.to_string(),
            source: r.source.as_str().to_owned(),
            cursor: r.cursor,
            fired: r.fired,
            missed: r.missed,
            skipped_overlap: r.skipped_overlap,
            last_fired_at: r.last_fired_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// The schedules routes (behind the API key), with their OpenAPI paths.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_schedule, list_schedules))
        .routes(routes!(get_schedule, update_schedule, delete_schedule))
        .routes(routes!(pause_schedule))
        .routes(routes!(resume_schedule))
        .routes(routes!(trigger_schedule))
}

fn check(state: &AppState, spec: ScheduleSpec) -> Result<ScheduleDef, ApiError> {
    spec.validate(
        &state.catalog,
        broker::topology::valid_queue_name,
        state.settings.max_attempts_limit,
    )
    .map_err(ApiError::Validation)
}

fn changed(change: ScheduleChange, name: &str) -> Result<ScheduleRecord, ApiError> {
    match change {
        ScheduleChange::Done(record) => Ok(*record),
        ScheduleChange::Missing => Err(missing(name)),
        ScheduleChange::Declared => Err(ApiError::Conflict(format!(
            "schedule {name:?} is declared in conveyor.toml; change it there"
        ))),
    }
}

fn missing(name: &str) -> ApiError {
    ApiError::NotFound(format!("no schedule named {name:?}"))
}

/// `POST /v1/schedules`: creates a schedule; its first slot is the first after now.
#[utoipa::path(
    post,
    path = "/v1/schedules",
    tag = "schedules",
    request_body(content = CreateScheduleRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = ScheduleView),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks queues:manage", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (cron, timezone, kind, args, …), each named", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["queues:manage"]))
)]
pub async fn create_schedule(
    State(state): State<AppState>,
    auth: Auth,
    body: Result<ApiJson<CreateScheduleRequest>, ApiError>,
) -> Result<Response, ApiError> {
    auth.require(Scope::QueuesManage)?;
    let ApiJson(request) = body?;
    let spec = ScheduleSpec {
        name: request.name,
        cron: request.cron,
        kind: request.kind,
        args: request
            .args
            .unwrap_or_else(|| Value::Object(serde_json::Map::new())),
        queue: request.queue,
        timezone: request.timezone.unwrap_or_else(|| "UTC".to_owned()),
        catch_up: request.catch_up.unwrap_or_default(),
        catch_up_limit: request
            .catch_up_limit
            .unwrap_or(jobs::schedule::DEFAULT_CATCH_UP_LIMIT),
        overlap: request.overlap.unwrap_or_default(),
        max_attempts: request.max_attempts,
    };
    let def = check(&state, spec)?;
    let created = state.store.create_schedule(&def).await?.ok_or_else(|| {
        ApiError::Conflict(format!("a schedule named {:?} exists already", def.name))
    })?;
    let location = format!("/v1/schedules/{}", created.name);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(shown(&auth, created)),
    )
        .into_response())
}

/// `GET /v1/schedules`: every schedule, by name.
#[utoipa::path(
    get,
    path = "/v1/schedules",
    tag = "schedules",
    responses(
        (status = 200, description = "The schedules", body = ScheduleList),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks jobs:read", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["jobs:read"]))
)]
pub async fn list_schedules(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<ScheduleList>, ApiError> {
    auth.require(Scope::JobsRead)?;
    let schedules = state.store.list_schedules().await?;
    Ok(Json(ScheduleList {
        schedules: schedules
            .into_iter()
            .map(|record| shown(&auth, record))
            .collect(),
    }))
}

/// `GET /v1/schedules/{name}`: one schedule.
#[utoipa::path(
    get,
    path = "/v1/schedules/{name}",
    tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks jobs:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["jobs:read"]))
)]
pub async fn get_schedule(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    auth.require(Scope::JobsRead)?;
    let record = state
        .store
        .get_schedule(&name)
        .await?
        .ok_or_else(|| missing(&name))?;
    Ok(Json(shown(&auth, record)))
}

/// `PATCH /v1/schedules/{name}`: changes the given fields; the result is checked as a
/// whole. The cursor stays, so a new expression starts from the last slot handled.
#[utoipa::path(
    patch,
    path = "/v1/schedules/{name}",
    tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    request_body(content = UpdateScheduleRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Updated", body = ScheduleView),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks queues:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Declared in conveyor.toml", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, each named", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["queues:manage"]))
)]
pub async fn update_schedule(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    body: Result<ApiJson<UpdateScheduleRequest>, ApiError>,
) -> Result<Json<ScheduleView>, ApiError> {
    auth.require(Scope::QueuesManage)?;
    let ApiJson(patch) = body?;
    let existing = state
        .store
        .get_schedule(&name)
        .await?
        .ok_or_else(|| missing(&name))?;
    let kind_changed = patch.kind.as_ref().is_some_and(|k| *k != existing.kind);
    let spec = ScheduleSpec {
        name: existing.name,
        cron: patch.cron.unwrap_or(existing.cron),
        queue: patch.queue.or((!kind_changed).then_some(existing.queue)),
        kind: patch.kind.unwrap_or(existing.kind),
        args: patch.args.unwrap_or(existing.args),
        timezone: patch.timezone.unwrap_or(existing.timezone),
        catch_up: patch.catch_up.unwrap_or(existing.catch_up),
        catch_up_limit: patch.catch_up_limit.unwrap_or(existing.catch_up_limit),
        overlap: patch.overlap.unwrap_or(existing.overlap),
        max_attempts: Some(patch.max_attempts.unwrap_or(existing.max_attempts)),
    };
    let def = check(&state, spec)?;
    let record = changed(state.store.replace_schedule(&def).await?, &name)?;
    Ok(Json(shown(&auth, record)))
}

/// `DELETE /v1/schedules/{name}`: deletes an API schedule; its jobs stay.
#[utoipa::path(
    delete,
    path = "/v1/schedules/{name}",
    tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks queues:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Declared in conveyor.toml: remove it there (it is then disabled)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["queues:manage"]))
)]
pub async fn delete_schedule(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require(Scope::QueuesManage)?;
    changed(state.store.delete_schedule(&name).await?, &name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/schedules/{name}/pause`: slots pass without firing (not caught up later).
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/pause",
    tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 200, description = "Paused", body = ScheduleView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks queues:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["queues:manage"]))
)]
pub async fn pause_schedule(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    auth.require(Scope::QueuesManage)?;
    let record = changed(state.store.set_schedule_paused(&name, true).await?, &name)?;
    Ok(Json(shown(&auth, record)))
}

/// `POST /v1/schedules/{name}/resume`: fires again from the first slot after now.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/resume",
    tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 200, description = "Resumed", body = ScheduleView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks queues:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["queues:manage"]))
)]
pub async fn resume_schedule(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    auth.require(Scope::QueuesManage)?;
    let record = changed(state.store.set_schedule_paused(&name, false).await?, &name)?;
    Ok(Json(shown(&auth, record)))
}

/// `POST /v1/schedules/{name}/trigger`: fires one job now, outside the slots (the
/// dispatcher publishes it).
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/trigger",
    tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 202, description = "Fired: the job", body = JobView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks queues:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["queues:manage"]))
)]
pub async fn trigger_schedule(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    auth.require(Scope::QueuesManage)?;
    let job = state
        .store
        .trigger_schedule(&name)
        .await?
        .ok_or_else(|| missing(&name))?;
    Ok((StatusCode::ACCEPTED, Json(crate::guard::view(&auth, job))).into_response())
}
