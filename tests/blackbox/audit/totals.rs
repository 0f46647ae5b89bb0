//! `audit` in its default totals mode, on tickets signed at chosen times in
//! the past (customers subscribed long before): what it proves by the
//! meters' totals alone, how it descends where they differ, and what the
//! totals can and cannot see.
//!
//! The tickets are sent weeks after they were signed, after their billing
//! periods were collected; [`COLLECTION`] keeps those periods open, as they
//! were for tickets sent in time (when usage arrives is not what these
//! tests are about, and the totals cannot see it: `docs/operations.md`).

use std::path::PathBuf;
use std::process::Output;

use chrono::{DateTime, Utc};
use openmeter_double::Route;
use serde_json::{json, Value};

use super::{ids_of, ticketmeter};
use crate::support::double::OpenMeter;

/// Every customer's subscription starts here, long before the tickets.
const SUBSCRIBED: &str = "2026-09-01T00:00:00Z";
/// 1,200,000,000,000 wei at 3500 USD/ETH: 4200 µUSD.
const FEE: &str = "1200000000000";
/// OpenMeter's collection interval, as `BILLING_COLLECTION_WINDOW`.
const COLLECTION: (&str, &str) = ("BILLING_COLLECTION_WINDOW", "3650days");

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A ticket of `auth_id` signed at `time`, with envelope id `id` and
/// request id `r-<id>`.
fn ticket(id: &str, auth_id: &str, time: &str) -> String {
    json!({"id": id, "type": "create_signed_ticket",
        "data": {"request_id": format!("r-{id}"), "auth_id": auth_id, "computed_fee": FEE,
                 "current_time": time, "pipeline": "live"}})
    .to_string()
}

/// A bootstrapped double whose customers of `tickets` were subscribed on
/// [`SUBSCRIBED`], and the tickets' source file.
struct Range {
    om: OpenMeter,
    dir: tempfile::TempDir,
    source: PathBuf,
}

