//! Map: a parsed ticket and the ETH/USD price into the CloudEvent OpenMeter
//! ingests. The arithmetic is exact (see [`FeeWei::to_usd_micros`]); the
//! contract's [`Amounts`] decide how the amounts are written.

mod json;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::contract::{Amounts, Contract, IdScheme};
use crate::decode::{other_id, Dimensions, SignedTicket, BILLABLE_TYPE};
use crate::domain::{json_number, serialize_digits, EthUsdPrice, FeeWei, Identity, UsdMicros};

/// The CloudEvent `source` of every event we send.
pub(crate) const SOURCE: &str = "go-livepeer-remote-signer";

/// The CloudEvent sent to `POST /openmeter/events` (`MeteringEvent`). Its
/// `subject` is the customer billed, read from the identity in `data`
/// ([`UsageEvent::subject`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    pub specversion: &'static str,
    pub id: String,
    pub source: &'static str,
    pub kind: &'static str,
    pub time: String,
    pub data: UsageData,
}

impl UsageEvent {
    /// The CloudEvent `subject`: the billing key of the event's identity.
    pub fn subject(&self) -> &str {
        self.data.identity.billing_key().as_str()
    }
}

impl Serialize for UsageEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut event = serializer.serialize_struct("UsageEvent", 7)?;
        event.serialize_field("specversion", self.specversion)?;
        event.serialize_field("id", &self.id)?;
        event.serialize_field("source", self.source)?;
        event.serialize_field("type", self.kind)?;
        event.serialize_field("subject", self.subject())?;
        event.serialize_field("time", &self.time)?;
        event.serialize_field("data", &self.data)?;
        event.end()
    }
}

/// A figure meters may SUM: a JSON number with its exact digits, or (the
/// seed's form, under [`Amounts::Rounded`]) a string. The numbers are kept
/// as their values and written out only in the request body, so mapping a
/// ticket formats neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Figure {
    Wei(FeeWei),
    Price(EthUsdPrice),
    Text(String),
}

impl Serialize for Figure {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Wei(fee) => serializer.serialize_u128(fee.get()),
            Self::Price(price) => serialize_digits(&price.to_string(), serializer),
            Self::Text(text) => serializer.serialize_str(text),
        }
    }
}

/// The event's `data`; the meters read these fields ([`DATA_FIELDS`]).
/// The identity's are written from the shared [`Identity`], never copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageData {
    /// `client_id`, `external_user_id` (the actor of `payer#actor`, else
    /// the payer), `usage_subject`, `billing_subject_key`,
    /// `billing_subject_kind`, `actor_end_user_id`, `openmeter_customer_key`
    /// (the customer billed, equal to the CloudEvent `subject`) and
    /// `auth_id`.
    pub identity: Identity,
    /// The event's own `usage_subject_type`; `data` carries
    /// [`Identity::usage_subject_type`] of it.
    pub given_usage_subject_type: Option<String>,
    pub network_fee_usd_micros: UsdMicros,
    /// Equal to the network fee until markup rules exist.
    pub billable_usd_micros: UsdMicros,
    /// `pipeline` … `billable_secs`, as decode read them.
    pub dimensions: Dimensions,
    pub fee_wei: Figure,
    pub gateway_request_id: String,
    /// The rate used, so every invoice line can be re-derived.
    pub eth_usd_price: Figure,
    /// The signed time, kept here when `time` was moved to the start of the
    /// subscription that bills the event ([`UsageEvent::bill_from`]).
    pub signed_at: Option<String>,
    /// The id this event was first sent under, when `audit --repair` sent
    /// it again under a derived id (the first copy was proven lost).
    pub original_id: Option<String>,
    /// [`SignedTicket::id_fingerprint`], of the ticket's envelope id: the built-in
    /// catalog's `id_fingerprint` meter sums it, so the audit's totals see
    /// a lost ticket and another one stored twice even when their fees are
    /// equal. The same under either `EVENT_ID` and on a repair copy.
    pub id_fingerprint: u32,
}

