//! Shared harness: a real Kafka-protocol broker (tansu) on loopback, the
//! OpenMeter double, the fixtures, and the real `ticketmeter` binary.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openmeter_double::{Double, DoubleConfig, RunningDouble};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig as RdConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::TopicPartitionList;
use serde_json::Value;
use std::sync::Arc;
use ticketmeter::bootstrap::{bootstrap, BootstrapOptions, Catalog};
use ticketmeter::{
    decode, pipeline, ClientConfig, Contract, DeadLetterSink, Decoded, Endpoint, EnsureConfig,
    OffsetTracker, OpenMeterClient, Pipeline, PipelineConfig, PriceFeed, Provisioner, UsdMicros,
    DEFAULT_MAX_BYTES,
};
use tokio_util::sync::CancellationToken;

pub(crate) const PLAN: &str = "clearinghouse_default_ppu";
pub(crate) const TOKEN: &str = "test-token-s3cr3t";

/// A free loopback port (racy in theory, fine on a test machine).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
}

/// Today's contract (`upstream-events.jsonl` → `upstream-expected.jsonl`),
/// under the default settings.
pub(crate) const UPSTREAM_EVENTS: &str = "upstream-events.jsonl";
/// The seed's contract, under the settings that keep the seed's ids,
/// subjects and rounding ([`Contract::seed`]).
pub(crate) const SEED_EVENTS: &str = "signer-events.jsonl";

fn fixture_cases(events: &str, expected: &str) -> Vec<(String, Value)> {
    let read = |name: &str| {
        std::fs::read_to_string(fixtures_dir().join(name)).expect("fixtures beside the repo")
    };
    read(events)
        .lines()
        .zip(read(expected).lines())
        .map(|(e, x)| (e.to_owned(), serde_json::from_str(x).unwrap()))
        .collect()
}

/// Every field `expected` names has exactly the expected value in
/// `actual` (Benthos' `json_contains`); numbers compare by decimal value,
/// never through a float.
pub(crate) fn assert_subset(expected: &Value, actual: &Value, path: &str) {
    match (expected, actual) {
        (Value::Object(fields), _) => {
            for (k, v) in fields {
                assert_subset(v, &actual[k], &format!("{path}.{k}"));
            }
        }
        (Value::Number(x), Value::Number(a)) => {
            let decimal = |n: &serde_json::Number| n.to_string().parse::<UsdMicros>().unwrap();
            assert_eq!(decimal(a), decimal(x), "{path}: {a} is not {x}");
        }
        _ => assert_eq!(actual, expected, "{path}"),
    }
}

/// Today's fixture lines: (event payload, expected outcome by default).
pub(crate) fn fixtures() -> Vec<(String, Value)> {
    fixture_cases(UPSTREAM_EVENTS, "upstream-expected.jsonl")
}

/// The seed's fixture lines: (event payload, expected outcome under
/// [`Contract::seed`]).
pub(crate) fn seed_fixtures() -> Vec<(String, Value)> {
    fixture_cases(SEED_EVENTS, "expected.jsonl")
}

/// Runs today's fixture file through a real pipeline at ETH/USD 3500 with
/// the default settings, ensuring and delivering through `client`; returns
/// the pipeline (for its tally) and whether every record settled.
pub(crate) async fn run_fixtures(client: OpenMeterClient, dlq: DeadLetterSink) -> (Pipeline, bool) {
    run_fixtures_with(client, dlq, UPSTREAM_EVENTS, PipelineConfig::default()).await
}

/// A pipeline at ETH/USD 3500 that ensures the default plan through
/// `client` and dead-letters to `dlq`.
pub(crate) fn test_pipeline(
    client: OpenMeterClient,
    dlq: DeadLetterSink,
    ensure: EnsureConfig,
    config: PipelineConfig,
) -> Pipeline {
    let provisioner = Provisioner::new(client, PLAN.parse().unwrap(), ensure);
    pipeline(
        provisioner,
        dlq,
        Arc::new(OffsetTracker::default()),
        PriceFeed::fixed("3500".parse().unwrap()),
        config,
    )
}

