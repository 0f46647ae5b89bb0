//! Audit benchmark: prints figures, asserts nothing.
//!
//! `cargo bench --bench audit` (options after `--`: `--events N`,
//! `--customers M`, `--days D`, `--latency-ms L`, `--modes totals,events`,
//! `--scenarios clean,faulty`). N tickets of M customers, spread over D days
//! that ended an hour ago, are delivered by the real binary (`replay`) to an
//! in-process OpenMeter double on loopback; then the double is put L ms
//! away (its `Network`) and the real binary audits the D days
//! (`audit --file`) in each mode: wall time, the audit process's peak RSS
//! (VmHWM, sampled every 20 ms), and the calls the double answered.
//!
//! Scenarios: **clean** (every ticket stored once and billable) and
//! **faulty**: 100 tickets lost in ingest as openmeter#5118 loses them (the
//! id claimed, nothing stored: `Double::lose_event_ids`), 50 stored a
//! second time under their request id (a cut-over from the original
//! stack), and 50 sent at their signed time before their customer's
//! subscription began (`EVENT_TIME=signed`), all chosen at random; the
//! bench prints whether the audit named exactly those 200.
//!
//! Every customer is subscribed a day before the first ticket, but the 50
//! whose subscription begins half a second after their first ticket. The
//! tickets are delivered weeks after they were signed, so the audits run
//! with `BILLING_COLLECTION_WINDOW=3650days`: their billing periods stay
//! open, as they were for tickets sent in time.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, SecondsFormat, TimeDelta, Utc};
use openmeter_double::{Double, DoubleConfig, Network, Route, RunningDouble};
use serde_json::Value;
use ticketmeter::bootstrap::{bootstrap, BootstrapOptions, Catalog};
use ticketmeter::{ClientConfig, Endpoint, OpenMeterClient};

const PLAN: &str = "clearinghouse_default_ppu";
const COLLECTION: &str = "3650days";

struct Options {
    events: usize,
    customers: usize,
    days: i64,
    latency: Duration,
    modes: Vec<String>,
    scenarios: Vec<String>,
}

impl Options {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let number = |name: &str, default: usize| {
            value(name).and_then(|v| v.parse().ok()).unwrap_or(default)
        };
        let list = |name: &str, default: &str| -> Vec<String> {
            value(name)
                .unwrap_or_else(|| default.to_owned())
                .split(',')
                .map(str::to_owned)
                .collect()
        };
        Self {
            events: number("--events", 2_000_000),
            customers: number("--customers", 20_000),
            days: number("--days", 30) as i64,
            latency: Duration::from_millis(number("--latency-ms", 80) as u64),
            modes: list("--modes", "totals,events"),
            scenarios: list("--scenarios", "clean,faulty"),
        }
    }
}

/// splitmix64: repeatable runs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn auth_id(customer: usize) -> String {
    format!("client-{customer}:user-{customer}")
}

/// One signed ticket as the signer puts it on Kafka. Each customer's
/// tickets are one signer session (`s-<customer>`), a call each, chained as
/// go-livepeer chains them: `sequence_number` from 0, `previous_time` the
/// previous call's `current_time` (its own on the first call).
struct Ticket {
    customer: usize,
    time: DateTime<Utc>,
    fee_wei: u64,
    sequence: u32,
    previous: DateTime<Utc>,
}

impl Ticket {
    fn line(&self, i: usize) -> String {
        let (time, who, fee) = (rfc3339(self.time), auth_id(self.customer), self.fee_wei);
        let (previous, sequence) = (rfc3339(self.previous), self.sequence);
        format!(
            r#"{{"id":"env-{i}","type":"create_signed_ticket","timestamp":"{ms}","gateway":"","data":{{"session_id":"s-{c}","session_status":"continuing","pipeline":"live-video-to-video","request_id":"req-{i}","orch_address":"0xabababababababababababababababababababab","orch_url":"https://orch.example:8935","manifest_id":"m","pm_session_id":"pm","current_time":"{time}","previous_time":"{previous}","billable_secs":10.5,"pixels":0,"session_balance":"100","computed_fee":"{fee}","cost":"1.0","sequence_number":{sequence},"num_tickets":1,"auth_id":"{who}"}}}}"#,
            ms = self.time.timestamp_millis(),
            c = self.customer,
        )
    }
}

