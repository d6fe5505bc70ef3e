//! Firing schedules: each dispatcher round takes the slots that have come of every due
//! schedule (`store::Store::fire_schedule`: the cursor's compare-and-set and the slot's
//! job in one transaction) before publishing due jobs, so a fired slot's job goes out
//! in the same round. There is no leader: every dispatcher tries, exactly one takes
//! each slot, and the others find nothing to do.

use std::time::Duration;

use jobs::schedule::SlotResult;
use store::{Firing, Store};

/// Schedules looked at per round, at most.
const PER_ROUND: u32 = 100;

/// Fires every due schedule's slots. Returns what was done, per schedule.
///
/// # Errors
/// When the database fails (nothing is lost: the slots stay due for the next round).
pub async fn fire_due(store: &Store, grace: Duration) -> Result<Vec<Firing>, store::Error> {
    let mut done = Vec::new();
    for name in store.due_schedules(PER_ROUND).await? {
        if let Some(firing) = store.fire_schedule(&name, grace).await? {
            record(&firing);
            done.push(firing);
        }
    }
    Ok(done)
}

/// Counts a firing in `conveyor_schedule_slots_total{schedule, result}` and logs it.
fn record(firing: &Firing) {
    for (result, n) in [
        (SlotResult::Fired, firing.fired.len() as u64),
        (SlotResult::Missed, firing.missed),
        (SlotResult::SkippedOverlap, firing.skipped_overlap),
    ] {
        if n > 0 {
            metrics::counter!(
                "conveyor_schedule_slots_total",
                "schedule" => firing.schedule.clone(),
                "result" => result.as_str()
            )
            .increment(n);
        }
    }
    for (slot, job) in &firing.fired {
        tracing::info!(schedule = %firing.schedule, %slot, job_id = %job, "schedule fired");
    }
    if firing.missed > 0 {
        tracing::warn!(schedule = %firing.schedule, missed = firing.missed, "schedule slots missed (no dispatcher ran at their time; see catch_up)");
    }
    if firing.skipped_overlap > 0 {
        tracing::info!(schedule = %firing.schedule, skipped = firing.skipped_overlap, "schedule slot skipped: the previous run has not finished (overlap = skip)");
    }
}
