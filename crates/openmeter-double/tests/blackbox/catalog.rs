use serde_json::json;

use crate::support::spec::{json_of, problem};
use crate::support::start;

fn meter(key: &str) -> serde_json::Value {
    json!({
        "name": key, "key": key, "aggregation": "sum", "event_type": "create_signed_ticket",
        "value_property": "$.network_fee_usd_micros",
        "dimensions": {"pipeline": "$.pipeline"},
    })
}

#[tokio::test]
async fn meter_create_201_duplicate_409_and_list_filter() {
    let env = start().await;
    let (status, m) = json_of(env.post("/openmeter/meters", meter("fees")).await, "Meter").await;
    assert_eq!(status, 201);
    problem(env.post("/openmeter/meters", meter("fees")).await, 409).await;
    env.post("/openmeter/meters", meter("other")).await;
    let (_, list) = json_of(
        env.get("/openmeter/meters?filter[key]=fees").await,
        "MeterPagePaginatedResponse",
    )
    .await;
    assert_eq!(list["meta"]["page"]["total"], 1);
    let (_, one) = json_of(
        env.get(&format!(
            "/openmeter/meters/{}",
            m["id"].as_str().unwrap_or("")
        ))
        .await,
        "Meter",
    )
    .await;
    assert_eq!(one, m);
}

#[tokio::test]
async fn meter_with_bad_aggregation_is_400() {
    let env = start().await;
    let mut body = meter("fees");
    body["aggregation"] = json!("median");
    let p = problem(env.post("/openmeter/meters", body).await, 400).await;
    assert_eq!(p["invalid_parameters"][0]["rule"], "enum");
}

#[tokio::test]
async fn feature_must_reference_an_existing_meter() {
    let env = start().await;
    let body =
        json!({"name": "Spend", "key": "spend", "meter": {"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}});
    problem(env.post("/openmeter/features", body).await, 400).await;
    let meter_id = env.double.seed_meter(meter("fees"));
    let body = json!({"name": "Spend", "key": "spend", "meter": {"id": meter_id}});
    let (status, f) = json_of(
        env.post("/openmeter/features", body.clone()).await,
        "Feature",
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(f["meter"]["id"], meter_id.as_str());
    problem(env.post("/openmeter/features", body).await, 409).await;
    let url = format!("/openmeter/features?filter[meter_id]={meter_id}");
    let (_, list) = json_of(env.get(&url).await, "FeaturePagePaginatedResponse").await;
    assert_eq!(list["meta"]["page"]["total"], 1);
}
