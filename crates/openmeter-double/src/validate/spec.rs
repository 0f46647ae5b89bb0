//! Request bodies checked against the spec itself: the request-body schemas
//! of `openmeter-v3-openapi.yaml`, compiled once with `jsonschema`, their
//! violations reported as the double's `InvalidParameter`s.
//!
//! The real server validates every request against this document before any
//! handler runs (`api/v3/server/server.go`, kin-openapi's
//! `openapi3filter.ValidateRequest` with `MultiError`), so a body the spec
//! refuses never reaches the double's own rules either.
//!
//! The spec is embedded at build time from the crate's own copy
//! (`openapi/`), so `ticketmeter demo`/`double` need no file at run time and
//! the container image builds from the repository alone. A test keeps that
//! copy identical to the reference spec in `../shared/reference/`.

use std::sync::{LazyLock, OnceLock};

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{JsonType, ValidationError, Validator};
use serde_json::{json, Value};

use crate::problem::{InvalidParam, Problem};

const SPEC: &str = include_str!("../../openapi/openmeter-v3-openapi.yaml");

/// A request body the double accepts, by the spec component that shapes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schema {
    CreateCustomer,
    CreateSubscription,
    CancelSubscription,
    CreatePlan,
    CreateMeter,
    CreateFeature,
    MeteringEvent,
    MeterQuery,
}

impl Schema {
    /// Every schema, in declaration order (`ALL[s as usize] == s`).
    const ALL: [Schema; 8] = [
        Schema::CreateCustomer,
        Schema::CreateSubscription,
        Schema::CancelSubscription,
        Schema::CreatePlan,
        Schema::CreateMeter,
        Schema::CreateFeature,
        Schema::MeteringEvent,
        Schema::MeterQuery,
    ];

    /// The `components.schemas` entry the operation's `requestBody` refers to.
    fn component(self) -> &'static str {
        match self {
            Schema::CreateCustomer => "CreateCustomerRequest",
            Schema::CreateSubscription => "BillingSubscriptionCreate",
            Schema::CancelSubscription => "BillingSubscriptionCancel",
            Schema::CreatePlan => "CreatePlanRequest",
            Schema::CreateMeter => "CreateMeterRequest",
            Schema::CreateFeature => "CreateFeatureRequest",
            Schema::MeteringEvent => "MeteringEvent",
            Schema::MeterQuery => "MeterQueryRequest",
        }
    }
}

/// The spec's `components`, `nullable` translated, parsed once.
static COMPONENTS: LazyLock<Result<Value, String>> = LazyLock::new(|| {
    let yaml: serde_yaml::Value = serde_yaml::from_str(SPEC).map_err(|e| e.to_string())?;
    let mut doc = serde_json::to_value(yaml).map_err(|e| e.to_string())?;
    denull(&mut doc);
    Ok(doc["components"].take())
});

/// One compiled validator per schema, built on first use.
static VALIDATORS: [OnceLock<Result<Validator, String>>; Schema::ALL.len()] =
    [const { OnceLock::new() }; Schema::ALL.len()];

/// OpenAPI 3.0's `nullable: true` as JSON Schema. kin-openapi accepts a null
/// for a nullable schema before it looks at the schema's `allOf`/`oneOf`/
/// `anyOf` (`openapi3/schema.go`, `visitJSON`), whose targets are not
/// nullable themselves, so those (and a `$ref`) move under an `else` that
/// only non-null values meet.
fn denull(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true)) {
                if let Some(Value::String(t)) = map.get("type").cloned() {
                    map.insert("type".into(), json!([t, "null"]));
                }
                if let Some(Value::Array(choices)) = map.get_mut("enum") {
                    choices.push(Value::Null);
                }
                let composed: serde_json::Map<String, Value> = ["allOf", "anyOf", "oneOf", "$ref"]
                    .iter()
                    .filter_map(|k| map.remove(*k).map(|v| (k.to_string(), v)))
                    .collect();
                if !composed.is_empty() {
                    map.insert("if".into(), json!({"type": "null"}));
                    map.insert("else".into(), Value::Object(composed));
                }
            }
            map.values_mut().for_each(denull);
        }
        Value::Array(items) => items.iter_mut().for_each(denull),
        _ => {}
    }
}

