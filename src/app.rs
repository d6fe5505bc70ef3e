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
        first_error.map_or(Ok(()), Err)
    }
}

/// The topology of `settings`.
pub fn topology(settings: &Settings) -> Topology {
    Topology::new(settings.namespace.clone(), settings.broker.delivery_limit)
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
    let store = Store::connect(&settings.database).context("database.url")?;
    let test_kinds = settings.worker.test_kinds;
    let catalog = worker::startup::catalog(test_kinds)?;
    let registry = if roles.worker {
        let mailer = worker::SmtpMailer::new(&settings.smtp).context("smtp settings")?;
        Some(worker::startup::registry(
            test_kinds,
            store.clone(),
            mailer,
        )?)
    } else {
        None
    };
    start_with(settings, roles, store, catalog, registry, shutdown).await
}

/// Starts `roles` on `store`: the intake validates against `catalog`, the worker runs
/// the handlers of `registry` (required when `roles.worker`).
///
/// # Errors
/// When the listener cannot bind, or a worker is asked for without a registry.
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

    if roles.producer {
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
        let state = producer::AppState {
            store: store.clone(),
            publisher,
            catalog: Arc::new(catalog),
            settings: Arc::new(settings.producer.clone()),
        };
        let token = shutdown.clone();
        tracing::info!(%addr, "intake listening");
        tasks.spawn(async move {
            producer::serve(listener, state, token)
                .await
                .context("the intake failed")
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
            publisher,
        );
        let token = shutdown.clone();
        tasks.spawn(async move {
            dispatcher.run(token).await;
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
        );
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
    })
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
