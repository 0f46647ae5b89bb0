//! What the server checks of `labels` beyond the spec's pattern
//! (`api/v3/labels/validate.go`, `ValidateLabel`, applied by
//! `labels.ToMetadata` when a v3 create converts its body): keys and values
//! of letters and digits with single `.`, `_` or `-` between them, and no
//! reserved key prefix.

use crate::model::Labels;
use crate::problem::{ApiResult, InvalidParam, Problem};

/// `reservedPrefixMatcher`.
const RESERVED_PREFIXES: [&str; 8] = [
    "_",
    "kong",
    "konnect",
    "insomnia",
    "mesh",
    "kic",
    "kuma",
    "openmeter",
];

/// `keyValueFormat`, with the spec's 63-character limit.
fn well_formed(s: &str) -> bool {
    let separator = |b: u8| matches!(b, b'.' | b'_' | b'-');
    let bytes = s.as_bytes();
    let alnum_at = |i: Option<&u8>| i.is_some_and(u8::is_ascii_alphanumeric);
    bytes.len() <= 63
        && alnum_at(bytes.first())
        && alnum_at(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || separator(*b))
        && !bytes.windows(2).any(|w| separator(w[0]) && separator(w[1]))
}

/// The server's messages for one label (`ValidateLabel`).
fn issues(key: &str, value: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !well_formed(key) {
        out.push("label key must be in valid format");
    }
    if !well_formed(value) {
        out.push("label value must be in valid format");
    }
    if RESERVED_PREFIXES.iter().any(|p| key.starts_with(p)) {
        out.push("label key must not have reserved prefix");
    }
    out
}

/// A 400 naming every refused label, as the plan create answers it
/// (`api/v3/handlers/plans/convert.go`, `FromAPICreatePlanRequest`).
pub(crate) fn check(labels: Option<&Labels>) -> ApiResult<()> {
    let messages: Vec<&str> = labels
        .into_iter()
        .flatten()
        .flat_map(|(k, v)| issues(k, v))
        .collect();
    if messages.is_empty() {
        return Ok(());
    }
    let detail = format!("failed to convert label metadata: {}", messages.join("\n"));
    let params = messages
        .iter()
        .map(|m| InvalidParam::invalid("labels", *m))
        .collect();
    Err(Problem::bad_request(detail, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_format_and_prefixes() {
        assert!(issues("plan_kind", "owner_starter").is_empty());
        assert_eq!(
            issues("kong", "x"),
            ["label key must not have reserved prefix"]
        );
        assert_eq!(issues("a__b", "x"), ["label key must be in valid format"]);
        assert_eq!(issues("a", "x-"), ["label value must be in valid format"]);
    }
}
