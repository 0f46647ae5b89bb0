//! A real Kafka-protocol broker (tansu) on a loopback port, and the Kafka
//! clients the tests read and write it with.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig as RdConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::TopicPartitionList;
use serde_json::Value;

use super::free_port;

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

    /// How many records partition 0 of `topic` holds (its high watermark).
    pub(crate) fn records_in(&self, topic: &str) -> i64 {
        let consumer: BaseConsumer = RdConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", format!("watermark-reader-{}", free_port()))
            .create()
            .unwrap();
        let (_, high) = consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .unwrap();
        high
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
