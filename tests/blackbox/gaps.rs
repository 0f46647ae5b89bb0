//! What never reached Kafka: sessions signed with go-livepeer's own field
//! semantics (`support::signer`: a retried call that repeats a number,
//! concurrent calls on one blob, a dead-lettered call, sessions that end),
//! with calls removed from their middles as the signer's full queue drops
//! them. `ticketmeter audit` names exactly the removed calls and nothing
//! else; the running collector, reading the same events over partitions
//! out of order, counts the same gaps, missing calls and estimate; a
//! collector restarted mid-session reports no false gap.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::support::binary::{binary_path, collector_env, Binary};
use crate::support::broker::Broker;
use crate::support::double::{OpenMeter, TOKEN};
use crate::support::signer::{Blob, Call, Signer};
use crate::support::{eventually, free_port, metric};

/// A gap as the audit's JSON names it: session, first and last number.
type Named = (String, u64, u64);

/// The calls published, and the gaps their removed calls leave.
struct Sessions {
    published: Vec<Call>,
    removed: BTreeSet<Named>,
}

impl Sessions {
    /// Keeps `call` unless its number is in `drop` for its session.
    fn publish(&mut self, call: Call, drop: &[u64]) {
        if !drop.contains(&call.seq) {
            self.published.push(call);
        }
    }

    /// `n` more calls from `blob`, each from the last; returns the last blob.
    fn calls(&mut self, signer: &mut Signer, mut blob: Blob, n: usize, drop: &[u64]) -> Blob {
        for _ in 0..n {
            let (next, call) = signer.call(&blob);
            self.publish(call, drop);
            blob = next;
        }
        blob
    }

    /// A new session and its next `n` calls.
    fn session(
        &mut self,
        signer: &mut Signer,
        id: &str,
        auth_id: &str,
        n: usize,
        drop: &[u64],
    ) -> Blob {
        let (blob, call) = signer.open(id, auth_id);
        self.publish(call, drop);
        self.calls(signer, blob, n, drop)
    }
}

/// Six sessions, 20 ms apart per call, from `start`:
/// - `a11ce001` (alice): 10 calls; 3 and 6..7 dropped (two gaps);
/// - `b0b00002` (bob): call 3 retried with the same blob (3 twice), the
///   client goes on from the retry; 5 dropped;
/// - `ca401003` (carol): two concurrent calls on one blob (2 twice), the
///   client goes on from the first; 4 dropped;
/// - `da7e0004` (dave): 5 calls, none dropped, the session ends;
/// - `e1e0e005` (erin): call 2's fee is not an integer (dead-lettered, yet
///   published: a link), nothing dropped;
/// - `f0f00006` (frank): 2 calls, then nothing: a session that ends.
fn sessions(start: DateTime<Utc>) -> Sessions {
    let mut signer = Signer::new(start, chrono::Duration::milliseconds(20));
    let mut s = Sessions {
        published: Vec::new(),
        removed: BTreeSet::new(),
    };
    s.session(&mut signer, "a11ce001", "studio-app:alice", 9, &[3, 6, 7]);
    s.removed.insert(("a11ce001".into(), 3, 3));
    s.removed.insert(("a11ce001".into(), 6, 7));

    let blob = s.session(&mut signer, "b0b00002", "studio-app:bob", 2, &[]);
    let (_, first_try) = signer.call(&blob);
    s.publish(first_try, &[]);
    let (retried, retry) = signer.call(&blob);
    s.publish(retry, &[]);
    s.calls(&mut signer, retried, 4, &[5]);
    s.removed.insert(("b0b00002".into(), 5, 5));

    let blob = s.session(&mut signer, "ca401003", "daydream:carol", 1, &[]);
    let (first, first_call) = signer.call(&blob);
    let (_, second_call) = signer.call(&blob);
    s.publish(second_call, &[]);
    s.publish(first_call, &[]);
    s.calls(&mut signer, first, 3, &[4]);
    s.removed.insert(("ca401003".into(), 4, 4));

    s.session(&mut signer, "da7e0004", "daydream:dave:vip", 4, &[]);

    let (mut blob, call) = signer.open("e1e0e005", "acme:erin");
    s.publish(call, &[]);
    for seq in 1..5 {
        let (next, call) = signer.call_with_fee(&blob, (seq == 2).then_some("12.5"));
        s.publish(call, &[]);
        blob = next;
    }

    s.session(&mut signer, "f0f00006", "acme:frank", 1, &[]);
    s
}

