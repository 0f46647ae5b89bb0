//! Golden test: the shared fixtures through the real pipeline give exactly
//! `expected.jsonl` — the fields sent, the skips and the dead letters.

mod support;

use serde_json::Value;
use support::{fixtures, fixtures_dir, run_fixtures, OpenMeter};
use ticketmeter::deliver::Tally;
use ticketmeter::dlq::DeadLetterSink;

/// Every field the expectation names has exactly the expected value.
fn assert_subset(expected: &Value, actual: &Value, path: &str) {
    match expected {
        Value::Object(fields) => {
            for (k, v) in fields {
                assert_subset(v, &actual[k], &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(actual, expected, "{path}"),
    }
}

#[tokio::test]
async fn fixtures_through_the_pipeline_give_exactly_the_expected_results() {
    let om = OpenMeter::bootstrapped(None).await;
    let dlq = DeadLetterSink::memory();
    let (pipeline, settled) = run_fixtures(om.client(None), dlq.clone()).await;
    assert!(settled);

    let cases = fixtures();
    let sent = om.double.unique_events();
    let expected_events: Vec<&Value> = cases
        .iter()
        .map(|(_, x)| x)
        .filter(|x| x.get("id").is_some())
        .collect();
    assert_eq!(
        sent.len(),
        expected_events.len(),
        "exactly the expected events are sent"
    );
    for expected in &expected_events {
        let id = expected["id"].as_str().unwrap();
        let actual = sent
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("event {id} not sent"));
        assert_subset(expected, actual, id);
        assert_eq!(actual["specversion"], "1.0");
        assert_eq!(actual["data"]["eth_usd_price"], "3500");
    }

    let expected_dead: Vec<&str> = cases
        .iter()
        .filter_map(|(_, x)| x["dead_letter"].as_str())
        .collect();
    let dead: Vec<String> = dlq.kept().into_iter().map(|d| d.reason).collect();
    assert_eq!(dead, expected_dead);
    let tally = pipeline.tally();
    let skips = cases
        .iter()
        .filter(|(_, x)| x.get("skip").is_some())
        .count() as u64;
    assert_eq!(Tally::get(&tally.skipped), skips);
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

#[test]
fn dry_run_prints_the_expected_lines_without_network() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ticketmeter"))
        .args(["replay", "--dry-run"])
        .arg(fixtures_dir().join("signer-events.jsonl"))
        .env_clear()
        .env("ETH_USD_PRICE", "3500")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cases = fixtures();
    assert_eq!(printed.len(), cases.len());
    for ((_, expected), actual) in cases.iter().zip(&printed) {
        assert_subset(expected, actual, "line");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_replay_dead_letters_to_a_file_that_dlq_replay_reads_back() {
    let om = support::OpenMeter::bootstrapped(None).await;
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
        let mut b = support::Binary::spawn(args, &env);
        let status = b
            .wait(std::time::Duration::from_secs(60))
            .expect("finishes");
        (status, b.stderr())
    };
    let fixtures = fixtures_dir().join("signer-events.jsonl");
    let (_, stderr) = run(&["replay", &fixtures.display().to_string()], env(&[]));
    assert!(stderr.contains("dead-lettered 2"), "{stderr}");
    let letters = std::fs::read_to_string(&dlq).unwrap();
    assert_eq!(letters.lines().count(), 2);

    let again = dir.path().join("again.jsonl");
    let (_, stderr) = run(
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
        stderr.contains("read 2") && stderr.contains("dead-lettered 2"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&again).unwrap().lines().count(),
        2,
        "still bad, so dead-lettered again"
    );
}
