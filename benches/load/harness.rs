//! What every load scenario shares: event lines, the collector as a child
//! process and its figures from `/proc`, the double, tansu.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use openmeter_double::{Double, DoubleConfig, RunningDouble};
use rdkafka::config::ClientConfig as RdConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use ticketmeter::bootstrap::{bootstrap, BootstrapOptions, Catalog};
use ticketmeter::{ClientConfig, Endpoint, OpenMeterClient};

pub(crate) fn event(i: usize, customer: usize, time: &str) -> String {
    format!(
        r#"{{"id":"env-{i}","type":"create_signed_ticket","timestamp":"1788912000000","gateway":"","data":{{"session_id":"s-{i}","session_status":"continuing","pipeline":"live-video-to-video","request_id":"req-{i}","orch_address":"0xabababababababababababababababababababab","orch_url":"https://orch.example:8935","manifest_id":"m","pm_session_id":"pm","current_time":"{time}","current_time_unix":1788912000000,"previous_time":"{time}","previous_time_unix":1788912000000,"billable_secs":10.5,"pixels":0,"session_balance":"100","computed_fee":"1200000000000","cost":"1.0","sequence_number":{i},"num_tickets":1,"auth_id":"client-{customer}:user-{customer}"}}}}"#
    )
}

/// A `kB` line of a live process's `/proc/<pid>/status` (`VmHWM`, `VmRSS`).
pub(crate) fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Peak resident set (VmHWM) and CPU seconds of a live process.
pub(crate) fn proc_stats(pid: u32) -> Option<(u64, f64)> {
    let hwm_kb = status_kb(pid, "VmHWM")?;
    Some((hwm_kb, cpu_secs(&format!("/proc/{pid}/stat"))?))
}

/// CPU seconds of a live process's threads by thread name (`tokio-rt-worker`,
/// `rdk:main`, …), busiest first: how many threads bear the name, their
/// total and the busiest one's. A serial stage shows as one thread near a
/// second per second.
pub(crate) fn thread_cpu(pid: u32) -> Vec<ThreadCpu> {
    let mut by_name: std::collections::BTreeMap<String, ThreadCpu> = Default::default();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let Some(cpu) = cpu_secs(&dir.join("stat").display().to_string()) else {
            continue;
        };
        let name = name.trim().to_owned();
        let entry = by_name.entry(name.clone()).or_insert(ThreadCpu {
            name,
            threads: 0,
            total: 0.0,
            busiest: 0.0,
        });
        entry.threads += 1;
        entry.total += cpu;
        entry.busiest = entry.busiest.max(cpu);
    }
    let mut threads: Vec<_> = by_name.into_values().collect();
    threads.sort_by(|a, b| b.total.total_cmp(&a.total));
    threads
}

/// CPU seconds of the threads that bear one name.
#[derive(Debug, Clone)]
pub(crate) struct ThreadCpu {
    pub(crate) name: String,
    pub(crate) threads: usize,
    pub(crate) total: f64,
    pub(crate) busiest: f64,
}

/// `threads` as one line of µs per event: total over all threads, and by
/// name (`×n` threads: their sum, then the busiest one's).
pub(crate) fn threads_line(threads: &[ThreadCpu], events: usize) -> String {
    let per = |secs: f64| secs * 1e6 / events.max(1) as f64;
    let total: f64 = threads.iter().map(|t| t.total).sum();
    let named: Vec<String> = threads
        .iter()
        .filter(|t| t.total > 0.0)
        .map(|t| match t.threads {
            1 => format!("{} {:.2}", t.name, per(t.total)),
            n => format!(
                "{} ×{n} {:.2} (busiest {:.2})",
                t.name,
                per(t.total),
                per(t.busiest)
            ),
        })
        .collect();
    format!(
        "collector CPU {:.2} µs/event; by thread: {}",
        per(total),
        named.join(", ")
    )
}

/// `thread_cpu` of a live collector, as one printed line.
pub(crate) fn print_threads(pid: u32, events: usize) {
    println!("  {}", threads_line(&thread_cpu(pid), events));
}

