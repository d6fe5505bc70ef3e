//! Starting and stopping roles. `conveyor run` starts all of them in one process;
//! `producer` and `worker` start one. Each role runs until the shared shutdown token
//! fires, then drains.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use broker::{Publisher, Topology};
use jobs::{Catalog, Registry};
use store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;

/// Which roles a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The HTTP intake.
    pub producer: bool,
    /// Consuming and running jobs.
    pub worker: bool,
    /// Publishing due work, rescuing orphans.
    pub dispatcher: bool,
}

impl Roles {
    /// Every role (`conveyor run`).
    pub const ALL: Roles = Roles {
        producer: true,
        worker: true,
        dispatcher: true,
    };
    /// The intake alone (`conveyor producer`).
    pub const INTAKE: Roles = Roles {
        producer: true,
        worker: false,
        dispatcher: false,
    };
    /// A worker with its dispatcher (`conveyor worker`).
    pub const WORKER: Roles = Roles {
        producer: false,
        worker: true,
        dispatcher: true,
    };
    /// No role: the settings and the database only (tests, tools).
    pub const NONE: Roles = Roles {
        producer: false,
        worker: false,
        dispatcher: false,
    };
}

/// Running roles.
#[derive(Debug)]
pub struct Running {
    /// Where the intake listens, when it runs.
    pub producer_addr: Option<SocketAddr>,
    /// The store the roles share.
    pub store: Store,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    /// The process's events publisher, closed once every role stopped.
    events: broker::Events,
}

impl Running {
    /// Asks every role to stop (the same as the shutdown token firing).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits for every role to finish. A role that fails stops the others.
    ///
    /// # Errors
    /// The first role's failure.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let result = joined.context("a role panicked").and_then(|r| r);
            if let Err(e) = result {
                self.shutdown.cancel();
                first_error.get_or_insert(e);
            }
        }
        self.events.close(std::time::Duration::from_secs(5)).await;
        first_error.map_or(Ok(()), Err)
    }
}

/// The topology of `settings`.
pub fn topology(settings: &Settings) -> Topology {
    Topology::new(settings.namespace.clone(), settings.broker.delivery_limit)
        .with_quorum_group_size(settings.broker.quorum_group_size())
}

/// The kinds intake accepts under `settings` (used to validate `dead replay --args`).
///
/// # Errors
/// A registry wiring mistake.
pub fn catalog(settings: &Settings) -> anyhow::Result<jobs::Catalog> {
    Ok(worker::startup::catalog(settings.worker.test_kinds)?)
}

/// Creates the database if needed and applies migrations.
///
/// # Errors
/// When Postgres is unreachable or a migration fails.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    settings.database.ensure_database().await.context(
        "cannot reach Postgres to create the database (is it running? check database.url)",
    )?;
    let store = Store::connect(&settings.database)?;
    store
        .migrate()
        .await
        .context("applying migrations failed")?;
    Ok(())
}

/// Seeds the demo product catalog from the CSV file at `path` (see
/// [`store::parse_catalog`]): creates and migrates the database if needed, then upserts
/// every product, resetting its stock to the file's. Returns how many were written.
///
/// # Errors
/// When the file cannot be read or parsed (naming line and column), or Postgres fails.
pub async fn seed_demo(settings: &Settings, path: &Path) -> anyhow::Result<u64> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let products =
        store::parse_catalog(&text).with_context(|| format!("{} is malformed", path.display()))?;
    migrate(settings).await?;
    let store = Store::connect(&settings.database)?;
    let written = store
        .upsert_products(&products)
        .await
        .context("writing the products failed")?;
    store.pool().close().await;
    Ok(written)
}

/// Starts `roles` with the shipped kinds. Only a process that runs the worker role
/// builds the handlers (and their SMTP mailer); the intake needs only the catalog.
///
/// # Errors
/// When the listener cannot bind or the settings are unusable.
pub async fn start(
    settings: Settings,
    roles: Roles,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let mut settings = settings;
    let store = Store::connect(&settings.database).context("database.url")?;
    let test_kinds = settings.worker.test_kinds;
    let catalog = worker::startup::catalog(test_kinds)?;
    let mailbox = dev_mailbox(&mut settings, roles).await?;
    let registry = if roles.worker {
        let mailer = worker::SmtpMailer::new(&settings.smtp).context("smtp settings")?;
        let webhooks =
            worker::HttpWebhookSender::new(&settings.webhooks).context("webhooks settings")?;
        let callback_secret = settings
            .webhooks
            .callback_secret
            .as_ref()
            .map(|s| secrecy::ExposeSecret::expose_secret(s).to_owned());
        Some(worker::startup::registry(
            test_kinds,
            store.clone(),
            mailer,
            webhooks,
            callback_secret,
        )?)
    } else {
        None
    };
    let mut running = start_with(
        settings,
        roles,
        store.clone(),
        catalog,
        registry,
        shutdown.clone(),
    )
    .await?;
    if let Some(mailbox) = mailbox {
        running.tasks.spawn(async move {
            mailbox.serve(store, shutdown).await;
            Ok(())
        });
    }
    Ok(running)
}

