//! Canceled means "still active until `active_to`", and a customer has one
//! subscription at a time.

use chrono::{DateTime, Duration, Months, Utc};
use openmeter_double::{Decimal, PlanSeed};
use serde_json::{json, Value};

use crate::support::spec::{json_of, problem};
use crate::support::{event, start, Env};

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {v}"))
}

struct Subscribed {
    customer: String,
    plan: String,
    sub: Value,
}

impl Subscribed {
    fn id(&self) -> &str {
        self.sub["id"].as_str().expect("subscription id")
    }
}

async fn create(env: &Env, customer: &str, plan: &str) -> reqwest::Response {
    let body = json!({"customer": {"id": customer}, "plan": {"id": plan}});
    env.post("/openmeter/subscriptions", body).await
}

async fn subscribed(env: &Env) -> Subscribed {
    let customer = env.double.seed_customer("acme", &["acme"]);
    let plan = env.double.seed_plan(PlanSeed::new("ppu", 1, "active"));
    let (status, sub) = json_of(create(env, &customer, &plan).await, "BillingSubscription").await;
    assert_eq!(status, 201);
    Subscribed {
        customer,
        plan,
        sub,
    }
}

async fn get(env: &Env, id: &str) -> Value {
    let url = format!("/openmeter/subscriptions/{id}");
    json_of(env.get(&url).await, "BillingSubscription").await.1
}

async fn cancel(env: &Env, id: &str, body: Value) -> reqwest::Response {
    env.post(&format!("/openmeter/subscriptions/{id}/cancel"), body)
        .await
}

#[tokio::test]
async fn a_subscription_canceled_for_later_reads_canceled_with_its_active_to() {
    let env = start().await;
    let s = subscribed(&env).await;
    let end = Utc::now() + Duration::days(10);

    let canceled = env
        .double
        .cancel_subscription_at(s.id(), end)
        .expect("cancel");

    assert_eq!(canceled.status, "canceled");
    let read = get(&env, s.id()).await;
    assert_eq!(read["status"], "canceled");
    assert_eq!(time(&read["active_to"]), end);
    let url = format!(
        "/openmeter/subscriptions?filter[customer_id][eq]={}&filter[status][eq]=canceled",
        s.customer
    );
    let (_, list) = json_of(env.get(&url).await, "SubscriptionPagePaginatedResponse").await;
    assert_eq!(list["meta"]["page"]["total"], 1);
}

#[tokio::test]
async fn once_active_to_has_passed_the_subscription_reads_inactive() {
    let env = start().await;
    let s = subscribed(&env).await;

    env.double
        .cancel_subscription_at(s.id(), Utc::now() - Duration::seconds(1))
        .expect("cancel");

    assert_eq!(get(&env, s.id()).await["status"], "inactive");
    assert_eq!(env.double.subscriptions()[0].status, "inactive");
}

