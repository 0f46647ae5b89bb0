//! OpenMeter 0, 20 and 80 ms away (the double's `Network`): what bounds
//! delivery when a call costs a WAN round trip, not microseconds.
//!
//! Events reach the collector (`replay` of a FIFO) as the bench writes
//! them, each stamped with the time it was written, so event→accepted is
//! the double's receive time minus that stamp (`data.signed_at` when the
//! billing time rule moved the event). Scenarios:
//! - live: known customers at a fixed rate;
//! - backlog: known customers as fast as the collector reads (a restart
//!   after an outage, a replay);
//! - new customers: every event a customer OpenMeter does not know.
//!
//! Each runs in three modes on the same load: this build's defaults
//! (adaptive in-flight, warm-up), the previous release's (four batches in
//! flight, one ensure per unknown identity) and the seed's (one event per
//! request, an ensure per event).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use openmeter_double::{Double, Network};

use crate::harness::{event, percentile, start_double, Collector};

/// How the collector is configured.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Adaptive,
    Fixed,
    Seed,
}

impl Mode {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Adaptive => "this build",
            Self::Fixed => "previous (4 in flight, no warm-up)",
            Self::Seed => "seed-equivalent",
        }
    }

    pub(crate) fn env(self) -> Vec<(&'static str, String)> {
        let fixed = [
            ("BATCH_MIN_IN_FLIGHT", "4".to_owned()),
            ("BATCH_MAX_IN_FLIGHT", "4".to_owned()),
            ("ENSURE_WARM_UP", "false".to_owned()),
        ];
        match self {
            Self::Adaptive => Vec::new(),
            Self::Fixed => fixed.to_vec(),
            Self::Seed => {
                let mut env = fixed.to_vec();
                env.extend([
                    ("BATCH_MAX_EVENTS", "1".to_owned()),
                    ("ENSURE_CACHE_CAPACITY", "0".to_owned()),
                    ("ENSURE_CACHE_TTL", "1ns".to_owned()),
                    ("PLAN_CACHE_TTL", "1ns".to_owned()),
                ]);
                env
            }
        }
    }
}

/// What events a run feeds.
#[derive(Clone, Copy)]
pub(crate) struct Load {
    pub(crate) events: usize,
    /// Events per second; `None`: as fast as the collector reads.
    pub(crate) rate: Option<usize>,
    /// Customer of event `i`: `first + i % customers`.
    pub(crate) first: usize,
    pub(crate) customers: usize,
    /// Event ids start here (unique across runs: no dedupe between them).
    pub(crate) id_base: usize,
}

pub(crate) struct Outcome {
    pub(crate) delivered: usize,
    pub(crate) secs: f64,
    /// Seconds from the collector's start to its first accepted event.
    pub(crate) first_secs: f64,
    pub(crate) calls: u64,
    pub(crate) p99_ms: f64,
    pub(crate) cpu: f64,
    pub(crate) peak_kb: u64,
}

impl Outcome {
    pub(crate) fn print(&self, label: &str) {
        println!(
            "  {label:<36} {:>8} events {:>7.1} s {:>9.0} events/s {:>8.4} calls/event  p99 {:>9.1} ms  first accepted after {:>5.2} s  CPU {:>5.1} µs/event  peak RSS {:>5.1} MB",
            self.delivered,
            self.secs,
            self.delivered as f64 / self.secs,
            self.calls as f64 / self.delivered.max(1) as f64,
            self.p99_ms,
            self.first_secs,
            self.cpu * 1e6 / self.delivered.max(1) as f64,
            self.peak_kb as f64 / 1024.0,
        );
    }
}

/// A FIFO the collector reads (`replay FIFO`) and a thread writing `load`
/// into it.
pub(crate) struct Feed {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Feed {
    pub(crate) fn start(dir: &Path, load: Load) -> Self {
        let path = dir.join(format!("feed-{}.jsonl", load.id_base));
        let _ = std::fs::remove_file(&path);
        let made = std::process::Command::new("mkfifo").arg(&path).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (path, stop) = (path.clone(), stop.clone());
            move || feed(&path, load, &stop)
        });
        Self { path, stop, thread }
    }

    pub(crate) fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// Stops writing; call after the reader is gone (a write to a FIFO
    /// nobody reads fails, so the thread ends).
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Feeds `load` into `fifo` (blocking: run on a thread of its own). Stops
/// early when `stop` is set.
fn feed(fifo: &Path, load: Load, stop: &AtomicBool) {
    let Ok(file) = std::fs::OpenOptions::new().write(true).open(fifo) else {
        return;
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
    let started = Instant::now();
    let chunk = 500;
    let mut i = 0;
    while i < load.events && !stop.load(Ordering::Relaxed) {
        if let Some(rate) = load.rate {
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                let _ = out.flush();
                std::thread::sleep(wait);
            }
        }
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let n = chunk.min(load.events - i);
        for k in i..i + n {
            let customer = load.first + k % load.customers;
            if writeln!(out, "{}", event(load.id_base + k, customer, &now)).is_err() {
                return;
            }
        }
        if load.rate.is_some() && out.flush().is_err() {
            return;
        }
        i += n;
    }
    let _ = out.flush();
}

