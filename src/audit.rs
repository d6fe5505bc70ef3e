//! `conveyor audit list`: who changed what, newest first — the rows `GET /v1/audit`
//! serves.

use anyhow::Context;
use chrono::Utc;
use serde::Serialize;
use store::{AuditAction, AuditQuery, AuditRecord, Store};

use crate::cli::AuditCommand;
use crate::ops::render::{Format, Text, View, print, table};

/// Runs an `audit` subcommand.
///
/// # Errors
/// A bad filter, or an unreachable database.
pub async fn audit(store: &Store, command: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::List {
        action,
        actor,
        since,
        limit,
        json,
    } = command;
    let action = action
        .as_deref()
        .map(str::parse::<AuditAction>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--action {e}"))?;
    let since = since
        .as_deref()
        .map(|t| crate::ops::parse_time(t, "--since"))
        .transpose()?;
    let rows = store
        .audit_log(&AuditQuery {
            action,
            actor,
            before: None,
            since,
            limit,
        })
        .await
        .context("cannot read the audit log")?;
    print(&AuditList(rows), Format::json_if(json))
}

/// `audit list`: the entries, newest first (JSON: the array).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct AuditList(pub Vec<AuditRecord>);

impl View for AuditList {
    fn text(&self) -> Text {
        let mut text = Text {
            out: render(&self.0),
            notes: String::new(),
        };
        if self.0.is_empty() {
            text.note("no audit entries match");
        }
        text
    }
}

/// The `audit list` table.
pub fn render(rows: &[AuditRecord]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let targets = match r.targets.as_slice() {
                [] => "-".to_owned(),
                [one] => one.to_string(),
                [first, ..] => format!("{first} +{}", r.targets.len() - 1),
            };
            vec![
                r.at.with_timezone(&Utc)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string(),
                format!("{} ({})", r.actor.name, r.actor.kind.as_str()),
                r.action.as_str().to_owned(),
                r.count.to_string(),
                targets,
                r.filter
                    .as_ref()
                    .map_or_else(|| "-".into(), ToString::to_string),
                r.request_id.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "AT", "ACTOR", "ACTION", "COUNT", "TARGETS", "FILTER", "REQUEST",
        ],
        &rows,
    )
}
