//! End-to-end load benchmark: prints figures, asserts nothing.
//!
//! `cargo bench --bench load` (options after `--`: `--events N`,
//! `--customers M`, `--latency-rate R`, `--latency-secs S`, `--wide W`,
//! `--parts` (e.g. `--parts base` to skip the Kafka part), and for the distance matrix `--latencies`,
//! `--scenarios`, `--modes`; `--restart-customers 100000,300000,1000000`,
//! `--restart-backlog N`,
//! `--new-customers N`, `--limited-customers N`, `--limited-rate R`;
//! `BENCH_COLLECTOR_LOG` sets the child's `RUST_LOG`,
//! `BENCH_COLLECTOR_BIN` runs another `ticketmeter` build, `BENCH_COLLECTOR_ENV="K=V,…"`
//! overrides its settings, `BENCH_PREVIOUS_BIN` adds the previous release's
//! binary beside this build in the `restart`, `new` and `limited` parts,
//! `BENCH_MEMORY_CGROUP` runs their collector inside a cgroup).
//!
//! The real `ticketmeter` binary runs as a child process against an
//! in-process OpenMeter double on loopback, so the collector's peak RSS
//! (VmHWM) and CPU time are its own. Scenarios:
//! 1. file source, normal mode: N events over M customers (`replay FILE`);
//! 2. the same load in seed-equivalent mode (batch size 1, no ensure cache,
//!    so an ensure per event, like the original Benthos + sidecar);
//! 3. file source with 100k distinct customers (peak RSS with a full cache);
//! 4. Kafka source through a tansu broker: throughput, CPU per process
//!    (what bounds it), then p50/p99 event→accepted latency at a fixed rate.

mod distance;
mod harness;
mod organisation;
mod scale;
mod soak;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use openmeter_double::{Double, Route};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use harness::{
    cpu_secs, create_topics, event, free_port, percentile, print_threads, produce, producer,
    start_double, tansu, thread_cpu, threads_line, Collector, ThreadCpu,
};

struct Options {
    events: usize,
    customers: usize,
    latency_rate: usize,
    latency_secs: u64,
    wide: usize,
    /// Which parts run: `base` (file source on loopback), `kafka` (the
    /// Kafka source through tansu, throughput then latency), `distance` (0/20/80 ms
    /// matrix), `restart` (`run` over Kafka against 100k, 300k and 1M
    /// existing customers at 80 ms),
    /// `new` (100k new customers at 80 ms), `limited` (the same behind a
    /// gateway's 100 requests/s), `scale` (1, 2, 4 collectors on 12
    /// partitions), `soak` (30 min at 2k/s).
    parts: Vec<String>,
    restart_customers: Vec<usize>,
    restart_backlog: usize,
    new_customers: usize,
    limited_customers: usize,
    limited_rate: u32,
    soak_minutes: u64,
    /// Which cells of the distance matrix run (all by default).
    cells: distance::Cells,
}

impl Options {
    fn runs(&self, part: &str) -> bool {
        self.parts.iter().any(|p| p == part)
    }
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let list = |name: &str, default: &str| -> Vec<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.as_str())
            .split(',')
            .map(str::to_owned)
            .collect()
    };
    let value = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Options {
        events: value("--events", 200_000),
        customers: value("--customers", 1_000),
        latency_rate: value("--latency-rate", 10_000),
        latency_secs: value("--latency-secs", 10) as u64,
        wide: value("--wide", 100_000),
        parts: list("--parts", "base,kafka,distance,restart,new,limited,scale"),
        restart_customers: list("--restart-customers", "100000,300000,1000000")
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect(),
        restart_backlog: value("--restart-backlog", 20_000),
        new_customers: value("--new-customers", 100_000),
        limited_customers: value("--limited-customers", 100_000),
        limited_rate: value("--limited-rate", 100) as u32,
        soak_minutes: value("--soak-minutes", 30) as u64,
        cells: distance::Cells {
            latencies: list("--latencies", "0,20,80")
                .iter()
                .filter_map(|l| l.parse().ok())
                .collect(),
            scenarios: list("--scenarios", "live,backlog,new"),
            modes: list("--modes", "this,previous,seed"),
        },
    }
}

fn write_events(path: &Path, events: usize, customers: usize, offset: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..events {
        writeln!(
            out,
            "{}",
            event(offset + i, i % customers, "2026-09-09T00:00:00Z")
        )
        .unwrap();
    }
}

struct Figures {
    label: String,
    events: usize,
    secs: f64,
    calls: u64,
    /// Ingest requests only: the cost per event once every customer is cached.
    ingest_calls: u64,
    peak_kb: u64,
    /// CPU seconds by thread name (see `harness::thread_cpu`).
    threads: Vec<ThreadCpu>,
}

