//! The billing-cadence arithmetic OpenMeter applies before it publishes a
//! plan, so the catalog check refuses what publishing would. Follows
//! openmeterio/openmeter: `productcatalog/ratecard.go` (a rate card's
//! cadence is positive and at least an hour), `productcatalog/alignment.go`
//! and `pkg/datetime/duration.go` (`DivisibleBy`: a rate card's cadence and
//! the plan's divide one into the other under every month and day length).

use rust_decimal::Decimal;

use super::catalog::Duration;
use crate::billing::IsoDuration;

/// The month lengths (days) and day lengths (hours, for daylight saving)
/// OpenMeter checks a division under.
const DAYS_IN_MONTH: [u32; 4] = [28, 29, 30, 31];
const HOURS_IN_DAY: [u32; 3] = [25, 24, 23];

/// Seconds of `d`, weighing a year as 12 months, a month as
/// `days_in_month` days and a day as `hours_in_day` hours, as OpenMeter
/// does (`convertPeriodToSeconds`).
fn seconds(d: &IsoDuration, days_in_month: u32, hours_in_day: u32) -> Option<Decimal> {
    let day = u64::from(hours_in_day) * 3600;
    let month = u64::from(days_in_month) * day;
    let weights = [12 * month, month, 7 * day, day, 3600, 60, 1];
    d.0.iter()
        .zip(weights)
        .try_fold(Decimal::ZERO, |sum, (part, weight)| {
            sum.checked_add(part.checked_mul(Decimal::from(weight))?)
        })
}

/// Whether `larger` is a whole, positive multiple of `smaller` under every
/// month and day length (OpenMeter's `DivisibleBy`).
fn divisible(larger: &IsoDuration, smaller: &IsoDuration) -> bool {
    DAYS_IN_MONTH.iter().all(|&days| {
        HOURS_IN_DAY.iter().all(|&hours| {
            match (seconds(larger, days, hours), seconds(smaller, days, hours)) {
                (Some(l), Some(s)) if l > Decimal::ZERO && s > Decimal::ZERO => {
                    l.checked_rem(s).is_some_and(|r| r.is_zero())
                }
                _ => false,
            }
        })
    })
}

impl Duration {
    fn parts(&self) -> Option<IsoDuration> {
        IsoDuration::parse(self.as_str())
    }

    /// OpenMeter refuses to publish a rate card billed more often than
    /// hourly, or with a zero cadence (a usage price sent without one).
    pub fn at_least_an_hour(&self) -> bool {
        self.parts()
            .and_then(|p| seconds(&p, 30, 24))
            .is_some_and(|s| s >= Decimal::from(3600))
    }

    /// Whether a rate card billed every `self` fits a plan billed every
    /// `plan`: equal, or one divides the other in every month.
    pub fn aligns_with(&self, plan: &Duration) -> bool {
        if self == plan {
            return true;
        }
        match (self.parts(), plan.parts()) {
            (Some(card), Some(plan)) => divisible(&card, &plan) || divisible(&plan, &card),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Duration {
        s.parse().expect("valid duration")
    }

    #[test]
    fn a_cadence_under_an_hour_or_zero_is_refused() {
        assert!(d("PT1H").at_least_an_hour());
        assert!(d("P1M").at_least_an_hour());
        assert!(!d("PT59M").at_least_an_hour());
        assert!(!d("PT0S").at_least_an_hour());
    }

    #[test]
    fn cadences_align_when_one_divides_the_other_in_every_month() {
        assert!(d("P1M").aligns_with(&d("P1M")));
        assert!(d("P1D").aligns_with(&d("P1M")));
        assert!(d("P3M").aligns_with(&d("P1M")));
        assert!(d("P1Y").aligns_with(&d("P12M")));
        assert!(d("P1D").aligns_with(&d("P1W")));
        assert!(
            !d("P1W").aligns_with(&d("P1M")),
            "a month is not whole weeks"
        );
        assert!(!d("P4W").aligns_with(&d("P1M")));
        assert!(
            !d("PT7H").aligns_with(&d("P1D")),
            "a day may have 23 or 25 hours"
        );
    }
}
