//! One signing call's place in its session's chain, read from the fields
//! go-livepeer's remote signer writes (`server/remote_signer.go`,
//! `GenerateLivePayment`): `session_id` is `state.StateID`,
//! `sequence_number` is `state.SequenceNumber` (0 for a new session, +1 per
//! successful call), `previous_time` is the previous call's `current_time`
//! (`state.LastUpdate`, to the nanosecond; equal to `current_time` on the
//! first call).

use std::hash::{Hash, Hasher};

use chrono::DateTime;
use serde_json::Value;

use crate::decode::{Scalar, BILLABLE_TYPE};

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
pub(crate) struct Link {
    pub(crate) session: SessionKey,
    pub(crate) seq: u32,
    /// `previous_time`, ns since the epoch.
    pub(crate) previous_ns: i64,
    /// `current_time`, ns since the epoch.
    pub(crate) current_ns: i64,
    /// `computed_fee`; 0 when it could not be read.
    pub(crate) fee_wei: u128,
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
    pub(crate) fn read(fields: Fields, fee_wei: u128) -> Option<Self> {
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

    /// The link of a record that did not decode as a ticket (a dead
    /// letter: it reached Kafka, so it is a link all the same), read from
    /// its JSON; its fee counts as 0.
    pub(crate) fn salvage(payload: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(payload).ok()?;
        if value["type"].as_str() != Some(BILLABLE_TYPE) {
            return None;
        }
        let data = &value["data"];
        let field = |name: &str| Scalar::of(&data[name]);
        let fields = Fields {
            session_id: field("session_id"),
            orch_address: field("orch_address"),
            sequence_number: field("sequence_number"),
            current_ns: nanos(field("current_time").as_ref()),
            previous_time: field("previous_time"),
        };
        Self::read(fields, 0)
    }

    /// The first call of a session (`session_status` "new").
    pub(crate) fn is_root(&self) -> bool {
        self.seq == 0
    }
}

/// A session's names, read only when the session is first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    pub(crate) session_id: String,
    /// The billing subject its events are billed to, when known.
    pub(crate) customer: Option<String>,
}

impl Names {
    /// The session id of a record (`Link::read` or `Link::salvage` found
    /// one there), with the customer decode gave it.
    pub(crate) fn read(payload: &[u8], customer: Option<&str>) -> Self {
        let session_id = serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| v["data"]["session_id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        Self {
            session_id,
            customer: customer.map(str::to_owned),
        }
    }
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
            7,
        )
        .unwrap();
        assert_eq!(link.seq, 3);
        assert_eq!(link.current_ns - link.previous_ns, 10_000_000_001);
        assert_eq!(link.fee_wei, 7);
    }

    #[test]
    fn a_new_session_is_a_root_whatever_its_previous_time() {
        let link = Link::read(fields("0", "2026-09-09T00:00:00Z", "garbage"), 1).unwrap();
        assert!(link.is_root());
        assert_eq!(link.previous_ns, link.current_ns);
    }

    #[test]
    fn no_chain_without_a_session_a_number_or_exact_times() {
        let mut f = fields("1", "2026-09-09T00:00:10Z", "2026-09-09T00:00:00Z");
        f.session_id = None;
        assert_eq!(Link::read(f, 0), None);
        let f = fields("x", "2026-09-09T00:00:10Z", "2026-09-09T00:00:00Z");
        assert_eq!(Link::read(f, 0), None);
        let f = fields("1", "2026-09-09T00:00:10Z", "1788912000000");
        assert_eq!(Link::read(f, 0), None, "milliseconds cannot be matched");
        let f = fields("1", "2026-09-09T00:00:00Z", "2026-09-09T00:00:10Z");
        assert_eq!(Link::read(f, 0), None, "a later call before its previous one");
    }

    #[test]
    fn the_same_state_id_under_another_orchestrator_is_another_session() {
        let a = Link::read(fields("0", "2026-09-09T00:00:00Z", ""), 0).unwrap();
        let mut other = fields("0", "2026-09-09T00:00:00Z", "");
        other.orch_address = t("0xcd");
        let b = Link::read(other, 0).unwrap();
        assert_ne!(a.session, b.session);
        let mut same = fields("0", "2026-09-09T00:00:00Z", "");
        same.orch_address = t(" 0xab ");
        assert_eq!(Link::read(same, 0).unwrap().session, a.session);
    }

    #[test]
    fn a_dead_lettered_ticket_is_still_a_link() {
        let payload = br#"{"id":"e","type":"create_signed_ticket","data":{"session_id":"s1","orch_address":"0xab","sequence_number":2,"current_time":"2026-09-09T00:00:20Z","previous_time":"2026-09-09T00:00:10Z","computed_fee":"12.5"}}"#;
        let link = Link::salvage(payload).unwrap();
        assert_eq!((link.seq, link.fee_wei), (2, 0));
        assert_eq!(Names::read(payload, None).session_id, "s1");
        let other = br#"{"type":"discovery_results","data":{"session_id":"s1","sequence_number":2}}"#;
        assert_eq!(Link::salvage(other), None);
    }
}
