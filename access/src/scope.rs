//! Scopes (what a key may do) and roles (the bundles keys are given).
//!
//! | scope | producer | viewer | operator | admin |
//! |---|---|---|---|---|
//! | `jobs:enqueue` | ✓ | | | ✓ |
//! | `jobs:read` | ✓ | ✓ | ✓ | ✓ |
//! | `jobs:read_args` | | | ✓ | ✓ |
//! | `jobs:cancel` | | | ✓ | ✓ |
//! | `jobs:retry` | | | ✓ | ✓ |
//! | `dead:read` | | ✓ | ✓ | ✓ |
//! | `dead:replay` | | | ✓ | ✓ |
//! | `dead:purge` | | | | ✓ |
//! | `queues:manage` | | | ✓ | ✓ |
//! | `keys:manage` | | | | ✓ |
//! | `audit:read` | | ✓ | ✓ | ✓ |
//! | `webhooks:manage` | | | | ✓ |

use serde::{Deserialize, Serialize};

/// One permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Enqueue jobs (of the key's kinds, to its queues).
    #[serde(rename = "jobs:enqueue")]
    JobsEnqueue,
    /// Read jobs' state, attempts and errors — without arguments and results.
    #[serde(rename = "jobs:read")]
    JobsRead,
    /// See arguments and results (they hold personal data); redacted without it.
    #[serde(rename = "jobs:read_args")]
    JobsReadArgs,
    /// Cancel jobs.
    #[serde(rename = "jobs:cancel")]
    JobsCancel,
    /// Run jobs again now.
    #[serde(rename = "jobs:retry")]
    JobsRetry,
    /// List and inspect dead letters.
    #[serde(rename = "dead:read")]
    DeadRead,
    /// Replay dead jobs.
    #[serde(rename = "dead:replay")]
    DeadReplay,
    /// Delete dead letters and their jobs.
    #[serde(rename = "dead:purge")]
    DeadPurge,
    /// Pause and resume queues.
    #[serde(rename = "queues:manage")]
    QueuesManage,
    /// Create, list and revoke API keys.
    #[serde(rename = "keys:manage")]
    KeysManage,
    /// Read the audit log.
    #[serde(rename = "audit:read")]
    AuditRead,
    /// Create, list and delete webhook subscriptions (their secrets sign deliveries).
    #[serde(rename = "webhooks:manage")]
    WebhooksManage,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 12] = [
        Scope::JobsEnqueue,
        Scope::JobsRead,
        Scope::JobsReadArgs,
        Scope::JobsCancel,
        Scope::JobsRetry,
        Scope::DeadRead,
        Scope::DeadReplay,
        Scope::DeadPurge,
        Scope::QueuesManage,
        Scope::KeysManage,
        Scope::AuditRead,
        Scope::WebhooksManage,
    ];

    /// Its name (`jobs:enqueue`, …), as the API and the OpenAPI document spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JobsEnqueue => "jobs:enqueue",
            Scope::JobsRead => "jobs:read",
            Scope::JobsReadArgs => "jobs:read_args",
            Scope::JobsCancel => "jobs:cancel",
            Scope::JobsRetry => "jobs:retry",
            Scope::DeadRead => "dead:read",
            Scope::DeadReplay => "dead:replay",
            Scope::DeadPurge => "dead:purge",
            Scope::QueuesManage => "queues:manage",
            Scope::KeysManage => "keys:manage",
            Scope::AuditRead => "audit:read",
            Scope::WebhooksManage => "webhooks:manage",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u16);

impl Scopes {
    /// Every scope.
    pub fn all() -> Self {
        Self::of(&Scope::ALL)
    }

    /// These scopes.
    pub fn of(scopes: &[Scope]) -> Self {
        Self(scopes.iter().fold(0, |acc, s| acc | s.bit()))
    }

    /// True when `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The scopes in the set, in [`Scope::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

/// The bundle of scopes a key is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A web app: enqueue, and read its own jobs (without arguments).
    Producer,
    /// Support staff: look without touching, without arguments.
    Viewer,
    /// Operators: read with arguments, cancel, retry, replay, manage queues.
    Operator,
    /// Everything, keys and purges included.
    Admin,
}

impl Role {
    /// Every role, least powerful first.
    pub const ALL: [Role; 4] = [Role::Producer, Role::Viewer, Role::Operator, Role::Admin];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The scopes it grants (the matrix in this module's documentation).
    pub fn scopes(self) -> Scopes {
        use Scope::*;
        match self {
            Role::Producer => Scopes::of(&[JobsEnqueue, JobsRead]),
            Role::Viewer => Scopes::of(&[JobsRead, DeadRead, AuditRead]),
            Role::Operator => Scopes::of(&[
                JobsRead,
                JobsReadArgs,
                JobsCancel,
                JobsRetry,
                DeadRead,
                DeadReplay,
                QueuesManage,
                AuditRead,
            ]),
            Role::Admin => Scopes::all(),
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| {
                format!("unknown role {text:?}; roles: producer, viewer, operator, admin")
            })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_is_what_the_documentation_says() {
        let producer = Role::Producer.scopes();
        assert!(producer.contains(Scope::JobsEnqueue) && producer.contains(Scope::JobsRead));
        assert_eq!(producer.iter().count(), 2);
        let viewer = Role::Viewer.scopes();
        assert!(!viewer.contains(Scope::JobsReadArgs));
        assert!(!viewer.contains(Scope::JobsEnqueue));
        let operator = Role::Operator.scopes();
        assert!(operator.contains(Scope::DeadReplay) && operator.contains(Scope::JobsReadArgs));
        assert!(!operator.contains(Scope::DeadPurge) && !operator.contains(Scope::KeysManage));
        assert!(!operator.contains(Scope::JobsEnqueue));
        assert!(!operator.contains(Scope::WebhooksManage));
        assert!(!viewer.contains(Scope::WebhooksManage));
        assert_eq!(Role::Admin.scopes().iter().count(), Scope::ALL.len());
    }

    #[test]
    fn roles_parse_by_name_and_name_the_choices_when_unknown() {
        assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
        assert!(
            "root"
                .parse::<Role>()
                .unwrap_err()
                .contains("producer, viewer")
        );
    }
}
