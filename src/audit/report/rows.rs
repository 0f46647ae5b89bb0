//! One line per customer, then the totals: what both the table and the
//! CSV show.

use super::{CustomerMoney, Report};

/// One customer's line (or the totals), in whole events and exact money.
pub(super) struct Row {
    pub(super) customer: String,
    pub(super) signed: u64,
    pub(super) stored: u64,
    pub(super) money: CustomerMoney,
    pub(super) missing: u64,
    pub(super) unbillable: u64,
    pub(super) dead_lettered: u64,
}

impl Report {
    /// One line per customer, then the totals: what both the table and
    /// the CSV show.
    pub(super) fn rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .customers
            .iter()
            .map(|c| Row {
                customer: c.customer.clone(),
                signed: c.signed_events,
                stored: c.stored_events,
                money: c.money.clone(),
                missing: c.missing.len() as u64,
                unbillable: c.unbillable.len() as u64,
                dead_lettered: c.dead_lettered.len() as u64,
            })
            .collect();
        let t = &self.totals;
        rows.push(Row {
            customer: "TOTAL".to_owned(),
            signed: t.signed_events,
            stored: t.stored_events,
            money: CustomerMoney {
                signed_fee_wei: t.signed_fee_wei,
                signed_usd_micros: t.signed_usd_micros,
                stored: t.money.clone(),
                duplicates: t.duplicate_events,
            },
            missing: t.missing_events,
            unbillable: t.unbillable_events,
            dead_lettered: t.dead_lettered_events,
        });
        rows
    }
}
