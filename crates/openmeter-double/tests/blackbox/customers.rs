use openmeter_double::Route;
use serde_json::json;

use crate::support::spec::{json_of, problem};
use crate::support::start;

#[tokio::test]
async fn create_customer_returns_201_then_duplicate_key_409() {
    let env = start().await;
    let (status, body) = json_of(
        env.create_customer("acme", &["acme"]).await,
        "BillingCustomer",
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(body["key"], "acme");
    assert_eq!(body["usage_attribution"]["subject_keys"], json!(["acme"]));
    let p = problem(env.create_customer("acme", &[]).await, 409).await;
    assert!(p["detail"].as_str().unwrap_or("").contains("acme"));
    assert_eq!(env.double.customers().len(), 1);
}

#[tokio::test]
async fn subject_key_owned_by_another_customer_is_409_naming_the_key() {
    let env = start().await;
    assert_eq!(env.create_customer("a", &["shared"]).await.status(), 201);
    let p = problem(env.create_customer("b", &["shared"]).await, 409).await;
    assert!(p["detail"].as_str().unwrap_or("").contains("shared"));
}

#[tokio::test]
async fn fifty_concurrent_creates_of_one_key_yield_one_201() {
    let env = start().await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let http = env.http.clone();
        let url = env.url("/openmeter/customers");
        tasks.push(tokio::spawn(async move {
            let body = json!({"key": "race", "name": "race"});
            http.post(url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("join").expect("send"));
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 49);
    assert_eq!(env.double.calls(Route::CreateCustomer), 50);
}

#[tokio::test]
async fn invalid_customer_body_is_400_with_invalid_parameters() {
    let env = start().await;
    let p = problem(
        env.post("/openmeter/customers", json!({"key": "", "bogus": 1}))
            .await,
        400,
    )
    .await;
    let fields: Vec<&str> = p["invalid_parameters"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["field"].as_str()).collect())
        .unwrap_or_default();
    assert!(fields.contains(&"key"), "{fields:?}");
    assert!(fields.contains(&"name"), "{fields:?}");
    assert!(fields.contains(&"bogus"), "{fields:?}");
}

#[tokio::test]
async fn malformed_json_is_400_problem() {
    let env = start().await;
    let resp = env
        .http
        .post(env.url("/openmeter/customers"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    problem(resp, 400).await;
}

#[tokio::test]
async fn filter_by_key_eq_and_oeq() {
    let env = start().await;
    for k in ["a", "b", "c"] {
        env.create_customer(k, &[]).await;
    }
    let (_, body) = json_of(
        env.get("/openmeter/customers?filter[key][eq]=b").await,
        "CustomerPagePaginatedResponse",
    )
    .await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["data"][0]["key"], "b");
    let (_, body) = json_of(
        env.get("/openmeter/customers?filter[key][oeq]=a,c").await,
        "CustomerPagePaginatedResponse",
    )
    .await;
    assert_eq!(body["meta"]["page"]["total"], 2);
    let (_, body) = json_of(
        env.get("/openmeter/customers?filter[key]=c").await,
        "CustomerPagePaginatedResponse",
    )
    .await;
    assert_eq!(body["data"][0]["key"], "c");
}

#[tokio::test]
async fn filter_by_subject_key_neq_and_contains() {
    let env = start().await;
    env.create_customer("alpha", &["s-alpha"]).await;
    env.create_customer("beta", &["s-beta"]).await;
    let (_, body) = json_of(
        env.get("/openmeter/customers?filter[usage_attribution_subject_key]=s-beta")
            .await,
        "CustomerPagePaginatedResponse",
    )
    .await;
    assert_eq!(body["data"][0]["key"], "beta");
    let (_, body) = json_of(
        env.get("/openmeter/customers?filter[key][neq]=alpha").await,
        "CustomerPagePaginatedResponse",
    )
    .await;
    assert_eq!(body["meta"]["page"]["total"], 1);
    let (_, body) = json_of(
        env.get("/openmeter/customers?filter[name][contains]=LPH")
            .await,
        "CustomerPagePaginatedResponse",
    )
    .await;
    assert_eq!(body["data"][0]["key"], "alpha");
}

#[tokio::test]
async fn unknown_filter_field_is_400() {
    let env = start().await;
    problem(
        env.get("/openmeter/customers?filter[colour]=red").await,
        400,
    )
    .await;
}

#[tokio::test]
async fn paging_reports_total_and_serves_second_page() {
    let env = start().await;
    for i in 0..5 {
        env.double.seed_customer(&format!("c{i}"), &[]);
    }
    let (_, body) = json_of(
        env.get("/openmeter/customers?page[size]=2&page[number]=2")
            .await,
        "CustomerPagePaginatedResponse",
    )
    .await;
    assert_eq!(
        body["meta"]["page"],
        json!({"number": 2, "size": 2, "total": 5})
    );
    let keys: Vec<&str> = body["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["key"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(keys, ["c2", "c3"]);
}

#[tokio::test]
async fn invalid_page_size_is_400() {
    let env = start().await;
    problem(env.get("/openmeter/customers?page[size]=0").await, 400).await;
    problem(env.get("/openmeter/customers?page[size]=1001").await, 400).await;
    problem(env.get("/openmeter/customers?page[number]=x").await, 400).await;
}

#[tokio::test]
async fn get_customer_by_id_and_unknown_id_404() {
    let env = start().await;
    let id = env.double.seed_customer("k", &["k"]);
    let (status, body) = json_of(
        env.get(&format!("/openmeter/customers/{id}")).await,
        "BillingCustomer",
    )
    .await;
    assert_eq!((status, body["id"].as_str()), (200, Some(id.as_str())));
    let p = problem(
        env.get("/openmeter/customers/01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .await,
        404,
    )
    .await;
    assert_eq!(
        p["instance"],
        "/api/v3/openmeter/customers/01ARZ3NDEKTSV4RRFFQ69G5FAV"
    );
}

#[tokio::test]
async fn konnect_prefix_serves_the_same_api() {
    let env = start().await;
    env.double.seed_customer("k", &[]);
    let resp = env
        .http
        .get(format!(
            "{}/openmeter/customers",
            env.server.konnect_base_url()
        ))
        .send()
        .await
        .expect("send");
    let (_, body) = json_of(resp, "CustomerPagePaginatedResponse").await;
    assert_eq!(body["meta"]["page"]["total"], 1);
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_405() {
    let env = start().await;
    problem(env.get("/openmeter/nope").await, 404).await;
    let resp = env
        .http
        .delete(env.url("/openmeter/customers"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
}
