use openmeter_double::PlanSeed;
use serde_json::json;

use crate::support::spec::{json_of, problem};
use crate::support::{billable_feature, plan_body, start, Env};

/// Creates a publishable draft of `key` (and, the first time, its feature).
async fn create_plan(env: &Env, key: &str) -> serde_json::Value {
    let feature = match env.double.features().into_iter().next() {
        Some(f) => f.id,
        None => billable_feature(env).await,
    };
    let (status, body) = json_of(
        env.post("/openmeter/plans", plan_body(key, &feature)).await,
        "BillingPlan",
    )
    .await;
    assert_eq!(status, 201);
    body
}

async fn publish(env: &Env, id: &str) -> serde_json::Value {
    let url = format!("/openmeter/plans/{id}/publish");
    let (status, body) = json_of(env.post(&url, json!({})).await, "BillingPlan").await;
    assert_eq!(status, 200);
    body
}

#[tokio::test]
async fn plan_create_is_draft_and_publish_makes_it_active() {
    let env = start().await;
    let plan = create_plan(&env, "ppu").await;
    assert_eq!(
        (plan["status"].as_str(), plan["version"].as_u64()),
        (Some("draft"), Some(1))
    );
    assert!(plan.get("effective_from").is_none());
    let id = plan["id"].as_str().unwrap_or_default();
    let published = publish(&env, id).await;
    assert_eq!(published["status"], "active");
    assert!(published["effective_from"].is_string());
    assert_eq!(published["phases"], plan["phases"]);
}

#[tokio::test]
async fn publishing_a_new_version_archives_the_old_one() {
    let env = start().await;
    let v1 = create_plan(&env, "ppu").await;
    publish(&env, v1["id"].as_str().unwrap_or_default()).await;
    let v2 = create_plan(&env, "ppu").await;
    assert_eq!(v2["version"], 2);
    publish(&env, v2["id"].as_str().unwrap_or_default()).await;
    let (_, old) = json_of(
        env.get(&format!(
            "/openmeter/plans/{}",
            v1["id"].as_str().unwrap_or_default()
        ))
        .await,
        "BillingPlan",
    )
    .await;
    assert_eq!(old["status"], "archived");
    assert!(old["effective_to"].is_string());
    let (_, list) = json_of(
        env.get("/openmeter/plans?filter[key][eq]=ppu&filter[status]=active")
            .await,
        "PlanPagePaginatedResponse",
    )
    .await;
    assert_eq!(list["meta"]["page"]["total"], 1);
    assert_eq!(list["data"][0]["version"], 2);
}

#[tokio::test]
async fn plan_phase_without_rate_cards_is_400() {
    let env = start().await;
    let mut body = plan_body("ppu", "01J00000000000000000000000");
    body["phases"][0]
        .as_object_mut()
        .map(|p| p.remove("rate_cards"));
    let p = problem(env.post("/openmeter/plans", body).await, 400).await;
    assert_eq!(p["invalid_parameters"][0]["field"], "phases[0].rate_cards");
}

#[tokio::test]
async fn subscription_is_created_from_the_plan_version_it_names() {
    let env = start().await;
    let customer = env.double.seed_customer("acme", &["acme"]);
    env.double.seed_plan(PlanSeed::new("ppu", 1, "archived"));
    let active = env.double.seed_plan(PlanSeed::new("ppu", 2, "active"));
    env.double.seed_plan(PlanSeed::new("ppu", 3, "draft"));
    let body = json!({"customer": {"id": customer}, "plan": {"key": "ppu", "version": 2}});
    let (status, sub) = json_of(
        env.post("/openmeter/subscriptions", body).await,
        "BillingSubscription",
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        sub["plan"],
        json!({"id": active, "key": "ppu", "version": 2})
    );
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["customer_id"], customer.as_str());
}

/// Without a version the v3 create takes the key's latest version whatever
/// its status (`plan/adapter/plan.go`, `IncludeLatest`), which must be active.
#[tokio::test]
async fn a_plan_key_without_version_means_the_latest_version() {
    let env = start().await;
    let customer = env.double.seed_customer("acme", &["acme"]);
    let active = env.double.seed_plan(PlanSeed::new("ppu", 2, "active"));
    let body = json!({"customer": {"id": customer}, "plan": {"key": "ppu"}});
    let (_, sub) = json_of(
        env.post("/openmeter/subscriptions", body.clone()).await,
        "BillingSubscription",
    )
    .await;
    assert_eq!(sub["plan"]["id"], active.as_str());

    let other = env.double.seed_customer("globex", &["globex"]);
    env.double.seed_plan(PlanSeed::new("ppu", 3, "draft"));
    let body = json!({"customer": {"id": other}, "plan": {"key": "ppu"}});
    let p = problem(env.post("/openmeter/subscriptions", body).await, 400).await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or("")
            .starts_with("plan ppu@3 is not active at "),
        "{p}"
    );
}

