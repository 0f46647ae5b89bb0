//! Decode: raw bytes from the topic into a parsed `create_signed_ticket`,
//! a skip (another event type), or a rejection that is dead-lettered.
//!
//! Bounded: payloads over the size limit and JSON nested deeper than
//! [`MAX_DEPTH`] are rejected before any parsing. Only the fee and the
//! identity can reject a billable ticket: a dimension that cannot be read
//! is left out and named in [`Dimensions::unreadable`].

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Number, Value};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::contract::{Contract, IdScheme, SubjectRule};
use crate::dlq::DeadLetterKind;
use crate::domain::{split_inside, FeeError, FeeWei, Identity, IdentityClaim, IdentityError};
use crate::link::{Fields, Link};

/// The one billable event type.
pub(crate) const BILLABLE_TYPE: &str = "create_signed_ticket";
/// The envelope is two levels deep; anything far deeper is hostile.
pub(crate) const MAX_DEPTH: usize = 32;
/// Default payload limit; a real ticket event is about 1 KiB.
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;
/// What a missing dimension is sent as.
const UNKNOWN: &str = "unknown";

/// A billable ticket, every field parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTicket {
    /// The CloudEvent id under the contract's [`IdScheme`].
    pub event_id: String,
    /// The id the other scheme gives, so the audit matches events sent
    /// before a cut-over.
    pub other_id: String,
    pub request_id: String,
    pub identity: Identity,
    /// `data.usage_subject_type` as the event gave it.
    pub usage_subject_type: Option<String>,
    pub fee: FeeWei,
    /// `computed_fee` exactly as the signer wrote it (the seed sent it).
    pub fee_text: String,
    /// RFC 3339, as the signer wrote it when valid.
    pub time: String,
    /// `time` parsed: when the ticket was signed.
    pub signed_at: DateTime<Utc>,
    pub dimensions: Dimensions,
    /// Its place in its session's chain, when it carries one.
    pub(crate) link: Option<Link>,
}

/// The fields meters group by or sum besides the fee, read leniently.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dimensions {
    pub pipeline: String,
    pub model_id: String,
    pub manifest_id: String,
    pub app: String,
    pub session_status: String,
    pub orch_address: String,
    /// `None` when the event's value could not be read as a number.
    pub pixels: Option<Number>,
    pub num_tickets: Option<Number>,
    pub billable_secs: Option<Number>,
    /// Dimensions left out because their value could not be read.
    pub unreadable: Vec<&'static str>,
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
    /// Neither `auth_id` nor `client_id` + `usage_subject` (today's rule).
    #[error("missing identity")]
    NoIdentity,
    /// The seed's wording, kept under `BILLING_SUBJECT=auth_id`.
    #[error("missing identity (auth_id missing)")]
    NoAuthId,
    #[error("missing identity (auth_id empty)")]
    EmptyAuthId,
    #[error("identity: empty owner id")]
    EmptyOwner,
    #[error("invalid identity: {0}")]
    Identity(IdentityError),
    #[error("{0}")]
    Fee(#[from] FeeError),
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
            Self::DataNotObject | Self::MalformedData(_) => DeadLetterKind::InvalidData,
            Self::NoIdentity
            | Self::NoAuthId
            | Self::EmptyAuthId
            | Self::EmptyOwner
            | Self::Identity(_) => DeadLetterKind::Identity,
            Self::Fee(_) => DeadLetterKind::Fee,
        }
    }
}

/// The record's envelope, its `data` either kept as JSON text (`D` =
/// `&RawValue`) or read as a ticket's fields in the same pass.
#[derive(Deserialize)]
struct Envelope<'a, D> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(default = "Option::default")]
    data: Option<D>,
}

