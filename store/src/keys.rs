//! API keys as stored: name, role, the kinds and queues a key may touch, its SHA-256
//! hash (never the key), expiry, revocation and when it was last used. Creating and
//! revoking a key write their audit row in the same transaction; every intake reloads
//! its key cache from here on a short interval ([`Store::active_keys`]).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::Store;
use crate::audit::{self, AuditAction, AuditContext};
use crate::error::Error;

/// A key to record. The role and globs are already validated by the caller.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Its id.
    pub id: Uuid,
    /// A name for people (`web-shop`).
    pub name: String,
    /// `producer`, `viewer`, `operator` or `admin`.
    pub role: String,
    /// Kind globs; empty: every kind.
    pub kinds: Vec<String>,
    /// Queues; empty: every queue.
    pub queues: Vec<String>,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A stored key (without its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyRecord {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Kind globs; empty: every kind.
    pub kinds: Vec<String>,
    /// Queues; empty: every queue.
    pub queues: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// By whom.
    pub created_by: String,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last request seen with it (written late, in bulk).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// By whom.
    pub revoked_by: Option<String>,
}

/// A key as intake checks it: the record and its hash.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// The record.
    pub record: ApiKeyRecord,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// Revoked now.
    Revoked(ApiKeyRecord),
    /// It was revoked before (nothing changed).
    AlreadyRevoked(ApiKeyRecord),
    /// No such key.
    NotFound,
}

const KEY_COLUMNS: &str = "id, name, role, kinds, queues, created_at, created_by, expires_at, \
    last_used_at, revoked_at, revoked_by";

fn record_of(row: &PgRow) -> Result<ApiKeyRecord, Error> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        kinds: row.try_get("kinds")?,
        queues: row.try_get("queues")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_by: row.try_get("revoked_by")?,
    })
}

impl Store {
    /// Records a new key and its `key.create` audit row in one transaction.
    ///
    /// # Errors
    /// When the database fails (nothing is stored).
    pub async fn create_key(
        &self,
        key: &NewApiKey,
        context: &AuditContext,
    ) -> Result<ApiKeyRecord, Error> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO api_keys (id, name, role, kinds, queues, hash, created_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {KEY_COLUMNS}"
        )))
        .bind(key.id)
        .bind(&key.name)
        .bind(&key.role)
        .bind(&key.kinds)
        .bind(&key.queues)
        .bind(key.hash.as_slice())
        .bind(&context.actor.name)
        .bind(key.expires_at)
        .fetch_one(&mut *tx)
        .await?;
        let record = record_of(&row)?;
        let detail = serde_json::json!({
            "name": record.name, "role": record.role, "kinds": record.kinds,
            "queues": record.queues, "expires_at": record.expires_at,
        });
        audit::record(
            &mut tx,
            context,
            AuditAction::KeyCreate,
            &[record.id],
            1,
            Some(detail),
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Revokes a key (it stops working in every intake within a second) and records
    /// the `key.revoke` audit row in the same transaction. Revoking a revoked key
    /// changes nothing and records nothing.
    ///
    /// # Errors
    /// When the database fails (nothing changed).
    pub async fn revoke_key(
        &self,
        id: Uuid,
        context: &AuditContext,
    ) -> Result<RevokeOutcome, Error> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE api_keys SET revoked_at = now(), revoked_by = $2 \
             WHERE id = $1 AND revoked_at IS NULL RETURNING {KEY_COLUMNS}"
        )))
        .bind(id)
        .bind(&context.actor.name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            drop(tx);
            return Ok(match self.key(id).await? {
                Some(record) => RevokeOutcome::AlreadyRevoked(record),
                None => RevokeOutcome::NotFound,
            });
        };
        let record = record_of(&row)?;
        let detail = serde_json::json!({ "name": record.name, "role": record.role });
        audit::record(
            &mut tx,
            context,
            AuditAction::KeyRevoke,
            &[id],
            1,
            Some(detail),
        )
        .await?;
        tx.commit().await?;
        Ok(RevokeOutcome::Revoked(record))
    }

    /// One key by id.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn key(&self, id: Uuid) -> Result<Option<ApiKeyRecord>, Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(record_of).transpose()
    }

    /// Every key, revoked ones included, newest first.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn keys(&self) -> Result<Vec<ApiKeyRecord>, Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at DESC, id DESC"
        )))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record_of).collect()
    }

    /// The keys an intake should accept (not revoked; expired ones too, as the intake
    /// checks expiry against its clock at each request), and whether any key was ever
    /// created (then authentication is on, even when every key is revoked).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn active_keys(&self) -> Result<(Vec<StoredKey>, bool), Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS}, hash FROM api_keys WHERE revoked_at IS NULL"
        )))
        .fetch_all(self.pool())
        .await?;
        let keys = rows
            .iter()
            .map(|row| {
                let bytes: Vec<u8> = row.try_get("hash")?;
                let hash: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| Error::Corrupt("an api_keys hash is not 32 bytes".into()))?;
                Ok(StoredKey {
                    record: record_of(row)?,
                    hash,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let any = if keys.is_empty() {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys)")
                .fetch_one(self.pool())
                .await?
        } else {
            true
        };
        Ok((keys, any))
    }

    /// Notes that these keys were used at `at`, in one statement (intake calls it in
    /// the background, a few times a minute, never per request).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn touch_keys(&self, ids: &[Uuid], at: DateTime<Utc>) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $2 \
             WHERE id = ANY($1) AND (last_used_at IS NULL OR last_used_at < $2)",
        )
        .bind(ids)
        .bind(at)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