/// The published calls as partitions hold them (a random envelope key
/// spreads one session over every partition), read partition after
/// partition: most calls arrive before the calls they follow.
fn reordered(calls: &[Call], partitions: usize) -> Vec<Vec<String>> {
    let mut by_partition = vec![Vec::new(); partitions];
    for (i, call) in calls.iter().enumerate() {
        by_partition[(i * 7 + i / 3) % partitions].push(call.payload.clone());
    }
    by_partition
}

fn named(report: &Value) -> BTreeSet<Named> {
    report["chain"]["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let m = &g["missing_sequence_numbers"];
            (
                g["session"].as_str().unwrap().to_owned(),
                m["first"].as_u64().unwrap(),
                m["last"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `ticketmeter audit --format json` with `args` and `env`: exit code and
/// report.
async fn audit(args: &[&str], env: &[(&str, String)]) -> (Option<i32>, Value) {
    let output = tokio::process::Command::new(binary_path())
        .arg("audit")
        .args(args)
        .args(["--settle", "0s", "--format", "json"])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (output.status.code(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_names_exactly_the_calls_removed_from_the_middle_of_sessions() {
    let om = OpenMeter::bootstrapped(None).await;
    let dir = tempfile::tempdir().unwrap();
    let start = Utc::now() - chrono::Duration::minutes(5);
    let s = sessions(start);
    let lines: Vec<String> = reordered(&s.published, 3).concat();
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let env = vec![
        ("OPENMETER_URL", om.url()),
        ("ETH_USD_PRICE", "3500".to_owned()),
        ("DLQ_FILE", dlq.display().to_string()),
    ];
    let replay = tokio::process::Command::new(binary_path())
        .args(["replay", &events.display().to_string()])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .unwrap();
    assert!(replay.status.success());

    let from = rfc3339(start - chrono::Duration::minutes(1));
    let file = events.display().to_string();
    let (code, report) = audit(&["--file", &file, "--from", &from], &env).await;
    assert_eq!(named(&report), s.removed, "{:#}", report["chain"]);
    let totals = &report["totals"];
    assert_eq!(
        (
            totals["missing_events"].as_u64(),
            totals["unbillable_events"].as_u64()
        ),
        (Some(0), Some(0)),
        "the gaps are the only discrepancies"
    );
    assert_eq!(totals["dead_lettered_events"], 1, "erin's call 2");
    assert_eq!(report["chain"]["missing_calls"], 5);
    assert_eq!(report["chain"]["sessions"], 6);
    assert_eq!(code, Some(1), "each gap is a discrepancy");
    for gap in report["chain"]["gaps"].as_array().unwrap() {
        assert!(gap["uncovered_from"].is_string(), "{gap}");
        assert_eq!(
            gap["estimate"]["basis"],
            "session fee rate × uncovered time"
        );
    }
}

async fn metrics(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    match reqwest::get(&url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until `name` reads `value` on the collector at `port`; returns the
/// last exposition.
async fn until_metric(port: u16, name: &str, value: f64, within: Duration) -> (bool, String) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let text = metrics(port).await;
        if metric(&text, name) == Some(value) {
            return (true, text);
        }
        if std::time::Instant::now() > deadline {
            return (false, text);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A collector that tracks chains: a short settle, statistics every 2 s.
fn chain_env(
    broker: &Broker,
    topic: &str,
    om: &OpenMeter,
    port: u16,
) -> Vec<(&'static str, String)> {
    let mut env = collector_env(&broker.brokers(), topic, &om.url(), port);
    env.extend([
        ("CHAIN_SETTLE", "5s".to_owned()),
        ("STALL_AFTER", "8s".to_owned()),
    ]);
    env
}

/// Produces each partition's calls to it, the last partition first.
async fn produce_reordered(broker: &Broker, topic: &str, calls: &[Call], partitions: i32) {
    use rdkafka::producer::FutureRecord;
    let producer = broker.producer();
    for (p, payloads) in reordered(calls, partitions as usize)
        .iter()
        .enumerate()
        .rev()
    {
        for payload in payloads {
            let record = FutureRecord::to(topic)
                .payload(payload.as_str())
                .key("k")
                .partition(p as i32);
            producer
                .send(record, Duration::from_secs(10))
                .await
                .unwrap();
        }
    }
}

/// Watching starts once the collector owns every partition; calls signed
/// within `CHAIN_SETTLE` of that are not its to judge.
async fn watching(port: u16, collector: &mut Binary) {
    let (on, text) = until_metric(
        port,
        "ticketmeter_chain_watching",
        1.0,
        Duration::from_secs(60),
    )
    .await;
    assert!(on, "{text}\n{}", collector.stderr());
    tokio::time::sleep(Duration::from_secs(6)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_collector_counts_the_gaps_the_audit_names() {
    let (topic, partitions) = ("chained-events", 3);
    let broker = Broker::start();
    broker.create_topic(topic, partitions).await;
    broker.create_topic(&format!("{topic}.dlq"), 1).await;
    let om = OpenMeter::bootstrapped(Some(TOKEN)).await;
    let port = free_port();
    let env = chain_env(&broker, topic, &om, port);
    let mut collector = Binary::spawn(&["run"], &env);
    watching(port, &mut collector).await;

    let start = Utc::now();
    let s = sessions(start);
    produce_reordered(&broker, topic, &s.published, partitions).await;
    let gaps = s.removed.len() as f64;
    let (counted, text) = until_metric(
        port,
        "ticketmeter_chain_gaps_total",
        gaps,
        Duration::from_secs(90),
    )
    .await;
    assert!(counted, "{text}\n{}", collector.stderr());
    // Settled: nothing more is reported.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let text = metrics(port).await;
    assert_eq!(metric(&text, "ticketmeter_chain_gaps_total"), Some(gaps));
    assert_eq!(
        metric(&text, "ticketmeter_chain_missing_calls_total"),
        Some(5.0)
    );
    let estimated = metric(
        &text,
        "ticketmeter_chain_estimated_unbilled_usd_micros_total",
    );
    assert!(collector
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success()));

    let from = rfc3339(start - chrono::Duration::minutes(1));
    let (code, report) = audit(&["--from", &from], &env).await;
    assert_eq!(code, Some(1));
    assert_eq!(named(&report), s.removed, "{:#}", report["chain"]);
    let audited: f64 = report["chain"]["estimated_unbilled_usd_micros"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        estimated,
        Some(audited),
        "the collector's estimate is the audit's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_restarted_mid_session_reports_no_false_gap() {
    let (topic, partitions) = ("restarted-chains", 2);
    let broker = Broker::start();
    broker.create_topic(topic, partitions).await;
    broker.create_topic(&format!("{topic}.dlq"), 1).await;
    let om = OpenMeter::bootstrapped(Some(TOKEN)).await;
    let port = free_port();
    let env = chain_env(&broker, topic, &om, port);

    // The first half of two sessions, delivered and committed by a first
    // collector.
    let mut signer = Signer::new(Utc::now(), chrono::Duration::milliseconds(20));
    let (mut a, call) = signer.open("a11ce001", "studio-app:alice");
    let (mut b, call_b) = signer.open("b0b00002", "studio-app:bob");
    let mut first = vec![call, call_b];
    for _ in 0..4 {
        let (next, call) = signer.call(&a);
        first.push(call);
        a = next;
        let (next, call) = signer.call(&b);
        first.push(call);
        b = next;
    }
    let mut collector = Binary::spawn(&["run"], &env);
    produce_reordered(&broker, topic, &first, partitions).await;
    let delivered = eventually(Duration::from_secs(60), || {
        om.double.unique_events().len() == first.len()
            && broker.committed(topic, partitions).iter().sum::<i64>() == first.len() as i64
    })
    .await;
    assert!(delivered, "{}", collector.stderr());
    assert!(collector
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success()));

    // A second collector sees the rest: the calls after the restart point
    // at calls only the first one read; one call of bob's is lost.
    let mut collector = Binary::spawn(&["run"], &env);
    watching(port, &mut collector).await;
    let mut signer = Signer::new(Utc::now(), chrono::Duration::milliseconds(20));
    let mut second = Vec::new();
    for i in 0..4 {
        let (next, call) = signer.call(&a);
        second.push(call);
        a = next;
        let (next, call) = signer.call(&b);
        if i != 1 {
            second.push(call);
        }
        b = next;
    }
    produce_reordered(&broker, topic, &second, partitions).await;
    let (counted, text) = until_metric(
        port,
        "ticketmeter_chain_gaps_total",
        1.0,
        Duration::from_secs(90),
    )
    .await;
    assert!(counted, "{text}\n{}", collector.stderr());
    tokio::time::sleep(Duration::from_secs(7)).await;
    let text = metrics(port).await;
    assert_eq!(
        metric(&text, "ticketmeter_chain_gaps_total"),
        Some(1.0),
        "only bob's lost call: {}",
        collector.stderr()
    );
    assert_eq!(
        metric(&text, "ticketmeter_chain_missing_calls_total"),
        Some(1.0)
    );
}
