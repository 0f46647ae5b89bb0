//! Where an event's time is placed: in its subscription's billing period
//! (the rule is `billing`'s), and counted when its period's invoice was
//! collected already.

use chrono::{DateTime, Utc};

use super::noted::{Asked, Note};
use super::{Deliverer, Pending};
use crate::ensure::Billable;
use crate::metrics::metrics;

impl Deliverer {
    /// Sets the event's time to the one its subscription bills (the rule
    /// is `billing`'s), and counts usage that arrives after its period's
    /// invoice was collected. `asked`: what this chunk already asked
    /// [`Noted`](super::noted::Noted) about the customer.
    pub(super) fn place_in_period(
        &self,
        pending: &mut Pending,
        billable: &Billable,
        now: DateTime<Utc>,
        asked: &mut Asked,
    ) {
        let terms = &billable.terms;
        if let Some(start) = self.billing.moved_time(terms, pending.time) {
            pending.event.bill_from(start);
            pending.time = start;
            metrics().events_time_moved.inc();
            if self.noted.first(Note::Moved, &pending.identity, asked) {
                tracing::info!(
                    customer = billable.customer_key(&pending.identity),
                    subscription_active_from = %terms.active_from,
                    signed_at = pending.event.data.signed_at.as_deref().unwrap_or_default(),
                    "events older than the customer's subscription are sent at its start so they are invoiced"
                );
            }
        }
        if terms.missed_invoice(pending.time, self.billing.window(), now) {
            metrics().events_missed_invoice.inc();
            metrics()
                .usd_micros_missed_invoice
                .inc_by(pending.event.data.billable_usd_micros.whole_u64());
            if self.noted.first(Note::Late, &pending.identity, asked) {
                tracing::warn!(
                    customer = billable.customer_key(&pending.identity),
                    time = %pending.time,
                    period_end = %terms
                        .period_end(pending.time)
                        .map_or_else(|| "unknown".to_owned(), |end| end.to_rfc3339()),
                    "usage of a billing period whose invoice was already collected: OpenMeter stores it but will not invoice it"
                );
            }
        }
    }
}
