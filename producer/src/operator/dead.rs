//! Dead letters over HTTP: list (keyset pages), group by error fingerprint, show,
//! replay and purge — by ids or by the CLI's filters. Bulk operations take a snapshot
//! of the matching ids first, so dead letters arriving meanwhile are not swept in, and
//! replay through `store::Store::replay_many`, which skips rows another replay holds:
//! two identical replays at once never run a job twice.

use access::{DeadSelection, Scope};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use jobs::ValidationErrors;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{DeadFilter, DeadLetter, ReplayOutcome};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Auth, RequestId};
use crate::extract::ApiJson;
use crate::problem::{ApiError, Problem};

/// Most dead letters one bulk replay or purge takes (a larger set: repeat, or narrow).
pub const BULK_MAX: u32 = 10_000;

/// The CLI's dead-letter filters. Empty fields match everything.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadFilterBody {
    /// Only this queue.
    #[schema(pattern = "^[^\\x00]*$")]
    #[param(pattern = "^[^\\x00]*$")]
    pub queue: Option<String>,
    /// Only this kind.
    #[schema(pattern = "^[^\\x00]*$")]
    #[param(pattern = "^[^\\x00]*$")]
    pub kind: Option<String>,
    /// Only errors containing this text (case-insensitive).
    #[schema(pattern = "^[^\\x00]*$")]
    #[param(pattern = "^[^\\x00]*$")]
    pub error: Option<String>,
    /// Died at or after: RFC 3339, or an age like `90s`, `15m`, `2h`, `7d`.
    #[schema(
        pattern = "^([0-9]{1,6}[smhd]|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"
    )]
    #[param(
        pattern = "^([0-9]{1,6}[smhd]|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"
    )]
    pub since: Option<String>,
    /// Died before: RFC 3339, or an age.
    #[schema(
        pattern = "^([0-9]{1,6}[smhd]|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"
    )]
    #[param(
        pattern = "^([0-9]{1,6}[smhd]|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"
    )]
    pub until: Option<String>,
    /// At most this many, newest first.
    #[schema(minimum = 1, maximum = 10_000)]
    #[param(minimum = 1, maximum = 4_294_967_295_u64)]
    pub limit: Option<u32>,
}

impl From<DeadFilterBody> for DeadSelection {
    fn from(f: DeadFilterBody) -> Self {
        DeadSelection {
            queue: f.queue,
            kind: f.kind,
            error: f.error,
            since: f.since,
            until: f.until,
            limit: f.limit,
        }
    }
}

/// `GET /v1/dead` query: the filters and a cursor.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadListQuery {
    /// Only this queue.
    #[param(pattern = "^[^\\x00]*$")]
    pub queue: Option<String>,
    /// Only this kind.
    #[param(pattern = "^[^\\x00]*$")]
    pub kind: Option<String>,
    /// Only errors containing this text (case-insensitive).
    #[param(pattern = "^[^\\x00]*$")]
    pub error: Option<String>,
    /// Died at or after: RFC 3339, or an age like `90s`, `15m`, `2h`, `7d`.
    #[param(
        pattern = "^([0-9]{1,6}[smhd]|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"
    )]
    pub since: Option<String>,
    /// Died before: RFC 3339, or an age.
    #[param(
        pattern = "^([0-9]{1,6}[smhd]|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"
    )]
    pub until: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = "^[0-9]{1,18}_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub cursor: Option<String>,
}

/// One open dead letter.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterView {
    /// The dead letter's id.
    pub id: Uuid,
    /// The job, when it was one.
    pub job_id: Option<Uuid>,
    /// Queue it died on.
    pub queue: Option<String>,
    /// Kind, when known.
    pub kind: Option<String>,
    /// `attempts_exhausted`, `failed`, `unknown_kind`, `undecodable`, `no_such_job`,
    /// `delivery_limit`.
    pub reason: String,
    /// The error.
    pub error: Option<String>,
    /// Attempts the job made.
    pub attempts: Option<u32>,
    /// Times replayed before.
    pub replay_count: Option<u32>,
    /// When it died.
    pub died_at: DateTime<Utc>,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> Self {
        Self {
            id: d.id,
            job_id: d.job_id.map(|j| j.as_uuid()),
            queue: d.queue,
            kind: d.kind,
            reason: d.reason.to_string(),
            error: d.error,
            attempts: d.attempts,
            replay_count: d.replay_count,
            died_at: d.died_at,
        }
    }
}

