//! Plan versions as the server sees them: status computed from the effective
//! period, only an active version can be subscribed to, and publish refuses
//! what invoicing could not bill.

use openmeter_double::PlanSeed;
use serde_json::{json, Value};

use crate::support::spec::{json_of, problem};
use crate::support::{billable_feature, plan_body, start, Env};

fn detail(p: &Value) -> &str {
    p["detail"].as_str().unwrap_or_default()
}

fn with_card(feature: &str, card: Value) -> Value {
    let mut body = plan_body("ppu", feature);
    body["phases"][0]["rate_cards"] = json!([card]);
    body
}

/// Creates the draft (which must succeed) and publishes it.
async fn create_then_publish(env: &Env, body: Value) -> (Value, reqwest::Response) {
    let (status, draft) = json_of(env.post("/openmeter/plans", body).await, "BillingPlan").await;
    assert_eq!((status, draft["status"].as_str()), (201, Some("draft")));
    let url = format!(
        "/openmeter/plans/{}/publish",
        draft["id"].as_str().unwrap_or_default()
    );
    let published = env.post(&url, json!({})).await;
    (draft, published)
}

async fn plan_status(env: &Env, id: &str) -> Value {
    let url = format!("/openmeter/plans/{id}");
    json_of(env.get(&url).await, "BillingPlan").await.1["status"].clone()
}

#[tokio::test]
async fn a_usage_rate_card_without_billing_cadence_is_created_but_not_published() {
    let env = start().await;
    let feature = billable_feature(&env).await;
    let card = json!({
        "name": "Billable spend", "key": "billable_spend", "feature": {"id": feature},
        "price": {"type": "unit", "amount": "0.000001"},
    });

    let (draft, published) = create_then_publish(&env, with_card(&feature, card)).await;

    let p = problem(published, 400).await;
    let id = draft["id"].as_str().unwrap_or_default();
    assert_eq!(
        detail(&p),
        format!(
            "invalid plan [id={id} key=ppu version=1]: billing cadence must be positive and 1 \
             hour long duration at least"
        )
    );
    assert_eq!(
        p["invalid_parameters"][0]["field"],
        "phases[0].rate_cards[0].billing_cadence"
    );
    assert_eq!(plan_status(&env, id).await, "draft");
}

#[tokio::test]
async fn a_billing_cadence_shorter_than_an_hour_is_not_published() {
    let env = start().await;
    let feature = billable_feature(&env).await;
    let mut body = plan_body("ppu", &feature);
    body["phases"][0]["rate_cards"][0]["billing_cadence"] = json!("PT30M");

    let (_, published) = create_then_publish(&env, body).await;

    let p = problem(published, 400).await;
    assert!(detail(&p).ends_with("1 hour long duration at least"), "{p}");
}

#[tokio::test]
async fn a_usage_price_without_a_feature_is_created_but_not_published() {
    let env = start().await;
    let card = json!({
        "name": "Spend", "key": "spend", "billing_cadence": "P1M",
        "price": {"type": "unit", "amount": "1"},
    });

    let (_, published) = create_then_publish(&env, with_card("unused", card)).await;

    let p = problem(published, 400).await;
    assert!(
        detail(&p).ends_with("usage-based price requires feature to be associated with"),
        "{p}"
    );
}

#[tokio::test]
async fn a_rate_card_keyed_unlike_its_feature_is_refused_even_at_create() {
    let env = start().await;
    let feature = billable_feature(&env).await;
    let mut body = plan_body("ppu", &feature);
    body["phases"][0]["rate_cards"][0]["key"] = json!("spend");

    let p = problem(env.post("/openmeter/plans", body).await, 400).await;

    assert!(
        detail(&p).ends_with("rate card key must match feature key"),
        "{p}"
    );
    assert!(env.double.plans().is_empty());
}

#[tokio::test]
async fn a_draft_keyed_unlike_its_feature_is_not_published() {
    let env = start().await;
    let feature = billable_feature(&env).await;
    let mut body = plan_body("ppu", &feature);
    body["phases"][0]["rate_cards"][0]["key"] = json!("spend");
    let draft = env.double.seed_plan(PlanSeed {
        phases: Some(body["phases"].as_array().cloned().unwrap_or_default()),
        ..PlanSeed::new("ppu", 1, "draft")
    });

    let url = format!("/openmeter/plans/{draft}/publish");
    let p = problem(env.post(&url, json!({})).await, 400).await;

    assert!(
        detail(&p).contains("rate card key must match feature key"),
        "{p}"
    );
}

#[tokio::test]
async fn a_rate_card_on_an_unknown_feature_is_refused_at_create() {
    let env = start().await;
    let body = plan_body("ppu", "01J00000000000000000000000");

    let p = problem(env.post("/openmeter/plans", body).await, 400).await;

    assert!(
        detail(&p).contains("feature not found [ratecard.key=billable_spend"),
        "{p}"
    );
}

#[tokio::test]
async fn a_flat_fee_needs_neither_feature_nor_cadence() {
    let env = start().await;
    let card = json!({"name": "Setup", "key": "setup", "price": {"type": "flat", "amount": "5"}});

    let (_, published) = create_then_publish(&env, with_card("unused", card)).await;

    assert_eq!(published.status(), 200);
}