#[tokio::test]
async fn a_second_subscription_while_the_canceled_one_still_runs_is_409() {
    let env = start().await;
    let s = subscribed(&env).await;
    env.double
        .cancel_subscription_at(s.id(), Utc::now() + Duration::days(10))
        .expect("cancel");

    let p = problem(create(&env, &s.customer, &s.plan).await, 409).await;

    let detail = p["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("only single subscription is allowed per customer at a time"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_scheduled_subscription_also_blocks_a_second_one() {
    let env = start().await;
    let customer = env.double.seed_customer("acme", &["acme"]);
    let plan = env.double.seed_plan(PlanSeed::new("ppu", 1, "active"));
    env.double.seed_subscription(&customer, &plan, "scheduled");
    problem(create(&env, &customer, &plan).await, 409).await;
}

#[tokio::test]
async fn after_active_to_a_new_subscription_can_start() {
    let env = start().await;
    let s = subscribed(&env).await;
    env.double
        .cancel_subscription_at(s.id(), Utc::now() - Duration::milliseconds(1))
        .expect("cancel");

    let (status, next) = json_of(
        create(&env, &s.customer, &s.plan).await,
        "BillingSubscription",
    )
    .await;

    assert_eq!(status, 201);
    assert_eq!(next["status"], "active");
    assert_ne!(next["id"], s.sub["id"]);
}

#[tokio::test]
async fn cancel_immediately_ends_the_subscription_now() {
    let env = start().await;
    let s = subscribed(&env).await;
    let before = Utc::now() - Duration::microseconds(1);

    let (status, ended) =
        json_of(cancel(&env, s.id(), json!({})).await, "BillingSubscription").await;

    assert_eq!(status, 200);
    assert_eq!(ended["status"], "inactive");
    assert!(time(&ended["active_to"]) >= before);
    assert_eq!(create(&env, &s.customer, &s.plan).await.status(), 201);
}

#[tokio::test]
async fn cancel_at_the_next_billing_cycle_runs_to_the_end_of_the_period() {
    let env = start().await;
    let s = subscribed(&env).await;
    let anchor = time(&s.sub["billing_anchor"]);

    let (_, canceled) = json_of(
        cancel(&env, s.id(), json!({"timing": "next_billing_cycle"})).await,
        "BillingSubscription",
    )
    .await;

    assert_eq!(canceled["status"], "canceled");
    let expected = anchor.checked_add_months(Months::new(1)).expect("month");
    assert_eq!(time(&canceled["active_to"]), expected);
}

#[tokio::test]
async fn cancel_at_a_custom_time_must_fall_on_a_billing_period_boundary() {
    let env = start().await;
    let s = subscribed(&env).await;
    let anchor = time(&s.sub["billing_anchor"]);
    let misaligned = anchor + Duration::days(3);
    let aligned = anchor.checked_add_months(Months::new(2)).expect("month");

    let p = problem(
        cancel(&env, s.id(), json!({"timing": misaligned})).await,
        400,
    )
    .await;
    assert!(p["detail"].as_str().unwrap_or("").contains("misaligned"));
    let (status, canceled) = json_of(
        cancel(&env, s.id(), json!({"timing": aligned})).await,
        "BillingSubscription",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(time(&canceled["active_to"]), aligned);
}

#[tokio::test]
async fn only_an_active_subscription_can_be_canceled() {
    let env = start().await;
    let s = subscribed(&env).await;
    cancel(&env, s.id(), json!({"timing": "next_billing_cycle"})).await;

    let p = problem(cancel(&env, s.id(), json!({})).await, 403).await;

    assert_eq!(
        p["detail"],
        "transition cancel in state canceled not allowed"
    );
    problem(
        cancel(&env, "01J00000000000000000000000", json!({})).await,
        404,
    )
    .await;
}

#[tokio::test]
async fn unscheduling_the_cancelation_makes_it_open_ended_again() {
    let env = start().await;
    let s = subscribed(&env).await;
    cancel(&env, s.id(), json!({"timing": "next_billing_cycle"})).await;
    let url = format!("/openmeter/subscriptions/{}/unschedule-cancelation", s.id());

    let (status, resumed) = json_of(env.post(&url, json!({})).await, "BillingSubscription").await;

    assert_eq!(status, 200);
    assert_eq!(resumed["status"], "active");
    assert!(resumed.get("active_to").is_none());
}

#[tokio::test]
async fn usage_after_active_to_is_not_billed() {
    let env = start().await;
    let meter = env.double.seed_meter(json!({
        "name": "Billable", "key": "billable_usd_micros", "aggregation": "sum",
        "event_type": "create_signed_ticket", "value_property": "$.micros",
    }));
    let (_, feature) = json_of(
        env.post(
            "/openmeter/features",
            json!({"name": "Spend", "key": "spend", "meter": {"id": meter}}),
        )
        .await,
        "Feature",
    )
    .await;
    let card = json!({
        "name": "Spend", "key": "spend", "feature": {"id": feature["id"]},
        "billing_cadence": "P1M", "price": {"type": "unit", "amount": "1"},
    });
    let plan = env.double.seed_plan(PlanSeed {
        phases: Some(vec![
            json!({"name": "Default", "key": "default", "rate_cards": [card]}),
        ]),
        ..PlanSeed::new("ppu", 1, "active")
    });
    let customer = env.double.seed_customer("acme", &["acme"]);
    let (_, sub) = json_of(create(&env, &customer, &plan).await, "BillingSubscription").await;
    let start = time(&sub["active_from"]);
    let end = start + Duration::seconds(10);
    env.double
        .cancel_subscription_at(sub["id"].as_str().unwrap_or_default(), end)
        .expect("cancel");
    let at = |secs: i64, micros: u64, id: &str| {
        let mut e = event(id, "acme");
        e["time"] = json!((start + Duration::seconds(secs)).to_rfc3339());
        e["data"] = json!({"micros": micros});
        e
    };

    env.ingest(json!([at(5, 2, "in"), at(11, 30, "after")]))
        .await;

    assert_eq!(
        env.double.billable_total("billable_usd_micros", &customer),
        Decimal::from(2)
    );
}
