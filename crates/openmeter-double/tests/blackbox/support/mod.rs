//! The harness of the double's black-box tests: a double on a real socket,
//! an HTTP client, and the request bodies the tests share. `spec` checks
//! answers against the real v3 spec.

use openmeter_double::{Double, DoubleConfig, RunningDouble};
use serde_json::{json, Value};

pub(crate) mod spec;

use spec::json_of;

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
