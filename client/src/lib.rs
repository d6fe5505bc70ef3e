//! The Rust client for Conveyor: a web app enqueues typed jobs over HTTP, reads, waits
//! for and cancels them, and — with the `sqlx` feature — enqueues inside its own
//! database transaction. It depends on `jobs` for the kinds' argument types and on
//! nothing server-side.
//!
//! ```no_run
//! use std::time::Duration;
//! use conveyor_client::{Client, EnqueueOptions};
//! use jobs::kinds::order::{CustomerArgs, LineArgs, ProcessOrder};
//!
//! # async fn example() -> Result<(), conveyor_client::Error> {
//! let client = Client::new("http://127.0.0.1:8080", std::env::var("CONVEYOR_KEY").unwrap_or_default())?;
//! let order = ProcessOrder {
//!     order_id: "A-1001".into(),
//!     customer: CustomerArgs { email: "ada@example.com".into(), name: "Ada".into() },
//!     items: vec![LineArgs { sku: "MUG-BLUE".into(), quantity: 2 }],
//!     currency: None,
//! };
//! // Checked by the kind's own rules before it is sent; deduped by the key.
//! let accepted = client
//!     .enqueue_with(order, EnqueueOptions::new().idempotency_key("order-A-1001"))
//!     .await?;
//! let waited = client.wait(accepted.id, Duration::from_secs(30)).await?;
//! println!("{}: {:?}", waited.job.state, waited.job.result);
//! # Ok(())
//! # }
//! ```
//!
//! Errors carry the server's problem document ([`Problem`]: `type`, `title`, `status`,
//! `detail`, the field errors) or, for input refused before sending, the same field
//! paths the server would report.
//!
//! # Layout
//! - [`Client`] — the HTTP API: `enqueue`, `enqueue_with`, `enqueue_raw`,
//!   `enqueue_batch`, `get`, `wait`, `cancel`.
//! - [`JobRequest`], [`EnqueueOptions`] — one job to send and its options.
//! - [`Job`], [`Accepted`], [`Cancelled`], [`Waited`] — what the API answers.
//! - [`Error`], [`Problem`] — what went wrong.
//! - [`enqueue_in`] (feature `sqlx`) — enqueue inside the app's own transaction.

mod client;
mod error;
mod job;
mod request;
#[cfg(feature = "sqlx")]
mod transactional;

pub use client::{Client, DEFAULT_TIMEOUT};
pub use error::{Error, FieldProblem, Problem};
pub use job::{Accepted, Cancelled, Job, Waited};
pub use jobs::{JobArgs, JobId, JobState};
pub use request::{EnqueueOptions, JobRequest, MAX_DELAY, MAX_KEY_LEN, MAX_TIMEOUT, When};
#[cfg(feature = "sqlx")]
pub use transactional::{MAX_ATTEMPTS, enqueue_in, enqueue_in_with};
