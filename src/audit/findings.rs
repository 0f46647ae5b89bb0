//! What an audit found, kept so a repair can build on it.

use std::collections::HashMap;
use std::sync::Arc;

use super::gaps::AuditGaps;
use super::ledger::Ledger;
use super::report::{Notes, Proof};
use super::verdict::Unbillable;
use crate::billing::BillingTerms;
use crate::openmeter::model::IngestedEvent;

/// The audit's findings, kept so a repair can build on them.
pub(crate) struct Findings {
    pub(crate) ledger: Ledger,
    pub(super) gaps: AuditGaps,
    pub(super) terms: HashMap<String, Arc<[BillingTerms]>>,
    pub(super) notes: Notes,
    pub(super) proof: Option<Proof>,
    /// Pages of stored events read (listings and lookups by id).
    pub(super) pages: u64,
}

/// One stored copy found by id, with its verdict.
pub(super) struct Found {
    /// The signed event it is a copy of.
    pub(super) key: String,
    pub(super) derived: bool,
    pub(super) event: IngestedEvent,
    pub(super) verdict: Result<(), Unbillable>,
}
