//! Lenient scalars: a field's JSON text read where it is used, borrowed
//! from the record unless escaped.

use std::borrow::Cow;

use serde_json::value::RawValue;
use serde_json::{Number, Value};

/// A field's JSON value read leniently: text borrowed from the record when
/// it has no escapes, a number as its exact digits. `null` is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scalar<'a> {
    Text(Cow<'a, str>),
    Number(&'a str),
    /// A boolean, an object or an array.
    Other,
}

impl<'a> Scalar<'a> {
    /// A field as the record wrote it (already validated JSON).
    pub(crate) fn read(raw: Option<&'a RawValue>) -> Option<Self> {
        let json = raw?.get();
        match json.as_bytes().first()? {
            b'n' => None,
            b'"' => Some(Self::text(json)),
            b'-' | b'0'..=b'9' => Some(Self::Number(json)),
            _ => Some(Self::Other),
        }
    }

    fn text(json: &'a str) -> Self {
        // Valid JSON (a `RawValue`) without a backslash is its own text.
        let inner = json.strip_prefix('"').and_then(|j| j.strip_suffix('"'));
        if let Some(inner) = inner.filter(|i| !i.contains('\\')) {
            return Self::Text(Cow::Borrowed(inner));
        }
        serde_json::from_str::<&str>(json)
            .map(Cow::Borrowed)
            .or_else(|_| serde_json::from_str::<String>(json).map(Cow::Owned))
            .map_or(Self::Other, Self::Text)
    }

    /// Its text: a string's, or a number's digits.
    pub(crate) fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(t) => Some(t),
            Self::Number(digits) => Some(digits),
            Self::Other => None,
        }
    }

    /// A field of an already parsed [`Value`] (the audit's fallback).
    pub(crate) fn of(value: &'a Value) -> Option<Self> {
        match value {
            Value::Null => None,
            Value::String(s) => Some(Self::Text(Cow::Borrowed(s))),
            Value::Number(n) => Some(Self::Number(n.as_str())),
            _ => Some(Self::Other),
        }
    }
}

/// A text dimension: a string (trimmed; blank is absent) or a number's
/// text; anything else cannot be read.
/// Borrowed from the record unless the string was escaped.
pub(super) fn lenient_text(value: Option<Scalar<'_>>) -> Result<Option<Cow<'_, str>>, ()> {
    let text = match value {
        None => return Ok(None),
        Some(Scalar::Text(Cow::Borrowed(s))) => Cow::Borrowed(s.trim()),
        Some(Scalar::Text(Cow::Owned(s))) => Cow::Owned(s.trim().to_owned()),
        Some(Scalar::Number(digits)) => Cow::Borrowed(digits),
        Some(Scalar::Other) => return Err(()),
    };
    Ok(Some(text).filter(|t| !t.is_empty()))
}

/// A numeric dimension: a JSON number, or a string holding one (`"1000"`),
/// as its exact digits; anything else cannot be read.
pub(super) fn lenient_number(value: Option<Scalar<'_>>) -> Result<Option<Cow<'_, str>>, ()> {
    match value {
        None => Ok(None),
        // Already a JSON number: the record was parsed.
        Some(Scalar::Number(digits)) => Ok(Some(Cow::Borrowed(digits))),
        Some(text @ Scalar::Text(_)) => match lenient_text(Some(text))? {
            Some(digits) if digits.parse::<Number>().is_err() => Err(()),
            digits => Ok(digits),
        },
        Some(Scalar::Other) => Err(()),
    }
}