/// `GET /v1/dead` body: a page, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadPage {
    /// The dead letters.
    pub dead_letters: Vec<DeadLetterView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Dead letters sharing an error fingerprint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorGroupView {
    /// The error with ids, addresses and long numbers masked.
    pub fingerprint: String,
    /// How many.
    pub count: i64,
    /// Kinds involved.
    pub kinds: Vec<String>,
    /// Earliest death.
    pub first: DateTime<Utc>,
    /// Latest death.
    pub last: DateTime<Utc>,
}

/// `GET /v1/dead/groups` body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadGroups {
    /// Largest group first.
    pub groups: Vec<ErrorGroupView>,
}

/// One attempt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// Attempt number.
    pub attempt: i32,
    /// `completed`, `retry`, `failed`, `snoozed`, `lost`, `cancelled`.
    pub outcome: String,
    /// The error.
    pub error: Option<String>,
    /// Worker that ran it.
    pub worker_id: Option<Uuid>,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Finished.
    pub finished_at: DateTime<Utc>,
}

/// `GET /v1/dead/{id}` body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterDetailView {
    /// The summary.
    pub dead_letter: DeadLetterView,
    /// The job's arguments, or the raw message as text (`null` when redacted).
    #[schema(value_type = Option<Object>)]
    pub payload: Value,
    /// AMQP headers of a raw message (`null` when redacted).
    #[schema(value_type = Option<Object>)]
    pub headers: Option<Value>,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptView>,
    /// When replayed or purged.
    pub resolved_at: Option<DateTime<Utc>>,
    /// `replayed` or `purged`.
    pub resolution: Option<String>,
    /// True when `payload` and `headers` were withheld: the key lacks `jobs:read_args`.
    pub redacted: bool,
}

/// `POST /v1/dead/replay` and `/v1/dead/purge` body: ids, or a filter, or `all`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// Dead-letter or job ids.
    #[serde(default)]
    #[schema(value_type = Vec<uuid::Uuid>, max_items = 10_000)]
    pub ids: Vec<String>,
    /// The CLI's filters.
    #[serde(default)]
    pub filter: Option<DeadFilterBody>,
    /// Every open dead letter (within the key's reach).
    #[serde(default)]
    pub all: bool,
    /// Say what would be done; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Replay only: corrected arguments for exactly one job, validated like intake.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub args: Option<Value>,
}

/// What happened to one dead letter.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkResult {
    /// The id given (or matched).
    pub id: Uuid,
    /// `replayed`, `skipped` or (dry run) `matched`.
    pub result: String,
    /// The job replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/dead/replay` body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Dead letters selected (the snapshot).
    pub matched: usize,
    /// Jobs replayed.
    pub replayed: usize,
    /// Dead letters skipped (being replayed by someone else, already resolved, raw
    /// messages, unknown ids).
    pub skipped: usize,
    /// Each one.
    pub results: Vec<BulkResult>,
}

/// `POST /v1/dead/purge` body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PurgeReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Dead letters selected (the snapshot).
    pub matched: usize,
    /// Dead letters deleted (with their dead jobs).
    pub purged: u64,
    /// The selected ids.
    pub ids: Vec<Uuid>,
}

fn selection_error(e: access::select::SelectionError) -> ApiError {
    match e {
        access::select::SelectionError::Invalid(errors) => ApiError::Validation(errors),
        access::select::SelectionError::Denied(denied) => ApiError::from(denied),
    }
}

fn cursor_of(d: &DeadLetterView) -> String {
    format!("{}_{}", d.died_at.timestamp_micros(), d.id)
}

fn parse_cursor(text: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = text.split_once('_')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}