/// Where email goes when no SMTP server is configured (`smtp.host` empty). `conveyor
/// run` (intake and worker in one process: the first run, a developer's machine)
/// delivers to the development mailbox, a loopback SMTP listener keeping messages in
/// Postgres, and says so; a worker on its own (production) that sends email refuses to
/// start instead of retrying every email against nothing.
///
/// # Errors
/// A worker that sends email with no SMTP server configured; no loopback port.
async fn dev_mailbox(
    settings: &mut Settings,
    roles: Roles,
) -> anyhow::Result<Option<worker::mailbox::DevMailbox>> {
    if !roles.worker || settings.smtp.is_configured() || !sends_email(&settings.worker) {
        return Ok(None);
    }
    if !roles.producer {
        anyhow::bail!(
            "no SMTP server is configured (smtp.host, or CONVEYOR_SMTP__HOST) and this worker \
             runs email.send (queue `{}`): set smtp.host to your mail server, or leave \
             the queue out of worker.queues. (`conveyor run` delivers to a development \
             mailbox instead; a production worker does not.)",
            email_queue()
        );
    }
    let mailbox = worker::mailbox::DevMailbox::bind()
        .await
        .context("cannot open the development mailbox on 127.0.0.1")?;
    settings.smtp = settings.smtp.loopback(mailbox.addr().port());
    tracing::info!(
        smtp = %mailbox.addr(),
        "no SMTP server configured (smtp.host): email goes to the development mailbox; \
         read it with `conveyor mail list` and `conveyor mail show ID`"
    );
    Ok(Some(mailbox))
}

/// The queue `email.send` jobs go to by default.
fn email_queue() -> &'static str {
    <jobs::kinds::email::SendEmail as jobs::JobArgs>::options().queue
}

/// True when a worker with these settings consumes `email.send`'s queue (no queues
/// listed means every kind's default queue).
fn sends_email(worker: &worker::WorkerSettings) -> bool {
    worker.queues.is_empty() || worker.queues.contains_key(email_queue())
}