/// The ticket's fields. Identity fields must be strings when present (a
/// number there is a producer bug worth a dead letter); the others are kept
/// as the record's own JSON text and read leniently ([`Scalar`]) when used,
/// so no `serde_json::Value` is built for them.
#[derive(Deserialize)]
struct TicketData<'a> {
    #[serde(borrow, default)]
    request_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    auth_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    client_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    usage_subject: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    usage_subject_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    computed_fee: Option<&'a RawValue>,
    #[serde(borrow, default)]
    current_time: Option<&'a RawValue>,
    #[serde(borrow, default)]
    current_time_unix: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pipeline: Option<&'a RawValue>,
    #[serde(borrow, default)]
    model_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    manifest_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    session_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    app: Option<&'a RawValue>,
    #[serde(borrow, default)]
    session_status: Option<&'a RawValue>,
    #[serde(borrow, default)]
    orch_address: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pixels: Option<&'a RawValue>,
    #[serde(borrow, default)]
    num_tickets: Option<&'a RawValue>,
    #[serde(borrow, default)]
    billable_secs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    sequence_number: Option<&'a RawValue>,
    #[serde(borrow, default)]
    previous_time: Option<&'a RawValue>,
}

/// A field's JSON value read leniently: text borrowed from the record when
/// it has no escapes, a number as its exact digits. `null` is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scalar<'a> {
    Text(Cow<'a, str>),
    Number(&'a str),
    /// A boolean, an object or an array.
    Other,
}

impl<'a> Scalar<'a> {
    /// A field as the record wrote it (already validated JSON).
    pub(crate) fn read(raw: Option<&'a RawValue>) -> Option<Self> {
        let json = raw?.get();
        match json.as_bytes().first()? {
            b'n' => None,
            b'"' => Some(Self::text(json)),
            b'-' | b'0'..=b'9' => Some(Self::Number(json)),
            _ => Some(Self::Other),
        }
    }

    fn text(json: &'a str) -> Self {
        // Valid JSON (a `RawValue`) without a backslash is its own text.
        let inner = json.strip_prefix('"').and_then(|j| j.strip_suffix('"'));
        if let Some(inner) = inner.filter(|i| !i.contains('\\')) {
            return Self::Text(Cow::Borrowed(inner));
        }
        serde_json::from_str::<&str>(json)
            .map(Cow::Borrowed)
            .or_else(|_| serde_json::from_str::<String>(json).map(Cow::Owned))
            .map_or(Self::Other, Self::Text)
    }

    /// Its text: a string's, or a number's digits.
    pub(crate) fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(t) => Some(t),
            Self::Number(digits) => Some(digits),
            Self::Other => None,
        }
    }

    /// A field of an already parsed [`Value`] (the audit's fallback).
    pub(crate) fn of(value: &'a Value) -> Option<Self> {
        match value {
            Value::Null => None,
            Value::String(s) => Some(Self::Text(Cow::Borrowed(s))),
            Value::Number(n) => Some(Self::Number(n.as_str())),
            _ => Some(Self::Other),
        }
    }
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
    // two steps, envelope then data, to say which part is wrong.
    let envelope = match serde_json::from_slice::<Envelope<Object<TicketData>>>(payload) {
        Ok(envelope) => envelope.map_data(|data| data.0),
        Err(_) => two_step(payload)?,
    };
    match envelope.kind.as_deref() {
        None | Some("") => Err(Rejection::NoType),
        Some(BILLABLE_TYPE) => {
            ticket(envelope, payload, contract).map(|t| Decoded::Ticket(Box::new(t)))
        }
        Some(_) => Ok(Decoded::Skip(SkipReason::OtherType)),
    }
}

impl<'a, D> Envelope<'a, D> {
    fn map_data<E>(self, f: impl FnOnce(D) -> E) -> Envelope<'a, E> {
        Envelope {
            id: self.id,
            kind: self.kind,
            timestamp: self.timestamp,
            data: self.data.map(f),
        }
    }
}

/// `T` read only from a JSON object: a derived struct would also take an
/// array, field by field, and `data` must be an object.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Fields<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        deserializer.deserialize_map(Fields(std::marker::PhantomData))
    }
}