/// Compile `schema` with the whole of `components` beside it, so the spec's
/// `#/components/...` references resolve. Formats are checked as
/// kin-openapi checks them: `date-time` (and `date`, `byte`) only
/// (`openapi3/schema_formats.go`); `uri` and `uri-reference` are not.
fn compile(schema: Schema) -> Result<Validator, String> {
    let components = COMPONENTS.as_ref().map_err(Clone::clone)?;
    let root = json!({
        "$ref": format!("#/components/schemas/{}", schema.component()),
        "components": components,
    });
    jsonschema::options()
        .should_validate_formats(true)
        .with_format("uri", |_: &str| true)
        .with_format("uri-reference", |_: &str| true)
        .build(&root)
        .map_err(|e| e.to_string())
}

fn validator(schema: Schema) -> Result<&'static Validator, Problem> {
    VALIDATORS[schema as usize]
        .get_or_init(|| compile(schema))
        .as_ref()
        .map_err(|e| {
            Problem::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "openmeter-double cannot compile the spec's {}: {e}",
                    schema.component()
                ),
            )
        })
}

/// The compiled check of one request-body schema.
pub(crate) struct Checker(&'static Validator);

impl Checker {
    pub(crate) fn is_valid(&self, value: &Value) -> bool {
        self.0.is_valid(value)
    }

    /// What in `value` breaks the schema, each entry's field under `prefix`
    /// (e.g. `[3]` for the fourth event of a batch).
    pub(crate) fn violations(&self, value: &Value, prefix: &str) -> Vec<InvalidParam> {
        self.0
            .iter_errors(value)
            .flat_map(|e| to_params(&e, value, prefix))
            .collect()
    }
}

/// Parse the spec and compile every check now, so that no request pays for
/// it (about 70 ms in a release build). A failure is kept and answered as a
/// 500 by each request that needs the check.
pub(crate) fn warm_up() {
    for schema in Schema::ALL {
        let _ = validator(schema);
    }
}

/// The check of `schema`, compiled on first use.
pub(crate) fn checker(schema: Schema) -> Result<Checker, Problem> {
    validator(schema).map(Checker)
}

/// What in `value` breaks `schema` (empty when the body is valid: then it
/// costs one `is_valid` pass).
pub(crate) fn violations(schema: Schema, value: &Value) -> Result<Vec<InvalidParam>, Problem> {
    let check = checker(schema)?;
    if check.is_valid(value) {
        return Ok(Vec::new());
    }
    Ok(check.violations(value, ""))
}

/// The double's field path (`phases[0].rate_cards`, `[1].subject`) of a JSON
/// pointer into `root`: array indexes in brackets, object keys dotted. The
/// instance is walked so that an object key made of digits stays a key.
fn field_of(root: &Value, pointer: &str, prefix: &str) -> String {
    let mut out = prefix.to_string();
    let mut at = Some(root);
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match at {
            Some(Value::Array(items)) => {
                at = segment.parse::<usize>().ok().and_then(|i| items.get(i));
                out = format!("{out}[{segment}]");
            }
            _ => {
                at = at.and_then(|v| v.get(&segment));
                out = join(&out, &segment);
            }
        }
    }
    out
}

/// The rule of the spec's `InvalidRules` naming a type, and its reason.
fn type_rule(kind: &TypeKind) -> (&'static str, &'static str) {
    let expected = match kind {
        TypeKind::Single(t) => Some(*t),
        TypeKind::Multiple(set) => set.iter().find(|t| *t != JsonType::Null),
    };
    match expected {
        Some(JsonType::String) => ("is_string", "must be a string"),
        Some(JsonType::Object) => ("is_object", "must be an object"),
        Some(JsonType::Array) => ("is_array", "must be an array"),
        Some(JsonType::Boolean) => ("is_boolean", "must be a boolean"),
        Some(JsonType::Integer) => ("is_integer", "must be an integer"),
        Some(JsonType::Number) => ("is_number", "must be a number"),
        Some(JsonType::Null) | None => ("type", "has the wrong type"),
    }
}

