//! The meter query and what invoicing bills: counted per customer, by event
//! time in whole seconds, deduplicated, answered as the server's float64.

use chrono::{DateTime, Duration, SecondsFormat, SubsecRound, Utc};
use openmeter_double::{Decimal, DoubleConfig, Route};
use serde_json::{json, Value};

use crate::support::spec::{json_of, problem};
use crate::support::{start, start_with, Env};

const METER: &str = "billable_usd_micros";

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn dec(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

/// A signed-ticket event of `subject` at `time` worth `micros`.
fn usage(id: &str, subject: &str, time: DateTime<Utc>, micros: Value) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": "signer", "type": "create_signed_ticket",
        "subject": subject, "time": at(time),
        "data": {"billable_usd_micros": micros, "pipeline": "live"},
    })
}

/// A sum meter, a feature on it and a published plan pricing the feature.
struct Catalog {
    meter_id: String,
    plan_id: String,
}

async fn catalog(env: &Env) -> Catalog {
    let meter_id = env.double.seed_meter(json!({
        "name": "Billable", "key": METER, "aggregation": "sum",
        "event_type": "create_signed_ticket", "value_property": "$.billable_usd_micros",
        "dimensions": {"pipeline": "$.pipeline"},
    }));
    let (_, feature) = json_of(
        env.post(
            "/openmeter/features",
            json!({"name": "Billable spend", "key": "billable_spend", "meter": {"id": meter_id}}),
        )
        .await,
        "Feature",
    )
    .await;
    let plan = json!({
        "name": "PPU", "key": "ppu", "currency": "USD", "billing_cadence": "P1M",
        "phases": [{"name": "Default", "key": "default", "rate_cards": [{
            "name": "Billable spend", "key": "billable_spend", "feature": {"id": feature["id"]},
            "billing_cadence": "P1M", "price": {"type": "unit", "amount": "0.000001"},
        }]}],
    });
    let (_, plan) = json_of(env.post("/openmeter/plans", plan).await, "BillingPlan").await;
    let plan_id = plan["id"].as_str().expect("plan id").to_string();
    let (status, _) = json_of(
        env.post(&format!("/openmeter/plans/{plan_id}/publish"), json!({}))
            .await,
        "BillingPlan",
    )
    .await;
    assert_eq!(status, 200);
    Catalog { meter_id, plan_id }
}

async fn customer(env: &Env, key: &str, subjects: &[&str]) -> String {
    let (status, c) = json_of(env.create_customer(key, subjects).await, "BillingCustomer").await;
    assert_eq!(status, 201);
    c["id"].as_str().expect("customer id").to_string()
}

/// Subscribes the customer; returns `active_from`.
async fn subscribe(env: &Env, customer_id: &str, plan_id: &str) -> DateTime<Utc> {
    let body = json!({"customer": {"id": customer_id}, "plan": {"id": plan_id}});
    let (status, sub) = json_of(
        env.post("/openmeter/subscriptions", body).await,
        "BillingSubscription",
    )
    .await;
    assert_eq!(status, 201);
    DateTime::parse_from_rfc3339(sub["active_from"].as_str().expect("active_from"))
        .expect("rfc3339")
        .with_timezone(&Utc)
}

async fn query(env: &Env, meter: &str, body: Value) -> Value {
    let url = format!("/openmeter/meters/{meter}/query");
    let (status, result) = json_of(env.post(&url, body).await, "MeterQueryResult").await;
    assert_eq!(status, 200, "{result}");
    result
}

fn customer_filter(id: &str) -> Value {
    json!({"filters": {"dimensions": {"customer_id": {"eq": id}}}})
}