impl Figures {
    fn print(&self) {
        println!(
            "{:<44} {:>8} events {:>8.2} s {:>10.0} events/s {:>8.4} upstream calls/event  peak RSS {:>6.1} MB",
            self.label,
            self.events,
            self.secs,
            self.events as f64 / self.secs,
            self.calls as f64 / self.events as f64,
            self.peak_kb as f64 / 1024.0
        );
        println!(
            "  of which ingest requests {:.4}/event (the steady state: cached ensures cost no call)",
            self.ingest_calls as f64 / self.events as f64
        );
        if !self.threads.is_empty() {
            println!("  {}", threads_line(&self.threads, self.events));
        }
    }
}

pub(crate) fn base_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OPENMETER_URL", url.to_owned()),
        ("ETH_USD_PRICE", "3500".to_owned()),
        ("BATCH_MAX_EVENTS", "1000".to_owned()),
        ("PROVISION_PORT", free_port().to_string()),
    ]
}

async fn file_run(
    double: &Double,
    url: &str,
    file: &Path,
    events: usize,
    label: &str,
    extra: &[(&'static str, String)],
) -> Figures {
    double.reset_counters();
    let dlq = file.with_extension("dlq.jsonl");
    let mut env = base_env(url);
    env.push(("DLQ_FILE", dlq.display().to_string()));
    env.extend_from_slice(extra);
    let started = Instant::now();
    let mut collector = Collector::spawn(&["replay", &file.display().to_string()], &env);
    // The threads' figures as last seen before the collector exits.
    let mut threads = Vec::new();
    while !collector.exited() {
        // Threads end as the process does: keep the fullest snapshot.
        let seen = thread_cpu(collector.child.id());
        let total = |t: &[ThreadCpu]| t.iter().map(|t| t.total).sum::<f64>();
        if total(&seen) >= total(&threads) {
            threads = seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Figures {
        label: label.to_owned(),
        events,
        secs: started.elapsed().as_secs_f64(),
        calls: double.total_calls(),
        ingest_calls: double.calls(Route::IngestEvents),
        peak_kb: collector.peak_kb,
        threads,
    }
}

async fn kafka_runs(double: &Double, url: &str, opts: &Options) {
    let broker = tansu();
    let topic = "bench-events";
    create_topics(&broker.brokers, topic, 4).await;
    let producer = producer(&broker.brokers);
    let n = opts.events;
    let produced = Instant::now();
    produce(
        &producer,
        topic,
        (0..n).map(|i| event(10_000_000 + i, i % opts.customers, "2026-09-09T00:00:00Z")),
    )
    .await;
    println!(
        "produced {n} events into tansu in {:.2} s",
        produced.elapsed().as_secs_f64()
    );

    double.reset_counters();
    let before = double.delivery_count();
    let tansu_cpu0 = cpu_secs(&format!("/proc/{}/stat", broker.child.id())).unwrap_or(0.0);
    let self_cpu0 = cpu_secs("/proc/self/stat").unwrap_or(0.0);
    let mut env = base_env(url);
    env.extend([
        ("KAFKA_BROKERS", broker.brokers.clone()),
        ("KAFKA_GATEWAY_TOPIC", topic.to_owned()),
        ("KAFKA_COMMIT_INTERVAL", "500ms".to_owned()),
    ]);
    let started = Instant::now();
    let mut collector = Collector::spawn(&["run"], &env);
    let mut first: Option<Instant> = None;
    while double.delivery_count() < before + n {
        if first.is_none() && double.delivery_count() > before {
            first = Some(Instant::now());
        }
        collector.sample();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let steady = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    collector.sample();
    let figures = Figures {
        label: "kafka source (tansu), normal mode".into(),
        events: n,
        secs: started.elapsed().as_secs_f64(),
        calls: double.total_calls(),
        ingest_calls: double.calls(Route::IngestEvents),
        peak_kb: collector.peak_kb,
        threads: Vec::new(),
    };
    figures.print();
    println!(
        "  from first to last delivery: {steady:.2} s = {:.0} events/s",
        n as f64 / steady
    );
    println!(
        "  CPU seconds during the run: collector {:.2}, tansu broker {:.2}, bench process (double + producer) {:.2}",
        collector.cpu,
        cpu_secs(&format!("/proc/{}/stat", broker.child.id())).unwrap_or(0.0) - tansu_cpu0,
        cpu_secs("/proc/self/stat").unwrap_or(0.0) - self_cpu0
    );

    print_threads(collector.child.id(), n);

    latency_run(double, &producer, topic, opts).await;
    collector.stop();
}

/// Produces at a fixed rate with `current_time` = now; event→accepted is
/// the double's receive time minus that.
async fn latency_run(double: &Double, producer: &FutureProducer, topic: &str, opts: &Options) {
    let total = opts.latency_rate * opts.latency_secs as usize;
    let before = double.delivery_count();
    let tick = Duration::from_millis(10);
    let per_tick = opts.latency_rate / 100;
    let mut ticker = tokio::time::interval(tick);
    let mut sent = 0;
    while sent < total {
        ticker.tick().await;
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        for _ in 0..per_tick {
            let payload = event(20_000_000 + sent, sent % opts.customers, &now);
            let key = sent.to_string();
            let _ = producer.send_result(FutureRecord::to(topic).payload(&payload).key(&key));
            sent += 1;
        }
    }
    let _ = producer.flush(Duration::from_secs(30));
    while double.delivery_count() < before + total {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut latencies: Vec<f64> = double.deliveries()[before..]
        .iter()
        .filter_map(|d| {
            Some((d.received_at - distance::signed(&d.event)?).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    println!(
        "kafka source at {} events/s for {} s: event→accepted p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} events)",
        opts.latency_rate,
        opts.latency_secs,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0),
        latencies.len()
    );
}

/// The loopback figures: file source normal and seed-equivalent, 100k
/// distinct customers, then the Kafka source.
async fn base(double: &Double, url: &str, dir: &Path, opts: &Options) {
    let load = dir.join("load.jsonl");
    write_events(&load, opts.events, opts.customers, 0);
    let normal = file_run(
        double,
        url,
        &load,
        opts.events,
        "file source, normal mode",
        &[],
    )
    .await;
    normal.print();

    let seed_load = dir.join("seed.jsonl");
    write_events(&seed_load, opts.events, opts.customers, 1_000_000);
    let seed_env = [
        ("BATCH_MAX_EVENTS", "1".to_owned()),
        ("ENSURE_CACHE_CAPACITY", "0".to_owned()),
        ("ENSURE_CACHE_TTL", "1ns".to_owned()),
        ("PLAN_CACHE_TTL", "1ns".to_owned()),
    ];
    let seed = file_run(
        double,
        url,
        &seed_load,
        opts.events,
        "file source, seed-equivalent mode",
        &seed_env,
    )
    .await;
    seed.print();
    let ratio =
        (seed.calls as f64 / seed.events as f64) / (normal.calls as f64 / normal.events as f64);
    println!(
                "  ratio: {ratio:.0}x fewer upstream calls per event, {:.1}x the events/s of seed-equivalent mode",
                (normal.events as f64 / normal.secs) / (seed.events as f64 / seed.secs)
            );

    let wide = dir.join("wide.jsonl");
    write_events(&wide, opts.wide, opts.wide, 2_000_000);
    let label = format!("file source, {} distinct customers", opts.wide);
    file_run(double, url, &wide, opts.wide, &label, &[])
        .await
        .print();
}

fn main() {
    let opts = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (double, running) = start_double().await;
        let url = running.base_url();
        let dir = tempfile::tempdir().unwrap();
        println!("machine: {} cores; collector = release `ticketmeter` child process; OpenMeter double in-process on loopback", std::thread::available_parallelism().map_or(0, |n| n.get()));

        if opts.runs("base") {
            base(&double, &url, dir.path(), &opts).await;
        }
        if opts.runs("kafka") {
            kafka_runs(&double, &url, &opts).await;
        }
        let env = base_env(&url);
        if opts.runs("distance") {
            let matrix = distance::Matrix {
                live_rate: 5_000,
                live_secs: 10,
                backlog: opts.events,
                new_customers: 20_000,
                budget: Duration::from_secs(30),
                cells: opts.cells.clone(),
            };
            distance::matrix(dir.path(), &matrix).await;
        }
        if opts.runs("restart") {
            organisation::restart(dir.path(), &opts.restart_customers, opts.restart_backlog).await;
        }
        if opts.runs("new") {
            organisation::new_customers(dir.path(), opts.new_customers, None).await;
        }
        if opts.runs("limited") {
            let (n, rate) = (opts.limited_customers, opts.limited_rate);
            organisation::new_customers(dir.path(), n, Some(rate)).await;
        }
        if opts.runs("scale") {
            scale::run(&double, &url, &opts).await;
        }
        if opts.runs("soak") {
            soak::run(&double, &env, dir.path(), opts.soak_minutes).await;
        }
    });
}
