//! How jobs are remembered: the Postgres ledger of jobs, attempts, dead letters and
//! workers, its embedded migrations, and every query Conveyor runs. Queries are checked
//! at run time (`sqlx::query`), not at compile time, so building needs no database.
//!
//! # Layout
//! - [`stats`] — per-queue numbers for `conveyor stats` and `/metrics`.
//! - [`settings`] — [`DatabaseSettings`] and connecting.
//! - [`ledger`] — the [`Store`] and its queries.
//! - [`dead`] — dead letters and operator actions (replay, purge, cancel, retry).
//! - [`error`] — [`Error`], with constraint violations mapped to meaning.

pub mod dead;
pub mod error;
pub mod ledger;
pub mod settings;
pub mod stats;

pub use dead::{
    AttemptRecord, CancelOutcome, DeadFilter, DeadLetter, DeadLetterDetail, ErrorGroup,
    ReplayOutcome, RetryOutcome,
};
pub use error::Error;
pub use ledger::{
    Claim, ClaimedJob, DueJob, Finish, Insert, JobQuery, JobRecord, NewJob, Outcome, Store,
    WorkerId,
};
pub use settings::DatabaseSettings;
pub use stats::QueueStats;

/// The schema's migrations, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