fn total(result: &Value) -> Decimal {
    result["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| dec(r["value"].as_str().expect("value")))
        .sum()
}

/// The server sums `toFloat64OrNull` values by default and answers every
/// value as a float64's shortest decimal (`streaming/clickhouse/
/// meter_query.go`, `api/v3/handlers/meters/convert.go`); the exact sum is
/// what the façade's totals keep.
#[tokio::test]
async fn a_sum_meter_answers_the_float64_sum_as_the_server_does() {
    let env = start().await;
    let c = catalog(&env).await;
    let id = customer(&env, "acme", &["acme"]).await;
    let t = Utc::now();
    env.ingest(json!([
        usage("a", "acme", t, json!(0.1)),
        usage("b", "acme", t, json!("0.2")),
        usage("c", "acme", t, json!(9_007_199_254_740_993_u64)),
        usage("d", "acme", t, json!("not a number")),
    ]))
    .await;

    let result = query(&env, &c.meter_id, customer_filter(&id)).await;

    assert_eq!(result["data"][0]["value"], "9007199254740992");
    assert_eq!(result["data"][0]["dimensions"], json!({"customer_id": id}));
    assert_eq!(
        env.double.metered_total(METER, &id),
        dec("9007199254740993.3")
    );
}

/// With `aggregation.enableDecimalPrecision` the sum is a `Decimal128`
/// until it is answered, still as a float64.
#[tokio::test]
async fn decimal_precision_sums_exactly_and_still_answers_a_float64() {
    let sums = |decimal_precision| async move {
        let env = start_with(DoubleConfig {
            decimal_precision,
            ..DoubleConfig::default()
        })
        .await;
        let c = catalog(&env).await;
        let id = customer(&env, "acme", &["acme"]).await;
        let t = Utc::now();
        env.ingest(json!([
            usage("a", "acme", t, json!(0.1)),
            usage("b", "acme", t, json!("0.2")),
        ]))
        .await;
        let result = query(&env, &c.meter_id, customer_filter(&id)).await;
        result["data"][0]["value"].as_str().map(str::to_owned)
    };
    assert_eq!(sums(false).await.as_deref(), Some("0.30000000000000004"));
    assert_eq!(sums(true).await.as_deref(), Some("0.3"));
}

#[tokio::test]
async fn a_customers_usage_is_its_key_and_subject_keys_and_nobody_elses() {
    let env = start().await;
    let c = catalog(&env).await;
    let id = customer(&env, "acme", &["acme-bot"]).await;
    customer(&env, "globex", &["globex"]).await;
    let t = Utc::now();
    env.ingest(json!([
        usage("1", "acme", t, json!(1)),
        usage("2", "acme-bot", t, json!(10)),
        usage("3", "globex", t, json!(100)),
        usage("4", "nobody", t, json!(1000)),
    ]))
    .await;

    let result = query(&env, &c.meter_id, customer_filter(&id)).await;

    assert_eq!(total(&result), dec("11"));
    let everyone = query(&env, &c.meter_id, json!({})).await;
    assert_eq!(total(&everyone), dec("1111"));
}

#[tokio::test]
async fn each_source_and_id_is_counted_once_and_other_event_types_never() {
    let env = start().await;
    let c = catalog(&env).await;
    let id = customer(&env, "acme", &["acme"]).await;
    let t = Utc::now();
    let mut other_type = usage("x", "acme", t, json!(1000));
    other_type["type"] = json!("heartbeat");
    env.ingest(json!([usage("a", "acme", t, json!(5)), other_type]))
        .await;
    env.ingest(json!([usage("a", "acme", t, json!(5))])).await;

    let result = query(&env, &c.meter_id, customer_filter(&id)).await;

    assert_eq!(total(&result), dec("5"));
}

#[tokio::test]
async fn from_and_to_compare_whole_seconds_from_inclusive_to_exclusive() {
    let env = start().await;
    let c = catalog(&env).await;
    let id = customer(&env, "acme", &["acme"]).await;
    let base = Utc::now().trunc_subsecs(0) - Duration::hours(1);
    let ms = Duration::milliseconds;
    env.ingest(json!([
        usage("before", "acme", base - ms(1), json!(1)),
        usage("same-second-earlier", "acme", base + ms(200), json!(10)),
        usage("last-counted", "acme", base + ms(4_999), json!(100)),
        usage("to-second", "acme", base + ms(5_100), json!(1000)),
    ]))
    .await;
    let mut body = customer_filter(&id);
    body["from"] = json!(at(base + ms(700)));
    body["to"] = json!(at(base + ms(5_300)));

    let result = query(&env, &c.meter_id, body).await;

    assert_eq!(total(&result), dec("110"));
    assert_eq!(result["from"], json!(at(base + ms(700))));
}

#[tokio::test]
async fn a_granularity_splits_usage_into_utc_windows() {
    let env = start().await;
    let c = catalog(&env).await;
    let id = customer(&env, "acme", &["acme"]).await;
    let day = Utc::now().trunc_subsecs(0) - Duration::days(3);
    let midnight = day - Duration::seconds(day.timestamp().rem_euclid(86_400));
    env.ingest(json!([
        usage("1", "acme", midnight + Duration::hours(1), json!(1)),
        usage("2", "acme", midnight + Duration::hours(23), json!(2)),
        usage("3", "acme", midnight + Duration::hours(25), json!(4)),
    ]))
    .await;
    let mut body = customer_filter(&id);
    body["granularity"] = json!("P1D");
    body["group_by_dimensions"] = json!(["pipeline"]);

    let result = query(&env, &c.meter_id, body).await;

    let rows = result["data"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["value"], "3");
    assert_eq!(rows[0]["from"], json!(at(midnight)));
    assert_eq!(rows[0]["to"], json!(at(midnight + Duration::days(1))));
    assert_eq!(
        rows[1]["dimensions"],
        json!({"customer_id": id, "pipeline": "live"})
    );
}

#[tokio::test]
async fn query_errors_name_what_is_wrong() {
    let env = start().await;
    let c = catalog(&env).await;
    let url = format!("/openmeter/meters/{}/query", c.meter_id);
    let p = problem(
        env.post(&url, customer_filter("01J0000000000000000000000Z"))
            .await,
        404,
    )
    .await;
    assert!(p["detail"]
        .as_str()
        .unwrap_or("")
        .contains("customer not found"));
    let p = problem(
        env.post(&url, json!({"group_by_dimensions": ["model"]}))
            .await,
        400,
    )
    .await;
    assert_eq!(p["detail"], "invalid group by dimension");
    let neq = json!({"filters": {"dimensions": {"customer_id": {"neq": "x"}}}});
    problem(env.post(&url, neq).await, 400).await;
    problem(env.post(&url, json!({"bogus": 1})).await, 400).await;
    let unknown_meter = "/openmeter/meters/01ARZ3NDEKTSV4RRFFQ69G5FAV/query";
    problem(env.post(unknown_meter, json!({})).await, 404).await;
    // The path's meterId is a ULID in the spec, which the server checks
    // every request against (kin-openapi, `api/v3/server/server.go`).
    let by_key = format!("/openmeter/meters/{METER}/query");
    problem(env.post(&by_key, json!({})).await, 400).await;
}

#[tokio::test]
async fn a_meter_query_is_counted_but_is_not_a_write() {
    let env = start().await;
    let c = catalog(&env).await;
    env.double.reset_counters();
    query(&env, &c.meter_id, json!({})).await;
    assert_eq!(env.double.calls(Route::QueryMeter), 1);
    assert_eq!(env.double.write_calls(), 0);
}

#[tokio::test]
async fn events_older_than_the_subscription_are_metered_but_not_billed() {
    let env = start().await;
    let c = catalog(&env).await;
    let id = customer(&env, "acme", &["acme"]).await;
    let signed_before = Utc::now() - Duration::seconds(2);
    let start = subscribe(&env, &id, &c.plan_id).await;
    env.ingest(json!([
        usage("old", "acme", signed_before, json!(7)),
        usage("new", "acme", start + Duration::seconds(1), json!(5)),
    ]))
    .await;

    assert_eq!(env.double.billable_total(METER, &id), dec("5"));
    assert_eq!(env.double.metered_total(METER, &id), dec("12"));
}

#[tokio::test]
async fn an_event_in_the_second_the_subscription_started_is_billed() {
    let env = start().await;
    let c = catalog(&env).await;
    let id = customer(&env, "acme", &["acme"]).await;
    let start = subscribe(&env, &id, &c.plan_id).await;
    let same_second = start.trunc_subsecs(0);
    let previous_second = same_second - Duration::milliseconds(1);
    env.ingest(json!([
        usage("same", "acme", same_second, json!(3)),
        usage("previous", "acme", previous_second, json!(4)),
    ]))
    .await;

    assert_eq!(env.double.billable_total(METER, &id), dec("3"));
}

#[tokio::test]
async fn nothing_is_billed_from_a_meter_the_plan_does_not_price() {
    let env = start().await;
    let c = catalog(&env).await;
    env.double.seed_meter(json!({
        "name": "Tickets", "key": "signed_ticket_count", "aggregation": "count",
        "event_type": "create_signed_ticket",
    }));
    let id = customer(&env, "acme", &["acme"]).await;
    let start = subscribe(&env, &id, &c.plan_id).await;
    env.ingest(json!([usage(
        "a",
        "acme",
        start + Duration::seconds(1),
        json!(2)
    )]))
    .await;

    assert_eq!(
        env.double.metered_total("signed_ticket_count", &id),
        dec("1")
    );
    assert_eq!(
        env.double.billable_total("signed_ticket_count", &id),
        dec("0")
    );
    assert_eq!(env.double.billable_total(METER, &id), dec("2"));
}

#[tokio::test]
#[should_panic(expected = "no meter with key")]
async fn billable_total_of_an_unknown_meter_is_a_test_bug() {
    let env = start().await;
    let id = customer(&env, "acme", &["acme"]).await;
    env.double.billable_total("nope", &id);
}
