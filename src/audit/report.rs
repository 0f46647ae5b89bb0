//! The audit report: what was signed, stored, missing, unbillable and
//! dead-lettered, per customer and in total; rendered as a table, as the
//! JSON other tools script against, or as CSV for finance.
//!
//! Money is exact: wei and micros are decimal strings in JSON and CSV
//! (sums exceed 2^53, where JSON numbers stop being exact in most readers).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use ethnum::U256;
use serde::{Serialize, Serializer};

use super::ledger::{add, add_micros, Entry, Ledger, Sums};
use super::range::{rfc3339, TimeRange};
use crate::domain::{EthUsdPrice, UsdMicros};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
    Csv,
}

/// The whole report; its JSON form is the contract of `--format json`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    #[serde(serialize_with = "as_rfc3339")]
    pub(crate) from: DateTime<Utc>,
    #[serde(serialize_with = "as_rfc3339")]
    pub(crate) to: DateTime<Utc>,
    pub(crate) totals: Totals,
    pub(crate) customers: Vec<CustomerReport>,
    pub(crate) repairs: Vec<RepairAction>,
    /// Calls the signer made and never published (`audit::gaps`).
    pub(crate) chain: super::gaps::GapReport,
    /// How the totals proved the range (absent in the event-by-event mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) proof: Option<Proof>,
    #[serde(skip)]
    pub(crate) notes: Notes,
}

