//! Operator commands: `conveyor dead list|show|replay|purge` and
//! `conveyor jobs show|cancel|retry`. Human tables by default, `--json` for scripts;
//! any failure exits non-zero with a message.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use jobs::{Catalog, JobId};
use serde_json::{Value, json};
use store::{CancelOutcome, DeadFilter, ReplayOutcome, RetryOutcome, Store};
use uuid::Uuid;

use crate::cli::{DeadCommand, DeadFilterArgs, JobsCommand};

/// Runs a `dead` subcommand.
///
/// # Errors
/// Bad arguments, an unknown id, or an unreachable database.
pub async fn dead(store: &Store, catalog: &Catalog, command: DeadCommand) -> anyhow::Result<()> {
    match command {
        DeadCommand::List {
            filter,
            group_by,
            json,
        } => {
            let filter = filter.to_filter()?;
            if group_by.is_some() {
                let groups = store.dead_letter_groups(&filter).await?;
                if json {
                    return print_json(&groups);
                }
                let rows = groups
                    .iter()
                    .map(|g| {
                        vec![
                            g.count.to_string(),
                            g.kinds.join(","),
                            short_time(g.last),
                            g.fingerprint.clone(),
                        ]
                    })
                    .collect();
                print!("{}", table(&["COUNT", "KINDS", "LAST", "ERROR"], rows));
                return Ok(());
            }
            let letters = store.dead_letters(&filter).await?;
            if json {
                return print_json(&letters);
            }
            let rows = letters
                .iter()
                .map(|d| {
                    vec![
                        d.job_id.map_or_else(|| d.id.to_string(), |j| j.to_string()),
                        d.kind.clone().unwrap_or_else(|| "-".into()),
                        d.queue.clone().unwrap_or_else(|| "-".into()),
                        d.reason.to_string(),
                        d.attempts.map_or_else(|| "-".into(), |a| a.to_string()),
                        short_time(d.died_at),
                        truncate(d.error.as_deref().unwrap_or(""), 70),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["ID", "KIND", "QUEUE", "REASON", "ATTEMPTS", "DIED", "ERROR"],
                    rows
                )
            );
            if letters.is_empty() {
                eprintln!("no dead letters match");
            }
            Ok(())
        }
        DeadCommand::Show { id, json } => {
            let id = parse_id(&id)?;
            let detail = store
                .dead_letter(id)
                .await?
                .with_context(|| format!("no dead letter or dead job with id {id}"))?;
            if json {
                return print_json(&detail);
            }
            let d = &detail.letter;
            println!("dead letter  {}", d.id);
            if let Some(job) = d.job_id {
                println!("job          {job}");
            }
            println!("kind         {}", d.kind.as_deref().unwrap_or("-"));
            println!("queue        {}", d.queue.as_deref().unwrap_or("-"));
            println!("reason       {}", d.reason);
            println!("error        {}", d.error.as_deref().unwrap_or("-"));
            println!("died at      {}", d.died_at.to_rfc3339());
            if let Some(n) = d.replay_count {
                println!("replays      {n}");
            }
            if let (Some(at), Some(how)) = (detail.resolved_at, &detail.resolution) {
                println!("resolved     {how} at {}", at.to_rfc3339());
            }
            println!("payload      {}", detail.payload);
            if !detail.attempts_history.is_empty() {
                println!();
                let rows = detail
                    .attempts_history
                    .iter()
                    .map(|a| {
                        vec![
                            a.attempt.to_string(),
                            a.outcome.to_string(),
                            a.worker_id
                                .map_or_else(|| "-".into(), |w| w.to_string()[..8].to_owned()),
                            a.started_at.to_rfc3339(),
                            format!("{} ms", (a.finished_at - a.started_at).num_milliseconds()),
                            a.error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["ATTEMPT", "OUTCOME", "WORKER", "STARTED", "TOOK", "ERROR"],
                        rows
                    )
                );
            }
            Ok(())
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
            let targets = select(store, &ids, &filter, all).await?;
            let corrected = match &args {
                None => None,
                Some(path) => {
                    if targets.len() != 1 {
                        bail!("--args replays exactly one job; {} match", targets.len());
                    }
                    Some(read_args(store, catalog, targets[0], path).await?)
                }
            };
            if dry_run {
                let letters: Vec<Value> = targets.iter().map(|id| json!({ "id": id })).collect();
                if json {
                    return print_json(&json!({ "dry_run": true, "would_replay": letters }));
                }
                for id in &targets {
                    println!("would replay {id}");
                }
                eprintln!(
                    "{} dead letter(s) would be replayed (dry run)",
                    targets.len()
                );
                return Ok(());
            }
            let by = by.unwrap_or_else(default_actor);
            let progress = progress_bar(targets.len() as u64, json);
            let mut ticker = rate.map(|r| {
                let mut interval =
                    tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(r.max(1))));
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                interval
            });
            let (mut replayed, mut skipped) = (0usize, 0usize);
            let mut results = Vec::with_capacity(targets.len());
            for id in &targets {
                if let Some(ticker) = ticker.as_mut() {
                    ticker.tick().await;
                }
                let outcome = store.replay(*id, &by, corrected.as_ref()).await?;
                match &outcome {
                    ReplayOutcome::Replayed { .. } => replayed += 1,
                    ReplayOutcome::Skipped { reason } => {
                        skipped += 1;
                        if !json {
                            progress.suspend(|| eprintln!("skipped {id}: {reason}"));
                        }
                    }
                }
                results.push(json!({ "id": id, "outcome": outcome }));
                progress.inc(1);
            }
            progress.finish_and_clear();
            if json {
                return print_json(
                    &json!({ "replayed": replayed, "skipped": skipped, "results": results }),
                );
            }
            println!("replayed {replayed}, skipped {skipped}");
            Ok(())
        }
        DeadCommand::Purge {
            ids,
            filter,
            all,
            yes,
            json,
        } => {
            let targets = select(store, &ids, &filter, all).await?;
            if targets.is_empty() {
                if json {
                    return print_json(&json!({ "purged": 0 }));
                }
                println!("nothing to purge");
                return Ok(());
            }
            if !yes
                && !confirm(&format!(
                    "Purge {} dead letter(s) and their dead jobs?",
                    targets.len()
                ))?
            {
                bail!("not confirmed; nothing purged (pass --yes to skip the question)");
            }
            let purged = store.purge(&targets).await?;
            if json {
                return print_json(&json!({ "purged": purged }));
            }
            println!("purged {purged}");
            Ok(())
        }
    }
}

