//! Schedules: what a periodic job is and when it fires. Pure: a [`Cadence`] (a cron
//! expression in an IANA time zone) turns (last slot, now) into the slots that are due,
//! and a [`ScheduleSpec`] is checked against the [`Catalog`] into a [`ScheduleDef`].
//! Storing schedules and taking slots is `store`'s; firing is the dispatcher's.
//!
//! # Daylight-saving rules
//!
//! The cron expression is matched against the zone's wall clock; this module maps each
//! matching wall-clock time to an instant:
//! - a time that happens once is that instant;
//! - a time that does not exist (the clocks jumped over it, e.g. 02:30 in Berlin on
//!   the last Sunday of March) fires once, at the first valid instant after the gap
//!   (03:00 CEST); several such times in one gap fire once together;
//! - a time that happens twice (the clocks went back over it) fires once, at its first
//!   occurrence, when the expression names one second, one minute and one hour (a
//!   wall-clock time such as `30 2 * * *`); any other expression (`*/5 * * * *`,
//!   `0 * * * *`) is periodic and fires in both passes, so the interval between runs
//!   stays the same in real time.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ValidationErrors;
use crate::model::vocabulary;
use crate::registry::Catalog;

/// The most slots one [`Cadence::plan`] looks at; a longer outage is worked through
/// over several rounds (the older slots counted as missed).
pub const MAX_SCAN: u64 = 100_000;
/// The default bound of `catch_up = "all"`.
pub const DEFAULT_CATCH_UP_LIMIT: u32 = 100;
/// The largest accepted `catch_up_limit`.
pub const MAX_CATCH_UP_LIMIT: u32 = 10_000;

vocabulary! {
    /// What happens to slots that passed while no dispatcher could fire them.
    #[derive(Default)]
    pub enum CatchUp ("catch_up") {
        /// Missed slots are skipped: only a slot seen on time fires.
        None = "none",
        /// One job for the most recent missed slot.
        #[default]
        Latest = "latest",
        /// One job for each missed slot, up to the schedule's `catch_up_limit` (the most
        /// recent ones).
        All = "all",
    }
}

vocabulary! {
    /// Whether a slot fires while the schedule's previous job has not finished.
    #[derive(Default)]
    pub enum Overlap ("overlap") {
        /// Fire regardless.
        #[default]
        Allow = "allow",
        /// Skip the slot (counted as `skipped_overlap`) while a job of this schedule is
        /// not completed, dead or cancelled.
        Skip = "skip",
    }
}

vocabulary! {
    /// What happened to one slot, as counted in `conveyor_schedule_slots_total{result}`.
    pub enum SlotResult ("slot result") {
        /// A job was inserted for it.
        Fired = "fired",
        /// It passed while no dispatcher fired it, and `catch_up` let it go.
        Missed = "missed",
        /// `overlap = "skip"` and the previous job had not finished.
        SkippedOverlap = "skipped_overlap",
    }
}

/// A cron expression in a time zone: when a schedule's slots are.
#[derive(Debug, Clone)]
pub struct Cadence {
    expression: String,
    cron: Cron,
    zone: Tz,
    /// One second, minute and hour: a wall-clock time, fired once when it repeats.
    wall_clock: bool,
}

/// The slots due at one moment, and what becomes of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Slots to fire now, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// Due slots that will not fire.
    pub missed: u64,
    /// The new cursor: the latest slot looked at (fired or not); unchanged when none
    /// was due.
    pub cursor: DateTime<Utc>,
    /// The first slot after the new cursor (may already be due after a long outage).
    pub next: Option<DateTime<Utc>>,
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

