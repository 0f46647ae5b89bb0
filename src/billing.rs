//! When OpenMeter will invoice an event: a subscription's service period
//! and billing periods, as its invoicing computes them. The collector
//! (`deliver`) and `audit` both decide by these rules.
//!
//! - A usage rate card bills only events whose `time` falls at or after the
//!   subscription's `active_from`, in whole seconds
//!   (openmeterio/openmeter `billing/worker/subscriptionsync/…/phaseiterator.go`,
//!   `streaming/clickhouse/meter_query.go`): the period runs from
//!   [`BillingTerms::service_start`] (`active_from` truncated to the
//!   second) to `active_to`. The collector moves too-old events to
//!   [`BillingTerms::billable_from`], `active_from` rounded *up* to the
//!   second, which is inside the period whichever way a server rounds.
//! - An invoice is collected `collection.interval` (default 1h) after its
//!   billing period ends (`billing/defaults.go`,
//!   `invoicecalc/collectionat.go`); usage of that period arriving later is
//!   never invoiced. [`BillingTerms::period_end`] finds the period an event
//!   falls in, from `billing_anchor` stepping by `billing_cadence`.

use chrono::{DateTime, Duration, Months, SubsecRound, Utc};
use serde::{Serialize, Serializer};

use crate::openmeter::model::Subscription;

/// A billing cadence: an ISO 8601 duration of whole months plus whole
/// seconds (`P1M`, `P1W`, `PT1H`, `P1Y2M3DT4H`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cadence {
    months: u32,
    seconds: u64,
}

impl Cadence {
    /// Parses the ISO 8601 durations OpenMeter uses for cadences; `None` for
    /// anything else (fractions, negative or zero lengths).
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix('P')?;
        let (date, time) = match rest.split_once('T') {
            Some((d, t)) if !t.is_empty() => (d, t),
            Some(_) => return None,
            None => (rest, ""),
        };
        let mut cadence = Self {
            months: 0,
            seconds: 0,
        };
        for (n, unit) in components(date)? {
            match unit {
                'Y' => cadence.months = cadence.months.checked_add(n.checked_mul(12)?)?,
                'M' => cadence.months = cadence.months.checked_add(n)?,
                'W' => cadence.seconds += u64::from(n) * 7 * 86_400,
                'D' => cadence.seconds += u64::from(n) * 86_400,
                _ => return None,
            }
        }
        for (n, unit) in components(time)? {
            cadence.seconds += u64::from(n)
                * match unit {
                    'H' => 3600,
                    'M' => 60,
                    'S' => 1,
                    _ => return None,
                };
        }
        (cadence.months > 0 || cadence.seconds > 0).then_some(cadence)
    }

    /// `from` plus `k` cadences (`k` may be negative); `None` out of
    /// chrono's range.
    fn step(&self, from: DateTime<Utc>, k: i64) -> Option<DateTime<Utc>> {
        let months = Months::new(
            u32::try_from(k.unsigned_abs())
                .ok()?
                .checked_mul(self.months)?,
        );
        let moved = if k >= 0 {
            from.checked_add_months(months)?
        } else {
            from.checked_sub_months(months)?
        };
        let seconds = i64::try_from(self.seconds).ok()?.checked_mul(k)?;
        moved.checked_add_signed(Duration::try_seconds(seconds)?)
    }

    /// A lower bound of the cadence's length, to jump close to a far period.
    fn min_seconds(&self) -> u64 {
        u64::from(self.months) * 28 * 86_400 + self.seconds
    }
}

impl std::fmt::Display for Cadence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "P")?;
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

/// `"1Y2M"` → `[(1,'Y'),(2,'M')]`; `None` when malformed.
fn components(text: &str) -> Option<Vec<(u32, char)>> {
    let mut out = Vec::new();
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            out.push((digits.parse().ok()?, c));
            digits.clear();
        }
    }
    digits.is_empty().then_some(out)
}

/// A subscription's billing times; ensure learns (and caches) those of the
/// subscription that bills an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingTerms {
    pub active_from: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_to: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub anchor: DateTime<Utc>,
    #[serde(skip)]
    pub cadence: Option<Cadence>,
}

impl BillingTerms {
    /// The terms of `subscription`.
    pub fn of(subscription: &Subscription) -> Self {
        Self {
            active_from: subscription.active_from,
            active_to: subscription.active_to,
            anchor: subscription
                .billing_anchor
                .unwrap_or(subscription.active_from),
            cadence: Cadence::parse(&subscription.billing_cadence),
        }
    }

    /// Where invoicing starts counting: `active_from` in whole seconds.
    pub fn service_start(&self) -> DateTime<Utc> {
        self.active_from.trunc_subsecs(0)
    }

    /// The earliest `time` the collector sends a too-old event at: inside
    /// the service period however a server rounds `active_from`.
    pub fn billable_from(&self) -> DateTime<Utc> {
        let whole = self.service_start();
        if whole == self.active_from {
            whole
        } else {
            whole + Duration::seconds(1)
        }
    }

    /// Whether usage at `time` falls inside the service period.
    pub fn covers(&self, time: DateTime<Utc>) -> bool {
        self.service_start() <= time && self.active_to.is_none_or(|to| time < to)
    }

    /// The end of the billing period that `time` falls in (the last one
    /// ends at `active_to`); `None` when the cadence is unknown or the
    /// period out of range.
    pub fn period_end(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let cadence = self.cadence?;
        let elapsed = (time - self.anchor).num_seconds();
        let approx = i64::try_from(cadence.min_seconds().max(1)).ok()?;
        let mut k = elapsed.div_euclid(approx);
        while cadence.step(self.anchor, k)? > time {
            k -= 1;
        }
        let mut end = cadence.step(self.anchor, k + 1)?;
        while end <= time {
            k += 1;
            end = cadence.step(self.anchor, k + 1)?;
        }
        Some(self.active_to.map_or(end, |to| end.min(to)))
    }

