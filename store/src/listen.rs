//! Waking dispatchers: transactions that make work due now send `NOTIFY` on
//! [`DUE_CHANNEL`] (delivered when they commit), and a dispatcher waits on a
//! [`DueListener`] instead of polling. The channel's name is defined here once, for the
//! senders and the listener alike.

use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::Store;
use crate::error::Error;

/// The Postgres channel that wakes dispatchers (`NOTIFY conveyor_due`).
pub const DUE_CHANNEL: &str = due_channel!();

/// What [`DueListener::wait`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// At least one transaction made work due (every wake-up already received counts as
    /// this one).
    Notified,
    /// Nothing arrived in time.
    TimedOut,
    /// The connection was lost: wake-ups sent meanwhile were missed, so look for due
    /// work (the next wait connects again).
    Lost,
}

/// A dedicated connection listening on [`DUE_CHANNEL`].
pub struct DueListener {
    listener: PgListener,
}

impl std::fmt::Debug for DueListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DueListener").finish_non_exhaustive()
    }
}

impl DueListener {
    /// Opens a connection with `store`'s settings and listens on [`DUE_CHANNEL`].
    ///
    /// # Errors
    /// When Postgres is unreachable or refuses.
    pub async fn connect(store: &Store) -> Result<Self, Error> {
        let mut listener = PgListener::connect_with(store.pool()).await?;
        listener.listen(DUE_CHANNEL).await?;
        Ok(Self { listener })
    }

    /// Waits up to `limit` for a wake-up. Wake-ups that arrived together are consumed
    /// as one: a busy system (an order per millisecond, each enqueueing its email) wakes
    /// the dispatcher once per round, not once per transaction.
    ///
    /// # Errors
    /// When the database failed otherwise (it refused, or the pool is closed).
    pub async fn wait(&mut self, limit: Duration) -> Result<Wake, Error> {
        match tokio::time::timeout(limit, self.listener.try_recv()).await {
            Err(_) => Ok(Wake::TimedOut),
            Ok(Ok(Some(_))) => {
                while self.listener.next_buffered().is_some() {}
                Ok(Wake::Notified)
            }
            Ok(Ok(None)) => Ok(Wake::Lost),
            Ok(Err(e)) => Err(e.into()),
        }
    }
}
