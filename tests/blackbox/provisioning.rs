//! Provisioning against the OpenMeter double: idempotency, races, plan
//! resolution, error classification, secrets.

use std::sync::Arc;

use openmeter_double::{PlanSeed, Route};
use ticketmeter::{
    DeadLetterSink, EnsureConfig, EnsureError, ErrorClass, Identity, PipelineConfig, Provisioner,
    SubjectRule,
};

use crate::support::double::{OpenMeter, PLAN, TOKEN};
use crate::support::pipeline::{run_lines, test_pipeline};

fn provisioner(om: &OpenMeter, token: Option<&str>) -> Provisioner {
    Provisioner::new(
        om.client(token),
        PLAN.parse().unwrap(),
        EnsureConfig::default(),
    )
}

fn id(auth: &str) -> Identity {
    Identity::from_compound("auth_id", auth, SubjectRule::Upstream).unwrap()
}

fn seed_active_plan(om: &OpenMeter) -> String {
    om.double.seed_plan(PlanSeed::new(PLAN, 1, "active"))
}

#[tokio::test]
async fn new_identity_gets_a_customer_and_a_subscription() {
    let om = OpenMeter::start(None).await;
    seed_active_plan(&om);
    let ensured = provisioner(&om, None)
        .ensure(&id("acme:alice"))
        .await
        .unwrap();
    assert!(ensured.created.customer && ensured.created.subscription);
    assert_eq!(ensured.plan_key, PLAN);
    let customers = om.double.customers();
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].key, "acme:alice");
    println!(
        "upstream calls for a new identity: {}",
        om.double.total_calls()
    );
}

#[tokio::test]
async fn second_ensure_of_a_known_identity_makes_no_upstream_call() {
    let om = OpenMeter::start(None).await;
    seed_active_plan(&om);
    let p = provisioner(&om, None);
    p.ensure(&id("acme:alice")).await.unwrap();
    om.double.reset_counters();
    p.ensure(&id("acme:alice")).await.unwrap();
    assert_eq!(
        om.double.total_calls(),
        0,
        "a cached identity costs nothing"
    );
}

#[tokio::test]
async fn existing_customer_and_subscription_are_found_without_writes() {
    let om = OpenMeter::start(None).await;
    let plan = seed_active_plan(&om);
    let customer = om.double.seed_customer("acme:bob", &["acme:bob"]);
    om.double.seed_subscription(&customer, &plan, "active");
    let ensured = provisioner(&om, None)
        .ensure(&id("acme:bob"))
        .await
        .unwrap();
    assert_eq!(ensured.customer_id, customer);
    assert!(!ensured.created.customer && !ensured.created.subscription);
    assert_eq!(om.double.write_calls(), 0);
    assert_eq!(
        calls(&om),
        [(Route::ListCustomers, 1), (Route::ListSubscriptions, 1)],
        "an existing customer costs a lookup of it and of its subscriptions"
    );
}