/// `data` in the seed's field order; a dimension that could not be read,
/// and `signed_at` and `original_id` when unset, are left out.
impl Serialize for UsageData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (id, dims) = (&self.identity, &self.dimensions);
        let subject = id.billing_key().as_str();
        let given = self.given_usage_subject_type.as_deref();
        let mut data = serializer.serialize_struct("UsageData", DATA_FIELDS.len())?;
        data.serialize_field("client_id", id.client_id())?;
        data.serialize_field("external_user_id", id.external_user_id())?;
        data.serialize_field("usage_subject", id.usage_subject())?;
        data.serialize_field("usage_subject_type", id.usage_subject_type(given))?;
        data.serialize_field("billing_subject_key", subject)?;
        data.serialize_field("billing_subject_kind", id.kind().as_str())?;
        data.serialize_field("actor_end_user_id", id.actor_end_user_id())?;
        data.serialize_field("openmeter_customer_key", subject)?;
        data.serialize_field("network_fee_usd_micros", &self.network_fee_usd_micros)?;
        data.serialize_field("billable_usd_micros", &self.billable_usd_micros)?;
        data.serialize_field("pipeline", dims.pipeline())?;
        data.serialize_field("model_id", dims.model_id())?;
        data.serialize_field("manifest_id", dims.manifest_id())?;
        data.serialize_field("app", dims.app())?;
        data.serialize_field("session_status", dims.session_status())?;
        data.serialize_field("orch_address", dims.orch_address())?;
        digits(&mut data, "pixels", dims.pixels())?;
        digits(&mut data, "num_tickets", dims.num_tickets())?;
        digits(&mut data, "billable_secs", dims.billable_secs())?;
        data.serialize_field("fee_wei", &self.fee_wei)?;
        data.serialize_field("gateway_request_id", &self.gateway_request_id)?;
        data.serialize_field("auth_id", id.auth_id().as_str())?;
        data.serialize_field("eth_usd_price", &self.eth_usd_price)?;
        optional(&mut data, "signed_at", &self.signed_at)?;
        optional(&mut data, "original_id", &self.original_id)?;
        data.serialize_field("id_fingerprint", &self.id_fingerprint)?;
        data.end()
    }
}

/// `value` under `key` when it is set; else the field is left out.
fn optional<S: SerializeStruct, T: Serialize>(
    data: &mut S,
    key: &'static str,
    value: &Option<T>,
) -> Result<(), S::Error> {
    match value {
        Some(value) => data.serialize_field(key, value),
        None => data.skip_field(key),
    }
}

/// A number's exact `digits` under `key` when it was read; else the field
/// is left out.
fn digits<S: SerializeStruct>(
    data: &mut S,
    key: &'static str,
    digits: Option<&str>,
) -> Result<(), S::Error> {
    match digits.and_then(json_number) {
        Some(number) => data.serialize_field(key, &number),
        None => data.skip_field(key),
    }
}

impl UsageEvent {
    /// Moves `time` to `start`, keeping the signed time in `data.signed_at`:
    /// OpenMeter invoices an event only when its `time` falls inside its
    /// subscription's service period.
    pub fn bill_from(&mut self, start: DateTime<Utc>) {
        let signed = std::mem::replace(
            &mut self.time,
            start.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        );
        self.data.signed_at.get_or_insert(signed);
    }
}

/// A ticket ready to send, with the identity to ensure first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub identity: Identity,
    pub event: UsageEvent,
    /// The event's `time`, parsed.
    pub signed_at: DateTime<Utc>,
    /// The envelope `id` when the event's id does not show it.
    envelope_id: Option<String>,
    /// The exact network fee, whatever `amounts` wrote.
    pub exact_usd_micros: UsdMicros,
    /// Dimensions left out because their value could not be read.
    pub unreadable: Vec<&'static str>,
}

impl Mapped {
    /// The id the scheme other than `scheme` (the one it was mapped under)
    /// gives this ticket: the audit matches events sent before a cut-over
    /// by it.
    pub fn other_id(&self, scheme: IdScheme) -> &str {
        other_id(
            scheme,
            &self.event.id,
            &self.event.data.gateway_request_id,
            self.envelope_id.as_deref(),
        )
    }
}

