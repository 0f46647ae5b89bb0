//! When a subscription starts, as the real server decides it: the v3 create
//! body has no start time, so `active_from` is the moment of creation.

use chrono::{DateTime, Utc};
use openmeter_double::PlanSeed;
use serde_json::{json, Value};

use crate::support::spec::json_of;
use crate::support::{start, Env};

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {v}"))
}

async fn subscribe(env: &Env) -> Value {
    let customer = env.double.seed_customer("acme", &["acme"]);
    let plan = env.double.seed_plan(PlanSeed::new("ppu", 1, "active"));
    let body = json!({"customer": {"id": customer}, "plan": {"id": plan}});
    let (status, sub) = json_of(
        env.post("/openmeter/subscriptions", body).await,
        "BillingSubscription",
    )
    .await;
    assert_eq!(status, 201);
    sub
}

#[tokio::test]
async fn a_created_subscription_is_active_from_the_moment_of_creation() {
    let env = start().await;
    let before = Utc::now();
    let sub = subscribe(&env).await;
    let after = Utc::now();
    let from = time(&sub["active_from"]);
    assert!(
        before - chrono::Duration::microseconds(1) <= from && from <= after,
        "{before} <= {from} <= {after}"
    );
    assert_eq!(sub["status"], "active");
    assert!(sub.get("active_to").is_none());
}

#[tokio::test]
async fn active_from_keeps_the_microseconds_postgres_stores() {
    let env = start().await;
    let sub = subscribe(&env).await;
    let from = time(&sub["active_from"]);
    assert_eq!(from.timestamp_subsec_nanos() % 1_000, 0);
    let stored = &env.double.subscriptions()[0];
    assert_eq!(stored.active_from, from);
}

#[tokio::test]
async fn the_billing_anchor_and_first_phase_start_with_the_subscription() {
    let env = start().await;
    let sub = subscribe(&env).await;
    assert_eq!(sub["billing_anchor"], sub["active_from"]);
    assert_eq!(sub["phases"][0]["active_from"], sub["active_from"]);
}