/// `GET /v1/dead`: open dead letters, newest first, filtered like `conveyor dead list`,
/// paged with an opaque cursor (pages never skip or repeat while letters arrive).
#[utoipa::path(
    get,
    path = "/v1/dead",
    tag = "operations",
    params(DeadListQuery),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadPage),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks dead:read, or a kind or queue filter is outside its reach", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad filter, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["dead:read"]))
)]
pub async fn list_dead(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<Query<DeadListQuery>, QueryRejection>,
) -> Result<Json<DeadPage>, ApiError> {
    auth.require(Scope::DeadRead)?;
    let query = super::query(query)?;
    let mut errors = ValidationErrors::new();
    let limit = super::page_size(query.limit, 100, 1000, &mut errors);
    let before = match query.cursor.as_deref().map(parse_cursor) {
        None => None,
        Some(Some(c)) => Some(c),
        Some(None) => {
            errors.add("cursor", "is not a cursor returned by this API");
            None
        }
    };
    errors.into_result()?;
    let selection = DeadSelection {
        queue: query.queue,
        kind: query.kind,
        error: query.error,
        since: query.since,
        until: query.until,
        limit: None,
    };
    let mut filter = selection
        .to_filter(&auth, "read", Utc::now())
        .map_err(selection_error)?;
    filter.before = before;
    filter.limit = Some(limit + 1);
    let letters = state.store.dead_letters(&filter).await?;
    let more = letters.len() > limit as usize;
    let dead_letters: Vec<DeadLetterView> = letters
        .into_iter()
        .take(limit as usize)
        .map(DeadLetterView::from)
        .collect();
    let next_cursor = if more {
        dead_letters.last().map(cursor_of)
    } else {
        None
    };
    Ok(Json(DeadPage {
        dead_letters,
        next_cursor,
    }))
}

/// `GET /v1/dead/groups`: open dead letters counted per error fingerprint (ids,
/// addresses and long numbers masked), largest first.
#[utoipa::path(
    get,
    path = "/v1/dead/groups",
    tag = "operations",
    params(DeadFilterBody),
    responses(
        (status = 200, description = "Groups", body = DeadGroups),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks dead:read, or a kind or queue filter is outside its reach", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad filter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["dead:read"]))
)]
pub async fn dead_groups(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<Query<DeadFilterBody>, QueryRejection>,
) -> Result<Json<DeadGroups>, ApiError> {
    auth.require(Scope::DeadRead)?;
    let selection: DeadSelection = super::query(query)?.into();
    let filter = selection
        .to_filter(&auth, "read", Utc::now())
        .map_err(selection_error)?;
    let groups = state
        .store
        .dead_letter_groups(&filter)
        .await?
        .into_iter()
        .map(|g| ErrorGroupView {
            fingerprint: g.fingerprint,
            count: g.count,
            kinds: g.kinds,
            first: g.first,
            last: g.last,
        })
        .collect();
    Ok(Json(DeadGroups { groups }))
}

/// `GET /v1/dead/{id}`: one dead letter (by its id or its job's id) with the job's
/// arguments (or the raw message) and every attempt.
#[utoipa::path(
    get,
    path = "/v1/dead/{id}",
    tag = "operations",
    params(("id" = uuid::Uuid, Path, description = "Dead-letter or job id (UUID)")),
    responses(
        (status = 200, description = "The dead letter", body = DeadLetterDetailView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks dead:read, or the kind or queue is outside its reach", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dead letter", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["dead:read"]))
)]
pub async fn get_dead(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<DeadLetterDetailView>, ApiError> {
    auth.require(Scope::DeadRead)?;
    let id = parse_uuid(&id, "id")?;
    let detail =
        state.store.dead_letter(id).await?.ok_or_else(|| {
            ApiError::NotFound(format!("no dead letter or dead job with id {id}"))
        })?;
    auth.0.reach(
        "read",
        detail.letter.kind.as_deref(),
        detail.letter.queue.as_deref(),
    )?;
    let redacted = !auth.can(Scope::JobsReadArgs);
    Ok(Json(DeadLetterDetailView {
        dead_letter: detail.letter.into(),
        payload: if redacted {
            Value::Null
        } else {
            detail.payload
        },
        headers: if redacted { None } else { detail.headers },
        attempts: detail
            .attempts_history
            .into_iter()
            .map(|a| AttemptView {
                attempt: a.attempt,
                outcome: a.outcome.to_string(),
                error: a.error,
                worker_id: a.worker_id,
                started_at: a.started_at,
                finished_at: a.finished_at,
            })
            .collect(),
        resolved_at: detail.resolved_at,
        resolution: detail.resolution,
        redacted,
    }))
}

fn parse_uuid(text: &str, field: &str) -> Result<Uuid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::Validation(ValidationErrors::one(field, "must be a UUID")))
}

