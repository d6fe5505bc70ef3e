//! The audit log: one row per change an operator or an app made, inserted by the
//! mutation itself inside its own transaction (so a change is never recorded without
//! its row, nor a row without its change), and read back newest first. Conveyor never
//! updates or deletes a row; the table refuses it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::Store;
use crate::error::Error;

/// What kind of actor made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// An API key from the `api_keys` table (its id and name are recorded).
    Key,
    /// A key configured as a hash in `producer.api_keys`.
    Config,
    /// The `conveyor` CLI (`--by`, or `$USER`).
    Cli,
    /// An intake without any key (loopback only): the client address is recorded.
    Local,
}

impl ActorKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Key => "key",
            ActorKind::Config => "config",
            ActorKind::Cli => "cli",
            ActorKind::Local => "local",
        }
    }

    fn parse(text: &str) -> Result<Self, Error> {
        Ok(match text {
            "key" => ActorKind::Key,
            "config" => ActorKind::Config,
            "cli" => ActorKind::Cli,
            "local" => ActorKind::Local,
            other => return Err(Error::Corrupt(format!("unknown actor kind {other:?}"))),
        })
    }
}

/// Who made a change. Never holds a key, only its id and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// What kind of actor.
    pub kind: ActorKind,
    /// The API key's id (for [`ActorKind::Key`]).
    pub id: Option<Uuid>,
    /// The key's name, the CLI user, or the client address.
    pub name: String,
}

/// What was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditAction {
    /// A job was cancelled (or its cancellation requested).
    #[serde(rename = "job.cancel")]
    JobCancel,
    /// A job was made due now.
    #[serde(rename = "job.retry")]
    JobRetry,
    /// Dead jobs were replayed.
    #[serde(rename = "dead.replay")]
    DeadReplay,
    /// Dead letters (and their dead jobs) were deleted.
    #[serde(rename = "dead.purge")]
    DeadPurge,
    /// An API key was created.
    #[serde(rename = "key.create")]
    KeyCreate,
    /// An API key was revoked.
    #[serde(rename = "key.revoke")]
    KeyRevoke,
    /// A queue was paused.
    #[serde(rename = "queue.pause")]
    QueuePause,
    /// A queue was resumed.
    #[serde(rename = "queue.resume")]
    QueueResume,
    /// A webhook subscription was created.
    #[serde(rename = "webhook.create")]
    WebhookCreate,
    /// A webhook subscription was deleted.
    #[serde(rename = "webhook.delete")]
    WebhookDelete,
}

impl AuditAction {
    /// Every action, in the order the documentation lists them.
    pub const ALL: [AuditAction; 10] = [
        AuditAction::JobCancel,
        AuditAction::JobRetry,
        AuditAction::DeadReplay,
        AuditAction::DeadPurge,
        AuditAction::KeyCreate,
        AuditAction::KeyRevoke,
        AuditAction::QueuePause,
        AuditAction::QueueResume,
        AuditAction::WebhookCreate,
        AuditAction::WebhookDelete,
    ];

    /// The stored name (`job.cancel`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::JobCancel => "job.cancel",
            AuditAction::JobRetry => "job.retry",
            AuditAction::DeadReplay => "dead.replay",
            AuditAction::DeadPurge => "dead.purge",
            AuditAction::KeyCreate => "key.create",
            AuditAction::KeyRevoke => "key.revoke",
            AuditAction::QueuePause => "queue.pause",
            AuditAction::QueueResume => "queue.resume",
            AuditAction::WebhookCreate => "webhook.create",
            AuditAction::WebhookDelete => "webhook.delete",
        }
    }
}

impl std::str::FromStr for AuditAction {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        AuditAction::ALL
            .into_iter()
            .find(|a| a.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
                format!("unknown action {text:?}; known: {}", known.join(", "))
            })
    }
}

/// Who is changing something, and on whose request: what a mutation needs to write
/// its audit row. The targets and count are filled in by the mutation itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    /// Who.
    pub actor: Actor,
    /// The HTTP request's id (`x-request-id`), when there was one.
    pub request_id: Option<String>,
    /// The filter a bulk operation selected its targets with.
    pub filter: Option<Value>,
}

impl AuditContext {
    /// The context of `actor`, without a request id or filter.
    pub fn new(actor: Actor) -> Self {
        Self {
            actor,
            request_id: None,
            filter: None,
        }
    }

    /// With the filter a bulk operation used.
    #[must_use]
    pub fn with_filter(mut self, filter: Option<Value>) -> Self {
        self.filter = filter;
        self
    }
}

/// One audit row as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number (ascending in insertion order).
    pub id: i64,
    /// When the change committed.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: Actor,
    /// What.
    pub action: AuditAction,
    /// The jobs (or dead letters, or the key) changed.
    pub targets: Vec<Uuid>,
    /// The filter of a bulk operation.
    pub filter: Option<Value>,
    /// How many things changed.
    pub count: i64,
    /// The request's id.
    pub request_id: Option<String>,
    /// Anything else worth keeping (a replay's corrected-args flag, a key's role).
    pub detail: Option<Value>,
}

/// Which audit rows to list.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this action.
    pub action: Option<AuditAction>,
    /// Only rows whose actor name is this.
    pub actor: Option<String>,
    /// Only rows before this id (the previous page's last id).
    pub before: Option<i64>,
    /// Only rows at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Page size.
    pub limit: u32,
}

/// Inserts one audit row on `conn`, which must be the change's own transaction.
///
/// # Errors
/// When the database fails (the caller's transaction then rolls back with it).
pub async fn record(
    conn: &mut PgConnection,
    context: &AuditContext,
    action: AuditAction,
    targets: &[Uuid],
    count: u64,
    detail: Option<Value>,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO audit_log (actor_kind, actor_id, actor, action, targets, filter, count, request_id, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(context.actor.kind.as_str())
    .bind(context.actor.id)
    .bind(&context.actor.name)
    .bind(action.as_str())
    .bind(targets)
    .bind(context.filter.as_ref().map(Json))
    .bind(i64::try_from(count).unwrap_or(i64::MAX))
    .bind(&context.request_id)
    .bind(detail.map(Json))
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Audit rows matching `query`, newest first.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, Error> {
        let rows = sqlx::query(
            "SELECT id, at, actor_kind, actor_id, actor, action, targets, filter, count, request_id, detail \
             FROM audit_log \
             WHERE ($1::text IS NULL OR action = $1) AND ($2::text IS NULL OR actor = $2) \
               AND ($3::bigint IS NULL OR id < $3) AND ($4::timestamptz IS NULL OR at >= $4) \
             ORDER BY id DESC LIMIT $5",
        )
        .bind(query.action.map(AuditAction::as_str))
        .bind(&query.actor)
        .bind(query.before)
        .bind(query.since)
        .bind(i64::from(query.limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let action: String = row.try_get("action")?;
                Ok(AuditRecord {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    actor: Actor {
                        kind: ActorKind::parse(&row.try_get::<String, _>("actor_kind")?)?,
                        id: row.try_get("actor_id")?,
                        name: row.try_get("actor")?,
                    },
                    action: action.parse().map_err(Error::Corrupt)?,
                    targets: row.try_get("targets")?,
                    filter: row
                        .try_get::<Option<Json<Value>>, _>("filter")?
                        .map(|f| f.0),
                    count: row.try_get("count")?,
                    request_id: row.try_get("request_id")?,
                    detail: row
                        .try_get::<Option<Json<Value>>, _>("detail")?
                        .map(|d| d.0),
                })
            })
            .collect()
    }
}
