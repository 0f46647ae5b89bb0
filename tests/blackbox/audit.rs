//! `ticketmeter audit` over a JSON-lines source, through the real binary
//! (the CLI is the contract: flags, exit codes, the JSON shape), against
//! the OpenMeter double.

mod kafka;
mod totals;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use openmeter_double::Route;
use serde_json::Value;
use ticketmeter::{
    pipeline, DeadLetterSink, EnsureConfig, OffsetTracker, Pipeline, PipelineConfig, PriceFeed,
    Provisioner, UsdMicros,
};

use crate::support::double::{OpenMeter, PLAN};
use crate::support::fixtures::{fixtures, signed_now};
use crate::support::pipeline::run_lines;

/// A bootstrapped double, a work directory, and the fixtures as the signer
/// would sign them now (after their customers' subscriptions began).
struct Case {
    om: OpenMeter,
    _dir: tempfile::TempDir,
    events: PathBuf,
    dlq: PathBuf,
}

impl Case {
    async fn new() -> Self {
        let om = OpenMeter::bootstrapped(None).await;
        let dir = tempfile::tempdir().unwrap();
        let payloads: Vec<String> = fixtures().into_iter().map(|(e, _)| e).collect();
        om.ensure_customers_of(None, &payloads).await;
        // Subscriptions start in whole seconds: sign strictly after them.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let events = dir.path().join("events.jsonl");
        std::fs::write(&events, signed_now(&payloads).join("\n") + "\n").unwrap();
        let dlq = dir.path().join("dlq.jsonl");
        Self {
            om,
            _dir: dir,
            events,
            dlq,
        }
    }

    /// Rewrites the source with only the lines that decode to a billable
    /// ticket.
    fn keep_only_tickets(&self) {
        let contract = ticketmeter::Contract::default();
        let text = std::fs::read_to_string(&self.events).unwrap();
        let tickets: Vec<&str> = text
            .lines()
            .filter(|l| {
                matches!(
                    ticketmeter::decode(l.as_bytes(), 1 << 20, &contract),
                    Ok(ticketmeter::Decoded::Ticket(_))
                )
            })
            .collect();
        std::fs::write(&self.events, tickets.join("\n") + "\n").unwrap();
    }

    /// The pipeline sends the events (`ticketmeter replay`).
    async fn replay(&self, file: &Path) {
        let out = self.cli(&["replay", &file.display().to_string()]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn audit(&self, extra: &[&str]) -> Output {
        self.audit_with(extra, &[]).await
    }

    async fn audit_with(&self, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let events = self.events.display().to_string();
        let dlq = self.dlq.display().to_string();
        let mut args = vec![
            "audit",
            "--file",
            &events,
            "--dlq-file",
            &dlq,
            "--from",
            "10m",
        ];
        args.extend_from_slice(extra);
        self.cli_with(&args, env).await
    }

    async fn audit_json(&self, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["--format", "json"];
        if !extra.contains(&"--settle") {
            args.extend(["--settle", "0s"]);
        }
        args.extend_from_slice(extra);
        let out = self.audit(&args).await;
        let report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap_or(-1), report)
    }

    async fn cli(&self, args: &[&str]) -> Output {
        self.cli_with(args, &[]).await
    }

    async fn cli_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        ticketmeter(&self.om, &self.dlq, args, env)
            .output()
            .await
            .unwrap()
    }
}

/// The real binary with `args`, in a clean environment but for `env`,
/// against `om` at a price of 3500, its dead letters in `dlq`.
fn ticketmeter(
    om: &OpenMeter,
    dlq: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ticketmeter"));
    command
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .env("OPENMETER_URL", om.url())
        .env("ETH_USD_PRICE", "3500")
        .env("DLQ_FILE", dlq)
        .env("RUST_LOG", "warn");
    command
}

/// Longer than the `--settle 1s` the repair tests use, and than the
/// whole second subscriptions start in.
const SETTLE: Duration = Duration::from_millis(1100);

/// A ticket signed now for `auth_id`.
fn ticket(request_id: &str, auth_id: &str, fee_wei: &str) -> String {
    serde_json::json!({"id": format!("env-{request_id}"), "type": "create_signed_ticket", "timestamp": "1788912000000",
        "data": {"request_id": request_id, "auth_id": auth_id, "computed_fee": fee_wei,
                 "current_time": Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true), "pipeline": "live"}})
    .to_string()
}

/// An exact decimal from a JSON number or string.
fn micros_of(v: &Value) -> UsdMicros {
    v.as_str()
        .map_or_else(|| v.to_string(), str::to_owned)
        .parse()
        .unwrap()
}

/// How many fixture lines are dead-lettered.
fn fixture_dead_letters() -> usize {
    fixtures()
        .iter()
        .filter(|(_, x)| x.get("dead_letter").is_some())
        .count()
}