/// The injected faults, by envelope id.
#[derive(Default)]
struct Faults {
    lost: BTreeSet<String>,
    duplicated: BTreeSet<String>,
    unbillable: BTreeSet<String>,
}

/// A double holding a month as delivered, and its source file.
struct Month {
    double: Double,
    running: RunningDouble,
    dir: tempfile::TempDir,
    source: PathBuf,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    faults: Faults,
}

fn tickets(opts: &Options, from: DateTime<Utc>, rng: &mut Rng) -> Vec<Ticket> {
    let span_ns = opts.days * 86_400 * 1_000_000_000;
    let step = span_ns / opts.events as i64;
    let mut last: Vec<Option<(u32, DateTime<Utc>)>> = vec![None; opts.customers];
    (0..opts.events)
        .map(|i| {
            let offset = i as i64 * step + (rng.next() % step.max(1) as u64) as i64;
            let customer = rng.below(opts.customers);
            let time = from + TimeDelta::nanoseconds(offset);
            let (sequence, previous) = last[customer].map_or((0, time), |(n, t)| (n + 1, t));
            last[customer] = Some((sequence, time));
            Ticket {
                customer,
                time,
                fee_wei: 1_200_000_000_000 + (rng.next() % 1_000) * 1_000_000_000,
                sequence,
                previous,
            }
        })
        .collect()
}

/// Chooses `n` distinct indexes below `len`, none of `taken`.
fn choose(rng: &mut Rng, n: usize, len: usize, taken: &mut HashSet<usize>) -> Vec<usize> {
    let mut chosen = Vec::new();
    while chosen.len() < n {
        let i = rng.below(len);
        if taken.insert(i) {
            chosen.push(i);
        }
    }
    chosen
}

fn write_lines(path: &Path, lines: impl Iterator<Item = String>) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for line in lines {
        writeln!(out, "{line}").unwrap();
    }
}

impl Month {
    async fn build(opts: &Options, faulty: bool) -> Self {
        let double = Double::new(DoubleConfig::default());
        let running = double.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let endpoint = Endpoint::parse(&running.base_url(), None).unwrap();
        let client = OpenMeterClient::new(ClientConfig::new(endpoint, None)).unwrap();
        bootstrap(
            &client,
            &Catalog::builtin(&PLAN.parse().unwrap()),
            &BootstrapOptions::default(),
        )
        .await
        .unwrap();
        let to = (Utc::now() - TimeDelta::hours(1))
            .duration_trunc(TimeDelta::hours(1))
            .unwrap();
        let from = to - TimeDelta::days(opts.days);
        let mut rng = Rng(if faulty { 7 } else { 5 });
        let tickets = tickets(opts, from, &mut rng);
        let mut faults = Faults::default();
        let mut taken = HashSet::new();
        // The first ticket of 50 customers precedes their subscription by a
        // whole second (OpenMeter bills from `active_from` in whole
        // seconds), their second ticket follows it.
        let mut firsts: HashMap<usize, (usize, Option<usize>)> = HashMap::new();
        for (i, t) in tickets.iter().enumerate().rev() {
            let entry = firsts.entry(t.customer).or_insert((i, None));
            *entry = (i, Some(entry.0).filter(|&next| next != i));
        }
        let mut late_start: HashMap<usize, DateTime<Utc>> = HashMap::new();
        if faulty {
            let mut customers: Vec<usize> = firsts.keys().copied().collect();
            customers.sort_unstable();
            while late_start.len() < 50 {
                let c = customers[rng.below(customers.len())];
                let (first, second) = firsts[&c];
                let start = tickets[first].time + TimeDelta::milliseconds(1500);
                let after = second.is_none_or(|s| tickets[s].time > start + TimeDelta::seconds(1));
                if after && !late_start.contains_key(&c) && taken.insert(first) {
                    late_start.insert(c, start);
                    faults.unbillable.insert(format!("env-{first}"));
                }
            }
            for i in choose(&mut rng, 100, tickets.len(), &mut taken) {
                faults.lost.insert(format!("env-{i}"));
            }
            for i in choose(&mut rng, 50, tickets.len(), &mut taken) {
                faults.duplicated.insert(format!("env-{i}"));
            }
        }
        subscribe(
            &double,
            opts.customers,
            from - TimeDelta::days(1),
            &late_start,
        );
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("signed.jsonl");
        write_lines(&source, tickets.iter().enumerate().map(|(i, t)| t.line(i)));
        let month = Self {
            double,
            running,
            dir,
            source,
            from,
            to,
            faults,
        };
        month.deliver(&tickets).await;
        month
    }

