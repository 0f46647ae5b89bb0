//! Will OpenMeter bill a stored event? The rules the real server applies
//! after it accepted (202) and stored an event:
//!
//! - a validation error (e.g. "no customer found for event subject") means
//!   no customer is billed (`openmeter/meterevent/adapter/event.go`);
//! - a usage rate card counts events by `time` inside its subscription's
//!   service period, which starts at `active_from` in whole seconds and ends
//!   at `active_to` (`billing/worker/subscriptionsync/.../phaseiterator.go`,
//!   `streaming/clickhouse/meter_query.go`);
//! - an invoice is collected `collection.interval` after its period ends
//!   (default 1h, `billing/defaults.go`, `invoicecalc/collectionat.go`);
//!   usage of that period ingested later is never invoiced. Periods run
//!   from the subscription's `billing_anchor` in steps of its
//!   `billing_cadence`; the audit's `--collection-window` is that interval.

use chrono::{DateTime, DurationRound, Months, TimeDelta, Utc};

use super::range::rfc3339;
use crate::openmeter::model::{IngestedEvent, SubscriptionTerm};

/// How the reasons a repair can act on begin.
pub const NO_CUSTOMER: &str = "no customer found for event subject";
pub const BEFORE_ACTIVE_FROM: &str = "time before the subscription's active_from";

/// Why a stored event will not be invoiced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unbillable {
    /// OpenMeter's own validation errors, joined.
    Validation(String),
    /// The event's `time` is older than every subscription that could bill it.
    BeforeActiveFrom { active_from: DateTime<Utc> },
    /// No subscription covers the event's `time`.
    NotCovered,
    /// The event arrived after its period's invoice was collected.
    PeriodInvoiced { collected_at: DateTime<Utc> },
    /// The stored `time` is missing or not RFC 3339.
    NoTime,
}

impl std::fmt::Display for Unbillable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Validation(errors) => f.write_str(errors),
            Self::BeforeActiveFrom { active_from } => {
                write!(f, "{BEFORE_ACTIVE_FROM} ({})", rfc3339(*active_from))
            }
            Self::NotCovered => f.write_str("no subscription covers the event time"),
            Self::PeriodInvoiced { collected_at } => write!(
                f,
                "period already invoiced (collected {}, before the event arrived)",
                rfc3339(*collected_at)
            ),
            Self::NoTime => f.write_str("event has no valid time"),
        }
    }
}

/// Whether `stored` will be invoiced, given its customer's subscriptions
/// (`terms`, empty when it has no customer) and the collection window.
pub fn verdict(
    stored: &IngestedEvent,
    terms: &[SubscriptionTerm],
    collection_window: TimeDelta,
) -> Result<(), Unbillable> {
    if !stored.validation_errors.is_empty() {
        let messages: Vec<&str> = stored
            .validation_errors
            .iter()
            .map(|e| e.message.as_str())
            .collect();
        return Err(Unbillable::Validation(messages.join("; ")));
    }
    if stored.customer.is_none() {
        return Err(Unbillable::Validation(format!(
            "{NO_CUSTOMER}: {}",
            stored.event.subject
        )));
    }
    let time = stored
        .event
        .time
        .as_deref()
        .and_then(super::range::parse_time)
        .ok_or(Unbillable::NoTime)?;
    let live: Vec<&SubscriptionTerm> = terms.iter().filter(|s| s.deleted_at.is_none()).collect();
    let Some(term) = live.iter().find(|s| covers(s, time)) else {
        return Err(live
            .iter()
            .map(|s| whole_second(s.active_from))
            .filter(|from| *from > time)
            .min()
            .map_or(Unbillable::NotCovered, |active_from| {
                Unbillable::BeforeActiveFrom { active_from }
            }));
    };
    match period_end(term, time) {
        Some(end) if stored.ingested_at > end + collection_window => {
            Err(Unbillable::PeriodInvoiced {
                collected_at: end + collection_window,
            })
        }
        _ => Ok(()),
    }
}

fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::seconds(1)).unwrap_or(t)
}

fn covers(term: &SubscriptionTerm, time: DateTime<Utc>) -> bool {
    whole_second(term.active_from) <= time && term.active_to.is_none_or(|to| time < to)
}

