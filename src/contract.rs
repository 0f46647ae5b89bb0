//! The event contract: which id, billing subject and amounts a ticket is
//! sent with. The defaults follow today's producers and collectors (see the
//! README, "How an event is billed"); each setting keeps one of the seed's
//! behaviours for operators whose OpenMeter data was made that way.

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

/// Which rule picks the billing subject (`BILLING_SUBJECT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SubjectRule {
    /// Today's collectors (livepeer/clearinghouse and pymthouse/pymthouse
    /// `collector.yaml`): an `owner:` payer is the bare owner, an `eu_` payer
    /// its end-user wallet, `payer#actor` bills the payer; else the whole
    /// `auth_id`.
    #[default]
    Upstream,
    /// The seed's: the whole `auth_id` is always the subject, for operators
    /// whose customers were made that way.
    #[value(name = "auth_id", alias = "auth-id")]
    AuthId,
}

/// How amounts are written (`USD_MICROS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Amounts {
    /// Today's collectors: the exact fractional micros ("no per-ticket
    /// ceil; read paths ceil once"), `fee_wei` and `eth_usd_price` as
    /// numbers so meters can SUM them.
    #[default]
    Exact,
    /// The seed's: whole micros rounded half-up per ticket, `fee_wei` and
    /// `eth_usd_price` as strings.
    Rounded,
}

/// The three settings together; decode, map and the audit read the same
/// value, and `/ensure` its `subjects` (`serve` and the `ensure` command
/// read only `BILLING_SUBJECT`).
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