impl Range {
    async fn new(tickets: &[String]) -> Self {
        let om = OpenMeter::bootstrapped(None).await;
        om.ensure_customers_of(None, tickets).await;
        for s in om.double.subscriptions() {
            om.double
                .start_subscription_at(&s.id, t(SUBSCRIBED))
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("signed.jsonl");
        std::fs::write(&source, tickets.join("\n") + "\n").unwrap();
        om.double.reset_counters();
        Self { om, dir, source }
    }

    /// `ticketmeter replay` of `tickets`, with `env`.
    async fn send(&self, tickets: &[String], env: &[(&str, &str)]) {
        let file = self
            .dir
            .path()
            .join(format!("send-{}.jsonl", rand_suffix()));
        std::fs::write(&file, tickets.join("\n") + "\n").unwrap();
        let out = self
            .cli(&["replay", &file.display().to_string()], env)
            .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ticketmeter audit` of `[from, to)` as JSON, with `extra` flags.
    async fn audit(&self, from: &str, to: &str, extra: &[&str]) -> (i32, Value) {
        let source = self.source.display().to_string();
        let dlq = self.dir.path().join("none.jsonl").display().to_string();
        let mut args = vec![
            "audit",
            "--file",
            &source,
            "--dlq-file",
            &dlq,
            "--from",
            from,
            "--to",
            to,
            "--settle",
            "0s",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = self.cli(&args, &[]).await;
        let report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap_or(-1), report)
    }

    async fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let dlq = self.dir.path().join("dlq.jsonl");
        ticketmeter(&self.om, &dlq, args, env)
            .env(COLLECTION.0, COLLECTION.1)
            .output()
            .await
            .unwrap()
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// `(window, compared, differing)` of each level the proof went through.
fn levels(report: &Value) -> Vec<(String, u64, u64)> {
    report["proof"]["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["window"].as_str().unwrap().to_owned(),
                l["compared"].as_u64().unwrap(),
                l["differing"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Tickets either side of a month's and a day's edge, for two customers.
fn edges() -> Vec<String> {
    vec![
        ticket("oct-last", "acme:alice", "2026-10-31T23:59:59.900Z"),
        ticket("nov-first", "acme:alice", "2026-11-01T00:00:00Z"),
        ticket("day-last", "acme:alice", "2026-11-10T23:59:59Z"),
        ticket("day-first", "acme:alice", "2026-11-11T00:00:00.100Z"),
        ticket("bob-1", "acme:bob", "2026-11-11T00:00:00.200Z"),
        ticket("bob-2", "acme:bob", "2026-11-20T12:00:00Z"),
    ]
}

const FROM: &str = "2026-10-15T00:00:00Z";
const TO: &str = "2026-11-25T00:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_range_is_proven_by_its_month_totals_without_reading_an_event() {
    let tickets = edges();
    let range = Range::new(&tickets).await;
    range.send(&tickets, &[]).await;

    let (code, report) = range.audit(FROM, TO, &[]).await;

    assert_eq!(code, 0, "{report:#}");
    assert_eq!(levels(&report), [("month".to_owned(), 3, 0)], "{report:#}");
    assert_eq!(report["totals"]["signed_events"], 6);
    assert_eq!(report["totals"]["stored_events"], 6);
    assert_eq!(report["proof"]["events_proven"], 6);
    assert_eq!(range.om.double.calls(Route::ListEvents), 0);
    assert_eq!(range.om.double.calls(Route::QueryMeter), 3, "one per meter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ticket_is_found_month_day_hour_minute_and_named_missing() {
    let tickets = edges();
    let range = Range::new(&tickets).await;
    range.om.double.lose_event_ids(&["day-first"]);
    range.send(&tickets, &[]).await;

    let (code, report) = range.audit(FROM, TO, &[]).await;

    assert_eq!(code, 1, "{report:#}");
    assert_eq!(ids_of(&report, "missing"), ["day-first"]);
    // Alice's November differs (her October and Bob's November do not);
    // of its three days with tickets only the 11th, of that day's hours
    // only midnight, of that hour's minutes only the first.
    assert_eq!(
        levels(&report),
        [
            ("month".to_owned(), 3, 1),
            ("day".to_owned(), 3, 1),
            ("hour".to_owned(), 1, 1),
            ("minute".to_owned(), 1, 1),
        ],
        "{report:#}"
    );
    assert_eq!(report["proof"]["events_proven"], 5);
    assert_eq!(report["totals"]["signed_events"], 6);
    assert_eq!(report["totals"]["stored_events"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_second_of_a_month_is_told_from_the_first_of_the_next() {
    let tickets = edges();
    let range = Range::new(&tickets).await;
    range.om.double.lose_event_ids(&["oct-last"]);
    range.send(&tickets, &[]).await;

    let (code, report) = range.audit(FROM, TO, &[]).await;

    assert_eq!(code, 1);
    assert_eq!(ids_of(&report, "missing"), ["oct-last"]);
    let months = &levels(&report)[0];
    assert_eq!(months, &("month".to_owned(), 3, 1), "October only");
    assert_eq!(report["proof"]["events_matched"], 1, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_second_of_a_day_is_told_from_the_first_of_the_next() {
    let tickets = edges();
    let range = Range::new(&tickets).await;
    range.om.double.lose_event_ids(&["day-last"]);
    range.send(&tickets, &[]).await;

    let (code, report) = range.audit(FROM, TO, &[]).await;

    assert_eq!(code, 1);
    assert_eq!(ids_of(&report, "missing"), ["day-last"]);
    assert_eq!(
        levels(&report)[1],
        ("day".to_owned(), 3, 1),
        "the 10th only"
    );
    assert_eq!(report["proof"]["events_matched"], 1, "{report:#}");
}

/// Carol subscribes at 10:00:59.400: her ticket signed at 10:00:58 is
/// sent at 10:01:00, the next minute. The audit places it there, reads
/// that minute (a moved ticket is never proven by totals alone) and finds
/// it billed; sent at its signed time instead, it is named unbillable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_moved_across_a_minute_edge_is_matched_where_it_was_billed() {
    let early = ticket("early", "acme:carol", "2026-11-05T10:00:58Z");
    let later = ticket("later", "acme:carol", "2026-11-05T10:02:00Z");
    let tickets = vec![early.clone(), later.clone()];
    let range = Range::new(&tickets).await;
    for s in range.om.double.subscriptions() {
        range
            .om
            .double
            .start_subscription_at(&s.id, t("2026-11-05T10:00:59.400Z"))
            .unwrap();
    }
    range.send(&tickets, &[]).await;
    let stored = range.om.double.unique_events();
    let moved = stored.iter().find(|e| e["id"] == "early").unwrap();
    assert_eq!(moved["time"], "2026-11-05T10:01:00Z");

    let (code, report) = range.audit(FROM, TO, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["totals"]["stored_events"], 2);
    assert_eq!(report["proof"]["events_matched"], 1, "{report:#}");

    let signed_time = Range::new(&tickets).await;
    for s in signed_time.om.double.subscriptions() {
        signed_time
            .om
            .double
            .start_subscription_at(&s.id, t("2026-11-05T10:00:59.400Z"))
            .unwrap();
    }
    signed_time
        .send(&tickets, &[("EVENT_TIME", "signed")])
        .await;
    let (code, report) = signed_time.audit(FROM, TO, &[]).await;
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(ids_of(&report, "unbillable"), ["early"]);
}

/// Dan's ticket `a` is lost in ingest, and his ticket `b`, of the same
/// fee and minute, is stored twice (under its envelope id and, as the
/// original stack sent it, its request id): count and µUSD cancel out.
/// The id fingerprints do not; without them the report says what the
/// totals could have missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ticket_and_another_stored_twice_cancel_in_count_and_sum_but_not_in_fingerprints() {
    let a = ticket("a", "acme:dan", "2026-11-07T08:30:10Z");
    let b = ticket("b", "acme:dan", "2026-11-07T08:30:20Z");
    let tickets = vec![a, b.clone()];
    let range = Range::new(&tickets).await;
    range.om.double.lose_event_ids(&["a"]);
    range.send(&tickets, &[]).await;
    range.send(&[b], &[("EVENT_ID", "request_id")]).await;
    assert_eq!(range.om.double.unique_events().len(), 2);

    let (code, report) = range.audit(FROM, TO, &[]).await;
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(ids_of(&report, "missing"), ["a"]);
    assert_eq!(ids_of(&report, "duplicates"), ["b"]);
    assert_eq!(report["totals"]["duplicate_events"], 1);

    let (code, blind) = range.audit(FROM, TO, &["--no-fingerprints"]).await;
    assert_eq!(code, 0, "count and µUSD alone cannot see it: {blind:#}");
    let risk = blind["proof"]["residual_risk"].as_str().unwrap();
    assert!(
        risk.contains("fingerprints not compared")
            && risk.contains("1 windows proven by count and µUSD only (2 tickets)"),
        "{risk}"
    );
}

/// Alice's ticket stored under Bob's subject bills Bob: both windows
/// differ, and the ticket is named, with whom it billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_billed_to_another_customer_is_named_with_whom_it_billed() {
    let alice = ticket("alice-1", "acme:alice", "2026-11-07T08:30:10Z");
    let bob = ticket("bob-1", "acme:bob", "2026-11-07T09:00:00Z");
    let range = Range::new(&[alice.clone(), bob.clone()]).await;
    range.send(&[bob], &[]).await;
    let rules = ticketmeter::Contract::default();
    let Ok(ticketmeter::Decoded::Ticket(signed)) =
        ticketmeter::decode(alice.as_bytes(), 1 << 20, &rules)
    else {
        panic!("a ticket");
    };
    let event = ticketmeter::map(*signed, &"3500".parse().unwrap(), &rules).event;
    let mut event = serde_json::to_value(&event).unwrap();
    event["subject"] = "acme:bob".into();
    range
        .om
        .client(None)
        .ingest_batch(serde_json::to_vec(&[event]).unwrap().into())
        .await
        .unwrap();

    for mode in ["totals", "events"] {
        let (code, report) = range.audit(FROM, TO, &["--mode", mode]).await;
        assert_eq!(code, 1, "{mode}: {report:#}");
        let unbillable = report["customers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["unbillable"].as_array().unwrap().clone())
            .collect::<Vec<_>>();
        assert_eq!(
            unbillable,
            [json!({"id": "alice-1",
                    "reason": "billed to subject acme:bob (signed for acme:alice)"})],
            "{mode}"
        );
    }
}