/// Runs fixture file `events` with the given pipeline settings.
pub(crate) async fn run_fixtures_with(
    client: OpenMeterClient,
    dlq: DeadLetterSink,
    events: &str,
    config: PipelineConfig,
) -> (Pipeline, bool) {
    let pipeline = test_pipeline(client, dlq, EnsureConfig::default(), config);
    let file = tokio::fs::File::open(fixtures_dir().join(events))
        .await
        .unwrap();
    let settled = pipeline
        .run_lines(
            tokio::io::BufReader::new(file),
            "fixtures",
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    (pipeline, settled)
}

/// A started OpenMeter double with the default catalog bootstrapped.
pub(crate) struct OpenMeter {
    pub double: Double,
    pub running: RunningDouble,
}

impl OpenMeter {
    pub(crate) async fn start(token: Option<&str>) -> Self {
        let double = Double::new(DoubleConfig {
            token: token.map(str::to_owned),
            ..Default::default()
        });
        let running = double.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
        Self { double, running }
    }

    pub(crate) async fn bootstrapped(token: Option<&str>) -> Self {
        let om = Self::start(token).await;
        let client = om.client(token);
        let catalog = Catalog::builtin(&PLAN.parse().unwrap());
        bootstrap(&client, &catalog, &BootstrapOptions::default())
            .await
            .unwrap();
        om.double.reset_counters();
        om
    }

    pub(crate) fn url(&self) -> String {
        self.running.base_url()
    }

    pub(crate) fn client(&self, token: Option<&str>) -> OpenMeterClient {
        let endpoint = Endpoint::parse(&self.url(), None).unwrap();
        let mut config = ClientConfig::new(endpoint, token.map(ticketmeter::Secret::from));
        config.backoff.base = Duration::from_millis(10);
        config.backoff.max = Duration::from_millis(200);
        OpenMeterClient::new(config).unwrap()
    }
}

/// Polls `check` until it holds or `timeout` passes.
pub(crate) async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// Where a test broker keeps its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Storage {
    /// tansu's SQLite engine in a temporary directory: durable across a
    /// broker restart, and it serves fetches that start inside a batch.
    Sqlite,
    /// tansu's memory engine: a fetch starting inside a record batch comes
    /// back empty (see the reference README), which is a real broker fault
    /// to test the stall watchdog against.
    Memory,
}

/// How long a dead letter is waited for on the DLQ topic.
pub(crate) const LETTER_WAIT: Duration = Duration::from_secs(90);

/// A dead letter as read back from the DLQ topic.
pub(crate) struct Letter {
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Letter {
    /// The `ticketmeter.dlq.<name>` header.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let key = format!("ticketmeter.dlq.{name}");
        self.headers
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A tansu broker on a loopback port; killed on drop.
pub(crate) struct Broker {
    child: Child,
    pub addr: SocketAddr,
    storage: Storage,
    dir: tempfile::TempDir,
}

fn tansu_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("TANSU_BIN") {
        return bin.into();
    }
    let cargo_bin = dirs_home().join(".cargo/bin/tansu");
    if cargo_bin.exists() {
        return cargo_bin;
    }
    PathBuf::from("tansu")
}

fn dirs_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
}

impl Broker {
    /// A broker on SQLite storage (the default for tests).
    pub(crate) fn start() -> Self {
        Self::start_with(Storage::Sqlite)
    }

    pub(crate) fn start_with(storage: Storage) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = spawn_tansu(addr, storage, dir.path());
        Self {
            child,
            addr,
            storage,
            dir,
        }
    }

    /// Kills the broker (SIGKILL: no clean shutdown).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same port and storage.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.child = spawn_tansu(self.addr, self.storage, self.dir.path());
    }

    pub(crate) fn brokers(&self) -> String {
        self.addr.to_string()
    }

    /// Committed offset of each partition of the collector's group
    /// (empty while the broker cannot answer).
    pub(crate) fn committed(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = RdConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", "openmeter-collector")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        consumer
            .committed_offsets(tpl, Duration::from_secs(5))
            .map(|offsets| {
                offsets
                    .elements()
                    .iter()
                    .map(|e| e.offset().to_raw().unwrap_or(-1))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reads up to `expected` dead letters from the DLQ `topic`, waiting
    /// at most [`LETTER_WAIT`] for each.
    pub(crate) async fn read_letters(&self, topic: &str, expected: usize) -> Vec<Letter> {
        let consumer: StreamConsumer = RdConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", format!("dlq-reader-{}", free_port()))
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let mut out = Vec::new();
        while out.len() < expected {
            let Ok(Ok(m)) = tokio::time::timeout(LETTER_WAIT, consumer.recv()).await else {
                break;
            };
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                            (h.key.to_owned(), value.into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Letter {
                headers,
                payload: m.payload().unwrap_or_default().to_vec(),
            });
        }
        out
    }

    /// Produces `payloads` to partition 0 in one record batch (linger), so a
    /// consumer that resumes inside it meets tansu memory storage's fault.
    pub(crate) async fn produce_one_batch(&self, topic: &str, payloads: &[String]) {
        let producer: FutureProducer = RdConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("linger.ms", "500")
            .set("batch.num.messages", "10000")
            .create()
            .unwrap();
        let sends = payloads.iter().map(|p| {
            let record = FutureRecord::to(topic)
                .payload(p.as_str())
                .key("k")
                .partition(0);
            producer.send(record, Duration::from_secs(10))
        });
        for sent in futures::future::join_all(sends).await {
            sent.unwrap();
        }
    }

    pub(crate) async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = RdConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .unwrap();
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = admin
            .create_topics([&topic], &AdminOptions::new())
            .await
            .unwrap();
        for r in results {
            r.unwrap();
        }
    }

    pub(crate) fn producer(&self) -> FutureProducer {
        RdConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("message.timeout.ms", "10000")
            .create()
            .unwrap()
    }

    /// Produces each payload, keyed by its envelope id, round-robin over partitions.
    pub(crate) async fn produce(&self, topic: &str, payloads: &[String], partitions: i32) {
        let producer = self.producer();
        for (i, payload) in payloads.iter().enumerate() {
            let key = serde_json::from_str::<Value>(payload)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned))
                .unwrap_or_else(|| i.to_string());
            let record = FutureRecord::to(topic)
                .payload(payload.as_str())
                .key(&key)
                .partition(i as i32 % partitions);
            producer
                .send(record, Duration::from_secs(10))
                .await
                .unwrap();
        }
    }
}

