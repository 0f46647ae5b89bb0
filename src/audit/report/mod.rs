//! The audit report: what was signed, stored, missing, unbillable and
//! dead-lettered, per customer and in total; rendered as a table, as the
//! JSON other tools script against, or as CSV for finance.
//!
//! Money is exact: wei and micros are decimal strings in JSON and CSV
//! (sums exceed 2^53, where JSON numbers stop being exact in most readers).
//!
//! The model is here; [`build`] makes it from the ledger, and [`table`],
//! [`mod@csv`] and the JSON of `serde` render it (the table and the CSV from
//! the same [`rows`]).

mod build;
mod csv;
mod rows;
mod table;

use chrono::{DateTime, Utc};
use ethnum::U256;
use serde::{Serialize, Serializer};

use crate::audit::gaps::GapReport;
use crate::audit::ledger::Entry;
use crate::audit::range::rfc3339;
use crate::domain::UsdMicros;

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Format {
    #[default]
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
    pub(crate) chain: GapReport,
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
    pub(crate) action: Action,
}

/// What a repair did with an event, or with `--dry-run` would do; written
/// in snake case (the JSON contract, the table, the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Action {
    /// Resent under its own id, and now billable.
    Resent,
    /// Resent as a derived copy, which is now billable.
    ResentDerived,
    /// Resent, and still not billable.
    NotRecovered,
    /// Could not be resent (the reason is in the report's notes).
    Failed,
    WouldResend,
    WouldEnsureAndResend,
    WouldResendDerived,
}

impl Action {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Resent => "resent",
            Self::ResentDerived => "resent_derived",
            Self::NotRecovered => "not_recovered",
            Self::Failed => "failed",
            Self::WouldResend => "would_resend",
            Self::WouldEnsureAndResend => "would_ensure_and_resend",
            Self::WouldResendDerived => "would_resend_derived",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
}

fn as_rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

fn as_decimal<S: Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[cfg(test)]
mod tests {
    use super::Action;

    #[test]
    fn a_repair_action_is_written_as_it_is_serialised() {
        for action in [
            Action::Resent,
            Action::ResentDerived,
            Action::NotRecovered,
            Action::Failed,
            Action::WouldResend,
            Action::WouldEnsureAndResend,
            Action::WouldResendDerived,
        ] {
            assert_eq!(
                serde_json::to_value(action).unwrap(),
                serde_json::Value::from(action.to_string())
            );
        }
    }
}
