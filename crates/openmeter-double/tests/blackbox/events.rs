use serde_json::{json, Value};

use crate::support::spec::{json_of, problem};
use crate::support::{event, start, Env};

async fn list(env: &Env, query: &str) -> Value {
    let url = format!("/openmeter/events{query}");
    let (status, body) = json_of(env.get(&url).await, "IngestedEventPaginatedResponse").await;
    assert_eq!(status, 200);
    body
}

#[tokio::test]
async fn batch_ingest_is_202_with_empty_body() {
    let env = start().await;
    let resp = env
        .ingest(json!([event("e1", "s"), event("e2", "s")]))
        .await;
    assert_eq!(resp.status().as_u16(), 202);
    assert!(resp.bytes().await.expect("body").is_empty());
    assert_eq!(env.double.unique_events().len(), 2);
}

#[tokio::test]
async fn single_cloudevent_and_plain_json_are_accepted() {
    let env = start().await;
    let send = |ct: &'static str, body: Value| {
        env.http
            .post(env.url("/openmeter/events"))
            .header("content-type", ct)
            .body(body.to_string())
            .send()
    };
    let r = send("application/cloudevents+json", event("a", "s"))
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 202);
    let r = send("application/json", event("b", "s"))
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 202);
    let r = send("application/json; charset=utf-8", json!([event("c", "s")]))
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 202);
    let r = send("application/cloudevents+json", json!([event("d", "s")]))
        .await
        .expect("send");
    problem(r, 400).await;
    assert_eq!(env.double.deliveries().len(), 3);
}

#[tokio::test]
async fn duplicates_are_deduped_by_source_and_id_but_every_delivery_is_logged() {
    let env = start().await;
    let mut other_source = event("e1", "s");
    other_source["source"] = json!("elsewhere");
    env.ingest(json!([event("e1", "s"), event("e2", "s")]))
        .await;
    env.ingest(json!([event("e1", "s"), other_source])).await;
    let deliveries = env.double.deliveries();
    assert_eq!(deliveries.len(), 4);
    let dups: Vec<bool> = deliveries.iter().map(|d| d.duplicate).collect();
    assert_eq!(dups, [false, false, true, false]);
    assert_eq!(env.double.unique_events().len(), 3);
    let body = list(&env, "").await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn event_without_customer_is_listed_with_no_customer_error() {
    let env = start().await;
    let id = env.double.seed_customer("known", &["known-subject"]);
    env.ingest(json!([
        event("e1", "known-subject"),
        event("e2", "stranger"),
        event("e3", "known")
    ]))
    .await;
    let body = list(&env, "?filter[subject][eq]=stranger").await;
    let item = &body["data"][0];
    assert_eq!(item["event"]["id"], "e2");
    assert_eq!(
        item["validation_errors"][0]["message"],
        "no customer found for event subject: stranger"
    );
    assert_eq!(item["validation_errors"][0]["code"], "validation_error");
    assert!(item.get("customer").is_none());
    let body = list(&env, "?filter[id][eq]=e1").await;
    assert_eq!(body["data"][0]["customer"]["id"], id.as_str());
    assert!(body["data"][0].get("validation_errors").is_none());
    let owners: Vec<Option<String>> = env
        .double
        .deliveries()
        .into_iter()
        .map(|d| d.customer_id)
        .collect();
    assert_eq!(owners, [Some(id.clone()), None, Some(id)]);
}

/// The real server resolves an event's customer when listing
/// (meterevent/adapter/event.go), so a customer created later claims it.
#[tokio::test]
async fn customer_created_later_claims_earlier_events_when_listed() {
    let env = start().await;
    env.ingest(json!([event("e1", "late")])).await;
    let body = list(&env, "?filter[id]=e1").await;
    assert!(body["data"][0]["validation_errors"].is_array());
    env.create_customer("late", &["late"]).await;
    let body = list(&env, "?filter[id]=e1").await;
    assert!(body["data"][0].get("validation_errors").is_none());
    assert!(body["data"][0]["customer"]["id"].is_string());
}

#[tokio::test]
async fn a_vanished_customer_leaves_its_stored_events_without_a_customer() {
    let env = start().await;
    env.double.seed_customer("gone", &["gone"]);
    env.ingest(json!([event("e1", "gone")])).await;
    assert!(env.double.vanish_customer("gone"));
    let body = list(&env, "?filter[id][eq]=e1").await;
    assert!(body["data"][0].get("customer").is_none());
    assert_eq!(
        body["data"][0]["validation_errors"][0]["message"],
        "no customer found for event subject: gone"
    );
    assert!(!env.double.vanish_customer("gone"));
}

#[tokio::test]
async fn list_filters_by_time_range_and_by_any_of_several_ids() {
    let env = start().await;
    let events: Vec<Value> = (0..4)
        .map(|i| {
            let mut e = event(&format!("e{i}"), "s");
            e["time"] = json!(format!("2025-01-01T00:00:0{i}Z"));
            e
        })
        .collect();
    env.ingest(Value::Array(events)).await;
    let body = list(
        &env,
        "?filter[time][gte]=2025-01-01T00:00:01Z&filter[time][lte]=2025-01-01T00:00:02Z&sort=time%20asc",
    )
    .await;
    let ids: Vec<&str> = body["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["event"]["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["e1", "e2"]);
    let body = list(&env, "?filter[id][oeq]=e0,e3").await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn page_size_defaults_to_20_and_is_at_most_100() {
    let env = start().await;
    let events: Vec<Value> = (0..25).map(|i| event(&format!("e{i}"), "s")).collect();
    env.ingest(Value::Array(events)).await;
    let body = list(&env, "").await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(20));
    assert!(body["meta"]["page"]["next"].is_string());
    problem(env.get("/openmeter/events?page[size]=101").await, 400).await;
}

#[tokio::test]
async fn a_full_last_page_still_carries_a_cursor_to_an_empty_page() {
    let env = start().await;
    env.ingest(json!([event("a", "s"), event("b", "s")])).await;
    let first = list(&env, "?page[size]=2").await;
    let next = first["meta"]["page"]["next"].as_str().unwrap_or_default();
    assert!(!next.is_empty());
    let empty = list(&env, &format!("?page[size]=2&page[after]={next}")).await;
    assert_eq!(empty["data"].as_array().map(Vec::len), Some(0));
    assert!(empty["meta"]["page"]["next"].is_null());
}

#[tokio::test]
async fn sort_by_a_field_without_a_suffix_is_descending() {
    let env = start().await;
    let mut early = event("early", "s");
    early["time"] = json!("2025-01-01T00:00:00Z");
    let mut late = event("late", "s");
    late["time"] = json!("2025-01-02T00:00:00Z");
    env.ingest(json!([early, late])).await;
    let body = list(&env, "?sort=time").await;
    assert_eq!(body["data"][0]["event"]["id"], "late");
}

#[tokio::test]
async fn invalid_batch_is_400_naming_index_field_and_event_id() {
    let env = start().await;
    let mut bad = event("bad-one", "");
    bad["extra"] = json!(1);
    bad["time"] = json!("not a time");
    let p = problem(env.ingest(json!([event("ok", "s"), bad])).await, 400).await;
    let fields: Vec<&str> = p["invalid_parameters"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["field"].as_str()).collect())
        .unwrap_or_default();
    assert!(fields.contains(&"[1].subject"), "{fields:?}");
    assert!(fields.contains(&"[1].extra"), "{fields:?}");
    assert!(fields.contains(&"[1].time"), "{fields:?}");
    assert!(p["detail"].as_str().unwrap_or("").contains("bad-one"));
    assert!(
        env.double.deliveries().is_empty(),
        "nothing of a rejected batch is stored"
    );
}

