//! Map: a parsed ticket and the ETH/USD price into the CloudEvent OpenMeter
//! ingests. The arithmetic is exact (see [`FeeWei::to_usd_micros`]); the
//! contract's [`Amounts`] decide how the amounts are written.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Number;
use sha2::{Digest, Sha256};

use crate::contract::{Amounts, Contract, IdScheme};
use crate::decode::{SignedTicket, BILLABLE_TYPE};
use crate::domain::{json_number, EthUsdPrice, Identity, UsdMicros};

/// The CloudEvent `source` of every event we send.
pub(crate) const SOURCE: &str = "go-livepeer-remote-signer";

/// The CloudEvent sent to `POST /openmeter/events` (`MeteringEvent`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageEvent {
    pub specversion: &'static str,
    pub id: String,
    pub source: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub subject: String,
    pub time: String,
    pub data: UsageData,
}

/// A figure meters may SUM: a JSON number with its exact digits, or (the
/// seed's form, under [`Amounts::Rounded`]) a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Figure {
    Number(Number),
    Text(String),
}

impl Figure {
    /// `digits` as a JSON number; kept as text if they were ever not a
    /// number's (never rounded, never zero).
    fn exact(digits: String) -> Self {
        match json_number(&digits) {
            Some(number) => Self::Number(number),
            None => Self::Text(digits),
        }
    }
}

/// The event's `data`; the meters read these fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageData {
    pub client_id: String,
    /// The actor of `payer#actor`, else the payer (group-by).
    pub external_user_id: String,
    pub usage_subject: String,
    pub usage_subject_type: String,
    pub billing_subject_key: String,
    pub billing_subject_kind: &'static str,
    pub actor_end_user_id: String,
    /// The customer billed; equal to the CloudEvent `subject`.
    pub openmeter_customer_key: String,
    pub network_fee_usd_micros: UsdMicros,
    /// Equal to the network fee until markup rules exist.
    pub billable_usd_micros: UsdMicros,
    pub pipeline: String,
    pub model_id: String,
    pub manifest_id: String,
    pub app: String,
    pub session_status: String,
    pub orch_address: String,
    /// Left out when the event's value could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pixels: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_tickets: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billable_secs: Option<Number>,
    pub fee_wei: Figure,
    pub gateway_request_id: String,
    pub auth_id: String,
    /// The rate used, so every invoice line can be re-derived.
    pub eth_usd_price: Figure,
    /// The signed time, kept here when `time` was moved to the start of the
    /// subscription that bills the event ([`UsageEvent::bill_from`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<String>,
    /// The id this event was first sent under, when `audit --repair` sent
    /// it again under a derived id (the first copy was proven lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_id: Option<String>,
    /// [`id_fingerprint`] of the ticket's envelope id: the built-in
    /// catalog's `id_fingerprint` meter sums it, so the audit's totals see
    /// a lost ticket and another one stored twice even when their fees are
    /// equal. The same under either `EVENT_ID` and on a repair copy.
    pub id_fingerprint: u32,
}

/// A ticket's fingerprint: the first four bytes of the SHA-256 of its
/// envelope id, big-endian. Below 2^32, so a float64 sum of up to 2^21 of
/// them (what OpenMeter's meter query computes) is exact.
pub(crate) fn id_fingerprint(envelope_id: &str) -> u32 {
    let digest = Sha256::digest(envelope_id.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
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
    /// The id the other [`crate::contract::IdScheme`] gives.
    pub other_id: String,
    /// The exact network fee, whatever `amounts` wrote.
    pub exact_usd_micros: UsdMicros,
    /// Dimensions left out because their value could not be read.
    pub unreadable: Vec<&'static str>,
}

/// The names of the `data` fields a meter may aggregate or group by; the
/// bootstrap catalog is checked against this list. It includes the fields
/// of today's collectors (see the reference's "Where the producers went
/// after the seed"): `manifest_id`, `billable_secs` and `fee_wei` (numbers),
/// which upstream's analytics meters read, and the identity fields.
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
        Amounts::Exact => (
            exact,
            Figure::exact(ticket.fee.to_string()),
            Figure::exact(price.to_string()),
        ),
        Amounts::Rounded => (
            exact.round_half_up(),
            Figure::Text(ticket.fee_text),
            Figure::Text(price.to_string()),
        ),
    };
    let envelope_id = match contract.ids {
        IdScheme::Envelope => &ticket.event_id,
        IdScheme::RequestId => &ticket.other_id,
    };
    let fingerprint = id_fingerprint(envelope_id);
    let identity = ticket.identity;
    let subject = identity.customer_key().to_string();
    let dims = ticket.dimensions;
    let event = UsageEvent {
        specversion: "1.0",
        id: ticket.event_id,
        source: SOURCE,
        kind: BILLABLE_TYPE,
        subject: subject.clone(),
        time: ticket.time,
        data: UsageData {
            client_id: identity.client_id().to_owned(),
            external_user_id: identity.external_user_id().to_owned(),
            usage_subject: identity.usage_subject().to_owned(),
            usage_subject_type: identity
                .usage_subject_type(ticket.usage_subject_type.as_deref())
                .to_owned(),
            billing_subject_key: subject.clone(),
            billing_subject_kind: identity.kind().as_str(),
            actor_end_user_id: identity.actor_end_user_id().to_owned(),
            openmeter_customer_key: subject,
            network_fee_usd_micros: fee,
            billable_usd_micros: fee,
            pipeline: dims.pipeline,
            model_id: dims.model_id,
            manifest_id: dims.manifest_id,
            app: dims.app,
            session_status: dims.session_status,
            orch_address: dims.orch_address,
            pixels: dims.pixels,
            num_tickets: dims.num_tickets,
            billable_secs: dims.billable_secs,
            fee_wei,
            gateway_request_id: ticket.request_id,
            auth_id: identity.auth_id().to_string(),
            eth_usd_price,
            signed_at: None,
            original_id: None,
            id_fingerprint: fingerprint,
        },
    };
    Mapped {
        identity,
        event,
        signed_at: ticket.signed_at,
        other_id: ticket.other_id,
        exact_usd_micros: exact,
        unreadable: dims.unreadable,
    }
}
