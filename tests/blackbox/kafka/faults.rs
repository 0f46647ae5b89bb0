//! Faults that once stopped billing in silence, over a real broker (tansu)
//! and the real binary: poison records too large for the DLQ, a broker
//! killed and restarted, a DLQ topic that refuses letters, a partition the
//! broker will not serve, a pipeline-wide hold, and a member killed during
//! a rebalance. Each test prints the figure it measured (`--nocapture`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use openmeter_double::Route;
use rdkafka::config::ClientConfig as RdConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use super::ticket;
use crate::support;
use crate::support::binary::{collector_env, Binary};
use crate::support::broker::{Broker, Storage};
use crate::support::double::{OpenMeter, TOKEN};
use crate::support::{eventually, free_port};

const WAIT: Duration = Duration::from_secs(90);

async fn stack(storage: Storage, topic: &str, partitions: i32) -> (Broker, OpenMeter) {
    let broker = Broker::start_with(storage);
    broker.create_topic(topic, partitions).await;
    broker.create_topic(&format!("{topic}.dlq"), 1).await;
    (broker, OpenMeter::bootstrapped(Some(TOKEN)).await)
}

/// A collector with test-friendly settings plus `extra`.
fn collector(
    broker: &Broker,
    topic: &str,
    om: &OpenMeter,
    port: u16,
    extra: &[(&'static str, String)],
) -> Binary {
    let mut env = collector_env(&broker.brokers(), topic, &om.url(), port);
    env.extend_from_slice(extra);
    Binary::spawn(&["run"], &env)
}

/// A producer that can send records of a few MiB.
fn big_producer(broker: &Broker) -> FutureProducer {
    RdConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("message.max.bytes", (8 << 20).to_string())
        .set("message.timeout.ms", "20000")
        .create()
        .unwrap()
}

async fn send(producer: &FutureProducer, topic: &str, partition: i32, key: &str, payload: &[u8]) {
    let record = FutureRecord::to(topic)
        .payload(payload)
        .key(key)
        .partition(partition);
    producer
        .send(record, Duration::from_secs(20))
        .await
        .unwrap();
}

async fn metrics_text(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    match reqwest::get(url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The value of the first metric line starting with `name`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The metric `name` of the collector at `port` once it reaches `at_least`,
/// or its last value when [`WAIT`] runs out.
async fn metric_reaching(port: u16, name: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = metric(&metrics_text(port).await, name).unwrap_or(0.0);
        if value >= at_least || Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ready(port: u16) -> Option<(u16, Value)> {
    let r = reqwest::get(format!("http://127.0.0.1:{port}/ready"))
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.ok()?))
}

fn unique(om: &OpenMeter) -> usize {
    om.double.unique_events().len()
}

/// Settings of a group member that notices a dead peer within seconds,
/// with small batches so that a rebalance lands mid-stream.
fn group_member() -> [(&'static str, String); 3] {
    [
        ("BATCH_MAX_EVENTS", "50".to_owned()),
        ("KAFKA_OPT_SESSION_TIMEOUT_MS", "6000".to_owned()),
        ("KAFKA_OPT_HEARTBEAT_INTERVAL_MS", "500".to_owned()),
    ]
}

/// How many of the `env-<i>` events (produced to partition `i % partitions`)
/// OpenMeter has not got, per partition: what a failure reports.
fn missing_by_partition(om: &OpenMeter, total: usize, partitions: i32) -> Vec<usize> {
    let ids: HashSet<String> = om
        .double
        .unique_events()
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    let mut missing = vec![0; partitions as usize];
    for i in (0..total).filter(|i| !ids.contains(&format!("env-{i}"))) {
        missing[i % partitions as usize] += 1;
    }
    missing
}

/// The last `n` lines of a log.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_2_mib_and_1_000_001_bytes_are_dead_lettered_while_other_partitions_flow() {
    let (topic, partitions, per_partition) = ("poison-events", 3, 40usize);
    let (broker, om) = stack(Storage::Sqlite, topic, partitions).await;
    let producer = big_producer(&broker);
    let two_mib = format!("{{\"junk\":\"{}\"}}", "x".repeat((2 << 20) - 12)).into_bytes();
    let just_over = vec![b'y'; 1_000_001];
    send(&producer, topic, 0, "poison-2mib", &two_mib).await;
    send(&producer, topic, 1, "poison-1000001", &just_over).await;
    let mut i = 0;
    for p in 0..partitions {
        for _ in 0..per_partition {
            send(
                &producer,
                topic,
                p,
                &format!("env-{i}"),
                ticket(i, i % 7).as_bytes(),
            )
            .await;
            i += 1;
        }
    }
    let healthy = i;

    let spill = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut c = collector(
        &broker,
        topic,
        &om,
        free_port(),
        &[("DLQ_SPILL_DIR", spill.path().display().to_string())],
    );
    assert!(
        eventually(WAIT, || unique(&om) == healthy).await,
        "healthy events behind the poison arrive: {} of {healthy}\n{}",
        unique(&om),
        c.stderr()
    );
    let delivered_in = started.elapsed();
    eprintln!("FIGURE healthy events behind a 2 MiB and a 1,000,001-byte poison record: all {healthy} delivered {delivered_in:?} after the collector started");

    let letters = broker.read_letters(&format!("{topic}.dlq"), 2).await;
    assert_eq!(letters.len(), 2, "both poison records dead-lettered");
    let big = letters
        .iter()
        .find(|l| l.header("source.partition") == Some("0"))
        .expect("the 2 MiB letter");
    assert_eq!(big.header("truncated"), Some("true"));
    assert_eq!(
        big.header("original.size"),
        Some(two_mib.len().to_string().as_str())
    );
    let sha = big.header("original.sha256").unwrap().to_owned();
    assert!(big.payload.len() < two_mib.len() && two_mib.starts_with(&big.payload));
    let middle = letters
        .iter()
        .find(|l| l.header("source.partition") == Some("1"))
        .expect("the 1,000,001-byte letter");
    assert_eq!(
        middle.payload, just_over,
        "fits the DLQ producer now: kept whole"
    );
    assert_eq!(middle.header("truncated"), None);

    let spilled = std::fs::read_to_string(spill.path().join("dead-letters.jsonl")).unwrap();
    let entries: Vec<Value> = spilled
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 1, "only the truncated letter is spilled");
    let original = entries[0]["payload"].as_str().unwrap().as_bytes().to_vec();
    assert_eq!(original, two_mib, "the full original is spilled");
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(&original)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, sha);

    let expected = vec![
        per_partition as i64 + 1,
        per_partition as i64 + 1,
        per_partition as i64,
    ];
    assert!(
        eventually(WAIT, || broker.committed(topic, partitions) == expected).await,
        "committed {:?}, expected {expected:?}",
        broker.committed(topic, partitions)
    );
    assert!(c
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_stream_and_restarted_on_its_storage_loses_nothing() {
    let (topic, partitions, total) = ("restart-events", 2, 1500usize);
    let (mut broker, om) = stack(Storage::Sqlite, topic, partitions).await;
    let payloads: Vec<String> = (0..total).map(|i| ticket(i, i % 20)).collect();
    let (before, after) = payloads.split_at(total / 2);
    broker.produce(topic, before, partitions).await;
    om.double
        .set_latency(Route::IngestEvents, Duration::from_millis(100));

    let mut c = collector(
        &broker,
        topic,
        &om,
        free_port(),
        &[("BATCH_MAX_EVENTS", "50".to_owned())],
    );
    assert!(
        eventually(WAIT, || unique(&om) >= 200).await,
        "{}",
        c.stderr()
    );
    broker.kill();
    let down_at = unique(&om);
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.restart();
    // The second half exists only on the restarted broker: the collector
    // must reconnect and fetch again to bill it.
    broker.produce(topic, after, partitions).await;
    let restarted = Instant::now();
    om.double.set_latency(Route::IngestEvents, Duration::ZERO);
    assert!(
        eventually(WAIT, || unique(&om) == total).await,
        "every event arrives after the broker restart: {} of {total}\n{}",
        unique(&om),
        c.stderr()
    );
    let caught_up = restarted.elapsed();
    let ids: HashSet<String> = om
        .double
        .unique_events()
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    assert!((0..total).all(|i| ids.contains(&format!("env-{i}"))));
    let expected = vec![(total / 2) as i64; 2];
    assert!(
        eventually(WAIT, || broker.committed(topic, partitions) == expected).await,
        "committed {:?}",
        broker.committed(topic, partitions)
    );
    let redelivered = om.double.deliveries().len() - total;
    eprintln!("FIGURE broker killed after {down_at} of {total} delivered, down 3 s, the second {} produced after the restart: the collector reconnected by itself and had delivered everything {caught_up:?} after that; {redelivered} events redelivered (deduplicated by id)", after.len());
    assert!(c
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_an_unwritable_dlq_topic_refuses_are_spilled_and_nothing_is_lost() {
    let (topic, partitions) = ("unwritable-events", 2);
    let (broker, om) = stack(Storage::Sqlite, topic, partitions).await;
    let cases = support::fixtures::fixtures();
    let payloads: Vec<String> = cases.iter().map(|(e, _)| e.clone()).collect();
    broker.produce(topic, &payloads, partitions).await;
    let letters_expected = cases
        .iter()
        .filter(|(_, x)| x.get("dead_letter").is_some())
        .count();
    let events_expected = cases.iter().filter(|(_, x)| x.get("id").is_some()).count();

    let spill = tempfile::tempdir().unwrap();
    let spill_file = spill.path().join("dead-letters.jsonl");
    let mut c = collector(
        &broker,
        topic,
        &om,
        free_port(),
        &[
            ("DLQ_SPILL_DIR", spill.path().display().to_string()),
            ("KAFKA_DLQ_TOPIC", "not a valid topic name!".to_owned()),
            (
                "KAFKA_OPT_TOPIC_METADATA_PROPAGATION_MAX_MS",
                "2000".to_owned(),
            ),
        ],
    );
    let spilled = || {
        std::fs::read_to_string(&spill_file)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    assert!(
        eventually(WAIT, || spilled() == letters_expected
            && unique(&om) == events_expected)
        .await,
        "spilled {} of {letters_expected}, delivered {} of {events_expected}\n{}",
        spilled(),
        unique(&om),
        c.stderr()
    );
    let per_partition: Vec<i64> = (0..partitions)
        .map(|p| {
            (0..payloads.len())
                .filter(|i| *i as i32 % partitions == p)
                .count() as i64
        })
        .collect();
    assert!(
        eventually(WAIT, || broker.committed(topic, partitions)
            == per_partition)
        .await,
        "committed {:?}",
        broker.committed(topic, partitions)
    );
    assert!(c
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_the_broker_will_not_serve_turns_ready_503_within_stall_after() {
    let (topic, total) = ("stalled-events", 100usize);
    let (broker, om) = stack(Storage::Memory, topic, 1).await;
    let payloads: Vec<String> = (0..total).map(|i| ticket(i, i % 5)).collect();
    broker.produce_one_batch(topic, &payloads).await;

    // Deliver part of the batch slowly, then crash: the committed offset
    // lands inside the batch.
    om.double
        .set_latency(Route::IngestEvents, Duration::from_millis(300));
    let slow = [
        ("BATCH_MAX_EVENTS", "10".to_owned()),
        ("BATCH_MAX_IN_FLIGHT", "1".to_owned()),
        ("KAFKA_OPT_SESSION_TIMEOUT_MS", "6000".to_owned()),
    ];
    let mut first = collector(&broker, topic, &om, free_port(), &slow);
    let mid_batch = || {
        broker
            .committed(topic, 1)
            .first()
            .is_some_and(|o| *o > 0 && *o < total as i64)
    };
    assert!(eventually(WAIT, mid_batch).await, "{}", first.stderr());
    first.kill();
    let resume_at = broker.committed(topic, 1)[0];
    om.double.set_latency(Route::IngestEvents, Duration::ZERO);

    let port = free_port();
    let stall_after = Duration::from_secs(5);
    let mut second = collector(
        &broker,
        topic,
        &om,
        port,
        &[("STALL_AFTER", "5s".to_owned())],
    );
    // The stall starts when the partition is ours (once the killed
    // member's session expired): time the detection from there.
    let mut assigned = None;
    let mut answer = None;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && answer.is_none() {
        match ready(port).await {
            Some((503, body))
                if body["problems"]
                    .to_string()
                    .contains("partition stalled-events/0") =>
            {
                answer = Some(body)
            }
            Some((_, body)) if body["checks"]["partitions_assigned"] == true => {
                assigned.get_or_insert_with(Instant::now);
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let detected = assigned.map(|a| a.elapsed()).unwrap_or_default();
    let body = answer.unwrap_or_else(|| panic!("no stall reported\n{}", second.stderr()));
    assert_eq!(body["checks"]["progress"], false, "{body}");
    let metrics = metrics_text(port).await;
    assert_eq!(
        metric(&metrics, "ticketmeter_partition_stalled{partition=\"0\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        detected < stall_after + Duration::from_secs(4),
        "detected {detected:?} after the partition was assigned"
    );
    let lag = metric(&metrics, "ticketmeter_consumer_lag{partition=\"0\"}").unwrap_or(-1.0);
    assert!(lag >= 0.0, "lag never negative: {lag}");
    eprintln!("FIGURE stall detected {detected:?} after the partition was assigned (STALL_AFTER 5 s; resumed at offset {resume_at} inside a {total}-record batch on tansu memory storage; lag gauge {lag}): {}", body["problems"][0]);
    assert!(second.stderr().contains("partition stalled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_held_by_openmeter_longer_than_stall_after_makes_ready_say_why() {
    let (topic, total) = ("held-events", 20usize);
    let (broker, om) = stack(Storage::Sqlite, topic, 1).await;
    om.double.fail_next(Route::IngestEvents, 1_000_000, 503);
    let payloads: Vec<String> = (0..total).map(|i| ticket(i, 1)).collect();
    broker.produce(topic, &payloads, 1).await;
    let port = free_port();
    let mut c = collector(
        &broker,
        topic,
        &om,
        port,
        &[("STALL_AFTER", "3s".to_owned())],
    );
    assert!(eventually(WAIT, || om.double.calls(Route::IngestEvents) >= 1).await);
    let started = Instant::now();
    let mut problem = String::new();
    while started.elapsed() < WAIT && problem.is_empty() {
        if let Some((503, body)) = ready(port).await {
            if let Some(p) = body["problems"][0].as_str() {
                problem = p.to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        problem.contains("every batch held since") && problem.contains("503"),
        "{problem}\n{}",
        c.stderr()
    );
    let held_since = metric(
        &metrics_text(port).await,
        "ticketmeter_pipeline_held_since_unix_seconds",
    )
    .unwrap_or(0.0);
    assert!(held_since > 0.0);
    eprintln!(
        "FIGURE pipeline-wide hold reported {:?} after the first failed ingest (STALL_AFTER 3 s): {problem}",
        started.elapsed()
    );

    om.double.clear_faults();
    assert!(eventually(WAIT, || unique(&om) == total).await);
    let deadline = Instant::now() + WAIT;
    while ready(port).await.map(|(s, _)| s) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "ready again once OpenMeter is back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(c
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_killed_and_restarted_mid_batch_never_block_polling_and_lose_nothing() {
    let (topic, partitions, total) = ("trio-events", 6, 3000usize);
    let (broker, om) = stack(Storage::Sqlite, topic, partitions).await;
    let payloads: Vec<String> = (0..total).map(|i| ticket(i, i % 30)).collect();
    broker.produce(topic, &payloads, partitions).await;
    om.double
        .set_latency(Route::IngestEvents, Duration::from_millis(250));
    let group = group_member();
    let ports = [free_port(), free_port(), free_port()];
    let mut a = collector(&broker, topic, &om, ports[0], &group);
    let mut b = collector(&broker, topic, &om, ports[1], &group);
    let mut c = collector(&broker, topic, &om, ports[2], &group);
    assert!(eventually(WAIT, || unique(&om) >= 600).await);
    let mut longest = 0.0f64;
    for port in ports {
        longest = longest.max(
            metric(
                &metrics_text(port).await,
                "ticketmeter_consumer_poll_gap_max_seconds",
            )
            .unwrap_or(0.0),
        );
    }
    c.kill();
    let killed_at = unique(&om);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let c_port = free_port();
    let mut c2 = collector(&broker, topic, &om, c_port, &group);
    om.double
        .set_latency(Route::IngestEvents, Duration::from_millis(50));
    let all_arrived = eventually(Duration::from_secs(180), || unique(&om) == total).await;
    assert!(
        all_arrived,
        "every event arrives: {} of {total}; missing by partition {:?}\n{}",
        unique(&om),
        missing_by_partition(&om, total, partitions),
        [("a", &mut a), ("b", &mut b), ("c restarted", &mut c2)]
            .map(|(name, m)| format!("--- {name} ---\n{}", tail(&m.stderr(), 40)))
            .join("\n")
    );
    for port in [ports[0], ports[1], c_port] {
        longest = longest.max(
            metric(
                &metrics_text(port).await,
                "ticketmeter_consumer_poll_gap_max_seconds",
            )
            .unwrap_or(0.0),
        );
    }
    let redelivered = om.double.deliveries().len() - total;
    eprintln!("FIGURE three members, one killed after {killed_at} of {total} delivered and restarted 8 s later, ingest taking 1 s meanwhile: longest gap between polls {:.3} s; {redelivered} events redelivered (deduplicated by id)", longest);
    assert!(
        longest < 1.0,
        "no member held its poll loop: longest gap {longest:.3} s"
    );
    for m in [&mut a, &mut b, &mut c2] {
        assert!(m
            .terminate(Duration::from_secs(30))
            .is_some_and(|s| s.success()));
    }
    let expected = vec![(total / partitions as usize) as i64; partitions as usize];
    assert_eq!(broker.committed(topic, partitions), expected);
}

/// librdkafka keeps a partition's pause flag across rebalances. A member
/// paused by back-pressure while it owned both partitions loses one to a
/// new member, resumes what it still owns, and gets the other back when
/// that member leaves: every partition it is assigned must flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_paused_by_back_pressure_flows_again_when_it_is_assigned_back() {
    let (topic, partitions, total) = ("returning-events", 2, 800usize);
    let (broker, om) = stack(Storage::Sqlite, topic, partitions).await;
    let payloads: Vec<String> = (0..total).map(|i| ticket(i, i % 10)).collect();
    broker.produce(topic, &payloads, partitions).await;
    // Ingest slow enough that the first member's pipeline stays full, and
    // its partitions paused, until the second member has joined.
    om.double
        .set_latency(Route::IngestEvents, Duration::from_secs(10));
    let group = group_member();
    let a_port = free_port();
    let mut a = collector(&broker, topic, &om, a_port, &group);
    let a_read = metric_reaching(a_port, "ticketmeter_events_consumed_total", 300.0).await;
    assert!(a_read >= 300.0, "the first member filled its pipeline");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b_port = free_port();
    let mut b = collector(&broker, topic, &om, b_port, &group);
    let b_delivered = metric_reaching(b_port, "ticketmeter_events_delivered_total", 1.0).await;
    assert!(b_delivered >= 1.0, "the second member took a partition");
    // A clean leave: tansu may keep a SIGKILLed member's assignment past its
    // session timeout, which would hide the partition from the first member.
    assert!(b
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    om.double
        .set_latency(Route::IngestEvents, Duration::from_millis(20));
    let all_arrived = eventually(WAIT, || unique(&om) == total).await;
    assert!(
        all_arrived,
        "every event arrives: {} of {total}; missing by partition {:?}\n{}",
        unique(&om),
        missing_by_partition(&om, total, partitions),
        tail(&a.stderr(), 40)
    );
    assert!(a
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
}
