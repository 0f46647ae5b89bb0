use std::time::{Duration, Instant};

use openmeter_double::{DoubleConfig, Network, RateLimit, RetryAfterForm, Route};
use serde_json::{json, Value};

use crate::support::spec::problem;
use crate::support::{event, start, start_with};

#[tokio::test]
async fn fail_next_fails_exactly_n_calls_then_recovers() {
    let env = start().await;
    env.double.fail_next(Route::CreateCustomer, 2, 500);
    problem(env.create_customer("a", &[]).await, 500).await;
    problem(env.create_customer("a", &[]).await, 500).await;
    assert_eq!(env.create_customer("a", &[]).await.status().as_u16(), 201);
    assert_eq!(env.double.calls(Route::CreateCustomer), 3);
    assert_eq!(env.double.customers().len(), 1);
}

#[tokio::test]
async fn injected_503_and_429_carry_retry_after() {
    let env = start().await;
    env.double.fail_next(Route::IngestEvents, 1, 503);
    let resp = env.ingest(json!([event("a", "s")])).await;
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    problem(resp, 503).await;
    env.double
        .fail_next_with_retry_after(Route::ListPlans, 1, 429, 7);
    let resp = env.get("/openmeter/plans").await;
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );
    problem(resp, 429).await;
}

#[tokio::test]
async fn injected_400_still_has_invalid_parameters() {
    let env = start().await;
    env.double.fail_next(Route::IngestEvents, 1, 400);
    problem(env.ingest(json!([event("a", "s")])).await, 400).await;
    assert!(env.double.deliveries().is_empty());
}

#[tokio::test]
async fn drop_next_closes_the_connection_without_a_response() {
    let env = start().await;
    env.double.drop_next(Route::IngestEvents, 1);
    let err = env
        .http
        .post(env.url("/openmeter/events"))
        .header("content-type", "application/cloudevents-batch+json")
        .body(json!([event("a", "s")]).to_string())
        .send()
        .await
        .expect_err("connection should be dropped");
    assert!(!err.is_status(), "{err:?}");
    assert!(env.double.deliveries().is_empty());
    assert_eq!(
        env.ingest(json!([event("a", "s")])).await.status().as_u16(),
        202
    );
    assert_eq!(env.double.calls(Route::IngestEvents), 2);
}

#[tokio::test]
async fn dropped_connection_sends_zero_response_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = start().await;
    env.double.drop_next(Route::ListCustomers, 1);
    let mut tcp = tokio::net::TcpStream::connect(env.server.addr)
        .await
        .expect("connect");
    let req = "GET /api/v3/openmeter/customers HTTP/1.1\r\nhost: x\r\n\r\n";
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let read = tcp.read_to_end(&mut buf).await;
    assert!(buf.is_empty(), "got {:?}", String::from_utf8_lossy(&buf));
    assert!(read.is_ok() || buf.is_empty());
}