/// Runs a `jobs` subcommand.
///
/// # Errors
/// An unknown id, a job in the wrong state, or an unreachable database.
pub async fn jobs(store: &Store, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::Show { id, json } => {
            let id = JobId(parse_id(&id)?);
            let job = store
                .get_job(id)
                .await?
                .with_context(|| format!("no job with id {id}"))?;
            let attempts = store.attempts(id).await?;
            if json {
                return print_json(&json!({ "job": job, "attempts": attempts }));
            }
            println!("job          {}", job.id);
            println!("kind         {}", job.kind);
            println!("queue        {}", job.queue);
            println!("state        {}", job.state);
            println!("attempt      {} of {}", job.attempt, job.max_attempts);
            println!("run at       {}", job.run_at.to_rfc3339());
            println!("args         {}", job.args);
            if let Some(result) = &job.result {
                println!("result       {result}");
            }
            if let Some(error) = &job.last_error {
                println!("last error   {error}");
            }
            if job.replay_count > 0 {
                println!(
                    "replayed     {} time(s), last by {} at {}",
                    job.replay_count,
                    job.replayed_by.as_deref().unwrap_or("?"),
                    job.replayed_at
                        .map_or_else(|| "?".into(), |t| t.to_rfc3339())
                );
            }
            if let Some(fired) = &job.fired_by {
                println!("fired by     {} for {}", fired.schedule, fired.slot);
            }
            println!("created      {}", job.created_at.to_rfc3339());
            if !attempts.is_empty() {
                println!();
                let rows = attempts
                    .iter()
                    .map(|a| {
                        vec![
                            a.attempt.to_string(),
                            a.outcome.to_string(),
                            a.started_at.to_rfc3339(),
                            a.error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["ATTEMPT", "OUTCOME", "STARTED", "ERROR"], rows)
                );
            }
            Ok(())
        }
        JobsCommand::Cancel { id, json } => {
            let id = JobId(parse_id(&id)?);
            let (text, ok) = match store.cancel(id).await? {
                CancelOutcome::Cancelled => ("cancelled".to_owned(), true),
                CancelOutcome::Requested => (
                    "cancel requested: the running attempt finishes and is not retried".to_owned(),
                    true,
                ),
                CancelOutcome::AlreadyFinal(state) => {
                    (format!("job is already {state}; nothing to cancel"), false)
                }
                CancelOutcome::NotFound => (format!("no job with id {id}"), false),
            };
            if !ok {
                bail!(text);
            }
            if json {
                return print_json(&json!({ "id": id, "result": text }));
            }
            println!("{id}: {text}");
            Ok(())
        }
        JobsCommand::Retry { id, by } => {
            let id = JobId(parse_id(&id)?);
            match store
                .retry_now(id, &by.unwrap_or_else(default_actor))
                .await?
            {
                RetryOutcome::Scheduled => {
                    println!("{id}: scheduled to run now");
                    Ok(())
                }
                RetryOutcome::NotRetryable(state) => bail!(
                    "job {id} is {state}; only retrying, scheduled, dead or cancelled jobs can be retried"
                ),
                RetryOutcome::NotFound => bail!("no job with id {id}"),
            }
        }
    }
}

