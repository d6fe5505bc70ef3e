//! The principal a request or a command runs as: its scopes, the kinds and queues it
//! may touch, and the actor its audit rows name.

use std::net::IpAddr;

use store::{Actor, ActorKind, ApiKeyRecord, AuditContext};

use crate::glob::Glob;
use crate::scope::{Role, Scope, Scopes};

/// Why a principal may not do something, for a 403 (`this key may not enqueue kind
/// email.send`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// Who a request runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The actor audit rows name.
    pub actor: Actor,
    /// Its role.
    pub role: Role,
    /// What it may do.
    pub scopes: Scopes,
    /// Kinds it may touch; empty: every kind.
    pub kinds: Vec<Glob>,
    /// Queues it may touch; empty: every queue.
    pub queues: Vec<Glob>,
}

impl Principal {
    /// The CLI, run by `by` (its `--by`, or `$USER`): an admin with database access.
    pub fn cli(by: impl Into<String>) -> Self {
        Self::admin(ActorKind::Cli, None, by.into())
    }

    /// A client of an intake without keys (loopback only): an admin, named by address.
    pub fn local(address: IpAddr) -> Self {
        Self::admin(ActorKind::Local, None, address.to_string())
    }

    /// The holder of the configured key at `index` of `producer.api_keys`: an admin.
    pub fn configured(index: usize) -> Self {
        Self::admin(
            ActorKind::Config,
            None,
            format!("producer.api_keys[{index}]"),
        )
    }

    fn admin(kind: ActorKind, id: Option<uuid::Uuid>, name: String) -> Self {
        Self {
            actor: Actor { kind, id, name },
            role: Role::Admin,
            scopes: Role::Admin.scopes(),
            kinds: Vec::new(),
            queues: Vec::new(),
        }
    }

    /// The holder of a stored key.
    ///
    /// # Errors
    /// A stored role or glob that no longer parses (the key is then refused).
    pub fn of_key(record: &ApiKeyRecord) -> Result<Self, String> {
        let role: Role = record.role.parse()?;
        let globs = |list: &[String]| -> Result<Vec<Glob>, String> {
            list.iter().map(|g| Glob::parse(g)).collect()
        };
        Ok(Self {
            actor: Actor {
                kind: ActorKind::Key,
                id: Some(record.id),
                name: record.name.clone(),
            },
            role,
            scopes: role.scopes(),
            kinds: globs(&record.kinds)?,
            queues: globs(&record.queues)?,
        })
    }

    /// True when it holds `scope`.
    pub fn can(&self, scope: Scope) -> bool {
        self.scopes.contains(scope)
    }

    /// Requires `scope`.
    ///
    /// # Errors
    /// A [`Denied`] naming the missing scope and the role.
    pub fn require(&self, scope: Scope) -> Result<(), Denied> {
        if self.can(scope) {
            Ok(())
        } else {
            Err(Denied(format!(
                "this key lacks the scope {scope} (its role {} grants {})",
                self.role,
                self.scopes
                    .iter()
                    .map(Scope::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }

    /// True when it is limited to some kinds or queues.
    pub fn is_limited(&self) -> bool {
        !self.kinds.is_empty() || !self.queues.is_empty()
    }

    /// Requires that a job of `kind` on `queue` is within its reach; `verb` says what
    /// it wanted to do (`enqueue`, `read`, `cancel`, …). An unknown kind or queue
    /// (`None`, a raw dead message) is out of reach of a limited principal.
    ///
    /// # Errors
    /// A [`Denied`] naming the kind or queue.
    pub fn reach(&self, verb: &str, kind: Option<&str>, queue: Option<&str>) -> Result<(), Denied> {
        self.reach_kind(verb, kind)?;
        self.reach_queue(verb, queue)
    }

    /// Requires that `kind` is within its kinds (see [`Principal::reach`]).
    ///
    /// # Errors
    /// A [`Denied`] naming the kind.
    pub fn reach_kind(&self, verb: &str, kind: Option<&str>) -> Result<(), Denied> {
        if !self.kinds.is_empty() && !kind.is_some_and(|k| self.kinds.iter().any(|g| g.matches(k)))
        {
            return Err(Denied(format!(
                "this key may not {verb} kind {} (it is limited to kinds {})",
                kind.unwrap_or("(unknown)"),
                list(&self.kinds)
            )));
        }
        Ok(())
    }

    /// Requires that `queue` is within its queues (see [`Principal::reach`]).
    ///
    /// # Errors
    /// A [`Denied`] naming the queue.
    pub fn reach_queue(&self, verb: &str, queue: Option<&str>) -> Result<(), Denied> {
        if !self.queues.is_empty()
            && !queue.is_some_and(|q| self.queues.iter().any(|g| g.matches(q)))
        {
            return Err(Denied(format!(
                "this key may not {verb} on queue {} (it is limited to queues {})",
                queue.unwrap_or("(unknown)"),
                list(&self.queues)
            )));
        }
        Ok(())
    }

    /// Its kind globs as SQL `LIKE` patterns (empty: every kind).
    pub fn kind_patterns(&self) -> Vec<String> {
        self.kinds.iter().map(Glob::like_pattern).collect()
    }

    /// Its queue globs as SQL `LIKE` patterns (empty: every queue).
    pub fn queue_patterns(&self) -> Vec<String> {
        self.queues.iter().map(Glob::like_pattern).collect()
    }

    /// The audit context of a change it makes on the request `request_id`.
    pub fn audit(&self, request_id: Option<String>) -> AuditContext {
        AuditContext {
            actor: self.actor.clone(),
            request_id,
            filter: None,
        }
    }
}

fn list(globs: &[Glob]) -> String {
    globs
        .iter()
        .map(Glob::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn producer(kinds: &[&str], queues: &[&str]) -> Principal {
        let record = ApiKeyRecord {
            id: uuid::Uuid::nil(),
            name: "web".into(),
            role: "producer".into(),
            kinds: kinds.iter().map(|s| (*s).to_owned()).collect(),
            queues: queues.iter().map(|s| (*s).to_owned()).collect(),
            created_at: chrono::Utc::now(),
            created_by: "t".into(),
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
            revoked_by: None,
        };
        Principal::of_key(&record).unwrap()
    }

    #[test]
    fn a_kind_outside_the_globs_is_denied_by_name() {
        let web = producer(&["order.*"], &[]);
        assert!(
            web.reach("enqueue", Some("order.process"), Some("orders"))
                .is_ok()
        );
        let denied = web
            .reach("enqueue", Some("email.send"), Some("emails"))
            .unwrap_err();
        assert!(
            denied
                .0
                .starts_with("this key may not enqueue kind email.send"),
            "{denied}"
        );
        assert!(
            web.reach("read", None, None).is_err(),
            "an unknown kind is out of reach"
        );
    }

    #[test]
    fn a_queue_outside_the_list_is_denied_by_name() {
        let web = producer(&[], &["orders"]);
        let denied = web
            .reach("enqueue", Some("noop"), Some("default"))
            .unwrap_err();
        assert!(denied.0.contains("on queue default"), "{denied}");
        assert!(web.reach("enqueue", Some("noop"), Some("orders")).is_ok());
    }

    #[test]
    fn a_missing_scope_is_named_with_the_role() {
        let web = producer(&[], &[]);
        let denied = web.require(Scope::DeadPurge).unwrap_err();
        assert!(
            denied.0.contains("dead:purge") && denied.0.contains("producer"),
            "{denied}"
        );
        assert!(web.require(Scope::JobsEnqueue).is_ok());
        assert!(Principal::cli("ana").require(Scope::KeysManage).is_ok());
    }
}