/// How the totals mode proved what it did not read event by event.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Proof {
    /// The meters compared per customer and window.
    pub(crate) meters: Vec<&'static str>,
    /// Per window size, coarsest first: windows compared, those whose
    /// totals differed (read at the next size, or event by event below a
    /// minute), and the meter queries it took.
    pub(crate) windows: Vec<Level>,
    /// Signed events in windows the totals proved.
    pub(crate) events_proven: u64,
    /// Signed events matched one by one (windows that differed, dead
    /// letters, events billed after the range).
    pub(crate) events_matched: u64,
    /// Pages of stored events read: the differing minutes listed, and the
    /// lookups by id.
    pub(crate) event_pages: u64,
    /// Subjects of signed tickets that no live customer has (their windows
    /// are read event by event).
    pub(crate) subjects_without_customer: u64,
    /// What the totals cannot rule out, in numbers.
    pub(crate) residual_risk: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Level {
    pub(crate) window: &'static str,
    pub(crate) compared: u64,
    pub(crate) differing: u64,
    pub(crate) queries: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Totals {
    pub(crate) signed_events: u64,
    #[serde(serialize_with = "as_decimal")]
    pub(crate) signed_fee_wei: U256,
    #[serde(serialize_with = "as_decimal")]
    pub(crate) signed_usd_micros: UsdMicros,
    /// Σ micros sent − Σ exact micros: what per-ticket rounding
    /// (`USD_MICROS=rounded`) added (or, negative, lost); 0 when exact.
    pub(crate) rounding_drift_usd_micros: String,
    pub(crate) stored_events: u64,
    pub(crate) missing_events: u64,
    pub(crate) unexpected_events: u64,
    pub(crate) duplicate_events: u64,
    pub(crate) unbillable_events: u64,
    pub(crate) dead_lettered_events: u64,
    /// µUSD of signed events not proven billed: missing (as signed),
    /// unbillable (as stored) and in flight; dead letters have their reasons.
    #[serde(serialize_with = "as_decimal")]
    pub(crate) unproven_usd_micros: UsdMicros,
    #[serde(skip)]
    pub(crate) money: StoredMoney,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct CustomerReport {
    pub(crate) customer: String,
    pub(crate) signed_events: u64,
    pub(crate) stored_events: u64,
    pub(crate) missing: Vec<String>,
    pub(crate) unbillable: Vec<IdReason>,
    pub(crate) dead_lettered: Vec<IdReason>,
    /// Signed events with more than one billable copy.
    pub(crate) duplicates: Vec<String>,
    /// As in [`Totals`], for this customer.
    pub(crate) rounding_drift_usd_micros: String,
    #[serde(skip)]
    pub(crate) money: CustomerMoney,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct IdReason {
    pub(crate) id: String,
    pub(crate) reason: String,
}

/// One repair step, or with `--dry-run` one that would be taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RepairAction {
    pub(crate) id: String,
    /// The id it was (or would be) sent under.
    pub(crate) sent_as: String,
    pub(crate) action: String,
}

/// What the table and CSV show beyond the JSON contract.
#[derive(Debug, Clone, Default)]
pub(crate) struct StoredMoney {
    pub(crate) stored_fee_wei: U256,
    pub(crate) stored_usd_micros: UsdMicros,
    pub(crate) unbillable_usd_micros: UsdMicros,
    pub(crate) missing_usd_micros: UsdMicros,
    pub(crate) in_flight_usd_micros: UsdMicros,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct CustomerMoney {
    pub(crate) signed_fee_wei: U256,
    pub(crate) signed_usd_micros: UsdMicros,
    pub(crate) stored: StoredMoney,
    pub(crate) duplicates: u64,
}

/// Context for people reading the table.
#[derive(Debug, Clone, Default)]
pub(crate) struct Notes {
    pub(crate) source: String,
    pub(crate) dead_letters: String,
    /// Missing events younger than the settle time: not counted missing.
    pub(crate) in_flight: u64,
    pub(crate) settle: String,
    pub(crate) unexpected_sample: Vec<String>,
    pub(crate) price: String,
    /// Why a repair step failed, by event id.
    pub(crate) repair_errors: Vec<(String, String)>,
}

/// What became of one signed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Billed { duplicates: bool },
    DeadLettered,
    Unbillable,
    InFlight,
    Missing,
}

/// `settled_before_ns`: events signed later may still be on their way.
pub(crate) fn status(entry: &Entry, settled_before_ns: i64) -> Status {
    if entry.billable_copies > 0 {
        Status::Billed {
            duplicates: entry.billable_copies > 1,
        }
    } else if entry.dead_letter.is_some() {
        Status::DeadLettered
    } else if entry.copies > 0 {
        Status::Unbillable
    } else if entry.signed_ns > settled_before_ns {
        Status::InFlight
    } else {
        Status::Missing
    }
}

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

    /// Missing, unbillable or double-billed events, and gaps in the
    /// signer's chains: anything but 0 fails.
    pub(crate) fn discrepancies(&self) -> u64 {
        self.totals.missing_events
            + self.totals.unbillable_events
            + self.totals.duplicate_events
            + self.chain.count()
    }

    pub(crate) fn render(&self, format: Format) -> String {
        match format {
            Format::Json => serde_json::to_string_pretty(self).unwrap_or_default() + "\n",
            Format::Csv => self.csv(),
            Format::Table => self.table(),
        }
    }

    /// One line per customer, then the totals: what both the table and
    /// the CSV show.
    fn rows(&self) -> Vec<Row> {
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

    fn csv(&self) -> String {
        let mut writer = csv::Writer::from_writer(Vec::new());
        let _ = writer.write_record(CSV_HEADER);
        for row in self.rows() {
            let _ = writer.write_record(row.csv());
        }
        let bytes = writer.into_inner().unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default() + &self.chain.csv()
    }

    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "audit of signed time {} .. {}  (source: {}; dead letters: {}; price {})",
            rfc3339(self.from),
            rfc3339(self.to),
            self.notes.source,
            self.notes.dead_letters,
            self.notes.price
        );
        out.push('\n');
        let mut rows = vec![TABLE_HEADER.map(str::to_owned).to_vec()];
        rows.extend(self.rows().iter().map(Row::table));
        let t = &self.totals;
        out.push_str(&align(&rows));
        let _ = writeln!(
            out,
            "\nunexpected (stored, not signed in range): {}   duplicates (billed twice): {}   in flight (younger than settle {}): {}",
            t.unexpected_events, t.duplicate_events, self.notes.settle, self.notes.in_flight
        );
        self.details(&mut out);
        self.chain.table(&mut out);
        if let Some(proof) = &self.proof {
            proof.lines(&mut out);
        }
        let verdict = if self.discrepancies() == 0 {
            "clean: every signed event is stored and billable, or dead-lettered with its reason"
                .to_owned()
        } else {
            format!("{} discrepancies", self.discrepancies())
        };
        let _ = writeln!(out, "\nresult: {verdict}");
        out
    }

    fn details(&self, out: &mut String) {
        let mut section = |title: &str, lines: Vec<String>| {
            if !lines.is_empty() {
                let _ = writeln!(out, "\n{title}:");
                for line in lines {
                    let _ = writeln!(out, "  {line}");
                }
            }
        };
        let each = |f: &dyn Fn(&CustomerReport) -> Vec<String>| -> Vec<String> {
            self.customers.iter().flat_map(f).collect()
        };
        section(
            "missing (signed, never stored)",
            each(&|c| {
                c.missing
                    .iter()
                    .map(|id| format!("{}  {id}", c.customer))
                    .collect()
            }),
        );
        section(
            "stored but not billable",
            each(&|c| {
                c.unbillable
                    .iter()
                    .map(|u| format!("{}  {}  {}", c.customer, u.id, u.reason))
                    .collect()
            }),
        );
        section(
            "billed twice",
            each(&|c| {
                c.duplicates
                    .iter()
                    .map(|id| format!("{}  {id}", c.customer))
                    .collect()
            }),
        );
        section(
            "dead letters (never sent)",
            each(&|c| {
                c.dead_lettered
                    .iter()
                    .map(|u| format!("{}  {}  {}", c.customer, u.id, u.reason))
                    .collect()
            }),
        );
        section(
            "unexpected (first ids)",
            self.notes.unexpected_sample.clone(),
        );
        let errors: BTreeMap<&str, &str> = self
            .notes
            .repair_errors
            .iter()
            .map(|(id, e)| (id.as_str(), e.as_str()))
            .collect();
        section(
            "repairs",
            self.repairs
                .iter()
                .map(|r| {
                    let why = errors.get(r.id.as_str()).map(|e| format!("  ({e})"));
                    format!(
                        "{}  {}  as {}{}",
                        r.action,
                        r.id,
                        r.sent_as,
                        why.unwrap_or_default()
                    )
                })
                .collect(),
        );
    }
}

