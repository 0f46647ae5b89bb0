//! A record read for its chain alone: the audit reads every record so, and
//! the collector a dead letter (it reached Kafka: a link all the same); and
//! a session's names, read only when it gets an orphan.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::contract::Contract;
use crate::decode::{decode, Decoded, Scalar, BILLABLE_TYPE};
use crate::domain::FeeWei;
use crate::link::{nanos, Fields, Link};

/// A record, as far as chains are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chained {
    /// Not a billable ticket (another event type, not JSON).
    NotTicket,
    /// A billable ticket without a chain.
    Unchained,
    Link(Link),
}

/// The fields of a record [`Chained::of`] reads.
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

    /// The session id of a record (one [`Chained::of`] or decode found
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

impl Chained {
    /// What a record's own bytes say of its chain, read without decoding
    /// the whole ticket.
    pub fn of(payload: &[u8]) -> Self {
        let Ok(record) = serde_json::from_slice::<ChainRecord>(payload) else {
            return Self::NotTicket;
        };
        if record.kind.as_deref() != Some(BILLABLE_TYPE) {
            return Self::NotTicket;
        }
        let data = record
            .data
            .filter(|raw| raw.get().starts_with('{'))
            .and_then(|raw| serde_json::from_str::<ChainData>(raw.get()).ok());
        let Some(data) = data else {
            return Self::Unchained;
        };
        let fee_wei = match Scalar::read(data.computed_fee) {
            Some(Scalar::Text(t)) => FeeWei::parse(&t).ok(),
            Some(Scalar::Number(digits)) => FeeWei::parse(digits).ok(),
            _ => None,
        }
        .map(FeeWei::get);
        let read = |raw| Scalar::read(raw);
        let (session_id, orch, seq) = (
            read(data.session_id),
            read(data.orch_address),
            read(data.sequence_number),
        );
        let (current, previous) = (read(data.current_time), read(data.previous_time));
        let fields = Fields {
            session_id: text(session_id.as_ref()),
            orch_address: text(orch.as_ref()),
            sequence_number: text(seq.as_ref()),
            current_ns: text(current.as_ref()).and_then(nanos),
            previous_time: text(previous.as_ref()),
        };
        Link::read(fields, fee_wei).map_or(Self::Unchained, Self::Link)
    }
}

/// A field as text, as decode reads an id dimension: trimmed, a number as
/// its digits.
pub(crate) fn text<'b>(value: Option<&'b Scalar>) -> Option<&'b str> {
    match value? {
        Scalar::Text(t) => Some(t.trim()).filter(|t| !t.is_empty()),
        Scalar::Number(digits) => Some(digits),
        Scalar::Other => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_lettered_ticket_is_still_a_link() {
        let payload = br#"{"id":"e","type":"create_signed_ticket","data":{"session_id":"s1","orch_address":"0xab","sequence_number":2,"current_time":"2026-09-09T00:00:20Z","previous_time":"2026-09-09T00:00:10Z","computed_fee":"12.5"}}"#;
        let Chained::Link(link) = Chained::of(payload) else {
            panic!("a link")
        };
        assert_eq!((link.seq, link.fee_wei), (2, None), "its fee does not read");
        assert_eq!(Names::read(payload, None).session_id, "s1");
    }

    #[test]
    fn a_record_read_whole_links_as_decode_links_it() {
        let payload = br#"{"type":"create_signed_ticket","data":{"session_id":"s1","sequence_number":"1","current_time":"2026-09-09T00:00:20.5Z","previous_time":"2026-09-09T00:00:10Z","computed_fee":"300"}}"#;
        let Chained::Link(link) = Chained::of(payload) else {
            panic!("a link")
        };
        assert_eq!((link.seq, link.fee_wei), (1, Some(300)));
        assert_eq!(link.current_ns - link.previous_ns, 10_500_000_000);
        let other =
            br#"{"type":"discovery_results","data":{"session_id":"s1","sequence_number":2}}"#;
        assert_eq!(Chained::of(other), Chained::NotTicket);
        let old = br#"{"type":"create_signed_ticket","data":{"auth_id":"a:b","computed_fee":"1"}}"#;
        assert_eq!(Chained::of(old), Chained::Unchained);
        let array = br#"{"type":"create_signed_ticket","data":["s1","0xab",2]}"#;
        assert_eq!(Chained::of(array), Chained::Unchained);
    }
}