impl Cadence {
    /// Parses a cron expression (5 fields, 6 with seconds first, or an alias such as
    /// `@hourly`) and an IANA zone name.
    ///
    /// # Errors
    /// `cron` and/or `timezone`, each with the reason.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let expression = expression.trim();
        let fields = expression.split_whitespace().count();
        let cron = if !expression.starts_with('@') && !(5..=6).contains(&fields) {
            errors.add(
                "cron",
                format!(
                    "expected 5 fields (minute hour day month weekday), 6 with seconds first, \
                     or an alias such as @hourly; got {fields}"
                ),
            );
            None
        } else {
            match parser().parse(expression) {
                Ok(cron) => Some(cron),
                Err(e) => {
                    errors.add("cron", format!("not a valid cron expression: {e}"));
                    None
                }
            }
        };
        let zone = match timezone.parse::<Tz>() {
            Ok(zone) => Some(zone),
            Err(_) => {
                errors.add(
                    "timezone",
                    format!("unknown time zone {timezone:?}; use an IANA name such as Europe/Berlin or UTC"),
                );
                None
            }
        };
        errors.into_result()?;
        let (Some(cron), Some(zone)) = (cron, zone) else {
            return Err(ValidationErrors::one("cron", "invalid"));
        };
        let wall_clock = cron.determine_job_type() == croner::JobType::FixedTime;
        let cadence = Self {
            expression: expression.to_owned(),
            cron,
            zone,
            wall_clock,
        };
        if cadence.next_after(Utc::now()).is_none() {
            return Err(ValidationErrors::one(
                "cron",
                "never fires (no matching time in the future)",
            ));
        }
        Ok(cadence)
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The zone.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// A slot in the schedule's zone, RFC 3339 with its offset
    /// (`2026-11-25T02:00:00+01:00`): how slots are shown and keyed.
    pub fn label(&self, slot: DateTime<Utc>) -> String {
        slot.with_timezone(&self.zone)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
    }

    fn offset_at(&self, t: DateTime<Utc>) -> i64 {
        i64::from(
            self.zone
                .offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc(),
        )
    }

    fn wall(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.naive_utc() + chrono::Duration::seconds(self.offset_at(t))
    }

    /// The first instant in `(from, to]` whose UTC offset differs from the one in
    /// effect at `from`. Probes every six hours (no zone changes its offset twice
    /// within six hours), then bisects to the second.
    fn first_transition(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let offset = self.offset_at(from);
        let step = chrono::Duration::hours(6);
        let mut low = from;
        while low < to {
            let high = (low + step).min(to);
            if self.offset_at(high) != offset {
                let (mut a, mut b) = (low, high);
                while b - a > chrono::Duration::seconds(1) {
                    let middle = a + chrono::Duration::seconds((b - a).num_seconds() / 2);
                    if self.offset_at(middle) == offset {
                        a = middle;
                    } else {
                        b = middle;
                    }
                }
                return Some(b);
            }
            low = high;
        }
        None
    }

    /// The first slot strictly after `after`, under the daylight-saving rules of this
    /// module; `None` when the expression never matches again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let one = chrono::Duration::seconds(1);
        // Drop sub-second precision: slots are whole seconds.
        let after = DateTime::<Utc>::from_timestamp(after.timestamp(), 0)?;
        // Instants considered are after `start`, in the offset in effect at `start`;
        // wall-clock matches must be after `floor`.
        let mut start = after;
        let mut floor = self.wall(after);
        // Each round crosses one offset change; a match further away than 64 of them
        // (some 30 years of DST) is treated as never.
        for _ in 0..64 {
            let offset = self.offset_at(start);
            let wall = self.cron.find_next_occurrence(&floor, false).ok()?;
            let candidate = Utc.from_utc_datetime(&(wall - chrono::Duration::seconds(offset)));
            let Some(change) = self.first_transition(start, candidate) else {
                return Some(candidate);
            };
            let new_offset = self.offset_at(change);
            let old_wall_end = change.naive_utc() + chrono::Duration::seconds(offset);
            let new_wall_start = change.naive_utc() + chrono::Duration::seconds(new_offset);
            if new_offset > offset {
                // Clocks jump forward over [old_wall_end, new_wall_start).
                if wall < new_wall_start {
                    return Some(change);
                }
                floor = new_wall_start - one;
            } else if self.wall_clock {
                // Clocks go back over [new_wall_start, old_wall_end): a wall-clock
                // time there fired in the first pass.
                floor = old_wall_end - one;
            } else {
                // A periodic expression fires in the second pass too.
                floor = new_wall_start - one;
            }
            start = change;
        }
        None
    }

    /// The next `n` slots after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut slots = Vec::with_capacity(n);
        let mut cursor = after;
        while slots.len() < n {
            let Some(next) = self.next_after(cursor) else {
                break;
            };
            slots.push(next);
            cursor = next;
        }
        slots
    }

    /// Which slots in `(cursor, now]` fire. A slot is *on time* when it is the latest
    /// due slot and at most `grace` old; an on-time slot always fires. The others are
    /// late, and `catch_up` decides: `none` fires none of them, `latest` fires the
    /// most recent (unless an on-time slot fires), `all` fires the most recent
    /// `limit` slots. Everything due and not fired is missed.
    pub fn plan(
        &self,
        cursor: DateTime<Utc>,
        now: DateTime<Utc>,
        catch_up: CatchUp,
        limit: u32,
        grace: Duration,
    ) -> Plan {
        let keep = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        let mut kept: VecDeque<DateTime<Utc>> = VecDeque::new();
        let mut due = 0u64;
        let mut last = cursor;
        let mut next = self.next_after(cursor);
        let mut capped = false;
        while let Some(slot) = next.filter(|slot| *slot <= now) {
            due += 1;
            kept.push_back(slot);
            if kept.len() > keep {
                kept.pop_front();
            }
            last = slot;
            next = self.next_after(slot);
            if due >= MAX_SCAN {
                capped = true;
                break;
            }
        }
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let on_time = !capped && kept.back().is_some_and(|slot| now - *slot <= grace);
        let fire: Vec<DateTime<Utc>> = match (catch_up, kept.back()) {
            (_, None) => Vec::new(),
            // A scan cut short: everything looked at is old; the next round goes on.
            _ if capped => Vec::new(),
            (_, Some(latest)) if on_time => vec![*latest],
            (CatchUp::None, Some(_)) => Vec::new(),
            (CatchUp::Latest, Some(latest)) => vec![*latest],
            (CatchUp::All, Some(_)) => kept.into_iter().collect(),
        };
        let fired = fire.len() as u64;
        Plan {
            fire,
            missed: due - fired,
            cursor: last,
            next,
        }
    }
}