pub(crate) fn cpu_secs(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

pub(crate) struct Collector {
    pub(crate) child: Child,
    pub(crate) peak_kb: u64,
    pub(crate) cpu: f64,
}

impl Collector {
    pub(crate) fn spawn(args: &[&str], env: &[(&str, String)]) -> Self {
        // BENCH_COLLECTOR_BIN runs another build (a long soak keeps its own copy).
        let bin = std::env::var("BENCH_COLLECTOR_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ticketmeter").to_owned());
        Self::start(Self::command(&bin, args, env).stderr(Stdio::inherit()))
    }

    /// `bin` (a `ticketmeter` build), its log written to `log` rather than
    /// shown.
    pub(crate) fn spawn_logging(
        bin: &str,
        args: &[&str],
        env: &[(&str, String)],
        log: &std::path::Path,
    ) -> Self {
        let log = std::fs::File::create(log).unwrap();
        Self::start(Self::command(bin, args, env).stderr(log))
    }

    fn command(bin: &str, args: &[&str], env: &[(&str, String)]) -> Command {
        let mut cmd = Command::new(bin);
        let log = std::env::var("BENCH_COLLECTOR_LOG").unwrap_or_else(|_| "warn".to_owned());
        cmd.args(args).env_clear().env("RUST_LOG", log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // BENCH_COLLECTOR_ENV="K=V,K=V" overrides settings for one experiment.
        let extra = std::env::var("BENCH_COLLECTOR_ENV").unwrap_or_default();
        for (k, v) in extra.split(',').filter_map(|kv| kv.split_once('=')) {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null());
        cmd
    }

    fn start(cmd: &mut Command) -> Self {
        Self {
            child: cmd.spawn().unwrap(),
            peak_kb: 0,
            cpu: 0.0,
        }
    }

    pub(crate) fn sample(&mut self) {
        if let Some((kb, cpu)) = proc_stats(self.child.id()) {
            self.peak_kb = self.peak_kb.max(kb);
            self.cpu = cpu;
        }
    }

    pub(crate) fn exited(&mut self) -> bool {
        self.sample();
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub(crate) fn stop(&mut self) {
        self.sample();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) async fn start_double() -> (Double, RunningDouble) {
    let double = Double::new(DoubleConfig::default());
    let running = double.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let endpoint = Endpoint::parse(&running.base_url(), None).unwrap();
    let client = OpenMeterClient::new(ClientConfig::new(endpoint, None)).unwrap();
    let catalog = Catalog::builtin(&"clearinghouse_default_ppu".parse().unwrap());
    bootstrap(&client, &catalog, &BootstrapOptions::default())
        .await
        .unwrap();
    (double, running)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub(crate) struct Broker {
    pub(crate) child: Child,
    pub(crate) brokers: String,
    /// The broker's SQLite storage; removed with it.
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tansu on SQLite storage: its memory storage returns nothing for a fetch
/// that starts inside a record batch, so a consumer that pauses under
/// back-pressure and resumes mid-batch would stall on that partition for
/// good (the reference README's tansu note), and a bench would wait for
/// events it can never get. SQLite's path is relative to the broker's
/// working directory.
pub(crate) fn tansu() -> Broker {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let bin = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo/bin/tansu"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("tansu"));
    let child = Command::new(bin)
        .current_dir(dir.path())
        .args([
            "broker",
            "--storage-engine",
            "sqlite://tansu.db",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu (scripts/test.sh installs it)");
    let brokers = format!("127.0.0.1:{port}");
    while TcpStream::connect(&brokers).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker {
        child,
        brokers,
        _dir: dir,
    }
}

/// Creates `topic` with `partitions` partitions, and its `.dlq` with one.
pub(crate) async fn create_topics(brokers: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = RdConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let dlq = format!("{topic}.dlq");
    let new = [
        NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
        NewTopic::new(&dlq, 1, TopicReplication::Fixed(1)),
    ];
    for r in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
}

/// A producer that batches (5 ms linger) and queues a whole load.
pub(crate) fn producer(brokers: &str) -> FutureProducer {
    RdConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap()
}

pub(crate) async fn produce(
    producer: &FutureProducer,
    topic: &str,
    payloads: impl Iterator<Item = String>,
) {
    let mut pending = Vec::new();
    for (i, payload) in payloads.enumerate() {
        let key = i.to_string();
        let record = FutureRecord::to(topic).payload(&payload).key(&key);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        if pending.len() >= 10_000 {
            for p in pending.drain(..) {
                p.await.unwrap().unwrap();
            }
        }
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
}
