//! `conveyor`: parse the command line, load settings, start the roles, wait for a
//! signal, drain, exit.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use conveyor::app::{self, Roles};
use conveyor::cli::{Cli, Command, DemoCommand, KeysCommand};
use conveyor::config::{Settings, Sources};
use conveyor::{ops, telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.global.log_format);
    let code = match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    telemetry::shutdown();
    code
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Bench(bench) = cli.command {
        // The bench is its own executable; it loads the configuration itself.
        let mut args = cli.global.to_flags();
        args.extend(bench.args);
        match conveyor::sibling::exec("bench", "conveyor-bench", args)? {}
    }
    if let Command::Keys(KeysCommand::New) = cli.command {
        let (key, hash) = producer::auth::new_key()
            .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
        println!("key:  {key}");
        println!("hash: {hash}");
        eprintln!();
        eprintln!(
            "Give the key to the client (Authorization: Bearer <key>); it is shown only now."
        );
        eprintln!("Configure the hash, never the key:");
        eprintln!("  conveyor.toml:  [producer] api_keys = [\"{hash}\"]");
        eprintln!("  environment:    CONVEYOR_PRODUCER__API_KEYS='[\"{hash}\"]'");
        return Ok(());
    }
    let sources = Sources {
        file: cli.global.config.as_deref(),
        overrides: cli.overrides(),
    };
    let settings = Settings::load(&sources)?;
    let roles = match cli.command {
        Command::Dead(command) => {
            let store = store::Store::connect(&settings.database)?;
            let events = ops::events(&settings);
            let done = ops::dead(&store, &app::catalog(&settings)?, &events, command).await;
            events.close(settings.broker.connect_timeout()).await;
            return done;
        }
        Command::Jobs(command) => {
            let store = store::Store::connect(&settings.database)?;
            let events = ops::events(&settings);
            let done = ops::jobs(&store, &events, command).await;
            events.close(settings.broker.connect_timeout()).await;
            return done;
        }
        Command::Schedules(command) => {
            let store = store::Store::connect(&settings.database)?;
            let catalog = app::catalog(&settings)?;
            return conveyor::schedules::run(&store, &settings, &catalog, command).await;
        }
        Command::Keys(command) => {
            let store = store::Store::connect(&settings.database)?;
            return conveyor::keys::keys(&store, command).await;
        }
        Command::Webhooks(command) => {
            let store = store::Store::connect(&settings.database)?;
            return conveyor::webhooks::webhooks(&store, &settings, command).await;
        }
        Command::Audit(command) => {
            let store = store::Store::connect(&settings.database)?;
            return conveyor::audit::audit(&store, command).await;
        }
        Command::Mail(command) => {
            let store = store::Store::connect(&settings.database)?;
            return conveyor::mail::mail(&store, command).await;
        }
        Command::Bench(_) => return Ok(()),
        Command::Stats { json, watch } => {
            let store = store::Store::connect(&settings.database)?;
            return ops::stats(&store, &settings, json, watch).await;
        }
        Command::Migrate => {
            app::migrate(&settings).await?;
            tracing::info!("migrations applied");
            return Ok(());
        }
        Command::Demo(DemoCommand::Seed { file }) => {
            let written = app::seed_demo(&settings, &file).await?;
            tracing::info!(products = written, file = %file.display(), "demo catalog seeded");
            return Ok(());
        }
        Command::Run(args) => {
            if !args.no_migrate {
                app::migrate(&settings).await?;
            }
            Roles::ALL
        }
        Command::Producer(_) => Roles::INTAKE,
        Command::Worker(_) => Roles::WORKER,
    };
    let shutdown = CancellationToken::new();
    let running = app::start(settings, roles, shutdown.clone())
        .await
        .context("start-up failed")?;
    let waiting = running.wait();
    tokio::pin!(waiting);
    tokio::select! {
        result = &mut waiting => return result,
        () = app::signal() => shutdown.cancel(),
    }
    waiting.await
}
