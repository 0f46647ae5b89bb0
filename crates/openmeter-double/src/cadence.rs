//! Billing cadences: ISO 8601 durations laid end to end from a billing anchor.
//!
//! Follows `pkg/timeutil/recurrence.go` (period `n` starts at anchor + n ×
//! cadence, counted from the anchor, never by repeated addition) and
//! `pkg/datetime/datetime.go` (`Add`: years and months without overflowing
//! the month, e.g. Jan 31 + P1M = Feb 28/29, then days and clock time).

use chrono::{DateTime, Duration, Months, Utc};

/// A whole-number ISO 8601 duration (`P1M`, `P1Y2M`, `PT1H`, `P2W`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cadence {
    years: u32,
    months: u32,
    days: i64,
    seconds: i64,
}

impl Cadence {
    /// `None` for anything but whole-number designators (fractions are
    /// refused by the server's recurrence as "not exact").
    pub(crate) fn parse(s: &str) -> Option<Cadence> {
        let rest = s.strip_prefix('P')?;
        let (date, time) = match rest.split_once('T') {
            Some((d, t)) => (d, t),
            None => (rest, ""),
        };
        let mut c = Cadence {
            years: 0,
            months: 0,
            days: 0,
            seconds: 0,
        };
        for (n, unit) in designators(date)? {
            match unit {
                'Y' => c.years = u32::try_from(n).ok()?,
                'M' => c.months = u32::try_from(n).ok()?,
                'W' => c.days += n * 7,
                'D' => c.days += n,
                _ => return None,
            }
        }
        for (n, unit) in designators(time)? {
            c.seconds += match unit {
                'H' => n * 3_600,
                'M' => n * 60,
                'S' => n,
                _ => return None,
            };
        }
        let positive = c.years > 0 || c.months > 0 || c.days > 0 || c.seconds > 0;
        positive.then_some(c)
    }

    /// At least an hour long, the shortest billing cadence a rate card may
    /// have (`productcatalog/ratecard.go`).
    pub(crate) fn at_least_an_hour(&self) -> bool {
        self.years > 0 || self.months > 0 || self.days > 0 || self.seconds >= 3_600
    }

    /// `anchor` + `n` × this cadence.
    fn nth(&self, anchor: DateTime<Utc>, n: i64) -> Option<DateTime<Utc>> {
        let months = |t: DateTime<Utc>, count: i64| -> Option<DateTime<Utc>> {
            let m = Months::new(u32::try_from(count.unsigned_abs()).ok()?);
            if count >= 0 {
                t.checked_add_months(m)
            } else {
                t.checked_sub_months(m)
            }
        };
        let t = months(anchor, i64::from(self.years) * 12 * n)?;
        let t = months(t, i64::from(self.months) * n)?;
        t.checked_add_signed(Duration::try_days(self.days.checked_mul(n)?)?)?
            .checked_add_signed(Duration::try_seconds(self.seconds.checked_mul(n)?)?)
    }

    /// The `[from, to)` period holding `t` (`Recurrence.GetPeriodAt`).
    pub(crate) fn period_at(
        &self,
        anchor: DateTime<Utc>,
        t: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        const MAX_ITERATIONS: i64 = 100_000;
        let step: i64 = if anchor <= t { 1 } else { -1 };
        let mut n: i64 = 0;
        while n.abs() <= MAX_ITERATIONS {
            let (from, to) = (self.nth(anchor, n)?, self.nth(anchor, n + 1)?);
            if from <= t && t < to {
                return Some((from, to));
            }
            n += step;
        }
        None
    }
}

/// `1Y2M` → `[(1, 'Y'), (2, 'M')]`; `None` on anything else.
fn designators(s: &str) -> Option<Vec<(i64, char)>> {
    let mut out = Vec::new();
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            out.push((num.parse().ok()?, c));
            num.clear();
        }
    }
    num.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
    }

    #[test]
    fn parses_whole_designators_only() {
        assert!(Cadence::parse("P1M").is_some());
        assert!(Cadence::parse("P1Y2M3DT4H5M6S").is_some());
        assert_eq!(Cadence::parse("P2W"), Cadence::parse("P14D"));
        assert!(Cadence::parse("P0D").is_none());
        assert!(Cadence::parse("PT0.5H").is_none());
        assert!(Cadence::parse("1M").is_none());
    }

    #[test]
    fn an_hour_is_the_shortest_rate_card_cadence() {
        let hour = |s: &str| Cadence::parse(s).is_some_and(|c| c.at_least_an_hour());
        assert!(hour("PT1H") && hour("PT60M") && hour("P1D") && hour("P1M"));
        assert!(!hour("PT59M") && !hour("PT30S"));
    }

    #[test]
    fn monthly_periods_count_from_the_anchor_without_overflow() {
        let monthly = Cadence::parse("P1M").unwrap();
        let anchor = t(2025, 1, 31);
        assert_eq!(
            monthly.period_at(anchor, t(2025, 2, 15)),
            Some((t(2025, 1, 31), t(2025, 2, 28)))
        );
        assert_eq!(
            monthly.period_at(anchor, t(2025, 3, 30)),
            Some((t(2025, 2, 28), t(2025, 3, 31)))
        );
        assert_eq!(
            monthly.period_at(anchor, t(2024, 12, 31)),
            Some((t(2024, 12, 31), t(2025, 1, 31)))
        );
    }

    #[test]
    fn years_are_added_before_months_each_without_overflow() {
        let anchor = t(2024, 2, 29);
        let yearly_and_a_month = Cadence::parse("P1Y1M").unwrap();
        assert_eq!(
            yearly_and_a_month.period_at(anchor, t(2024, 3, 1)),
            Some((t(2024, 2, 29), t(2025, 3, 28)))
        );
    }
}
