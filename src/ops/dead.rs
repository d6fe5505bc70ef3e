//! `conveyor dead list|show|replay|purge`: each builds its value from the ledger; the
//! caller renders it. Progress and the purge question live in `ops::dead` (the command),
//! not here.

use std::time::Duration;

use anyhow::{Context, bail};
use jobs::{Catalog, JobId};
use serde::Serialize;
use serde_json::Value;
use store::{DeadFilter, DeadLetter, DeadLetterDetail, ErrorGroup, ReplayOutcome, Store};
use uuid::Uuid;

use super::render::{Text, View, or_dash, short_time, table, truncate};
use crate::cli::DeadFilterArgs;

/// `dead list`: open dead letters, or their counts per error fingerprint.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum DeadList {
    /// Newest first.
    Letters(Vec<DeadLetter>),
    /// With `--group-by error`.
    Groups(Vec<ErrorGroup>),
}

impl View for DeadList {
    fn text(&self) -> Text {
        let mut text = Text::default();
        match self {
            DeadList::Groups(groups) => {
                let rows: Vec<Vec<String>> = groups
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
                text.out = table(&["COUNT", "KINDS", "LAST", "ERROR"], &rows);
            }
            DeadList::Letters(letters) => {
                let rows: Vec<Vec<String>> = letters
                    .iter()
                    .map(|d| {
                        vec![
                            d.job_id.map_or_else(|| d.id.to_string(), |j| j.to_string()),
                            or_dash(d.kind.as_ref()),
                            or_dash(d.queue.as_ref()),
                            d.reason.to_string(),
                            or_dash(d.attempts),
                            short_time(d.died_at),
                            truncate(d.error.as_deref().unwrap_or(""), 70),
                        ]
                    })
                    .collect();
                text.out = table(
                    &["ID", "KIND", "QUEUE", "REASON", "ATTEMPTS", "DIED", "ERROR"],
                    &rows,
                );
                if letters.is_empty() {
                    text.note("no dead letters match");
                }
            }
        }
        text
    }
}

/// `dead list`.
///
/// # Errors
/// The database fails.
pub async fn list(store: &Store, filter: &DeadFilter, grouped: bool) -> anyhow::Result<DeadList> {
    Ok(if grouped {
        DeadList::Groups(store.dead_letter_groups(filter).await?)
    } else {
        DeadList::Letters(store.dead_letters(filter).await?)
    })
}

/// `dead show`: one dead letter with its payload and every attempt.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct DeadShow(pub DeadLetterDetail);

impl View for DeadShow {
    fn text(&self) -> Text {
        let detail = &self.0;
        let d = &detail.letter;
        let mut text = Text::default();
        text.line(format!("dead letter  {}", d.id));
        if let Some(job) = d.job_id {
            text.line(format!("job          {job}"));
        }
        text.line(format!("kind         {}", d.kind.as_deref().unwrap_or("-")));
        text.line(format!(
            "queue        {}",
            d.queue.as_deref().unwrap_or("-")
        ));
        text.line(format!("reason       {}", d.reason));
        text.line(format!(
            "error        {}",
            d.error.as_deref().unwrap_or("-")
        ));
        text.line(format!("died at      {}", d.died_at.to_rfc3339()));
        if let Some(n) = d.replay_count {
            text.line(format!("replays      {n}"));
        }
        if let (Some(at), Some(how)) = (detail.resolved_at, &detail.resolution) {
            text.line(format!("resolved     {how} at {}", at.to_rfc3339()));
        }
        text.line(format!("payload      {}", detail.payload));
        if !detail.attempts_history.is_empty() {
            text.line("");
            let rows: Vec<Vec<String>> = detail
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
            text.out.push_str(&table(
                &["ATTEMPT", "OUTCOME", "WORKER", "STARTED", "TOOK", "ERROR"],
                &rows,
            ));
        }
        text
    }
}

/// `dead show`.
///
/// # Errors
/// No such dead letter, or the database fails.
pub async fn show(store: &Store, id: Uuid) -> anyhow::Result<DeadShow> {
    let detail = store
        .dead_letter(id)
        .await?
        .with_context(|| format!("no dead letter or dead job with id {id}"))?;
    Ok(DeadShow(detail))
}

/// One dead letter named by a replay or purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Its id.
    pub id: Uuid,
}

/// `dead replay --dry-run`: what would be replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DryRun {
    /// Always `true`, so a script sees that nothing changed.
    pub dry_run: bool,
    /// The dead letters a replay would take.
    pub would_replay: Vec<Target>,
}

