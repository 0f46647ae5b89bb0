//! Text forms written in one place: bytes as lowercase hex (a SHA-256
//! digest included) and RFC 3339 times read back.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// `bytes` as lowercase hex, two digits a byte.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 digest of `bytes`, as lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// An RFC 3339 time in any offset (surrounding blanks ignored), in UTC.
pub(crate) fn parse_rfc3339(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_is_the_digest_in_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn rfc3339_times_are_read_in_any_offset_as_utc() {
        let utc = parse_rfc3339("2026-11-24T09:00:00Z").unwrap();
        assert_eq!(parse_rfc3339(" 2026-11-24T10:00:00+01:00 "), Some(utc));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