/// The upstream calls made, by route, those made at all.
fn calls(om: &OpenMeter) -> Vec<(Route, u64)> {
    Route::ALL
        .into_iter()
        .map(|route| (route, om.double.calls(route)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[tokio::test]
async fn fifty_concurrent_ensures_of_one_new_identity_create_one_customer_and_one_subscription() {
    let om = OpenMeter::start(None).await;
    seed_active_plan(&om);
    let p = Arc::new(provisioner(&om, None));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move {
                p.ensure(&id("race:one"))
                    .await
                    .map(|e| e.customer_id.clone())
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(om.double.customers().len(), 1);
    assert_eq!(om.double.subscriptions().len(), 1);
    assert_eq!(
        om.double.calls(Route::CreateCustomer),
        1,
        "one upstream flight"
    );
}

#[tokio::test]
async fn two_provisioners_racing_on_one_identity_still_create_one_customer() {
    let om = OpenMeter::start(None).await;
    seed_active_plan(&om);
    for round in 0..10 {
        let key = format!("race:{round}");
        let (a, b) = (provisioner(&om, None), provisioner(&om, None));
        let identity = id(&key);
        let (ra, rb) = tokio::join!(a.ensure(&identity), b.ensure(&identity));
        assert_eq!(ra.unwrap().customer_id, rb.unwrap().customer_id);
    }
    assert_eq!(om.double.customers().len(), 10);
    assert_eq!(om.double.subscriptions().len(), 10);
}

#[tokio::test]
async fn plan_resolution_picks_the_highest_version_active_now_across_pages() {
    let om = OpenMeter::start(None).await;
    for version in 1..=130u32 {
        let status = match version {
            77 => "active",
            100 => "scheduled",
            128 => "active",
            129 => "draft",
            _ => "archived",
        };
        om.double.seed_plan(PlanSeed {
            deleted: version == 128,
            ..PlanSeed::new(PLAN, version, status)
        });
    }
    om.double
        .seed_plan(PlanSeed::new("other_plan", 500, "active"));
    let plan = provisioner(&om, None).default_plan().await.unwrap();
    // 100 is scheduled: OpenMeter refuses to subscribe to a version that is
    // not active now, so it is passed over.
    assert_eq!((plan.key.as_str(), plan.version), (PLAN, 77));
    assert!(
        om.double.calls(Route::ListPlans) >= 2,
        "read more than one page"
    );
}

#[tokio::test]
async fn missing_plan_is_an_error_naming_the_key() {
    let om = OpenMeter::start(None).await;
    om.double.seed_plan(PlanSeed::new(PLAN, 1, "draft"));
    let e = provisioner(&om, None)
        .ensure(&id("acme:carol"))
        .await
        .unwrap_err();
    assert!(matches!(e, EnsureError::NoSubscribablePlan(_)));
    assert!(e.to_string().contains(PLAN), "{e}");
    assert_eq!(e.class(), ErrorClass::Configuration);
}

#[tokio::test]
async fn customer_already_on_another_plan_gets_no_new_subscription() {
    let om = OpenMeter::start(None).await;
    seed_active_plan(&om);
    let pro = om.double.seed_plan(PlanSeed::new("pro", 1, "active"));
    let customer = om.double.seed_customer("acme:dave", &["acme:dave"]);
    om.double.seed_subscription(&customer, &pro, "active");
    let ensured = provisioner(&om, None)
        .ensure(&id("acme:dave"))
        .await
        .unwrap();
    assert_eq!(ensured.plan_key, "pro");
    assert!(!ensured.created.subscription);
    assert_eq!(om.double.calls(Route::CreateSubscription), 0);
}

#[tokio::test]
async fn transient_upstream_errors_are_retried_and_succeed() {
    let om = OpenMeter::start(None).await;
    seed_active_plan(&om);
    om.double.fail_next(Route::ListCustomers, 2, 503);
    om.double.fail_next(Route::CreateCustomer, 1, 500);
    om.double.drop_next(Route::ListSubscriptions, 1);
    let ensured = provisioner(&om, None)
        .ensure(&id("acme:erin"))
        .await
        .unwrap();
    assert!(ensured.created.subscription);
    assert_eq!(om.double.customers().len(), 1);
}

#[tokio::test]
async fn wrong_token_gives_a_clear_token_error() {
    let om = OpenMeter::start(Some(TOKEN)).await;
    seed_active_plan(&om);
    let e = provisioner(&om, Some("kpat_wrong_token_value"))
        .ensure(&id("acme:frank"))
        .await
        .unwrap_err();
    let message = e.to_string();
    assert!(message.contains("OPENMETER_API_KEY"), "{message}");
    assert!(!message.contains("kpat_wrong_token_value"));
    assert_eq!(e.class(), ErrorClass::Configuration);
}

#[tokio::test]
async fn the_token_never_appears_in_debug_output() {
    let om = OpenMeter::start(Some(TOKEN)).await;
    let client = om.client(Some(TOKEN));
    assert!(!format!("{client:?}").contains(TOKEN));
    let p = provisioner(&om, Some("kpat_leaky"));
    let e = p.ensure(&id("acme:gina")).await.unwrap_err();
    assert!(!format!("{e:?} {e}").contains("kpat_leaky"));
}

#[tokio::test]
async fn an_identity_owned_as_a_subject_by_another_customer_bills_that_customer() {
    let om = OpenMeter::start(None).await;
    seed_active_plan(&om);
    // An earlier identity tool made this customer, with our key as its subject.
    let owner = om.double.seed_customer("someone-else", &["acme:hank"]);
    let ensured = provisioner(&om, None)
        .ensure(&id("acme:hank"))
        .await
        .unwrap();
    assert_eq!(ensured.customer_id, owner);
    assert_eq!(ensured.customer_key, "someone-else");
    assert_eq!(om.double.customers().len(), 1, "no duplicate customer");
    let subscriptions = om.double.subscriptions();
    assert_eq!(subscriptions.len(), 1);
    assert_eq!(subscriptions[0].customer_id, owner);
}

#[tokio::test]
async fn a_customer_whose_billing_setup_is_refused_is_a_customer_error_asked_once_a_while() {
    let om = OpenMeter::bootstrapped(None).await;
    om.double.refuse_billing_setup("acme:ivan", true);
    let p = provisioner(&om, None);
    let e = p.ensure(&id("acme:ivan")).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Customer, "{e}");
    assert!(e.to_string().contains("billing setup"), "{e}");
    let calls = om.double.total_calls();
    let again = p.ensure(&id("acme:ivan")).await.unwrap_err();
    assert_eq!(again.to_string(), e.to_string());
    assert_eq!(om.double.total_calls(), calls, "refusal remembered");
}

#[tokio::test]
async fn a_canceled_subscription_still_running_satisfies_ensure() {
    let om = OpenMeter::bootstrapped(None).await;
    let first = provisioner(&om, None)
        .ensure(&id("acme:june"))
        .await
        .unwrap();
    let active_to = chrono::Utc::now() + chrono::Duration::days(3);
    om.double
        .cancel_subscription_at(&first.subscription_id, active_to)
        .unwrap();
    let ensured = provisioner(&om, None)
        .ensure(&id("acme:june"))
        .await
        .unwrap();
    assert_eq!(ensured.subscription_id, first.subscription_id);
    assert_eq!(ensured.status, "canceled");
    assert!(ensured.terms.active_to.is_some());
    assert_eq!(om.double.subscriptions().len(), 1);
}

/// `n` customers keyed `acme:user-<i>`, each with an active subscription,
/// made behind the provisioner's back (an earlier run, another instance).
fn seed_customers(om: &OpenMeter, plan: &str, n: usize) -> Vec<Identity> {
    (0..n)
        .map(|i| {
            let key = format!("acme:user-{i}");
            let customer = om.double.seed_customer(&key, &[&key]);
            om.double.seed_subscription(&customer, plan, "active");
            id(&key)
        })
        .collect()
}

#[tokio::test]
async fn a_warmed_cache_knows_existing_customers_without_a_call_each() {
    let om = OpenMeter::start(None).await;
    let plan = seed_active_plan(&om);
    let identities = seed_customers(&om, &plan, 2_500);
    let p = provisioner(&om, None);
    let warmed = p.warm().await.unwrap();
    assert_eq!((warmed.customers, warmed.identities), (2_500, 2_500));
    assert_eq!(
        om.double.total_calls(),
        6,
        "three pages of 1,000 customers and three of subscriptions"
    );
    om.double.reset_counters();
    for identity in &identities {
        let ensured = p.ensure(identity).await.unwrap();
        assert!(!ensured.created.customer && !ensured.created.subscription);
    }
    assert_eq!(om.double.total_calls(), 0);
}

#[tokio::test]
async fn a_warmed_cache_bills_a_subject_key_to_the_customer_that_owns_it() {
    let om = OpenMeter::start(None).await;
    let plan = seed_active_plan(&om);
    let owner = om.double.seed_customer("acme", &["acme", "acme:legacy"]);
    om.double.seed_subscription(&owner, &plan, "active");
    let p = provisioner(&om, None);
    p.warm().await.unwrap();
    om.double.reset_counters();
    let ensured = p.ensure(&id("acme:legacy")).await.unwrap();
    assert_eq!(
        (ensured.customer_key.as_str(), ensured.customer_id.as_str()),
        ("acme", owner.as_str())
    );
    assert_eq!(om.double.total_calls(), 0);
}

#[tokio::test]
async fn a_customer_without_a_subscription_is_still_subscribed_after_a_warm_up() {
    let om = OpenMeter::start(None).await;
    seed_active_plan(&om);
    om.double.seed_customer("acme:carol", &["acme:carol"]);
    let p = provisioner(&om, None);
    p.warm().await.unwrap();
    let ensured = p.ensure(&id("acme:carol")).await.unwrap();
    assert!(!ensured.created.customer && ensured.created.subscription);
}

#[tokio::test]
async fn after_a_warm_up_a_new_identity_is_created_and_subscribed_without_a_lookup() {
    let om = OpenMeter::start(None).await;
    let plan = seed_active_plan(&om);
    seed_customers(&om, &plan, 3);
    let p = provisioner(&om, None);
    p.warm().await.unwrap();
    p.default_plan().await.unwrap();
    om.double.reset_counters();
    let ensured = p.ensure(&id("acme:newcomer")).await.unwrap();
    assert!(ensured.created.customer && ensured.created.subscription);
    assert_eq!(
        (
            om.double.calls(Route::CreateCustomer),
            om.double.calls(Route::CreateSubscription),
            om.double.total_calls()
        ),
        (1, 1, 2),
        "create, subscribe: no lookup"
    );
}

#[tokio::test]
async fn without_a_warm_up_a_new_identity_costs_a_lookup_a_create_the_plan_and_a_subscribe() {
    let om = OpenMeter::start(None).await;
    seed_active_plan(&om);
    let p = provisioner(&om, None);
    p.ensure(&id("acme:newcomer")).await.unwrap();
    assert_eq!(
        calls(&om),
        [
            (Route::ListCustomers, 1),
            (Route::CreateCustomer, 1),
            (Route::CreateSubscription, 1),
            (Route::ListPlans, 1),
        ],
        "a lookup, a create, the plan, a subscribe; a customer just created has no subscription to look for"
    );
    om.double.reset_counters();
    p.ensure(&id("acme:second")).await.unwrap();
    assert_eq!(
        om.double.calls(Route::ListPlans),
        0,
        "the plan is cached (PLAN_CACHE_TTL)"
    );
}

#[tokio::test]
async fn a_customer_created_elsewhere_after_the_warm_up_is_used_once_the_create_conflicts() {
    let om = OpenMeter::start(None).await;
    let plan = seed_active_plan(&om);
    let p = provisioner(&om, None);
    p.warm().await.unwrap();
    let late = om.double.seed_customer("acme:late", &["acme:late"]);
    om.double.seed_subscription(&late, &plan, "active");
    let ensured = p.ensure(&id("acme:late")).await.unwrap();
    assert_eq!(ensured.customer_id, late);
    assert!(!ensured.created.customer && !ensured.created.subscription);
    assert_eq!(om.double.customers().len(), 1);
    assert_eq!(om.double.subscriptions().len(), 1);
}

#[tokio::test]
async fn a_subject_claimed_elsewhere_after_the_warm_up_bills_the_customer_that_claimed_it() {
    let om = OpenMeter::start(None).await;
    let plan = seed_active_plan(&om);
    let p = provisioner(&om, None);
    p.warm().await.unwrap();
    let owner = om.double.seed_customer("acme", &["acme", "acme:legacy"]);
    om.double.seed_subscription(&owner, &plan, "active");
    let ensured = p.ensure(&id("acme:legacy")).await.unwrap();
    assert_eq!(
        (ensured.customer_key.as_str(), ensured.customer_id.as_str()),
        ("acme", owner.as_str())
    );
    assert_eq!(om.double.customers().len(), 1);
}

#[tokio::test]
async fn a_customer_subscribed_elsewhere_just_after_we_created_it_keeps_that_one_subscription() {
    let om = OpenMeter::start(None).await;
    seed_active_plan(&om);
    let p = provisioner(&om, None);
    p.warm().await.unwrap();
    let other = provisioner(&om, None);
    let identity = id("acme:raced");
    let (ours, theirs) = tokio::join!(p.ensure(&identity), other.ensure(&identity));
    assert_eq!(
        ours.unwrap().subscription_id,
        theirs.unwrap().subscription_id
    );
    assert_eq!(om.double.customers().len(), 1);
    assert_eq!(om.double.subscriptions().len(), 1);
}

#[tokio::test]
async fn a_batch_of_many_unknown_existing_customers_warms_the_cache_instead_of_asking_each() {
    let om = OpenMeter::start(None).await;
    let plan = seed_active_plan(&om);
    seed_customers(&om, &plan, 200);
    let pipeline = test_pipeline(
        om.client(None),
        DeadLetterSink::memory(),
        EnsureConfig::default(),
        PipelineConfig::default(),
    );
    let now = chrono::Utc::now();
    let lines: Vec<String> = (0..200)
        .map(|i| {
            serde_json::json!({
                "id": format!("env-warm-{i}"),
                "type": "create_signed_ticket",
                "timestamp": now.timestamp_millis().to_string(),
                "data": {
                    "request_id": format!("req-warm-{i}"),
                    "auth_id": format!("acme:user-{i}"),
                    "computed_fee": "1000000000000",
                    "current_time": now.to_rfc3339(),
                }
            })
            .to_string()
        })
        .collect();
    run_lines(&pipeline, &lines).await;
    assert_eq!(om.double.delivery_count(), 200);
    assert_eq!(om.double.calls(Route::ListCustomers), 1);
    assert_eq!(om.double.calls(Route::ListSubscriptions), 1);
    assert_eq!(
        om.double.write_calls(),
        0,
        "no customer or subscription made"
    );
    assert_eq!(om.double.total_calls(), 3, "two pages and one ingest");
}
