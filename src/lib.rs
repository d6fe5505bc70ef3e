//! The `conveyor` binary's library half: configuration, the command line, and the wiring
//! that composes the adapters (`producer`, `worker`, `broker`, `store`) into running
//! roles. `main.rs` only parses, loads and calls in; the end-to-end tests call the same
//! functions.
//!
//! # Layout
//! - [`config`] — [`Settings`](config::Settings), layered with figment.
//! - [`cli`] — the clap command line.
//! - [`sibling`] — companion executables run as subcommands (`conveyor bench` runs
//!   `conveyor-bench`).
//! - [`app`] — starting and stopping roles.
//! - [`ops`] — operator commands (dead letters, jobs, stats): values and their one
//!   renderer.
//! - [`schedules`] — `[[schedules]]` in the configuration and the `schedules` commands.
//! - [`keys`] — `conveyor keys create|list|revoke`.
//! - [`audit`] — `conveyor audit list`.
//! - [`webhooks`] — `conveyor webhooks add|list|show|remove`.
//! - [`mail`] — `conveyor mail list|show`: the development mailbox.
//! - [`telemetry`] — logging.

pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod keys;
pub mod mail;
pub mod ops;
pub mod schedules;
pub mod sibling;
pub mod telemetry;
pub mod webhooks;
