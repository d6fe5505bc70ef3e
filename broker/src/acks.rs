//! Settles one channel's deliveries in groups. A busy worker finishes many deliveries at
//! once (claims and completions are written in batches), and acking each one alone costs
//! the broker one settlement per message in the quorum queue's log; one `basic.ack` with
//! `multiple` settles a whole run of delivery tags.
//!
//! `multiple` acks every unsettled tag up to the one named, so it is only used for the
//! run of tags at the low end of what is unsettled; acks above a gap (a delivery still
//! running, or abandoned at shutdown and left for redelivery) are sent one by one, and
//! rejects always are. This task is the only one that settles the channel's deliveries,
//! so no tag is ever settled twice.

use std::collections::{BTreeMap, BTreeSet};

use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::{mpsc, oneshot};

use crate::consumer::{Disposition, SETTLE_TIMEOUT};

enum Event {
    /// A delivery arrived (sent before its task starts, so it always precedes `Done`).
    Delivered(u64, Acker),
    /// Its task decided; the reply says when the broker has been told.
    Done(u64, Disposition, oneshot::Sender<()>),
}

/// Handle to one channel's settling task; the task ends when every handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Acks {
    events: mpsc::UnboundedSender<Event>,
}

impl Acks {
    /// Starts the task for one channel.
    pub(crate) fn start() -> Self {
        let (events, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(queue));
        Self { events }
    }

    /// Registers a delivery as unsettled; call before its task starts.
    pub(crate) fn delivered(&self, tag: u64, acker: Acker) {
        let _ = self.events.send(Event::Delivered(tag, acker));
    }

    /// Settles a delivery as `disposition` says, grouped with others finishing now, and
    /// returns once the broker has been told (or telling it failed: the delivery is then
    /// redelivered, and its job is found final and skipped).
    pub(crate) async fn settle(&self, tag: u64, disposition: Disposition) {
        let (reply, sent) = oneshot::channel();
        if self
            .events
            .send(Event::Done(tag, disposition, reply))
            .is_ok()
        {
            let _ = sent.await;
        }
    }
}

#[derive(Default)]
struct Ledger {
    /// Delivered and not yet settled (abandoned deliveries stay here: a barrier that no
    /// `multiple` ack may cross).
    unsettled: BTreeMap<u64, Acker>,
    /// A settlement failed or timed out: the channel is gone, the broker redelivers
    /// everything unsettled, and waiting on each remaining one would only stall.
    broken: bool,
}

async fn run(mut queue: mpsc::UnboundedReceiver<Event>) {
    let mut ledger = Ledger::default();
    while let Some(first) = queue.recv().await {
        let mut to_ack = BTreeSet::new();
        let mut waiting = Vec::new();
        let mut event = Some(first);
        while let Some(next) = event {
            match next {
                Event::Delivered(tag, acker) => {
                    ledger.unsettled.insert(tag, acker);
                }
                Event::Done(tag, disposition, reply) => {
                    match disposition {
                        Disposition::Ack => {
                            to_ack.insert(tag);
                        }
                        Disposition::Reject => {
                            if let Some(acker) = ledger.unsettled.remove(&tag) {
                                ledger
                                    .send(acker.nack(BasicNackOptions {
                                        requeue: false,
                                        ..BasicNackOptions::default()
                                    }))
                                    .await;
                            }
                        }
                        // Left unsettled for redelivery.
                        Disposition::Abandon => {}
                    }
                    waiting.push(reply);
                }
            }
            event = queue.try_recv().ok();
        }
        ledger.ack(&to_ack).await;
        for reply in waiting {
            let _ = reply.send(());
        }
    }
}

/// How to ack `tags` given the `unsettled` ones (ascending): the run of `tags` at the
/// low end of `unsettled` as one ack of its last tag (`multiple` when the run holds more
/// than one), and every other tag alone.
fn plan(
    unsettled: impl Iterator<Item = u64>,
    tags: &BTreeSet<u64>,
) -> (Option<(u64, bool)>, Vec<u64>) {
    let mut run_len = 0usize;
    let mut run_end = None;
    for tag in unsettled {
        if !tags.contains(&tag) {
            break;
        }
        run_len += 1;
        run_end = Some(tag);
    }
    let singles = tags
        .iter()
        .copied()
        .filter(|tag| run_end.is_none_or(|end| *tag > end))
        .collect();
    (run_end.map(|end| (end, run_len > 1)), singles)
}

impl Ledger {
    /// Acks `tags` as [`plan`] says.
    async fn ack(&mut self, tags: &BTreeSet<u64>) {
        if tags.is_empty() {
            return;
        }
        let (run, singles) = plan(self.unsettled.keys().copied(), tags);
        if let Some((end, multiple)) = run {
            let rest = self.unsettled.split_off(&(end + 1));
            if let Some(acker) = self.unsettled.remove(&end) {
                self.send(acker.ack(BasicAckOptions { multiple })).await;
            }
            self.unsettled = rest;
        }
        for tag in singles {
            if let Some(acker) = self.unsettled.remove(&tag) {
                self.send(acker.ack(BasicAckOptions { multiple: false }))
                    .await;
            }
        }
    }

    /// Sends one settlement, unless the channel already failed one.
    async fn send(&mut self, settlement: impl Future<Output = Result<bool, lapin::Error>>) {
        if self.broken {
            return;
        }
        match tokio::time::timeout(SETTLE_TIMEOUT, settlement).await {
            Ok(Ok(_)) => {}
            // The channel died after the outcome was committed: the redelivery finds
            // the job final and is acked without running.
            Ok(Err(e)) => {
                self.broken = true;
                tracing::warn!(error = %e, "could not settle deliveries; they will be redelivered");
            }
            Err(_) => {
                self.broken = true;
                tracing::warn!("settling deliveries timed out; they will be redelivered");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(tags: &[u64]) -> BTreeSet<u64> {
        tags.iter().copied().collect()
    }

    #[test]
    fn a_run_from_the_lowest_unsettled_tag_is_one_multiple_ack() {
        let (run, singles) = plan([3, 4, 5, 6].into_iter(), &set(&[3, 4, 5]));
        assert_eq!(run, Some((5, true)));
        assert!(singles.is_empty());
    }

    #[test]
    fn acks_above_a_gap_go_one_by_one() {
        // 2 is still running (or abandoned): a multiple ack of 4 would settle it too.
        let (run, singles) = plan([1, 2, 3, 4].into_iter(), &set(&[1, 3, 4]));
        assert_eq!(run, Some((1, false)));
        assert_eq!(singles, vec![3, 4]);
        let (run, singles) = plan([2, 3, 4].into_iter(), &set(&[3, 4]));
        assert_eq!(run, None);
        assert_eq!(singles, vec![3, 4]);
    }

    #[test]
    fn a_lone_ack_is_not_multiple() {
        let (run, singles) = plan([7].into_iter(), &set(&[7]));
        assert_eq!(run, Some((7, false)));
        assert!(singles.is_empty());
    }
}