/// The end of the billing period holding `time`, capped at `active_to`;
/// `None` when the cadence cannot be read (then no period is assumed closed).
fn period_end(term: &SubscriptionTerm, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cadence = Cadence::parse(term.billing_cadence.as_deref()?)?;
    let anchor = term.billing_anchor.unwrap_or(term.active_from);
    let end = cadence.period_end(anchor, time)?;
    Some(term.active_to.map_or(end, |to| end.min(to)))
}

/// An ISO 8601 duration as billing cadences use it (`P1M`, `P1Y`, `P2W`,
/// `P1D`, `PT1H`, …): calendar months plus a fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    months: u32,
    fixed: TimeDelta,
}

impl Cadence {
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.trim().strip_prefix('P')?;
        let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
        let (mut months, mut fixed) = (0u32, TimeDelta::zero());
        for (n, unit) in units(date)? {
            match unit {
                'Y' => months = months.checked_add(n.checked_mul(12)?)?,
                'M' => months = months.checked_add(n)?,
                'W' => fixed += TimeDelta::weeks(n.into()),
                'D' => fixed += TimeDelta::days(n.into()),
                _ => return None,
            }
        }
        for (n, unit) in units(time)? {
            match unit {
                'H' => fixed += TimeDelta::hours(n.into()),
                'M' => fixed += TimeDelta::minutes(n.into()),
                'S' => fixed += TimeDelta::seconds(n.into()),
                _ => return None,
            }
        }
        (months > 0 || fixed > TimeDelta::zero()).then_some(Self { months, fixed })
    }

    /// The start of period `k` (negative before the anchor).
    fn start(&self, anchor: DateTime<Utc>, k: i64) -> Option<DateTime<Utc>> {
        let months = u32::try_from(k.unsigned_abs().checked_mul(self.months.into())?).ok()?;
        let fixed = self.fixed.checked_mul(i32::try_from(k).ok()?)?;
        let shifted = if k >= 0 {
            anchor.checked_add_months(Months::new(months))?
        } else {
            anchor.checked_sub_months(Months::new(months))?
        };
        shifted.checked_add_signed(fixed)
    }

    /// The end of the period `[start(k), start(k+1))` that holds `time`.
    pub fn period_end(&self, anchor: DateTime<Utc>, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let approx = TimeDelta::days(i64::from(self.months) * 30) + self.fixed;
        let mut k = (time - anchor)
            .num_seconds()
            .div_euclid(approx.num_seconds().max(1));
        // The estimate is off by at most a few periods (month lengths).
        for _ in 0..64 {
            let (start, end) = (self.start(anchor, k)?, self.start(anchor, k + 1)?);
            if time < start {
                k -= 1;
            } else if time >= end {
                k += 1;
            } else {
                return Some(end);
            }
        }
        None
    }
}

