//! Which dead letters an operator means: the filters `conveyor dead list|replay|purge`
//! and `GET /v1/dead`, `POST /v1/dead/replay|purge` share, parsed one way and limited
//! to the principal's kinds and queues.

use chrono::{DateTime, Utc};
use jobs::ValidationErrors;
use serde::Deserialize;
use store::DeadFilter;

use crate::principal::Principal;

/// Dead-letter filters as typed or posted. Empty fields match everything.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeadSelection {
    /// Exact queue.
    pub queue: Option<String>,
    /// Exact kind.
    pub kind: Option<String>,
    /// Case-insensitive substring of the error.
    pub error: Option<String>,
    /// Died at or after: RFC 3339, or an age like `90s`, `15m`, `2h`, `7d`.
    pub since: Option<String>,
    /// Died before: RFC 3339, or an age.
    pub until: Option<String>,
    /// At most this many, newest first.
    pub limit: Option<u32>,
}

impl DeadSelection {
    /// True when any filter is given (a limit alone is not a filter).
    pub fn is_set(&self) -> bool {
        self.queue.is_some()
            || self.kind.is_some()
            || self.error.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }

    /// The store filter for `principal`: its kinds and queues limit what matches, and
    /// an explicit kind or queue outside them is denied rather than silently empty.
    ///
    /// # Errors
    /// Every malformed field (by name, `prefix`ed), or what the principal may not see.
    pub fn to_filter(
        &self,
        principal: &Principal,
        verb: &str,
        now: DateTime<Utc>,
    ) -> Result<DeadFilter, SelectionError> {
        let mut errors = ValidationErrors::new();
        let mut time = |field: &str, text: &Option<String>| match text.as_deref() {
            None => None,
            Some(t) => match parse_time(t, now) {
                Ok(at) => Some(at),
                Err(e) => {
                    errors.add(field, e);
                    None
                }
            },
        };
        let since = time("since", &self.since);
        let until = time("until", &self.until);
        // Postgres text holds no NUL: a filter with one matches nothing it could store,
        // and is refused here rather than failing in the database.
        for (field, text) in [
            ("queue", &self.queue),
            ("kind", &self.kind),
            ("error", &self.error),
        ] {
            if text.as_deref().is_some_and(|t| t.contains('\0')) {
                errors.add(field, "must not contain NUL characters");
            }
        }
        if self.limit == Some(0) {
            errors.add("limit", "must be at least 1");
        }
        errors.into_result().map_err(SelectionError::Invalid)?;
        if let Some(kind) = &self.kind {
            principal.reach_kind(verb, Some(kind))?;
        }
        if let Some(queue) = &self.queue {
            principal.reach_queue(verb, Some(queue))?;
        }
        Ok(DeadFilter {
            queue: self.queue.clone(),
            kind: self.kind.clone(),
            error: self.error.clone(),
            since,
            until,
            limit: self.limit,
            kind_patterns: principal.kind_patterns(),
            queue_patterns: principal.queue_patterns(),
            before: None,
        })
    }
}

/// Why a selection was refused.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    /// Malformed fields, each named.
    #[error("{0}")]
    Invalid(ValidationErrors),
    /// A kind or queue the principal may not touch.
    #[error("{0}")]
    Denied(#[from] crate::Denied),
}

/// Parses RFC 3339, or an age before `now` (`90s`, `15m`, `2h`, `7d`).
///
/// # Errors
/// Neither form.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    // The unit is the last character, which need not be one byte; an age too large
    // to subtract from now is as wrong as a malformed one (neither may panic).
    let (number, unit) = text
        .char_indices()
        .last()
        .map_or((text, ""), |(i, _)| text.split_at(i));
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    number
        .parse::<i64>()
        .ok()
        .filter(|n| seconds > 0 && *n >= 0)
        .and_then(|n| chrono::TimeDelta::try_seconds(n.checked_mul(seconds)?))
        .and_then(|age| now.checked_sub_signed(age))
        .ok_or_else(|| {
            format!(
                "{text:?}: expected an RFC 3339 time (2026-11-21T10:00:00Z) or an age like 90s, 15m, 2h, 7d"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_instants_or_ages_and_bad_ones_are_named() {
        let now = Utc::now();
        assert_eq!(
            parse_time("1h", now).unwrap(),
            now - chrono::Duration::hours(1)
        );
        assert!(parse_time("2026-11-21T10:00:00Z", now).is_ok());
        // A multi-byte last character or an age beyond the calendar is an error, not a panic.
        for bad in [
            "1\u{80}",
            "é",
            "\u{1}\u{7f}\u{80}",
            "",
            "9223372036854775807d",
            "99999999999999d",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad:?}");
        }
        let nul = DeadSelection {
            error: Some("a\0b".into()),
            ..DeadSelection::default()
        };
        assert!(matches!(
            nul.to_filter(&Principal::cli("t"), "read", now),
            Err(SelectionError::Invalid(_))
        ));
        let selection = DeadSelection {
            since: Some("yesterday".into()),
            ..DeadSelection::default()
        };
        let Err(SelectionError::Invalid(errors)) =
            selection.to_filter(&Principal::cli("t"), "read", now)
        else {
            panic!("a bad time is invalid");
        };
        assert_eq!(errors.0[0].field, "since");
    }
}
