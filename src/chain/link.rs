//! One signing call's place in its session's chain, read from the fields
//! go-livepeer's remote signer writes (`server/remote_signer.go`,
//! `GenerateLivePayment`): `session_id` is `state.StateID`,
//! `sequence_number` is `state.SequenceNumber` (0 for a new session, +1 per
//! successful call), `previous_time` is the previous call's `current_time`
//! (`state.LastUpdate`, to the nanosecond; equal to `current_time` on the
//! first call).

use std::hash::Hasher;

use rustc_hash::FxHasher;

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
    /// FxHash (the same key for the same session within a process): this
    /// runs once per event, where SipHash cost 0.15 µs.
    fn of(session_id: &str, orch_address: &str) -> Self {
        let mut hasher = FxHasher::default();
        hasher.write(session_id.as_bytes());
        hasher.write_u8(0xff);
        let mut lower = [0u8; 64];
        let orch = orch_address.as_bytes();
        match lower.get_mut(..orch.len()) {
            Some(buf) => {
                buf.copy_from_slice(orch);
                buf.make_ascii_lowercase();
                hasher.write(buf);
            }
            None => hasher.write(orch_address.to_ascii_lowercase().as_bytes()),
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

/// The fields a link is read from: the ids as text (trimmed), the others
/// as the record wrote them.
#[derive(Debug, Default)]
pub(crate) struct Fields<'a> {
    pub(crate) session_id: Option<&'a str>,
    pub(crate) orch_address: Option<&'a str>,
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
        let session_id = fields.session_id.filter(|s| !s.is_empty())?;
        let orch = fields.orch_address.unwrap_or_default();
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
        let (session_id, orch) = (
            Scalar::read(data.session_id),
            Scalar::read(data.orch_address),
        );
        let fields = Fields {
            session_id: text(session_id.as_ref()),
            orch_address: text(orch.as_ref()),
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

/// Text as decode reads an id dimension: trimmed, a number as its digits.
fn text<'b>(value: Option<&'b Scalar>) -> Option<&'b str> {
    match value? {
        Scalar::Text(t) => Some(t.trim()).filter(|t| !t.is_empty()),
        Scalar::Number(digits) => Some(digits),
        Scalar::Other => None,
    }
}

/// An RFC 3339 time to the nanosecond, as Go's `time.Time` writes it.
fn nanos(value: Option<&Scalar>) -> Option<i64> {
    let text = text(value)?;
    utc_nanos(text).or_else(|| {
        DateTime::parse_from_rfc3339(text)
            .ok()?
            .timestamp_nanos_opt()
    })
}

/// The form Go writes a UTC `time.Time` in, `YYYY-MM-DDTHH:MM:SS[.f…]Z`
/// with 1 to 9 fraction digits, read without chrono (it runs for every
/// event); `None` for any other form, which chrono then reads.
fn utc_nanos(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let (date, rest) = (b.get(..19)?, b.get(19..)?);
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        date.get(range)?.iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| date[i] != c) {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let fraction = match rest {
        [b'.', f @ .., b'Z'] if (1..=9).contains(&f.len()) => f,
        [b'Z'] => &[][..],
        _ => return None,
    };
    let mut ns = 0i64;
    for &c in fraction {
        if !c.is_ascii_digit() {
            return None;
        }
        ns = ns * 10 + i64::from(c - b'0');
    }
    ns *= 10i64.pow(9 - fraction.len() as u32);
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    seconds.checked_mul(1_000_000_000)?.checked_add(ns)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
            session_id: Some("a1b2c3d4"),
            orch_address: Some("0xAB"),
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
        other.orch_address = Some("0xcd");
        let b = Link::read(other, None).unwrap();
        assert_ne!(a.session, b.session);
        let mut same = fields("0", "2026-09-09T00:00:00Z", "");
        same.orch_address = Some("0xab");
        assert_eq!(Link::read(same, None).unwrap().session, a.session);
    }

    #[test]
    fn go_times_are_read_as_chrono_reads_them() {
        for text in [
            "2026-09-09T00:00:00Z",
            "2026-09-09T00:00:00.1Z",
            "2026-09-09T23:59:59.999999999Z",
            "2024-02-29T12:34:56.000000001Z",
            "1970-01-01T00:00:00Z",
            "2100-12-31T01:02:03.45Z",
        ] {
            let chrono = DateTime::parse_from_rfc3339(text)
                .unwrap()
                .timestamp_nanos_opt();
            assert_eq!(utc_nanos(text), chrono, "{text}");
        }
        for other in [
            "2026-09-09T00:00:00+02:00",
            "2026-09-09t00:00:00z",
            "2026-02-29T00:00:00Z",
            "2026-09-09T00:00:00.Z",
            "2026-09-09T00:00:00.1234567890Z",
            "2026-09-09T24:00:00Z",
        ] {
            assert_eq!(utc_nanos(other), None, "{other}");
        }
        let offset = t("2026-09-09T02:00:00+02:00");
        assert_eq!(
            nanos(offset.as_ref()),
            nanos(t("2026-09-09T00:00:00Z").as_ref()),
            "other forms are read by chrono"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_go_utc_time_reads_as_chrono_reads_it(
            secs in 0i64..8_000_000_000,
            nanos_part in 0u32..1_000_000_000,
        ) {
            let at = DateTime::from_timestamp(secs, nanos_part).unwrap();
            let text = at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            proptest::prop_assert_eq!(utc_nanos(&text), at.timestamp_nanos_opt());
        }
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