/// `conveyor stats`: the ledger's per-queue numbers plus live consumer counts from
/// RabbitMQ (`-` when the broker cannot be reached).
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
        let stats = store
            .queue_stats()
            .await
            .context("cannot read queue stats from Postgres")?;
        let consumers = consumer_counts(settings, stats.iter().map(|q| q.queue.as_str())).await;
        if json {
            let rows: Vec<Value> = stats
                .iter()
                .zip(&consumers)
                .map(|(q, c)| {
                    let mut row = serde_json::to_value(q).unwrap_or(Value::Null);
                    row["consumers"] = c.map_or(Value::Null, Value::from);
                    row
                })
                .collect();
            print_json(&rows)?;
        } else {
            if watch.is_some() {
                print!(
                    "\x1b[2J\x1b[H{}\n\n",
                    Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
            let rows = stats
                .iter()
                .zip(&consumers)
                .map(|(q, c)| {
                    vec![
                        q.queue.clone(),
                        q.ready.to_string(),
                        q.running.to_string(),
                        q.scheduled.to_string(),
                        q.retrying.to_string(),
                        q.dead.to_string(),
                        format!("{:.1}s", q.oldest_ready_age_seconds),
                        q.completed_last_minute.to_string(),
                        q.failed_last_minute.to_string(),
                        c.map_or_else(|| "-".into(), |c| c.to_string()),
                    ]
                })
                .collect();
            let headers = [
                "QUEUE",
                "READY",
                "RUNNING",
                "SCHEDULED",
                "RETRYING",
                "DEAD",
                "OLDEST",
                "DONE/1M",
                "FAILED/1M",
                "CONSUMERS",
            ];
            print!("{}", table(&headers, rows));
            if stats.is_empty() {
                println!("(no queue has work or recent attempts)");
            }
        }
        let Some(every) = watch else { return Ok(()) };
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(every.max(1))) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn consumer_counts<'a>(
    settings: &crate::config::Settings,
    queues: impl Iterator<Item = &'a str>,
) -> Vec<Option<u32>> {
    let queues: Vec<&str> = queues.collect();
    let topology = crate::app::topology(settings);
    let Ok(session) =
        broker::Session::open(&settings.broker, &format!("{}-stats", settings.namespace)).await
    else {
        return vec![None; queues.len()];
    };
    let mut counts = Vec::with_capacity(queues.len());
    for queue in queues {
        let declared = session.inspect(&topology.queue(queue)).await;
        counts.push(declared.ok().map(|q| q.consumer_count()));
    }
    session.close().await;
    counts
}

