//! Billed, not just accepted: usage goes through the real pipeline to the
//! OpenMeter double, and each customer's invoice-able total (the double's
//! meter query, which counts events inside subscription service periods as
//! OpenMeter's invoicing does) must equal what the signer signed, to the
//! micro.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use ticketmeter::bootstrap::{bootstrap, BootstrapOptions, Catalog};
use ticketmeter::{
    DeadLetterSink, EnsureConfig, OffsetTracker, Pipeline, PipelineConfig, PlanKey, PriceFeed,
    Provisioner, Tally,
};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::support;
use crate::support::double::OpenMeter;
use crate::support::eventually;
use crate::support::pipeline::{run_lines, test_pipeline};

const METER: &str = "billable_usd_micros";

/// Signs tickets like go-livepeer and remembers what each customer owes.
#[derive(Default)]
struct Signer {
    next: u64,
    /// auth_id → signed USD micros at ETH/USD 3500.
    signed: BTreeMap<String, Decimal>,
}

impl Signer {
    /// One `create_signed_ticket` line; fees vary so every ticket has a
    /// fraction of a micro.
    fn ticket(&mut self, auth_id: &str, signed_at: DateTime<Utc>) -> String {
        self.next += 1;
        let fee_wei: u128 = 1_000_000_000_000 + u128::from(self.next) * 7_919_333;
        self.sign(auth_id, fee_wei, signed_at)
    }

    /// A ticket of `fee_wei`, billed to `auth_id` (its own customer).
    fn sign(&mut self, auth_id: &str, fee_wei: u128, signed_at: DateTime<Utc>) -> String {
        self.bill(auth_id, auth_id, fee_wei, signed_at)
    }

    /// A ticket of `fee_wei` under `auth_id`, owed by `customer`: exactly
    /// fee × 3500 / 10^12 micros.
    fn bill(
        &mut self,
        auth_id: &str,
        customer: &str,
        fee_wei: u128,
        signed_at: DateTime<Utc>,
    ) -> String {
        self.next += 1;
        let micros = Decimal::from(fee_wei * 3500) / Decimal::from(1_000_000_000_000u64);
        *self.signed.entry(customer.to_owned()).or_default() += micros;
        json!({
            "id": format!("env-{}", self.next),
            "type": "create_signed_ticket",
            "timestamp": signed_at.timestamp_millis().to_string(),
            "data": {
                "request_id": format!("req-{}-{}", Utc::now().timestamp_nanos_opt().unwrap(), self.next),
                "auth_id": auth_id,
                "computed_fee": fee_wei.to_string(),
                "current_time": signed_at.to_rfc3339(),
                "pipeline": "live-video-to-video",
            }
        })
        .to_string()
    }

    fn total(&self) -> Decimal {
        self.signed.values().sum()
    }
}

fn quick() -> PipelineConfig {
    PipelineConfig {
        linger: Duration::from_millis(20),
        ..PipelineConfig::default()
    }
}

/// The process-wide value of a counter `series` (name and labels); 0
/// before its first increment.
fn counted(series: &str) -> f64 {
    support::metric(&ticketmeter::metrics().render(), series).unwrap_or(0.0)
}

fn billing_pipeline(om: &OpenMeter, dlq: DeadLetterSink) -> Pipeline {
    test_pipeline(om.client(None), dlq, EnsureConfig::default(), quick())
}

/// Each customer's billable total from the double, by auth_id.
fn billed(om: &OpenMeter, signer: &Signer) -> BTreeMap<String, Decimal> {
    let customers = om.double.customers();
    signer
        .signed
        .keys()
        .map(|auth_id| {
            let customer = customers
                .iter()
                .find(|c| c.subject_keys().iter().any(|k| k == auth_id))
                .unwrap_or_else(|| panic!("no customer bills {auth_id}"));
            (
                auth_id.clone(),
                om.double.billable_total(METER, &customer.id),
            )
        })
        .collect()
}