impl DryRun {
    /// The dry run of replaying `targets`.
    pub fn of(targets: &[Uuid]) -> Self {
        Self {
            dry_run: true,
            would_replay: targets.iter().map(|&id| Target { id }).collect(),
        }
    }
}

impl View for DryRun {
    fn text(&self) -> Text {
        let mut text = Text::default();
        for target in &self.would_replay {
            text.line(format!("would replay {}", target.id));
        }
        text.note(format!(
            "{} dead letter(s) would be replayed (dry run)",
            self.would_replay.len()
        ));
        text
    }
}

/// One replay's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayResult {
    /// The dead letter (or job) named.
    pub id: Uuid,
    /// What happened to it.
    pub outcome: ReplayOutcome,
}

/// `dead replay`: how many were replayed and skipped, and each result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Replayed {
    /// Jobs scheduled to run again.
    pub replayed: usize,
    /// Dead letters left alone (already resolved, or taken by a concurrent replay).
    pub skipped: usize,
    /// Each target's outcome, in order.
    pub results: Vec<ReplayResult>,
}

impl Replayed {
    /// The jobs the replay moved (to announce their events).
    pub fn moved(&self) -> Vec<JobId> {
        self.results
            .iter()
            .filter_map(|result| match result.outcome {
                ReplayOutcome::Replayed { job_id } => Some(job_id),
                ReplayOutcome::Skipped { .. } => None,
            })
            .collect()
    }
}

impl View for Replayed {
    fn text(&self) -> Text {
        let mut text = Text::default();
        text.line(format!(
            "replayed {}, skipped {}",
            self.replayed, self.skipped
        ));
        text
    }
}

/// How to replay: who does it, with which corrected args, how fast.
#[derive(Debug, Clone)]
pub struct ReplayPlan {
    /// Recorded on each job as `replayed_by`.
    pub context: store::AuditContext,
    /// Corrected args for the one target, already validated.
    pub args: Option<Value>,
    /// Replays per second, at most.
    pub rate: Option<u32>,
}

/// Replays `targets` one by one (at most `plan.rate` per second), telling `observe`
/// after each (for a progress bar).
///
/// # Errors
/// The database fails; the replays made so far stay made.
pub async fn replay(
    store: &Store,
    targets: &[Uuid],
    plan: &ReplayPlan,
    mut observe: impl FnMut(&ReplayResult),
) -> anyhow::Result<Replayed> {
    let mut replayed = Replayed::default();
    let mut note = |id: Uuid, outcome: ReplayOutcome| {
        match &outcome {
            ReplayOutcome::Replayed { .. } => replayed.replayed += 1,
            ReplayOutcome::Skipped { .. } => replayed.skipped += 1,
        }
        let result = ReplayResult { id, outcome };
        observe(&result);
        replayed.results.push(result);
    };
    match plan.rate {
        // At full speed: one transaction, one audit row for the whole set.
        None => {
            for (id, outcome) in store
                .replay_many(targets, plan.args.as_ref(), &plan.context)
                .await?
            {
                note(id, outcome);
            }
        }
        // Paced: each replay is its own change, with its own audit row.
        Some(r) => {
            let mut ticker =
                tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(r.max(1))));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for &id in targets {
                ticker.tick().await;
                let outcome = store.replay(id, plan.args.as_ref(), &plan.context).await?;
                note(id, outcome);
            }
        }
    }
    Ok(replayed)
}

/// `dead purge`: how many dead letters (and their dead jobs) were deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// Deleted.
    pub purged: u64,
    /// How many the selection named (0: nothing to purge).
    #[serde(skip)]
    pub selected: usize,
}

impl View for Purged {
    fn text(&self) -> Text {
        let mut text = Text::default();
        if self.selected == 0 {
            text.line("nothing to purge");
        } else {
            text.line(format!("purged {}", self.purged));
        }
        text
    }
}

/// The dead letters a replay or purge names: by id, or by filter (or `--all`), never
/// both; snapshotted now, with the filter to record in the audit log (none for ids).
///
/// # Errors
/// Ids and filters together, neither, an id that is not a UUID, a bad time, or the
/// database fails.
pub async fn select(
    store: &Store,
    ids: &[String],
    filter: &DeadFilterArgs,
    all: bool,
) -> anyhow::Result<(Vec<Uuid>, Option<Value>)> {
    if !ids.is_empty() {
        if filter.is_set() || all {
            bail!("give IDs or filters, not both");
        }
        return Ok((
            ids.iter()
                .map(|id| super::parse_id(id))
                .collect::<anyhow::Result<_>>()?,
            None,
        ));
    }
    if !filter.is_set() && !all {
        bail!(
            "name dead letters by ID, by a filter (--queue, --kind, --error, --since, --until), or pass --all"
        );
    }
    let filter = filter.to_filter()?;
    let mut described = filter.describe();
    if all {
        described["all"] = Value::Bool(true);
    }
    let letters = store.dead_letters(&filter).await?;
    Ok((letters.into_iter().map(|d| d.id).collect(), Some(described)))
}

