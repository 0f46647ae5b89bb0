//! The report from what the audit learnt: each signed event's status,
//! the sums the totals proved, the dead letters, per customer and in total.

use std::collections::BTreeMap;

use ethnum::U256;

use super::{status, CustomerMoney, CustomerReport, IdReason, Notes, Report, Status, Totals};
use crate::audit::ledger::{add, add_micros, Entry, Ledger, Sums};
use crate::audit::range::TimeRange;
use crate::domain::{EthUsdPrice, UsdMicros};

impl Report {
    /// Builds the report from what the audit learnt.
    pub(crate) fn build(
        ledger: &Ledger,
        price: &EthUsdPrice,
        range: TimeRange,
        settled_before_ns: i64,
        notes: Notes,
    ) -> Self {
        let mut by_customer: BTreeMap<&str, CustomerReport> = BTreeMap::new();
        let mut totals = Totals::default();
        let mut notes = notes;
        let customer = |index: u32| -> &str { ledger.customers.get(index) };
        for (id, entry) in &ledger.entries {
            let row = by_customer
                .entry(customer(entry.customer))
                .or_insert_with_key(|key| CustomerReport::new(key));
            tally(
                row,
                &mut totals,
                &mut notes,
                ledger,
                id,
                entry,
                settled_before_ns,
            );
        }
        for letter in &ledger.letters {
            let row = by_customer
                .entry(customer(letter.customer))
                .or_insert_with_key(|key| CustomerReport::new(key));
            row.dead_lettered.push(IdReason {
                id: letter.id.clone(),
                reason: ledger.reasons.get(letter.reason).clone(),
            });
            totals.dead_lettered_events += 1;
        }
        for (&index, sums) in &ledger.proven {
            let row = by_customer
                .entry(customer(index))
                .or_insert_with_key(|key| CustomerReport::new(key));
            add_proven(row, &mut totals, sums);
        }
        for (&index, sums) in &ledger.in_flight {
            let row = by_customer
                .entry(customer(index))
                .or_insert_with_key(|key| CustomerReport::new(key));
            add_signed(row, &mut totals, sums);
            add_micros(&mut totals.money.in_flight_usd_micros, sums.usd_micros);
            notes.in_flight += sums.events;
        }
        totals.unexpected_events = ledger.unexpected.count;
        notes.unexpected_sample = ledger.unexpected.sample.clone();
        let mut customers: Vec<CustomerReport> = by_customer.into_values().collect();
        totals.rounding_drift_usd_micros =
            drift(totals.signed_usd_micros, totals.signed_fee_wei, price);
        let money = &totals.money;
        for m in [
            money.missing_usd_micros,
            money.unbillable_usd_micros,
            money.in_flight_usd_micros,
        ] {
            add_micros(&mut totals.unproven_usd_micros, m);
        }
        for c in &mut customers {
            c.rounding_drift_usd_micros =
                drift(c.money.signed_usd_micros, c.money.signed_fee_wei, price);
            c.missing.sort();
            c.duplicates.sort();
            c.unbillable.sort_by(|a, b| a.id.cmp(&b.id));
            c.dead_lettered.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Self {
            from: range.from,
            to: range.to,
            totals,
            customers,
            repairs: Vec::new(),
            chain: Default::default(),
            proof: None,
            notes,
        }
    }
}

impl CustomerReport {
    fn new(customer: &str) -> Self {
        Self {
            customer: customer.to_owned(),
            signed_events: 0,
            stored_events: 0,
            missing: Vec::new(),
            unbillable: Vec::new(),
            dead_lettered: Vec::new(),
            duplicates: Vec::new(),
            rounding_drift_usd_micros: "0".to_owned(),
            money: CustomerMoney::default(),
        }
    }
}

/// `sent − exact(wei)`, signed, where exact is `Σ wei × price / 10^12`.
fn drift(sent: UsdMicros, wei: U256, price: &EthUsdPrice) -> String {
    let Some(exact) = price.micros_of(wei) else {
        return "unknown (Σ wei × price exceeds 2^256)".to_owned();
    };
    match sent.difference(exact) {
        (true, magnitude) => format!("-{magnitude}"),
        (false, magnitude) => magnitude.to_string(),
    }
}

/// Signed events counted as a sum, not one by one.
fn add_signed(row: &mut CustomerReport, totals: &mut Totals, sums: &Sums) {
    row.signed_events += sums.events;
    totals.signed_events += sums.events;
    for (wei, micros) in [
        (
            &mut row.money.signed_fee_wei,
            &mut row.money.signed_usd_micros,
        ),
        (&mut totals.signed_fee_wei, &mut totals.signed_usd_micros),
    ] {
        *wei = wei.saturating_add(sums.fee_wei);
        add_micros(micros, sums.usd_micros);
    }
}

/// Events the totals proved stored: signed, and stored as signed.
fn add_proven(row: &mut CustomerReport, totals: &mut Totals, sums: &Sums) {
    add_signed(row, totals, sums);
    row.stored_events += sums.events;
    totals.stored_events += sums.events;
    for money in [&mut row.money.stored, &mut totals.money] {
        money.stored_fee_wei = money.stored_fee_wei.saturating_add(sums.fee_wei);
        add_micros(&mut money.stored_usd_micros, sums.usd_micros);
    }
}

fn tally(
    row: &mut CustomerReport,
    totals: &mut Totals,
    notes: &mut Notes,
    ledger: &Ledger,
    id: &str,
    entry: &Entry,
    settled_before_ns: i64,
) {
    let reason = |i: Option<u32>| i.map(|i| ledger.reasons.get(i).clone()).unwrap_or_default();
    row.signed_events += 1;
    totals.signed_events += 1;
    add(&mut row.money.signed_fee_wei, entry.fee_wei);
    add_micros(&mut row.money.signed_usd_micros, entry.usd_micros);
    add(&mut totals.signed_fee_wei, entry.fee_wei);
    add_micros(&mut totals.signed_usd_micros, entry.usd_micros);
    if entry.copies > 0 {
        row.stored_events += 1;
        totals.stored_events += 1;
        for money in [&mut row.money.stored, &mut totals.money] {
            add(&mut money.stored_fee_wei, entry.stored_fee_wei);
            add_micros(&mut money.stored_usd_micros, entry.stored_usd_micros);
        }
    }
    match status(entry, settled_before_ns) {
        Status::Billed { duplicates: true } => {
            row.money.duplicates += 1;
            row.duplicates.push(id.to_owned());
            totals.duplicate_events += 1;
        }
        Status::Billed { .. } => {}
        Status::DeadLettered => {
            row.dead_lettered.push(IdReason {
                id: id.to_owned(),
                reason: reason(entry.dead_letter),
            });
            totals.dead_lettered_events += 1;
        }
        Status::Unbillable => {
            row.unbillable.push(IdReason {
                id: id.to_owned(),
                reason: reason(entry.unbillable.map(|(_, r)| r)),
            });
            totals.unbillable_events += 1;
            for money in [&mut row.money.stored, &mut totals.money] {
                add_micros(&mut money.unbillable_usd_micros, entry.stored_usd_micros);
            }
        }
        Status::InFlight => {
            notes.in_flight += 1;
            add_micros(&mut totals.money.in_flight_usd_micros, entry.usd_micros);
        }
        Status::Missing => {
            row.missing.push(id.to_owned());
            totals.missing_events += 1;
            for money in [&mut row.money.stored, &mut totals.money] {
                add_micros(&mut money.missing_usd_micros, entry.usd_micros);
            }
        }
    }
}
