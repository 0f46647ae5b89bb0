//! One signing call's place in its session's chain, read from the fields
//! go-livepeer's remote signer writes (`server/remote_signer.go`,
//! `GenerateLivePayment`): `session_id` is `state.StateID`,
//! `sequence_number` is `state.SequenceNumber` (0 for a new session, +1 per
//! successful call), `previous_time` is the previous call's `current_time`
//! (`state.LastUpdate`, to the nanosecond; equal to `current_time` on the
//! first call).

use std::hash::{Hash, Hasher};

use std::borrow::Cow;

use chrono::DateTime;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::contract::Contract;
use crate::decode::{decode, Decoded, Scalar, BILLABLE_TYPE};
use crate::domain::FeeWei;

/// Which chain a call belongs to. `StateID` is 4 random bytes in hex
/// (`core.RandomManifestID`), so about one pair in 2^32 collides across a
/// fleet: the orchestrator address, which a state cannot change (the
/// signer refuses a mismatch), tells such sessions apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionKey(pub(crate) u64);

impl SessionKey {
    fn of(session_id: &str, orch_address: &str) -> Self {
        // Fixed keys: the same session gets the same key within a process.
        let mut hasher = std::hash::DefaultHasher::new();
        session_id.hash(&mut hasher);
        for b in orch_address.bytes() {
            hasher.write_u8(b.to_ascii_lowercase());
        }
        Self(hasher.finish())
    }
}

/// One call of a session: its number, the time it covers back to, its own
/// time, and its fee (for the session's rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub(crate) session: SessionKey,
    pub(crate) seq: u32,
    /// `previous_time`, ns since the epoch.
    pub(crate) previous_ns: i64,
    /// `current_time`, ns since the epoch.
    pub(crate) current_ns: i64,
    /// `computed_fee`; `None` when it could not be read (a dead letter).
    pub(crate) fee_wei: Option<u128>,
}

/// The raw fields a link is read from, as the record wrote them.
#[derive(Debug, Default)]
pub(crate) struct Fields<'a> {
    pub(crate) session_id: Option<Scalar<'a>>,
    pub(crate) orch_address: Option<Scalar<'a>>,
    pub(crate) sequence_number: Option<Scalar<'a>>,
    /// `current_time`, already read (decode parsed it as the signed time).
    pub(crate) current_ns: Option<i64>,
    pub(crate) previous_time: Option<Scalar<'a>>,
}

impl Link {
    /// The link the fields describe; `None` when the event carries no chain
    /// (an older signer, another producer) or one that contradicts
    /// go-livepeer's rules (a later call not after its previous one).
    pub(crate) fn read(fields: Fields, fee_wei: Option<u128>) -> Option<Self> {
        let session_id = text(fields.session_id.as_ref())?;
        let orch = text(fields.orch_address.as_ref()).unwrap_or_default();
        let seq = match fields.sequence_number? {
            Scalar::Number(digits) => digits.parse().ok()?,
            Scalar::Text(t) => t.trim().parse().ok()?,
            Scalar::Other => return None,
        };
        let current_ns = fields.current_ns?;
        let previous_ns = if seq == 0 {
            current_ns
        } else {
            nanos(fields.previous_time.as_ref())?
        };
        if seq > 0 && previous_ns >= current_ns {
            return None;
        }
        Some(Self {
            session: SessionKey::of(session_id, orch),
            seq,
            previous_ns,
            current_ns,
            fee_wei,
        })
    }