/// Reads corrected args for a replay from `path` and validates them against the dead
/// job's kind, as intake would.
///
/// # Errors
/// An unreadable or non-JSON file, a dead letter without a known kind, or args the kind
/// refuses (each field named under `args`).
pub async fn read_args(
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
    let spec = catalog.get(&kind).context("cannot validate --args")?;
    if let Err(errors) = spec.validate(&args) {
        bail!("--args are invalid for {kind}: {}", errors.prefixed("args"));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use jobs::JobId;
    use serde_json::json;
    use store::AttemptRecord;

    use crate::ops::render::{Format, render};

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn letter(error: &str) -> DeadLetter {
        DeadLetter {
            id: Uuid::from_u128(1),
            job_id: Some(JobId(Uuid::from_u128(2))),
            queue: Some("default".into()),
            kind: Some("test.fail".into()),
            reason: "failed".parse().unwrap(),
            error: Some(error.into()),
            attempts: Some(3),
            replay_count: Some(0),
            died_at: at("2026-11-21T10:00:00Z"),
        }
    }

    #[test]
    fn the_list_names_the_job_and_cuts_long_errors_to_one_line() {
        let long = format!("{}\nsecond line", "x".repeat(100));
        let raw = DeadLetter {
            id: Uuid::from_u128(3),
            job_id: None,
            queue: None,
            kind: None,
            reason: "undecodable".parse().unwrap(),
            error: None,
            attempts: None,
            replay_count: None,
            died_at: at("2026-11-21T10:00:01Z"),
        };
        let text = DeadList::Letters(vec![letter(&long), raw]).text();
        let lines: Vec<&str> = text.out.lines().collect();
        assert_eq!(
            lines[0],
            "ID                                    KIND       QUEUE    REASON       ATTEMPTS  DIED                 ERROR"
        );
        assert!(
            lines[1].starts_with("00000000-0000-0000-0000-000000000002  test.fail  default  failed       3         2026-11-21 10:00:00  xxx"),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with('…'), "{}", lines[1]);
        assert_eq!(lines[1].split("  ").last().unwrap().chars().count(), 70);
        assert!(!text.out.contains("second line"));
        assert!(
            lines[2].starts_with(
                "00000000-0000-0000-0000-000000000003  -          -        undecodable  -"
            ),
            "{}",
            lines[2]
        );
        assert!(text.notes.is_empty());
    }

    #[test]
    fn an_empty_list_is_a_header_and_a_note() {
        let text = DeadList::Letters(vec![]).text();
        assert_eq!(text.out.lines().count(), 1);
        assert_eq!(text.notes, "no dead letters match\n");
        let json = render(&DeadList::Letters(vec![]), Format::Json).unwrap();
        assert_eq!(json.out, "[]\n");
    }

    #[test]
    fn groups_show_count_kinds_last_and_fingerprint() {
        let groups = DeadList::Groups(vec![ErrorGroup {
            fingerprint: "550 <email>: mailbox unavailable".into(),
            count: 12,
            kinds: vec!["email.send".into(), "test.fail".into()],
            first: at("2026-11-21T09:00:00Z"),
            last: at("2026-11-21T10:00:00Z"),
        }]);
        assert_eq!(
            groups.text().out,
            format!(
                "{:<7}{:<22}{:<21}ERROR\n{:<7}{:<22}{:<21}550 <email>: mailbox unavailable\n",
                "COUNT", "KINDS", "LAST", "12", "email.send,test.fail", "2026-11-21 10:00:00"
            )
        );
        let json: Value =
            serde_json::from_str(&render(&groups, Format::Json).unwrap().out).unwrap();
        assert_eq!(json[0]["count"], 12);
        assert_eq!(json[0]["kinds"], json!(["email.send", "test.fail"]));
    }

    #[test]
    fn a_letter_as_json_is_an_array_of_flat_objects() {
        let json: Value = serde_json::from_str(
            &render(&DeadList::Letters(vec![letter("boom")]), Format::Json)
                .unwrap()
                .out,
        )
        .unwrap();
        assert_eq!(json[0]["id"], "00000000-0000-0000-0000-000000000001");
        assert_eq!(json[0]["job_id"], "00000000-0000-0000-0000-000000000002");
        assert_eq!(json[0]["reason"], "failed");
        assert_eq!(json[0]["attempts"], 3);
    }

    #[test]
    fn show_lists_the_letter_then_its_attempts() {
        let detail = DeadLetterDetail {
            letter: letter("boom"),
            payload: json!({"message": "boom"}),
            headers: None,
            attempts_history: vec![AttemptRecord {
                attempt: 1,
                outcome: "failed".parse().unwrap(),
                error: Some("boom".into()),
                worker_id: Some(Uuid::from_u128(0xabcdef12_0000_0000_0000_000000000000)),
                started_at: at("2026-11-21T09:59:59Z"),
                finished_at: at("2026-11-21T10:00:00.250Z"),
                retry_at: None,
            }],
            resolved_at: None,
            resolution: None,
        };
        let view = DeadShow(detail);
        let text = view.text().out;
        assert!(
            text.starts_with(
                "dead letter  00000000-0000-0000-0000-000000000001\n\
             job          00000000-0000-0000-0000-000000000002\n\
             kind         test.fail\n\
             queue        default\n\
             reason       failed\n\
             error        boom\n\
             died at      2026-11-21T10:00:00+00:00\n\
             replays      0\n\
             payload      {\"message\":\"boom\"}\n\n\
             ATTEMPT  OUTCOME  WORKER    STARTED                    TOOK     ERROR\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "1        failed   abcdef12  2026-11-21T09:59:59+00:00  1250 ms  boom\n"
            ),
            "{text}"
        );
        let json: Value = serde_json::from_str(&render(&view, Format::Json).unwrap().out).unwrap();
        assert_eq!(
            json["reason"], "failed",
            "the letter's fields are flattened"
        );
        assert_eq!(json["attempts_history"][0]["outcome"], "failed");
    }

    #[test]
    fn a_dry_run_lists_the_targets_and_counts_them_on_stderr() {
        let view = DryRun::of(&[Uuid::from_u128(1), Uuid::from_u128(2)]);
        let text = view.text();
        assert_eq!(
            text.out,
            "would replay 00000000-0000-0000-0000-000000000001\nwould replay 00000000-0000-0000-0000-000000000002\n"
        );
        assert_eq!(text.notes, "2 dead letter(s) would be replayed (dry run)\n");
        let json: Value = serde_json::from_str(&render(&view, Format::Json).unwrap().out).unwrap();
        assert_eq!(
            json,
            json!({"dry_run": true, "would_replay": [
                {"id": "00000000-0000-0000-0000-000000000001"},
                {"id": "00000000-0000-0000-0000-000000000002"},
            ]})
        );
    }

    #[test]
    fn a_replay_report_counts_and_lists_each_outcome() {
        let view = Replayed {
            replayed: 1,
            skipped: 1,
            results: vec![
                ReplayResult {
                    id: Uuid::from_u128(1),
                    outcome: ReplayOutcome::Replayed {
                        job_id: JobId(Uuid::from_u128(2)),
                    },
                },
                ReplayResult {
                    id: Uuid::from_u128(3),
                    outcome: ReplayOutcome::Skipped {
                        reason: "already replayed".into(),
                    },
                },
            ],
        };
        assert_eq!(view.text().out, "replayed 1, skipped 1\n");
        let json: Value = serde_json::from_str(&render(&view, Format::Json).unwrap().out).unwrap();
        assert_eq!(json["replayed"], 1);
        assert_eq!(json["skipped"], 1);
        assert_eq!(
            json["results"][0],
            json!({"id": "00000000-0000-0000-0000-000000000001", "outcome": {"result": "replayed", "job_id": "00000000-0000-0000-0000-000000000002"}})
        );
        assert_eq!(json["results"][1]["outcome"]["result"], "skipped");
    }

    #[test]
    fn a_purge_says_what_it_deleted_or_that_nothing_was_selected() {
        let none = Purged {
            purged: 0,
            selected: 0,
        };
        assert_eq!(none.text().out, "nothing to purge\n");
        assert_eq!(
            render(&none, Format::Json).unwrap().out,
            "{\n  \"purged\": 0\n}\n"
        );
        let some = Purged {
            purged: 4,
            selected: 5,
        };
        assert_eq!(some.text().out, "purged 4\n");
    }
}
