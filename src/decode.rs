//! Decode: raw bytes from the topic into a parsed `create_signed_ticket`,
//! a skip (another event type), or a rejection that is dead-lettered.
//!
//! Bounded: payloads over the size limit and JSON nested deeper than
//! [`MAX_DEPTH`] are rejected before any parsing.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use thiserror::Error;

use crate::dlq::DeadLetterKind;
use crate::domain::{AuthId, FeeError, FeeWei, Identity, IdentityError};

/// The one billable event type.
pub(crate) const BILLABLE_TYPE: &str = "create_signed_ticket";
/// The envelope is two levels deep; anything far deeper is hostile.
pub(crate) const MAX_DEPTH: usize = 32;
/// Default payload limit; a real ticket event is about 1 KiB.
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;

/// A billable ticket, every field parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTicket {
    /// `request_id`, else the envelope `id`: stable across redelivery.
    pub event_id: String,
    pub request_id: String,
    pub identity: Identity,
    pub fee: FeeWei,
    /// `computed_fee` exactly as the signer wrote it (sent as `fee_wei`).
    pub fee_text: String,
    /// RFC 3339, as the signer wrote it when valid.
    pub time: String,
    /// `time` parsed: when the ticket was signed.
    pub signed_at: DateTime<Utc>,
    pub pipeline: String,
    pub model_id: String,
    pub pixels: i64,
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

/// Why a record cannot be billed. Every one is dead-lettered with this text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    #[error("empty payload")]
    Empty,
    #[error("payload of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("envelope has no type")]
    NoType,
    #[error("data is not a JSON object")]
    DataNotObject,
    #[error("malformed create_signed_ticket data: {0}")]
    MalformedData(String),
    #[error("missing identity (auth_id missing)")]
    NoAuthId,
    #[error("missing identity (auth_id empty)")]
    EmptyAuthId,
    #[error("invalid identity: {0}")]
    Identity(IdentityError),
    #[error("{0}")]
    Fee(#[from] FeeError),
    #[error("missing event id (request_id and envelope id are empty)")]
    NoEventId,
    #[error("pixels is not an integer")]
    Pixels,
}

impl Rejection {
    /// The class its dead letter is filed under.
    pub fn kind(&self) -> DeadLetterKind {
        match self {
            Self::Empty
            | Self::TooLarge { .. }
            | Self::TooDeep
            | Self::Malformed(_)
            | Self::NoType => DeadLetterKind::Malformed,
            Self::DataNotObject | Self::MalformedData(_) | Self::Pixels | Self::NoEventId => {
                DeadLetterKind::InvalidData
            }
            Self::NoAuthId | Self::EmptyAuthId | Self::Identity(_) => DeadLetterKind::Identity,
            Self::Fee(_) => DeadLetterKind::Fee,
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    timestamp: Option<Value>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct TicketData<'a> {
    #[serde(borrow, default)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    auth_id: Option<Cow<'a, str>>,
    #[serde(default)]
    computed_fee: Option<Value>,
    #[serde(borrow, default)]
    current_time: Option<Cow<'a, str>>,
    #[serde(default)]
    current_time_unix: Option<Value>,
    #[serde(borrow, default)]
    pipeline: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pixels: Option<Value>,
}

/// Decodes one record. Never panics, whatever the bytes.
pub fn decode(payload: &[u8], max_bytes: usize) -> Result<Decoded, Rejection> {
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
    let envelope: Envelope =
        serde_json::from_slice(payload).map_err(|e| Rejection::Malformed(e.to_string()))?;
    match envelope.kind.as_deref() {
        None | Some("") => Err(Rejection::NoType),
        Some(BILLABLE_TYPE) => ticket(&envelope).map(|t| Decoded::Ticket(Box::new(t))),
        Some(_) => Ok(Decoded::Skip(SkipReason::OtherType)),
    }
}

fn ticket(envelope: &Envelope) -> Result<SignedTicket, Rejection> {
    let raw = envelope.data.ok_or(Rejection::DataNotObject)?;
    if !raw.get().trim_start().starts_with('{') {
        return Err(Rejection::DataNotObject);
    }
    let data: TicketData =
        serde_json::from_str(raw.get()).map_err(|e| Rejection::MalformedData(e.to_string()))?;
    let identity = identity(data.auth_id.as_deref())?;
    let (fee, fee_text) = fee(data.computed_fee.as_ref())?;
    let request_id = data
        .request_id
        .as_deref()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let event_id = [
        request_id.as_str(),
        envelope.id.as_deref().unwrap_or_default().trim(),
    ]
    .into_iter()
    .find(|id| !id.is_empty())
    .ok_or(Rejection::NoEventId)?
    .to_owned();
    let (time, signed_at) = event_time(&data, envelope.timestamp.as_ref());
    Ok(SignedTicket {
        event_id,
        request_id,
        identity,
        fee,
        fee_text,
        time,
        signed_at,
        pipeline: or_unknown(data.pipeline.as_deref()),
        model_id: or_unknown(data.model_id.as_deref()),
        pixels: pixels(data.pixels.as_ref())?,
    })
}

fn identity(auth_id: Option<&str>) -> Result<Identity, Rejection> {
    let raw = auth_id.ok_or(Rejection::NoAuthId)?;
    match AuthId::parse("auth_id", raw) {
        Ok(id) => Ok(Identity::from_auth_id(id)),
        Err(IdentityError::Empty { .. }) => Err(Rejection::EmptyAuthId),
        Err(e) => Err(Rejection::Identity(e)),
    }
}

/// A fee is an integer string; a JSON integer is accepted when exact.
/// Returns the fee and its text as written.
fn fee(value: Option<&Value>) -> Result<(FeeWei, String), Rejection> {
    match value {
        None | Some(Value::Null) => Err(FeeError::Missing.into()),
        Some(Value::String(s)) => Ok((FeeWei::parse(s)?, s.clone())),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|wei| (FeeWei::new(wei.into()), n.to_string()))
            .ok_or(FeeError::NotAnInteger.into()),
        Some(_) => Err(FeeError::NotAnInteger.into()),
    }
}

fn pixels(value: Option<&Value>) -> Result<i64, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n.as_i64().ok_or(Rejection::Pixels),
        Some(_) => Err(Rejection::Pixels),
    }
}

