//! Operator commands: `conveyor dead list|show|replay|purge`,
//! `conveyor jobs show|cancel|retry` and `conveyor stats`. Each command builds a value
//! from the ledger ([`dead`], [`jobs`], [`stats`]) and [`render`] prints it: text for
//! people by default, JSON with `--json`. The question before a purge and the replay
//! progress bar live here, around the data building. Any failure exits non-zero with a
//! message.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use ::jobs::{Catalog, JobId};
use access::Principal;
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use store::{DeadFilter, ReplayOutcome, Store};
use uuid::Uuid;

use crate::cli::{DeadCommand, DeadFilterArgs, JobsCommand};
use render::{Format, print};

pub mod dead;
pub mod jobs;
pub mod render;
pub mod stats;

/// Runs a `dead` subcommand.
///
/// # Errors
/// Bad arguments, an unknown id, or an unreachable database.
pub async fn dead(
    store: &Store,
    catalog: &Catalog,
    events: &broker::Events,
    command: DeadCommand,
) -> anyhow::Result<()> {
    match command {
        DeadCommand::List {
            filter,
            group_by,
            json,
        } => {
            let list = dead::list(store, &filter.to_filter()?, group_by.is_some()).await?;
            print(&list, Format::json_if(json))
        }
        DeadCommand::Show { id, json } => {
            let detail = dead::show(store, parse_id(&id)?).await?;
            print(&detail, Format::json_if(json))
        }
        DeadCommand::Replay {
            ids,
            filter,
            all,
            dry_run,
            args,
            rate,
            by,
            json,
        } => {
            let (targets, described) = dead::select(store, &ids, &filter, all).await?;
            let corrected = match &args {
                None => None,
                Some(path) => {
                    if targets.len() != 1 {
                        bail!("--args replays exactly one job; {} match", targets.len());
                    }
                    Some(dead::read_args(store, catalog, targets[0], path).await?)
                }
            };
            if dry_run {
                return print(&dead::DryRun::of(&targets), Format::json_if(json));
            }
            let plan = dead::ReplayPlan {
                context: Principal::cli(by.unwrap_or_else(default_actor))
                    .audit(None)
                    .with_filter(described),
                args: corrected,
                rate,
            };
            let progress = progress_bar(targets.len() as u64, json);
            let replayed = dead::replay(store, &targets, &plan, |result| {
                if let ReplayOutcome::Skipped { reason } = &result.outcome
                    && !json
                {
                    progress.suspend(|| eprintln!("skipped {}: {reason}", result.id));
                }
                progress.inc(1);
            })
            .await;
            progress.finish_and_clear();
            let replayed = replayed?;
            announce(store, events, &replayed.moved()).await;
            print(&replayed, Format::json_if(json))
        }
        DeadCommand::Purge {
            ids,
            filter,
            all,
            yes,
            by,
            json,
        } => {
            let (targets, described) = dead::select(store, &ids, &filter, all).await?;
            if !targets.is_empty()
                && !yes
                && !confirm(&format!(
                    "Purge {} dead letter(s) and their dead jobs?",
                    targets.len()
                ))?
            {
                bail!("not confirmed; nothing purged (pass --yes to skip the question)");
            }
            let purged = if targets.is_empty() {
                0
            } else {
                let context = Principal::cli(by.unwrap_or_else(default_actor))
                    .audit(None)
                    .with_filter(described);
                store.purge(&targets, &context).await?
            };
            let view = dead::Purged {
                purged,
                selected: targets.len(),
            };
            print(&view, Format::json_if(json))
        }
    }
}

/// Runs a `jobs` subcommand.
///
/// # Errors
/// An unknown id, a job in the wrong state, or an unreachable database.
pub async fn jobs(
    store: &Store,
    events: &broker::Events,
    command: JobsCommand,
) -> anyhow::Result<()> {
    match command {
        JobsCommand::Show { id, json } => {
            let detail = jobs::show(store, JobId(parse_id(&id)?)).await?;
            print(&detail, Format::json_if(json))
        }
        JobsCommand::Cancel { id, by, json } => {
            let context = Principal::cli(by.unwrap_or_else(default_actor)).audit(None);
            let cancelled = jobs::cancel(store, JobId(parse_id(&id)?), &context).await?;
            announce(store, events, &[cancelled.id]).await;
            print(&cancelled, Format::json_if(json))
        }
        JobsCommand::Retry { id, by } => {
            let context = Principal::cli(by.unwrap_or_else(default_actor)).audit(None);
            let id = JobId(parse_id(&id)?);
            let retried = jobs::retry(store, id, &context).await?;
            announce(store, events, &[id]).await;
            print(&retried, Format::Table)
        }
    }
}

