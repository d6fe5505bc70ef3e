//! Database settings and connecting.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::error::Error;

/// A pooled connection idle at least this long is pinged before it is handed out.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(1);

/// How to reach Postgres. `url` is a secret: it may hold a password.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/database`.
    #[serde(serialize_with = "expose")]
    pub url: SecretString,
    /// Pool size.
    pub max_connections: u32,
    /// How long to wait for a pooled connection (and to connect) before failing.
    pub acquire_timeout_ms: u64,
    /// Server-side bound on any one statement.
    pub statement_timeout_ms: u64,
}

fn expose<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://postgres@127.0.0.1:5432/conveyor"),
            max_connections: 16,
            acquire_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
        }
    }
}

impl DatabaseSettings {
    /// Parsed connection options (statement timeout applied, statements not logged).
    ///
    /// # Errors
    /// When the URL is not a valid Postgres URL.
    pub fn connect_options(&self) -> Result<PgConnectOptions, Error> {
        let options = PgConnectOptions::from_str(self.url.expose_secret())?
            .options([(
                "statement_timeout",
                format!("{}ms", self.statement_timeout_ms),
            )])
            .application_name("conveyor");
        Ok(options)
    }

    /// A pool that connects lazily: start-up does not fail while Postgres is down;
    /// each use waits at most `acquire_timeout_ms`.
    ///
    /// # Errors
    /// When the URL is invalid.
    pub fn pool(&self) -> Result<PgPool, Error> {
        Ok(PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_millis(self.acquire_timeout_ms))
            // A connection idle for a while is checked before use (a database restart
            // leaves the pool holding dead ones); one in steady use is not, which would
            // add a round trip to every statement. One that died while in use fails its
            // statement with a transient error, which callers retry.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_CHECK_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(self.connect_options()?))
    }

    /// Creates the database named in the URL if it does not exist yet (so the quick
    /// start needs no `createdb`).
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub async fn ensure_database(&self) -> Result<(), Error> {
        let url = self.url.expose_secret();
        if !Postgres::database_exists(url).await? {
            match Postgres::create_database(url).await {
                Ok(()) => tracing::info!("created database"),
                // Another process created it between the check and the create.
                Err(e) if Postgres::database_exists(url).await.unwrap_or(false) => {
                    tracing::debug!(error = %e, "database appeared concurrently");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
