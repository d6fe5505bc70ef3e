//! How a job runs: the worker process consumes its queues, the executor runs one
//! delivery (claim → handler in its own task under a timeout → commit the outcome →
//! ack), the dispatcher publishes what is due and rescues what was orphaned, and the
//! archive moves dead-lettered messages into Postgres.
//!
//! # Layout
//! - [`settings`] — [`WorkerSettings`], [`DispatcherSettings`].
//! - [`decide`] — the executor's decision table, a pure function.
//! - [`batch`] — claims and completions of concurrent deliveries, one statement each.
//! - [`executor`] — one delivery, start to ack.
//! - [`consumer`] — the consume loop: connections, reconnects, concurrency, drain.
//! - [`dispatcher`] — due, retry and unconfirmed publishes; orphan rescue.
//! - [`schedules`] — firing due schedule slots (called by the dispatcher).
//! - [`archive`] — the dead-letter queue → `dead_letters`.
//! - [`retry`] — waiting out an unavailable database without losing the delivery.
//! - [`mailer`] — [`SmtpMailer`], `email.send`'s SMTP adapter, and [`SmtpSettings`].
//! - [`mailbox`] — the development mailbox's loopback SMTP listener (`conveyor run`
//!   without an SMTP server).
//! - [`webhook`] — [`HttpWebhookSender`], `webhook.deliver`'s HTTP adapter (signing,
//!   target checks at delivery), and [`WebhookSettings`].
//! - [`startup`] — the catalog and registry of shipped kinds.

pub mod archive;
pub mod batch;
pub mod consumer;
pub mod decide;
pub mod dispatcher;
pub mod executor;
pub mod mailbox;
pub mod mailer;
pub mod retry;
pub mod schedules;
pub mod settings;
pub mod startup;
pub mod webhook;

pub use consumer::{Worker, WorkerStatus};
pub use dispatcher::Dispatcher;
pub use executor::Executor;
pub use mailer::{SmtpMailer, SmtpSettings, SmtpSettingsError, SmtpTls};
pub use settings::{DispatcherSettings, WorkerSettings};
pub use webhook::{HttpWebhookSender, WebhookSettings};