/// The events publisher of a CLI command that moves jobs (`jobs cancel|retry`, `dead
/// replay`), so that open event streams and waits see an operator's change as they see
/// the API's. It connects on its first event: a command that moves nothing costs no
/// broker connection.
pub fn events(settings: &crate::config::Settings) -> broker::Events {
    crate::app::events_publisher(settings, "cli")
}

/// Publishes the committed state of `ids` as their events. A failed read costs only the
/// live events (the ledger is right, and streams read it again), so it is a warning.
async fn announce(store: &Store, events: &broker::Events, ids: &[JobId]) {
    if !events.enabled() || ids.is_empty() {
        return;
    }
    match store.get_jobs(ids).await {
        Ok(records) => {
            for record in &records {
                events.publish(&::jobs::JobEvent::of_record(record));
            }
        }
        Err(e) => tracing::warn!(error = %e, "the moved jobs' events could not be read"),
    }
}

/// `conveyor stats`: the ledger's per-queue numbers plus live consumer counts from
/// RabbitMQ (`-` when the broker cannot be reached); with `watch`, again every so many
/// seconds until interrupted.
///
/// # Errors
/// An unreachable database.
pub async fn stats(
    store: &Store,
    settings: &crate::config::Settings,
    json: bool,
    watch: Option<u64>,
) -> anyhow::Result<()> {
    loop {
        let view = stats::collect(store, settings).await?;
        if watch.is_some() && !json {
            // Clear the screen and show when these numbers were read.
            print!(
                "\x1b[2J\x1b[H{}\n\n",
                Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        print(&view, Format::json_if(json))?;
        let Some(every) = watch else { return Ok(()) };
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(every.max(1))) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

impl DeadFilterArgs {
    /// True when any filter is given.
    pub fn is_set(&self) -> bool {
        self.queue.is_some()
            || self.kind.is_some()
            || self.error.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }

    /// The filters as the API takes them.
    pub fn selection(&self) -> access::DeadSelection {
        access::DeadSelection {
            queue: self.queue.clone(),
            kind: self.kind.clone(),
            error: self.error.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            limit: self.limit,
        }
    }

    /// The store filter; times are RFC 3339 or relative (`90s`, `15m`, `2h`, `7d` ago).
    /// Parsed as `GET /v1/dead` parses its query.
    ///
    /// # Errors
    /// A time that parses as neither, named by its flag.
    pub fn to_filter(&self) -> anyhow::Result<DeadFilter> {
        self.selection()
            .to_filter(&Principal::cli("cli"), "select", Utc::now())
            .map_err(|e| match e {
                access::select::SelectionError::Invalid(errors) => anyhow::anyhow!(
                    "{}",
                    errors
                        .0
                        .iter()
                        .map(|e| format!("--{} {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                access::select::SelectionError::Denied(d) => anyhow::anyhow!("{d}"),
            })
    }
}

/// Parses RFC 3339 or a relative duration ago (`90s`, `15m`, `2h`, `7d`).
///
/// # Errors
/// Neither form.
pub fn parse_time(text: &str, flag: &str) -> anyhow::Result<DateTime<Utc>> {
    access::select::parse_time(text, Utc::now()).map_err(|e| anyhow::anyhow!("{flag} {e}"))
}

fn parse_id(text: &str) -> anyhow::Result<Uuid> {
    Uuid::parse_str(text)
        .with_context(|| format!("{text:?} is not a job or dead-letter id (a UUID)"))
}

/// Who the CLI acts as without `--by`: `$USER`.
pub fn default_actor() -> String {
    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn progress_bar(len: u64, quiet: bool) -> indicatif::ProgressBar {
    if quiet || len < 2 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} replayed  {per_sec}  eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_times_parse() {
        let hour_ago = parse_time("1h", "--since").unwrap();
        assert!((Utc::now() - hour_ago).num_seconds() >= 3599);
        assert!(parse_time("2026-11-21T10:00:00Z", "--since").is_ok());
        let err = parse_time("yesterday", "--since").unwrap_err().to_string();
        assert!(err.contains("--since"), "{err}");
    }
}
