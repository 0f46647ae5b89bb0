//! The audit over a real Kafka-protocol broker (tansu): `ticketmeter audit`
//! reads the gateway topic and the dead-letter topic by time, without
//! touching the collector's consumer group; `ticketmeter run` audits itself
//! (every `AUDIT_INTERVAL`, here a second) and exports the result as gauges.

use std::time::Duration;

use serde_json::Value;

use crate::support::binary::{collector_env, Binary};
use crate::support::broker::Broker;
use crate::support::double::{OpenMeter, TOKEN};
use crate::support::fixtures::{fixtures, signed_now};
use crate::support::{eventually, free_port, metric};

const WAIT: Duration = Duration::from_secs(90);

/// How many fixture lines are sent, how many dead-lettered, how many in all.
fn counts() -> (usize, usize, i64) {
    let cases = fixtures();
    let count = |key: &str| cases.iter().filter(|(_, x)| x.get(key).is_some()).count();
    (count("id"), count("dead_letter"), cases.len() as i64)
}

/// A broker with `topic` and its DLQ topic, a bootstrapped OpenMeter whose
/// fixture customers already exist, and the fixtures produced as signed now.
async fn stack(topic: &str, partitions: i32) -> (Broker, OpenMeter) {
    let broker = Broker::start();
    broker.create_topic(topic, partitions).await;
    broker.create_topic(&format!("{topic}.dlq"), 1).await;
    let om = OpenMeter::bootstrapped(Some(TOKEN)).await;
    let payloads: Vec<String> = fixtures().into_iter().map(|(e, _)| e).collect();
    om.ensure_customers_of(Some(TOKEN), &payloads).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    broker
        .produce(topic, &signed_now(&payloads), partitions)
        .await;
    (broker, om)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_range_is_audited_with_its_dead_letter_topic_and_the_collectors_offsets_stay_put() {
    let (topic, partitions) = ("audited-events", 2);
    let (broker, om) = stack(topic, partitions).await;
    let env = collector_env(&broker.brokers(), topic, &om.url(), free_port());
    let mut collector = Binary::spawn(&["run"], &env);
    let (sent, dead, records) = counts();
    let all_in = eventually(WAIT, || {
        om.double.unique_events().len() == sent
            && broker.committed(topic, partitions).iter().sum::<i64>() == records
    })
    .await;
    assert!(
        all_in,
        "collector delivered and committed: {}",
        collector.stderr()
    );
    assert!(collector
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    let before = broker.committed(topic, partitions);

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ticketmeter"))
        .args([
            "audit", "--from", "10m", "--settle", "0s", "--format", "json",
        ])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let totals = &report["totals"];
    assert_eq!(totals["signed_events"], sent, "{report:#}");
    assert_eq!(totals["stored_events"], sent);
    assert_eq!(totals["missing_events"], 0);
    assert_eq!(totals["dead_lettered_events"], dead);
    assert_eq!(
        broker.committed(topic, partitions),
        before,
        "the audit committed nothing for the collector's group"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_with_an_audit_interval_exports_the_audits_result() {
    let (topic, partitions) = ("self-audited-events", 2);
    let (broker, om) = stack(topic, partitions).await;
    let port = free_port();
    let mut env = collector_env(&broker.brokers(), topic, &om.url(), port);
    env.extend([
        ("AUDIT_INTERVAL", "1s".to_owned()),
        ("AUDIT_SETTLE", "0s".to_owned()),
        ("AUDIT_WINDOW", "10m".to_owned()),
    ]);
    let mut collector = Binary::spawn(&["run"], &env);
    let (sent, dead_letters, _) = counts();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut last = String::new();
    let deadline = std::time::Instant::now() + WAIT;
    let clean = loop {
        if let Ok(r) = reqwest::get(&url).await {
            last = r.text().await.unwrap_or_default();
            let signed = metric(&last, "ticketmeter_audit_signed_events");
            let missing = metric(&last, "ticketmeter_audit_missing_events");
            let result = metric(&last, "ticketmeter_audit_last_result");
            let dead = metric(&last, "ticketmeter_audit_dead_lettered_events");
            if signed == Some(sent as f64)
                && missing == Some(0.0)
                && result == Some(0.0)
                && dead == Some(dead_letters as f64)
            {
                break true;
            }
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(clean, "{last}\n{}", collector.stderr());
    assert!(metric(&last, "ticketmeter_audit_last_run_timestamp_seconds").is_some_and(|t| t > 0.0));
    assert!(collector
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
}
