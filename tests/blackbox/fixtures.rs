//! Golden tests: the shared fixtures through the real pipeline give exactly
//! their expected results — the fields sent, the skips and the dead
//! letters. Today's contract (`upstream-events.jsonl`, and ticketmeter's
//! own `tests/fixtures/events.jsonl` for what upstream's files do not have
//! yet) under the default settings; the seed's (`signer-events.jsonl`)
//! under the settings that keep its ids, subjects and rounding.

use std::path::Path;

use serde_json::Value;
use ticketmeter::{BillingPolicy, Contract, DeadLetterSink, EventTime, PipelineConfig, Tally};

use crate::support;
use crate::support::double::OpenMeter;
use crate::support::fixtures::{
    assert_subset, fixtures, fixtures_dir, own_fixtures, own_fixtures_dir, seed_fixtures,
    OWN_EVENTS, SEED_EVENTS, UPSTREAM_EVENTS,
};
use crate::support::pipeline::{run_fixtures, run_fixtures_with};

fn expected_events(cases: &[(String, Value)]) -> Vec<&Value> {
    cases
        .iter()
        .map(|(_, x)| x)
        .filter(|x| x.get("id").is_some())
        .collect()
}

fn sent_event<'a>(sent: &'a [Value], id: &str) -> &'a Value {
    sent.iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("event {id} not sent"))
}

/// The signed time, so sent events compare with the fixtures' `time`.
fn signed_times(contract: Contract) -> PipelineConfig {
    PipelineConfig {
        billing: BillingPolicy {
            event_time: EventTime::Signed,
            ..BillingPolicy::default()
        },
        contract,
        ..PipelineConfig::default()
    }
}

/// Runs `events` under `config` and checks every sent event, skip and dead
/// letter against `cases`.
async fn assert_fixtures(
    events: &Path,
    cases: &[(String, Value)],
    config: PipelineConfig,
) -> Vec<Value> {
    let om = OpenMeter::bootstrapped(None).await;
    let dlq = DeadLetterSink::memory();
    let (pipeline, settled) = run_fixtures_with(om.client(None), dlq.clone(), events, config).await;
    assert!(settled);

    let sent = om.double.unique_events();
    let expected_events = expected_events(cases);
    assert_eq!(
        sent.len(),
        expected_events.len(),
        "exactly the expected events are sent"
    );
    for expected in &expected_events {
        let id = expected["id"].as_str().unwrap();
        let actual = sent_event(&sent, id);
        assert_subset(expected, actual, id);
        assert_eq!(actual["specversion"], "1.0");
    }

    let expected_dead: Vec<&str> = cases
        .iter()
        .filter_map(|(_, x)| x["dead_letter"].as_str())
        .collect();
    let dead: Vec<String> = dlq.kept().into_iter().map(|d| d.reason).collect();
    assert_eq!(dead, expected_dead);
    let skips = cases
        .iter()
        .filter(|(_, x)| x.get("skip").is_some())
        .count() as u64;
    assert_eq!(Tally::get(&pipeline.tally().skipped), skips);
    sent
}

#[tokio::test]
async fn todays_fixtures_give_exactly_the_expected_results_by_default() {
    let sent = assert_fixtures(
        &fixtures_dir().join(UPSTREAM_EVENTS),
        &fixtures(),
        signed_times(Contract::default()),
    )
    .await;
    for event in &sent {
        assert_eq!(event["data"]["eth_usd_price"], serde_json::json!(3500));
        assert!(event["data"]["fee_wei"].is_number(), "{event}");
        assert!(event["data"]["billable_secs"].is_number(), "{event}");
    }
}

#[tokio::test]
async fn the_seed_fixtures_give_exactly_the_expected_results_under_the_seed_settings() {
    let sent = assert_fixtures(
        &fixtures_dir().join(SEED_EVENTS),
        &seed_fixtures(),
        signed_times(Contract::seed()),
    )
    .await;
    for event in &sent {
        assert_eq!(event["data"]["eth_usd_price"], "3500");
    }
}

#[tokio::test]
async fn our_own_fixtures_give_exactly_the_expected_results_by_default() {
    assert_fixtures(
        &own_fixtures_dir().join(OWN_EVENTS),
        &own_fixtures(),
        signed_times(Contract::default()),
    )
    .await;
}