    /// What a record's own bytes say of its chain, read without decoding
    /// the whole ticket: for a record that did not decode (a dead letter
    /// reached Kafka all the same) and for the audit, which reads every
    /// record.
    pub fn of_record(payload: &[u8]) -> Chained {
        let Ok(record) = serde_json::from_slice::<ChainRecord>(payload) else {
            return Chained::NotTicket;
        };
        if record.kind.as_deref() != Some(BILLABLE_TYPE) {
            return Chained::NotTicket;
        }
        let data = record
            .data
            .filter(|raw| raw.get().starts_with('{'))
            .and_then(|raw| serde_json::from_str::<ChainData>(raw.get()).ok());
        let Some(data) = data else {
            return Chained::Unchained;
        };
        let fee_wei = match Scalar::read(data.computed_fee) {
            Some(Scalar::Text(t)) => FeeWei::parse(&t).ok(),
            Some(Scalar::Number(digits)) => FeeWei::parse(digits).ok(),
            _ => None,
        }
        .map(FeeWei::get);
        let fields = Fields {
            session_id: Scalar::read(data.session_id),
            orch_address: Scalar::read(data.orch_address),
            sequence_number: Scalar::read(data.sequence_number),
            current_ns: nanos(Scalar::read(data.current_time).as_ref()),
            previous_time: Scalar::read(data.previous_time),
        };
        Self::read(fields, fee_wei).map_or(Chained::Unchained, Chained::Link)
    }

    /// The first call of a session (`session_status` "new").
    pub(crate) fn is_root(&self) -> bool {
        self.seq == 0
    }
}

/// A record, as far as chains are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chained {
    /// Not a billable ticket (another event type, not JSON).
    NotTicket,
    /// A billable ticket without a chain.
    Unchained,
    Link(Link),
}

/// The fields of a record [`Link::of_record`] reads.
#[derive(Deserialize)]
struct ChainRecord<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChainData<'a> {
    #[serde(borrow, default)]
    session_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    orch_address: Option<&'a RawValue>,
    #[serde(borrow, default)]
    sequence_number: Option<&'a RawValue>,
    #[serde(borrow, default)]
    current_time: Option<&'a RawValue>,
    #[serde(borrow, default)]
    previous_time: Option<&'a RawValue>,
    #[serde(borrow, default)]
    computed_fee: Option<&'a RawValue>,
}

/// A session's names, read only when the session is first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    pub(crate) session_id: String,
    /// The billing subject its events are billed to, when known.
    pub(crate) customer: Option<String>,
}

impl Names {
    /// A record's session id and the customer decode bills it to (none
    /// when it does not decode).
    pub(crate) fn of(payload: &[u8], max_bytes: usize, contract: &Contract) -> Self {
        let customer = match decode(payload, max_bytes, contract) {
            Ok(Decoded::Ticket(t)) => Some(t.identity.customer_key().to_string()),
            _ => None,
        };
        Self::read(payload, customer.as_deref())
    }

    /// The session id of a record (one [`Link::of_record`] or decode found
    /// a link in), with `customer`: the record is read for that one field.
    pub(crate) fn read(payload: &[u8], customer: Option<&str>) -> Self {
        let session_id = serde_json::from_slice::<IdRecord>(payload)
            .ok()
            .and_then(|r| r.data)
            .and_then(|d| d.session_id)
            .map(|id| id.trim().to_owned())
            .unwrap_or_default();
        Self {
            session_id,
            customer: customer.map(str::to_owned),
        }
    }
}

/// A record read for its session id alone.
#[derive(Deserialize)]
struct IdRecord<'a> {
    #[serde(borrow, default)]
    data: Option<IdData<'a>>,
}

#[derive(Deserialize)]
struct IdData<'a> {
    #[serde(borrow, default)]
    session_id: Option<Cow<'a, str>>,
}

fn text<'b>(value: Option<&'b Scalar>) -> Option<&'b str> {
    match value? {
        Scalar::Text(t) => Some(t.trim()).filter(|t| !t.is_empty()),
        _ => None,
    }
}