#[tokio::test]
async fn missing_required_event_field_is_400() {
    let env = start().await;
    let mut e = event("x", "s");
    e.as_object_mut().map(|m| m.remove("source"));
    let p = problem(env.ingest(json!([e])).await, 400).await;
    assert_eq!(p["invalid_parameters"][0]["field"], "[0].source");
    assert_eq!(p["invalid_parameters"][0]["rule"], "required");
}

#[tokio::test]
async fn rejected_event_ids_fail_any_batch_containing_them() {
    let env = start().await;
    env.double.reject_event_ids(&["poison"]);
    let p = problem(
        env.ingest(json!([event("a", "s"), event("poison", "s")]))
            .await,
        400,
    )
    .await;
    assert!(p["detail"].as_str().unwrap_or("").contains("poison"));
    assert_eq!(p["invalid_parameters"][0]["field"], "[1].id");
    assert_eq!(
        env.ingest(json!([event("a", "s")])).await.status().as_u16(),
        202
    );
}

#[tokio::test]
async fn list_is_time_desc_and_cursor_paginated() {
    let env = start().await;
    let events: Vec<Value> = (0..5)
        .map(|i| {
            let mut e = event(&format!("e{i}"), "s");
            e["time"] = json!(format!("2025-01-01T00:00:0{i}Z"));
            e
        })
        .collect();
    env.ingest(Value::Array(events)).await;
    let first = list(&env, "?page[size]=2").await;
    let ids = |b: &Value| -> Vec<String> {
        b["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x["event"]["id"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(ids(&first), ["e4", "e3"]);
    assert!(first["meta"]["page"]["previous"].is_null());
    let next = first["meta"]["page"]["next"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let second = list(&env, &format!("?page[size]=2&page[after]={next}")).await;
    assert_eq!(ids(&second), ["e2", "e1"]);
    let next = second["meta"]["page"]["next"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let last = list(&env, &format!("?page[size]=2&page[after]={next}")).await;
    assert_eq!(ids(&last), ["e0"]);
    assert!(last["meta"]["page"]["next"].is_null());
}

#[tokio::test]
async fn list_filters_by_type() {
    let env = start().await;
    let mut other = event("o", "s");
    other["type"] = json!("other");
    env.ingest(json!([event("a", "s"), other])).await;
    let body = list(&env, "?filter[type][eq]=other").await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["data"][0]["event"]["id"], "o");
}