/// Starts tansu and waits until it accepts connections. SQLite's path is
/// relative to the broker's working directory (tansu joins the URL's host
/// and path onto it), so the broker runs inside `dir`.
fn spawn_tansu(addr: SocketAddr, storage: Storage, dir: &std::path::Path) -> Child {
    let url = format!("tcp://{addr}");
    let engine = match storage {
        Storage::Sqlite => "sqlite://tansu.db",
        Storage::Memory => "memory://tansu/",
    };
    let child = Command::new(tansu_bin())
        .current_dir(dir)
        .args(["broker", "--storage-engine", engine])
        .args(["--listener-url", &url, "--advertised-listener-url", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu is installed (scripts/test.sh installs it: cargo install tansu --locked --features dynostore,libsql)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "tansu did not start on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `ticketmeter` binary under test: cargo's, unless `TICKETMETER_BIN`
/// names a copy (engineers sharing one target directory overwrite each
/// other's `target/debug/ticketmeter` while a long test runs).
pub(crate) fn binary_path() -> PathBuf {
    std::env::var_os("TICKETMETER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ticketmeter")))
}

/// The real `ticketmeter` binary, running a subcommand; killed on drop.
/// Its stderr is drained as it comes, so a chatty child never blocks on a
/// full pipe.
pub(crate) struct Binary {
    pub child: Child,
    log: Arc<std::sync::Mutex<String>>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Binary {
    pub(crate) fn spawn(args: &[&str], env: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(binary_path());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd.env("RUST_LOG", "warn,ticketmeter=info");
        // Spilled dead letters go to a scratch directory, never the checkout
        // (a test that spills sets its own).
        cmd.env(
            "DLQ_SPILL_DIR",
            std::env::temp_dir().join(format!("ticketmeter-test-spill-{}", std::process::id())),
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let drain = child.stderr.take().map(|stderr| {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            })
        });
        Self { child, log, drain }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub(crate) fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        self.wait(within)
    }

    /// SIGKILL: the crash case.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the child wrote to stderr so far (all of it once it exited).
    pub(crate) fn stderr(&mut self) -> String {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            if let Some(drain) = self.drain.take() {
                let _ = drain.join();
            }
        }
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment a collector needs, in the original's variable names.
pub(crate) fn collector_env(
    brokers: &str,
    topic: &str,
    openmeter_url: &str,
    api_port: u16,
) -> Vec<(&'static str, String)> {
    vec![
        ("KAFKA_BROKERS", brokers.to_owned()),
        ("KAFKA_GATEWAY_TOPIC", topic.to_owned()),
        ("OPENMETER_URL", openmeter_url.to_owned()),
        ("OPENMETER_API_KEY", TOKEN.to_owned()),
        ("ETH_USD_PRICE", "3500".to_owned()),
        ("PROVISION_PORT", api_port.to_string()),
        ("BATCH_LINGER", "50ms".to_owned()),
        ("KAFKA_COMMIT_INTERVAL", "200ms".to_owned()),
        (
            "KAFKA_OPT_TOPIC_METADATA_REFRESH_INTERVAL_MS",
            "1000".to_owned(),
        ),
    ]
}

/// Runs `lines` through the pipeline as one JSON-lines stream and asserts
/// that every record settled.
pub(crate) async fn run_lines(pipeline: &Pipeline, lines: &[String]) {
    let text = lines.join("\n") + "\n";
    let settled = pipeline
        .run_lines(
            std::io::Cursor::new(text.into_bytes()),
            "test",
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(settled, "every record settled");
}

/// The payloads with `data.current_time` set to now (those without a
/// `data` object as they are).
pub(crate) fn signed_now(payloads: &[String]) -> Vec<String> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    payloads
        .iter()
        .map(|p| match serde_json::from_str::<Value>(p) {
            Ok(mut v) if v["data"].is_object() => {
                v["data"]["current_time"] = Value::String(now.clone());
                v.to_string()
            }
            _ => p.clone(),
        })
        .collect()
}

impl OpenMeter {
    /// Creates, through ticketmeter's provisioner, the customer of every
    /// payload with a valid identity (by the default rules).
    pub(crate) async fn ensure_customers_of(&self, token: Option<&str>, payloads: &[String]) {
        let provisioner = Provisioner::new(
            self.client(token),
            PLAN.parse().unwrap(),
            EnsureConfig::default(),
        );
        for payload in payloads {
            let Ok(Decoded::Ticket(ticket)) =
                decode(payload.as_bytes(), DEFAULT_MAX_BYTES, &Contract::default())
            else {
                continue;
            };
            provisioner.ensure(&ticket.identity).await.unwrap();
        }
    }
}
