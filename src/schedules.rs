//! Schedules at the edges of the binary: `[[schedules]]` in `conveyor.toml` (checked
//! when settings load, written to the ledger at start-up), and the
//! `conveyor schedules list|show|pause|resume|trigger|preview` commands. Each command
//! builds a value and renders it once: a table or `--json`.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use jobs::Catalog;
use jobs::schedule::{ScheduleDef, ScheduleSpec};
use serde::Serialize;
use store::{ScheduleChange, ScheduleRecord, Store};
use tokio_util::sync::CancellationToken;

use crate::cli::SchedulesCommand;
use crate::config::{ConfigError, Settings};
use crate::ops::render::{Format, Lines, Text, View, print, table};

/// Checks every configured schedule (cron, time zone, kind, args for the kind, queue,
/// limits, unique names) and resolves the kinds' defaults. Every problem is reported,
/// each naming the schedule and the field.
///
/// # Errors
/// One line per problem.
pub fn validate_config(
    specs: &[ScheduleSpec],
    catalog: &Catalog,
    max_attempts_limit: u32,
) -> Result<Vec<ScheduleDef>, ConfigError> {
    let mut problems = Vec::new();
    let mut defs = Vec::with_capacity(specs.len());
    let mut seen = std::collections::HashSet::new();
    for (i, spec) in specs.iter().enumerate() {
        let name = spec.name.clone();
        if !seen.insert(name.clone()) {
            problems.push(format!(
                "configuration key `schedules[{i}].name` (schedule {name:?}): declared twice"
            ));
        }
        match spec.clone().validate(
            catalog,
            broker::topology::valid_queue_name,
            max_attempts_limit,
        ) {
            Ok(def) => defs.push(def),
            Err(errors) => problems.extend(errors.0.into_iter().map(|e| {
                format!(
                    "configuration key `schedules[{i}].{}` (schedule {name:?}): {}",
                    e.field, e.message
                )
            })),
        }
    }
    if problems.is_empty() {
        Ok(defs)
    } else {
        Err(ConfigError(problems.join("\n")))
    }
}

