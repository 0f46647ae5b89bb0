//! What an audit reads, how it proves the range, and what it compares.

use std::sync::Arc;
use std::time::Duration;

use super::accounts::Accounts;
use super::range::TimeRange;
use super::source::SourceSpec;
use crate::billing::EventTime;
use crate::contract::Contract;
use crate::domain::EthUsdPrice;
use crate::openmeter::OpenMeterClient;

/// How the audit proves the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Totals per customer and window from OpenMeter's meters; events read
    /// only where they differ.
    #[default]
    Totals,
    /// Every stored event of the range read back and matched (the mode
    /// before totals; its cost grows with every event).
    Events,
}

/// What to audit and how.
#[derive(Debug, Clone)]
pub(crate) struct AuditConfig {
    pub(crate) range: TimeRange,
    pub(crate) mode: Mode,
    /// Compare the `id_fingerprint` meter too (off for ranges sent before
    /// events carried one, or by a collector that sends none).
    pub(crate) fingerprints: bool,
    /// The collector's `EVENT_TIME`: where it sent events older than their
    /// subscription.
    pub(crate) event_time: EventTime,
    /// Events younger than this may still be on their way to OpenMeter.
    pub(crate) settle: Duration,
    /// OpenMeter's `collection.interval`: usage arriving this long after its
    /// period ended is never invoiced.
    pub(crate) collection_window: Duration,
    pub(crate) max_event_bytes: usize,
    /// The pipeline's contract, so records map as they were sent.
    pub(crate) contract: Contract,
    /// Draw a progress bar when stderr is a terminal.
    pub(crate) progress: bool,
}

/// An audit: the source, the dead letters and OpenMeter.
#[derive(Debug, Clone)]
pub(crate) struct Audit {
    pub(crate) client: OpenMeterClient,
    /// The price signed micros are computed at (stored events keep theirs).
    pub(crate) price: EthUsdPrice,
    pub(crate) source: SourceSpec,
    /// A dead-letter file or the DLQ topic.
    pub(crate) dead_letters: Option<SourceSpec>,
    pub(crate) config: AuditConfig,
    /// Customers and subscriptions read earlier (the continuous audit's),
    /// else read by each totals audit.
    pub(crate) accounts: Option<Arc<Accounts>>,
}
