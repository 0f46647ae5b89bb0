//! An injectable billing-setup refusal: the server's 409 "invalid billing
//! setup" for one customer, everyone else unaffected.

use openmeter_double::PlanSeed;
use serde_json::json;

use crate::support::spec::{json_of, problem};
use crate::support::{start, Env};

/// An active plan with a priced rate card (only those are checked).
fn priced_plan(env: &Env) -> String {
    let card = json!({"name": "Base", "key": "base", "price": {"type": "flat", "amount": "10"}});
    env.double.seed_plan(PlanSeed {
        phases: Some(vec![
            json!({"name": "Default", "key": "default", "rate_cards": [card]}),
        ]),
        ..PlanSeed::new("ppu", 1, "active")
    })
}

async fn subscribe(env: &Env, customer: &str, plan: &str) -> reqwest::Response {
    let body = json!({"customer": {"id": customer}, "plan": {"id": plan}});
    env.post("/openmeter/subscriptions", body).await
}

#[tokio::test]
async fn a_refused_customer_gets_the_servers_409_and_no_subscription() {
    let env = start().await;
    let plan = priced_plan(&env);
    let customer = env.double.seed_customer("acme", &["acme"]);
    env.double.refuse_billing_setup(&customer, true);

    let p = problem(subscribe(&env, &customer, &plan).await, 409).await;

    let detail = p["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("invalid billing setup: "), "{detail}");
    assert!(detail.contains(&customer), "{detail}");
    assert!(env.double.subscriptions().is_empty());
}

#[tokio::test]
async fn a_refusal_by_key_applies_to_a_customer_created_later() {
    let env = start().await;
    let plan = priced_plan(&env);
    env.double.refuse_billing_setup("acme", true);
    let (_, customer) = json_of(
        env.create_customer("acme", &["acme"]).await,
        "BillingCustomer",
    )
    .await;
    let id = customer["id"].as_str().unwrap_or_default();

    problem(subscribe(&env, id, &plan).await, 409).await;
}

#[tokio::test]
async fn lifting_the_refusal_lets_the_customer_subscribe() {
    let env = start().await;
    let plan = priced_plan(&env);
    let customer = env.double.seed_customer("acme", &["acme"]);
    env.double.refuse_billing_setup("acme", true);
    problem(subscribe(&env, &customer, &plan).await, 409).await;

    env.double.refuse_billing_setup(&customer, false);

    assert_eq!(subscribe(&env, &customer, &plan).await.status(), 201);
}

#[tokio::test]
async fn other_customers_still_subscribe() {
    let env = start().await;
    let plan = priced_plan(&env);
    env.double.refuse_billing_setup("acme", true);
    let other = env.double.seed_customer("globex", &["globex"]);

    assert_eq!(subscribe(&env, &other, &plan).await.status(), 201);
}

#[tokio::test]
async fn a_subscription_without_prices_is_not_checked() {
    let env = start().await;
    let plan = env.double.seed_plan(PlanSeed::new("free", 1, "active"));
    let customer = env.double.seed_customer("acme", &["acme"]);
    env.double.refuse_billing_setup("acme", true);

    assert_eq!(subscribe(&env, &customer, &plan).await.status(), 201);
}
