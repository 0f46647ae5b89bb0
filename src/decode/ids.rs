//! The ticket's ids: the CloudEvent id under each scheme, its fingerprint,
//! and `request_id`.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use super::scalar::{lenient_text, Scalar};
use crate::contract::IdScheme;

/// A ticket's ids, computed once in decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ids {
    /// The CloudEvent id under the contract's scheme.
    pub(crate) event: String,
    /// The envelope `id` (trimmed), kept only under
    /// [`IdScheme::RequestId`] when it is not blank: there `event` does not
    /// show it, and the audit's [`other_id`] needs it. Under
    /// [`IdScheme::Envelope`] it is `event` itself.
    pub(crate) envelope: Option<String>,
    /// [`id_fingerprint`] of the id the envelope scheme gives.
    pub(crate) fingerprint: u32,
}

/// The ids of a ticket whose envelope `id` and `request_id` are these, under
/// `scheme`. Each scheme takes the first non-blank of the envelope `id` and
/// `request_id` in its order, else `sha256:` of the record's bytes (the
/// same bytes on every redelivery).
pub(crate) fn ids(scheme: IdScheme, envelope_id: &str, request_id: &str, payload: &[u8]) -> Ids {
    let event = event_id(scheme, envelope_id, request_id, payload);
    let envelope = match scheme {
        IdScheme::Envelope => None,
        IdScheme::RequestId => Some(envelope_id.trim())
            .filter(|id| !id.is_empty())
            .map(str::to_owned),
    };
    let fingerprint = id_fingerprint(first_non_blank(envelope_id, request_id).unwrap_or(&event));
    Ids {
        event,
        envelope,
        fingerprint,
    }
}

/// The CloudEvent id under `scheme` (see [`ids`]), without the rest of
/// a ticket's ids (the audit asks it of dead letters).
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
    first_non_blank(first, second).map_or_else(|| payload_digest(payload), str::to_owned)
}

/// The id the scheme other than `scheme` gives a ticket sent under
/// `event_id`, from what the event keeps: its `request_id` and, under
/// [`IdScheme::RequestId`], [`Ids::envelope`]. When both ids are blank both
/// schemes give the record's digest, which is `event_id`.
pub(crate) fn other_id<'a>(
    scheme: IdScheme,
    event_id: &'a str,
    request_id: &'a str,
    envelope_id: Option<&'a str>,
) -> &'a str {
    match scheme {
        IdScheme::Envelope => first_non_blank(request_id, event_id).unwrap_or(event_id),
        IdScheme::RequestId => envelope_id.unwrap_or(event_id),
    }
}

fn first_non_blank<'a>(first: &'a str, second: &'a str) -> Option<&'a str> {
    [first.trim(), second.trim()]
        .into_iter()
        .find(|id| !id.is_empty())
}

fn payload_digest(payload: &[u8]) -> String {
    format!("sha256:{}", crate::encoding::sha256_hex(payload))
}

/// A ticket's fingerprint: the first four bytes of the SHA-256 of its
/// envelope id, big-endian. Below 2^32, so a float64 sum of up to 2^21 of
/// them (what OpenMeter's meter query computes) is exact.
pub(crate) fn id_fingerprint(envelope_id: &str) -> u32 {
    let digest = Sha256::digest(envelope_id.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// `request_id` as text: a string (trimmed) or a number's digits; empty
/// when absent or unreadable.
pub(crate) fn request_id(value: Option<Scalar>) -> String {
    lenient_text(value)
        .ok()
        .flatten()
        .map(Cow::into_owned)
        .unwrap_or_default()
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

    #[test]
    fn the_other_id_is_what_the_other_scheme_gives() {
        let cases = [("env", "req"), ("env", " "), (" ", "req"), ("", "")];
        for (envelope_id, request_id) in cases {
            for scheme in [IdScheme::Envelope, IdScheme::RequestId] {
                let ids = ids(scheme, envelope_id, request_id, b"{}");
                let other = other_id(
                    scheme,
                    &ids.event,
                    request_id.trim(),
                    ids.envelope.as_deref(),
                );
                let expected = event_id(scheme.other(), envelope_id, request_id, b"{}");
                assert_eq!(
                    other, expected,
                    "{scheme:?} of {envelope_id:?}, {request_id:?}"
                );
            }
        }
    }

    #[test]
    fn the_fingerprint_is_of_the_envelope_schemes_id_under_either_scheme() {
        for scheme in [IdScheme::Envelope, IdScheme::RequestId] {
            assert_eq!(
                ids(scheme, "env", "req", b"{}").fingerprint,
                id_fingerprint("env")
            );
            assert_eq!(
                ids(scheme, " ", "req", b"{}").fingerprint,
                id_fingerprint("req")
            );
        }
    }

    #[test]
    fn a_fingerprint_is_the_first_four_bytes_of_the_ids_sha256() {
        // SHA-256 of the empty string begins e3 b0 c4 42.
        assert_eq!(id_fingerprint(""), 0xe3b0_c442);
    }
}
