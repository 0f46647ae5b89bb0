//! The shared fixture files (`../shared/fixtures`, read-only upstream
//! copies) and ticketmeter's own (`tests/fixtures`, cases upstream's files
//! do not have yet): event lines, their expected outcomes, and how an
//! expectation is compared with what was sent.

use std::path::{Path, PathBuf};

use serde_json::Value;
use ticketmeter::UsdMicros;

pub(crate) fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
}

/// Today's contract (`upstream-events.jsonl` → `upstream-expected.jsonl`),
/// under the default settings.
pub(crate) const UPSTREAM_EVENTS: &str = "upstream-events.jsonl";
/// The seed's contract, under the settings that keep the seed's ids,
/// subjects and rounding ([`Contract::seed`]).
pub(crate) const SEED_EVENTS: &str = "signer-events.jsonl";

/// ticketmeter's own fixture lines, in the shared files' format.
pub(crate) fn own_fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// ticketmeter's own events (`tests/fixtures/events.jsonl` →
/// `expected.jsonl`), under the default settings.
pub(crate) const OWN_EVENTS: &str = "events.jsonl";

fn fixture_cases(events: &str, expected: &str) -> Vec<(String, Value)> {
    cases_in(&fixtures_dir(), events, expected)
}

fn cases_in(dir: &Path, events: &str, expected: &str) -> Vec<(String, Value)> {
    let read =
        |name: &str| std::fs::read_to_string(dir.join(name)).expect("fixtures beside the repo");
    read(events)
        .lines()
        .zip(read(expected).lines())
        .map(|(e, x)| (e.to_owned(), serde_json::from_str(x).unwrap()))
        .collect()
}

/// Every field `expected` names has exactly the expected value in
/// `actual` (Benthos' `json_contains`); numbers compare by decimal value,
/// never through a float.
pub(crate) fn assert_subset(expected: &Value, actual: &Value, path: &str) {
    match (expected, actual) {
        (Value::Object(fields), _) => {
            for (k, v) in fields {
                assert_subset(v, &actual[k], &format!("{path}.{k}"));
            }
        }
        (Value::Number(x), Value::Number(a)) => {
            let decimal = |n: &serde_json::Number| n.to_string().parse::<UsdMicros>().unwrap();
            assert_eq!(decimal(a), decimal(x), "{path}: {a} is not {x}");
        }
        _ => assert_eq!(actual, expected, "{path}"),
    }
}

/// Today's fixture lines: (event payload, expected outcome by default).
pub(crate) fn fixtures() -> Vec<(String, Value)> {
    fixture_cases(UPSTREAM_EVENTS, "upstream-expected.jsonl")
}

/// ticketmeter's own fixture lines: (event payload, expected outcome by
/// default).
pub(crate) fn own_fixtures() -> Vec<(String, Value)> {
    cases_in(&own_fixtures_dir(), OWN_EVENTS, "expected.jsonl")
}

/// The seed's fixture lines: (event payload, expected outcome under
/// [`Contract::seed`]).
pub(crate) fn seed_fixtures() -> Vec<(String, Value)> {
    fixture_cases(SEED_EVENTS, "expected.jsonl")
}

/// The payloads with `data.current_time` set to now (those without a
/// `data` object as they are).
pub(crate) fn signed_now(payloads: &[String]) -> Vec<String> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    payloads
        .iter()
        .map(|p| match serde_json::from_str::<Value>(p) {
            Ok(mut v) if v["data"].is_object() => {
                v["data"]["current_time"] = Value::String(now.clone());
                v.to_string()
            }
            _ => p.clone(),
        })
        .collect()
}
