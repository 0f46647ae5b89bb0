//! An organisation's size, OpenMeter 80 ms away (issue 27):
//! - `restart`: `ticketmeter run`, as the Kubernetes manifest runs it,
//!   starts against 100k, 300k and 1M existing customers, each with an
//!   active subscription, with 20,000 tickets of distinct customers waiting
//!   on Kafka (tansu): when the first event is billed, when the whole
//!   backlog is, the calls it took and the collector's peak RSS (the memory
//!   curve against customers), beside the manifest's memory limit; then
//!   this build again with a ticket for every customer waiting (`replay`
//!   of a FIFO: a backlog that keeps every batch slot busy, the peak an
//!   outage leaves);
//! - `new`: 100,000 events, each a customer OpenMeter does not know;
//! - `limited`: the same behind a gateway allowing 100 requests/s that
//!   answers 429 with `Retry-After`: whether it converges under the limit,
//!   with no dead letter, no storm of warnings, every customer created once.
//!
//! Each runs this build and, when `BENCH_PREVIOUS_BIN` names one, the
//! previous release's binary on the same load, each against a double of its
//! own (so neither pays for what the other created). The collector's
//! warnings and errors (`RUST_LOG=warn`) are counted, not shown.
//!
//! `BENCH_MEMORY_CGROUP=<dir>` runs the collector inside that cgroup (v1 or
//! v2, created beforehand with the manifest's limit); without it the peak
//! RSS is printed beside the limit.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use openmeter_double::{Double, Network, RateLimit, RetryAfterForm, Route};

use crate::distance::{seed_customers, Feed, Load};
use crate::harness::{
    cpu_secs, create_topics, event, produce, producer, start_double, status_kb, tansu, Broker,
    Collector,
};

/// OpenMeter's distance in every run here.
const LATENCY: Duration = Duration::from_millis(80);

/// Which collector runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Build {
    This,
    Previous,
}

impl Build {
    fn label(self) -> &'static str {
        match self {
            Self::This => "this build",
            Self::Previous => "previous release",
        }
    }

    /// The binary, when there is one to run.
    fn bin(self) -> Option<String> {
        match self {
            Self::This => Some(
                std::env::var("BENCH_COLLECTOR_BIN")
                    .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ticketmeter").to_owned()),
            ),
            Self::Previous => std::env::var("BENCH_PREVIOUS_BIN").ok(),
        }
    }
}

fn builds() -> Vec<Build> {
    [Build::This, Build::Previous]
        .into_iter()
        .filter(|b| b.bin().is_some())
        .collect()
}

/// The memory limit `deploy/kubernetes/deployment.yaml` gives the
/// collector, in MiB.
fn manifest_limit_mib() -> Option<u64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/deployment.yaml");
    let text = std::fs::read_to_string(path).ok()?;
    let manifest: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    let limit = manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        ["memory"]
        .as_str()?;
    limit.strip_suffix("Mi")?.parse().ok()
}

/// What one run measured.
struct Run {
    delivered: usize,
    first: Option<f64>,
    secs: f64,
    calls: u64,
    peak_kb: u64,
    /// Peak RSS when the first event was billed (the warm-up's, before the
    /// backlog flows).
    first_peak_kb: u64,
    /// Lines the collector logged at warn or error, and the first.
    warnings: usize,
    first_warning: Option<String>,
    rate_limited: u64,
    dead_letters: usize,
    customers_created: usize,
    subscriptions_created: usize,
    /// CPU seconds of the collector, and of this process (the double).
    cpu: f64,
    double_cpu: f64,
}

/// Where the collector reads its events.
enum Input<'a> {
    /// `replay` of a FIFO the bench writes `Load` into.
    Fifo(Load),
    /// `run` over a topic holding `events` events.
    Kafka {
        broker: &'a Broker,
        topic: &'a str,
        events: usize,
    },
}

