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
//!   usage of that period ingested later is never invoiced.
//!
//! The time rules themselves are `crate::billing`'s, shared with the
//! collector; this module only applies them to what OpenMeter stored.

use chrono::{DateTime, TimeDelta, Utc};

use super::range::rfc3339;
use crate::billing::BillingTerms;
use crate::openmeter::model::IngestedEvent;

/// OpenMeter's validation error for an event whose subject has no customer
/// (`openmeter/meterevent/adapter/event.go`).
pub(crate) const NO_CUSTOMER: &str = "no customer found for event subject";
const BEFORE_ACTIVE_FROM: &str = "time before the subscription's active_from";
/// A copy stored under another subject than its ticket's: it bills that
/// subject's customer, not the signer's.
pub(crate) const MISATTRIBUTED: &str = "billed to subject";

/// What a repair can do about an unbillable event, decided once, here, from
/// the verdict (never from its rendered text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnbillableKind {
    /// Its subject has no customer: ensure it, then resend.
    NoCustomer,
    /// Its `time` predates the subscription: resend at its start.
    BeforeActiveFrom,
    /// Nothing a repair may change (e.g. its period was already invoiced).
    Other,
}

/// Why a stored event will not be invoiced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unbillable {
    /// No customer had its subject when OpenMeter read it (its validation
    /// error, or no customer attached).
    NoCustomer(String),
    /// OpenMeter's other validation errors, joined.
    Validation(String),
    /// The event's `time` is older than every subscription that could bill
    /// it; `terms` are those of the earliest one after it.
    BeforeActiveFrom { terms: BillingTerms },
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
            Self::NoCustomer(errors) | Self::Validation(errors) => f.write_str(errors),
            Self::BeforeActiveFrom { terms } => {
                write!(
                    f,
                    "{BEFORE_ACTIVE_FROM} ({})",
                    rfc3339(terms.service_start())
                )
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

impl Unbillable {
    pub(crate) fn kind(&self) -> UnbillableKind {
        match self {
            Self::NoCustomer(_) => UnbillableKind::NoCustomer,
            Self::BeforeActiveFrom { .. } => UnbillableKind::BeforeActiveFrom,
            Self::Validation(_) | Self::NotCovered | Self::PeriodInvoiced { .. } | Self::NoTime => {
                UnbillableKind::Other
            }
        }
    }
}

/// Whether `stored` will be invoiced, given the terms of its customer's
/// subscriptions (empty when it has no customer) and the collection window.
pub(crate) fn verdict(
    stored: &IngestedEvent,
    terms: &[BillingTerms],
    collection_window: TimeDelta,
) -> Result<(), Unbillable> {
    if !stored.validation_errors.is_empty() {
        let messages: Vec<&str> = stored
            .validation_errors
            .iter()
            .map(|e| e.message.as_str())
            .collect();
        let joined = messages.join("; ");
        return Err(if messages.iter().any(|m| m.starts_with(NO_CUSTOMER)) {
            Unbillable::NoCustomer(joined)
        } else {
            Unbillable::Validation(joined)
        });
    }
    if stored.customer.is_none() {
        return Err(Unbillable::NoCustomer(format!(
            "{NO_CUSTOMER}: {}",
            stored.event.subject
        )));
    }
    let time = stored
        .event
        .time
        .as_deref()
        .and_then(crate::encoding::parse_rfc3339)
        .ok_or(Unbillable::NoTime)?;
    let Some(term) = terms.iter().find(|t| t.covers(time)) else {
        return Err(terms
            .iter()
            .filter(|t| t.service_start() > time)
            .min_by_key(|t| t.service_start())
            .map_or(Unbillable::NotCovered, |terms| {
                Unbillable::BeforeActiveFrom { terms: *terms }
            }));
    };
    if term.missed_invoice(time, collection_window, stored.ingested_at) {
        if let Some(collected_at) = term.collected_at(time, collection_window) {
            return Err(Unbillable::PeriodInvoiced { collected_at });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openmeter::model::{CustomerReference, EventValidationError, StoredEvent};

    fn t(s: &str) -> DateTime<Utc> {
        crate::encoding::parse_rfc3339(s).unwrap()
    }

    fn stored(time: &str, ingested: &str) -> IngestedEvent {
        IngestedEvent {
            event: StoredEvent {
                id: "e".into(),
                source: "go-livepeer-remote-signer".into(),
                subject: "a:b".into(),
                time: Some(time.into()),
                data: None,
            },
            customer: Some(CustomerReference { id: "c".into() }),
            ingested_at: t(ingested),
            validation_errors: vec![],
        }
    }

    fn term(active_from: &str) -> BillingTerms {
        BillingTerms {
            active_from: t(active_from),
            active_to: None,
            anchor: t(active_from),
            cadence: crate::billing::Cadence::parse("P1M"),
        }
    }

    const HOUR: TimeDelta = TimeDelta::hours(1);

    #[test]
    fn what_a_repair_can_do_is_decided_from_the_verdict() {
        let kind =
            |e: &IngestedEvent, terms: &[BillingTerms]| verdict(e, terms, HOUR).unwrap_err().kind();
        let mut no_customer = stored("2026-11-10T00:00:00Z", "2026-11-10T00:00:01Z");
        no_customer.customer = None;
        assert_eq!(kind(&no_customer, &[]), UnbillableKind::NoCustomer);
        let mut flagged = stored("2026-11-10T00:00:00Z", "2026-11-10T00:00:01Z");
        flagged.validation_errors = vec![EventValidationError {
            message: format!("{NO_CUSTOMER}: a:b"),
        }];
        assert_eq!(kind(&flagged, &[]), UnbillableKind::NoCustomer);
        let early = stored("2026-11-01T00:00:00Z", "2026-11-10T00:00:01Z");
        assert_eq!(
            kind(&early, &[term("2026-11-05T00:00:00Z")]),
            UnbillableKind::BeforeActiveFrom
        );
        let late = stored("2026-10-10T00:00:00Z", "2026-11-10T00:00:01Z");
        assert_eq!(
            kind(&late, &[term("2026-10-01T00:00:00Z")]),
            UnbillableKind::Other
        );
    }

    #[test]
    fn an_event_inside_its_subscription_is_billable() {
        let e = stored("2026-11-10T00:00:00Z", "2026-11-10T00:00:01Z");
        assert_eq!(verdict(&e, &[term("2026-11-01T00:00:00Z")], HOUR), Ok(()));
    }

    #[test]
    fn an_event_older_than_its_subscription_is_not() {
        let e = stored("2026-10-31T23:59:59Z", "2026-11-10T00:00:00Z");
        let subscription = term("2026-11-01T00:00:00.700Z");
        let v = verdict(&e, &[subscription], HOUR).unwrap_err();
        assert_eq!(
            v,
            Unbillable::BeforeActiveFrom {
                terms: subscription
            }
        );
        assert!(v.to_string().ends_with("(2026-11-01T00:00:00Z)"));
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
        s.active_to = Some(t("2026-11-15T00:00:00Z"));
        let after = stored("2026-11-16T00:00:00Z", "2026-11-16T00:00:00Z");
        assert_eq!(verdict(&after, &[s], HOUR), Err(Unbillable::NotCovered));
        let before = stored("2026-11-14T00:00:00Z", "2026-11-14T00:00:00Z");
        assert_eq!(verdict(&before, &[s], HOUR), Ok(()));
    }
}