/// The dead letters a bulk request means, snapshotted now, and the filter to record.
async fn select(
    state: &AppState,
    auth: &Auth,
    request: &BulkRequest,
    verb: &str,
) -> Result<(Vec<Uuid>, Option<Value>), ApiError> {
    let filter_set = request
        .filter
        .as_ref()
        .is_some_and(|f| DeadSelection::from(f.clone()).is_set());
    let ways =
        usize::from(!request.ids.is_empty()) + usize::from(filter_set) + usize::from(request.all);
    if ways != 1 {
        return Err(ApiError::Validation(ValidationErrors::one(
            "ids",
            "give exactly one of ids, a filter (queue, kind, error, since, until) or all: true",
        )));
    }
    if !request.ids.is_empty() {
        if request.ids.len() > BULK_MAX as usize {
            return Err(ApiError::Validation(ValidationErrors::one(
                "ids",
                format!("at most {BULK_MAX} ids at once"),
            )));
        }
        let mut errors = ValidationErrors::new();
        let mut ids = Vec::with_capacity(request.ids.len());
        for (i, text) in request.ids.iter().enumerate() {
            match text.parse::<Uuid>() {
                Ok(id) => ids.push(id),
                Err(_) => errors.add(format!("ids[{i}]"), "must be a UUID"),
            }
        }
        errors.into_result()?;
        if auth.is_limited() {
            for id in &ids {
                if let Some(detail) = state.store.dead_letter(*id).await? {
                    auth.0.reach(
                        verb,
                        detail.letter.kind.as_deref(),
                        detail.letter.queue.as_deref(),
                    )?;
                }
            }
        }
        return Ok((ids, None));
    }
    let selection: DeadSelection = request.filter.clone().unwrap_or_default().into();
    let mut filter: DeadFilter =
        selection
            .to_filter(auth, verb, Utc::now())
            .map_err(|e| match e {
                access::select::SelectionError::Invalid(errors) => {
                    ApiError::Validation(errors.prefixed("filter"))
                }
                access::select::SelectionError::Denied(denied) => ApiError::from(denied),
            })?;
    if filter.limit.is_some_and(|l| l > BULK_MAX) {
        return Err(ApiError::Validation(ValidationErrors::one(
            "filter.limit",
            format!("must be at most {BULK_MAX}"),
        )));
    }
    filter.limit = Some(filter.limit.unwrap_or(BULK_MAX));
    let mut described = filter.describe();
    if request.all {
        described["all"] = Value::Bool(true);
    }
    let ids = state
        .store
        .dead_letters(&filter)
        .await?
        .into_iter()
        .map(|d| d.id)
        .collect();
    Ok((ids, Some(described)))
}

/// Validates corrected args for the one dead job they are for, like intake does.
async fn corrected_args(state: &AppState, ids: &[Uuid], args: &Value) -> Result<Value, ApiError> {
    let [id] = ids else {
        return Err(ApiError::Validation(ValidationErrors::one(
            "args",
            format!("corrected args replay exactly one job; {} match", ids.len()),
        )));
    };
    let detail =
        state.store.dead_letter(*id).await?.ok_or_else(|| {
            ApiError::NotFound(format!("no dead letter or dead job with id {id}"))
        })?;
    let Some(kind) = detail.letter.kind else {
        return Err(ApiError::Validation(ValidationErrors::one(
            "args",
            "the dead letter has no kind to validate args against",
        )));
    };
    let spec = state.catalog.get(&kind).map_err(|e| {
        ApiError::Validation(ValidationErrors::one(
            "args",
            format!("{e}; cannot validate args"),
        ))
    })?;
    spec.validate(args)
        .map_err(|e| ApiError::Validation(e.prefixed("args")))?;
    if let Some(path) = crate::routes::validate::nul_in(args, "args") {
        return Err(ApiError::Validation(ValidationErrors::one(
            &path,
            "must not contain the NUL character (\\u0000): the ledger cannot store it",
        )));
    }
    Ok(args.clone())
}