/// When the event was signed: `data.signed_at` when its time was moved.
pub(crate) fn signed(event: &serde_json::Value) -> Option<DateTime<Utc>> {
    let at = event["data"]["signed_at"]
        .as_str()
        .or_else(|| event["time"].as_str())?;
    Some(DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc))
}

/// One collector run of `load` in `mode`, cut short after `budget` (the
/// seed's mode at 80 ms would take hours on a full load).
pub(crate) async fn run(
    double: &Double,
    env: &[(&'static str, String)],
    dir: &Path,
    mode: Mode,
    load: Load,
    budget: Duration,
) -> Outcome {
    double.reset_counters();
    let before = double.delivery_count();
    let mut env = env.to_vec();
    env.push((
        "DLQ_FILE",
        dir.join("distance.dlq.jsonl").display().to_string(),
    ));
    env.extend(mode.env());
    let feed = Feed::start(dir, load);
    let started = Instant::now();
    let mut collector = Collector::spawn(&["replay", &feed.path()], &env);
    let mut first = None;
    while double.delivery_count() < before + load.events && started.elapsed() < budget {
        if first.is_none() && double.delivery_count() > before {
            first = Some(started.elapsed());
        }
        if collector.exited() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    collector.stop();
    feed.stop();
    let delivered = double.delivery_count() - before;
    let calls = double.total_calls();
    let mut latencies: Vec<f64> = double
        .deliveries_since(before)
        .iter()
        .filter_map(|d| {
            Some((d.received_at - signed(&d.event)?).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    Outcome {
        delivered,
        secs,
        first_secs: first.map_or(secs, |f| f.as_secs_f64()),
        calls,
        p99_ms: if latencies.is_empty() {
            f64::NAN
        } else {
            percentile(&latencies, 0.99)
        },
        cpu: collector.cpu,
        peak_kb: collector.peak_kb,
    }
}

/// Customers `first..first + n`, each with an active subscription, made
/// behind the collector's back (an earlier run, an existing organisation).
pub(crate) fn seed_customers(double: &Double, first: usize, n: usize) {
    let plan = double
        .plans()
        .into_iter()
        .find(|p| p.key == "clearinghouse_default_ppu")
        .expect("bootstrapped plan")
        .id;
    for c in first..first + n {
        let key = format!("client-{c}:user-{c}");
        let customer = double.seed_customer(&key, &[&key]);
        double.seed_subscription(&customer, &plan, "active");
    }
}

pub(crate) struct Matrix {
    pub(crate) live_rate: usize,
    pub(crate) live_secs: usize,
    pub(crate) backlog: usize,
    pub(crate) new_customers: usize,
    pub(crate) budget: Duration,
    pub(crate) cells: Cells,
}

/// Which cells of the matrix run: `--latencies 0,20,80`,
/// `--scenarios live,backlog,new`, `--modes this,previous,seed`.
#[derive(Clone)]
pub(crate) struct Cells {
    pub(crate) latencies: Vec<u64>,
    pub(crate) scenarios: Vec<String>,
    pub(crate) modes: Vec<String>,
}

impl Cells {
    fn scenario(&self, name: &str) -> bool {
        self.scenarios.iter().any(|s| name.starts_with(s.as_str()))
    }

    fn mode(&self, mode: Mode) -> bool {
        let name = match mode {
            Mode::Adaptive => "this",
            Mode::Fixed => "previous",
            Mode::Seed => "seed",
        };
        self.modes.iter().any(|m| m == name)
    }
}

/// Every scenario at every distance, in every mode. Each distance starts a
/// double of its own holding the same 1,000 known customers, so no run
/// pays for the customers an earlier one created (what an organisation's
/// size costs a start is the restart part's measure).
pub(crate) async fn matrix(dir: &Path, m: &Matrix) {
    const KNOWN: usize = 1_000;
    let known_first = 5_000_000;
    let mut id_base = 100_000_000;
    let mut new_first = 6_000_000;
    for &latency_ms in &m.cells.latencies {
        let (double, running) = start_double().await;
        let double = &double;
        let env = &crate::base_env(&running.base_url());
        seed_customers(double, known_first, KNOWN);
        double.set_network(Network {
            latency: Duration::from_millis(latency_ms),
            ..Network::default()
        });
        println!("OpenMeter {latency_ms} ms away:");
        for (scenario, events, rate) in [
            ("live", m.live_rate * m.live_secs, Some(m.live_rate)),
            ("backlog", m.backlog, None),
            ("new customers", m.new_customers, None),
        ] {
            if !m.cells.scenario(scenario) {
                continue;
            }
            println!(" {scenario}:");
            for mode in [Mode::Adaptive, Mode::Fixed, Mode::Seed] {
                if !m.cells.mode(mode) {
                    continue;
                }
                let (first, customers) = if scenario == "new customers" {
                    new_first += events;
                    (new_first - events, events)
                } else {
                    (known_first, KNOWN)
                };
                let load = Load {
                    events,
                    rate,
                    first,
                    customers,
                    id_base,
                };
                id_base += events;
                let outcome = run(double, env, dir, mode, load, m.budget).await;
                outcome.print(mode.label());
            }
        }
    }
}
