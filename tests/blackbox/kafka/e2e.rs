//! End to end over a real Kafka-protocol broker (tansu) on loopback: the
//! real `ticketmeter run` binary consumes, ensures and delivers to the
//! OpenMeter double, dead-letters to `<topic>.dlq`, and commits offsets.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use openmeter_double::Route;
use serde_json::json;

use super::ticket;
use crate::support::binary::{collector_env, Binary};
use crate::support::broker::{Broker, Letter};
use crate::support::double::{OpenMeter, TOKEN};
use crate::support::fixtures::fixtures;
use crate::support::{eventually, free_port};

const WAIT: Duration = Duration::from_secs(90);

fn run_collector(broker: &Broker, topic: &str, om: &OpenMeter) -> Binary {
    let env = collector_env(&broker.brokers(), topic, &om.url(), free_port());
    Binary::spawn(&["run"], &env)
}

/// Each dead letter's reason header and payload.
fn reasons_and_payloads(letters: Vec<Letter>) -> Vec<(String, String)> {
    letters
        .into_iter()
        .map(|l| {
            let reason = l.header("reason").unwrap_or_default().to_owned();
            (reason, String::from_utf8_lossy(&l.payload).into_owned())
        })
        .collect()
}

/// Ids of the distinct events OpenMeter accepted.
fn unique_ids(om: &OpenMeter) -> HashSet<String> {
    om.double
        .unique_events()
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect()
}

/// A broker with `topic` and its dead-letter topic, and a bootstrapped OpenMeter.
async fn stack(topic: &str, partitions: i32) -> (Broker, OpenMeter) {
    let broker = Broker::start();
    broker.create_topic(topic, partitions).await;
    broker.create_topic(&format!("{topic}.dlq"), 1).await;
    (broker, OpenMeter::bootstrapped(Some(TOKEN)).await)
}

