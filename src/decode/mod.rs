//! Decode: raw bytes from the topic into a parsed `create_signed_ticket`,
//! a skip (another event type), or a rejection that is dead-lettered.
//!
//! Bounded: payloads over the size limit and JSON nested deeper than
//! [`MAX_DEPTH`] are rejected before any parsing. Only the fee and the
//! identity can reject a billable ticket: a dimension that cannot be read
//! is left out and named in [`Dimensions::unreadable`].

mod depth;
mod dimensions;
mod envelope;
mod fee;
mod identity;
mod ids;
mod rejection;
mod scalar;
mod time;

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::contract::Contract;
use crate::domain::{FeeWei, Identity};
use crate::link::{Fields, Link};
use depth::{nesting_exceeds, MAX_DEPTH};
use dimensions::dimensions;
use envelope::{two_step, Envelope, Object, TicketData};
use fee::fee;
use identity::identity;
use scalar::lenient_text;
use time::event_time;

pub(crate) use dimensions::Dimensions;
pub(crate) use envelope::BILLABLE_TYPE;
#[cfg(test)]
pub(crate) use ids::id_fingerprint;
pub(crate) use ids::{event_id, other_id, request_id};
pub(crate) use rejection::Rejection;
pub(crate) use scalar::Scalar;
pub(crate) use time::claimed_time;

/// Default payload limit; a real ticket event is about 1 KiB.
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;

/// A billable ticket, every field parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTicket {
    /// The CloudEvent id under the contract's
    /// [`IdScheme`](crate::contract::IdScheme).
    pub event_id: String,
    /// The envelope `id` when `event_id` does not show it (see
    /// [`ids::Ids::envelope`]): what the audit's other id is read from.
    pub(crate) envelope_id: Option<String>,
    /// The fingerprint of the envelope scheme's id (`data.id_fingerprint`).
    pub id_fingerprint: u32,
    pub request_id: String,
    pub identity: Identity,
    /// `data.usage_subject_type` as the event gave it.
    pub usage_subject_type: Option<String>,
    pub fee: FeeWei,
    /// `computed_fee` exactly as the signer wrote it (the seed sent it),
    /// when that is not [`FeeWei`]'s own digits.
    pub fee_text: Option<String>,
    /// RFC 3339, as the signer wrote it when valid.
    pub time: String,
    /// `time` parsed: when the ticket was signed.
    pub signed_at: DateTime<Utc>,
    pub dimensions: Dimensions,
    /// Its place in its session's chain, when it carries one.
    pub(crate) link: Option<Link>,
}

/// What became of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Ticket(Box<SignedTicket>),
    /// Not billable; committed without sending.
    Skip(SkipReason),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SkipReason {
    #[error("not a create_signed_ticket event")]
    OtherType,
    /// `dlq replay` from the topic: the letter's payload was cut to fit the
    /// topic, so replaying it would only fail again.
    #[error("a truncated dead letter: its full original is in the spill file {spill}")]
    TruncatedLetter { spill: String },
}

/// Decodes one record under `contract`. Never panics, whatever the bytes.
pub fn decode(payload: &[u8], max_bytes: usize, contract: &Contract) -> Result<Decoded, Rejection> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(Rejection::Empty);
    }
    if payload.len() > max_bytes {
        return Err(Rejection::TooLarge {
            size: payload.len(),
            limit: max_bytes,
        });
    }
    if nesting_exceeds(payload, MAX_DEPTH) {
        return Err(Rejection::TooDeep);
    }
    // One pass reads a well-formed ticket; anything else is read again in
    // two steps, envelope then data, to say which part is wrong. The bytes
    // are checked for UTF-8 once, as a whole, so the pass reads them as text
    // instead of checking each string it meets again.
    let one_pass = std::str::from_utf8(payload)
        .ok()
        .and_then(|text| serde_json::from_str::<Envelope<Object<TicketData>>>(text).ok());
    let envelope = match one_pass {
        Some(envelope) => envelope.map_data(|data| data.0),
        None => two_step(payload)?,
    };
    match envelope.kind.as_deref() {
        None | Some("") => Err(Rejection::NoType),
        Some(BILLABLE_TYPE) => {
            ticket(envelope, payload, contract).map(|t| Decoded::Ticket(Box::new(t)))
        }
        Some(_) => Ok(Decoded::Skip(SkipReason::OtherType)),
    }
}

