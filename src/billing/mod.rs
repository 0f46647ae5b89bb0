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

mod cadence;
mod duration;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde::Serialize;

use crate::openmeter::model::Subscription;
pub(crate) use cadence::Cadence;
pub(crate) use duration::IsoDuration;

/// Which `time` the collector sends an event with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EventTime {
    /// The signed time, but never earlier than the start of the
    /// subscription that bills the event (else it is accepted and never
    /// invoiced); the signed time is kept in `data.signed_at`.
    #[default]
    Billable,
    /// The signed time, always (the original's behaviour).
    Signed,
}

/// How the collector places events in OpenMeter's billing periods.
#[derive(Debug, Clone, Copy)]
pub struct BillingPolicy {
    pub event_time: EventTime,
    /// How long after a billing period ends OpenMeter still collects its
    /// usage into the invoice (its `collection.interval`, default 1h): the
    /// one setting (`BILLING_COLLECTION_WINDOW`) the collector's counters
    /// and the audit's verdicts both read.
    pub collection_window: std::time::Duration,
}

impl Default for BillingPolicy {
    fn default() -> Self {
        Self {
            event_time: EventTime::Billable,
            collection_window: std::time::Duration::from_secs(3600),
        }
    }
}

impl BillingPolicy {
    /// The time the collector sends an event signed at `signed` with, when
    /// it is not the signed time ([`BillingTerms::bill_time`], unless the
    /// operator chose signed times).
    pub fn moved_time(&self, terms: &BillingTerms, signed: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.event_time {
            EventTime::Billable => terms.bill_time(signed),
            EventTime::Signed => None,
        }
    }

    /// The collection window as a signed interval.
    pub fn window(&self) -> Duration {
        Duration::from_std(self.collection_window).unwrap_or(Duration::MAX)
    }
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

    /// The earliest `time` a too-old event is sent at (by the collector and
    /// by the audit's repair): inside the service period however a server
    /// rounds `active_from`.
    pub fn billable_from(&self) -> DateTime<Utc> {
        let whole = self.service_start();
        if whole == self.active_from {
            whole
        } else {
            whole + Duration::seconds(1)
        }
    }

    /// Where usage signed at `signed` must be sent to be billed, when that
    /// is not `signed`: [`Self::billable_from`] when it is earlier. Only
    /// ever moved later, never earlier.
    pub fn bill_time(&self, signed: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from = self.billable_from();
        (signed < from).then_some(from)
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

    /// When the invoice of the period holding `time` is collected: the
    /// period's end plus `window`; `None` when the cadence is unknown.
    pub fn collected_at(&self, time: DateTime<Utc>, window: Duration) -> Option<DateTime<Utc>> {
        self.period_end(time)?.checked_add_signed(window)
    }

    /// Whether usage at `time` that reaches OpenMeter at `arrival` misses
    /// its invoice: the period's invoice was collected before it arrived.
    /// Recent usage (the common case) is answered without period
    /// arithmetic: its period cannot have ended before it.
    pub fn missed_invoice(
        &self,
        time: DateTime<Utc>,
        window: Duration,
        arrival: DateTime<Utc>,
    ) -> bool {
        if time.checked_add_signed(window).is_none_or(|t| t >= arrival) {
            return false;
        }
        self.collected_at(time, window)
            .is_some_and(|collected| collected < arrival)
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
        let hour = Duration::hours(1);
        let now = at("2026-03-01T00:30:00Z");
        assert!(terms.missed_invoice(at("2026-01-20T00:00:00Z"), hour, now));
        assert!(!terms.missed_invoice(at("2026-02-20T00:00:00Z"), hour, now));
    }

    #[test]
    fn unknown_cadence_never_claims_a_missed_invoice() {
        let mut terms = monthly("2026-01-01T00:00:00Z");
        terms.cadence = None;
        let hour = Duration::hours(1);
        assert!(!terms.missed_invoice(at("2020-01-01T00:00:00Z"), hour, Utc::now()));
    }

    /// ticketmeter's reading of cadences held against the OpenMeter
    /// double's, which follows the server on its own: the same period ends
    /// for every cadence, anchor and time in the table.
    #[test]
    fn period_ends_agree_with_the_doubles_reading_of_cadences() {
        let cadences = [
            "P1M",
            "P3M",
            "P1Y",
            "P1Y1M",
            "P1Y2M3DT4H",
            "P2W",
            "P1D",
            "PT1H",
            "PT90M",
        ];
        let anchors = [
            "2024-02-29T12:00:00Z",
            "2025-01-31T10:00:00Z",
            "2026-11-15T00:00:00Z",
            "2023-03-31T23:59:59Z",
        ];
        let offsets_days = [-400, -31, -1, 0, 1, 27, 28, 29, 30, 31, 59, 366, 400, 800];
        for cadence in cadences {
            for anchor in anchors {
                let terms = BillingTerms {
                    active_from: at(anchor),
                    active_to: None,
                    anchor: at(anchor),
                    cadence: Cadence::parse(cadence),
                };
                for days in offsets_days {
                    let t = at(anchor) + Duration::days(days) + Duration::minutes(7);
                    let theirs = openmeter_double::billing_period(cadence, at(anchor), t);
                    assert_eq!(
                        terms.period_end(t),
                        theirs.map(|(_, to)| to),
                        "{cadence} from {anchor} at {t}"
                    );
                }
            }
        }
    }

    #[test]
    fn from_29_february_a_year_and_a_month_adds_the_year_first() {
        let mut terms = monthly("2024-02-29T12:00:00Z");
        terms.cadence = Cadence::parse("P1Y1M");
        assert_eq!(
            terms.period_end(at("2024-03-01T00:00:00Z")),
            Some(at("2025-03-28T12:00:00Z"))
        );
    }
}