    /// The tickets as the collector sends them, with the faults injected.
    async fn deliver(&self, tickets: &[Ticket]) {
        let lost: Vec<&str> = self.faults.lost.iter().map(String::as_str).collect();
        self.double.lose_event_ids(&lost);
        let id = |i: usize| format!("env-{i}");
        let path = |name: &str| self.dir.path().join(name);
        write_lines(
            &path("main.jsonl"),
            tickets
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.faults.unbillable.contains(&id(*i)))
                .map(|(i, t)| t.line(i)),
        );
        let some = |set: &BTreeSet<String>| {
            tickets
                .iter()
                .enumerate()
                .filter(|(i, _)| set.contains(&id(*i)))
                .map(|(i, t)| t.line(i))
                .collect::<Vec<_>>()
        };
        write_lines(
            &path("signed.time.jsonl"),
            some(&self.faults.unbillable).into_iter(),
        );
        write_lines(
            &path("again.jsonl"),
            some(&self.faults.duplicated).into_iter(),
        );
        for (file, extra) in [
            ("main.jsonl", None),
            ("signed.time.jsonl", Some(("EVENT_TIME", "signed"))),
            ("again.jsonl", Some(("EVENT_ID", "request_id"))),
        ] {
            let mut env = self.env();
            env.extend(extra.map(|(k, v)| (k, v.to_owned())));
            let file = path(file).display().to_string();
            let (took, _) = run(&["replay", &file], &env, &path("replay.out"));
            if file.ends_with("main.jsonl") {
                println!(
                    "  delivered {} tickets in {:.1} s; double holds {} events",
                    tickets.len(),
                    took.as_secs_f64(),
                    self.double.delivery_count()
                );
            }
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OPENMETER_URL", self.running.base_url()),
            ("ETH_USD_PRICE", "3500".to_owned()),
            ("BILLING_COLLECTION_WINDOW", COLLECTION.to_owned()),
            ("BATCH_MAX_EVENTS", "1000".to_owned()),
            (
                "DLQ_FILE",
                self.dir.path().join("dlq.jsonl").display().to_string(),
            ),
        ]
    }

    /// One audit of the month in `mode`, OpenMeter `latency` away.
    fn audit(&self, mode: &str, latency: Duration) -> Audited {
        self.double.set_network(Network {
            latency,
            ..Network::default()
        });
        self.double.reset_counters();
        let source = self.source.display().to_string();
        let none = self.dir.path().join("no-dead-letters.jsonl");
        let (from, to) = (rfc3339(self.from), rfc3339(self.to));
        let args = [
            "audit",
            "--file",
            &source,
            "--dlq-file",
            &none.display().to_string(),
            "--from",
            &from,
            "--to",
            &to,
            "--settle",
            "0s",
            "--format",
            "json",
            "--mode",
            mode,
        ];
        let out = self.dir.path().join(format!("audit-{mode}.json"));
        let (took, peak_kb) = run(&args, &self.env(), &out);
        let calls = self.double.total_calls();
        let routes = [
            Route::ListCustomers,
            Route::ListSubscriptions,
            Route::QueryMeter,
            Route::ListEvents,
        ]
        .map(|r| (r, self.double.calls(r)));
        self.double.set_network(Network::default());
        let report: Value =
            serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap_or_default();
        Audited {
            took,
            peak_kb,
            calls,
            routes,
            report,
        }
    }
}

