//! How jobs are remembered: the Postgres ledger of jobs, attempts, dead letters and
//! workers, the shipped kinds' business tables (products, orders, sent emails), its
//! embedded migrations, and every query Conveyor runs. Queries are checked
//! at run time (`sqlx::query`), not at compile time, so building needs no database.
//!
//! # Layout
//! - [`stats`] — per-queue numbers for `conveyor stats` and `/metrics`.
//! - [`settings`] — [`DatabaseSettings`] and connecting.
//! - [`ledger`] — the [`Store`] and its queries.
//! - [`dead`] — dead letters and operator actions (replay, purge, cancel, retry).
//! - [`orders`] — `order.process`'s port ([`jobs::kinds::order::OrderLedger`]), the
//!   product catalog and its CSV format.
//! - [`emails`] — `email.send`'s record of sent messages ([`jobs::kinds::email::SentLog`]).
//! - [`error`] — [`Error`], with constraint violations mapped to meaning.

pub mod coalesce;
pub mod dead;
pub mod emails;
pub mod error;
pub mod ledger;
pub mod orders;
pub mod settings;
pub mod stats;

pub use coalesce::Coalescer;
pub use dead::{
    AttemptRecord, CancelOutcome, DeadFilter, DeadLetter, DeadLetterDetail, ErrorGroup,
    ReplayOutcome, RetryOutcome,
};
pub use error::Error;
pub use ledger::{
    Claim, ClaimedJob, DueJob, Finish, Finished, Insert, JobQuery, JobRecord, NewJob, Outcome,
    Store, WorkerId,
};
pub use orders::{CatalogError, parse_catalog};
pub use settings::DatabaseSettings;
pub use stats::QueueStats;

/// The schema's migrations, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