fn ticket(
    envelope: Envelope<TicketData>,
    payload: &[u8],
    contract: &Contract,
) -> Result<SignedTicket, Rejection> {
    let data = envelope.data.ok_or(Rejection::DataNotObject)?;
    let identity = identity(&data, contract.subjects)?;
    let (fee, fee_text) = fee(Scalar::read(data.computed_fee))?;
    let request_id = request_id(Scalar::read(data.request_id));
    let envelope_id = envelope.id.as_deref().unwrap_or_default();
    let current = Scalar::read(data.current_time);
    let (time, signed_at) = event_time(&data, current.clone(), Scalar::read(envelope.timestamp));
    let (dimensions, session_id) = dimensions(&data, &request_id);
    let current_ns = match current {
        Some(Scalar::Text(t)) if t.trim() == time => signed_at.timestamp_nanos_opt(),
        _ => None,
    };
    let (sequence_number, previous_time) = (
        Scalar::read(data.sequence_number),
        Scalar::read(data.previous_time),
    );
    let fields = Fields {
        session_id: Some(&session_id),
        orch_address: Some(dimensions.orch_address()),
        sequence_number: sequence_number.as_ref().and_then(Scalar::as_text),
        current_ns,
        previous_time: previous_time.as_ref().and_then(Scalar::as_text),
    };
    let link = Link::read(fields, Some(fee.get()));
    let ids = ids::ids(contract.ids, envelope_id, &request_id, payload);
    Ok(SignedTicket {
        event_id: ids.event,
        envelope_id: ids.envelope,
        id_fingerprint: ids.fingerprint,
        usage_subject_type: lenient_text(Scalar::read(data.usage_subject_type))
            .ok()
            .flatten()
            .map(Cow::into_owned),
        dimensions,
        request_id,
        identity,
        fee,
        fee_text,
        time,
        signed_at,
        link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::DeadLetterKind;
    use crate::domain::FeeError;

    fn event(data: &str) -> String {
        format!(
            r#"{{"id":"env-1","type":"create_signed_ticket","timestamp":"1788912000000","data":{data}}}"#
        )
    }

    fn reject(payload: &str) -> Rejection {
        decode(payload.as_bytes(), DEFAULT_MAX_BYTES, &Contract::default()).unwrap_err()
    }

    fn reject_seed(payload: &str) -> Rejection {
        decode(payload.as_bytes(), DEFAULT_MAX_BYTES, &Contract::seed()).unwrap_err()
    }

    fn ticket_under(payload: &str, contract: &Contract) -> SignedTicket {
        match decode(payload.as_bytes(), DEFAULT_MAX_BYTES, contract).unwrap() {
            Decoded::Ticket(t) => *t,
            other => panic!("{other:?}"),
        }
    }

    fn ticket_of(data: &str) -> SignedTicket {
        ticket_under(&event(data), &Contract::default())
    }

    const OK: &str = r#"{"request_id":"r1","auth_id":"c:u","computed_fee":"10","current_time":"2026-09-09T00:00:00.000000001Z"}"#;

    #[test]
    fn escaped_envelope_and_identity_strings_read_as_their_text() {
        let t = ticket_under(
            r#"{"id":"env\u002d1","type":"create_signed\u005fticket","data":{"request_id":"r1","auth_id":"c\u003au","computed_fee":"10"}}"#,
            &Contract::default(),
        );
        assert_eq!(
            (t.event_id.as_str(), t.identity.auth_id().as_str()),
            ("env-1", "c:u")
        );
    }

    #[test]
    fn other_event_types_are_skipped() {
        let d = decode(
            br#"{"id":"x","type":"discovery_results","data":[]}"#,
            DEFAULT_MAX_BYTES,
            &Contract::default(),
        );
        assert_eq!(d, Ok(Decoded::Skip(SkipReason::OtherType)));
    }

    #[test]
    fn valid_ticket_keeps_time_verbatim() {
        let t = ticket_of(OK);
        assert_eq!(t.time, "2026-09-09T00:00:00.000000001Z");
        assert_eq!(t.fee, FeeWei::new(10));
        assert_eq!(
            (t.dimensions.pipeline(), t.dimensions.model_id()),
            ("unknown", "unknown")
        );
    }

    #[test]
    fn the_envelope_id_is_the_event_id_and_request_id_the_seeds() {
        let t = ticket_of(OK);
        assert_eq!(t.event_id, "env-1");
        let seed = ticket_under(&event(OK), &Contract::seed());
        assert_eq!(
            (seed.event_id.as_str(), seed.envelope_id.as_deref()),
            ("r1", Some("env-1"))
        );
    }

    #[test]
    fn without_an_envelope_id_the_request_id_is_the_event_id() {
        let p = r#"{"type":"create_signed_ticket","data":{"request_id":"r-7","auth_id":"c:u","computed_fee":"1"}}"#;
        assert_eq!(ticket_under(p, &Contract::default()).event_id, "r-7");
    }

    #[test]
    fn empty_request_id_falls_back_to_envelope_id_under_the_seed_scheme() {
        let t = ticket_under(
            &event(r#"{"request_id":"","auth_id":"c:u","computed_fee":"1"}"#),
            &Contract::seed(),
        );
        assert_eq!(t.event_id, "env-1");
    }

    #[test]
    fn invalid_current_time_falls_back_to_unix_millis() {
        let t = ticket_of(
            r#"{"auth_id":"c:u","computed_fee":"1","current_time":"yesterday","current_time_unix":1788912000123}"#,
        );
        assert_eq!(t.time, "2026-09-09T00:00:00.123Z");
        let t = ticket_of(r#"{"auth_id":"c:u","computed_fee":"1"}"#);
        assert_eq!(t.time, "2026-09-09T00:00:00.000Z");
    }

    #[test]
    fn fee_text_is_kept_as_written() {
        let t = ticket_of(r#"{"auth_id":"c:u","computed_fee":"000120"}"#);
        assert_eq!(
            (t.fee, t.fee_text.as_deref()),
            (FeeWei::new(120), Some("000120"))
        );
    }

    #[test]
    fn fee_as_exact_json_integer_is_accepted() {
        assert_eq!(
            ticket_of(r#"{"auth_id":"c:u","computed_fee":42}"#).fee,
            FeeWei::new(42)
        );
        assert_eq!(
            ticket_of(r#"{"auth_id":"c:u","computed_fee":123456789012345678901234}"#).fee,
            FeeWei::new(123_456_789_012_345_678_901_234)
        );
    }

    #[test]
    fn fee_as_float_is_rejected() {
        assert_eq!(
            reject(&event(r#"{"auth_id":"c:u","computed_fee":1.5}"#)),
            Rejection::Fee(FeeError::NotAnInteger)
        );
    }

    #[test]
    fn missing_fee_is_rejected() {
        assert_eq!(
            reject(&event(r#"{"auth_id":"c:u"}"#)),
            Rejection::Fee(FeeError::Missing)
        );
    }

    #[test]
    fn empty_and_missing_auth_id_are_rejected() {
        assert_eq!(
            reject(&event(r#"{"auth_id":" ","computed_fee":"1"}"#)).to_string(),
            "missing identity"
        );
        assert_eq!(
            reject(&event(r#"{"computed_fee":"1"}"#)),
            Rejection::NoIdentity
        );
    }

    #[test]
    fn under_the_seed_rule_a_missing_identity_keeps_the_seeds_wording() {
        assert_eq!(
            reject_seed(&event(r#"{"auth_id":" ","computed_fee":"1"}"#)).to_string(),
            "missing identity (auth_id empty)"
        );
        assert_eq!(
            reject_seed(&event(r#"{"computed_fee":"1"}"#)),
            Rejection::NoAuthId
        );
    }

    #[test]
    fn client_id_and_usage_subject_stand_in_for_a_missing_auth_id() {
        let t = ticket_of(
            r#"{"auth_id":"","client_id":"app_abc","usage_subject":"owner:U2","computed_fee":"1"}"#,
        );
        assert_eq!(t.identity.customer_key().as_str(), "U2");
        assert_eq!(t.identity.auth_id().as_str(), "app_abc:owner:U2");
        assert_eq!(
            reject(&event(r#"{"client_id":"app_abc","computed_fee":"1"}"#)),
            Rejection::NoIdentity
        );
    }

    #[test]
    fn an_empty_owner_id_is_an_identity_dead_letter() {
        let r = reject(&event(r#"{"auth_id":"app_x:owner:","computed_fee":"1"}"#));
        assert_eq!(r.to_string(), "identity: empty owner id");
        assert_eq!(r.kind(), DeadLetterKind::Identity);
    }

    #[test]
    fn malformed_json_is_rejected() {
        assert!(matches!(reject("{not json"), Rejection::Malformed(_)));
        assert!(matches!(reject("[1,2]"), Rejection::Malformed(_)));
        assert_eq!(reject(""), Rejection::Empty);
    }

    #[test]
    fn missing_type_is_rejected() {
        assert_eq!(reject(r#"{"id":"x"}"#), Rejection::NoType);
    }

    #[test]
    fn data_must_be_an_object() {
        assert_eq!(
            reject(r#"{"type":"create_signed_ticket","data":[]}"#),
            Rejection::DataNotObject
        );
        assert_eq!(
            reject(r#"{"type":"create_signed_ticket","data":[null,"a:b","c","d",null,"1"]}"#),
            Rejection::DataNotObject
        );
        assert_eq!(
            reject(r#"{"type":"create_signed_ticket"}"#),
            Rejection::DataNotObject
        );
    }

    #[test]
    fn a_numeric_request_id_or_time_is_read_not_dead_lettered() {
        let t = ticket_of(
            r#"{"auth_id":"c:u","computed_fee":"1","request_id":12345678,"current_time":17}"#,
        );
        assert_eq!(t.request_id, "12345678");
        assert_eq!(t.time, "2026-09-09T00:00:00.000Z", "the envelope timestamp");
    }

    #[test]
    fn wrongly_typed_field_is_rejected_not_coerced() {
        assert!(matches!(
            reject(&event(r#"{"auth_id":7,"computed_fee":"1"}"#)),
            Rejection::MalformedData(_)
        ));
    }

    #[test]
    fn oversized_payload_is_rejected() {
        let big = event(OK);
        assert!(matches!(
            decode(big.as_bytes(), 10, &Contract::default()),
            Err(Rejection::TooLarge { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_rejected_but_brackets_in_strings_are_not() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(reject(&deep), Rejection::TooDeep);
        let t = ticket_of(
            r#"{"auth_id":"c:[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[","computed_fee":"1"}"#,
        );
        assert!(t.identity.customer_key().as_str().starts_with("c:[["));
    }

    #[test]
    fn without_any_id_the_event_id_is_a_digest_of_the_record() {
        let p = r#"{"type":"create_signed_ticket","data":{"auth_id":"c:u","computed_fee":"1"}}"#;
        let first = ticket_under(p, &Contract::default()).event_id;
        assert!(first.starts_with("sha256:") && first.len() == 71, "{first}");
        assert_eq!(ticket_under(p, &Contract::seed()).event_id, first);
        let other = p.replace("\"1\"", "\"2\"");
        assert_ne!(ticket_under(&other, &Contract::default()).event_id, first);
    }

    #[test]
    fn an_unreadable_dimension_is_left_out_not_dead_lettered() {
        let t =
            ticket_of(r#"{"auth_id":"c:u","computed_fee":"1","pixels":"many","pipeline":{"a":1}}"#);
        assert_eq!(t.dimensions.pixels(), None);
        assert_eq!(t.dimensions.pipeline(), "unknown");
        assert_eq!(t.dimensions.unreadable, ["pipeline", "pixels"]);
    }

    #[test]
    fn escaped_text_is_unescaped_and_booleans_are_unreadable() {
        let t = ticket_of(
            r#"{"auth_id":"c:u","computed_fee":"1","app":"caf\u00e9 \"x\"","session_status":true,"request_id":" r-1 "}"#,
        );
        assert_eq!(t.dimensions.app(), "café \"x\"");
        assert_eq!(t.dimensions.session_status(), "");
        assert_eq!(t.dimensions.unreadable, ["session_status"]);
        assert_eq!(t.request_id, "r-1");
    }

    #[test]
    fn a_numeric_string_dimension_is_a_number() {
        let t = ticket_of(
            r#"{"auth_id":"c:u","computed_fee":"1","pixels":"1000","billable_secs":" 10.5 ","num_tickets":3}"#,
        );
        assert_eq!(t.dimensions.pixels(), Some("1000"));
        assert_eq!(t.dimensions.billable_secs(), Some("10.5"));
        assert_eq!(t.dimensions.num_tickets(), Some("3"));
        assert!(t.dimensions.unreadable.is_empty());
    }

    #[test]
    fn missing_numeric_dimensions_are_zero() {
        let t = ticket_of(r#"{"auth_id":"c:u","computed_fee":"1"}"#);
        assert_eq!(t.dimensions.pixels(), Some("0"));
        assert_eq!(t.dimensions.billable_secs(), Some("0"));
        assert_eq!(t.dimensions.num_tickets(), Some("0"));
    }

    #[test]
    fn manifest_id_falls_back_to_session_then_request_id() {
        let manifest = |data: &str| ticket_of(data).dimensions.manifest_id().to_owned();
        assert_eq!(
            manifest(
                r#"{"auth_id":"c:u","computed_fee":"1","manifest_id":"m","session_id":"s","request_id":"r"}"#
            ),
            "m"
        );
        assert_eq!(
            manifest(
                r#"{"auth_id":"c:u","computed_fee":"1","manifest_id":"","session_id":"s","request_id":"r"}"#
            ),
            "s"
        );
        assert_eq!(
            manifest(r#"{"auth_id":"c:u","computed_fee":"1","request_id":"r"}"#),
            "r"
        );
        assert_eq!(
            manifest(r#"{"auth_id":"c:u","computed_fee":"1"}"#),
            "unknown"
        );
    }

    #[test]
    fn a_base_colon_model_pipeline_is_split_unless_model_id_is_given() {
        let dims = |data: &str| {
            let d = ticket_of(data).dimensions;
            (d.pipeline().to_owned(), d.model_id().to_owned())
        };
        assert_eq!(
            dims(
                r#"{"auth_id":"c:u","computed_fee":"1","pipeline":"live-video-to-video:comfyui"}"#
            ),
            ("live-video-to-video".into(), "comfyui".into())
        );
        assert_eq!(
            dims(r#"{"auth_id":"c:u","computed_fee":"1","pipeline":"a:b","model_id":"m"}"#),
            ("a:b".into(), "m".into())
        );
        assert_eq!(
            dims(r#"{"auth_id":"c:u","computed_fee":"1","pipeline":"live:"}"#),
            ("live:".into(), "unknown".into())
        );
    }
}