/// SIGTERM, and exit 0 within the shutdown bound.
fn stops_cleanly(collector: &mut Binary) -> bool {
    collector
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_over_a_real_broker_are_delivered_dead_lettered_and_committed() {
    let (topic, partitions) = ("gateway-events", 3);
    let (broker, om) = stack(topic, partitions).await;
    let cases = fixtures();
    let payloads: Vec<String> = cases.iter().map(|(e, _)| e.clone()).collect();
    broker.produce(topic, &payloads, partitions).await;

    let mut collector = run_collector(&broker, topic, &om);
    let expected_ids: HashSet<String> = cases
        .iter()
        .filter_map(|(_, x)| x["id"].as_str().map(str::to_owned))
        .collect();
    let arrived = eventually(WAIT, || {
        let ids = unique_ids(&om);
        ids == expected_ids
    })
    .await;
    assert!(
        arrived,
        "all expected events reach OpenMeter: {}",
        collector.stderr()
    );

    let expected_reasons: BTreeSet<String> = cases
        .iter()
        .filter_map(|(_, x)| x["dead_letter"].as_str().map(str::to_owned))
        .collect();
    let letters = reasons_and_payloads(
        broker
            .read_letters("gateway-events.dlq", expected_reasons.len())
            .await,
    );
    let reasons: BTreeSet<String> = letters.iter().map(|(r, _)| r.clone()).collect();
    assert_eq!(reasons, expected_reasons);
    assert!(
        letters
            .iter()
            .all(|(_, payload)| payloads.contains(payload)),
        "original payload kept"
    );

    let mut per_partition = vec![0i64; partitions as usize];
    for i in 0..payloads.len() {
        per_partition[i % partitions as usize] += 1;
    }
    let all_committed = eventually(WAIT, || {
        broker.committed(topic, partitions) == per_partition
    })
    .await;
    assert!(
        all_committed,
        "committed {:?}, produced {:?}",
        broker.committed(topic, partitions),
        per_partition
    );

    let status = collector
        .terminate(Duration::from_secs(30))
        .expect("exits after SIGTERM");
    assert!(
        status.success(),
        "exit 0 on SIGTERM: {}",
        collector.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_collector_mid_stream_loses_nothing() {
    let (topic, partitions, total) = ("kill-events", 2, 3000usize);
    let (broker, om) = stack(topic, partitions).await;
    let payloads: Vec<String> = (0..total).map(|i| ticket(i, i % 25)).collect();
    broker.produce(topic, &payloads, partitions).await;

    let unique = || om.double.unique_events().len();
    let mut first = run_collector(&broker, topic, &om);
    assert!(
        eventually(WAIT, || unique() >= 300).await,
        "first run delivers: {}",
        first.stderr()
    );
    first.kill();

    om.double.fail_next(Route::IngestEvents, 3, 503);
    om.double
        .set_latency(Route::IngestEvents, Duration::from_millis(300));
    let mut second = run_collector(&broker, topic, &om);
    assert!(eventually(WAIT, || om.double.calls(Route::IngestEvents) > 3).await);
    second.kill();
    om.double.set_latency(Route::IngestEvents, Duration::ZERO);

    let mut third = run_collector(&broker, topic, &om);
    assert!(
        eventually(WAIT, || unique() == total).await,
        "every event arrives: {} of {total}",
        unique()
    );
    let ids = unique_ids(&om);
    assert!((0..total).all(|i| ids.contains(&format!("env-{i}"))));
    let deliveries = om.double.deliveries().len();
    println!("delivered {total} unique events in {deliveries} deliveries: {} redelivered after the kills", deliveries - total);
    assert!(stops_cleanly(&mut third));
}

/// go-livepeer's `request_id` is 8 random hex characters: two tickets can
/// share one. Each is its own event (its envelope id), and a record the
/// broker hands over twice is still billed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tickets_sharing_a_request_id_are_both_billed_and_a_redelivered_one_once() {
    let (topic, partitions) = ("shared-request-ids", 1);
    let (broker, om) = stack(topic, partitions).await;
    let signed = |envelope: &str, fee: &str| {
        json!({"id": envelope, "type": "create_signed_ticket", "timestamp": "1788912000000",
               "data": {"request_id": "12345678", "auth_id": "acme:alice", "computed_fee": fee,
                        "current_time": chrono::Utc::now().to_rfc3339()}})
        .to_string()
    };
    let first = signed("7d1f0c2e-0000-4000-8000-00000000a001", "7000000000000");
    let second = signed("7d1f0c2e-0000-4000-8000-00000000a002", "9000000000000");
    broker
        .produce(topic, &[first.clone(), second, first], partitions)
        .await;

    let mut collector = run_collector(&broker, topic, &om);
    let both = eventually(WAIT, || unique_ids(&om).len() == 2).await;
    assert!(both, "both tickets stored: {}", collector.stderr());
    assert!(eventually(WAIT, || broker.committed(topic, partitions) == [3]).await);
    let alice = om
        .double
        .customers()
        .into_iter()
        .find(|c| c.key == "acme:alice")
        .unwrap();
    // (7 + 9) × 10^12 wei at 3500 USD/ETH.
    assert_eq!(
        om.double.billable_total("billable_usd_micros", &alice.id),
        rust_decimal::Decimal::from(56_000)
    );
    assert_eq!(om.double.unique_events().len(), 2, "the redelivery deduped");
    assert!(stops_cleanly(&mut collector));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_in_one_group_create_each_new_customer_once_before_its_usage() {
    let (topic, partitions, customers) = ("pair-events", 4, 60usize);
    let (broker, om) = stack(topic, partitions).await;
    let payloads: Vec<String> = (0..customers * 4)
        .map(|i| ticket(i, i % customers))
        .collect();
    broker.produce(topic, &payloads, partitions).await;

    let mut a = run_collector(&broker, topic, &om);
    let mut b = run_collector(&broker, topic, &om);
    let total = payloads.len();
    assert!(
        eventually(WAIT, || om.double.unique_events().len() == total).await,
        "all delivered: {}",
        om.double.unique_events().len()
    );
    assert_eq!(om.double.customers().len(), customers, "one customer each");
    assert_eq!(
        om.double.subscriptions().len(),
        customers,
        "one subscription each"
    );
    assert!(
        om.double
            .deliveries()
            .iter()
            .all(|d| d.customer_id.is_some()),
        "customer existed before its usage"
    );
    assert!(stops_cleanly(&mut a));
    assert!(stops_cleanly(&mut b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_openmeter_outage_exits_promptly_and_loses_nothing() {
    let (topic, partitions, total) = ("outage-events", 2, 400usize);
    let (broker, om) = stack(topic, partitions).await;
    om.double.fail_next(Route::IngestEvents, 1_000_000, 503);
    let payloads: Vec<String> = (0..total).map(|i| ticket(i, i % 5)).collect();
    broker.produce(topic, &payloads, partitions).await;

    let mut env = collector_env(&broker.brokers(), topic, &om.url(), free_port());
    env.push(("BATCH_MAX_EVENTS", "50".to_owned()));
    env.push(("SHUTDOWN_TIMEOUT", "2s".to_owned()));
    let mut collector = Binary::spawn(&["run"], &env);
    assert!(eventually(WAIT, || om.double.calls(Route::IngestEvents) >= 8).await);
    let stopped = std::time::Instant::now();
    let status = collector
        .terminate(Duration::from_secs(20))
        .expect("exits while OpenMeter is down");
    assert!(status.success(), "{}", collector.stderr());
    println!(
        "exited {:?} after SIGTERM during the outage",
        stopped.elapsed()
    );

    om.double.clear_faults();
    let mut after = run_collector(&broker, topic, &om);
    assert!(
        eventually(WAIT, || om.double.unique_events().len() == total).await,
        "every event arrives after the outage: {}",
        om.double.unique_events().len()
    );
    assert!(stops_cleanly(&mut after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_delivers_dead_letters_once_the_cause_is_fixed() {
    let (topic, partitions, total) = ("replay-events", 1, 6usize);
    let (broker, om) = stack(topic, partitions).await;
    om.double.reject_event_ids(&["env-3"]);
    let payloads: Vec<String> = (0..total).map(|i| ticket(i, i % 2)).collect();
    broker.produce(topic, &payloads, partitions).await;

    let mut collector = run_collector(&broker, topic, &om);
    assert!(eventually(WAIT, || om.double.unique_events().len() == total - 1).await);
    let letters = reasons_and_payloads(broker.read_letters("replay-events.dlq", 1).await);
    assert!(letters[0].0.contains("env-3"), "{letters:?}");
    assert!(stops_cleanly(&mut collector));

    om.double.clear_faults();
    let env = collector_env(&broker.brokers(), topic, &om.url(), free_port());
    let mut replay = Binary::spawn(&["dlq", "replay"], &env);
    let status = replay.wait(WAIT).expect("replay ends by itself");
    assert!(status.success(), "{}", replay.stderr());
    let ids = unique_ids(&om);
    assert!(
        ids.contains("env-3"),
        "the dead letter was delivered on replay"
    );
    assert_eq!(ids.len(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_replay_whose_letter_fails_again_ends_exits_1_and_writes_it_back_once() {
    let (topic, partitions) = ("replay-again-events", 1);
    let (broker, om) = stack(topic, partitions).await;
    om.double.reject_event_ids(&["env-3"]);
    let payloads: Vec<String> = (0..4).map(|i| ticket(i, i % 2)).collect();
    broker.produce(topic, &payloads, partitions).await;
    let mut collector = run_collector(&broker, topic, &om);
    assert!(eventually(WAIT, || om.double.unique_events().len() == 3).await);
    assert!(stops_cleanly(&mut collector));

    // The cause is not fixed: the letter fails again and goes back to the
    // topic the replay reads, which must not chase its own output.
    let env = collector_env(&broker.brokers(), topic, &om.url(), free_port());
    let mut replay = Binary::spawn(&["dlq", "replay"], &env);
    let status = replay.wait(WAIT).expect("replay ends by itself");
    assert_eq!(status.code(), Some(1), "{}", replay.stderr());
    assert_eq!(
        broker.records_in("replay-again-events.dlq"),
        2,
        "the first letter and one written back"
    );
    let letters = reasons_and_payloads(broker.read_letters("replay-again-events.dlq", 2).await);
    assert!(
        letters.iter().all(|(reason, _)| reason.contains("env-3")),
        "{letters:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_collector_is_ready_and_exports_metrics() {
    let (topic, partitions) = ("ready-events", 1);
    let (broker, om) = stack(topic, partitions).await;
    broker.produce(topic, &[ticket(1, 1)], partitions).await;
    let port = free_port();
    let env = collector_env(&broker.brokers(), topic, &om.url(), port);
    let mut collector = Binary::spawn(&["run"], &env);
    assert!(eventually(WAIT, || om.double.unique_events().len() == 1).await);

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = serde_json::Value::Null;
    for _ in 0..100 {
        let r = http.get(format!("{base}/ready")).send().await.unwrap();
        ready = r.json().await.unwrap();
        if ready["ready"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ready,
        json!({"ready": true, "checks": {"partitions_assigned": true, "price_fresh": true, "openmeter": true, "progress": true}})
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "ticketmeter_events_delivered_total 1",
        "ticketmeter_events_consumed_total 1",
        "ticketmeter_upstream_calls_total{route=\"ingest events\",status=\"202\"}",
        "ticketmeter_eth_usd_price_micros 3500000000",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    assert!(stops_cleanly(&mut collector));
}

/// The collector as a library: built from the configuration `run` would
/// build from its command line, serving its API on a port the system
/// picked, and stopped by a future its caller resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_runs_in_process_until_the_shutdown_its_caller_controls() {
    let (topic, partitions, total) = ("in-process-events", 2, 40usize);
    let (broker, om) = stack(topic, partitions).await;
    let payloads: Vec<String> = (0..total).map(|i| ticket(i, i % 4)).collect();
    broker.produce(topic, &payloads, partitions).await;
    let config = ticketmeter::collector_config([
        "ticketmeter",
        "run",
        "--kafka-brokers",
        &broker.brokers(),
        "--kafka-gateway-topic",
        topic,
        "--openmeter-url",
        &om.url(),
        "--openmeter-api-key",
        TOKEN,
        "--eth-usd-price",
        "3500",
        "--provision-port",
        "0",
        "--batch-linger",
        "50ms",
        "--kafka-commit-interval",
        "200ms",
    ])
    .expect("a run command line");
    let collector = ticketmeter::Application::build(config)
        .await
        .expect("built");
    let health = format!("http://127.0.0.1:{}/health", collector.api_port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(collector.run_until_stopped(async {
        let _ = stopped.await;
    }));

    assert!(eventually(WAIT, || unique_ids(&om).len() == total).await);
    let served = reqwest::get(&health).await.expect("the API answers");
    assert!(served.status().is_success());
    let per_partition = (total / partitions as usize) as i64;
    assert!(
        eventually(WAIT, || broker.committed(topic, partitions)
            == vec![per_partition; partitions as usize])
        .await
    );
    stop.send(()).expect("still running");
    let outcome = running.await.expect("no panic");
    assert_eq!(
        outcome,
        ticketmeter::Stopped {
            settled: true,
            failed: false
        }
    );
    assert!(reqwest::get(&health).await.is_err(), "the API stopped too");
}