/// Ids and sums of the events the fixtures expect to be sent.
fn fixture_sums() -> (Vec<String>, u128, UsdMicros) {
    let expected: Vec<Value> = fixtures()
        .into_iter()
        .map(|(_, x)| x)
        .filter(|x| x.get("id").is_some())
        .collect();
    let ids = expected
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect();
    let wei = expected
        .iter()
        .map(|x| x["data"]["fee_wei"].to_string().parse::<u128>().unwrap())
        .sum();
    let micros = expected
        .iter()
        .map(|x| micros_of(&x["data"]["network_fee_usd_micros"]))
        .fold(UsdMicros::default(), |sum, m| sum.checked_add(m).unwrap());
    (ids, wei, micros)
}

fn ids_of(report: &Value, list: &str) -> Vec<String> {
    let mut ids: Vec<String> = report["customers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c[list].as_array().unwrap().clone())
        .map(|v| {
            v.as_str()
                .map_or_else(|| v["id"].as_str().unwrap().to_owned(), str::to_owned)
        })
        .collect();
    ids.sort();
    ids
}

/// Per signed id, how many stored events bill it (its own id or a repair copy).
fn billed_copies(om: &OpenMeter, id: &str) -> usize {
    om.double
        .unique_events()
        .iter()
        .filter(|e| e["id"] == id || e["data"]["original_id"] == id)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_has_nothing_missing_totals_equal_the_fixture_sums_and_exits_0() {
    let case = Case::new().await;
    case.replay(&case.events).await;
    let (code, report) = case.audit_json(&[]).await;
    assert_eq!(code, 0, "{report:#}");
    let (ids, wei, micros) = fixture_sums();
    let t = &report["totals"];
    assert_eq!(t["signed_events"], ids.len());
    assert_eq!(t["stored_events"], ids.len());
    assert_eq!(t["signed_fee_wei"], wei.to_string());
    assert_eq!(t["signed_usd_micros"], micros.to_string());
    for zero in [
        "missing_events",
        "unexpected_events",
        "duplicate_events",
        "unbillable_events",
    ] {
        assert_eq!(t[zero], 0, "{zero}");
    }
    assert_eq!(report["repairs"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_in_the_range_are_listed_with_reasons_and_are_not_missing() {
    let case = Case::new().await;
    case.replay(&case.events).await;
    let (code, report) = case.audit_json(&[]).await;
    assert_eq!(code, 0);
    assert_eq!(
        report["totals"]["dead_lettered_events"],
        fixture_dead_letters()
    );
    assert_eq!(report["totals"]["missing_events"], 0);
    let reasons: Vec<String> = report["customers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["dead_lettered"].as_array().unwrap().clone())
        .map(|d| d["reason"].as_str().unwrap().to_owned())
        .collect();
    let mut expected: Vec<String> = fixtures()
        .iter()
        .filter_map(|(_, x)| x["dead_letter"].as_str().map(str::to_owned))
        .collect();
    let mut reasons = reasons;
    reasons.sort();
    expected.sort();
    assert_eq!(reasons, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_swallowed_by_the_ingest_dedupe_are_named_repaired_once_and_then_clean() {
    let case = Case::new().await;
    case.om.double.swallow_next_ingests(1);
    case.replay(&case.events).await;
    let (ids, _, micros) = fixture_sums();
    assert!(
        case.om.double.unique_events().is_empty(),
        "the fault swallowed the batch"
    );

    let (code, report) = case.audit_json(&[]).await;
    assert_eq!(code, 1);
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(ids_of(&report, "missing"), expected);

    // Only events older than the settle time count as missing.
    tokio::time::sleep(SETTLE).await;
    let (code, repaired) = case.audit_json(&["--repair", "--settle", "1s"]).await;
    assert_eq!(code, 0, "{repaired:#}");
    let actions: Vec<&str> = repaired["repairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["resent_derived"; ids.len()]);

    let (code, again) = case.audit_json(&[]).await;
    assert_eq!(code, 0, "{again:#}");
    assert_eq!(again["totals"]["missing_events"], 0);
    for id in &ids {
        assert_eq!(billed_copies(&case.om, id), 1, "{id} billed once");
    }
    let stored_micros = case
        .om
        .double
        .unique_events()
        .iter()
        .map(|e| micros_of(&e["data"]["network_fee_usd_micros"]))
        .fold(UsdMicros::default(), |sum, m| sum.checked_add(m).unwrap());
    assert_eq!(stored_micros, micros);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_repair_sends_nothing_more() {
    let case = Case::new().await;
    case.om.double.swallow_next_ingests(1);
    case.replay(&case.events).await;
    tokio::time::sleep(SETTLE).await;
    let (code, first) = case.audit_json(&["--repair", "--settle", "1s"]).await;
    assert_eq!(code, 0);
    let (ids, _, _) = fixture_sums();
    assert_eq!(first["repairs"].as_array().map(Vec::len), Some(ids.len()));
    let ingests = case.om.double.calls(Route::IngestEvents);
    let (code, report) = case.audit_json(&["--repair", "--settle", "1s"]).await;
    assert_eq!(code, 0);
    assert_eq!(report["repairs"], serde_json::json!([]));
    assert_eq!(case.om.double.calls(Route::IngestEvents), ingests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_lists_the_repairs_and_sends_nothing() {
    let case = Case::new().await;
    case.om.double.swallow_next_ingests(1);
    case.replay(&case.events).await;
    let ingests = case.om.double.calls(Route::IngestEvents);
    let (code, report) = case.audit_json(&["--repair", "--dry-run"]).await;
    assert_eq!(code, 1);
    let (ids, _, _) = fixture_sums();
    let repairs = report["repairs"].as_array().unwrap();
    assert_eq!(repairs.len(), ids.len());
    assert!(repairs
        .iter()
        .all(|r| r["action"] == "would_resend" && r["sent_as"] == r["id"]));
    assert_eq!(case.om.double.calls(Route::IngestEvents), ingests);
}

/// A collector whose ensure cache outlives the customer (the same process
/// for both runs).
fn collector(om: &OpenMeter, dlq: &Path) -> Pipeline {
    let provisioner = Provisioner::new(
        om.client(None),
        PLAN.parse().unwrap(),
        EnsureConfig::default(),
    );
    pipeline(
        provisioner,
        DeadLetterSink::file(dlq),
        Arc::new(OffsetTracker::default()),
        PriceFeed::fixed("3500".parse().unwrap()),
        PipelineConfig::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_deleted_behind_the_cache_is_reported_then_re_ensured_and_re_sent() {
    let case = Case::new().await;
    let customer = "gone-client:gone-user";
    let pipeline = collector(&case.om, &case.dlq);
    case.om
        .ensure_customers_of(None, &[ticket("x", customer, "1")])
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let first = vec![ticket("gone-1", customer, "1000000000000")];
    run_lines(&pipeline, &first).await;
    assert!(case.om.double.vanish_customer(customer));
    let second = vec![ticket("gone-2", customer, "2000000000000")];
    run_lines(&pipeline, &second).await;
    std::fs::write(&case.events, [first, second].concat().join("\n") + "\n").unwrap();

    let (code, report) = case.audit_json(&[]).await;
    assert_eq!(code, 1);
    let row = report["customers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["customer"] == customer)
        .unwrap()
        .clone();
    assert_eq!(row["stored_events"], 2);
    for u in row["unbillable"].as_array().unwrap() {
        assert!(
            u["reason"]
                .as_str()
                .unwrap()
                .starts_with("no customer found for event subject"),
            "{u}"
        );
    }
    assert_eq!(row["unbillable"].as_array().unwrap().len(), 2);

    let before = case.om.double.customers().len();
    // The new subscription starts strictly after the events were signed.
    tokio::time::sleep(SETTLE).await;
    let (code, repaired) = case.audit_json(&["--repair", "--settle", "1s"]).await;
    assert_eq!(code, 0, "{repaired:#}");
    assert_eq!(
        case.om.double.customers().len(),
        before + 1,
        "the customer is ensured again"
    );
    let (code, again) = case.audit_json(&[]).await;
    assert_eq!(code, 0, "{again:#}");
    for id in ["env-gone-1", "env-gone-2"] {
        assert_eq!(
            billed_copies(&case.om, id),
            2,
            "{id}: the unbillable original and one billable copy"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_and_table_carry_the_same_totals() {
    let case = Case::new().await;
    case.replay(&case.events).await;
    let (ids, wei, micros) = fixture_sums();
    let (n, dead) = (ids.len(), fixture_dead_letters());
    let csv = case.audit(&["--format", "csv", "--settle", "0s"]).await;
    assert!(csv.status.success());
    let text = String::from_utf8(csv.stdout).unwrap();
    let total = text.lines().find(|l| l.starts_with("TOTAL,")).unwrap();
    assert!(
        total.starts_with(&format!(
            "TOTAL,{n},{wei},{micros},{n},{wei},{micros},0,0,0,0,{dead},0"
        )),
        "{total}"
    );
    let table = case.audit(&["--settle", "0s"]).await;
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.contains(&wei.to_string()) && text.contains("result: clean"),
        "{text}"
    );
}

#[tokio::test]
async fn an_audit_that_cannot_read_its_source_exits_2() {
    let case = Case::new().await;
    let out = case
        .cli(&[
            "audit",
            "--file",
            "/nonexistent/events.jsonl",
            "--from",
            "1h",
            "--format",
            "json",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/events.jsonl"));
    let out = case.cli(&["audit", "--file", "x", "--from", "soon"]).await;
    assert_eq!(out.status.code(), Some(2));
}

/// The fixture events as the pipeline maps them, as JSON values.
fn mapped_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let contract = ticketmeter::Contract::default();
            match ticketmeter::decode(l.as_bytes(), 1 << 20, &contract) {
                Ok(ticketmeter::Decoded::Ticket(t)) => {
                    let mapped = ticketmeter::map(*t, &"3500".parse().unwrap(), &contract);
                    Some(serde_json::to_value(&mapped.event).unwrap())
                }
                _ => None,
            }
        })
        .collect()
}

async fn ingest(om: &OpenMeter, events: &[Value]) {
    om.client(None)
        .ingest_batch(serde_json::to_vec(events).unwrap().into())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_with_a_later_time_are_matched_by_id_and_their_signed_time() {
    let case = Case::new().await;
    let later =
        (Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let moved: Vec<Value> = mapped_events(&case.events)
        .into_iter()
        .map(|mut e| {
            e["data"]["signed_at"] = e["time"].clone();
            e["time"] = Value::String(later.clone());
            e
        })
        .collect();
    ingest(&case.om, &moved).await;
    // Sent by another tool, so nothing was dead-lettered: the source keeps
    // only the tickets (a source record that decodes to a dead letter with
    // no dead-letter file would stop the audit).
    case.keep_only_tickets();
    let (code, report) = case.audit_json(&[]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["totals"]["stored_events"], moved.len());
    assert_eq!(report["totals"]["missing_events"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_event_no_source_record_explains_is_unexpected_but_not_a_failure() {
    let case = Case::new().await;
    case.replay(&case.events).await;
    let mut stranger = mapped_events(&case.events).remove(0);
    stranger["id"] = Value::String("not-from-the-signer".into());
    ingest(&case.om, &[stranger]).await;
    let (code, report) = case.audit_json(&[]).await;
    assert_eq!(code, 0);
    assert_eq!(report["totals"]["unexpected_events"], 1);
    let table = case.audit(&["--settle", "0s"]).await;
    assert!(String::from_utf8_lossy(&table.stdout).contains("not-from-the-signer"));
}

/// Half the range sent under the original's `request_id` ids (a cut-over
/// from the original stack), half under envelope ids: the audit matches
/// both halves, nothing missing, nothing unexpected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_spanning_an_event_id_cut_over_reports_the_old_ids_as_matched() {
    let case = Case::new().await;
    let lines: Vec<String> = std::fs::read_to_string(&case.events)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let (before, after) = lines.split_at(lines.len() / 2);
    let half = |name: &str, lines: &[String]| {
        let path = case._dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path.display().to_string()
    };
    let (before, after) = (half("before.jsonl", before), half("after.jsonl", after));
    let old_ids = case
        .cli_with(&["replay", &before], &[("EVENT_ID", "request_id")])
        .await;
    assert!(old_ids.status.success());
    case.replay(Path::new(&after)).await;
    assert!(
        case.om
            .double
            .unique_events()
            .iter()
            .any(|e| e["id"] == "a1b2c3d4"),
        "the first half went under request ids"
    );

    let (code, report) = case.audit_json(&[]).await;
    assert_eq!(code, 0, "{report:#}");
    let (ids, _, micros) = fixture_sums();
    let t = &report["totals"];
    assert_eq!(t["stored_events"], ids.len(), "{report:#}");
    assert_eq!(t["missing_events"], 0);
    assert_eq!(t["unexpected_events"], 0);
    assert_eq!(t["signed_usd_micros"], micros.to_string());
}

/// Rounded per ticket (`USD_MICROS=rounded`), each customer's invoice
/// differs from what was signed; the audit says by how much.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_rounded_micros_the_audit_reports_each_customers_rounding_drift() {
    let case = Case::new().await;
    let events = case.events.display().to_string();
    let rounded = [("USD_MICROS", "rounded")];
    assert!(case
        .cli_with(&["replay", &events], &rounded)
        .await
        .status
        .success());
    let out = case
        .audit_with(&["--settle", "0s", "--format", "json"], &rounded)
        .await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let drift = |customer: &str| {
        report["customers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["customer"] == customer)
            .map(|c| c["rounding_drift_usd_micros"].as_str().unwrap().to_owned())
            .unwrap()
    };
    // 333333333333 wei at 3500: 1166.6666666655 signed, 1167 sent.
    assert_eq!(drift("acme:user:with:colons"), "0.3333333345");
    // 1 wei: 0.0000000035 signed, 0 sent.
    assert_eq!(drift("session_12345678"), "-0.0000000035");
    assert_eq!(drift("big:spender"), "0.123845681");

    let (_, exact) = case.audit_json(&[]).await;
    assert_eq!(exact["totals"]["rounding_drift_usd_micros"], "0");
}