fn or_unknown(value: Option<&str>) -> String {
    match value.map(str::trim) {
        Some(v) if !v.is_empty() => v.to_owned(),
        _ => "unknown".to_owned(),
    }
}

/// `current_time` when it is valid RFC 3339 (kept verbatim, nanoseconds and
/// all); else `current_time_unix`; else the envelope's `timestamp` (both unix
/// ms); else now. The first three are stable across redelivery.
fn event_time(data: &TicketData, envelope_ts: Option<&Value>) -> (String, DateTime<Utc>) {
    if let Some(t) = data.current_time.as_deref().map(str::trim) {
        if let Ok(at) = DateTime::parse_from_rfc3339(t) {
            return (t.to_owned(), at.to_utc());
        }
    }
    let at = [data.current_time_unix.as_ref(), envelope_ts]
        .into_iter()
        .flatten()
        .find_map(unix_millis)
        .unwrap_or_else(Utc::now);
    (at.to_rfc3339_opts(SecondsFormat::Millis, true), at)
}

fn unix_millis(value: &Value) -> Option<DateTime<Utc>> {
    let ms = match value {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (ms > 0)
        .then(|| DateTime::from_timestamp_millis(ms))
        .flatten()
}

/// Whether `[`/`{` nesting exceeds `limit`, ignoring brackets in strings.
fn nesting_exceeds(bytes: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> String {
        format!(
            r#"{{"id":"env-1","type":"create_signed_ticket","timestamp":"1788912000000","data":{data}}}"#
        )
    }

    fn reject(payload: &str) -> Rejection {
        decode(payload.as_bytes(), DEFAULT_MAX_BYTES).unwrap_err()
    }

    fn ticket_of(data: &str) -> SignedTicket {
        match decode(event(data).as_bytes(), DEFAULT_MAX_BYTES).unwrap() {
            Decoded::Ticket(t) => *t,
            other => panic!("{other:?}"),
        }
    }

    const OK: &str = r#"{"request_id":"r1","auth_id":"c:u","computed_fee":"10","current_time":"2026-09-09T00:00:00.000000001Z"}"#;

    #[test]
    fn other_event_types_are_skipped() {
        let d = decode(
            br#"{"id":"x","type":"discovery_results","data":[]}"#,
            DEFAULT_MAX_BYTES,
        );
        assert_eq!(d, Ok(Decoded::Skip(SkipReason::OtherType)));
    }

    #[test]
    fn valid_ticket_keeps_time_verbatim() {
        let t = ticket_of(OK);
        assert_eq!(t.event_id, "r1");
        assert_eq!(t.time, "2026-09-09T00:00:00.000000001Z");
        assert_eq!(t.fee, FeeWei::new(10));
        assert_eq!(
            (t.pipeline.as_str(), t.model_id.as_str()),
            ("unknown", "unknown")
        );
    }

    #[test]
    fn empty_request_id_falls_back_to_envelope_id() {
        let t = ticket_of(r#"{"request_id":"","auth_id":"c:u","computed_fee":"1"}"#);
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
        assert_eq!((t.fee, t.fee_text.as_str()), (FeeWei::new(120), "000120"));
    }

    #[test]
    fn fee_as_exact_json_integer_is_accepted() {
        assert_eq!(
            ticket_of(r#"{"auth_id":"c:u","computed_fee":42}"#).fee,
            FeeWei::new(42)
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
            "missing identity (auth_id empty)"
        );
        assert_eq!(
            reject(&event(r#"{"computed_fee":"1"}"#)),
            Rejection::NoAuthId
        );
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
            reject(r#"{"type":"create_signed_ticket"}"#),
            Rejection::DataNotObject
        );
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
            decode(big.as_bytes(), 10),
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
    fn no_event_id_at_all_is_rejected() {
        let p = r#"{"type":"create_signed_ticket","data":{"auth_id":"c:u","computed_fee":"1"}}"#;
        assert_eq!(reject(p), Rejection::NoEventId);
    }

    #[test]
    fn non_integer_pixels_are_rejected() {
        assert_eq!(
            reject(&event(
                r#"{"auth_id":"c:u","computed_fee":"1","pixels":"many"}"#
            )),
            Rejection::Pixels
        );
    }
}
