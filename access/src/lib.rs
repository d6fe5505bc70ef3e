//! Who may do what. API keys (generated, hashed, compared in constant time), the
//! scopes they carry through their role, the kinds and queues they are limited to, and
//! the [`Principal`] a request or a CLI command runs as — which also names the actor of
//! its audit rows. The rows themselves are written by `store`, inside each mutation's
//! transaction.
//!
//! # Layout
//! - [`key`] — [`ApiKey`] (shown once, never logged) and [`KeyHash`].
//! - [`scope`] — [`Scope`], [`Scopes`], [`Role`] and the role → scope matrix.
//! - [`glob`] — [`Glob`]: `order.*`-style patterns for kinds and queues.
//! - [`principal`] — [`Principal`]: scopes, reach, the audit actor; [`Denied`].
//! - [`ring`] — [`KeyRing`]: the intake's cache of valid keys, refreshed in the
//!   background, and last-use bookkeeping.
//! - [`manage`] — creating keys (shared by the CLI and `POST /v1/keys`) and parsing
//!   `--expires`.
//! - [`select`] — [`DeadSelection`]: the dead-letter filters of the CLI and the API,
//!   limited to a principal's reach.
//! - [`webhooks`] — creating webhook subscriptions (shared by the CLI and
//!   `POST /v1/webhooks`), their secrets, and the target check of any webhook URL.

pub mod glob;
pub mod key;
pub mod manage;
pub mod principal;
pub mod ring;
pub mod scope;
pub mod select;
pub mod webhooks;

pub use glob::Glob;
pub use key::{ApiKey, KeyHash};
pub use manage::{CreateKey, CreatedKey, KeyRequestError};
pub use principal::{Denied, Principal};
pub use ring::{AuthError, KeyRing};
pub use scope::{Role, Scope, Scopes};
pub use select::DeadSelection;