/// Starts `roles` on `store`: the intake validates against `catalog`, the worker runs
/// the handlers of `registry` (required when `roles.worker`).
///
/// # Errors
/// When the listener cannot bind, or a worker is asked for without a registry.
#[expect(
    clippy::too_many_lines,
    reason = "the one place every role is wired, in start order; each role's block stands alone"
)]
pub async fn start_with(
    settings: Settings,
    roles: Roles,
    store: Store,
    catalog: Catalog,
    registry: Option<Registry>,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let topology = topology(&settings);
    let mut tasks = JoinSet::new();
    let mut producer_addr = None;
    // One events publisher per process, for every role's transitions; closed after
    // the roles stopped (`Running::wait`), so a draining worker's events still go out.
    let events = events_publisher(&settings, "events");

    if roles.producer || roles.worker || roles.dispatcher {
        // Checked when the settings loaded; written in the background so a database
        // that is down at start-up delays the schedules, not the roles.
        let defs = settings.schedule_defs()?;
        let (store, token) = (store.clone(), shutdown.clone());
        tasks.spawn(async move {
            crate::schedules::sync_config(store, defs, token).await;
            Ok(())
        });
    }

    if roles.producer {
        // The connection cap is sized against the descriptor limit, keeping the
        // database pool's descriptors (and the process's own) out of it.
        let limits = producer::ConnectionLimits::resolve(
            &settings.producer,
            u64::from(settings.database.max_connections),
        )
        .map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(settings.producer.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (producer.listen)",
                    settings.producer.listen
                )
            })?;
        let addr = listener.local_addr()?;
        producer_addr = Some(addr);
        let publisher = Arc::new(Publisher::new(
            settings.broker.clone(),
            topology.clone(),
            format!("{}-producer-{}", settings.namespace, std::process::id()),
        ));
        // Connect now rather than on the first request, which would otherwise wait for
        // it (a broker that is down is retried by the first publish, as always).
        let warm = Arc::clone(&publisher);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                connected = warm.ensure_connected() => {
                    if let Err(e) = connected {
                        tracing::warn!(error = %e, "the intake could not reach the broker yet");
                    }
                }
            }
        });
        let subscriptions = settings.events.enabled.then(|| {
            broker::Subscriptions::new(
                settings.broker.clone(),
                topology.clone(),
                format!(
                    "{}-producer-{}-subscriber",
                    settings.namespace,
                    std::process::id()
                ),
            )
        });
        if settings.events.enabled && settings.events.token_secret.is_none() {
            tracing::info!(
                "events.token_secret is not set: status links are signed with a random secret and open streams on this intake only"
            );
        }
        let events_state = producer::events::EventsState::new(
            settings.events.clone(),
            events.clone(),
            subscriptions,
        )
        .map_err(anyhow::Error::msg)?;
        let state = producer::AppState::new(
            store.clone(),
            Arc::clone(&publisher),
            Arc::new(catalog),
            settings.producer.clone(),
        )
        .map_err(anyhow::Error::msg)?
        .with_metrics(crate::telemetry::metrics_renderer(store.clone()))
        .with_webhook_targets(settings.webhooks.policy())
        .with_events(events_state)
        .with_key_store(
            Store::connect(&store::DatabaseSettings {
                max_connections: 1,
                ..settings.database.clone()
            })
            .context("database.url")?,
        );
        // Load the stored keys before serving, so the first requests are checked
        // against them (and an intake with stored keys may serve beyond loopback).
        if let Err(e) = state.keys.refresh().await {
            tracing::warn!(error = %e, "cannot load the stored API keys yet; retrying in the background");
        }
        producer::check_exposure(state.keys.protected(), addr).map_err(anyhow::Error::msg)?;
        let token = shutdown.clone();
        tracing::info!(
            %addr,
            max_connections = limits.max_connections,
            max_connections_per_client = limits.max_connections_per_client,
            descriptor_limit = %limits
                .descriptor_limit
                .map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
            reserved_descriptors = limits.reserved_descriptors,
            "intake listening"
        );
        tasks.spawn(async move {
            let served = producer::serve(listener, state, limits, token).await;
            publisher.close().await;
            served.context("the intake failed")
        });
    }

    if roles.dispatcher && settings.dispatcher.enabled {
        let publisher = Arc::new(Publisher::new(
            settings.broker.clone(),
            topology.clone(),
            format!("{}-dispatcher-{}", settings.namespace, std::process::id()),
        ));
        let dispatcher = worker::Dispatcher::new(
            settings.dispatcher.clone(),
            settings.worker.lost_after(),
            store.clone(),
            Arc::clone(&publisher),
        )
        .with_events(events.clone());
        let token = shutdown.clone();
        tasks.spawn(async move {
            dispatcher.run(token).await;
            publisher.close().await;
            Ok(())
        });
    }

    if roles.worker {
        let registry = registry.context("a worker needs the registry of its kinds")?;
        let worker = worker::Worker::new(
            settings.worker.clone(),
            settings.broker.clone(),
            topology,
            store.clone(),
            registry,
        )
        .with_events(events.clone());
        if let Some(listen) = settings.worker.listen {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen} (worker.listen)"))?;
            let router = ops_router(store.clone(), worker.status());
            let token = shutdown.clone();
            tracing::info!(addr = %listener.local_addr()?, "worker metrics and health listening");
            tasks.spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await
                    .context("the worker's ops server failed")
            });
        }
        let token = shutdown.clone();
        tasks.spawn(async move {
            worker.run(token).await;
            Ok(())
        });
    }

    Ok(Running {
        producer_addr,
        store,
        shutdown,
        tasks,
        events,
    })
}

/// A worker's ops endpoints: `/metrics`, `/healthz`, `/readyz` (database reachable and
/// the worker consuming).
fn ops_router(store: Store, status: Arc<worker::WorkerStatus>) -> axum::Router {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::get;
    let render = crate::telemetry::metrics_renderer(store.clone());
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = Arc::clone(&render);
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        render().await,
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let store = store.clone();
                let status = Arc::clone(&status);
                async move {
                    let database = matches!(
                        tokio::time::timeout(std::time::Duration::from_secs(2), store.ping()).await,
                        Ok(Ok(()))
                    );
                    let broker = status.connected.load(std::sync::atomic::Ordering::Relaxed);
                    let ready = database && broker;
                    let code = if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    let body = serde_json::json!({
                        "status": if ready { "ready" } else { "unavailable" },
                        "database": if database { "ok" } else { "unavailable" },
                        "broker": if broker { "ok" } else { "unavailable" },
                    });
                    (code, axum::Json(body)).into_response()
                }
            }),
        )
}

/// Resolves when the process is asked to stop: SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("interrupted; shutting down"),
        () = terminate => tracing::info!("terminated; shutting down"),
    }
}

/// This process's events publisher (`events.enabled`), on a connection named for the
/// namespace, `label` and the process. It connects on its first event.
pub fn events_publisher(settings: &Settings, label: &str) -> broker::Events {
    if settings.events.enabled {
        broker::Events::start(
            &settings.broker,
            &topology(settings),
            format!("{}-{label}-{}", settings.namespace, std::process::id()),
            settings.events.buffer,
        )
    } else {
        broker::Events::disabled()
    }
}
