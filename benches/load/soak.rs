//! Soak: 2,000 events/s over 50,000 customers for `--soak-minutes` (30 by
//! default), OpenMeter 20 ms away. Each minute it prints the collector's
//! resident set, its open sockets and the calls per event of that minute:
//! they should stay flat with time (and grow only with customers, which
//! are all met within the first minute).

use std::path::Path;
use std::time::{Duration, Instant};

use openmeter_double::{Double, Network};

use crate::distance::{self, Load, Mode};
use crate::harness::{status_kb, Collector};

const RATE: usize = 2_000;
const CUSTOMERS: usize = 50_000;

/// Resident set (VmRSS, kB) and open sockets of a process.
fn footprint(pid: u32) -> Option<(u64, usize)> {
    let rss = status_kb(pid, "VmRSS")?;
    let sockets = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count();
    Some((rss, sockets))
}

pub(crate) async fn run(double: &Double, env: &[(&'static str, String)], dir: &Path, minutes: u64) {
    let first = 9_000_000;
    distance::seed_customers(double, first, CUSTOMERS / 2);
    double.set_network(Network {
        latency: Duration::from_millis(20),
        ..Network::default()
    });
    println!(
        "soak: {RATE} events/s over {CUSTOMERS} customers (half of them new) for {minutes} min, OpenMeter 20 ms away"
    );
    let events = RATE * 60 * minutes as usize;
    let load = Load {
        events,
        rate: Some(RATE),
        first,
        customers: CUSTOMERS,
        id_base: 2_000_000_000,
    };
    let feed = distance::Feed::start(dir, load);
    let mut env = env.to_vec();
    env.push(("DLQ_FILE", dir.join("soak.dlq.jsonl").display().to_string()));
    env.extend(Mode::Adaptive.env());
    double.reset_counters();
    let before = double.delivery_count();
    let mut collector = Collector::spawn(&["replay", &feed.path()], &env);
    let started = Instant::now();
    let (mut calls0, mut delivered0, mut cpu0) = (0, 0, 0.0);
    for minute in 1..=minutes {
        let due = started + Duration::from_secs(60 * minute);
        while Instant::now() < due {
            collector.sample();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let delivered = double.delivery_count() - before;
        let calls = double.total_calls();
        let (rss, sockets) = footprint(collector.child.id()).unwrap_or_default();
        println!(
            "  minute {minute:>2}: RSS {:>6.1} MB, {sockets} sockets, {:>7} events accepted, {:.4} calls/event, CPU {:.1} µs/event (this minute)",
            rss as f64 / 1024.0,
            delivered - delivered0,
            (calls - calls0) as f64 / (delivered - delivered0).max(1) as f64,
            (collector.cpu - cpu0) * 1e6 / (delivered - delivered0).max(1) as f64,
        );
        (calls0, delivered0, cpu0) = (calls, delivered, collector.cpu);
    }
    feed.stop();
    collector.stop();
    double.set_network(Network::default());
}