#[tokio::test]
async fn subscription_copies_plan_phases_and_rate_cards() {
    let env = start().await;
    env.double.seed_customer("acme", &[]);
    let plan = create_plan(&env, "ppu").await;
    publish(&env, plan["id"].as_str().unwrap_or_default()).await;
    let body = json!({"customer": {"key": "acme"}, "plan": {"id": plan["id"]}});
    let (_, sub) = json_of(
        env.post("/openmeter/subscriptions", body).await,
        "BillingSubscription",
    )
    .await;
    assert_eq!(sub["phases"][0]["key"], "default");
    assert_eq!(
        sub["phases"][0]["items"][0]["rate_card"],
        plan["phases"][0]["rate_cards"][0]
    );
    assert_eq!(sub["invoice_currency"], "USD");
    assert_eq!(sub["billing_cadence"], "P1M");
}

#[tokio::test]
async fn second_subscription_while_one_is_active_is_409() {
    let env = start().await;
    let customer = env.double.seed_customer("acme", &[]);
    let plan = env.double.seed_plan(PlanSeed::new("ppu", 1, "active"));
    env.double.seed_subscription(&customer, &plan, "active");
    let body = json!({"customer": {"id": customer}, "plan": {"id": plan}});
    problem(env.post("/openmeter/subscriptions", body).await, 409).await;
}

#[tokio::test]
async fn subscription_to_a_draft_plan_is_400_and_unknown_plan_404() {
    let env = start().await;
    let customer = env.double.seed_customer("acme", &[]);
    let draft = env.double.seed_plan(PlanSeed::new("ppu", 1, "draft"));
    let body = json!({"customer": {"id": customer}, "plan": {"id": draft}});
    problem(env.post("/openmeter/subscriptions", body).await, 400).await;
    let body = json!({"customer": {"id": customer}, "plan": {"key": "nope"}});
    problem(env.post("/openmeter/subscriptions", body).await, 404).await;
    let body = json!({"customer": {"key": "ghost"}, "plan": {"id": draft}});
    problem(env.post("/openmeter/subscriptions", body).await, 404).await;
}

#[tokio::test]
async fn subscriptions_filter_by_customer_and_status() {
    let env = start().await;
    let a = env.double.seed_customer("a", &[]);
    let b = env.double.seed_customer("b", &[]);
    let plan = env.double.seed_plan(PlanSeed::new("ppu", 1, "active"));
    env.double.seed_subscription(&a, &plan, "canceled");
    env.double.seed_subscription(&b, &plan, "active");
    let url = format!("/openmeter/subscriptions?filter[customer_id][eq]={a}");
    let (_, list) = json_of(env.get(&url).await, "SubscriptionPagePaginatedResponse").await;
    assert_eq!(list["meta"]["page"]["total"], 1);
    assert_eq!(list["data"][0]["status"], "canceled");
    let (_, list) = json_of(
        env.get("/openmeter/subscriptions?filter[status][oeq]=active,scheduled")
            .await,
        "SubscriptionPagePaginatedResponse",
    )
    .await;
    assert_eq!(list["data"][0]["customer_id"], b.as_str());
}

#[tokio::test]
async fn deleted_plans_are_listed_with_deleted_at() {
    let env = start().await;
    env.double.seed_plan(PlanSeed {
        deleted: true,
        ..PlanSeed::new("ppu", 4, "active")
    });
    let (_, list) = json_of(
        env.get("/openmeter/plans?filter[key]=ppu").await,
        "PlanPagePaginatedResponse",
    )
    .await;
    assert!(list["data"][0]["deleted_at"].is_string());
}

/// A v3 create always starts now; `start_subscription_at` is how a test
/// gets a customer subscribed long ago, anchor and all.
#[tokio::test]
async fn a_subscription_started_in_the_past_reads_back_active_from_then() {
    let env = start().await;
    let customer = env.double.seed_customer("acme", &[]);
    let plan = env.double.seed_plan(PlanSeed::new("ppu", 1, "active"));
    let sub = env.double.seed_subscription(&customer, &plan, "active");
    let then = "2026-09-01T00:00:00Z".parse().expect("time");
    env.double
        .start_subscription_at(&sub, then)
        .expect("subscription");
    let (_, read) = json_of(
        env.get(&format!("/openmeter/subscriptions/{sub}")).await,
        "BillingSubscription",
    )
    .await;
    assert_eq!(read["active_from"], "2026-09-01T00:00:00Z");
    assert_eq!(read["billing_anchor"], "2026-09-01T00:00:00Z");
    assert_eq!(read["status"], "active");
}
