//! Billing cadences: whole ISO 8601 durations laid end to end from a
//! billing anchor, as OpenMeter's invoicing steps them.
//!
//! Period `k` starts at anchor + k × cadence, counted from the anchor and
//! never by repeated addition (`pkg/timeutil/recurrence.go`,
//! `addIntervalNTimes`). Adding a duration adds its years, then its months,
//! each without overflowing the month (Jan 31 + P1M = Feb 28/29), then
//! weeks, days and clock time (`pkg/datetime/datetime.go`, `Add`).

use chrono::{DateTime, Duration, Months, Utc};
use serde::{Serialize, Serializer};

use super::duration::IsoDuration;

/// A billing cadence: a whole ISO 8601 duration (`P1M`, `P1W`, `PT1H`,
/// `P1Y2M3DT4H`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cadence {
    years: u32,
    months: u32,
    seconds: u64,
}

impl Cadence {
    /// The cadence `text` names; `None` for anything but a positive
    /// duration of whole components (the server's recurrence refuses
    /// fractions as not exact).
    pub fn parse(text: &str) -> Option<Self> {
        let [years, months, weeks, days, hours, minutes, seconds] =
            IsoDuration::parse(text)?.whole()?.map(u64::from);
        let cadence = Self {
            years: u32::try_from(years).ok()?,
            months: u32::try_from(months).ok()?,
            seconds: (weeks * 7 + days) * 86_400 + hours * 3600 + minutes * 60 + seconds,
        };
        (cadence.years > 0 || cadence.months > 0 || cadence.seconds > 0).then_some(cadence)
    }

    /// `from` plus `k` cadences (`k` may be negative); `None` out of
    /// chrono's range.
    pub(super) fn step(&self, from: DateTime<Utc>, k: i64) -> Option<DateTime<Utc>> {
        let moved = add_months(from, i64::from(self.years) * 12, k)?;
        let moved = add_months(moved, i64::from(self.months), k)?;
        let seconds = i64::try_from(self.seconds).ok()?.checked_mul(k)?;
        moved.checked_add_signed(Duration::try_seconds(seconds)?)
    }

    /// A lower bound of the cadence's length, to jump close to a far period.
    pub(super) fn min_seconds(&self) -> u64 {
        (u64::from(self.years) * 12 + u64::from(self.months)) * 28 * 86_400 + self.seconds
    }
}

/// `from` plus `months` × `k` months, clamped to the end of a shorter month.
fn add_months(from: DateTime<Utc>, months: i64, k: i64) -> Option<DateTime<Utc>> {
    let total = months.checked_mul(k)?;
    let step = Months::new(u32::try_from(total.unsigned_abs()).ok()?);
    if total >= 0 {
        from.checked_add_months(step)
    } else {
        from.checked_sub_months(step)
    }
}

impl std::fmt::Display for Cadence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "P")?;
        if self.years > 0 {
            write!(f, "{}Y", self.years)?;
        }
        if self.months > 0 {
            write!(f, "{}M", self.months)?;
        }
        if self.seconds > 0 {
            write!(f, "T{}S", self.seconds)?;
        }
        Ok(())
    }
}

impl Serialize for Cadence {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cadences_parse_as_years_months_and_seconds() {
        assert_eq!(
            Cadence::parse("P1M"),
            Some(Cadence {
                years: 0,
                months: 1,
                seconds: 0
            })
        );
        assert_eq!(Cadence::parse("P1Y").unwrap().years, 1);
        assert_eq!(Cadence::parse("P2W").unwrap().seconds, 14 * 86_400);
        assert_eq!(Cadence::parse("PT1H30M").unwrap().seconds, 5400);
        for bad in ["", "P", "PT", "1M", "P1.5M", "P-1M", "P0D", "PXM"] {
            assert_eq!(Cadence::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_cadence_reads_back_as_it_steps() {
        for text in ["P1M", "P1Y2M", "PT3600S"] {
            let cadence = Cadence::parse(text).unwrap();
            assert_eq!(Cadence::parse(&cadence.to_string()), Some(cadence));
        }
    }
}
