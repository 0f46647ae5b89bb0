//! The audit's working memory: one compact entry per signed event it
//! matches one by one (about 150 bytes with its id, plus its id under the
//! other `EVENT_ID` scheme both ways; every event of the range in the
//! event-by-event mode, only those of the windows whose totals differ in
//! the totals mode), and per customer the sums of the events its totals
//! proved; customers and reasons interned. Payloads are never kept: a
//! repair reads the source again for the few events it resends.

use std::collections::{HashMap, HashSet};

use ethnum::U256;

use super::verdict::UnbillableKind;
use crate::domain::UsdMicros;

/// A signed event and what OpenMeter holds of it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) customer: u32,
    /// Signed time, ns since the epoch.
    pub(crate) signed_ns: i64,
    pub(crate) fee_wei: u128,
    /// As sent: exact, or rounded under `USD_MICROS=rounded`.
    pub(crate) usd_micros: UsdMicros,
    /// What the first stored copy says.
    pub(crate) stored_fee_wei: u128,
    pub(crate) stored_usd_micros: UsdMicros,
    /// Stored copies: under its own id and under its derived repair id.
    pub(crate) copies: u8,
    pub(crate) billable_copies: u8,
    /// Why no copy is billable: what a repair can do, and the interned
    /// reason in words.
    pub(crate) unbillable: Option<(UnbillableKind, u32)>,
    /// Interned reason it was dead-lettered.
    pub(crate) dead_letter: Option<u32>,
}

impl Entry {
    pub(crate) fn forget_copies(&mut self) {
        self.copies = 0;
        self.billable_copies = 0;
        self.unbillable = None;
        self.stored_fee_wei = 0;
        self.stored_usd_micros = UsdMicros::ZERO;
    }
}

/// A dead letter whose event is not among the signed ones (it could not be
/// decoded, or its fee could not be converted).
#[derive(Debug, Clone)]
pub(crate) struct Letter {
    pub(crate) customer: u32,
    pub(crate) id: String,
    pub(crate) reason: u32,
}

/// Strings stored once, referred to by index.
#[derive(Debug, Default)]
pub(crate) struct Interner<T> {
    values: Vec<T>,
    index: HashMap<T, u32>,
}

impl<T: Clone + Eq + std::hash::Hash> Interner<T> {
    pub(crate) fn intern(&mut self, value: T) -> u32 {
        if let Some(&i) = self.index.get(&value) {
            return i;
        }
        let i = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        self.values.push(value.clone());
        self.index.insert(value, i);
        i
    }

    pub(crate) fn get(&self, i: u32) -> &T {
        &self.values[i as usize]
    }
}

impl Interner<Box<str>> {
    /// Like [`Interner::intern`], allocating only for a new string.
    pub(crate) fn intern_str(&mut self, value: &str) -> u32 {
        match self.index.get(value) {
            Some(&i) => i,
            None => self.intern(Box::from(value)),
        }
    }
}

/// Sums of signed events the audit did not match one by one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sums {
    pub(crate) events: u64,
    pub(crate) fee_wei: U256,
    /// As sent.
    pub(crate) usd_micros: UsdMicros,
}

impl Sums {
    pub(crate) fn add(&mut self, fee_wei: u128, usd_micros: UsdMicros) {
        self.events += 1;
        add(&mut self.fee_wei, fee_wei);
        add_micros(&mut self.usd_micros, usd_micros);
    }
}

/// Stored events of our source that match no signed event in the range.
#[derive(Debug, Default)]
pub(crate) struct Unexpected {
    pub(crate) count: u64,
    /// The first few ids, for the table.
    pub(crate) sample: Vec<String>,
}

/// How many unexpected ids the table names.
const UNEXPECTED_SAMPLE: usize = 20;

impl Unexpected {
    pub(crate) fn add(&mut self, id: &str) {
        self.count += 1;
        if self.sample.len() < UNEXPECTED_SAMPLE {
            self.sample.push(id.to_owned());
        }
    }
}