/// The fixtures were signed before their customers' subscriptions exist:
/// by default each is sent at its subscription's start (else OpenMeter
/// would never invoice it), the signed time kept in `data.signed_at`, and
/// every other field exactly as expected.
#[tokio::test]
async fn fixtures_older_than_their_subscription_are_sent_at_its_start_with_the_signed_time_kept() {
    let om = OpenMeter::bootstrapped(None).await;
    let (_, settled) = run_fixtures(om.client(None), DeadLetterSink::memory()).await;
    assert!(settled);
    let sent = om.double.unique_events();
    let cases = fixtures();
    for expected in expected_events(&cases) {
        let id = expected["id"].as_str().unwrap();
        let actual = sent_event(&sent, id);
        let mut without_time = expected.clone();
        without_time.as_object_mut().unwrap().remove("time");
        assert_subset(&without_time, actual, id);
        assert_eq!(actual["data"]["signed_at"], expected["time"], "{id}");
        let customer = om
            .double
            .customers()
            .into_iter()
            .find(|c| c.key == actual["subject"])
            .unwrap();
        let subscription = om
            .double
            .subscriptions()
            .into_iter()
            .find(|s| s.customer_id == customer.id)
            .unwrap();
        let time = chrono::DateTime::parse_from_rfc3339(actual["time"].as_str().unwrap()).unwrap();
        assert!(
            time >= subscription.active_from,
            "{id} sent before its subscription"
        );
        assert!(
            time < subscription.active_from + chrono::Duration::seconds(1),
            "{id} sent at its subscription's start"
        );
    }
}

#[tokio::test]
async fn every_fixture_event_reaches_openmeter_after_its_customer_exists() {
    let om = OpenMeter::bootstrapped(None).await;
    let (_, settled) = run_fixtures(om.client(None), DeadLetterSink::memory()).await;
    assert!(settled);
    let deliveries = om.double.deliveries();
    assert!(!deliveries.is_empty());
    for d in deliveries {
        assert!(
            d.customer_id.is_some(),
            "no customer when {} arrived",
            d.event["id"]
        );
    }
    for customer in om.double.customers() {
        assert!(
            om.double
                .subscriptions()
                .iter()
                .any(|s| s.customer_id == customer.id && s.status == "active"),
            "{} has an active subscription",
            customer.key
        );
    }
}

/// `replay --dry-run` over `events` with `env` prints `cases`' lines.
fn assert_dry_run(events: &Path, cases: &[(String, Value)], env: &[(&str, &str)]) {
    let output = std::process::Command::new(support::binary::binary_path())
        .args(["replay", "--dry-run"])
        .arg(events)
        .env_clear()
        .env("ETH_USD_PRICE", "3500")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(printed.len(), cases.len());
    for ((_, expected), actual) in cases.iter().zip(&printed) {
        assert_subset(expected, actual, "line");
    }
}

#[test]
fn dry_run_prints_todays_expected_lines_without_network() {
    assert_dry_run(&fixtures_dir().join(UPSTREAM_EVENTS), &fixtures(), &[]);
    assert_dry_run(&own_fixtures_dir().join(OWN_EVENTS), &own_fixtures(), &[]);
}