/// Every customer subscribed at `start`, but those of `late_start`.
fn subscribe(
    double: &Double,
    customers: usize,
    start: DateTime<Utc>,
    late_start: &HashMap<usize, DateTime<Utc>>,
) {
    let plan = double
        .plans()
        .into_iter()
        .find(|p| p.key == PLAN && p.status == "active")
        .unwrap();
    for c in 0..customers {
        let key = auth_id(c);
        let customer = double.seed_customer(&key, &[&key]);
        let subscription = double.seed_subscription(&customer, &plan.id, "active");
        let at = late_start.get(&c).copied().unwrap_or(start);
        double.start_subscription_at(&subscription, at).unwrap();
    }
}

struct Audited {
    took: Duration,
    peak_kb: u64,
    calls: u64,
    routes: [(Route, u64); 4],
    report: Value,
}

/// The ids a report names under `list` (`missing`, `unbillable`, `duplicates`).
fn named(report: &Value, list: &str) -> BTreeSet<String> {
    report["customers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c[list].as_array().cloned().unwrap_or_default())
        .map(|v| {
            v.as_str().map_or_else(
                || v["id"].as_str().unwrap_or_default().to_owned(),
                str::to_owned,
            )
        })
        .collect()
}

fn exactly(named: &BTreeSet<String>, injected: &BTreeSet<String>) -> String {
    let found = named.intersection(injected).count();
    let extra = named.difference(injected).count();
    let verdict = if found == injected.len() && extra == 0 {
        "exact"
    } else {
        "NOT exact"
    };
    format!("{found}/{} ({extra} others, {verdict})", injected.len())
}

fn print(scenario: &str, mode: &str, a: &Audited, faults: &Faults) {
    let t = &a.report["totals"];
    let routes: Vec<String> = a.routes.iter().map(|(r, n)| format!("{r:?} {n}")).collect();
    println!(
        "  {scenario:<6} {mode:<6} {:>8.1} s  peak RSS {:>7.1} MB  {:>6} OpenMeter calls ({})  signed {} stored {} missing {} unbillable {} duplicates {}; sessions {} chain gaps {}",
        a.took.as_secs_f64(),
        a.peak_kb as f64 / 1024.0,
        a.calls,
        routes.join(", "),
        t["signed_events"],
        t["stored_events"],
        t["missing_events"],
        t["unbillable_events"],
        t["duplicate_events"],
        a.report["chain"]["sessions"],
        a.report["chain"]["gaps"].as_array().map_or(0, Vec::len),
    );
    if scenario == "faulty" {
        println!(
            "         named: missing {}, unbillable {}, duplicates {}",
            exactly(&named(&a.report, "missing"), &faults.lost),
            exactly(&named(&a.report, "unbillable"), &faults.unbillable),
            exactly(&named(&a.report, "duplicates"), &faults.duplicated),
        );
    }
    if let Some(windows) = a.report["proof"]["windows"].as_array() {
        let levels: Vec<String> = windows
            .iter()
            .map(|l| {
                format!(
                    "{} {}/{} ({} queries)",
                    l["window"].as_str().unwrap_or_default(),
                    l["differing"],
                    l["compared"],
                    l["queries"]
                )
            })
            .collect();
        println!("         differing/compared: {}", levels.join(", "));
    }
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Runs the binary to completion, stdout to `stdout`; its wall time and
/// peak RSS.
fn run(args: &[&str], env: &[(&str, String)], stdout: &Path) -> (Duration, u64) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ticketmeter"));
    cmd.args(args).env_clear().env("RUST_LOG", "error");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::from(std::fs::File::create(stdout).unwrap()))
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(peak_rss_kb(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    (started.elapsed(), peak)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let opts = Options::parse();
    println!(
        "audit: {} tickets of {} customers over {} days, OpenMeter {} ms away",
        opts.events,
        opts.customers,
        opts.days,
        opts.latency.as_millis()
    );
    for scenario in &opts.scenarios {
        let faulty = scenario == "faulty";
        let month = Month::build(&opts, faulty).await;
        for mode in &opts.modes {
            let latency = opts.latency;
            let audited = tokio::task::block_in_place(|| month.audit(mode, latency));
            print(scenario, mode, &audited, &month.faults);
        }
        month.running.shutdown().await;
    }
}