/// An RFC 3339 time to the nanosecond, as Go's `time.Time` writes it.
fn nanos(value: Option<&Scalar>) -> Option<i64> {
    let text = text(value)?;
    DateTime::parse_from_rfc3339(text)
        .ok()?
        .timestamp_nanos_opt()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn t(s: &str) -> Option<Scalar<'_>> {
        Some(Scalar::Text(Cow::Borrowed(s)))
    }

    fn fields<'a>(seq: &'a str, current: &'a str, previous: &'a str) -> Fields<'a> {
        Fields {
            session_id: t("a1b2c3d4"),
            orch_address: t("0xAB"),
            sequence_number: Some(Scalar::Number(seq)),
            current_ns: nanos(t(current).as_ref()),
            previous_time: t(previous),
        }
    }

    #[test]
    fn a_continuing_call_links_to_its_previous_time_to_the_nanosecond() {
        let link = Link::read(
            fields(
                "3",
                "2026-09-09T00:00:10.000000002Z",
                "2026-09-09T00:00:00.000000001Z",
            ),
            Some(7),
        )
        .unwrap();
        assert_eq!(link.seq, 3);
        assert_eq!(link.current_ns - link.previous_ns, 10_000_000_001);
        assert_eq!(link.fee_wei, Some(7));
    }

    #[test]
    fn a_new_session_is_a_root_whatever_its_previous_time() {
        let link = Link::read(fields("0", "2026-09-09T00:00:00Z", "garbage"), None).unwrap();
        assert!(link.is_root());
        assert_eq!(link.previous_ns, link.current_ns);
    }

    #[test]
    fn no_chain_without_a_session_a_number_or_exact_times() {
        let mut f = fields("1", "2026-09-09T00:00:10Z", "2026-09-09T00:00:00Z");
        f.session_id = None;
        assert_eq!(Link::read(f, None), None);
        let f = fields("x", "2026-09-09T00:00:10Z", "2026-09-09T00:00:00Z");
        assert_eq!(Link::read(f, None), None);
        let f = fields("1", "2026-09-09T00:00:10Z", "1788912000000");
        assert_eq!(Link::read(f, None), None, "milliseconds cannot be matched");
        let f = fields("1", "2026-09-09T00:00:00Z", "2026-09-09T00:00:10Z");
        assert_eq!(
            Link::read(f, None),
            None,
            "a later call before its previous one"
        );
    }

    #[test]
    fn the_same_state_id_under_another_orchestrator_is_another_session() {
        let a = Link::read(fields("0", "2026-09-09T00:00:00Z", ""), None).unwrap();
        let mut other = fields("0", "2026-09-09T00:00:00Z", "");
        other.orch_address = t("0xcd");
        let b = Link::read(other, None).unwrap();
        assert_ne!(a.session, b.session);
        let mut same = fields("0", "2026-09-09T00:00:00Z", "");
        same.orch_address = t(" 0xab ");
        assert_eq!(Link::read(same, None).unwrap().session, a.session);
    }

    #[test]
    fn a_dead_lettered_ticket_is_still_a_link() {
        let payload = br#"{"id":"e","type":"create_signed_ticket","data":{"session_id":"s1","orch_address":"0xab","sequence_number":2,"current_time":"2026-09-09T00:00:20Z","previous_time":"2026-09-09T00:00:10Z","computed_fee":"12.5"}}"#;
        let Chained::Link(link) = Link::of_record(payload) else {
            panic!("a link")
        };
        assert_eq!((link.seq, link.fee_wei), (2, None), "its fee does not read");
        assert_eq!(Names::read(payload, None).session_id, "s1");
    }

    #[test]
    fn a_record_read_whole_links_as_decode_links_it() {
        let payload = br#"{"type":"create_signed_ticket","data":{"session_id":"s1","sequence_number":"1","current_time":"2026-09-09T00:00:20.5Z","previous_time":"2026-09-09T00:00:10Z","computed_fee":"300"}}"#;
        let Chained::Link(link) = Link::of_record(payload) else {
            panic!("a link")
        };
        assert_eq!((link.seq, link.fee_wei), (1, Some(300)));
        assert_eq!(link.current_ns - link.previous_ns, 10_500_000_000);
        let other =
            br#"{"type":"discovery_results","data":{"session_id":"s1","sequence_number":2}}"#;
        assert_eq!(Link::of_record(other), Chained::NotTicket);
        let old = br#"{"type":"create_signed_ticket","data":{"auth_id":"a:b","computed_fee":"1"}}"#;
        assert_eq!(Link::of_record(old), Chained::Unchained);
        let array = br#"{"type":"create_signed_ticket","data":["s1","0xab",2]}"#;
        assert_eq!(Link::of_record(array), Chained::Unchained);
    }
}
