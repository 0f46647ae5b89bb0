//! What an operator sees when a connection fails: one-shot commands end and
//! say what they did not do, a broken connection is named once (in the log
//! and in `/ready`), and every message is written for people.

use std::process::ExitStatus;
use std::time::Duration;

use serde_json::Value;

use crate::support::binary::{binary_path, collector_env, Binary};
use crate::support::double::{OpenMeter, TOKEN};
use crate::support::{eventually, free_port};

/// The bundled sample: 25 lines, 21 billable tickets, one other event
/// type, three that are dead-lettered.
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sample-events.jsonl");

/// Every one-shot command here ends well within this (it used to hang).
const ENDS_WITHIN: Duration = Duration::from_secs(60);

/// A finished command.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// What it printed, both streams.
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn ran(args: &[&str], env: &[(&str, String)]) -> Ran {
    let mut binary = Binary::spawn(args, env);
    let status = binary
        .wait(ENDS_WITHIN)
        .unwrap_or_else(|| panic!("`ticketmeter {}` ends by itself", args.join(" ")));
    Ran {
        status,
        stdout: binary.stdout(),
        stderr: binary.stderr(),
    }
}

/// A loopback URL nothing listens on.
fn nowhere() -> String {
    format!("http://127.0.0.1:{}/api/v3", free_port())
}

/// What no operator should have to read: Debug formatting, internal call
/// names, percent-encoded queries, colour codes.
fn assert_for_people(text: &str) {
    for internal in [
        "FindCustomer",
        "ResolvePlan",
        "PlanKey(",
        "Some(",
        "Ok(",
        "Failed(",
        "%5B",
        "\u{1b}[",
    ] {
        assert!(!text.contains(internal), "{internal:?} in:\n{text}");
    }
}