#[tokio::test]
async fn an_active_version_cannot_be_published_again() {
    let env = start().await;
    let active = env.double.seed_plan(PlanSeed::new("ppu", 1, "active"));

    let url = format!("/openmeter/plans/{active}/publish");
    let p = problem(env.post(&url, json!({})).await, 400).await;

    assert_eq!(
        detail(&p),
        "invalid Plan: only Plans in [draft scheduled] can be published/rescheduled, but it has \
         active state"
    );
}

#[tokio::test]
async fn a_scheduled_version_reads_scheduled_and_cannot_be_subscribed_to_yet() {
    let env = start().await;
    let scheduled = env.double.seed_plan(PlanSeed::new("ppu", 1, "scheduled"));
    let customer = env.double.seed_customer("acme", &["acme"]);
    assert_eq!(plan_status(&env, &scheduled).await, "scheduled");

    let body = json!({"customer": {"id": customer}, "plan": {"id": scheduled}});
    let p = problem(env.post("/openmeter/subscriptions", body).await, 400).await;

    assert!(
        detail(&p).starts_with("plan ppu@1 is not active at "),
        "{p}"
    );
}

#[tokio::test]
async fn publishing_a_scheduled_version_makes_it_active_now() {
    let env = start().await;
    let old = env.double.seed_plan(PlanSeed::new("ppu", 1, "active"));
    let scheduled = env.double.seed_plan(PlanSeed::new("ppu", 2, "scheduled"));

    let url = format!("/openmeter/plans/{scheduled}/publish");
    let (status, published) = json_of(env.post(&url, json!({})).await, "BillingPlan").await;

    assert_eq!(
        (status, published["status"].as_str()),
        (200, Some("active"))
    );
    assert_eq!(plan_status(&env, &old).await, "archived");
    let (_, listed) = json_of(
        env.get("/openmeter/plans?filter[status][eq]=active").await,
        "PlanPagePaginatedResponse",
    )
    .await;
    assert_eq!(listed["meta"]["page"]["total"], 1);
    assert_eq!(listed["data"][0]["id"], scheduled.as_str());
}

#[tokio::test]
async fn a_deleted_plan_cannot_be_subscribed_to() {
    let env = start().await;
    let deleted = env.double.seed_plan(PlanSeed {
        deleted: true,
        ..PlanSeed::new("ppu", 1, "active")
    });
    let customer = env.double.seed_customer("acme", &["acme"]);

    let body = json!({"customer": {"id": customer}, "plan": {"id": deleted}});
    let p = problem(env.post("/openmeter/subscriptions", body).await, 400).await;

    assert!(
        detail(&p).starts_with("plan is deleted [namespace=default, key=ppu, version=1"),
        "{p}"
    );
}

#[tokio::test]
async fn a_usage_discount_is_kept_as_the_server_stores_it_and_published() {
    let env = start().await;
    let feature = billable_feature(&env).await;
    let mut body = plan_body("ppu", &feature);
    body["phases"][0]["rate_cards"][0]["discounts"] = json!({"usage": "5000000.00"});

    let (draft, published) = create_then_publish(&env, body).await;

    assert_eq!(
        draft["phases"][0]["rate_cards"][0]["discounts"],
        json!({"usage": "5000000"})
    );
    assert_eq!(published.status(), 200);
}

#[tokio::test]
async fn a_usage_discount_on_a_flat_price_is_created_but_not_published() {
    let env = start().await;
    let card = json!({
        "name": "Setup", "key": "setup", "price": {"type": "flat", "amount": "5"},
        "discounts": {"usage": "10"},
    });

    let (_, published) = create_then_publish(&env, with_card("unused", card)).await;

    let p = problem(published, 400).await;
    assert!(
        detail(&p).ends_with("usage discount is not supported for flat price"),
        "{p}"
    );
}

#[tokio::test]
async fn a_negative_usage_discount_is_created_but_not_published() {
    let env = start().await;
    let feature = billable_feature(&env).await;
    let mut body = plan_body("ppu", &feature);
    body["phases"][0]["rate_cards"][0]["discounts"] = json!({"usage": "-1"});

    let (_, published) = create_then_publish(&env, body).await;

    let p = problem(published, 400).await;
    assert!(detail(&p).ends_with("usage must be greater than 0"), "{p}");
}

#[tokio::test]
async fn a_plan_label_with_a_reserved_key_prefix_is_refused_at_create() {
    let env = start().await;
    let feature = billable_feature(&env).await;
    let mut body = plan_body("ppu", &feature);
    body["labels"] = json!({"kong_zone": "eu"});

    let p = problem(env.post("/openmeter/plans", body).await, 400).await;

    assert_eq!(
        detail(&p),
        "failed to convert label metadata: label key must not have reserved prefix"
    );
    assert!(env.double.plans().is_empty());
}

#[tokio::test]
async fn a_plan_reads_back_with_credit_then_invoice_and_without_its_labels() {
    let env = start().await;
    let feature = billable_feature(&env).await;
    let mut body = plan_body("ppu", &feature);
    body["labels"] = json!({"plan_kind": "owner_starter"});

    let (draft, _) = create_then_publish(&env, body).await;

    assert_eq!(draft["settlement_mode"], "credit_then_invoice");
    assert!(draft.get("labels").is_none(), "{draft}");
    let kept = env.double.plans()[0].labels.clone().unwrap_or_default();
    assert_eq!(
        kept.get("plan_kind").map(String::as_str),
        Some("owner_starter")
    );
}
