//! The intake's key cache. Checking a key touches no database: the keys configured as
//! hashes (`producer.api_keys`, admins) and a snapshot of the stored keys are compared
//! in constant time, and the snapshot is reloaded in the background every refresh
//! interval (a second or less), so a revoked key stops working in every running intake
//! within that interval. Expiry is checked against the clock at each request. Keys used
//! are noted in memory and written to `last_used_at` in bulk, in the background.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use store::Store;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::key::KeyHash;
use crate::principal::Principal;

/// Why a request is not authenticated (a 401). None of them holds the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("an API key is required: send Authorization: Bearer <key>")]
    Missing,
    /// No such key (or revoked).
    #[error("the API key is not valid")]
    Invalid,
    /// The key expired.
    #[error("the API key has expired")]
    Expired,
}

struct Entry {
    hash: KeyHash,
    principal: Arc<Principal>,
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct Snapshot {
    keys: Vec<Entry>,
    /// Whether any key was ever stored (then authentication is on, for good).
    any_stored: bool,
}

/// The keys an intake accepts.
pub struct KeyRing {
    configured: Vec<KeyHash>,
    store: Option<Store>,
    snapshot: RwLock<Arc<Snapshot>>,
    used: Mutex<HashSet<Uuid>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("configured", &self.configured.len())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// A ring of the `configured` hashes and, with a `store`, the stored keys (empty
    /// until the first [`KeyRing::refresh`]).
    pub fn new(configured: Vec<KeyHash>, store: Option<Store>) -> Self {
        Self {
            configured,
            store,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            used: Mutex::new(HashSet::new()),
        }
    }

    /// True when keys are required: some are configured, or any was ever stored.
    /// Otherwise the intake is open (and serves on loopback only).
    pub fn protected(&self) -> bool {
        !self.configured.is_empty() || self.current().any_stored
    }

    fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reloads the stored keys.
    ///
    /// # Errors
    /// When the database fails (the previous snapshot stays in use).
    pub async fn refresh(&self) -> Result<(), store::Error> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let (stored, any_stored) = store.active_keys().await?;
        let keys = stored
            .into_iter()
            .filter_map(|key| match Principal::of_key(&key.record) {
                Ok(principal) => Some(Entry {
                    hash: KeyHash(key.hash),
                    principal: Arc::new(principal),
                    expires_at: key.record.expires_at,
                }),
                Err(e) => {
                    tracing::warn!(key_id = %key.record.id, error = %e, "refusing a stored key that does not parse");
                    None
                }
            })
            .collect();
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(Snapshot { keys, any_stored });
        Ok(())
    }

    /// The principal a request runs as. With no keys anywhere, every client of the
    /// (loopback-only) intake is [`Principal::local`].
    ///
    /// # Errors
    /// A missing, unknown, revoked or expired key.
    pub fn authenticate(
        &self,
        presented: Option<&str>,
        client: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<Arc<Principal>, AuthError> {
        let snapshot = self.current();
        if self.configured.is_empty() && !snapshot.any_stored {
            return Ok(Arc::new(Principal::local(client)));
        }
        let presented = presented.ok_or(AuthError::Missing)?;
        let hash = KeyHash::of(presented);
        // Compare with every key, so the time taken says nothing about which matched.
        let mut configured = None;
        for (i, candidate) in self.configured.iter().enumerate() {
            if candidate.ct_eq(&hash) {
                configured = Some(i);
            }
        }
        let mut stored = None;
        for entry in &snapshot.keys {
            if entry.hash.ct_eq(&hash) {
                stored = Some(entry);
            }
        }
        if let Some(index) = configured {
            return Ok(Arc::new(Principal::configured(index)));
        }
        let entry = stored.ok_or(AuthError::Invalid)?;
        if entry.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::Expired);
        }
        if let Some(id) = entry.principal.actor.id {
            self.used
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id);
        }
        Ok(Arc::clone(&entry.principal))
    }

    /// Writes the keys used since the last call to `last_used_at`, in one statement.
    pub async fn flush_used(&self) {
        let Some(store) = &self.store else { return };
        let ids: Vec<Uuid> =
            std::mem::take(&mut *self.used.lock().unwrap_or_else(PoisonError::into_inner))
                .into_iter()
                .collect();
        if let Err(e) = store.touch_keys(&ids, Utc::now()).await {
            tracing::warn!(error = %e, keys = ids.len(), "could not note when keys were last used");
        }
    }

    /// Keeps the ring current until `shutdown`: reloads the stored keys every
    /// `refresh` and notes last use every `touch`, and once more at the end.
    pub async fn run(
        self: Arc<Self>,
        refresh: Duration,
        touch: Duration,
        shutdown: CancellationToken,
    ) {
        if self.store.is_none() {
            return;
        }
        let mut reload = tokio::time::interval(refresh);
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut note = tokio::time::interval(touch);
        note.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = reload.tick() => {
                    // Bounded: a hung database must not freeze the snapshot silently.
                    let result = tokio::time::timeout(refresh.max(Duration::from_secs(1)) * 5, self.refresh()).await;
                    match result {
                        Ok(Ok(())) => {
                            if failing {
                                tracing::info!("API keys reloaded again");
                            }
                            failing = false;
                        }
                        Ok(Err(e)) if !failing => {
                            failing = true;
                            tracing::warn!(error = %e, "cannot reload API keys; the last loaded keys stay in use");
                        }
                        Err(_) if !failing => {
                            failing = true;
                            tracing::warn!("reloading API keys timed out; the last loaded keys stay in use");
                        }
                        _ => {}
                    }
                }
                _ = note.tick() => self.flush_used().await,
            }
        }
        self.flush_used().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::ApiKey;

    #[test]
    fn without_any_key_every_client_is_local() {
        let ring = KeyRing::new(Vec::new(), None);
        assert!(!ring.protected());
        let principal = ring
            .authenticate(None, IpAddr::from([127, 0, 0, 1]), Utc::now())
            .unwrap();
        assert_eq!(principal.actor.kind, store::ActorKind::Local);
    }

    #[test]
    fn configured_keys_are_admins_and_others_are_refused() {
        let key = ApiKey::generate().unwrap();
        let ring = KeyRing::new(vec![key.hash()], None);
        let at = IpAddr::from([127, 0, 0, 1]);
        assert!(ring.protected());
        let admin = ring
            .authenticate(Some(key.expose()), at, Utc::now())
            .unwrap();
        assert_eq!(admin.actor.name, "producer.api_keys[0]");
        assert_eq!(
            ring.authenticate(Some("cvk_wrong"), at, Utc::now()),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            ring.authenticate(None, at, Utc::now()),
            Err(AuthError::Missing)
        );
    }
}
