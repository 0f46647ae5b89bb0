//! RFC 7807 problem responses shaped like the spec's `BaseError` family.
//!
//! Handlers return [`Problem`] as an error; it is rendered to
//! `application/problem+json` by the gate middleware, which is the only place
//! that knows the request path (the spec's `instance`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One entry of `invalid_parameters`. The optional fields select which of the
/// spec's `InvalidParameter*` variants the entry matches (exactly one of them,
/// because the spec uses `oneOf`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvalidParam {
    pub field: String,
    pub reason: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
}

impl InvalidParam {
    /// `InvalidParameterStandard` with a rule from the spec's `InvalidRules`.
    pub fn rule(field: impl Into<String>, rule: &str, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            source: "body".into(),
            rule: Some(rule.into()),
            minimum: None,
            maximum: None,
            choices: None,
        }
    }

    pub fn required(field: impl Into<String>) -> Self {
        Self::rule(field, "required", "is required")
    }

    pub fn unknown(field: impl Into<String>) -> Self {
        Self::rule(field, "unknown_property", "unknown property")
    }

    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::rule(field, "invalid", reason)
    }

    /// `InvalidParameterMinimumLength` (`min_length`).
    pub fn min_length(field: impl Into<String>, minimum: usize) -> Self {
        let mut p = Self::rule(
            field,
            "min_length",
            format!("must be at least {minimum} characters"),
        );
        p.minimum = Some(minimum as i64);
        p
    }

    /// `InvalidParameterMaximumLength` (`max_length`).
    pub fn max_length(field: impl Into<String>, maximum: usize) -> Self {
        let mut p = Self::rule(
            field,
            "max_length",
            format!("must be at most {maximum} characters"),
        );
        p.maximum = Some(maximum as i64);
        p
    }

    /// `InvalidParameterMinimumLength` (`min_items`).
    pub fn min_items(field: impl Into<String>, minimum: usize) -> Self {
        let mut p = Self::rule(
            field,
            "min_items",
            format!("must have at least {minimum} items"),
        );
        p.minimum = Some(minimum as i64);
        p
    }

    /// `InvalidParameterMaximumLength` (`max_items`).
    pub fn max_items(field: impl Into<String>, maximum: usize) -> Self {
        let mut p = Self::rule(
            field,
            "max_items",
            format!("must have at most {maximum} items"),
        );
        p.maximum = Some(maximum as i64);
        p
    }

    /// `InvalidParameterChoiceItem` (`enum`).
    pub fn choice<S: AsRef<str>>(field: impl Into<String>, choices: &[S]) -> Self {
        let choices: Vec<String> = choices.iter().map(|c| c.as_ref().to_string()).collect();
        let mut p = Self::rule(
            field,
            "enum",
            format!("must be one of: {}", choices.join(", ")),
        );
        p.choices = Some(choices);
        p
    }

    /// Same entry, but reported as coming from `source` (`query`, `header`, …).
    pub fn from_source(mut self, source: &str) -> Self {
        self.source = source.into();
        self
    }
}

/// An error response. Rendered by the gate middleware (see module docs).
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub detail: String,
    pub invalid_parameters: Vec<InvalidParam>,
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            invalid_parameters: Vec::new(),
            retry_after: None,
        }
    }

    /// A 400. The spec requires a non-empty `invalid_parameters`; when `params`
    /// is empty a generic entry naming the request body is added at render time.
    pub fn bad_request(detail: impl Into<String>, params: Vec<InvalidParam>) -> Self {
        let mut p = Self::new(StatusCode::BAD_REQUEST, detail);
        p.invalid_parameters = params;
        p
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    /// Render with `instance` set to the request path.
    pub fn render(mut self, instance: &str) -> Response {
        if self.status == StatusCode::BAD_REQUEST && self.invalid_parameters.is_empty() {
            self.invalid_parameters
                .push(InvalidParam::invalid("request", self.detail.clone()));
        }
        dedupe(&mut self.invalid_parameters);
        let body = ProblemBody {
            kind: "about:blank",
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            status: self.status.as_u16(),
            detail: &self.detail,
            instance,
            invalid_parameters: &self.invalid_parameters,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (self.status, bytes).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The spec declares `invalid_parameters` with `uniqueItems: true`.
fn dedupe(params: &mut Vec<InvalidParam>) {
    let mut seen: Vec<InvalidParam> = Vec::with_capacity(params.len());
    params.retain(|p| {
        if seen.contains(p) {
            false
        } else {
            seen.push(p.clone());
            true
        }
    });
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: String,
    status: u16,
    detail: &'a str,
    instance: &'a str,
    #[serde(skip_serializing_if = "<[InvalidParam]>::is_empty")]
    invalid_parameters: &'a [InvalidParam],
}

/// Marker stored in a response's extensions until the gate renders it.
#[derive(Clone)]
pub(crate) struct PendingProblem(pub Problem);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut resp = self.status.into_response();
        resp.extensions_mut().insert(PendingProblem(self));
        resp
    }
}

pub(crate) type ApiResult<T> = Result<T, Problem>;