/// A schedule as configured or posted: checked by [`ScheduleSpec::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Unique name: 1 to 64 characters of a-z, 0-9, `.`, `_` and `-`.
    pub name: String,
    /// Cron expression: 5 fields, 6 with seconds first, or `@hourly`-style aliases.
    pub cron: String,
    /// The kind of job it enqueues.
    pub kind: String,
    /// The job's arguments (default `{}`), validated for the kind.
    #[serde(default = "empty_args")]
    pub args: Value,
    /// Queue override (default: the kind's queue).
    #[serde(default)]
    pub queue: Option<String>,
    /// IANA zone the expression is read in (default `UTC`).
    #[serde(default = "utc")]
    pub timezone: String,
    /// What to do with slots missed while no dispatcher ran (default `latest`).
    #[serde(default)]
    pub catch_up: CatchUp,
    /// The most missed slots `catch_up = "all"` fires (default 100).
    #[serde(default = "default_limit")]
    pub catch_up_limit: u32,
    /// Whether a slot fires while the previous job is unfinished (default `allow`).
    #[serde(default)]
    pub overlap: Overlap,
    /// Attempts for each job (default: the kind's).
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

fn empty_args() -> Value {
    Value::Object(serde_json::Map::new())
}

fn utc() -> String {
    "UTC".to_owned()
}

fn default_limit() -> u32 {
    DEFAULT_CATCH_UP_LIMIT
}

/// A checked schedule, with the kind's defaults resolved.
#[derive(Debug, Clone)]
pub struct ScheduleDef {
    /// Name.
    pub name: String,
    /// When it fires.
    pub cadence: Cadence,
    /// Kind.
    pub kind: String,
    /// Arguments (valid for the kind).
    pub args: Value,
    /// Queue (the kind's unless overridden).
    pub queue: String,
    /// Attempts per job.
    pub max_attempts: u32,
    /// Missed slots policy.
    pub catch_up: CatchUp,
    /// Bound of `catch_up = "all"`.
    pub catch_up_limit: u32,
    /// Overlap policy.
    pub overlap: Overlap,
}