/// The names of the `data` fields a meter may aggregate or group by; the
/// bootstrap catalog is checked against this list. It includes the fields
/// of today's collectors (see the reference's "Where the producers went
/// after the seed"): `manifest_id`, `billable_secs` and `fee_wei` (numbers),
/// which upstream's analytics meters read, and the identity fields. A test
/// holds it to the fields [`UsageData`] serialises.
pub(crate) const DATA_FIELDS: &[&str] = &[
    "client_id",
    "external_user_id",
    "usage_subject",
    "usage_subject_type",
    "billing_subject_key",
    "billing_subject_kind",
    "actor_end_user_id",
    "openmeter_customer_key",
    "network_fee_usd_micros",
    "billable_usd_micros",
    "pipeline",
    "model_id",
    "manifest_id",
    "app",
    "session_status",
    "orch_address",
    "pixels",
    "num_tickets",
    "billable_secs",
    "fee_wei",
    "gateway_request_id",
    "auth_id",
    "eth_usd_price",
    "signed_at",
    "original_id",
    "id_fingerprint",
];

/// Converts a ticket into its CloudEvent at `price`.
pub fn map(ticket: SignedTicket, price: &EthUsdPrice, contract: &Contract) -> Mapped {
    let exact = ticket.fee.to_usd_micros(price);
    let (fee, fee_wei, eth_usd_price) = match contract.amounts {
        Amounts::Exact => (exact, Figure::Wei(ticket.fee), Figure::Price(*price)),
        Amounts::Rounded => (
            exact.round_half_up(),
            Figure::Text(ticket.fee_text.unwrap_or_else(|| ticket.fee.to_string())),
            Figure::Text(price.to_string()),
        ),
    };
    let identity = ticket.identity;
    let mut dimensions = ticket.dimensions;
    let unreadable = std::mem::take(&mut dimensions.unreadable);
    let event = UsageEvent {
        specversion: "1.0",
        id: ticket.event_id,
        source: SOURCE,
        kind: BILLABLE_TYPE,
        time: ticket.time,
        data: UsageData {
            identity: identity.clone(),
            given_usage_subject_type: ticket.usage_subject_type,
            network_fee_usd_micros: fee,
            billable_usd_micros: fee,
            dimensions,
            fee_wei,
            gateway_request_id: ticket.request_id,
            eth_usd_price,
            signed_at: None,
            original_id: None,
            id_fingerprint: ticket.id_fingerprint,
        },
    };
    Mapped {
        identity,
        event,
        signed_at: ticket.signed_at,
        envelope_id: ticket.envelope_id,
        exact_usd_micros: exact,
        unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode, id_fingerprint, Decoded, DEFAULT_MAX_BYTES};

    /// A ticket of `app:owner:U1` signed at 2026-09-09T00:00:00Z.
    const TICKET: &str = r#"{"request_id":"r1","auth_id":"app:owner:U1","computed_fee":"333333333333","current_time":"2026-09-09T00:00:00Z","pixels":7}"#;

    fn mapped(data: &str, contract: &Contract) -> Mapped {
        let payload = format!(r#"{{"id":"env-1","type":"create_signed_ticket","data":{data}}}"#);
        let Ok(Decoded::Ticket(ticket)) = decode(payload.as_bytes(), DEFAULT_MAX_BYTES, contract)
        else {
            panic!("{payload} is a ticket");
        };
        map(*ticket, &"3500".parse().unwrap(), contract)
    }

    fn data(mapped: &Mapped) -> serde_json::Value {
        serde_json::to_value(&mapped.event.data).unwrap()
    }

    fn rounded() -> Contract {
        Contract {
            amounts: Amounts::Rounded,
            ..Contract::default()
        }
    }

    fn at(time: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(time).unwrap().to_utc()
    }

    #[test]
    fn exact_amounts_are_the_exact_micros_and_figures_as_json_numbers() {
        let d = data(&mapped(TICKET, &Contract::default()));
        assert_eq!(d["network_fee_usd_micros"].to_string(), "1166.6666666655");
        assert_eq!(d["fee_wei"].to_string(), "333333333333");
        assert_eq!(d["eth_usd_price"].to_string(), "3500");
    }

    #[test]
    fn rounded_amounts_are_whole_micros_half_up_and_figures_as_text() {
        let d = data(&mapped(TICKET, &rounded()));
        assert_eq!(d["network_fee_usd_micros"].to_string(), "1167");
        assert_eq!(d["fee_wei"], "333333333333");
        assert_eq!(d["eth_usd_price"], "3500");
    }

    #[test]
    fn a_rounded_fee_wei_is_the_fee_as_the_signer_wrote_it() {
        let d = data(&mapped(
            r#"{"auth_id":"c:u","computed_fee":"000120"}"#,
            &rounded(),
        ));
        assert_eq!(d["fee_wei"], "000120");
    }

    #[test]
    fn the_exact_fee_is_kept_whatever_the_amounts_written() {
        let m = mapped(TICKET, &rounded());
        assert_eq!(m.exact_usd_micros.to_string(), "1166.6666666655");
    }

    #[test]
    fn the_billable_amount_is_the_network_fee() {
        let m = mapped(TICKET, &Contract::default());
        assert_eq!(
            m.event.data.billable_usd_micros,
            m.event.data.network_fee_usd_micros
        );
    }

    #[test]
    fn the_billing_subject_is_the_subject_and_the_customer_key() {
        let m = mapped(TICKET, &Contract::default());
        assert_eq!(m.event.subject(), "U1");
        let d = data(&m);
        for field in ["billing_subject_key", "openmeter_customer_key"] {
            assert_eq!(d[field], "U1", "{field}");
        }
        assert_eq!(d["billing_subject_kind"], "owner_wallet");
        assert_eq!(d["auth_id"], "app:owner:U1");
    }

    #[test]
    fn an_owner_is_an_app_owner_whatever_type_the_event_gives() {
        let with_type = TICKET.replace(r#""pixels":7"#, r#""usage_subject_type":"oidc_user""#);
        assert_eq!(
            data(&mapped(&with_type, &Contract::default()))["usage_subject_type"],
            "app_owner"
        );
    }

    #[test]
    fn the_event_is_a_create_signed_ticket_from_the_remote_signer() {
        let e = mapped(TICKET, &Contract::default()).event;
        assert_eq!(
            (e.specversion, e.source, e.kind, e.id.as_str()),
            ("1.0", SOURCE, BILLABLE_TYPE, "env-1")
        );
        assert_eq!(e.data.gateway_request_id, "r1");
    }

    #[test]
    fn the_fingerprint_is_of_the_envelope_id_under_either_id_scheme() {
        let default = mapped(TICKET, &Contract::default());
        let seed = mapped(TICKET, &Contract::seed());
        assert_eq!(seed.event.id, "r1");
        assert_eq!(default.event.data.id_fingerprint, id_fingerprint("env-1"));
        assert_eq!(seed.event.data.id_fingerprint, id_fingerprint("env-1"));
    }

    #[test]
    fn the_other_id_is_the_other_schemes() {
        assert_eq!(
            mapped(TICKET, &Contract::default()).other_id(IdScheme::Envelope),
            "r1"
        );
        assert_eq!(
            mapped(TICKET, &Contract::seed()).other_id(IdScheme::RequestId),
            "env-1"
        );
    }

    #[test]
    fn an_unreadable_dimension_is_left_out_of_data() {
        let m = mapped(
            r#"{"auth_id":"c:u","computed_fee":"1","pixels":"many"}"#,
            &Contract::default(),
        );
        assert!(data(&m).get("pixels").is_none());
        assert_eq!(m.unreadable, ["pixels"]);
    }

    #[test]
    fn billing_from_a_start_moves_the_time_and_keeps_the_signed_time_once() {
        let mut event = mapped(TICKET, &Contract::default()).event;
        event.bill_from(at("2026-10-01T00:00:00Z"));
        event.bill_from(at("2026-11-01T00:00:00Z"));
        assert_eq!(event.time, "2026-11-01T00:00:00Z");
        assert_eq!(
            event.data.signed_at.as_deref(),
            Some("2026-09-09T00:00:00Z")
        );
    }

    #[test]
    fn data_fields_are_the_fields_data_is_sent_with() {
        let mut event = mapped(TICKET, &Contract::default()).event;
        event.bill_from(at("2026-10-01T00:00:00Z"));
        event.data.original_id = Some("env-0".into());
        let sent = serde_json::to_value(&event.data).unwrap();
        let mut sent: Vec<&str> = sent
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut listed = DATA_FIELDS.to_vec();
        sent.sort_unstable();
        listed.sort_unstable();
        assert_eq!(sent, listed);
    }
}