/// Everything the audit learnt, before it becomes a report.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Customer keys (the `auth_id`), or a placeholder for letters without one.
    pub(crate) customers: Interner<Box<str>>,
    pub(crate) reasons: Interner<String>,
    pub(crate) entries: HashMap<Box<str>, Entry>,
    /// The id the other scheme gives each signed event, and back: events
    /// stored before a cut-over of `EVENT_ID` match under it.
    others: HashMap<Box<str>, Box<str>>,
    aliases: HashMap<Box<str>, Box<str>>,
    pub(crate) letters: Vec<Letter>,
    letter_ids: HashSet<Box<str>>,
    pub(crate) unexpected: Unexpected,
    /// Source records read, and signed events seen twice in the source.
    pub(crate) records_read: u64,
    pub(crate) redelivered: u64,
    /// Per customer: events the meters' totals proved stored, and billed
    /// by their subscriptions (totals mode).
    pub(crate) proven: HashMap<u32, Sums>,
    /// Per customer: events younger than the settle time, not audited yet
    /// (totals mode; the event-by-event mode keeps them as entries).
    pub(crate) in_flight: HashMap<u32, Sums>,
}

impl Ledger {
    /// Records a signed event; a second record with the same id (a
    /// redelivery) is counted once, as OpenMeter's dedupe does.
    pub(crate) fn sign(&mut self, id: &str, other_id: &str, customer: &str, entry: Entry) {
        if self.entries.contains_key(id) {
            self.redelivered += 1;
            return;
        }
        if other_id != id {
            self.others.insert(Box::from(id), Box::from(other_id));
            self.aliases
                .entry(Box::from(other_id))
                .or_insert_with(|| Box::from(id));
        }
        let customer = self.customers.intern(Box::from(customer));
        self.entries
            .insert(Box::from(id), Entry { customer, ..entry });
    }

    pub(crate) fn dead_letter(&mut self, id: &str, customer: &str, reason: String) {
        let reason = self.reasons.intern(reason);
        if let Some(entry) = self.entries.get_mut(id) {
            entry.dead_letter.get_or_insert(reason);
            return;
        }
        if !self.letter_ids.insert(Box::from(id)) {
            return;
        }
        let customer = self.customers.intern(Box::from(customer));
        self.letters.push(Letter {
            customer,
            id: id.to_owned(),
            reason,
        });
    }

    /// The signed event a stored id stands for: itself, or the event whose
    /// other-scheme id it is.
    pub(crate) fn resolve(&self, id: String) -> String {
        if self.entries.contains_key(id.as_str()) {
            return id;
        }
        match self.aliases.get(id.as_str()) {
            Some(primary) => primary.to_string(),
            None => id,
        }
    }

    /// The customer key (billing subject) signed event `id` bills.
    pub(crate) fn customer_of(&self, id: &str) -> Option<&str> {
        let entry = self.entries.get(id)?;
        Some(self.customers.get(entry.customer))
    }

    /// The id the other scheme gives signed event `id`.
    pub(crate) fn other_id(&self, id: &str) -> Option<&str> {
        self.others.get(id).map(|o| &**o)
    }

    /// Whether `id` was dead-lettered without being a signed event.
    pub(crate) fn is_letter(&self, id: &str) -> bool {
        self.letter_ids.contains(id)
    }

    /// Records one stored copy of signed event `id` (found by its own or
    /// its derived id). Returns false when `id` is not a signed event.
    pub(crate) fn stored(&mut self, id: &str, copy: StoredCopy) -> bool {
        let reason = copy
            .verdict
            .err()
            .map(|(kind, r)| (kind, self.reasons.intern(r)));
        let Some(entry) = self.entries.get_mut(id) else {
            return false;
        };
        if entry.copies == 0 {
            entry.stored_fee_wei = copy.fee_wei;
            entry.stored_usd_micros = copy.usd_micros;
        }
        entry.copies = entry.copies.saturating_add(1);
        match reason {
            None => entry.billable_copies = entry.billable_copies.saturating_add(1),
            Some(reason) => {
                entry.unbillable.get_or_insert(reason);
            }
        }
        true
    }
}

/// One stored copy as the ledger needs it.
#[derive(Debug, Clone)]
pub(crate) struct StoredCopy {
    pub(crate) fee_wei: u128,
    pub(crate) usd_micros: UsdMicros,
    pub(crate) verdict: Result<(), (UnbillableKind, String)>,
}

/// Exact sums: Σ wei over many events exceeds 2^128.
pub(crate) fn add(sum: &mut U256, value: u128) {
    *sum = sum.saturating_add(U256::from(value));
}

/// Exact sums of micros (past 2^256 atoms the sum stops growing).
pub(crate) fn add_micros(sum: &mut UsdMicros, value: UsdMicros) {
    *sum = sum.checked_add(value).unwrap_or(*sum);
}