/// True when `name` can name a schedule.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl ScheduleSpec {
    /// Checks every field (the kind and its args against `catalog`; the queue name with
    /// `valid_queue`) and resolves the kind's defaults. `max_attempts_limit` bounds
    /// `max_attempts`.
    ///
    /// # Errors
    /// Every invalid field, by name.
    pub fn validate(
        self,
        catalog: &Catalog,
        valid_queue: impl Fn(&str) -> bool,
        max_attempts_limit: u32,
    ) -> Result<ScheduleDef, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if !valid_name(&self.name) {
            errors.add(
                "name",
                "must be 1 to 64 characters of a-z, 0-9, '.', '_' and '-'",
            );
        }
        let cadence = Cadence::parse(&self.cron, &self.timezone)
            .map_err(|e| errors.extend(e))
            .ok();
        let spec = match catalog.get(&self.kind) {
            Ok(spec) => Some(*spec),
            Err(_) => {
                errors.add(
                    "kind",
                    format!(
                        "unknown job kind {:?}; known kinds: {}",
                        self.kind,
                        catalog.kinds().join(", ")
                    ),
                );
                None
            }
        };
        if let Some(spec) = &spec
            && let Err(e) = spec.validate(&self.args)
        {
            errors.extend(e.prefixed("args"));
        }
        if let Some(queue) = &self.queue
            && !valid_queue(queue)
        {
            errors.add(
                "queue",
                "must be 1 to 64 characters of a-z, 0-9, '_' and '-'",
            );
        }
        if !(1..=MAX_CATCH_UP_LIMIT).contains(&self.catch_up_limit) {
            errors.add(
                "catch_up_limit",
                format!("must be between 1 and {MAX_CATCH_UP_LIMIT}"),
            );
        }
        if let Some(n) = self.max_attempts
            && !(1..=max_attempts_limit).contains(&n)
        {
            errors.add(
                "max_attempts",
                format!("must be between 1 and {max_attempts_limit}"),
            );
        }
        errors.into_result()?;
        let (Some(cadence), Some(spec)) = (cadence, spec) else {
            return Err(ValidationErrors::one("kind", "unknown"));
        };
        Ok(ScheduleDef {
            name: self.name,
            cadence,
            kind: self.kind,
            args: self.args,
            queue: self.queue.unwrap_or_else(|| spec.options.queue.to_owned()),
            max_attempts: self.max_attempts.unwrap_or(spec.options.max_attempts),
            catch_up: self.catch_up,
            catch_up_limit: self.catch_up_limit,
            overlap: self.overlap,
        })
    }
}

/// The schedule slot a job was fired for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiredBy {
    /// The schedule's name.
    pub schedule: String,
    /// The slot in the schedule's zone (RFC 3339 with offset), or the moment of a
    /// manual trigger.
    pub slot: String,
}

impl FiredBy {
    /// The idempotency key of this slot's job: `schedule:{name}:{slot}`.
    pub fn idempotency_key(&self) -> String {
        format!("schedule:{}:{}", self.schedule, self.slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a test instant")
            .with_timezone(&Utc)
    }

    fn labels(cadence: &Cadence, after: &str, n: usize) -> Vec<String> {
        cadence
            .upcoming(at(after), n)
            .into_iter()
            .map(|slot| cadence.label(slot))
            .collect()
    }

    #[test]
    fn berlin_spring_forward_fires_once_at_the_first_instant_after_the_gap() {
        // 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
        let nightly = Cadence::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            labels(&nightly, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T02:30:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-30T02:30:00+02:00"
            ]
        );
    }

