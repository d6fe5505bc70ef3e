//! What a job is and what doing it means: kinds, arguments, validation, the handler
//! trait, the registry of kinds, verdicts and retry policy. Nothing here knows about
//! RabbitMQ, HTTP or SQL; the adapters (`broker`, `store`, `producer`, `worker`) build on it.
//!
//! # Layout
//! - [`model`] — identities and the stored vocabularies ([`JobId`], [`JobState`],
//!   [`AttemptOutcome`], [`DeadReason`], [`Envelope`]).
//! - [`record`] — the ledger's nouns without SQL ([`NewJob`], [`JobRecord`],
//!   [`WorkerId`], an attempt's [`Outcome`]).
//! - [`event`] — a job's transition as a live event ([`JobEvent`]) and the per-job
//!   ordering of events ([`Cursor`]).
//! - [`error`] — the handler's verdict ([`JobError`]) and intake validation errors.
//! - [`handler`] — [`JobArgs`], [`Handler`], [`Job`], per-kind [`JobOptions`].
//! - [`registry`] — kind → handler ([`Registry`]) and kind → validator ([`Catalog`]).
//! - [`schedule`] — periodic jobs: cron in a time zone, slots, catch-up and overlap
//!   policies, and the daylight-saving rules.
//! - [`backoff`] — exponential backoff with full jitter.
//! - [`trace`] — W3C trace context carried from the request to every attempt.
//! - [`domain`] — validated values the business kinds share ([`EmailAddress`],
//!   [`Currency`], money in minor units).
//! - [`kinds`] — the kinds Conveyor ships: `noop`, `order.process`, `email.send`.

pub mod backoff;
pub mod domain;
pub mod error;
pub mod event;
pub mod handler;
pub mod kinds;
pub mod model;
pub mod record;
pub mod registry;
pub mod schedule;
pub mod trace;

pub use backoff::RetryPolicy;
pub use domain::{Currency, EmailAddress};
pub use error::{
    FieldError, JobError, LedgerError, RegistryError, ResultExt, UnknownKind, ValidationErrors,
};
pub use event::{Cursor, JobEvent};
pub use handler::{Handler, Job, JobArgs, JobMeta, JobOptions};
pub use model::{AttemptOutcome, DeadReason, Envelope, JobId, JobState, UnknownName};
pub use record::{JobRecord, NewJob, Outcome, WorkerId};
pub use registry::{Catalog, KindSpec, Registry};
pub use trace::TraceContext;
