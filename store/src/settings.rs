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
        let (url, _) = split_target_session_attrs(self.url.expose_secret());
        let options = PgConnectOptions::from_str(&url)?
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
        let read_write = self.requires_read_write()?;
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
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if read_write {
                        refuse_read_only(conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(self.connect_options()?))
    }

    /// True when the URL says `target_session_attrs=read-write` (or `primary`): every
    /// new connection must accept writes. libpq's parameter, which sqlx does not know:
    /// Conveyor takes it out of the URL and checks each connection itself, so that after
    /// a managed failover a connection that reached the old primary, now a standby, is
    /// dropped and retried instead of failing every write.
    ///
    /// # Errors
    /// A value other than `any`, `read-write` or `primary`.
    pub fn requires_read_write(&self) -> Result<bool, Error> {
        match split_target_session_attrs(self.url.expose_secret())
            .1
            .as_deref()
        {
            None | Some("any") => Ok(false),
            Some("read-write" | "primary") => Ok(true),
            Some(other) => Err(Error::Sqlx(sqlx::Error::Configuration(
                format!(
                    "target_session_attrs={other} is not supported (use read-write, primary or any)"
                )
                .into(),
            ))),
        }
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

/// The URL without its `target_session_attrs` parameter, and that parameter's value.
fn split_target_session_attrs(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut value = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some(("target_session_attrs", v)) => {
                value = Some(v.to_owned());
                false
            }
            _ => true,
        })
        .collect();
    if kept.is_empty() {
        (base.to_owned(), value)
    } else {
        (format!("{base}?{}", kept.join("&")), value)
    }
}

/// Fails a new connection to a server that accepts only read-only sessions (a standby,
/// or a primary being demoted). The pool drops it and connects again with backoff, until
/// `acquire_timeout_ms`: callers then see a pool timeout, a transient error (503 at the
/// intake, a held delivery in a worker).
async fn refuse_read_only(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    let read_only: String = sqlx::query_scalar("SHOW transaction_read_only")
        .fetch_one(&mut *conn)
        .await?;
    if read_only == "on" {
        return Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "the server accepts only read-only sessions (target_session_attrs=read-write)",
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_session_attrs_is_taken_out_of_the_url() {
        assert_eq!(
            split_target_session_attrs("postgres://u@h/db?target_session_attrs=read-write"),
            (
                "postgres://u@h/db".to_owned(),
                Some("read-write".to_owned())
            )
        );
        assert_eq!(
            split_target_session_attrs(
                "postgres://u@h/db?sslmode=require&target_session_attrs=any&application_name=x"
            ),
            (
                "postgres://u@h/db?sslmode=require&application_name=x".to_owned(),
                Some("any".to_owned())
            )
        );
        assert_eq!(
            split_target_session_attrs("postgres://u@h/db"),
            ("postgres://u@h/db".to_owned(), None)
        );
    }

    #[test]
    fn only_known_session_attributes_are_accepted() {
        let with = |attrs: &str| DatabaseSettings {
            url: SecretString::from(format!("postgres://u@h/db?target_session_attrs={attrs}")),
            ..DatabaseSettings::default()
        };
        assert!(with("read-write").requires_read_write().unwrap());
        assert!(with("primary").requires_read_write().unwrap());
        assert!(!with("any").requires_read_write().unwrap());
        assert!(!DatabaseSettings::default().requires_read_write().unwrap());
        assert!(with("standby").requires_read_write().is_err());
    }
}
