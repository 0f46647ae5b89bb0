//! Map: a parsed ticket and the ETH/USD price into the CloudEvent OpenMeter
//! ingests. The arithmetic is exact (see [`FeeWei::to_usd_micros`]).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::decode::{SignedTicket, BILLABLE_TYPE};
use crate::domain::{EthUsdPrice, FeeError, Identity, UsdMicros};

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

/// The event's `data`; the meters read these fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageData {
    pub client_id: String,
    pub external_user_id: String,
    pub usage_subject: String,
    pub usage_subject_type: &'static str,
    pub network_fee_usd_micros: UsdMicros,
    /// Equal to the network fee until markup rules exist.
    pub billable_usd_micros: UsdMicros,
    pub pipeline: String,
    pub model_id: String,
    pub pixels: i64,
    pub fee_wei: String,
    pub gateway_request_id: String,
    pub auth_id: String,
    /// The rate used, so every invoice line can be re-derived.
    pub eth_usd_price: EthUsdPrice,
    /// The signed time, kept here when `time` was moved to the start of the
    /// subscription that bills the event ([`UsageEvent::bill_from`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<String>,
    /// The id this event was first sent under, when `audit --repair` sent
    /// it again under a derived id (the first copy was proven lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_id: Option<String>,
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
    "network_fee_usd_micros",
    "billable_usd_micros",
    "pipeline",
    "model_id",
    "pixels",
    "fee_wei",
    "gateway_request_id",
    "auth_id",
    "eth_usd_price",
    "signed_at",
    "original_id",
    "manifest_id",
    "billable_secs",
    "app",
    "session_status",
    "orch_address",
    "num_tickets",
    "billing_subject_key",
    "billing_subject_kind",
    "actor_end_user_id",
    "openmeter_customer_key",
];

/// Converts a ticket into its CloudEvent at `price`.
pub fn map(ticket: SignedTicket, price: &EthUsdPrice) -> Result<Mapped, FeeError> {
    let fee = ticket.fee.to_usd_micros(price)?;
    let identity = ticket.identity;
    let auth_id = identity.auth_id().to_string();
    let event = UsageEvent {
        specversion: "1.0",
        id: ticket.event_id,
        source: SOURCE,
        kind: BILLABLE_TYPE,
        subject: auth_id.clone(),
        time: ticket.time,
        data: UsageData {
            client_id: identity.client_id().to_owned(),
            external_user_id: identity.external_user_id().to_owned(),
            usage_subject: identity.external_user_id().to_owned(),
            usage_subject_type: "external_user_id",
            network_fee_usd_micros: fee,
            billable_usd_micros: fee,
            pipeline: ticket.pipeline,
            model_id: ticket.model_id,
            pixels: ticket.pixels,
            fee_wei: ticket.fee_text,
            gateway_request_id: ticket.request_id,
            auth_id,
            eth_usd_price: *price,
            signed_at: None,
            original_id: None,
        },
    };
    Ok(Mapped {
        identity,
        event,
        signed_at: ticket.signed_at,
    })
}
