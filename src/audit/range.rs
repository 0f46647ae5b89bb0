//! The audited range of signed times: `--from`/`--to` as RFC 3339 or as a
//! duration back from now (`2h`). `from` is inclusive and `to` exclusive,
//! so consecutive windows of the continuous audit never count an event twice.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use thiserror::Error;

use crate::encoding::parse_rfc3339;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum RangeError {
    #[error("{flag} {value:?} is neither an RFC 3339 time nor a duration back from now like 2h")]
    Invalid { flag: &'static str, value: String },
    #[error("--from {from} is not before --to {to}")]
    Empty { from: String, to: String },
}

/// `[from, to)` in signed time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeRange {
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
}

impl TimeRange {
    pub(crate) fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Self, RangeError> {
        if from >= to {
            return Err(RangeError::Empty {
                from: rfc3339(from),
                to: rfc3339(to),
            });
        }
        Ok(Self { from, to })
    }

    /// Parses the flags; `to` defaults to `now`.
    pub(crate) fn parse(
        from: &str,
        to: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Self, RangeError> {
        let from = instant("--from", from, now)?;
        let to = match to {
            Some(to) => instant("--to", to, now)?,
            None => now,
        };
        Self::new(from, to)
    }

    /// The window of the continuous audit: `length` back from `now - settle`.
    pub(crate) fn settled_window(now: DateTime<Utc>, length: Duration, settle: Duration) -> Self {
        let to = now - chrono::Duration::from_std(settle).unwrap_or_default();
        let from = to - chrono::Duration::from_std(length).unwrap_or_default();
        Self { from, to }
    }

    pub(crate) fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && t < self.to
    }
}

/// RFC 3339 with the precision the value has, `Z` for UTC.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn instant(
    flag: &'static str,
    value: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, RangeError> {
    if let Some(t) = parse_rfc3339(value) {
        return Ok(t);
    }
    humantime::parse_duration(value.trim())
        .ok()
        .and_then(|back| chrono::Duration::from_std(back).ok())
        .and_then(|back| now.checked_sub_signed(back))
        .ok_or_else(|| RangeError::Invalid {
            flag,
            value: value.to_owned(),
        })
}

/// `d` as a chrono delta (saturating: a setting past chrono's range is
/// for ever).
pub(crate) fn to_delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        parse_rfc3339("2026-11-25T12:00:00Z").unwrap()
    }

    #[test]
    fn durations_count_back_from_now_and_to_defaults_to_now() {
        let r = TimeRange::parse("2h", None, now()).unwrap();
        assert_eq!(rfc3339(r.from), "2026-11-25T10:00:00Z");
        assert_eq!(r.to, now());
    }

    #[test]
    fn rfc3339_bounds_are_taken_as_given_in_any_offset() {
        let r = TimeRange::parse(
            "2026-11-24T09:00:00Z",
            Some("2026-11-24T11:00:00+01:00"),
            now(),
        )
        .unwrap();
        assert_eq!(rfc3339(r.from), "2026-11-24T09:00:00Z");
        assert_eq!(rfc3339(r.to), "2026-11-24T10:00:00Z");
    }

    #[test]
    fn from_is_inclusive_and_to_exclusive() {
        let r =
            TimeRange::parse("2026-11-25T10:00:00Z", Some("2026-11-25T11:00:00Z"), now()).unwrap();
        assert!(r.contains(r.from));
        assert!(!r.contains(r.to));
    }

    #[test]
    fn an_empty_or_inverted_range_is_refused() {
        assert!(matches!(
            TimeRange::parse("1h", Some("2h"), now()),
            Err(RangeError::Empty { .. })
        ));
    }

    #[test]
    fn nonsense_is_refused_naming_the_flag() {
        let e = TimeRange::parse("yesterday-ish", None, now()).unwrap_err();
        assert!(e.to_string().starts_with("--from \"yesterday-ish\""));
    }

    #[test]
    fn the_settled_window_ends_settle_before_now() {
        let r =
            TimeRange::settled_window(now(), Duration::from_secs(7200), Duration::from_secs(600));
        assert_eq!(rfc3339(r.to), "2026-11-25T11:50:00Z");
        assert_eq!(rfc3339(r.from), "2026-11-25T09:50:00Z");
    }
}
