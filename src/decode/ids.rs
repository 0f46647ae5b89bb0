//! The ticket's ids: the CloudEvent id under each scheme, and `request_id`.

use sha2::{Digest, Sha256};

use super::scalar::{lenient_text, Scalar};
use crate::contract::IdScheme;

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