/// One violation as `InvalidParameter`s (one per unknown property), using
/// only rules the spec's `InvalidParameter*` schemas allow.
fn to_params(e: &ValidationError<'_>, root: &Value, prefix: &str) -> Vec<InvalidParam> {
    let field = field_of(root, e.instance_path.as_str(), prefix);
    let at = |f: String| if f.is_empty() { "body".to_string() } else { f };
    let limit = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let param = match &e.kind {
        ValidationErrorKind::Required { property } => {
            InvalidParam::required(join(&field, property.as_str().unwrap_or_default()))
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            return unexpected
                .iter()
                .map(|name| InvalidParam::unknown(join(&field, name)))
                .collect();
        }
        ValidationErrorKind::Type { kind } => {
            let (rule, reason) = type_rule(kind);
            InvalidParam::rule(at(field), rule, reason)
        }
        ValidationErrorKind::MinLength { limit: n } => {
            InvalidParam::min_length(at(field), limit(*n))
        }
        ValidationErrorKind::MaxLength { limit: n } => {
            InvalidParam::max_length(at(field), limit(*n))
        }
        ValidationErrorKind::MinItems { limit: n } => InvalidParam::min_items(at(field), limit(*n)),
        ValidationErrorKind::MaxItems { limit: n } => InvalidParam::max_items(at(field), limit(*n)),
        ValidationErrorKind::Enum { options } => {
            let choices: Vec<&str> = options
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if choices.is_empty() {
                InvalidParam::invalid(at(field), e.to_string())
            } else {
                InvalidParam::choice(at(field), &choices)
            }
        }
        ValidationErrorKind::Pattern { pattern } => {
            InvalidParam::rule(at(field), "matches_regex", format!("must match {pattern}"))
        }
        ValidationErrorKind::Format { format } if format == "date-time" => {
            InvalidParam::rule(at(field), "is_date_time", "must be an RFC 3339 date-time")
        }
        _ => InvalidParam::invalid(at(field), e.to_string()),
    };
    vec![param]
}

/// Join a parent path and a field name.
fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_spec_is_the_reference_spec() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/reference/openmeter-v3-openapi.yaml"
        );
        let reference =
            std::fs::read_to_string(path).expect("the reference spec beside the repository");
        assert!(
            reference == SPEC,
            "crates/openmeter-double/openapi/openmeter-v3-openapi.yaml differs from {path}: copy the reference over it"
        );
    }

    #[test]
    fn every_request_schema_compiles_from_the_embedded_spec() {
        for (i, schema) in Schema::ALL.into_iter().enumerate() {
            assert_eq!(schema as usize, i, "ALL is in declaration order");
            assert!(validator(schema).is_ok(), "{schema:?}");
        }
    }

    #[test]
    fn fields_bracket_indexes_and_dot_keys() {
        let v = json!({"phases": [{"rate_cards": []}], "labels": {"0": "x"}});
        assert_eq!(
            field_of(&v, "/phases/0/rate_cards", ""),
            "phases[0].rate_cards"
        );
        assert_eq!(field_of(&v, "/labels/0", ""), "labels.0");
        assert_eq!(field_of(&v, "/subject", "[3]"), "[3].subject");
    }

    #[test]
    fn a_null_is_accepted_where_the_spec_says_nullable() {
        let mut event = json!({"id": "1", "source": "s", "specversion": "1.0",
            "type": "t", "subject": "s", "time": null, "data": null});
        let none = violations(Schema::MeteringEvent, &event).expect("compiles");
        assert!(none.is_empty(), "{none:?}");
        event["time"] = json!("yesterday");
        let bad = violations(Schema::MeteringEvent, &event).expect("compiles");
        assert_eq!(bad[0].field, "time");
        assert_eq!(bad[0].rule.as_deref(), Some("is_date_time"));
    }
}
