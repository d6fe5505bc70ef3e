//! Errors of the ledger.

/// A ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The idempotency key is taken by a job with different content.
    #[error("idempotency key {0:?} was used for a different job")]
    IdempotencyConflict(String),
    /// The database could not be reached or refused the query.
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The operation did not finish in time.
    #[error("database operation timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A stored name is not in its vocabulary (a state, an outcome, a reason).
    #[error("corrupt row")]
    UnknownName(#[from] jobs::UnknownName),
    /// A value this store writes does not serialize.
    #[error("{what} does not serialize")]
    Serialize {
        /// What was being serialized.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value does not decode.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A batched statement this operation was part of failed (its error is the source,
    /// shared by every request of the batch).
    #[error("batched write failed")]
    Batch(#[source] std::sync::Arc<Error>),
    /// The task that batches these writes has stopped (the process is shutting down).
    #[error("the batching task stopped")]
    BatcherStopped,
}

impl Error {
    /// True when retrying later may succeed (the database is down, busy or slow), as
    /// opposed to a query that will fail the same way again.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout(_) => true,
            Error::Batch(source) => source.is_transient(),
            Error::BatcherStopped => true,
            Error::Sqlx(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Tls(_)
                        | sqlx::Error::Protocol(_)
                ) || e
                    .as_database_error()
                    .and_then(|d| d.code())
                    // 08: connection exception, 53: insufficient resources, 57P: operator
                    // intervention (shutdown, terminated backend), 55000: the database is
                    // not accepting connections, 40001/40P01: serialization / deadlock,
                    // 25006: read-only transaction (the server was demoted by a failover;
                    // the pool's next connections find the new primary).
                    .is_some_and(|c| {
                        c == "25006"
                            || c.starts_with("08")
                            || c.starts_with("53")
                            || c.starts_with("57P")
                            || c == "55000"
                            || c == "40001"
                            || c == "40P01"
                    })
            }
            _ => false,
        }
    }
}

impl From<Error> for jobs::LedgerError {
    /// A business port's failure: transient when retrying later may succeed.
    fn from(e: Error) -> Self {
        if e.is_transient() {
            jobs::LedgerError::Transient(Box::new(e))
        } else {
            jobs::LedgerError::Other(Box::new(e))
        }
    }
}