/// The envelope, then its `data` as a ticket's fields when the type is
/// billable, each failure named.
fn two_step(payload: &[u8]) -> Result<Envelope<'_, TicketData<'_>>, Rejection> {
    let envelope: Envelope<&RawValue> =
        serde_json::from_slice(payload).map_err(|e| Rejection::Malformed(e.to_string()))?;
    let billable = envelope.kind.as_deref() == Some(BILLABLE_TYPE);
    let data = envelope
        .data
        .filter(|raw| billable && raw.get().starts_with('{'))
        .map(|raw| serde_json::from_str(raw.get()))
        .transpose()
        .map_err(|e| Rejection::MalformedData(e.to_string()))?;
    Ok(Envelope {
        id: envelope.id,
        kind: envelope.kind,
        timestamp: envelope.timestamp,
        data,
    })
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
        session_id: Some(session_id.as_str()),
        orch_address: Some(dimensions.orch_address.as_str()),
        sequence_number: sequence_number.as_ref().and_then(Scalar::as_text),
        current_ns,
        previous_time: previous_time.as_ref().and_then(Scalar::as_text),
    };
    let link = Link::read(fields, Some(fee.get()));
    Ok(SignedTicket {
        event_id: event_id(contract.ids, envelope_id, &request_id, payload),
        other_id: event_id(contract.ids.other(), envelope_id, &request_id, payload),
        usage_subject_type: lenient_text(Scalar::read(data.usage_subject_type))
            .ok()
            .flatten(),
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

/// The CloudEvent id under `scheme`: the first non-blank of the envelope
/// `id` and `request_id` in the scheme's order, else `sha256:` of the
/// record's bytes (the same bytes on every redelivery).
pub(crate) fn event_id(
    scheme: IdScheme,
    envelope_id: &str,
    request_id: &str,
    payload: &[u8],
) -> String {
    let (first, second) = match scheme {
        IdScheme::Envelope => (envelope_id, request_id),
        IdScheme::RequestId => (request_id, envelope_id),
    };
    [first.trim(), second.trim()]
        .into_iter()
        .find(|id| !id.is_empty())
        .map_or_else(|| payload_digest(payload), str::to_owned)
}

fn payload_digest(payload: &[u8]) -> String {
    let digest = Sha256::digest(payload);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// `request_id` as text: a string (trimmed) or a number's digits; empty
/// when absent or unreadable.
pub(crate) fn request_id(value: Option<Scalar>) -> String {
    lenient_text(value).ok().flatten().unwrap_or_default()
}

/// The ticket's identity ([`IdentityClaim::Event`]), resolved by `rule`.
fn identity(data: &TicketData, rule: SubjectRule) -> Result<Identity, Rejection> {
    let claim = IdentityClaim::event(
        data.auth_id.as_deref(),
        data.client_id.as_deref(),
        data.usage_subject.as_deref(),
    );
    Identity::resolve(claim, rule).map_err(|e| match e {
        IdentityError::Missing => missing_identity(rule, data.auth_id.is_some()),
        IdentityError::EmptyOwner => Rejection::EmptyOwner,
        e => Rejection::Identity(e),
    })
}

/// Today's wording, or the seed's under its subject rule.
fn missing_identity(rule: SubjectRule, auth_id_given: bool) -> Rejection {
    match (rule, auth_id_given) {
        (SubjectRule::Upstream, _) => Rejection::NoIdentity,
        (SubjectRule::AuthId, true) => Rejection::EmptyAuthId,
        (SubjectRule::AuthId, false) => Rejection::NoAuthId,
    }
}

/// A fee is an integer string; a JSON integer is accepted when exact.
/// Returns the fee and its text as written.
fn fee(value: Option<Scalar>) -> Result<(FeeWei, String), Rejection> {
    match value {
        None => Err(FeeError::Missing.into()),
        Some(Scalar::Text(s)) => Ok((FeeWei::parse(&s)?, s.into_owned())),
        Some(Scalar::Number(digits)) => Ok((FeeWei::parse(digits)?, digits.to_owned())),
        Some(Scalar::Other) => Err(FeeError::NotAnInteger.into()),
    }
}

/// Today's collectors' dimensions (pymthouse `collector.yaml`), and the
/// session id read on the way (the chain's, and `manifest_id`'s fallback).
fn dimensions(data: &TicketData, request_id: &str) -> (Dimensions, String) {
    let mut dims = Dimensions::default();
    let mut text = |name: &'static str, value: Option<&RawValue>| -> String {
        lenient_text(Scalar::read(value))
            .unwrap_or_else(|()| {
                dims.unreadable.push(name);
                None
            })
            .unwrap_or_default()
    };
    let pipeline = text("pipeline", data.pipeline);
    let model = text("model_id", data.model_id);
    let manifest = text("manifest_id", data.manifest_id);
    let session = text("session_id", data.session_id);
    let app = text("app", data.app);
    let session_status = text("session_status", data.session_status);
    let orch_address = text("orch_address", data.orch_address);
    let (pipeline, model_id) = pipeline_and_model(&pipeline, &model);
    let manifest_id = [manifest.as_str(), session.as_str(), request_id]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or(UNKNOWN)
        .to_owned();
    let mut number = |name: &'static str, value: Option<&RawValue>| -> Option<Number> {
        match lenient_number(Scalar::read(value)) {
            Ok(n) => Some(n.unwrap_or_else(|| Number::from(0u8))),
            Err(()) => {
                dims.unreadable.push(name);
                None
            }
        }
    };
    let pixels = number("pixels", data.pixels);
    let num_tickets = number("num_tickets", data.num_tickets);
    let billable_secs = number("billable_secs", data.billable_secs);
    let dimensions = Dimensions {
        pipeline,
        model_id,
        manifest_id,
        app,
        session_status,
        orch_address,
        pixels,
        num_tickets,
        billable_secs,
        unreadable: dims.unreadable,
    };
    (dimensions, session)
}

/// `pipeline` in go-livepeer's `base:model` form is split at its first
/// colon (neither first nor last), unless the event names `model_id`.
fn pipeline_and_model(pipeline: &str, model: &str) -> (String, String) {
    let or_unknown = |s: &str| if s.is_empty() { UNKNOWN } else { s }.to_owned();
    if !model.is_empty() {
        return (or_unknown(pipeline), model.to_owned());
    }
    match split_inside(pipeline, ':') {
        Some((base, model)) => (base.to_owned(), model.to_owned()),
        None => (or_unknown(pipeline), UNKNOWN.to_owned()),
    }
}

/// A text dimension: a string (trimmed; blank is absent) or a number's
/// text; anything else cannot be read.
fn lenient_text(value: Option<Scalar>) -> Result<Option<String>, ()> {
    match value {
        None => Ok(None),
        Some(Scalar::Text(s)) => Ok(Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_owned)),
        Some(Scalar::Number(digits)) => Ok(Some(digits.to_owned())),
        Some(Scalar::Other) => Err(()),
    }
}