#[tokio::test]
async fn latency_delays_only_its_route() {
    let env = start().await;
    env.double
        .set_latency(Route::ListCustomers, Duration::from_millis(300));
    let t = Instant::now();
    env.get("/openmeter/customers").await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    env.get("/openmeter/plans").await;
    assert!(t.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn counters_separate_writes_from_ingest_and_reset() {
    let env = start().await;
    env.create_customer("a", &[]).await;
    env.get("/openmeter/customers").await;
    env.ingest(json!([event("a", "s")])).await;
    env.get("/openmeter/unknown").await;
    assert_eq!(env.double.total_calls(), 4);
    assert_eq!(env.double.write_calls(), 1);
    assert_eq!(env.double.calls(Route::IngestEvents), 1);
    env.double.reset_counters();
    assert_eq!((env.double.total_calls(), env.double.write_calls()), (0, 0));
}

#[tokio::test]
async fn missing_or_wrong_token_is_401() {
    let env = start_with(DoubleConfig {
        token: Some("secret".into()),
        ..DoubleConfig::default()
    })
    .await;
    problem(env.get("/openmeter/customers").await, 401).await;
    let resp = env
        .http
        .get(env.url("/openmeter/customers"))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("send");
    problem(resp, 401).await;
    let resp = env
        .http
        .get(env.url("/openmeter/customers"))
        .bearer_auth("secret")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn in_process_router_serves_without_a_socket() {
    use tower::ServiceExt;
    let double = openmeter_double::Double::default();
    double.seed_customer("k", &[]);
    let req = axum::http::Request::get("/api/v3/openmeter/customers")
        .body(axum::body::Body::empty())
        .expect("request");
    let resp = double.router().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let env = start().await;
    let url = env.url("/openmeter/customers");
    env.server.shutdown().await;
    assert!(reqwest::get(url).await.is_err());
}

/// openmeterio/openmeter#5118: the dedupe claims ids before a failed write,
/// so the retry is 202 and stores nothing.
#[tokio::test]
async fn a_swallowed_ingest_fails_then_its_retry_is_accepted_but_never_stored() {
    let env = start().await;
    env.double.swallow_next_ingests(1);
    let batch = json!([event("a", "s"), event("b", "s")]);
    problem(env.ingest(batch.clone()).await, 500).await;
    assert_eq!(env.ingest(batch).await.status().as_u16(), 202);
    assert!(env.double.unique_events().is_empty());
    let listed: serde_json::Value = env
        .get("/openmeter/events")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        env.ingest(json!([event("c", "s")])).await.status().as_u16(),
        202
    );
    assert_eq!(env.double.unique_events().len(), 1);
}

/// #5118 one event at a time: the lost id is claimed, the batch answers
/// 202, the others are stored, and a later delivery of the id is a
/// duplicate.
#[tokio::test]
async fn a_lost_event_is_claimed_and_never_stored_while_its_batch_is() {
    let env = start().await;
    env.double.lose_event_ids(&["b"]);
    let batch = json!([event("a", "s"), event("b", "s"), event("c", "s")]);
    assert_eq!(env.ingest(batch).await.status().as_u16(), 202);
    let ids: Vec<Value> = env
        .double
        .unique_events()
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(ids, [json!("a"), json!("c")]);
    assert_eq!(
        env.ingest(json!([event("b", "s")])).await.status().as_u16(),
        202
    );
    assert_eq!(env.double.unique_events().len(), 2, "b's id stays claimed");
}

#[tokio::test]
async fn clear_faults_cancels_pending_swallows() {
    let env = start().await;
    env.double.swallow_next_ingests(3);
    env.double.clear_faults();
    assert_eq!(
        env.ingest(json!([event("a", "s")])).await.status().as_u16(),
        202
    );
    assert_eq!(env.double.unique_events().len(), 1);
}

fn limited(form: RetryAfterForm) -> Network {
    Network {
        rate_limit: Some(RateLimit {
            per_second: 1,
            burst: 2,
            retry_after: form,
        }),
        ..Network::default()
    }
}

#[tokio::test]
async fn a_rate_limit_answers_429_with_retry_after_seconds_and_stores_nothing() {
    let env = start().await;
    env.double.set_network(limited(RetryAfterForm::Seconds));
    for i in 0..2 {
        let id = format!("e{i}");
        assert_eq!(env.ingest(json!([event(&id, "s")])).await.status(), 202);
    }
    let resp = env.ingest(json!([event("e2", "s")])).await;
    let retry_after = resp.headers().get("retry-after").cloned();
    problem(resp, 429).await;
    assert_eq!(retry_after.unwrap().to_str().unwrap(), "1");
    assert_eq!(env.double.deliveries().len(), 2);
    assert_eq!(env.double.rate_limited(), 1);
}

#[tokio::test]
async fn a_rate_limit_can_say_when_as_an_http_date() {
    let env = start().await;
    env.double.set_network(limited(RetryAfterForm::HttpDate));
    env.get("/openmeter/plans").await;
    env.get("/openmeter/plans").await;
    let resp = env.get("/openmeter/plans").await;
    let value = resp.headers().get("retry-after").cloned().unwrap();
    problem(resp, 429).await;
    let date = chrono::DateTime::parse_from_rfc2822(value.to_str().unwrap()).unwrap();
    let wait = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(wait <= chrono::TimeDelta::seconds(1), "{wait}");
}

#[tokio::test]
async fn every_request_waits_the_networks_round_trip() {
    let env = start().await;
    env.double.set_network(Network {
        latency: Duration::from_millis(80),
        ..Network::default()
    });
    let started = Instant::now();
    env.get("/openmeter/plans").await;
    assert!(started.elapsed() >= Duration::from_millis(80));
}
