//! OpenMeter failing for a while, then recovering: nothing is lost and
//! nothing is dead-lettered; a batch OpenMeter rejects is split so only the
//! offending event is dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use openmeter_double::{Network, RateLimit, RetryAfterForm, Route};
use serde_json::json;
use ticketmeter::{
    pipeline, Backoff, DeadLetterSink, EnsureConfig, OffsetTracker, Pipeline, PipelineConfig,
    PriceFeed, Provisioner, Tally,
};
use tokio_util::sync::CancellationToken;

use crate::support::double::{OpenMeter, PLAN};

fn events(n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({"id": format!("env-{i}"), "type": "create_signed_ticket",
                   "data": {"request_id": format!("req-{i}"), "auth_id": format!("c{}:u", i % 7),
                            "computed_fee": "1000000000000", "current_time": "2026-09-09T00:00:00Z"}})
            .to_string()
                + "\n"
        })
        .collect()
}

fn build(om: &OpenMeter, dlq: DeadLetterSink) -> Pipeline {
    let config = PipelineConfig {
        batch_max_events: 50,
        linger: Duration::from_millis(10),
        backoff: Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        ..PipelineConfig::default()
    };
    pipeline(
        Provisioner::new(
            om.client(None),
            PLAN.parse().unwrap(),
            EnsureConfig::default(),
        ),
        dlq,
        Arc::new(OffsetTracker::default()),
        PriceFeed::fixed("3500".parse().unwrap()),
        config,
    )
}

#[tokio::test]
async fn openmeter_failing_then_recovering_loses_and_dead_letters_nothing() {
    let om = OpenMeter::bootstrapped(None).await;
    om.double.fail_next(Route::IngestEvents, 4, 500);
    om.double
        .fail_next_with_retry_after(Route::ListCustomers, 3, 429, 0);
    om.double.drop_next(Route::IngestEvents, 2);
    let dlq = DeadLetterSink::memory();
    let pipeline = build(&om, dlq.clone());
    let input = events(1000);
    let settled = pipeline
        .run_lines(
            std::io::Cursor::new(input.into_bytes()),
            "outage",
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(settled);
    assert_eq!(om.double.unique_events().len(), 1000);
    assert!(dlq.kept().is_empty());
    assert_eq!(Tally::get(&pipeline.tally().dead_lettered), 0);
}

#[tokio::test]
async fn a_rejected_event_is_isolated_and_dead_lettered_the_rest_delivered() {
    let om = OpenMeter::bootstrapped(None).await;
    om.double.reject_event_ids(&["env-17"]);
    let dlq = DeadLetterSink::memory();
    let pipeline = build(&om, dlq.clone());
    let settled = pipeline
        .run_lines(
            std::io::Cursor::new(events(100).into_bytes()),
            "reject",
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(settled);
    assert_eq!(om.double.unique_events().len(), 99);
    let dead = dlq.kept();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("env-17"), "{}", dead[0].reason);
}

#[tokio::test]
async fn behind_a_rate_limit_every_new_customer_is_created_once_and_nothing_is_dead_lettered() {
    let om = OpenMeter::bootstrapped(None).await;
    om.double.set_network(Network {
        rate_limit: Some(RateLimit {
            per_second: 200,
            burst: 20,
            retry_after: RetryAfterForm::Seconds,
        }),
        ..Network::default()
    });
    let dlq = DeadLetterSink::memory();
    let pipeline = build(&om, dlq.clone());
    let input: String = (0..300)
        .map(|i| {
            json!({"id": format!("env-new-{i}"), "type": "create_signed_ticket",
                   "data": {"request_id": format!("req-new-{i}"), "auth_id": format!("app:user-{i}"),
                            "computed_fee": "1000000000000", "current_time": "2026-09-09T00:00:00Z"}})
            .to_string()
                + "\n"
        })
        .collect();
    let settled = pipeline
        .run_lines(
            std::io::Cursor::new(input.into_bytes()),
            "rate-limited",
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(settled);
    assert!(om.double.rate_limited() > 0, "the limit was reached");
    assert_eq!(om.double.unique_events().len(), 300);
    assert_eq!(om.double.customers().len(), 300);
    assert_eq!(om.double.subscriptions().len(), 300, "one each");
    assert!(dlq.kept().is_empty());
}
