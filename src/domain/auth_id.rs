//! The signer's `auth_id`, parsed once, and why one is refused.

use std::fmt;

use thiserror::Error;

use super::split::split_inside;

/// OpenMeter's limit on customer keys (`ExternalResourceKey`, maxLength 256).
pub(crate) const MAX_KEY_CHARS: usize = 256;

/// Why an identity could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentityError {
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} is longer than {MAX_KEY_CHARS} characters")]
    TooLong { field: &'static str },
    #[error("{field} contains control characters")]
    ControlCharacters { field: &'static str },
    #[error("{field} contains the invisible formatting character U+{code_point:04X} (a bidirectional control, zero-width or similar), so it would not display as the bytes billed")]
    InvisibleCharacters {
        field: &'static str,
        code_point: u32,
    },
    #[error("{field} is not of the form client_id:external_user_id")]
    NotCompound { field: &'static str },
    /// `<client>:owner:` with nothing after the prefix.
    #[error("empty owner id")]
    EmptyOwner,
    /// The input names no identity at all.
    #[error("missing identity")]
    Missing,
}

/// The signer's `auth_id`: trimmed, non-empty, at most 256 characters, no
/// control characters and no invisible format characters (Unicode `Cf`,
/// line and paragraph separators). It is the customer key, name and subject
/// all at once, so what OpenMeter displays must be exactly what is billed:
/// a U+202E would show a customer under another name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuthId(String);

impl AuthId {
    /// Parses an `auth_id` as read from an event or a request field.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, IdentityError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(IdentityError::Empty { field });
        }
        if trimmed.chars().count() > MAX_KEY_CHARS {
            return Err(IdentityError::TooLong { field });
        }
        if trimmed.chars().any(char::is_control) {
            return Err(IdentityError::ControlCharacters { field });
        }
        if let Some(c) = trimmed.chars().find(|c| is_invisible(*c)) {
            return Err(IdentityError::InvisibleCharacters {
                field,
                code_point: c.into(),
            });
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Splits at the first colon when it is neither the first nor the last
    /// character (the original's rule); `None` when the id is not compound.
    pub(super) fn split(&self) -> Option<(&str, &str)> {
        split_inside(&self.0, ':')
    }
}

impl fmt::Display for AuthId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Format characters (bidi overrides and isolates, zero-width space and
/// joiners, BOM, soft hyphen…) and line/paragraph separators: they change
/// how a key renders without being seen.
fn is_invisible(c: char) -> bool {
    use unicode_general_category::{get_general_category, GeneralCategory as G};
    matches!(
        get_general_category(c),
        G::Format | G::LineSeparator | G::ParagraphSeparator
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_id_is_trimmed() {
        assert_eq!(AuthId::parse("auth_id", "  a:b ").unwrap().as_str(), "a:b");
    }

    #[test]
    fn blank_auth_id_is_rejected() {
        assert_eq!(
            AuthId::parse("auth_id", "  "),
            Err(IdentityError::Empty { field: "auth_id" })
        );
    }

    #[test]
    fn auth_id_longer_than_256_chars_is_rejected() {
        let long = "x".repeat(257);
        assert!(matches!(
            AuthId::parse("auth_id", &long),
            Err(IdentityError::TooLong { .. })
        ));
        assert!(AuthId::parse("auth_id", &"é".repeat(256)).is_ok());
    }

    #[test]
    fn auth_id_with_control_characters_is_rejected() {
        assert!(matches!(
            AuthId::parse("auth_id", "a\u{0}b"),
            Err(IdentityError::ControlCharacters { .. })
        ));
    }

    #[test]
    fn auth_id_with_bidi_controls_or_invisible_format_characters_is_rejected() {
        for (raw, code_point) in [
            ("acme:\u{202E}ecilA", 0x202E),
            ("acme:al\u{200B}ice", 0x200B),
            ("\u{2066}acme:alice\u{2069}", 0x2066),
            ("acme:\u{FEFF}alice", 0xFEFF),
            ("acme:ali\u{00AD}ce", 0xAD),
            ("acme:a\u{2028}b", 0x2028),
        ] {
            assert_eq!(
                AuthId::parse("auth_id", raw),
                Err(IdentityError::InvisibleCharacters {
                    field: "auth_id",
                    code_point
                }),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn auth_id_with_visible_non_ascii_characters_is_accepted() {
        for raw in [
            "acme:zoë",
            "客户:用户",
            "acme:ali ce",
            "acme:👩",
            "عميل:مستخدم",
        ] {
            assert!(AuthId::parse("auth_id", raw).is_ok(), "{raw:?}");
        }
    }
}