/// A numeric dimension: a JSON number, or a string holding one (`"1000"`),
/// kept with its exact digits; anything else cannot be read.
fn lenient_number(value: Option<Scalar>) -> Result<Option<Number>, ()> {
    let digits = match &value {
        None => return Ok(None),
        Some(Scalar::Number(digits)) => *digits,
        Some(Scalar::Text(s)) if s.trim().is_empty() => return Ok(None),
        Some(Scalar::Text(s)) => s.trim(),
        Some(Scalar::Other) => return Err(()),
    };
    digits.parse::<Number>().map(Some).map_err(drop)
}

/// The time the ticket says it was signed ([`claimed_time`]), else now.
fn event_time(
    data: &TicketData,
    current_time: Option<Scalar>,
    envelope_ts: Option<Scalar>,
) -> (String, DateTime<Utc>) {
    claimed_time(
        current_time,
        Scalar::read(data.current_time_unix),
        envelope_ts,
    )
    .unwrap_or_else(|| {
        let now = Utc::now();
        (now.to_rfc3339_opts(SecondsFormat::Millis, true), now)
    })
}

/// When a ticket says it was signed, and that time as text: `current_time`
/// when it is valid RFC 3339 (kept verbatim, nanoseconds and all); else
/// `current_time_unix`; else the envelope's `timestamp` (both positive unix
/// ms). All are stable across redelivery; `None` when none is readable.
pub(crate) fn claimed_time(
    current_time: Option<Scalar>,
    current_time_unix: Option<Scalar>,
    timestamp: Option<Scalar>,
) -> Option<(String, DateTime<Utc>)> {
    if let Some(Scalar::Text(t)) = &current_time {
        let t = t.trim();
        if let Ok(at) = DateTime::parse_from_rfc3339(t) {
            return Some((t.to_owned(), at.to_utc()));
        }
    }
    let at = [current_time_unix, timestamp]
        .into_iter()
        .flatten()
        .find_map(|value| unix_millis(&value))?;
    Some((at.to_rfc3339_opts(SecondsFormat::Millis, true), at))
}

