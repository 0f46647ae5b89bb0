//! Shared test helpers: a double on a real socket, a client, and a validator
//! for the spec's component schemas.
#![allow(dead_code)]

use std::sync::OnceLock;

use openmeter_double::{Double, DoubleConfig, RunningDouble};
use serde_json::{json, Value};

pub(crate) const SPEC: &str = "/work/shared/reference/openmeter-v3-openapi.yaml";

pub(crate) struct Env {
    pub double: Double,
    pub server: RunningDouble,
    pub http: reqwest::Client,
}

pub(crate) async fn start() -> Env {
    start_with(DoubleConfig::default()).await
}

pub(crate) async fn start_with(config: DoubleConfig) -> Env {
    let double = Double::new(config);
    let server = double
        .spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("spawn double");
    Env {
        double,
        server,
        http: reqwest::Client::new(),
    }
}

impl Env {
    pub(crate) fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("POST")
    }

    pub(crate) async fn ingest(&self, events: Value) -> reqwest::Response {
        self.http
            .post(self.url("/openmeter/events"))
            .header("content-type", "application/cloudevents-batch+json")
            .body(events.to_string())
            .send()
            .await
            .expect("POST events")
    }

    pub(crate) async fn create_customer(&self, key: &str, subjects: &[&str]) -> reqwest::Response {
        self.post(
            "/openmeter/customers",
            json!({"key": key, "name": key, "usage_attribution": {"subject_keys": subjects}}),
        )
        .await
    }
}

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

pub(crate) fn event(id: &str, subject: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "test",
        "type": "create_signed_ticket",
        "subject": subject,
        "time": "2025-01-01T00:00:00Z",
        "data": {"n": 1},
    })
}

/// A plan the server would publish: one usage-priced rate card on the
/// feature `feature_id` (keyed `billable_spend`), billed monthly.
pub(crate) fn plan_body(key: &str, feature_id: &str) -> Value {
    json!({
        "name": "Default",
        "key": key,
        "currency": "USD",
        "billing_cadence": "P1M",
        "phases": [{
            "name": "Default",
            "key": "default",
            "rate_cards": [{
                "name": "Billable spend",
                "key": "billable_spend",
                "feature": {"id": feature_id},
                "billing_cadence": "P1M",
                "price": {"type": "unit", "amount": "0.000001"},
            }],
        }],
    })
}

/// A sum meter on `billable_usd_micros` and its feature `billable_spend`;
/// returns the feature id.
pub(crate) async fn billable_feature(env: &Env) -> String {
    let meter = env.double.seed_meter(json!({
        "name": "Billable", "key": "billable_usd_micros", "aggregation": "sum",
        "event_type": "create_signed_ticket", "value_property": "$.billable_usd_micros",
    }));
    let body = json!({"name": "Billable spend", "key": "billable_spend", "meter": {"id": meter}});
    let (status, feature) = json_of(env.post("/openmeter/features", body).await, "Feature").await;
    assert_eq!(status, 201);
    feature["id"].as_str().expect("feature id").to_string()
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
