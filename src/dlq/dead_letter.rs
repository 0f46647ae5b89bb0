//! A dead letter: the record that will not be billed, and why.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::source::Record;

/// Why a record was dead-lettered, as a low-cardinality class: the
/// `ticketmeter.dlq.kind` header, the dead-letter file's `kind` and the
/// `reason` label of `events_dead_lettered_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterKind {
    /// Not a readable event envelope (empty, too large, too deep, no type).
    Malformed,
    /// A ticket whose data cannot be billed as sent.
    InvalidData,
    /// No usable `auth_id`.
    Identity,
    /// A fee that is not a non-negative integer of wei, or overflows.
    Fee,
    /// OpenMeter rejected the event itself.
    Rejected,
    /// OpenMeter refused to find or create the customer.
    CustomerRejected,
    /// OpenMeter refused the customer's subscription or billing setup.
    SubscriptionRefused,
}

impl DeadLetterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::InvalidData => "invalid_data",
            Self::Identity => "identity",
            Self::Fee => "fee",
            Self::Rejected => "rejected",
            Self::CustomerRejected => "customer_rejected",
            Self::SubscriptionRefused => "subscription_refused",
        }
    }
}

impl fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record that will not be billed, and why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub record: Record,
    pub reason: String,
    pub kind: DeadLetterKind,
    pub at: DateTime<Utc>,
}

impl DeadLetter {
    pub fn new(record: Record, kind: DeadLetterKind, reason: impl Into<String>) -> Self {
        Self {
            record,
            reason: reason.into(),
            kind,
            at: Utc::now(),
        }
    }
}
