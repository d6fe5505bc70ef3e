//! How jobs are remembered: the Postgres ledger of jobs, attempts, dead letters and
//! workers, the shipped kinds' business tables (products, orders, sent emails), its
//! embedded migrations, and every query Conveyor runs. Queries are checked
//! at run time (`sqlx::query`), not at compile time, so building needs no database.
//!
//! # Layout: one module per owner of a transition
//! - [`intake`] — the producer's inserts: the one `INSERT INTO jobs` path.
//! - [`claim`] — a worker's claim (`enqueued` → `running`).
//! - [`settle`] — every way a job leaves `running` (or, for the archive, any unfinished
//!   state): completion, retry, snooze, failure, loss, dead-lettering. The one place a
//!   settlement's effects are written; see its docs to add an outcome or an effect.
//! - [`dispatch`] — the dispatcher's scans (`take_due`, `next_due_in`) and a handler's
//!   transactional enqueue of a follow-up job.
//! - [`workers`] — heartbeats, deregistration and the rescue of orphans (through
//!   [`settle`]).
//! - [`archive`] — the dead-letter queue's messages (through [`settle`] for a job).
//! - [`dead`] — dead letters and operator actions (replay, purge, cancel, retry).
//! - [`query`] — reading jobs: one by id, or a filtered page.
//! - [`stats`] — per-queue numbers for `conveyor stats` and `/metrics`.
//! - [`settings`] — [`DatabaseSettings`] and connecting.
//! - [`coalesce`] — [`Coalescer`], one statement for concurrent requests.
//! - [`keys`] — API keys (hashes, roles, globs, expiry, revocation).
//! - [`audit`] — the append-only audit log, written by each operator action (`dead`)
//!   and key change (`keys`) inside its own transaction.
//! - [`listen`] — [`DueListener`], waking dispatchers on [`DUE_CHANNEL`].
//! - [`orders`] — `order.process`'s port ([`jobs::kinds::order::OrderLedger`]), the
//!   product catalog and its CSV format.
//! - [`schedules`] — schedule rows and taking a slot (the cursor's compare-and-set).
//! - [`emails`] — `email.send`'s record of sent messages ([`jobs::kinds::email::SentLog`]).
//! - [`mailbox`] — the development mailbox `conveyor run` delivers to without an SMTP
//!   server.
//! - [`webhooks`] — webhook subscriptions (audited), their secrets
//!   ([`jobs::kinds::webhook::SubscriptionSecrets`]), and the deliveries each transition
//!   owes, inserted inside the transition's own statement.
//! - [`error`] — [`Error`], with constraint violations mapped to meaning.

/// The name of the Postgres channel that wakes dispatchers, as a literal, so that SQL
/// text can be built from it at compile time ([`DUE_CHANNEL`] is its value).
macro_rules! due_channel {
    () => {
        "conveyor_due"
    };
}

pub mod archive;
pub mod audit;
pub mod claim;
pub mod coalesce;
pub mod dead;
pub mod dispatch;
pub mod emails;
pub mod error;
pub mod intake;
pub mod keys;
pub mod listen;
pub mod mailbox;
pub mod orders;
pub mod query;
pub mod schedules;
pub mod settings;
pub mod settle;
mod sql;
pub mod stats;
pub mod webhooks;
pub mod workers;

use sqlx::PgPool;

pub use archive::DeadMessage;
pub use audit::{Actor, ActorKind, AuditAction, AuditContext, AuditQuery, AuditRecord};
pub use claim::{Claim, ClaimedJob};
pub use coalesce::Coalescer;
pub use dead::{
    AttemptRecord, CancelOutcome, DeadFilter, DeadLetter, DeadLetterDetail, ErrorGroup,
    ReplayOutcome, RetryOutcome,
};
pub use dispatch::DueJob;
pub use error::Error;
pub use intake::Insert;
pub use keys::{ApiKeyRecord, NewApiKey, RevokeOutcome, StoredKey};
pub use listen::{DUE_CHANNEL, DueListener, Wake};
pub use mailbox::{DevMail, NewDevMail};
pub use orders::{CatalogError, parse_catalog};
pub use query::JobQuery;
pub use schedules::{ConfigSync, Firing, ScheduleChange, ScheduleRecord, ScheduleSource};
pub use settings::DatabaseSettings;
pub use settle::{Ending, SettleReport, Settled, Settlement};
pub use stats::QueueStats;
pub use webhooks::{NewSubscription, SubscriptionRecord};

/// The schema's migrations, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The ledger: a pool and every query, grouped by module.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// A store over a lazily connecting pool.
    ///
    /// # Errors
    /// When the URL is invalid.
    pub fn connect(settings: &DatabaseSettings) -> Result<Self, Error> {
        Ok(Self {
            pool: settings.pool()?,
        })
    }

    /// A store over an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool, for callers that compose their own transactions (tests, handlers'
    /// adapters).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations.
    ///
    /// # Errors
    /// When a migration fails or the database is unreachable.
    pub async fn migrate(&self) -> Result<(), Error> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Checks the database answers.
    ///
    /// # Errors
    /// When it does not.
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
