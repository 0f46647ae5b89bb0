//! A validator for the spec's component schemas, read from the reference
//! spec (`shared/reference/`, beside the repository): what the double answers
//! is checked against the real v3 API.

use std::sync::OnceLock;

use serde_json::{json, Value};

/// The reference spec, in `shared/` beside the repository.
const SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/reference/openmeter-v3-openapi.yaml"
);

/// Status and JSON body; also checks the body against `schema` in the spec.
pub(crate) async fn json_of(resp: reqwest::Response, schema: &str) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("json body");
    assert_matches_spec(schema, &body);
    (status, body)
}

/// A problem response: checks status, content type and spec shape.
pub(crate) async fn problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(ct, "application/problem+json");
    let schema = match status {
        400 => "BadRequestError",
        401 => "UnauthorizedError",
        404 => "NotFoundError",
        409 => "ConflictError",
        _ => "BaseError",
    };
    let (_, body) = json_of(resp, schema).await;
    body
}

/// OpenAPI 3.0 `nullable: true` → JSON Schema `type: [t, "null"]`.
fn denull(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.remove("nullable") == Some(Value::Bool(true)) {
                if let Some(Value::String(t)) = m.get("type").cloned() {
                    m.insert("type".into(), json!([t, "null"]));
                } else if let Some(Value::Array(e)) = m.get_mut("enum") {
                    e.push(Value::Null);
                }
            }
            m.values_mut().for_each(denull);
        }
        Value::Array(a) => a.iter_mut().for_each(denull),
        _ => {}
    }
}

fn components() -> &'static Value {
    static C: OnceLock<Value> = OnceLock::new();
    C.get_or_init(|| {
        let text = std::fs::read_to_string(SPEC).expect("read spec");
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("parse spec");
        let mut doc: Value = serde_json::to_value(yaml).expect("spec as json");
        denull(&mut doc);
        doc["components"].take()
    })
}

/// Panic with every violation when `value` does not match the schema.
pub(crate) fn assert_matches_spec(schema: &str, value: &Value) {
    let root = json!({
        "$ref": format!("#/components/schemas/{schema}"),
        "components": components(),
    });
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&root)
        .expect("compile schema");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{schema} violations: {errors:#?}\nbody: {value:#}"
    );
}
