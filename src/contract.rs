//! The event contract: which id, billing subject and amounts a ticket is
//! sent with. The defaults follow today's producers and collectors (see the
//! README, "How an event is billed"); each setting keeps one of the seed's
//! behaviours for operators whose OpenMeter data was made that way.

use crate::domain::{Amounts, SubjectRule};

/// Which id a ticket is sent under (`EVENT_ID`). OpenMeter dedupes on
/// `(source, id)`, so the id decides what counts as the same ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum IdScheme {
    /// The envelope `id` (go-livepeer's `uuid.New()` per event, carried in
    /// the record, so stable across redelivery), else `data.request_id`,
    /// else a digest of the record's bytes.
    #[default]
    Envelope,
    /// The seed's: `data.request_id` first. It is 8 random hex characters
    /// per signing call (`core.RandomManifestID()`), so about 116 pairs of
    /// distinct tickets per million share one and OpenMeter keeps only the
    /// first of each pair. Only for a cut-over from the original stack.
    #[value(name = "request_id", alias = "request-id")]
    RequestId,
}

impl IdScheme {
    /// The other scheme, whose ids the audit also recognises.
    pub fn other(self) -> Self {
        match self {
            Self::Envelope => Self::RequestId,
            Self::RequestId => Self::Envelope,
        }
    }
}

/// The three settings together; decode, map, `/ensure` and the audit read
/// the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Contract {
    pub ids: IdScheme,
    pub subjects: SubjectRule,
    pub amounts: Amounts,
}

impl Contract {
    /// The seed's contract: `request_id` ids, the whole `auth_id` as the
    /// subject, whole micros rounded half-up.
    pub fn seed() -> Self {
        Self {
            ids: IdScheme::RequestId,
            subjects: SubjectRule::AuthId,
            amounts: Amounts::Rounded,
        }
    }
}