/// Writes the configured schedules to the ledger (and disables the ones no longer
/// configured), retrying with backoff while the database is unavailable, until done or
/// `shutdown`.
pub async fn sync_config(store: Store, defs: Vec<ScheduleDef>, shutdown: CancellationToken) {
    let mut delay = Duration::from_millis(200);
    loop {
        match store.sync_config_schedules(&defs).await {
            Ok(sync) => {
                if !sync.disabled.is_empty() {
                    tracing::warn!(disabled = ?sync.disabled, "schedules no longer in the configuration are disabled (their history stays)");
                }
                tracing::info!(schedules = sync.upserted, "configured schedules written");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the configured schedules yet; retrying")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// One schedule as the commands show it: the record, its state and its next slot in
/// its own time zone.
#[derive(Debug, Serialize)]
struct Listed {
    #[serde(flatten)]
    schedule: ScheduleRecord,
    state: &'static str,
    next_slot_local: Option<String>,
}

impl Listed {
    fn of(schedule: ScheduleRecord) -> Self {
        Listed {
            state: state(&schedule),
            next_slot_local: next_local(&schedule),
            schedule,
        }
    }
}

/// `schedules list` (JSON: the array).
#[derive(Debug, Serialize)]
#[serde(transparent)]
struct ScheduleList(Vec<Listed>);

impl View for ScheduleList {
    fn text(&self) -> Text {
        let records: Vec<ScheduleRecord> = self.0.iter().map(|l| l.schedule.clone()).collect();
        let mut text = Text {
            out: render_list(&records),
            notes: String::new(),
        };
        if records.is_empty() {
            text.note("no schedules");
        }
        text
    }
}

/// `schedules show`: the schedule and its recent jobs.
#[derive(Debug, Serialize)]
struct ScheduleShow {
    schedule: Listed,
    recent_jobs: Vec<jobs::JobRecord>,
}

impl View for ScheduleShow {
    fn text(&self) -> Text {
        Text {
            out: render_show(&self.schedule.schedule, &self.recent_jobs),
            notes: String::new(),
        }
    }
}

/// `schedules trigger`: the job fired (JSON: the job).
#[derive(Debug, Serialize)]
#[serde(transparent)]
struct Fired {
    #[serde(skip)]
    name: String,
    job: jobs::JobRecord,
}

impl View for Fired {
    fn text(&self) -> Text {
        let mut text = Text::default();
        text.line(format!("fired {} now: job {}", self.name, self.job.id));
        text
    }
}

fn state(record: &ScheduleRecord) -> &'static str {
    if !record.enabled {
        "disabled"
    } else if record.paused {
        "paused"
    } else {
        "active"
    }
}

fn next_local(record: &ScheduleRecord) -> Option<String> {
    let cadence = record.cadence().ok()?;
    record.next_slot.map(|slot| cadence.label(slot))
}

/// Renders `schedules list` as a table.
pub fn render_list(schedules: &[ScheduleRecord]) -> String {
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.cron.clone(),
                s.timezone.clone(),
                s.kind.clone(),
                state(s).to_owned(),
                next_local(s).unwrap_or_else(|| "-".into()),
                s.fired.to_string(),
                s.missed.to_string(),
                s.skipped_overlap.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "CRON", "TIMEZONE", "KIND", "STATE", "NEXT", "FIRED", "MISSED", "SKIPPED",
        ],
        &rows,
    )
}

/// Renders `schedules show` (without `--json`).
pub fn render_show(s: &ScheduleRecord, jobs: &[jobs::JobRecord]) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: String| out.push_str(&format!("{key:<16}{value}\n"));
    line("schedule", s.name.clone());
    line("state", state(s).to_owned());
    line("cron", format!("{} ({})", s.cron, s.timezone));
    line("kind", format!("{} on queue {}", s.kind, s.queue));
    line("args", s.args.to_string());
    line(
        "catch up",
        format!("{} (at most {} slots)", s.catch_up, s.catch_up_limit),
    );
    line("overlap", s.overlap.to_string());
    line("declared in", s.source.as_str().to_owned());
    line("next slot", next_local(s).unwrap_or_else(|| "-".into()));
    line(
        "slots",
        format!(
            "{} fired, {} missed, {} skipped (overlap)",
            s.fired, s.missed, s.skipped_overlap
        ),
    );
    line(
        "last fired",
        s.last_fired_at
            .map_or_else(|| "never".into(), |t| t.to_rfc3339()),
    );
    if !jobs.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .map(|j| {
                vec![
                    j.fired_by
                        .as_ref()
                        .map_or_else(|| "-".into(), |f| f.slot.clone()),
                    j.id.to_string(),
                    j.state.to_string(),
                    j.attempt.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(&["SLOT", "JOB", "STATE", "ATTEMPT"], &rows));
    }
    out
}

fn changed(change: ScheduleChange, name: &str) -> anyhow::Result<ScheduleRecord> {
    match change {
        ScheduleChange::Done(record) => Ok(*record),
        ScheduleChange::Missing => bail!("no schedule named {name:?}"),
        ScheduleChange::Declared => {
            bail!("schedule {name:?} is declared in conveyor.toml; change it there")
        }
    }
}

/// Runs a `schedules` subcommand. `settings` supplies configured schedules that are not
/// in the ledger yet (for `preview`).
///
/// # Errors
/// An unknown name, a bad argument, or an unreachable database.
pub async fn run(
    store: &Store,
    settings: &Settings,
    catalog: &Catalog,
    command: SchedulesCommand,
) -> anyhow::Result<()> {
    match command {
        SchedulesCommand::List { json } => {
            let schedules = store.list_schedules().await?;
            let list = ScheduleList(schedules.into_iter().map(Listed::of).collect());
            print(&list, Format::json_if(json))
        }
        SchedulesCommand::Show { name, json } => {
            let schedule = store
                .get_schedule(&name)
                .await?
                .with_context(|| format!("no schedule named {name:?}"))?;
            let recent_jobs = store.schedule_jobs(&name, 10).await?;
            let show = ScheduleShow {
                schedule: Listed::of(schedule),
                recent_jobs,
            };
            print(&show, Format::json_if(json))
        }
        SchedulesCommand::Pause { name } => {
            let record = changed(store.set_schedule_paused(&name, true).await?, &name)?;
            print(
                &Lines::one(format!("paused {}", record.name)),
                Format::Table,
            )
        }
        SchedulesCommand::Resume { name } => {
            let record = changed(store.set_schedule_paused(&name, false).await?, &name)?;
            let line = format!(
                "resumed {}; next slot {}",
                record.name,
                next_local(&record).unwrap_or_else(|| "none".into())
            );
            print(&Lines::one(line), Format::Table)
        }
        SchedulesCommand::Trigger { name, json } => {
            let job = store
                .trigger_schedule(&name)
                .await?
                .with_context(|| format!("no schedule named {name:?}"))?;
            print(&Fired { name, job }, Format::json_if(json))
        }
        SchedulesCommand::Preview { name, count } => {
            let (cadence, after) = match store.get_schedule(&name).await? {
                Some(record) => {
                    let cursor = record.cursor.max(Utc::now());
                    (record.cadence()?, cursor)
                }
                None => {
                    let spec = settings
                        .schedules
                        .iter()
                        .find(|s| s.name == name)
                        .with_context(|| format!("no schedule named {name:?}"))?;
                    let def = spec
                        .clone()
                        .validate(
                            catalog,
                            broker::topology::valid_queue_name,
                            settings.producer.max_attempts_limit,
                        )
                        .map_err(|e| anyhow::anyhow!("schedule {name:?} is invalid: {e:?}"))?;
                    (def.cadence, Utc::now())
                }
            };
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            let slots = cadence
                .upcoming(after, count)
                .into_iter()
                .map(|slot| cadence.label(slot))
                .collect();
            print(&Lines(slots), Format::Table)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> ScheduleSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn every_bad_schedule_field_is_named_with_its_schedule() {
        let catalog = worker::startup::catalog(false).unwrap();
        let specs = [
            spec(
                json!({"name": "nightly", "cron": "0 2 * * *", "kind": "noop", "timezone": "Europe/Berlin"}),
            ),
            spec(
                json!({"name": "broken", "cron": "0 25 * * *", "kind": "nope", "timezone": "Nowhere/City"}),
            ),
            spec(
                json!({"name": "nightly", "cron": "@daily", "kind": "email.send", "args": {"x": 1}}),
            ),
        ];
        let err = validate_config(&specs, &catalog, 100).unwrap_err().0;
        assert!(
            err.contains("`schedules[1].cron` (schedule \"broken\")"),
            "{err}"
        );
        assert!(err.contains("`schedules[1].timezone`"), "{err}");
        assert!(err.contains("`schedules[1].kind`"), "{err}");
        assert!(
            err.contains("`schedules[2].name` (schedule \"nightly\"): declared twice"),
            "{err}"
        );
        assert!(err.contains("`schedules[2].args"), "{err}");
        assert!(!err.contains("schedules[0]"), "{err}");
        assert_eq!(
            validate_config(&specs[..1], &catalog, 100).unwrap().len(),
            1
        );
    }
}
