//! Request bodies: parsed as JSON, checked against the spec's request-body
//! schema ([`spec`]), then read into typed values. What the real server
//! refuses beyond its spec is checked by the handlers after that, each rule
//! citing its server source, and collected in [`Errors`].

pub(crate) mod labels;
mod spec;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::problem::{ApiResult, InvalidParam, Problem};

pub(crate) use spec::{checker, violations, warm_up, Checker, Schema};

/// Parse a JSON request body.
pub(crate) fn parse_json(bytes: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(bytes).map_err(|e| malformed(&e))
}

pub(crate) fn malformed(e: &serde_json::Error) -> Problem {
    Problem::bad_request(
        format!("malformed JSON body: {e}"),
        vec![InvalidParam::invalid(
            "body",
            format!("malformed JSON: {e}"),
        )],
    )
}

/// Parse a body, check it against `schema` (a 400 naming every violation)
/// and read it as `T`. `what` names the body in the problem's detail.
pub(crate) fn body<T: DeserializeOwned>(bytes: &[u8], schema: Schema, what: &str) -> ApiResult<T> {
    let value = parse_json(bytes)?;
    Errors(violations(schema, &value)?).finish(what)?;
    decode(value, "body", what)
}

/// Read a value the spec already accepted as `T`. Failing here means the
/// double's type is narrower than the spec; the 400 names the value.
pub(crate) fn decode<T: DeserializeOwned>(value: Value, field: &str, what: &str) -> ApiResult<T> {
    serde_json::from_value(value).map_err(|e| {
        Problem::bad_request(
            format!("invalid {what}: {e}"),
            vec![InvalidParam::invalid(field, e.to_string())],
        )
    })
}

pub(crate) fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// Collects invalid parameters while a body is being read.
#[derive(Default)]
pub(crate) struct Errors(pub Vec<InvalidParam>);

impl Errors {
    pub(crate) fn push(&mut self, p: InvalidParam) {
        self.0.push(p);
    }

    /// Turn collected errors into a 400.
    pub(crate) fn finish(self, what: &str) -> ApiResult<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let fields: Vec<&str> = self.0.iter().map(|p| p.field.as_str()).collect();
        Err(Problem::bad_request(
            format!("invalid {what}: {}", fields.join(", ")),
            self.0,
        ))
    }
}