impl Proof {
    fn lines(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nproof by totals (meters: {}):",
            self.meters.join(", ")
        );
        for level in &self.windows {
            let _ = writeln!(
                out,
                "  {:<7} windows compared {:>9}   differing {:>7}   meter queries {:>5}",
                level.window, level.compared, level.differing, level.queries
            );
        }
        let _ = writeln!(
            out,
            "  events proven by totals: {}   matched one by one: {}   pages of stored events read: {}",
            self.events_proven, self.events_matched, self.event_pages
        );
        let _ = writeln!(out, "  residual risk: {}", self.residual_risk);
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

const CSV_HEADER: [&str; 13] = [
    "customer",
    "signed_events",
    "signed_fee_wei",
    "signed_usd_micros",
    "stored_events",
    "stored_fee_wei",
    "stored_usd_micros",
    "missing_events",
    "missing_usd_micros",
    "unbillable_events",
    "unbillable_usd_micros",
    "dead_lettered_events",
    "duplicate_events",
];

/// One customer's line (or the totals), in whole events and exact money.
struct Row {
    customer: String,
    signed: u64,
    stored: u64,
    money: CustomerMoney,
    missing: u64,
    unbillable: u64,
    dead_lettered: u64,
}

impl Row {
    fn csv(&self) -> Vec<String> {
        let m = &self.money;
        vec![
            self.customer.clone(),
            self.signed.to_string(),
            m.signed_fee_wei.to_string(),
            m.signed_usd_micros.to_string(),
            self.stored.to_string(),
            m.stored.stored_fee_wei.to_string(),
            m.stored.stored_usd_micros.to_string(),
            self.missing.to_string(),
            m.stored.missing_usd_micros.to_string(),
            self.unbillable.to_string(),
            m.stored.unbillable_usd_micros.to_string(),
            self.dead_lettered.to_string(),
            m.duplicates.to_string(),
        ]
    }

    fn table(&self) -> Vec<String> {
        let m = &self.money;
        vec![
            self.customer.clone(),
            self.signed.to_string(),
            m.signed_fee_wei.to_string(),
            m.signed_usd_micros.to_string(),
            self.stored.to_string(),
            m.stored.stored_usd_micros.to_string(),
            self.missing.to_string(),
            self.unbillable.to_string(),
            self.dead_lettered.to_string(),
        ]
    }
}

const TABLE_HEADER: [&str; 9] = [
    "customer",
    "signed",
    "signed fee (wei)",
    "signed µUSD",
    "stored",
    "stored µUSD",
    "missing",
    "unbillable",
    "dead-lettered",
];

/// Left-aligns the first column, right-aligns the numbers.
fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn as_rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

fn as_decimal<S: Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}