/// Runs `build` over `input` against `double` until every event is
/// delivered or `budget` passes.
async fn run(
    double: &Double,
    env: &[(&'static str, String)],
    dir: &Path,
    build: Build,
    input: Input<'_>,
    budget: Duration,
) -> Run {
    double.reset_counters();
    let (customers0, subscriptions0) = (double.customer_count(), double.subscription_count());
    let before = double.delivery_count();
    let limited0 = double.rate_limited();
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dlq = dir.join(format!("organisation-{n}.dlq.jsonl"));
    let log = dir.join(format!("organisation-{n}.log"));
    let mut env = env.to_vec();
    env.push(("DLQ_FILE", dlq.display().to_string()));
    let (feed, events, args) = match input {
        Input::Fifo(load) => {
            let feed = Feed::start(dir, load);
            let args = vec!["replay".to_owned(), feed.path()];
            (Some(feed), load.events, args)
        }
        Input::Kafka {
            broker,
            topic,
            events,
        } => {
            env.extend([
                ("KAFKA_BROKERS", broker.brokers.clone()),
                ("KAFKA_GATEWAY_TOPIC", topic.to_owned()),
                ("KAFKA_COMMIT_INTERVAL", "500ms".to_owned()),
                ("DLQ_SPILL_DIR", dir.join("spill").display().to_string()),
            ]);
            (None, events, vec!["run".to_owned()])
        }
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let double_cpu0 = cpu_secs("/proc/self/stat").unwrap_or(0.0);
    let started = Instant::now();
    let bin = build.bin().expect("a binary to run");
    let mut collector = Collector::spawn_logging(&bin, &args, &env, &log);
    confine(&collector);
    let mut first = None;
    let mut first_peak_kb = 0;
    while double.delivery_count() < before + events && started.elapsed() < budget {
        if first.is_none() && double.delivery_count() > before {
            first = Some(started.elapsed().as_secs_f64());
            first_peak_kb = status_kb(collector.child.id(), "VmHWM").unwrap_or(0);
        }
        if collector.exited() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let double_cpu = cpu_secs("/proc/self/stat").unwrap_or(0.0) - double_cpu0;
    collector.stop();
    if let Some(feed) = feed {
        feed.stop();
    }
    let lines = |path: &PathBuf| {
        std::fs::read_to_string(path).map_or(0, |t| t.lines().filter(|l| !l.is_empty()).count())
    };
    // Log lines at warn or error (the text format names the level).
    let warnings: Vec<String> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(str::to_owned)
        .collect();
    if let Ok(keep) = std::env::var("BENCH_KEEP_LOGS") {
        let _ = std::fs::copy(&log, Path::new(&keep).join(log.file_name().unwrap()));
    }
    Run {
        delivered: double.delivery_count() - before,
        first,
        secs,
        calls: double.total_calls(),
        peak_kb: collector.peak_kb,
        first_peak_kb,
        warnings: warnings.len(),
        first_warning: warnings.into_iter().next(),
        rate_limited: double.rate_limited() - limited0,
        dead_letters: lines(&dlq),
        customers_created: double.customer_count() - customers0,
        subscriptions_created: double.subscription_count() - subscriptions0,
        cpu: collector.cpu,
        double_cpu,
    }
}

/// Moves the collector into `BENCH_MEMORY_CGROUP`, when set.
fn confine(collector: &Collector) {
    let Ok(dir) = std::env::var("BENCH_MEMORY_CGROUP") else {
        return;
    };
    let procs = Path::new(&dir).join("cgroup.procs");
    if let Err(e) = std::fs::write(&procs, collector.child.id().to_string()) {
        panic!("BENCH_MEMORY_CGROUP: cannot write {}: {e}", procs.display());
    }
}

/// A double 80 ms away holding `customers` existing customers (keys
/// `client-<first + i>:user-<first + i>`), each with an active
/// subscription.
async fn organisation(first: usize, customers: usize) -> (Double, openmeter_double::RunningDouble) {
    let (double, running) = start_double().await;
    let seeded = Instant::now();
    seed_customers(&double, first, customers);
    println!(
        "  (double seeded with {customers} customers and subscriptions in {:.1} s)",
        seeded.elapsed().as_secs_f64()
    );
    double.set_network(Network {
        latency: LATENCY,
        ..Network::default()
    });
    (double, running)
}

/// The restart: `run` against `sizes` existing customers, with `backlog`
/// tickets of distinct customers waiting on Kafka.
pub(crate) async fn restart(dir: &Path, sizes: &[usize], backlog: usize) {
    let limit = manifest_limit_mib();
    let confined = std::env::var("BENCH_MEMORY_CGROUP").ok();
    println!(
        "restart: `run` against existing customers with active subscriptions, OpenMeter 80 ms away, {backlog} tickets of distinct customers waiting on Kafka (tansu, 4 partitions); manifest memory limit {} ({})",
        limit.map_or("unknown".to_owned(), |l| format!("{l} MiB")),
        confined.map_or(
            "no cgroup limit here: peak RSS printed beside it".to_owned(),
            |d| format!("the collector runs in cgroup {d}")
        ),
    );
    let first = 10_000_000;
    for &customers in sizes {
        println!(" {customers} customers:");
        for build in builds() {
            let broker = tansu();
            let topic = "restart-events";
            create_topics(&broker.brokers, topic, 4).await;
            let every = (customers / backlog.max(1)).max(1);
            let tickets = (0..backlog).map(|i| {
                let customer = first + (i * every) % customers;
                event(3_000_000_000 + i, customer, "2026-09-09T00:00:00Z")
            });
            produce(&producer(&broker.brokers), topic, tickets).await;
            let (double, running) = organisation(first, customers).await;
            let env = crate::base_env(&running.base_url());
            let input = Input::Kafka {
                broker: &broker,
                topic,
                events: backlog,
            };
            let budget = Duration::from_secs(300);
            let r = run(&double, &env, dir, build, input, budget).await;
            let peak_mib = r.peak_kb as f64 / 1024.0;
            println!(
                "  {:<18} first event billed after {:>6.1} s (peak RSS by then {:>6.1} MiB), {:>6} of {backlog} in {:>6.1} s, {:>6} calls, CPU s: collector {:.1}, bench process (double) {:.1}; peak RSS {:>6.1} MiB{}{}",
                build.label(),
                r.first.unwrap_or(f64::NAN),
                r.first_peak_kb as f64 / 1024.0,
                r.delivered,
                r.secs,
                r.calls,
                r.cpu,
                r.double_cpu,
                peak_mib,
                limit.map_or(String::new(), |l| format!(
                    " ({} the manifest's {l} MiB)",
                    if peak_mib <= l as f64 { "within" } else { "OVER" }
                )),
                if r.warnings > 0 { format!(", {} warnings", r.warnings) } else { String::new() },
            );
            if let Some(line) = &r.first_warning {
                println!("    first warning: {line}");
            }
        }
        every_customer_waiting(dir, first, customers, limit).await;
    }
}

/// This build's restart with a ticket for every customer waiting.
async fn every_customer_waiting(dir: &Path, first: usize, customers: usize, limit: Option<u64>) {
    let (double, running) = organisation(first, customers).await;
    let env = crate::base_env(&running.base_url());
    let load = Load {
        events: customers,
        rate: None,
        first,
        customers,
        id_base: 1_000_000_000 + customers,
    };
    let r = run(
        &double,
        &env,
        dir,
        Build::This,
        Input::Fifo(load),
        Duration::from_secs(300),
    )
    .await;
    let peak_mib = r.peak_kb as f64 / 1024.0;
    println!(
        "  {:<18} a ticket per customer waiting (replay): first event billed after {:>6.1} s (peak RSS by then {:>6.1} MiB), {:>8} of {customers} in {:>6.1} s ({:>6.0} events/s), {:>6} calls, CPU s: collector {:.1}, bench process (double, feed) {:.1}; peak RSS {:>6.1} MiB{}",
        Build::This.label(),
        r.first.unwrap_or(f64::NAN),
        r.first_peak_kb as f64 / 1024.0,
        r.delivered,
        r.secs,
        r.delivered as f64 / r.secs,
        r.calls,
        r.cpu,
        r.double_cpu,
        peak_mib,
        limit.map_or(String::new(), |l| format!(
            " ({} the manifest's {l} MiB)",
            if peak_mib <= l as f64 { "within" } else { "OVER" }
        )),
    );
}

/// `customers` new customers, one event each, with and without a gateway
/// limit of `per_second` requests.
pub(crate) async fn new_customers(dir: &Path, customers: usize, limited: Option<u32>) {
    const KNOWN: usize = 1_000;
    let known_first = 20_000_000;
    let new_first = 30_000_000;
    match limited {
        None => println!(
            "new customers: {customers} events, each a customer OpenMeter does not know ({KNOWN} known), OpenMeter 80 ms away"
        ),
        Some(rate) => println!(
            "new customers behind a gateway limit of {rate} requests/s answering 429 with Retry-After: {customers} events, each a new customer, OpenMeter 80 ms away"
        ),
    }
    for (i, build) in builds().into_iter().enumerate() {
        let (double, running) = organisation(known_first, KNOWN).await;
        if let Some(per_second) = limited {
            double.set_network(Network {
                latency: LATENCY,
                rate_limit: Some(RateLimit {
                    per_second,
                    burst: per_second,
                    retry_after: RetryAfterForm::Seconds,
                }),
                ..Network::default()
            });
        }
        let env = crate::base_env(&running.base_url());
        let load = Load {
            events: customers,
            rate: None,
            first: new_first + i * customers,
            customers,
            id_base: 2_000_000_000 + i * 10_000_000 + usize::from(limited.is_some()) * 5_000_000,
        };
        // The previous release needs 4 calls a customer: cut it short.
        let budget = match (build, limited) {
            (Build::This, None) => Duration::from_secs(600),
            (Build::This, Some(rate)) => {
                Duration::from_secs((customers as u64 * 3 / u64::from(rate)).max(600))
            }
            (Build::Previous, _) => Duration::from_secs(300),
        };
        let r = run(&double, &env, dir, build, Input::Fifo(load), budget).await;
        let creates = double.calls(Route::CreateCustomer);
        println!(
            "  {:<18} {:>7} of {customers} billed in {:>7.1} s: {:>6.0} new customers/s, first after {:>5.1} s; {:>7} calls ({:.2}/customer), {} answered 429; customers created {} (create requests {}), subscriptions {}; dead letters {}; warnings/errors logged {}; peak RSS {:.1} MiB; CPU s: collector {:.1}, bench process (double, feed) {:.1}",
            build.label(),
            r.delivered,
            r.secs,
            r.customers_created as f64 / r.secs,
            r.first.unwrap_or(f64::NAN),
            r.calls,
            r.calls as f64 / r.customers_created.max(1) as f64,
            r.rate_limited,
            r.customers_created,
            creates,
            r.subscriptions_created,
            r.dead_letters,
            r.warnings,
            r.peak_kb as f64 / 1024.0,
            r.cpu,
            r.double_cpu,
        );
        if let Some(line) = &r.first_warning {
            println!("    first warning: {line}");
        }
    }
}
