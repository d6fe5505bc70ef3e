//! Webhooks as stored: subscriptions (a URL, a kind glob, the states it is told of, its
//! signing secret), created and deleted with their audit row in one transaction; the
//! secrets `webhook.deliver` signs with ([`SubscriptionSecrets`]); and the SQL that turns
//! transitions into deliveries ([`deliveries_cte`]), which each writer of a transition
//! (intake, settlement, cancel) runs inside its own statement, so a committed transition
//! always has its deliveries, and a rolled-back one none.

use chrono::{DateTime, Utc};
use jobs::LedgerError;
use jobs::kinds::webhook::{CALLBACK_MAX_ATTEMPTS, KIND, QUEUE, SubscriptionSecrets};
use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::Store;
use crate::audit::{self, AuditAction, AuditContext};
use crate::error::Error;
use crate::sql::NOTIFY_DUE;

/// The columns a transition's source rows give [`deliveries_cte`], as a `RETURNING` list
/// over `jobs` aliased `j` (besides `id, kind, queue, state`).
pub(crate) const TRANSITION_COLUMNS: &str = "j.callback_url, j.attempt AS wh_attempt, \
    j.max_attempts AS wh_max_attempts, j.result AS wh_result, j.last_error AS wh_error";

/// A CTE (`, webhook_deliveries AS (…)`, to follow other CTEs) inserting one
/// `webhook.deliver` job per delivery owed for the rows of CTE `source` (with
/// `id, kind, queue, state` and [`TRANSITION_COLUMNS`]): one per matching subscription,
/// and one to the job's `callback_url` when the state is final. Deliveries are
/// `scheduled` and due now, with the dispatchers woken at commit. With no subscription
/// and no callback it inserts nothing: a join with an empty table.
pub(crate) fn deliveries_cte(source: &str) -> String {
    format!(
        ", webhook_deliveries AS (\
           INSERT INTO jobs (id, kind, queue, args, state, max_attempts, attempt_budget, run_at) \
           SELECT conveyor_uuid_v7(), '{KIND}', '{QUEUE}', \
               jsonb_build_object('subscription_id', t.subscription_id, 'url', t.url, 'event', \
                   jsonb_build_object('type', 'job.' || t.state, 'timestamp', to_jsonb(now()), \
                       'data', jsonb_build_object('id', t.id, 'kind', t.kind, 'queue', t.queue, \
                           'state', t.state, 'attempt', t.wh_attempt, \
                           'max_attempts', t.wh_max_attempts) \
                       || CASE WHEN t.state = 'completed' \
                              THEN jsonb_build_object('result', t.wh_result) ELSE '{{}}' END \
                       || CASE WHEN t.state IN ('retrying', 'dead') AND t.wh_error IS NOT NULL \
                              THEN jsonb_build_object('error', t.wh_error) ELSE '{{}}' END)), \
               'scheduled', t.attempts, t.attempts, now() \
           FROM (SELECT s.id AS subscription_id, s.url, s.max_attempts AS attempts, c.id, c.kind, \
                     c.queue, c.state, c.wh_attempt, c.wh_max_attempts, c.wh_result, c.wh_error \
                 FROM {source} c JOIN webhook_subscriptions s \
                     ON c.kind LIKE s.kind_like AND c.state = ANY (s.states) \
                 WHERE c.kind <> '{KIND}' \
                 UNION ALL \
                 SELECT NULL, c.callback_url, {CALLBACK_MAX_ATTEMPTS}, c.id, c.kind, c.queue, \
                     c.state, c.wh_attempt, c.wh_max_attempts, c.wh_result, c.wh_error \
                 FROM {source} c \
                 WHERE c.callback_url IS NOT NULL \
                     AND c.state IN ('completed', 'dead', 'cancelled')) t \
           RETURNING {NOTIFY_DUE})"
    )
}

/// A subscription to record. Validated by the caller.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    /// Its id.
    pub id: Uuid,
    /// Where deliveries go.
    pub url: String,
    /// Kind glob (`order.*`, `*`).
    pub kind: String,
    /// The states delivered (`completed`, `dead`, …).
    pub states: Vec<String>,
    /// The `whsec_…` secret.
    pub secret: String,
    /// A note for people.
    pub description: Option<String>,
    /// Attempts of each delivery.
    pub max_attempts: u32,
}

/// A stored subscription, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionRecord {
    /// Its id.
    pub id: Uuid,
    /// Where deliveries go.
    pub url: String,
    /// Kind glob.
    pub kind: String,
    /// The states delivered.
    pub states: Vec<String>,
    /// A note for people.
    pub description: Option<String>,
    /// Attempts of each delivery.
    pub max_attempts: u32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// By whom.
    pub created_by: String,
}

const COLUMNS: &str = "id, url, kind, states, description, max_attempts, created_at, created_by";

fn record_of(row: &PgRow) -> Result<SubscriptionRecord, Error> {
    Ok(SubscriptionRecord {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        kind: row.try_get("kind")?,
        states: row.try_get("states")?,
        description: row.try_get("description")?,
        max_attempts: u32::try_from(row.try_get::<i32, _>("max_attempts")?).unwrap_or(1),
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

impl Store {
    /// Records a subscription and its `webhook.create` audit row in one transaction.
    ///
    /// # Errors
    /// When the database fails (nothing is stored).
    pub async fn create_subscription(
        &self,
        new: &NewSubscription,
        context: &AuditContext,
    ) -> Result<SubscriptionRecord, Error> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_subscriptions \
                 (id, url, kind, states, secret, description, max_attempts, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
        )))
        .bind(new.id)
        .bind(&new.url)
        .bind(&new.kind)
        .bind(&new.states)
        .bind(&new.secret)
        .bind(&new.description)
        .bind(i32::try_from(new.max_attempts).unwrap_or(i32::MAX))
        .bind(&context.actor.name)
        .fetch_one(&mut *tx)
        .await?;
        let record = record_of(&row)?;
        audit::record(
            &mut tx,
            context,
            AuditAction::WebhookCreate,
            &[record.id],
            1,
            Some(serde_json::json!({
                "url": record.url, "kind": record.kind, "states": record.states,
            })),
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Every subscription, newest first.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn subscriptions(&self) -> Result<Vec<SubscriptionRecord>, Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM webhook_subscriptions ORDER BY created_at DESC, id DESC"
        )))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record_of).collect()
    }

    /// One subscription.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn subscription(&self, id: Uuid) -> Result<Option<SubscriptionRecord>, Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM webhook_subscriptions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(record_of).transpose()
    }

    /// Deletes a subscription with its `webhook.delete` audit row: no delivery is made
    /// for it afterwards (deliveries already owed complete without sending). `None`:
    /// no such subscription, nothing recorded.
    ///
    /// # Errors
    /// When the database fails (nothing changed).
    pub async fn delete_subscription(
        &self,
        id: Uuid,
        context: &AuditContext,
    ) -> Result<Option<SubscriptionRecord>, Error> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM webhook_subscriptions WHERE id = $1 RETURNING {COLUMNS}"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let record = record_of(&row)?;
        audit::record(
            &mut tx,
            context,
            AuditAction::WebhookDelete,
            &[id],
            1,
            Some(serde_json::json!({ "url": record.url })),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(record))
    }
}

impl SubscriptionSecrets for Store {
    async fn secret(&self, id: Uuid) -> Result<Option<String>, LedgerError> {
        let row = sqlx::query("SELECT secret FROM webhook_subscriptions WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(Error::from)?;
        Ok(row
            .map(|r| r.try_get::<String, _>("secret"))
            .transpose()
            .map_err(Error::from)?)
    }
}
