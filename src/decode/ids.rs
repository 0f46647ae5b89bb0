//! The ticket's ids: the CloudEvent id under each scheme, and `request_id`.

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
    format!("sha256:{}", crate::encoding::sha256_hex(payload))
}

/// `request_id` as text: a string (trimmed) or a number's digits; empty
/// when absent or unreadable.
pub(crate) fn request_id(value: Option<Scalar>) -> String {
    lenient_text(value).ok().flatten().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_takes_its_first_non_blank_id() {
        let payload = b"{}";
        assert_eq!(event_id(IdScheme::Envelope, "env", "req", payload), "env");
        assert_eq!(event_id(IdScheme::RequestId, "env", "req", payload), "req");
        assert_eq!(event_id(IdScheme::RequestId, "env", " ", payload), "env");
    }

    #[test]
    fn without_either_id_both_schemes_take_the_records_digest() {
        let payload = b"{}";
        let digest = event_id(IdScheme::Envelope, "", " ", payload);
        assert_eq!(digest, event_id(IdScheme::RequestId, " ", "", payload));
        assert_eq!(
            digest,
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
