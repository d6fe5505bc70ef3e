//! What a principal may see and touch, applied to the intake's wire types: the reach
//! of an enqueue (kind and queue), of a job read or change, and the redaction of
//! arguments and results for keys without `jobs:read_args`.

use access::Scope;
use jobs::JobId;
use jobs::JobRecord;

use crate::AppState;
use crate::auth::Auth;
use crate::problem::ApiError;
use crate::routes::wire::{CreateJobRequest, JobView};

/// Requires that `auth` may enqueue `request`'s kind on its queue (the requested one,
/// or the kind's default). Checked before the arguments are validated, so a key learns
/// nothing about kinds it may not use.
///
/// # Errors
/// 403 naming the kind or queue.
pub fn enqueue_reach(
    state: &AppState,
    auth: &Auth,
    request: &CreateJobRequest,
) -> Result<(), ApiError> {
    if !auth.is_limited() {
        return Ok(());
    }
    let queue = request.queue.clone().or_else(|| {
        state
            .catalog
            .get(&request.kind)
            .ok()
            .map(|spec| spec.options.queue.to_owned())
    });
    auth.0
        .reach("enqueue", Some(&request.kind), queue.as_deref())
        .map_err(ApiError::from)
}

/// The job, loaded for `verb` by `auth`: 404 when there is none, 403 when its kind or
/// queue is out of the key's reach.
///
/// # Errors
/// 404, 403, or the store failed.
pub async fn load_job(
    state: &AppState,
    auth: &Auth,
    id: JobId,
    verb: &str,
) -> Result<JobRecord, ApiError> {
    let record = state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job with id {id}")))?;
    auth.reach(verb, &record.kind, &record.queue)?;
    Ok(record)
}

/// A job as `auth` may see it: arguments and result only with `jobs:read_args`.
pub fn view(auth: &Auth, record: JobRecord) -> JobView {
    let mut view = JobView::from(record);
    if !auth.can(Scope::JobsReadArgs) {
        view.args = serde_json::Value::Null;
        view.result = None;
        view.redacted = true;
    }
    view
}