/// `POST /v1/dead/replay`: run dead jobs again (same id and history, a fresh attempt
/// budget), chosen by ids, by filter or `all`, in one transaction with one audit row.
/// `dry_run` lists what would be replayed. Dead letters another replay holds, or that
/// are already resolved, are skipped and reported.
#[utoipa::path(
    post,
    path = "/v1/dead/replay",
    tag = "operations",
    request_body(content = BulkRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "What was (or would be) replayed", body = ReplayReport),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks dead:replay, or a dead letter's kind or queue is outside its reach", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The dead letter for corrected args does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than the intake's body limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No or several selections, bad ids or filters, invalid corrected args", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["dead:replay"]))
)]
pub async fn replay(
    State(state): State<AppState>,
    auth: Auth,
    request_id: RequestId,
    body: Result<ApiJson<BulkRequest>, ApiError>,
) -> Result<Json<ReplayReport>, ApiError> {
    auth.require(Scope::DeadReplay)?;
    let ApiJson(request) = body?;
    let (ids, filter) = select(&state, &auth, &request, "replay").await?;
    let args = match &request.args {
        None => None,
        Some(args) => Some(corrected_args(&state, &ids, args).await?),
    };
    if request.dry_run {
        return Ok(Json(ReplayReport {
            dry_run: true,
            matched: ids.len(),
            replayed: 0,
            skipped: 0,
            results: ids
                .iter()
                .map(|id| BulkResult {
                    id: *id,
                    result: "matched".into(),
                    job_id: None,
                    reason: None,
                })
                .collect(),
        }));
    }
    let context = auth.audit(request_id.0).with_filter(filter);
    let outcomes = state
        .store
        .replay_many(&ids, args.as_ref(), &context)
        .await?;
    publish_replayed(&state, &outcomes).await;
    let mut report = ReplayReport {
        dry_run: false,
        matched: ids.len(),
        replayed: 0,
        skipped: 0,
        results: Vec::with_capacity(outcomes.len()),
    };
    for (id, outcome) in outcomes {
        report.results.push(match outcome {
            ReplayOutcome::Replayed { job_id } => {
                report.replayed += 1;
                BulkResult {
                    id,
                    result: "replayed".into(),
                    job_id: Some(job_id.as_uuid()),
                    reason: None,
                }
            }
            ReplayOutcome::Skipped { reason } => {
                report.skipped += 1;
                BulkResult {
                    id,
                    result: "skipped".into(),
                    job_id: None,
                    reason: Some(reason),
                }
            }
        });
    }
    Ok(Json(report))
}

/// `POST /v1/dead/purge`: delete dead letters and their dead jobs, chosen by ids, by
/// filter or `all`, in one transaction with one audit row. `dry_run` lists them.
#[utoipa::path(
    post,
    path = "/v1/dead/purge",
    tag = "operations",
    request_body(content = BulkRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "What was (or would be) purged", body = PurgeReport),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks dead:purge, or a dead letter's kind or queue is outside its reach", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than the intake's body limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No or several selections, bad ids or filters, args given", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["dead:purge"]))
)]
pub async fn purge(
    State(state): State<AppState>,
    auth: Auth,
    request_id: RequestId,
    body: Result<ApiJson<BulkRequest>, ApiError>,
) -> Result<Json<PurgeReport>, ApiError> {
    auth.require(Scope::DeadPurge)?;
    let ApiJson(request) = body?;
    if request.args.is_some() {
        return Err(ApiError::Validation(ValidationErrors::one(
            "args",
            "only a replay takes corrected args",
        )));
    }
    let (ids, filter) = select(&state, &auth, &request, "purge").await?;
    let purged = if request.dry_run || ids.is_empty() {
        0
    } else {
        let context = auth.audit(request_id.0).with_filter(filter);
        state.store.purge(&ids, &context).await?
    };
    Ok(Json(PurgeReport {
        dry_run: request.dry_run,
        matched: ids.len(),
        purged,
        ids,
    }))
}
/// Publishes the events of the jobs a replay moved (committed), read back in one
/// statement; a failed read only costs the live events (the ledger is right).
async fn publish_replayed(state: &AppState, outcomes: &[(Uuid, ReplayOutcome)]) {
    if !state.events.publisher.enabled() {
        return;
    }
    let ids: Vec<jobs::JobId> = outcomes
        .iter()
        .filter_map(|(_, outcome)| match outcome {
            ReplayOutcome::Replayed { job_id } => Some(*job_id),
            ReplayOutcome::Skipped { .. } => None,
        })
        .collect();
    match state.store.get_jobs(&ids).await {
        Ok(records) => {
            for record in &records {
                state
                    .events
                    .publisher
                    .publish(&jobs::JobEvent::of_record(record));
            }
        }
        Err(e) => tracing::warn!(error = %e, "the replayed jobs' events could not be read"),
    }
}