async fn select(
    store: &Store,
    ids: &[String],
    filter: &DeadFilterArgs,
    all: bool,
) -> anyhow::Result<Vec<Uuid>> {
    if !ids.is_empty() {
        if filter.is_set() || all {
            bail!("give IDs or filters, not both");
        }
        return ids.iter().map(|id| parse_id(id)).collect();
    }
    if !filter.is_set() && !all {
        bail!(
            "name dead letters by ID, by a filter (--queue, --kind, --error, --since, --until), or pass --all"
        );
    }
    let letters = store.dead_letters(&filter.to_filter()?).await?;
    Ok(letters.into_iter().map(|d| d.id).collect())
}

async fn read_args(
    store: &Store,
    catalog: &Catalog,
    id: Uuid,
    path: &std::path::Path,
) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --args file {}", path.display()))?;
    let args: Value = serde_json::from_str(&text)
        .with_context(|| format!("--args file {} is not JSON", path.display()))?;
    let detail = store
        .dead_letter(id)
        .await?
        .with_context(|| format!("no dead letter or dead job with id {id}"))?;
    let kind = detail
        .letter
        .kind
        .context("the dead letter has no kind to validate args against")?;
    let spec = catalog
        .get(&kind)
        .map_err(|e| anyhow::anyhow!("{e}; cannot validate --args"))?;
    if let Err(errors) = spec.validate(&args) {
        bail!("--args are invalid for {kind}: {}", errors.prefixed("args"));
    }
    Ok(args)
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

    /// The store filter; times are RFC 3339 or relative (`90s`, `15m`, `2h`, `7d` ago).
    ///
    /// # Errors
    /// A time that parses as neither.
    pub fn to_filter(&self) -> anyhow::Result<DeadFilter> {
        Ok(DeadFilter {
            queue: self.queue.clone(),
            kind: self.kind.clone(),
            error: self.error.clone(),
            since: self
                .since
                .as_deref()
                .map(|t| parse_time(t, "--since"))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|t| parse_time(t, "--until"))
                .transpose()?,
            limit: self.limit,
        })
    }
}

/// Parses RFC 3339 or a relative duration ago (`90s`, `15m`, `2h`, `7d`).
///
/// # Errors
/// Neither form.
pub fn parse_time(text: &str, flag: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match number.parse::<i64>() {
        Ok(n) if seconds > 0 && n >= 0 => {
            Ok(Utc::now() - chrono::Duration::seconds(n.saturating_mul(seconds)))
        }
        _ => bail!(
            "{flag} {text:?}: expected an RFC 3339 time (2026-11-21T10:00:00Z) or an age like 90s, 15m, 2h, 7d"
        ),
    }
}

fn parse_id(text: &str) -> anyhow::Result<Uuid> {
    Uuid::parse_str(text)
        .with_context(|| format!("{text:?} is not a job or dead-letter id (a UUID)"))
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn default_actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("{user} (cli)")
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

fn short_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn truncate(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() <= max {
        line.to_owned()
    } else {
        format!("{}…", line.chars().take(max - 1).collect::<String>())
    }
}

/// Renders rows under headers with aligned columns (the last column is not padded).
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for row in &rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
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

    #[test]
    fn tables_align() {
        let t = table(&["A", "LONGER"], vec![vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
    }
}