    #[test]
    fn berlin_fall_back_fires_a_wall_clock_time_once() {
        // 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
        let nightly = Cadence::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            labels(&nightly, "2026-10-23T12:00:00Z", 3),
            [
                "2026-10-24T02:30:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-26T02:30:00+01:00"
            ]
        );
    }

    #[test]
    fn berlin_fall_back_fires_a_periodic_schedule_in_both_passes() {
        let hourly = Cadence::parse("@hourly", "Europe/Berlin").unwrap();
        assert_eq!(
            labels(&hourly, "2026-10-24T23:30:00Z", 4),
            [
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:00:00+01:00",
                "2026-10-25T03:00:00+01:00",
                "2026-10-25T04:00:00+01:00"
            ]
        );
    }

    #[test]
    fn a_periodic_schedule_fires_once_for_the_gap_and_keeps_its_interval() {
        let quarter = Cadence::parse("*/15 * * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            labels(&quarter, "2026-03-29T00:40:00Z", 4),
            [
                "2026-03-29T01:45:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-29T03:15:00+02:00",
                "2026-03-29T03:30:00+02:00"
            ]
        );
    }

    #[test]
    fn new_york_spring_forward_and_fall_back() {
        // 2026-03-08: 02:00 EST becomes 03:00 EDT; 2026-11-01: 02:00 EDT becomes 01:00 EST.
        let two_thirty = Cadence::parse("30 2 * * *", "America/New_York").unwrap();
        assert_eq!(
            labels(&two_thirty, "2026-03-06T12:00:00Z", 3),
            [
                "2026-03-07T02:30:00-05:00",
                "2026-03-08T03:00:00-04:00",
                "2026-03-09T02:30:00-04:00"
            ]
        );
        let one_thirty = Cadence::parse("30 1 * * *", "America/New_York").unwrap();
        assert_eq!(
            labels(&one_thirty, "2026-10-31T12:00:00Z", 3),
            [
                "2026-11-01T01:30:00-04:00",
                "2026-11-02T01:30:00-05:00",
                "2026-11-03T01:30:00-05:00"
            ]
        );
        let every_half_hour = Cadence::parse("*/30 * * * *", "America/New_York").unwrap();
        assert_eq!(
            labels(&every_half_hour, "2026-11-01T04:45:00Z", 5),
            [
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T01:30:00-04:00",
                "2026-11-01T01:00:00-05:00",
                "2026-11-01T01:30:00-05:00",
                "2026-11-01T02:00:00-05:00"
            ]
        );
    }

    #[test]
    fn a_leap_day_schedule_waits_for_the_next_leap_year() {
        let leap = Cadence::parse("0 12 29 2 *", "Europe/Berlin").unwrap();
        assert_eq!(
            labels(&leap, "2026-03-01T00:00:00Z", 2),
            ["2028-02-29T12:00:00+01:00", "2032-02-29T12:00:00+01:00"]
        );
        let daily = Cadence::parse("0 0 * * *", "UTC").unwrap();
        assert_eq!(
            labels(&daily, "2028-02-28T12:00:00Z", 2),
            ["2028-02-29T00:00:00+00:00", "2028-03-01T00:00:00+00:00"]
        );
    }

    #[test]
    fn six_fields_and_aliases_parse_and_seven_or_four_do_not() {
        let every_second = Cadence::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(
            labels(&every_second, "2026-01-01T00:00:00Z", 2),
            ["2026-01-01T00:00:01+00:00", "2026-01-01T00:00:02+00:00"]
        );
        assert!(Cadence::parse("@daily", "UTC").is_ok());
        for bad in ["* * * *", "0 0 0 1 1 * 2030", "61 * * * *", "nonsense"] {
            let err = Cadence::parse(bad, "UTC").unwrap_err();
            assert_eq!(err.0[0].field, "cron", "{bad}");
        }
        let err = Cadence::parse("0 0 30 2 *", "UTC").unwrap_err();
        assert!(err.0[0].message.contains("never"), "{err:?}");
    }

    #[test]
    fn an_unknown_zone_is_named() {
        let err = Cadence::parse("bad", "Mars/Olympus").unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["cron", "timezone"]);
    }

    const GRACE: Duration = Duration::from_secs(60);

    #[test]
    fn an_on_time_slot_fires_under_every_policy() {
        let minutely = Cadence::parse("* * * * *", "UTC").unwrap();
        for policy in CatchUp::ALL {
            let plan = minutely.plan(
                at("2026-01-01T00:00:30Z"),
                at("2026-01-01T00:01:02Z"),
                *policy,
                100,
                GRACE,
            );
            assert_eq!(plan.fire, [at("2026-01-01T00:01:00Z")], "{policy}");
            assert_eq!(plan.missed, 0);
            assert_eq!(plan.cursor, at("2026-01-01T00:01:00Z"));
            assert_eq!(plan.next, Some(at("2026-01-01T00:02:00Z")));
        }
    }

    #[test]
    fn five_missed_slots_fire_none_the_latest_or_all() {
        let minutely = Cadence::parse("* * * * *", "UTC").unwrap();
        let cursor = at("2026-01-01T00:00:00Z");
        // Slots 00:01 … 00:05 are due; the latest is 90 s old, past the grace.
        let now = at("2026-01-01T00:06:30Z");
        let short = Duration::from_secs(10);
        let none = minutely.plan(
            cursor,
            at("2026-01-01T00:05:30Z"),
            CatchUp::None,
            100,
            short,
        );
        assert_eq!((none.fire.len(), none.missed), (0, 5));
        assert_eq!(none.cursor, at("2026-01-01T00:05:00Z"));
        let latest = minutely.plan(
            cursor,
            at("2026-01-01T00:05:30Z"),
            CatchUp::Latest,
            100,
            short,
        );
        assert_eq!(latest.fire, [at("2026-01-01T00:05:00Z")]);
        assert_eq!(latest.missed, 4);
        let all = minutely.plan(cursor, at("2026-01-01T00:05:30Z"), CatchUp::All, 100, short);
        assert_eq!(all.fire.len(), 5);
        assert_eq!(all.missed, 0);
        let bounded = minutely.plan(cursor, now, CatchUp::All, 2, short);
        assert_eq!(
            bounded.fire,
            [at("2026-01-01T00:05:00Z"), at("2026-01-01T00:06:00Z")]
        );
        assert_eq!(bounded.missed, 4);
    }

    #[test]
    fn nothing_due_changes_nothing() {
        let hourly = Cadence::parse("@hourly", "UTC").unwrap();
        let cursor = at("2026-01-01T00:00:00Z");
        let plan = hourly.plan(cursor, at("2026-01-01T00:59:59Z"), CatchUp::All, 10, GRACE);
        assert!(plan.fire.is_empty());
        assert_eq!(plan.missed, 0);
        assert_eq!(plan.cursor, cursor);
        assert_eq!(plan.next, Some(at("2026-01-01T01:00:00Z")));
    }

    #[test]
    fn a_huge_outage_is_worked_through_in_bounded_rounds() {
        let every_second = Cadence::parse("* * * * * *", "UTC").unwrap();
        let cursor = at("2026-01-01T00:00:00Z");
        let now = cursor + chrono::Duration::seconds(150_000);
        let first = every_second.plan(cursor, now, CatchUp::Latest, 100, GRACE);
        assert!(first.fire.is_empty());
        assert_eq!(first.missed, MAX_SCAN);
        let second = every_second.plan(first.cursor, now, CatchUp::Latest, 100, GRACE);
        assert_eq!(second.fire, [now]);
        assert_eq!(second.missed + 1 + MAX_SCAN, 150_000);
    }

    #[test]
    fn policies_and_results_have_stable_names() {
        for c in CatchUp::ALL {
            assert_eq!(c.as_str().parse::<CatchUp>().unwrap(), *c);
        }
        for o in Overlap::ALL {
            assert_eq!(o.as_str().parse::<Overlap>().unwrap(), *o);
        }
        assert!(
            "sometimes"
                .parse::<CatchUp>()
                .unwrap_err()
                .to_string()
                .contains("none, latest, all")
        );
        assert_eq!(SlotResult::SkippedOverlap.as_str(), "skipped_overlap");
    }

    #[test]
    fn a_spec_reports_every_bad_field() {
        let catalog = crate::kinds::catalog();
        let spec: ScheduleSpec = serde_json::from_value(serde_json::json!({
            "name": "Bad Name", "cron": "99 * * * *", "kind": "nope",
            "timezone": "Nowhere/City", "queue": "Bad.Queue", "catch_up_limit": 0
        }))
        .unwrap();
        let err = spec
            .validate(&catalog, |q| !q.contains('.'), 100)
            .unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "cron",
                "timezone",
                "kind",
                "queue",
                "catch_up_limit"
            ]
        );
        let spec: ScheduleSpec = serde_json::from_value(serde_json::json!({
            "name": "nightly", "cron": "@daily", "kind": "email.send", "args": {"to": 3}
        }))
        .unwrap();
        let err = spec.validate(&catalog, |_| true, 100).unwrap_err();
        assert!(err.0[0].field.starts_with("args"), "{err:?}");
        let spec: ScheduleSpec = serde_json::from_value(serde_json::json!({
            "name": "tick", "cron": "*/5 * * * *", "kind": "noop"
        }))
        .unwrap();
        let def = spec.validate(&catalog, |_| true, 100).unwrap();
        assert_eq!(def.queue, "default");
        assert_eq!(def.catch_up, CatchUp::Latest);
        assert_eq!(def.cadence.zone(), chrono_tz::UTC);
    }

    #[test]
    fn a_slot_keys_its_job() {
        let fired = FiredBy {
            schedule: "nightly-report".into(),
            slot: "2026-11-25T02:00:00+01:00".into(),
        };
        assert_eq!(
            fired.idempotency_key(),
            "schedule:nightly-report:2026-11-25T02:00:00+01:00"
        );
    }
}