/// `1Y2M` → `[(1,'Y'), (2,'M')]`; `None` on anything else.
fn units(text: &str) -> Option<Vec<(u32, char)>> {
    let mut out = Vec::new();
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
        } else {
            out.push((number.parse().ok()?, c));
            number.clear();
        }
    }
    number.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openmeter::model::{CustomerReference, EventValidationError, StoredEvent};

    fn t(s: &str) -> DateTime<Utc> {
        super::super::range::parse_time(s).unwrap()
    }

    fn stored(time: &str, ingested: &str) -> IngestedEvent {
        IngestedEvent {
            event: StoredEvent {
                id: "e".into(),
                source: "s".into(),
                kind: "create_signed_ticket".into(),
                subject: "a:b".into(),
                time: Some(time.into()),
                data: None,
            },
            customer: Some(CustomerReference { id: "c".into() }),
            ingested_at: t(ingested),
            validation_errors: vec![],
        }
    }

    fn term(active_from: &str) -> SubscriptionTerm {
        SubscriptionTerm {
            id: "s".into(),
            customer_id: "c".into(),
            status: "active".into(),
            active_from: t(active_from),
            active_to: None,
            billing_anchor: Some(t(active_from)),
            billing_cadence: Some("P1M".into()),
            deleted_at: None,
        }
    }

    const HOUR: TimeDelta = TimeDelta::hours(1);

    #[test]
    fn an_event_inside_its_subscription_is_billable() {
        let e = stored("2026-11-10T00:00:00Z", "2026-11-10T00:00:01Z");
        assert_eq!(verdict(&e, &[term("2026-11-01T00:00:00Z")], HOUR), Ok(()));
    }

    #[test]
    fn an_event_older_than_its_subscription_is_not() {
        let e = stored("2026-10-31T23:59:59Z", "2026-11-10T00:00:00Z");
        let v = verdict(&e, &[term("2026-11-01T00:00:00.700Z")], HOUR).unwrap_err();
        assert_eq!(
            v,
            Unbillable::BeforeActiveFrom {
                active_from: t("2026-11-01T00:00:00Z")
            }
        );
        assert!(v
            .to_string()
            .starts_with("time before the subscription's active_from"));
    }

    #[test]
    fn active_from_counts_in_whole_seconds() {
        let e = stored("2026-11-01T00:00:00.200Z", "2026-11-01T00:00:01Z");
        assert_eq!(
            verdict(&e, &[term("2026-11-01T00:00:00.700Z")], HOUR),
            Ok(())
        );
    }

    #[test]
    fn a_validation_error_is_the_reason_given() {
        let mut e = stored("2026-11-10T00:00:00Z", "2026-11-10T00:00:00Z");
        e.customer = None;
        e.validation_errors = vec![EventValidationError {
            code: "validation_error".into(),
            message: "no customer found for event subject: a:b".into(),
        }];
        assert_eq!(
            verdict(&e, &[], HOUR).unwrap_err().to_string(),
            "no customer found for event subject: a:b"
        );
    }

    #[test]
    fn usage_arriving_after_its_period_was_collected_is_not_invoiced() {
        let late = stored("2026-11-30T23:00:00Z", "2026-12-01T01:00:01Z");
        let v = verdict(&late, &[term("2026-11-01T00:00:00Z")], HOUR).unwrap_err();
        assert_eq!(
            v,
            Unbillable::PeriodInvoiced {
                collected_at: t("2026-12-01T01:00:00Z")
            }
        );
        let in_time = stored("2026-11-30T23:00:00Z", "2026-12-01T00:59:59Z");
        assert_eq!(
            verdict(&in_time, &[term("2026-11-01T00:00:00Z")], HOUR),
            Ok(())
        );
    }

    #[test]
    fn a_canceled_subscription_bills_until_active_to_only() {
        let mut s = term("2026-11-01T00:00:00Z");
        s.status = "canceled".into();
        s.active_to = Some(t("2026-11-15T00:00:00Z"));
        let after = stored("2026-11-16T00:00:00Z", "2026-11-16T00:00:00Z");
        assert_eq!(
            verdict(&after, &[s.clone()], HOUR),
            Err(Unbillable::NotCovered)
        );
        let before = stored("2026-11-14T00:00:00Z", "2026-11-14T00:00:00Z");
        assert_eq!(verdict(&before, &[s], HOUR), Ok(()));
    }

    #[test]
    fn monthly_periods_follow_the_calendar_from_the_anchor() {
        let c = Cadence::parse("P1M").unwrap();
        let anchor = t("2026-01-31T10:00:00Z");
        assert_eq!(
            c.period_end(anchor, t("2026-03-05T00:00:00Z")),
            Some(t("2026-03-31T10:00:00Z"))
        );
        assert_eq!(
            c.period_end(anchor, t("2025-12-31T10:00:00Z")),
            Some(t("2026-01-31T10:00:00Z"))
        );
    }

    #[test]
    fn cadences_of_weeks_days_and_hours_are_read() {
        let anchor = t("2026-11-01T00:00:00Z");
        let week = Cadence::parse("P1W").unwrap();
        assert_eq!(
            week.period_end(anchor, t("2026-11-09T00:00:00Z")),
            Some(t("2026-11-15T00:00:00Z"))
        );
        assert_eq!(
            Cadence::parse("PT1H")
                .unwrap()
                .period_end(anchor, t("2026-11-01T05:30:00Z")),
            Some(t("2026-11-01T06:00:00Z"))
        );
        assert_eq!(Cadence::parse("P1Y").map(|c| c.months), Some(12));
        assert!(Cadence::parse("1M").is_none());
        assert!(Cadence::parse("P").is_none());
        assert!(Cadence::parse("P1X").is_none());
    }
}