#[tokio::test]
async fn live_usage_of_new_customers_is_billed_in_full() {
    let om = OpenMeter::bootstrapped(None).await;
    let pipeline = billing_pipeline(&om, DeadLetterSink::memory());
    let mut signer = Signer::default();
    let (mut writer, reader) = tokio::io::duplex(1 << 16);
    let mut lines = Vec::new();
    for round in 0..20 {
        for customer in 0..10 {
            lines.push(signer.ticket(&format!("live:user-{customer}"), Utc::now()));
        }
        lines.push(String::new());
        if round % 5 == 4 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let feed = tokio::spawn(async move {
        for line in lines {
            writer
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let settled = pipeline
        .run_lines(
            tokio::io::BufReader::new(reader),
            "live",
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    feed.await.unwrap();
    assert!(settled);
    assert_eq!(
        billed(&om, &signer),
        signer.signed,
        "live: billed = signed, per customer"
    );
}

#[tokio::test]
async fn a_three_hour_backlog_of_new_customers_is_billed_in_full() {
    let om = OpenMeter::bootstrapped(None).await;
    let pipeline = billing_pipeline(&om, DeadLetterSink::memory());
    let mut signer = Signer::default();
    let start = Utc::now() - chrono::Duration::hours(3);
    let lines: Vec<String> = (0..300)
        .map(|i| {
            let at = start + chrono::Duration::seconds(i * 36);
            signer.ticket(&format!("backlog:user-{}", i % 12), at)
        })
        .collect();
    run_lines(&pipeline, &lines).await;
    assert_eq!(
        billed(&om, &signer),
        signer.signed,
        "backlog: billed = signed, per customer"
    );
}

#[tokio::test]
async fn usage_of_a_subject_owned_by_a_customer_of_another_key_is_billed_to_that_customer() {
    let om = OpenMeter::bootstrapped(None).await;
    let owner = om.double.seed_customer("legacy-7", &["acme:olga"]);
    let pipeline = billing_pipeline(&om, DeadLetterSink::memory());
    let mut signer = Signer::default();
    let lines: Vec<String> = (0..5)
        .map(|_| signer.ticket("acme:olga", Utc::now()))
        .collect();
    run_lines(&pipeline, &lines).await;
    assert_eq!(om.double.customers().len(), 1, "no customer was added");
    assert_eq!(
        om.double.billable_total(METER, &owner),
        signer.signed["acme:olga"]
    );
}

#[tokio::test]
async fn usage_of_a_period_whose_invoice_was_collected_is_sent_and_counted() {
    let om = OpenMeter::bootstrapped(None).await;
    let mut signer = Signer::default();
    run_lines(
        &billing_pipeline(&om, DeadLetterSink::memory()),
        &[signer.ticket("acme:late", Utc::now())],
    )
    .await;
    let subscription = om.double.subscriptions()[0].id.clone();
    om.double
        .start_subscription_at(&subscription, Utc::now() - chrono::Duration::days(90))
        .unwrap();
    let missed = || counted("ticketmeter_events_missed_invoice_total");
    let missed_before = missed();
    // A collector that starts now learns the subscription began 90 days
    // ago; this ticket's monthly period ended about a month ago.
    let pipeline = billing_pipeline(&om, DeadLetterSink::memory());
    let signed_at = Utc::now() - chrono::Duration::days(45);
    run_lines(&pipeline, &[signer.ticket("acme:late", signed_at)]).await;
    assert_eq!(
        Tally::get(&pipeline.tally().delivered),
        1,
        "it is sent all the same"
    );
    assert!(
        missed() >= missed_before + 1.0,
        "it is counted (other tests may add to the process-wide count)"
    );
}

#[tokio::test]
async fn a_dimension_that_cannot_be_read_is_left_out_counted_and_the_event_billed() {
    let om = OpenMeter::bootstrapped(None).await;
    let pipeline = billing_pipeline(&om, DeadLetterSink::memory());
    let mut signer = Signer::default();
    let mut ticket: serde_json::Value =
        serde_json::from_str(&signer.ticket("acme:odd", Utc::now())).unwrap();
    ticket["data"]["pixels"] = json!({"width": 1920});
    let unreadable = || counted(r#"ticketmeter_dimensions_unreadable_total{field="pixels"}"#);
    let before = unreadable();
    run_lines(&pipeline, &[ticket.to_string()]).await;
    let sent = om.double.unique_events();
    assert_eq!(sent.len(), 1, "the event is billed");
    assert!(
        sent[0]["data"].get("pixels").is_none(),
        "pixels is left out"
    );
    assert!(
        unreadable() >= before + 1.0,
        "it is counted by field (other tests may add to the process-wide count)"
    );
}

#[tokio::test]
async fn events_older_than_the_subscription_are_sent_at_its_start_and_counted() {
    let om = OpenMeter::bootstrapped(None).await;
    let pipeline = billing_pipeline(&om, DeadLetterSink::memory());
    let mut signer = Signer::default();
    let signed_at = Utc::now() - chrono::Duration::days(2);
    let moved = || counted("ticketmeter_events_time_moved_total");
    let moved_before = moved();
    run_lines(&pipeline, &[signer.ticket("acme:old", signed_at)]).await;
    let sent = om.double.unique_events();
    assert_eq!(
        sent[0]["data"]["signed_at"],
        signed_at.to_rfc3339(),
        "the signed time is kept"
    );
    let subscription = &om.double.subscriptions()[0];
    let time = DateTime::parse_from_rfc3339(sent[0]["time"].as_str().unwrap()).unwrap();
    assert!(time >= subscription.active_from);
    assert!(
        moved() >= moved_before + 1.0,
        "the moved event is counted (other tests may add to the process-wide count)"
    );
    assert!(
        eventually(Duration::from_secs(1), || Tally::get(
            &pipeline.tally().delivered
        ) == 1)
        .await
    );
}

/// The original behaviour, kept behind `EVENT_TIME=signed`: OpenMeter
/// accepts the backlog and invoices none of it.
#[tokio::test]
async fn with_signed_times_a_backlog_of_new_customers_is_accepted_but_never_billed() {
    let om = OpenMeter::bootstrapped(None).await;
    let signed_times = PipelineConfig {
        billing: ticketmeter::BillingPolicy {
            event_time: ticketmeter::EventTime::Signed,
            ..Default::default()
        },
        ..quick()
    };
    let pipeline = test_pipeline(
        om.client(None),
        DeadLetterSink::memory(),
        EnsureConfig::default(),
        signed_times,
    );
    let mut signer = Signer::default();
    let start = Utc::now() - chrono::Duration::hours(3);
    let lines: Vec<String> = (0..50)
        .map(|i| {
            signer.ticket(
                &format!("old:user-{}", i % 5),
                start + chrono::Duration::minutes(i),
            )
        })
        .collect();
    run_lines(&pipeline, &lines).await;
    let billed: Decimal = billed(&om, &signer).values().sum();
    eprintln!(
        "signed times: billed {billed} / signed {} USD micros",
        signer.total()
    );
    assert_eq!(om.double.unique_events().len(), 50, "all accepted");
    assert_eq!(billed, Decimal::ZERO, "none invoiced");
}

/// `demo` exists only in a build with the `double` feature (on by default).
#[cfg(feature = "double")]
#[test]
fn the_demo_ends_with_what_each_customer_will_be_billed_next_to_what_was_signed() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ticketmeter"))
        .arg("demo")
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let money = stdout.split("== money").nth(1).expect("a money section");
    assert!(money.contains('✓') && !money.contains('✗'), "{money}");
    let total = money.lines().find(|l| l.contains("total:")).unwrap();
    let numbers: Vec<Decimal> = total
        .split_whitespace()
        .filter_map(|w| w.parse::<Decimal>().ok())
        .collect();
    assert_eq!(numbers.len(), 2);
    assert_eq!(numbers[0], numbers[1], "{total}");
}

fn healthy_and_refused_lines(signer: &mut Signer, signed_at: DateTime<Utc>) -> Vec<String> {
    let mut lines = vec![signer.ticket("acme:refused", signed_at)];
    for i in 0..40 {
        let who = if i % 4 == 0 {
            "acme:refused".to_owned()
        } else {
            format!("acme:healthy-{}", i % 3)
        };
        lines.push(signer.ticket(&who, signed_at));
    }
    lines
}

/// `ticketmeter dlq replay --file` against the double, at ETH/USD 3500: its
/// summary.
fn dlq_replay(om: &OpenMeter, letters: &std::path::Path, again: &std::path::Path) -> String {
    let env = [
        ("OPENMETER_URL", om.url()),
        ("ETH_USD_PRICE", "3500".to_owned()),
    ];
    let mut binary = support::binary::Binary::spawn(
        &[
            "dlq",
            "replay",
            "--file",
            &letters.display().to_string(),
            "--dlq-out",
            &again.display().to_string(),
        ],
        &env,
    );
    let status = binary.wait(Duration::from_secs(60)).expect("finishes");
    let summary = binary.stdout();
    assert!(status.success(), "{summary}\n{}", binary.stderr());
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_customer_is_dead_lettered_while_the_others_are_billed_and_a_replay_bills_it_in_full(
) {
    let om = OpenMeter::bootstrapped(None).await;
    om.double.refuse_billing_setup("acme:refused", true);
    let dir = tempfile::tempdir().unwrap();
    let letters = dir.path().join("dlq.jsonl");
    let pipeline = billing_pipeline(&om, DeadLetterSink::file(&letters));
    let mut signer = Signer::default();
    let lines = healthy_and_refused_lines(&mut signer, Utc::now());
    let started = std::time::Instant::now();
    run_lines(&pipeline, &lines).await;
    eprintln!(
        "refused customer: healthy customers' usage delivered {:?} after the refused customer's first event",
        started.elapsed()
    );

    let sent = om.double.unique_events();
    assert!(
        sent.iter().all(|e| e["subject"] != "acme:refused"),
        "never sent unbilled"
    );
    assert_eq!(sent.len(), 30, "every healthy event delivered");
    let text = std::fs::read_to_string(&letters).unwrap();
    let letters_read: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters_read.len(), 11);
    for letter in &letters_read {
        assert_eq!(letter["kind"], "subscription_refused");
        assert!(
            letter["reason"].as_str().unwrap().contains("billing setup"),
            "OpenMeter's detail is kept: {letter}"
        );
    }

    om.double.refuse_billing_setup("acme:refused", false);
    let summary = dlq_replay(&om, &letters, &dir.path().join("again.jsonl"));
    assert!(summary.contains("read 11"), "{summary}");
    assert_eq!(
        billed(&om, &signer),
        signer.signed,
        "refused then replayed: billed = signed, per customer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_replay_of_week_old_events_is_billed_in_full() {
    let om = OpenMeter::bootstrapped(None).await;
    om.double.refuse_billing_setup("acme:refused", true);
    let dir = tempfile::tempdir().unwrap();
    let letters = dir.path().join("dlq.jsonl");
    let pipeline = billing_pipeline(&om, DeadLetterSink::file(&letters));
    let mut signer = Signer::default();
    let week_ago = Utc::now() - chrono::Duration::days(7);
    let lines: Vec<String> = (0..25)
        .map(|i| signer.ticket("acme:refused", week_ago + chrono::Duration::minutes(i)))
        .collect();
    run_lines(&pipeline, &lines).await;
    assert!(om.double.unique_events().is_empty());

    om.double.refuse_billing_setup("acme:refused", false);
    dlq_replay(&om, &letters, &dir.path().join("again.jsonl"));
    assert_eq!(
        billed(&om, &signer),
        signer.signed,
        "week-old replay: billed = signed, per customer"
    );
}

#[tokio::test]
async fn a_customer_canceled_at_period_end_keeps_being_billed_and_is_subscribed_again_after_active_to(
) {
    let om = OpenMeter::bootstrapped(None).await;
    let mut signer = Signer::default();
    run_lines(
        &billing_pipeline(&om, DeadLetterSink::memory()),
        &[signer.ticket("acme:leaving", Utc::now())],
    )
    .await;
    let first = om.double.subscriptions()[0].clone();
    let active_to = Utc::now() + chrono::Duration::seconds(2);
    om.double
        .cancel_subscription_at(&first.id, active_to)
        .unwrap();

    // A fresh process finds the canceled subscription still running.
    let lines: Vec<String> = (0..5)
        .map(|_| signer.ticket("acme:leaving", Utc::now()))
        .collect();
    run_lines(&billing_pipeline(&om, DeadLetterSink::memory()), &lines).await;
    assert_eq!(om.double.subscriptions().len(), 1, "no second subscription");
    assert_eq!(
        billed(&om, &signer),
        signer.signed,
        "canceled, still running: billed = signed, per customer"
    );

    tokio::time::sleep((active_to - Utc::now()).to_std().unwrap_or_default()).await;
    let lines: Vec<String> = (0..5)
        .map(|_| signer.ticket("acme:leaving", Utc::now()))
        .collect();
    run_lines(&billing_pipeline(&om, DeadLetterSink::memory()), &lines).await;
    let subscriptions = om.double.subscriptions();
    assert_eq!(subscriptions.len(), 2, "subscribed again after active_to");
    assert_eq!(
        billed(&om, &signer),
        signer.signed,
        "canceled, then subscribed again: billed = signed, per customer"
    );
}

/// A cancellation made after an identity was cached is learnt within
/// `ENSURE_CACHE_TTL`; from then on the cache entry lives no longer than
/// the subscription's `active_to`, so the first ensure after it subscribes
/// the customer again.
#[tokio::test]
async fn a_cached_customer_is_subscribed_again_as_soon_as_its_canceled_subscription_ends() {
    let om = OpenMeter::bootstrapped(None).await;
    let short_cache = EnsureConfig {
        cache_ttl: Duration::from_millis(800),
        ..EnsureConfig::default()
    };
    let pipeline = test_pipeline(
        om.client(None),
        DeadLetterSink::memory(),
        short_cache,
        quick(),
    );
    let mut signer = Signer::default();
    run_lines(&pipeline, &[signer.ticket("acme:cached", Utc::now())]).await;
    let first = om.double.subscriptions()[0].clone();
    let active_to = Utc::now() + chrono::Duration::milliseconds(2000);
    om.double
        .cancel_subscription_at(&first.id, active_to)
        .unwrap();

    tokio::time::sleep(Duration::from_millis(1000)).await;
    run_lines(&pipeline, &[signer.ticket("acme:cached", Utc::now())]).await;
    assert_eq!(om.double.subscriptions().len(), 1, "still running");

    tokio::time::sleep((active_to - Utc::now()).to_std().unwrap_or_default()).await;
    run_lines(&pipeline, &[signer.ticket("acme:cached", Utc::now())]).await;
    assert_eq!(om.double.subscriptions().len(), 2, "subscribed again");
    assert_eq!(
        billed(&om, &signer),
        signer.signed,
        "cached across the end: billed = signed, per customer"
    );
}

/// Tickets whose per-ticket rounding would drift: 0.4999999999995 µUSD
/// each rounds to 0, 1.4999999999995 to 1. Sent exactly, the invoice-able
/// total equals Σ fee × price / 10^12 to the last digit.
#[tokio::test]
async fn ten_thousand_tickets_that_rounding_would_drift_bill_their_exact_sum() {
    let om = OpenMeter::bootstrapped(None).await;
    let pipeline = billing_pipeline(&om, DeadLetterSink::memory());
    let mut signer = Signer::default();
    let now = Utc::now();
    let lines: Vec<String> = (0..10_000u128)
        .map(|i| {
            let fee = if i % 2 == 0 {
                142_857_142_857
            } else {
                428_571_428_571
            };
            signer.sign(&format!("dense:session-{}", i % 4), fee + i % 3, now)
        })
        .collect();
    run_lines(&pipeline, &lines).await;
    assert_eq!(
        billed(&om, &signer),
        signer.signed,
        "dense: billed = signed, per customer"
    );
    let rounded_away = Decimal::from(lines.len() as u64) * Decimal::new(5, 1);
    eprintln!(
        "dense: {} tickets billed {} µUSD exactly; per-ticket rounding could drift by up to {rounded_away}",
        lines.len(),
        signer.total()
    );
}

/// A pipeline whose new app owners are subscribed to `owner_plan`.
async fn owner_plan_pipeline(om: &OpenMeter, owner_plan: &str, dlq: DeadLetterSink) -> Pipeline {
    let owner_plan: PlanKey = owner_plan.parse().unwrap();
    bootstrap(
        &om.client(None),
        &Catalog::builtin(&owner_plan),
        &BootstrapOptions::default(),
    )
    .await
    .expect("owner plan published");
    let provisioner = Provisioner::new(
        om.client(None),
        support::double::PLAN.parse().unwrap(),
        EnsureConfig::default(),
    )
    .with_owner_plan(Some(owner_plan));
    ticketmeter::pipeline(
        provisioner,
        dlq,
        Arc::new(OffsetTracker::default()),
        PriceFeed::fixed("3500".parse().unwrap()),
        quick(),
    )
}

fn plan_of(om: &OpenMeter, customer_key: &str) -> String {
    let customer = om
        .double
        .customers()
        .into_iter()
        .find(|c| c.key == customer_key)
        .unwrap_or_else(|| panic!("no customer {customer_key}"));
    om.double
        .subscriptions()
        .into_iter()
        .find(|s| s.customer_id == customer.id)
        .and_then(|s| s.plan)
        .map(|p| p.key)
        .unwrap_or_default()
}

#[tokio::test]
async fn owners_and_payers_are_billed_with_the_actor_kept_as_a_dimension() {
    let om = OpenMeter::bootstrapped(None).await;
    let dlq = DeadLetterSink::memory();
    let pipeline = owner_plan_pipeline(&om, "clearinghouse_owner_starter", dlq.clone()).await;
    let mut signer = Signer::default();
    let now = Utc::now();
    let lines = vec![
        signer.bill("app_abc:owner:U1#actor-7", "U1", 1_000_000_000_000, now),
        signer.bill("app_abc:owner: U1 ", "U1", 2_000_000_000_000, now),
        signer.bill("app_abc:eu_123#actor-9", "eu_123", 3_000_000_000_000, now),
        signer.bill("acme:bob#ci-runner", "bob", 4_000_000_000_000, now),
        signer.bill("acme:alice", "acme:alice", 5_000_000_000_000, now),
        json!({"id": "env-empty-owner", "type": "create_signed_ticket",
               "data": {"auth_id": "app_x:owner:", "computed_fee": "1", "current_time": now.to_rfc3339()}})
        .to_string(),
    ];
    run_lines(&pipeline, &lines).await;
    assert_eq!(
        billed(&om, &signer),
        signer.signed,
        "owners and payers: billed = signed, per customer"
    );

    let mut keys: Vec<String> = om.double.customers().into_iter().map(|c| c.key).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["U1", "acme:alice", "bob", "eu_123"],
        "no customer for a compound"
    );
    assert_eq!(plan_of(&om, "U1"), "clearinghouse_owner_starter");
    assert_eq!(plan_of(&om, "eu_123"), support::double::PLAN);
    assert_eq!(plan_of(&om, "acme:alice"), support::double::PLAN);

    let actors: Vec<(String, String)> = om
        .double
        .unique_events()
        .iter()
        .map(|e| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            (text(&e["subject"]), text(&e["data"]["external_user_id"]))
        })
        .collect();
    for (subject, actor) in [
        ("U1", "actor-7"),
        ("U1", "U1"),
        ("eu_123", "actor-9"),
        ("bob", "ci-runner"),
    ] {
        assert!(
            actors.contains(&(subject.to_owned(), actor.to_owned())),
            "{subject} billed for {actor}: {actors:?}"
        );
    }
    let dead: Vec<String> = dlq.kept().into_iter().map(|d| d.reason).collect();
    assert_eq!(dead, ["identity: empty owner id"]);
}
