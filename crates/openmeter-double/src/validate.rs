//! Hand-rolled request validation that reports every problem as a spec
//! `InvalidParameter` with a precise field path (`phases[0].key`, `[3].subject`).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::model::Labels;
use crate::problem::{ApiResult, InvalidParam, Problem};

pub type Obj = Map<String, Value>;

/// Parse a JSON request body that must be an object.
pub fn parse_object(bytes: &[u8]) -> ApiResult<Obj> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Problem::bad_request(
            "request body must be a JSON object",
            vec![InvalidParam::rule(
                "body",
                "is_object",
                "must be a JSON object",
            )],
        )),
        Err(e) => Err(malformed(&e)),
    }
}

pub fn malformed(e: &serde_json::Error) -> Problem {
    Problem::bad_request(
        format!("malformed JSON body: {e}"),
        vec![InvalidParam::invalid(
            "body",
            format!("malformed JSON: {e}"),
        )],
    )
}

/// Join a parent path and a field name.
pub fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

/// `ResourceKey`: `^[a-z0-9]+(?:_[a-z0-9]+)*$`, at most 64 characters.
pub fn is_resource_key(s: &str) -> bool {
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    ok_chars && !s.starts_with('_') && !s.ends_with('_') && !s.contains("__") && !s.is_empty()
}

/// `ISO8601Duration`, checked structurally (`P…` with designators, optional `T…`).
pub fn is_iso_duration(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('P') else {
        return false;
    };
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let date_ok = designators_ok(date, "YMWD");
    let time_ok = time.is_none_or(|t| !t.is_empty() && designators_ok(t, "HMS"));
    date_ok && time_ok && s.len() > 1
}

fn designators_ok(s: &str, order: &str) -> bool {
    let mut allowed = order;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let Some(pos) = allowed.find(c) else {
            return false;
        };
        if num.is_empty() || num.parse::<f64>().is_err() {
            return false;
        }
        num.clear();
        allowed = &allowed[pos + 1..];
    }
    num.is_empty()
}

pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn is_label_value(s: &str) -> bool {
    let n = s.chars().count();
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    (1..=63).contains(&n)
        && s.chars().all(ok)
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Collects invalid parameters while a body is being read.
#[derive(Default)]
pub struct Errors(pub Vec<InvalidParam>);

impl Errors {
    pub fn push(&mut self, p: InvalidParam) {
        self.0.push(p);
    }

    /// `additionalProperties: false`.
    pub fn allow_only(&mut self, obj: &Obj, prefix: &str, allowed: &[&str]) {
        for k in obj.keys() {
            if !allowed.contains(&k.as_str()) {
                self.push(InvalidParam::unknown(join(prefix, k)));
            }
        }
    }

    /// A string between `min` and `max` characters; `None` (after recording
    /// the error) when missing or invalid.
    pub fn req_str(
        &mut self,
        obj: &Obj,
        prefix: &str,
        field: &str,
        min: usize,
        max: usize,
    ) -> Option<String> {
        match obj.get(field) {
            None | Some(Value::Null) => {
                self.push(InvalidParam::required(join(prefix, field)));
                None
            }
            Some(v) => self.check_str(v, join(prefix, field), min, max),
        }
    }

    pub fn opt_str(
        &mut self,
        obj: &Obj,
        prefix: &str,
        field: &str,
        min: usize,
        max: usize,
    ) -> Option<String> {
        match obj.get(field) {
            None | Some(Value::Null) => None,
            Some(v) => self.check_str(v, join(prefix, field), min, max),
        }
    }

    fn check_str(&mut self, v: &Value, path: String, min: usize, max: usize) -> Option<String> {
        let Some(s) = v.as_str() else {
            self.push(InvalidParam::rule(path, "is_string", "must be a string"));
            return None;
        };
        let n = s.chars().count();
        if n < min {
            self.push(InvalidParam::min_length(path, min));
            None
        } else if n > max {
            self.push(InvalidParam::max_length(path, max));
            None
        } else {
            Some(s.to_string())
        }
    }

    pub fn req_resource_key(&mut self, obj: &Obj, prefix: &str, field: &str) -> Option<String> {
        let s = self.req_str(obj, prefix, field, 1, 64)?;
        self.resource_key(s, join(prefix, field))
    }

    pub fn opt_resource_key(&mut self, obj: &Obj, prefix: &str, field: &str) -> Option<String> {
        let s = self.opt_str(obj, prefix, field, 1, 64)?;
        self.resource_key(s, join(prefix, field))
    }

    fn resource_key(&mut self, s: String, path: String) -> Option<String> {
        if is_resource_key(&s) {
            return Some(s);
        }
        self.push(InvalidParam::rule(
            path,
            "matches_regex",
            "must match ^[a-z0-9]+(?:_[a-z0-9]+)*$",
        ));
        None
    }

    /// `CurrencyCode` (`^[A-Z]{3}$`), or with `custom` also
    /// `BillingCurrencyCodeCustom` (4..24 characters).
    pub fn currency(
        &mut self,
        obj: &Obj,
        prefix: &str,
        field: &str,
        required: bool,
        custom: bool,
    ) -> Option<String> {
        let s = if required {
            self.req_str(obj, prefix, field, 3, 24)?
        } else {
            self.opt_str(obj, prefix, field, 3, 24)?
        };
        let iso = s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase());
        if iso || (custom && s.chars().count() >= 4) {
            return Some(s);
        }
        self.push(InvalidParam::rule(
            join(prefix, field),
            "matches_regex",
            "must be a three-letter ISO 4217 code (^[A-Z]{3}$)",
        ));
        None
    }

    pub fn req_duration(&mut self, obj: &Obj, prefix: &str, field: &str) -> Option<String> {
        let s = self.req_str(obj, prefix, field, 1, usize::MAX)?;
        self.duration(s, join(prefix, field))
    }

    pub fn opt_duration(&mut self, obj: &Obj, prefix: &str, field: &str) -> Option<String> {
        let s = self.opt_str(obj, prefix, field, 1, usize::MAX)?;
        self.duration(s, join(prefix, field))
    }

    fn duration(&mut self, s: String, path: String) -> Option<String> {
        if is_iso_duration(&s) {
            return Some(s);
        }
        self.push(InvalidParam::rule(
            path,
            "matches_regex",
            "must be an ISO-8601 duration",
        ));
        None
    }

    pub fn opt_datetime(&mut self, obj: &Obj, prefix: &str, field: &str) -> Option<DateTime<Utc>> {
        let s = self.opt_str(obj, prefix, field, 0, usize::MAX)?;
        let parsed = parse_datetime(&s);
        if parsed.is_none() {
            self.push(InvalidParam::rule(
                join(prefix, field),
                "is_date_time",
                "must be an RFC 3339 date-time",
            ));
        }
        parsed
    }

    pub fn opt_bool(&mut self, obj: &Obj, prefix: &str, field: &str) -> Option<bool> {
        match obj.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.push(InvalidParam::rule(
                    join(prefix, field),
                    "is_boolean",
                    "must be a boolean",
                ));
                None
            }
        }
    }

    pub fn opt_enum(
        &mut self,
        obj: &Obj,
        prefix: &str,
        field: &str,
        choices: &[&str],
    ) -> Option<String> {
        let s = self.opt_str(obj, prefix, field, 0, usize::MAX)?;
        self.enum_value(s, join(prefix, field), choices)
    }

    pub fn req_enum(
        &mut self,
        obj: &Obj,
        prefix: &str,
        field: &str,
        choices: &[&str],
    ) -> Option<String> {
        let s = self.req_str(obj, prefix, field, 0, usize::MAX)?;
        self.enum_value(s, join(prefix, field), choices)
    }

    fn enum_value(&mut self, s: String, path: String, choices: &[&str]) -> Option<String> {
        if choices.contains(&s.as_str()) {
            return Some(s);
        }
        self.push(InvalidParam::choice(path, choices));
        None
    }

    pub fn opt_object<'o>(&mut self, obj: &'o Obj, prefix: &str, field: &str) -> Option<&'o Obj> {
        match obj.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => {
                self.push(InvalidParam::rule(
                    join(prefix, field),
                    "is_object",
                    "must be an object",
                ));
                None
            }
        }
    }

    pub fn req_object<'o>(&mut self, obj: &'o Obj, prefix: &str, field: &str) -> Option<&'o Obj> {
        if matches!(obj.get(field), None | Some(Value::Null)) {
            self.push(InvalidParam::required(join(prefix, field)));
            return None;
        }
        self.opt_object(obj, prefix, field)
    }

    pub fn req_array<'o>(
        &mut self,
        obj: &'o Obj,
        prefix: &str,
        field: &str,
    ) -> Option<&'o Vec<Value>> {
        match obj.get(field) {
            None | Some(Value::Null) => {
                self.push(InvalidParam::required(join(prefix, field)));
                None
            }
            Some(Value::Array(a)) => Some(a),
            Some(_) => {
                self.push(InvalidParam::rule(
                    join(prefix, field),
                    "is_array",
                    "must be an array",
                ));
                None
            }
        }
    }

    /// `Labels`: at most 50 string values matching the label pattern.
    pub fn opt_labels(&mut self, obj: &Obj, prefix: &str) -> Option<Labels> {
        let map = self.opt_object(obj, prefix, "labels")?;
        let path = join(prefix, "labels");
        if map.len() > 50 {
            self.push(InvalidParam::rule(
                path.clone(),
                "is_label",
                "at most 50 labels",
            ));
        }
        let mut out = Labels::new();
        for (k, v) in map {
            match v.as_str() {
                Some(s) if is_label_value(s) => {
                    out.insert(k.clone(), s.to_string());
                }
                _ => self.push(InvalidParam::rule(
                    format!("{path}.{k}"),
                    "is_label",
                    "label values must be 1-63 alphanumeric characters, '-', '.' or '_'",
                )),
            }
        }
        Some(out)
    }

    /// Turn collected errors into a 400.
    pub fn finish(self, what: &str) -> ApiResult<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_keys() {
        assert!(is_resource_key("clearinghouse_default_ppu"));
        assert!(is_resource_key("a1"));
        assert!(!is_resource_key("Bad"));
        assert!(!is_resource_key("a__b"));
        assert!(!is_resource_key("_a"));
        assert!(!is_resource_key(""));
    }

    #[test]
    fn durations() {
        assert!(is_iso_duration("P1M"));
        assert!(is_iso_duration("P1Y2M"));
        assert!(is_iso_duration("PT1H30M"));
        assert!(!is_iso_duration("P"));
        assert!(!is_iso_duration("P1"));
        assert!(!is_iso_duration("PT"));
        assert!(!is_iso_duration("P1M1Y"));
        assert!(!is_iso_duration("1M"));
    }
}