#[test]
fn dry_run_prints_the_seeds_expected_lines_under_the_seed_settings() {
    assert_dry_run(
        &fixtures_dir().join(SEED_EVENTS),
        &seed_fixtures(),
        &[
            ("EVENT_ID", "request_id"),
            ("BILLING_SUBJECT", "auth_id"),
            ("USD_MICROS", "rounded"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_replay_dead_letters_to_a_file_that_dlq_replay_reads_back() {
    let om = support::double::OpenMeter::bootstrapped(None).await;
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let env = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("OPENMETER_URL", om.url()),
            ("ETH_USD_PRICE", "3500".to_owned()),
            ("DLQ_FILE", dlq.display().to_string()),
        ];
        env.extend_from_slice(extra);
        env
    };
    let run = |args: &[&str], env: Vec<(&'static str, String)>| {
        let mut b = support::binary::Binary::spawn(args, &env);
        let status = b
            .wait(std::time::Duration::from_secs(60))
            .expect("finishes");
        (status, b.stdout())
    };
    let fixtures = fixtures_dir().join("signer-events.jsonl");
    let (_, summary) = run(&["replay", &fixtures.display().to_string()], env(&[]));
    assert!(summary.contains("dead-lettered 2"), "{summary}");
    let letters = std::fs::read_to_string(&dlq).unwrap();
    assert_eq!(letters.lines().count(), 2);

    let again = dir.path().join("again.jsonl");
    let (status, summary) = run(
        &[
            "dlq",
            "replay",
            "--file",
            &dlq.display().to_string(),
            "--dlq-out",
            &again.display().to_string(),
        ],
        env(&[]),
    );
    assert!(
        summary.contains("read 2") && summary.contains("dead-lettered again 2"),
        "{summary}"
    );
    assert!(!status.success(), "letters that fail again are not done");
    assert_eq!(
        std::fs::read_to_string(&again).unwrap().lines().count(),
        2,
        "still bad, so dead-lettered again"
    );
}

/// Lines a signer (or a corrupted topic) could hold: valid tickets, bytes
/// that are not UTF-8, raw and escaped control characters, bidi and other
/// invisible format characters. The second element says whether the line
/// must be sent.
fn hostile_corpus() -> Vec<(Vec<u8>, bool)> {
    let ticket = |i: usize, auth: &str| {
        format!(
            r#"{{"id":"env-{i}","type":"create_signed_ticket","data":{{"request_id":"req-{i}","auth_id":"{auth}","computed_fee":"1000000000000","current_time":"2026-09-09T00:00:00Z"}}}}"#
        )
        .into_bytes()
    };
    let mut corpus = Vec::new();
    for i in 0..20 {
        corpus.push((ticket(i * 10, &format!("acme:user-{i}")), true));
        corpus.push((vec![0xff, 0xfe, b'{', 0x80, b'}'], false));
        let mut latin1 = ticket(i * 10 + 1, "acme:zo");
        latin1.insert(latin1.len() - 60, 0xeb);
        corpus.push((latin1, false));
        corpus.push((ticket(i * 10 + 2, "acme:a\\u0007b"), false));
        corpus.push((ticket(i * 10 + 3, "acme:a\u{7}b"), false));
        corpus.push((ticket(i * 10 + 4, "acme:\u{202E}ecilA"), false));
        corpus.push((ticket(i * 10 + 5, "acme:\\u202eecilA"), false));
        corpus.push((ticket(i * 10 + 6, "\u{2066}acme:bob\u{2069}"), false));
        corpus.push((ticket(i * 10 + 7, "acme:al\u{200B}ice"), false));
        corpus.push((ticket(i * 10 + 8, "\u{FEFF}acme:carol"), false));
        corpus.push((ticket(i * 10 + 9, "acme:zoë"), true));
    }
    corpus
}

#[test]
fn dry_run_over_stdin_gives_every_hostile_line_its_fate_and_exits_0() {
    use std::io::Write;
    let corpus = hostile_corpus();
    let mut input = Vec::new();
    for (line, _) in &corpus {
        input.extend_from_slice(line);
        input.push(b'\n');
    }
    let mut child = std::process::Command::new(support::binary::binary_path())
        .args(["replay", "--dry-run", "-"])
        .env_clear()
        .env("ETH_USD_PRICE", "3500")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "exit 0");
    let printed: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(printed.len(), corpus.len(), "one fate per line");
    for (i, ((_, sent), fate)) in corpus.iter().zip(&printed).enumerate() {
        let fate_is_event = fate.get("id").is_some();
        assert_eq!(fate_is_event, *sent, "line {}: {fate}", i + 1);
        if !sent {
            assert!(fate["dead_letter"].is_string(), "line {}: {fate}", i + 1);
        }
    }
    eprintln!(
        "dry run: {} lines, {} events, {} dead letters",
        corpus.len(),
        printed.iter().filter(|f| f.get("id").is_some()).count(),
        printed
            .iter()
            .filter(|f| f.get("dead_letter").is_some())
            .count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_dead_letters_exactly_what_the_real_replay_dead_letters() {
    let om = OpenMeter::bootstrapped(None).await;
    let dir = tempfile::tempdir().unwrap();
    let corpus_path = dir.path().join("corpus.jsonl");
    let mut input = Vec::new();
    for (line, _) in hostile_corpus() {
        input.extend_from_slice(&line);
        input.push(b'\n');
    }
    std::fs::write(&corpus_path, &input).unwrap();
    let corpus = corpus_path.display().to_string();
    let dlq = dir.path().join("dlq.jsonl");

    let dry = std::process::Command::new(support::binary::binary_path())
        .args(["replay", "--dry-run", &corpus])
        .env_clear()
        .env("ETH_USD_PRICE", "3500")
        .output()
        .unwrap();
    let dry_reasons: Vec<String> = String::from_utf8(dry.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["dead_letter"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();

    let real = tokio::process::Command::new(support::binary::binary_path())
        .args(["replay", &corpus])
        .env_clear()
        .env("OPENMETER_URL", om.url())
        .env("ETH_USD_PRICE", "3500")
        .env("DLQ_FILE", &dlq)
        .output()
        .await
        .unwrap();
    assert!(
        real.status.success(),
        "{}",
        String::from_utf8_lossy(&real.stderr)
    );
    let real_reasons: Vec<String> = std::fs::read_to_string(&dlq)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(real_reasons, dry_reasons);
}