fn unix_millis(value: &Scalar) -> Option<DateTime<Utc>> {
    let ms: i64 = match value {
        Scalar::Number(digits) => digits.parse().ok()?,
        Scalar::Text(s) => s.trim().parse().ok()?,
        Scalar::Other => return None,
    };
    (ms > 0)
        .then(|| DateTime::from_timestamp_millis(ms))
        .flatten()
}

/// Whether `[`/`{` nesting exceeds `limit`, ignoring brackets in strings.
/// A record with no more openers than `limit` cannot, and a real ticket has
/// two: `memchr` finds whether there are more in a SIMD pass, and only then
/// does the exact walk run.
fn nesting_exceeds(bytes: &[u8], limit: usize) -> bool {
    let openers = memchr::memchr2_iter(b'[', b'{', bytes).nth(limit);
    openers.is_some() && nesting_walk_exceeds(bytes, limit)
}

fn nesting_walk_exceeds(bytes: &[u8], limit: usize) -> bool {
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
            (
                t.dimensions.pipeline.as_str(),
                t.dimensions.model_id.as_str()
            ),
            ("unknown", "unknown")
        );
    }

    #[test]
    fn the_envelope_id_is_the_event_id_and_request_id_the_seeds() {
        let t = ticket_of(OK);
        assert_eq!((t.event_id.as_str(), t.other_id.as_str()), ("env-1", "r1"));
        let seed = ticket_under(&event(OK), &Contract::seed());
        assert_eq!(
            (seed.event_id.as_str(), seed.other_id.as_str()),
            ("r1", "env-1")
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
        assert_eq!((t.fee, t.fee_text.as_str()), (FeeWei::new(120), "000120"));
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
        assert_eq!(t.dimensions.pixels, None);
        assert_eq!(t.dimensions.pipeline, "unknown");
        assert_eq!(t.dimensions.unreadable, ["pipeline", "pixels"]);
    }

    #[test]
    fn escaped_text_is_unescaped_and_booleans_are_unreadable() {
        let t = ticket_of(
            r#"{"auth_id":"c:u","computed_fee":"1","app":"caf\u00e9 \"x\"","session_status":true,"request_id":" r-1 "}"#,
        );
        assert_eq!(t.dimensions.app, "café \"x\"");
        assert_eq!(t.dimensions.session_status, "");
        assert_eq!(t.dimensions.unreadable, ["session_status"]);
        assert_eq!(t.request_id, "r-1");
    }

    #[test]
    fn a_numeric_string_dimension_is_a_number() {
        let t = ticket_of(
            r#"{"auth_id":"c:u","computed_fee":"1","pixels":"1000","billable_secs":" 10.5 ","num_tickets":3}"#,
        );
        assert_eq!(t.dimensions.pixels.unwrap().to_string(), "1000");
        assert_eq!(t.dimensions.billable_secs.unwrap().to_string(), "10.5");
        assert_eq!(t.dimensions.num_tickets.unwrap().to_string(), "3");
        assert!(t.dimensions.unreadable.is_empty());
    }

    #[test]
    fn missing_numeric_dimensions_are_zero() {
        let t = ticket_of(r#"{"auth_id":"c:u","computed_fee":"1"}"#);
        let zero = Some(Number::from(0u8));
        assert_eq!(t.dimensions.pixels, zero);
        assert_eq!(t.dimensions.billable_secs, zero);
        assert_eq!(t.dimensions.num_tickets, zero);
    }

    #[test]
    fn manifest_id_falls_back_to_session_then_request_id() {
        let manifest = |data: &str| ticket_of(data).dimensions.manifest_id;
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
            (d.pipeline, d.model_id)
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
