//! Errors at the job boundary: the handler's verdict ([`JobError`]), what intake
//! validation reports ([`ValidationErrors`]), registry mistakes, and what a business
//! port's database can report ([`LedgerError`]).

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// A boxed error, the source of a [`JobError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The verdict of a handler that did not succeed. The executor turns it into a
/// ledger transition; the handler never touches the broker.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Transient: retried with backoff while attempts remain, then dead.
    #[error("{0}")]
    Retry(#[source] BoxError),
    /// Permanent: never retried (bad input, a business rule). The job is dead now.
    #[error("{0}")]
    Fail(#[source] BoxError),
    /// Not ready: run again after `after` without consuming an attempt.
    #[error("snoozed for {after:?}")]
    Snooze {
        /// How long to wait before the next run.
        after: Duration,
    },
}

impl JobError {
    /// A transient failure with this error.
    pub fn retry(err: impl Into<BoxError>) -> Self {
        JobError::Retry(err.into())
    }

    /// A permanent failure with this error.
    pub fn fail(err: impl Into<BoxError>) -> Self {
        JobError::Fail(err.into())
    }

    /// Run again after `after`, consuming no attempt.
    pub fn snooze(after: Duration) -> Self {
        JobError::Snooze { after }
    }
}

/// Turns any error into a verdict: `.retry()?` for transient failures, `.fail()?` for
/// permanent ones.
pub trait ResultExt<T> {
    /// Maps the error to [`JobError::Retry`].
    ///
    /// # Errors
    /// The original error, as a retry verdict.
    fn retry(self) -> Result<T, JobError>;
    /// Maps the error to [`JobError::Fail`].
    ///
    /// # Errors
    /// The original error, as a permanent failure.
    fn fail(self) -> Result<T, JobError>;
}

impl<T, E: Into<BoxError>> ResultExt<T> for Result<T, E> {
    fn retry(self) -> Result<T, JobError> {
        self.map_err(JobError::retry)
    }

    fn fail(self) -> Result<T, JobError> {
        self.map_err(JobError::fail)
    }
}

/// One invalid field: its path (`args.items[2].quantity`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Dotted path of the field, with `[i]` for array elements.
    pub field: String,
    /// What was wrong, for a person.
    pub message: String,
}

/// Everything wrong with one input, field by field. Empty means valid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One error.
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, message);
        errors
    }

    /// Adds an error for `field`.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// True when nothing was wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when empty, otherwise `Err(self)`.
    ///
    /// # Errors
    /// Self, when any field was invalid.
    pub fn into_result(self) -> Result<(), Self> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }

    /// The same errors with every path put under `prefix` (`args` + `items[0]` →
    /// `args.items[0]`).
    pub fn prefixed(self, prefix: &str) -> Self {
        Self(
            self.0
                .into_iter()
                .map(|e| FieldError {
                    field: join_path(prefix, &e.field),
                    message: e.message,
                })
                .collect(),
        )
    }

    /// Appends another set of errors.
    pub fn extend(&mut self, other: ValidationErrors) {
        self.0.extend(other.0);
    }
}

/// Joins a prefix and a field path: `args` + `items[0]` → `args.items[0]`,
/// `args` + `` → `args`.
pub fn join_path(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty()) {
        (true, _) => field.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) if field.starts_with('[') => format!("{prefix}{field}"),
        (false, false) => format!("{prefix}.{field}"),
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// A business port's database work failed (placing an order, recording a sent email).
/// Always infrastructure, never the job's fault: handlers answer it with a retry.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database is unreachable, busy, or asked for the transaction to be retried
    /// (a serialization failure, a deadlock, a lost connection).
    #[error("database unavailable")]
    Transient(#[source] BoxError),
    /// The job is no longer this attempt's to complete (rescued or cancelled while it
    /// ran); the transaction was rolled back and nothing was written.
    #[error("the job is no longer running as this attempt; nothing was written")]
    NotRunning,
    /// Any other database failure.
    #[error("database error")]
    Other(#[source] BoxError),
}

/// A second handler was registered for a kind that already has one.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The kind is already registered.
    #[error("job kind {0:?} is registered twice")]
    DuplicateKind(&'static str),
}

/// No handler is registered for this kind. A value, not a panic: the executor records
/// it and the job is dead-lettered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown job kind {0:?}")]
pub struct UnknownKind(pub String);
