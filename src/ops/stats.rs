//! `conveyor stats`: the ledger's per-queue numbers with RabbitMQ's live consumer
//! counts.

use anyhow::Context;
use serde::Serialize;
use store::{QueueStats, Store};

use super::render::{Text, View, or_dash, table};
use crate::config::Settings;

/// One queue's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsRow {
    /// The ledger's numbers.
    #[serde(flatten)]
    pub stats: QueueStats,
    /// Consumers RabbitMQ counts on the queue (`None`: the broker did not answer).
    pub consumers: Option<u32>,
}

/// Every queue with work or recent attempts, sorted by name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Stats(pub Vec<StatsRow>);

impl View for Stats {
    fn text(&self) -> Text {
        let rows: Vec<Vec<String>> = self
            .0
            .iter()
            .map(|row| {
                let q = &row.stats;
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
                    or_dash(row.consumers),
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
        let mut text = Text {
            out: table(&headers, &rows),
            notes: String::new(),
        };
        if self.0.is_empty() {
            text.line("(no queue has work or recent attempts)");
        }
        text
    }
}

/// Reads the ledger's numbers and asks RabbitMQ for each queue's consumers (`None`
/// where it cannot say within a few seconds).
///
/// # Errors
/// The database fails.
pub async fn collect(store: &Store, settings: &Settings) -> anyhow::Result<Stats> {
    let stats = store
        .queue_stats()
        .await
        .context("cannot read queue stats from Postgres")?;
    let consumers = consumer_counts(settings, stats.iter().map(|q| q.queue.as_str())).await;
    Ok(Stats(
        stats
            .into_iter()
            .zip(consumers)
            .map(|(stats, consumers)| StatsRow { stats, consumers })
            .collect(),
    ))
}

async fn consumer_counts<'a>(
    settings: &Settings,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    use crate::ops::render::{Format, render};

    fn row(queue: &str, consumers: Option<u32>) -> StatsRow {
        StatsRow {
            stats: QueueStats {
                queue: queue.into(),
                ready: 12,
                running: 3,
                scheduled: 0,
                retrying: 1,
                dead: 2,
                oldest_ready_age_seconds: 4.5,
                completed_last_minute: 900,
                failed_last_minute: 7,
            },
            consumers,
        }
    }

    #[test]
    fn the_table_has_a_row_per_queue_with_a_dash_for_unknown_consumers() {
        let text = Stats(vec![row("default", Some(2)), row("orders", None)]).text();
        assert_eq!(
            text.out,
            "QUEUE    READY  RUNNING  SCHEDULED  RETRYING  DEAD  OLDEST  DONE/1M  FAILED/1M  CONSUMERS\n\
             default  12     3        0          1         2     4.5s    900      7          2\n\
             orders   12     3        0          1         2     4.5s    900      7          -\n"
        );
    }

    #[test]
    fn no_queues_says_so() {
        let text = Stats(vec![]).text();
        assert!(
            text.out
                .ends_with("\n(no queue has work or recent attempts)\n"),
            "{}",
            text.out
        );
    }

    #[test]
    fn json_rows_are_flat_with_consumers_null_when_unknown() {
        let view = Stats(vec![row("default", Some(2)), row("orders", None)]);
        let json: Value = serde_json::from_str(&render(&view, Format::Json).unwrap().out).unwrap();
        assert_eq!(json[0]["queue"], "default");
        assert_eq!(json[0]["ready"], 12);
        assert_eq!(json[0]["oldest_ready_age_seconds"], 4.5);
        assert_eq!(json[0]["consumers"], 2);
        assert_eq!(json[1]["consumers"], json!(null));
    }
}