fn replay_env(url: String, dir: &tempfile::TempDir) -> Vec<(&'static str, String)> {
    vec![
        ("OPENMETER_URL", url),
        ("ETH_USD_PRICE", "3500".to_owned()),
        (
            "DLQ_FILE",
            dir.path().join("dlq.jsonl").display().to_string(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_with_a_refused_token_ends_and_counts_the_events_it_did_not_send() {
    let om = OpenMeter::bootstrapped(Some(TOKEN)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = replay_env(om.url(), &dir);
    env.push(("OPENMETER_API_KEY", "not-the-token".to_owned()));

    let replay = ran(&["replay", SAMPLE], &env);

    assert_eq!(replay.status.code(), Some(1), "{}", replay.all());
    assert!(
        replay
            .stdout
            .starts_with("read 25, delivered 0, skipped 1, dead-lettered 3 (see ")
            && replay.stdout.contains("), not sent 21\n"),
        "{}",
        replay.all()
    );
    assert!(
        replay
            .stdout
            .contains("stopped: OpenMeter refused the API token")
            && replay.stdout.contains("check OPENMETER_API_KEY"),
        "{}",
        replay.all()
    );
    assert_eq!(
        replay.all().matches("refused the API token").count(),
        1,
        "the cause, once:\n{}",
        replay.all()
    );
    assert_for_people(&replay.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_before_bootstrap_ends_and_says_to_run_bootstrap() {
    let om = OpenMeter::start(None).await;
    let dir = tempfile::tempdir().unwrap();

    let replay = ran(&["replay", SAMPLE], &replay_env(om.url(), &dir));

    assert_eq!(replay.status.code(), Some(1), "{}", replay.all());
    assert!(replay.stdout.contains("not sent 21"), "{}", replay.all());
    assert!(
        replay.stdout.contains(
            "stopped: plan clearinghouse_default_ppu has no version active now in OpenMeter: \
             run `ticketmeter bootstrap`"
        ),
        "{}",
        replay.all()
    );
    assert_for_people(&replay.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_against_an_unreachable_openmeter_ends_and_names_where_it_tried() {
    let dir = tempfile::tempdir().unwrap();
    let url = nowhere();

    let replay = ran(&["replay", SAMPLE], &replay_env(url.clone(), &dir));

    assert_eq!(replay.status.code(), Some(1), "{}", replay.all());
    assert!(replay.stdout.contains("not sent 21"), "{}", replay.all());
    assert!(
        replay.stdout.contains(&format!(
            "stopped: OpenMeter unreachable (list customers): cannot connect to {url}/openmeter/customers: "
        )),
        "the URL without its query, and the cause:\n{}",
        replay.all()
    );
    assert!(!replay.stderr.contains("retrying"), "{}", replay.stderr);
    assert_for_people(&replay.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_replay_whose_letters_fail_again_says_so_exits_1_and_never_writes_a_letter_twice() {
    let om = OpenMeter::bootstrapped(None).await;
    let dir = tempfile::tempdir().unwrap();
    let env = replay_env(om.url(), &dir);
    let letters = dir.path().join("dlq.jsonl").display().to_string();
    let again = format!("{letters}.again.jsonl");
    let replay = ran(&["replay", SAMPLE], &env);
    assert!(replay.status.success(), "{}", replay.all());

    let first = ran(&["dlq", "replay", "--file", &letters], &env);
    let second = ran(&["dlq", "replay", "--file", &letters], &env);

    for run in [&first, &second] {
        assert_eq!(run.status.code(), Some(1), "{}", run.all());
        assert!(
            run.stdout.starts_with(&format!(
                "read 3 dead letter(s) from {letters}: delivered 0, skipped 0, dead-lettered again 3, not replayed 0\n\
                 3 dead letter(s) failed again (their reasons are in {again}"
            )),
            "{}",
            run.all()
        );
        assert_for_people(&run.all());
    }
    assert!(
        second.stdout.contains(
            "3 of them were there already, from an earlier replay, and were not written twice"
        ),
        "{}",
        second.all()
    );
    let kept = std::fs::read_to_string(&again).unwrap();
    assert_eq!(kept.lines().count(), 3, "{kept}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_replay_from_unreachable_brokers_fails_naming_kafka_brokers() {
    let om = OpenMeter::bootstrapped(None).await;
    let brokers = format!("127.0.0.1:{}", free_port());
    let env = collector_env(&brokers, "nowhere-events", &om.url(), free_port());

    let replay = ran(&["dlq", "replay"], &env);

    assert_eq!(replay.status.code(), Some(1), "{}", replay.all());
    assert!(
        replay.stderr.contains(&format!(
            "error: cannot reach the Kafka brokers {brokers} (KAFKA_BROKERS)"
        )),
        "{}",
        replay.all()
    );
    assert!(!replay.stdout.contains("replayed"), "{}", replay.all());
    assert!(
        replay.stderr.lines().count() <= 3,
        "named once, not relayed from librdkafka:\n{}",
        replay.stderr
    );
    assert_for_people(&replay.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_against_a_wrong_url_path_points_at_openmeter_url_and_counts_what_it_left_undone()
{
    let om = OpenMeter::start(None).await;
    let wrong_path = om.url().replace("/api/v3", "/openmeter-api");

    let bootstrap = ran(&["bootstrap"], &[("OPENMETER_URL", wrong_path)]);

    assert_eq!(bootstrap.status.code(), Some(1), "{}", bootstrap.all());
    assert!(
        bootstrap
            .stdout
            .starts_with("stopped: OpenMeter list meters failed: HTTP 404")
            && bootstrap.stdout.contains("(check OPENMETER_URL")
            && bootstrap
                .stdout
                .ends_with("10 of 10 catalog objects not checked or created\n"),
        "{}",
        bootstrap.all()
    );
    assert!(!bootstrap.stdout.contains("nothing to do"));
    assert_for_people(&bootstrap.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_with_a_refused_token_says_so_and_not_that_there_is_nothing_to_do() {
    let om = OpenMeter::start(Some(TOKEN)).await;
    let env = [
        ("OPENMETER_URL", om.url()),
        ("OPENMETER_API_KEY", "not-the-token".to_owned()),
    ];

    let bootstrap = ran(&["bootstrap"], &env);

    assert_eq!(bootstrap.status.code(), Some(1), "{}", bootstrap.all());
    assert!(
        bootstrap
            .stdout
            .starts_with("stopped: OpenMeter refused the API token"),
        "{}",
        bootstrap.all()
    );
    assert!(!bootstrap.stdout.contains("nothing to do"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_against_unreachable_services_names_each_once_and_checks_nothing_twice() {
    let brokers = format!("127.0.0.1:{}", free_port());
    let url = nowhere();
    let env = collector_env(&brokers, "check-events", &url, free_port());

    let check = ran(&["check"], &env);

    assert_eq!(check.status.code(), Some(1), "{}", check.all());
    let lines: Vec<&str> = check.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", check.all());
    assert_eq!(lines[0], "✓ ETH/USD price: 3500");
    assert!(
        lines[1].starts_with(
            "✗ OpenMeter token and default plan clearinghouse_default_ppu: OpenMeter unreachable (list plans): cannot connect to "
        ),
        "{}",
        check.all()
    );
    assert_eq!(
        lines[2],
        "✗ the rest of OpenMeter (plans, catalog meters): not checked: OpenMeter did not answer the check above"
    );
    assert!(
        lines[3].starts_with(&format!(
            "✗ Kafka {brokers} topic check-events: cannot reach the Kafka brokers {brokers} (KAFKA_BROKERS)"
        )),
        "{}",
        check.all()
    );
    assert!(!check.stderr.contains("retrying"), "{}", check.stderr);
    assert_for_people(&check.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_with_a_missing_dead_letter_file_does_not_call_the_range_clean() {
    let om = OpenMeter::bootstrapped(None).await;
    let env = [
        ("OPENMETER_URL", om.url()),
        ("ETH_USD_PRICE", "3500".to_owned()),
    ];

    let audit = ran(
        &[
            "audit",
            "--file",
            SAMPLE,
            "--from",
            "2026-11-24T09:00:00Z",
            "--dlq-file",
            "nope.jsonl",
        ],
        &env,
    );

    assert_eq!(
        audit.status.code(),
        Some(2),
        "could not run:\n{}",
        audit.all()
    );
    assert!(
        audit.stderr.contains(&format!(
            "error: the dead-letter file nope.jsonl does not exist, but 3 record(s) of {SAMPLE} decode to a dead letter"
        )),
        "{}",
        audit.all()
    );
    assert!(!audit.stdout.contains("clean"), "{}", audit.all());
}

/// GETs `/ready` until `holds` says yes (or a minute passed); the last body.
async fn ready_until(port: u16, holds: impl Fn(&Value) -> bool) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{port}/ready");
    let mut last = (0, Value::Null);
    for _ in 0..600 {
        if let Ok(response) = reqwest::get(&url).await {
            let status = response.status().as_u16();
            last = (status, response.json().await.unwrap_or(Value::Null));
            if holds(&last.1) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

fn problems(body: &Value) -> Vec<String> {
    body["problems"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_unreachable_brokers_names_kafka_brokers_once_and_ready_says_why() {
    let om = OpenMeter::bootstrapped(Some(TOKEN)).await;
    let brokers = format!("127.0.0.1:{}", free_port());
    let port = free_port();
    let mut collector = Binary::spawn(&["run"], &collector_env(&brokers, "t", &om.url(), port));

    let (status, body) = ready_until(port, |b| {
        problems(b)
            .iter()
            .any(|p| p.starts_with("Kafka brokers unreachable"))
    })
    .await;
    // Long enough for librdkafka to retry the connection many times.
    tokio::time::sleep(Duration::from_secs(5)).await;
    collector.terminate(Duration::from_secs(30));
    let log = collector.stderr();

    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["openmeter"], true, "{body}");
    assert!(
        problems(&body)
            .iter()
            .any(|p| p.contains("Kafka brokers unreachable since ")
                && p.contains("(check KAFKA_BROKERS)")),
        "{body}"
    );
    assert_eq!(
        log.lines().filter(|l| l.contains("KAFKA_BROKERS")).count(),
        1,
        "named once:\n{log}"
    );
    assert!(
        log.lines().count() <= 12,
        "librdkafka's retries are not relayed one by one:\n{log}"
    );
    assert_for_people(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_a_refused_token_says_so_at_start_up_and_in_ready() {
    let om = OpenMeter::bootstrapped(Some(TOKEN)).await;
    let brokers = format!("127.0.0.1:{}", free_port());
    let port = free_port();
    let mut env = collector_env(&brokers, "t", &om.url(), port);
    env.retain(|(k, _)| *k != "OPENMETER_API_KEY");
    env.push(("OPENMETER_API_KEY", "not-the-token".to_owned()));
    let mut collector = Binary::spawn(&["run"], &env);

    let (status, body) = ready_until(port, |b| b["checks"]["openmeter"] == false).await;
    assert!(
        eventually(Duration::from_secs(30), || collector
            .stderr()
            .contains("OpenMeter cannot bill yet"))
        .await,
        "{}",
        collector.stderr()
    );
    collector.terminate(Duration::from_secs(30));
    let log = collector.stderr();

    assert_eq!(status, 503, "{body}");
    assert!(
        problems(&body)
            .iter()
            .any(|p| p.starts_with("OpenMeter refused the API token")
                && p.contains("check OPENMETER_API_KEY")),
        "{body}"
    );
    let said = log
        .lines()
        .find(|l| l.contains("OpenMeter cannot bill yet"))
        .unwrap_or_default();
    assert!(
        said.contains("ERROR") && said.contains("check OPENMETER_API_KEY"),
        "{log}"
    );
    assert_for_people(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_is_not_ready_while_openmeter_is_unreachable_and_says_why_without_encoded_urls() {
    let url = nowhere();
    let port = free_port();
    let env = [
        ("OPENMETER_URL", url.clone()),
        ("PROVISION_PORT", port.to_string()),
    ];
    let _serve = Binary::spawn(&["serve"], &env);

    let (status, body) = ready_until(port, |b| !b.is_null()).await;
    let ensure = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/ensure"))
        .body(r#"{"auth_id":"acme:alice"}"#)
        .send()
        .await
        .unwrap();
    let ensure_status = ensure.status().as_u16();
    let answer: Value = ensure.json().await.unwrap();

    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["openmeter"], false, "{body}");
    assert!(
        problems(&body)
            .iter()
            .any(|p| p.starts_with("OpenMeter unreachable (list plans): cannot connect to ")),
        "{body}"
    );
    assert_eq!(ensure_status, 503, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("OpenMeter unreachable (list customers): cannot connect to ")
            && error.contains(&format!("{url}/openmeter/customers:")),
        "{answer}"
    );
    assert_for_people(&body.to_string());
    assert_for_people(error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_an_open_bind_before_kafka_is_contacted() {
    let om = OpenMeter::bootstrapped(None).await;
    let brokers = format!("127.0.0.1:{}", free_port());
    let mut env = collector_env(&brokers, "t", &om.url(), free_port());
    env.push(("PROVISION_BIND", "0.0.0.0".to_owned()));

    let run = ran(&["run"], &env);

    assert_eq!(run.status.code(), Some(1), "{}", run.all());
    assert!(run.stderr.contains("set PROVISION_TOKEN"), "{}", run.all());
    assert!(
        !run.stderr.contains("Kafka") && !run.stderr.contains("librdkafka"),
        "Kafka not started:\n{}",
        run.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_a_dry_run_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let sample = std::fs::read_to_string(SAMPLE).unwrap();
    // Far more than a pipe holds, so the writer meets the closed pipe.
    let big = dir.path().join("big.jsonl");
    std::fs::write(&big, sample.repeat(400)).unwrap();
    let script = format!(
        "'{}' replay --dry-run '{}' 2>&1 | head -1 >/dev/null; echo \"${{PIPESTATUS[0]}}\"",
        binary_path().display(),
        big.display()
    );

    let out = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .env_clear()
        .env("ETH_USD_PRICE", "3500")
        .output()
        .await
        .unwrap();

    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "ticketmeter's exit status; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