    /// Whether usage at `time` missed its invoice: its period ended more
    /// than `collection` before `now`. Recent usage (the common case) is
    /// answered without period arithmetic: its period cannot have ended
    /// before it.
    pub fn missed_invoice(
        &self,
        time: DateTime<Utc>,
        collection: std::time::Duration,
        now: DateTime<Utc>,
    ) -> bool {
        let Ok(collection) = Duration::from_std(collection) else {
            return false;
        };
        if time + collection >= now {
            return false;
        }
        self.period_end(time)
            .is_some_and(|end| end + collection < now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn monthly(anchor: &str) -> BillingTerms {
        BillingTerms {
            active_from: at(anchor),
            active_to: None,
            anchor: at(anchor),
            cadence: Cadence::parse("P1M"),
        }
    }

    #[test]
    fn cadences_parse_as_months_and_seconds() {
        assert_eq!(
            Cadence::parse("P1M"),
            Some(Cadence {
                months: 1,
                seconds: 0
            })
        );
        assert_eq!(Cadence::parse("P1Y").unwrap().months, 12);
        assert_eq!(Cadence::parse("P2W").unwrap().seconds, 14 * 86_400);
        assert_eq!(Cadence::parse("PT1H30M").unwrap().seconds, 5400);
        for bad in ["", "P", "PT", "1M", "P1.5M", "P-1M", "P0D", "PXM"] {
            assert_eq!(Cadence::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn billing_starts_at_the_next_whole_second_of_active_from() {
        let mut terms = monthly("2026-11-25T10:00:00Z");
        assert_eq!(terms.billable_from(), at("2026-11-25T10:00:00Z"));
        terms.active_from = at("2026-11-25T10:00:00.250Z");
        assert_eq!(terms.billable_from(), at("2026-11-25T10:00:01Z"));
    }

    #[test]
    fn period_end_follows_calendar_months_from_the_anchor() {
        let terms = monthly("2026-01-15T00:00:00Z");
        assert_eq!(
            terms.period_end(at("2026-01-15T00:00:00Z")),
            Some(at("2026-02-15T00:00:00Z"))
        );
        assert_eq!(
            terms.period_end(at("2026-11-20T12:00:00Z")),
            Some(at("2026-12-15T00:00:00Z"))
        );
        assert_eq!(
            terms.period_end(at("2026-11-15T00:00:00Z")),
            Some(at("2026-12-15T00:00:00Z"))
        );
    }

    #[test]
    fn monthly_periods_keep_a_month_end_anchor() {
        let terms = monthly("2026-01-31T10:00:00Z");
        assert_eq!(
            terms.period_end(at("2026-03-05T00:00:00Z")),
            Some(at("2026-03-31T10:00:00Z"))
        );
        assert_eq!(
            terms.period_end(at("2025-12-31T10:00:00Z")),
            Some(at("2026-01-31T10:00:00Z"))
        );
    }

    #[test]
    fn periods_of_weeks_and_hours_follow_the_anchor() {
        let mut terms = monthly("2026-11-01T00:00:00Z");
        terms.cadence = Cadence::parse("P1W");
        assert_eq!(
            terms.period_end(at("2026-11-09T00:00:00Z")),
            Some(at("2026-11-15T00:00:00Z"))
        );
        terms.cadence = Cadence::parse("PT1H");
        assert_eq!(
            terms.period_end(at("2026-11-01T05:30:00Z")),
            Some(at("2026-11-01T06:00:00Z"))
        );
    }

    #[test]
    fn a_period_before_a_future_anchor_ends_at_the_anchor() {
        let mut terms = monthly("2026-11-15T00:00:00Z");
        terms.anchor = at("2026-12-01T00:00:00Z");
        assert_eq!(
            terms.period_end(at("2026-11-20T00:00:00Z")),
            Some(at("2026-12-01T00:00:00Z"))
        );
    }

    #[test]
    fn the_last_period_of_a_canceled_subscription_ends_at_active_to() {
        let mut terms = monthly("2026-01-01T00:00:00Z");
        terms.active_to = Some(at("2026-03-10T00:00:00Z"));
        assert_eq!(
            terms.period_end(at("2026-03-05T00:00:00Z")),
            Some(at("2026-03-10T00:00:00Z"))
        );
    }

    #[test]
    fn the_service_period_counts_from_active_from_in_whole_seconds() {
        let mut terms = monthly("2026-11-25T10:00:00.700Z");
        terms.active_to = Some(at("2026-11-26T00:00:00Z"));
        assert!(terms.covers(at("2026-11-25T10:00:00.200Z")));
        assert!(!terms.covers(at("2026-11-25T09:59:59.999Z")));
        assert!(!terms.covers(at("2026-11-26T00:00:00Z")));
    }

    #[test]
    fn usage_of_a_period_collected_long_ago_missed_its_invoice() {
        let terms = monthly("2026-01-01T00:00:00Z");
        let hour = std::time::Duration::from_secs(3600);
        let now = at("2026-03-01T00:30:00Z");
        assert!(terms.missed_invoice(at("2026-01-20T00:00:00Z"), hour, now));
        assert!(!terms.missed_invoice(at("2026-02-20T00:00:00Z"), hour, now));
    }

    #[test]
    fn unknown_cadence_never_claims_a_missed_invoice() {
        let mut terms = monthly("2026-01-01T00:00:00Z");
        terms.cadence = None;
        let hour = std::time::Duration::from_secs(3600);
        assert!(!terms.missed_invoice(at("2020-01-01T00:00:00Z"), hour, Utc::now()));
    }
}
