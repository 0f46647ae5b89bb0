//! Dead-letter queue: records that cannot be billed, kept whole with the
//! reason, so nothing is dropped and `ticketmeter dlq replay` can feed them
//! back once the cause is fixed.
//!
//! A record counts as finished only after its dead letter is durably
//! written (Kafka acknowledged it, or a file was synced). Only transient
//! failures are retried (a broker down, a full disk): a letter the DLQ
//! topic refuses for good is never retried for ever, which would stop
//! every partition behind it. Instead:
//! - too large for the topic: the full original is spilled to
//!   `DLQ_SPILL_DIR` first, then the letter goes to the topic with its
//!   payload truncated to fit and the original's size and SHA-256 in
//!   headers;
//! - the topic refuses it (unknown, not authorised, invalid): the whole
//!   letter is spilled.
//!
//! Spilled letters are JSON lines (see [`FileEntry`]) in
//! `DLQ_SPILL_DIR/dead-letters.jsonl`, which `dlq replay --file` reads.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use crate::health::health;
use crate::metrics::{metrics, Cause};
use crate::retry::Backoff;
use crate::source::kafka::KafkaConfig;
use crate::source::Record;

/// Header names on dead letters in the DLQ topic.
pub(crate) const HEADER_PREFIX: &str = "ticketmeter.dlq.";

/// Why a record was dead-lettered, as a low-cardinality class: the
/// `ticketmeter.dlq.kind` header, the dead-letter file's `kind` and the
/// `reason` label of `events_dead_lettered_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterKind {
    /// Not a readable event envelope (empty, too large, too deep, no type).
    Malformed,
    /// A ticket whose data cannot be billed as sent.
    InvalidData,
    /// No usable `auth_id`.
    Identity,
    /// A fee that is not a non-negative integer of wei, or overflows.
    Fee,
    /// OpenMeter rejected the event itself.
    Rejected,
    /// OpenMeter refused to find or create the customer.
    CustomerRejected,
    /// OpenMeter refused the customer's subscription or billing setup.
    SubscriptionRefused,
}

impl DeadLetterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::InvalidData => "invalid_data",
            Self::Identity => "identity",
            Self::Fee => "fee",
            Self::Rejected => "rejected",
            Self::CustomerRejected => "customer_rejected",
            Self::SubscriptionRefused => "subscription_refused",
        }
    }
}

impl fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record that will not be billed, and why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub record: Record,
    pub reason: String,
    pub kind: DeadLetterKind,
    pub at: DateTime<Utc>,
}

impl DeadLetter {
    pub fn new(record: Record, kind: DeadLetterKind, reason: impl Into<String>) -> Self {
        Self {
            record,
            reason: reason.into(),
            kind,
            at: Utc::now(),
        }
    }
}

/// Room kept for headers (ours and the original's) and record framing on
/// top of `MAX_EVENT_BYTES` in the DLQ producer's `message.max.bytes`.
pub(crate) const HEADER_ALLOWANCE: usize = 64 * 1024;
/// Bytes of framing librdkafka and the broker count beyond key, value and
/// headers (record batch header and per-record varints), rounded up.
const RECORD_OVERHEAD: usize = 512;
/// A Kafka broker's default `message.max.bytes` (1,048,588) less its
/// batch framing, rounded down: a letter this size fits a stock broker.
const STOCK_BROKER_FIT: usize = 1_000_000;
/// The last payload sizes tried before a letter counts as refused.
const SMALL_FITS: [usize; 2] = [64 * 1024, 0];
/// Longest `reason` header kept (OpenMeter's detail can be long).
const MAX_REASON_BYTES: usize = 4 * 1024;
/// The spill file's name inside `DLQ_SPILL_DIR`.
pub(crate) const SPILL_FILE: &str = "dead-letters.jsonl";

#[derive(Debug, Error)]
pub enum DlqError {
    #[error("dead-letter topic {topic}: {error}")]
    Kafka {
        topic: String,
        #[source]
        error: KafkaError,
    },
    #[error("cannot create the dead-letter producer: {0}")]
    Producer(#[source] KafkaError),
    #[error("KAFKA_OPT_MESSAGE_MAX_BYTES={configured} is below MAX_EVENT_BYTES ({max_event_bytes}) plus {HEADER_ALLOWANCE} bytes for headers: dead letters of records MAX_EVENT_BYTES allows would be truncated; raise it to at least {needed} or lower MAX_EVENT_BYTES")]
    Inconsistent {
        configured: usize,
        max_event_bytes: usize,
        needed: usize,
    },
    #[error("DLQ_SPILL_DIR {path} is not usable: {source}")]
    SpillDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dead-letter file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where dead letters go.
#[derive(Clone)]
pub enum DeadLetterSink {
    /// A Kafka topic (default `<topic>.dlq`): original key, payload and
    /// headers, plus `ticketmeter.dlq.*` headers with the reason and origin.
    Kafka(Arc<KafkaDlq>),
    /// A JSON-lines file, one [`FileEntry`] per line.
    File {
        path: PathBuf,
        lock: Arc<tokio::sync::Mutex<()>>,
    },
    /// Kept in memory (the demo and `--dry-run` print them at the end).
    Memory(Arc<Mutex<Vec<DeadLetter>>>),
}

impl DeadLetterSink {
    /// The Kafka sink. Checks at start-up that the producer can carry a
    /// letter of `max_event_bytes` plus headers, and that the spill
    /// directory can be written.
    pub fn kafka(
        config: &KafkaConfig,
        topic: String,
        max_event_bytes: usize,
        spill_dir: &Path,
    ) -> Result<Self, DlqError> {
        let needed = max_event_bytes.saturating_add(HEADER_ALLOWANCE);
        let mut client = config.client_config();
        let configured = client
            .get("message.max.bytes")
            .and_then(|v| v.parse::<usize>().ok());
        let message_max = match configured {
            Some(configured) if configured < needed => {
                return Err(DlqError::Inconsistent {
                    configured,
                    max_event_bytes,
                    needed,
                })
            }
            Some(configured) => configured,
            None => needed,
        };
        let producer = client
            .set("message.max.bytes", message_max.to_string())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .map_err(DlqError::Producer)?;
        let spill = Spill::open(spill_dir)?;
        Ok(Self::Kafka(Arc::new(KafkaDlq {
            producer,
            topic,
            message_max,
            spill,
        })))
    }

    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::File {
            path: path.into(),
            lock: Arc::default(),
        }
    }

    pub fn memory() -> Self {
        Self::Memory(Arc::default())
    }

    /// The dead letters kept by a memory sink (empty for the others).
    pub fn kept(&self) -> Vec<DeadLetter> {
        match self {
            Self::Memory(kept) => kept.lock().map(|k| k.clone()).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Writes one dead letter, retrying transient failures until it
    /// succeeds (refusals for good are spilled, never retried).
    pub async fn put(&self, letter: &DeadLetter) {
        let backoff = Backoff::default();
        let mut attempt = 1;
        while let Err(e) = self.write(letter).await {
            let wait = backoff.delay(attempt, None);
            tracing::error!(error = %e, ?wait, "cannot write dead letter; retrying (its offset stays uncommitted)");
            health().held(format!("the dead-letter queue cannot be written: {e}"));
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
        health().progressed();
        tracing::warn!(
            source = %letter.record.origin.source,
            partition = letter.record.origin.position.partition,
            offset = letter.record.origin.position.offset,
            reason = %letter.reason,
            "dead-lettered"
        );
    }

    async fn write(&self, letter: &DeadLetter) -> Result<(), DlqError> {
        match self {
            Self::Kafka(dlq) => dlq.write(letter).await,
            Self::File { path, lock } => {
                let _guard = lock.lock().await;
                append_line(path, &FileEntry::from(letter)).await
            }
            Self::Memory(kept) => {
                if let Ok(mut kept) = kept.lock() {
                    kept.push(letter.clone());
                }
                Ok(())
            }
        }
    }
}

/// The Kafka dead-letter topic, with the spill file for what it refuses.
pub struct KafkaDlq {
    producer: FutureProducer,
    topic: String,
    /// The producer's `message.max.bytes`.
    message_max: usize,
    spill: Spill,
}

/// Why a letter could not go to the topic as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Too large for the producer or the broker: try a shorter payload.
    TooLarge,
    /// The topic will not take it at any size (unknown, not authorised…).
    ForGood,
}

/// Sorts a produce error: `None` is transient (worth retrying).
fn refusal(e: &KafkaError) -> Option<Refusal> {
    use rdkafka::types::RDKafkaErrorCode as C;
    let KafkaError::MessageProduction(code) = e else {
        return None;
    };
    match code {
        C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize => {
            Some(Refusal::TooLarge)
        }
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::UnknownTopicOrPartition
        | C::UnknownTopic
        | C::UnknownPartition
        | C::InvalidTopic
        | C::InvalidRecord
        | C::InvalidRequiredAcks
        | C::PolicyViolation => Some(Refusal::ForGood),
        _ => None,
    }
}

/// How a letter's payload was cut to fit the topic.
struct Truncation {
    original_size: usize,
    sha256: String,
}

impl KafkaDlq {
    /// Sends the letter whole when it fits; else spills the original and
    /// sends it truncated, shorter each time the topic says it is too
    /// large; spills the whole letter when the topic refuses it for good.
    async fn write(&self, letter: &DeadLetter) -> Result<(), DlqError> {
        let full = letter.record.payload.len();
        let room = self
            .message_max
            .saturating_sub(RECORD_OVERHEAD + letter_overhead(letter));
        let mut keep = full.min(room);
        let mut spilled = false;
        loop {
            if keep < full && !spilled {
                self.spill.write(letter).await?;
                spilled = true;
                metrics()
                    .dead_letters_spilled
                    .get_or_create(&Cause { cause: "truncated" })
                    .inc();
            }
            let truncation = (keep < full).then(|| Truncation {
                original_size: full,
                sha256: sha256_hex(&letter.record.payload),
            });
            let error = match self.send(letter, keep, truncation.as_ref()).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let next = match refusal(&error) {
                None => {
                    return Err(DlqError::Kafka {
                        topic: self.topic.clone(),
                        error,
                    })
                }
                Some(Refusal::TooLarge) => smaller_fit(keep, letter_overhead(letter)),
                Some(Refusal::ForGood) => None,
            };
            match next {
                Some(smaller) => keep = smaller,
                None => return self.refused(letter, spilled, &error).await,
            }
        }
    }

    /// The topic will not take the letter: it is kept in the spill file.
    async fn refused(
        &self,
        letter: &DeadLetter,
        spilled: bool,
        error: &KafkaError,
    ) -> Result<(), DlqError> {
        if !spilled {
            self.spill.write(letter).await?;
        }
        metrics()
            .dead_letters_spilled
            .get_or_create(&Cause { cause: "refused" })
            .inc();
        tracing::error!(
            topic = %self.topic,
            %error,
            spill = %self.spill.path.display(),
            "the dead-letter topic refused a letter for good; it is kept in the spill file (replay it with `ticketmeter dlq replay --file`)"
        );
        Ok(())
    }

    /// Produces the letter with its payload cut to `keep` bytes.
    async fn send(
        &self,
        letter: &DeadLetter,
        keep: usize,
        truncation: Option<&Truncation>,
    ) -> Result<(), KafkaError> {
        let headers = self.headers(letter, truncation);
        let payload = &letter.record.payload[..keep];
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
            .payload(payload)
            .headers(headers);
        if let Some(key) = &letter.record.key {
            record = record.key(key.as_ref());
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    fn headers(&self, letter: &DeadLetter, truncation: Option<&Truncation>) -> OwnedHeaders {
        let mut headers = OwnedHeaders::new();
        for (key, value) in original_headers(letter) {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_ref()),
            });
        }
        let mut meta = meta_headers(letter);
        if let Some(t) = truncation {
            meta.extend([
                ("truncated", "true".to_owned()),
                ("original.size", t.original_size.to_string()),
                ("original.sha256", t.sha256.clone()),
                ("spill", self.spill.path.display().to_string()),
            ]);
        }
        for (name, value) in &meta {
            let key = format!("{HEADER_PREFIX}{name}");
            headers = headers.insert(Header {
                key: &key,
                value: Some(value.as_bytes()),
            });
        }
        headers
    }
}

/// The value of dead-letter header `ticketmeter.dlq.<name>` among
/// `headers`, as text.
pub(crate) fn letter_header(headers: &[(String, Bytes)], name: &str) -> Option<String> {
    let key = format!("{HEADER_PREFIX}{name}");
    headers
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// The record's own headers, less any `ticketmeter.dlq.*` of an earlier
/// dead-lettering (a replayed letter gets fresh ones).
fn original_headers(letter: &DeadLetter) -> impl Iterator<Item = &(String, Bytes)> {
    letter
        .record
        .headers
        .iter()
        .filter(|(k, _)| !k.starts_with(HEADER_PREFIX))
}

/// `ticketmeter.dlq.*` headers: reason, kind and origin.
fn meta_headers(letter: &DeadLetter) -> Vec<(&'static str, String)> {
    let origin = &letter.record.origin;
    vec![
        (
            "reason",
            truncate_utf8(&letter.reason, MAX_REASON_BYTES).to_owned(),
        ),
        ("kind", letter.kind.as_str().to_owned()),
        ("source.topic", origin.source.to_string()),
        ("source.partition", origin.position.partition.to_string()),
        ("source.offset", origin.position.offset.to_string()),
        (
            "time",
            letter.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        ),
    ]
}

/// Bytes a letter carries besides its payload: key, headers, and room for
/// the truncation headers.
fn letter_overhead(letter: &DeadLetter) -> usize {
    let key = letter.record.key.as_ref().map_or(0, Bytes::len);
    let original: usize = original_headers(letter)
        .map(|(k, v)| k.len() + v.len())
        .sum();
    let meta: usize = meta_headers(letter)
        .iter()
        .map(|(k, v)| HEADER_PREFIX.len() + k.len() + v.len())
        .sum();
    key + original + meta + 1024
}

/// The next payload size to try after the topic said `keep` is too large:
/// a stock broker's limit, then 64 KiB, then none; `None` when even an
/// empty payload was refused.
fn smaller_fit(keep: usize, overhead: usize) -> Option<usize> {
    let stock = STOCK_BROKER_FIT.saturating_sub(RECORD_OVERHEAD + overhead);
    std::iter::once(stock)
        .chain(SMALL_FITS)
        .find(|size| *size < keep)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The longest prefix of `text` within `max` bytes, on a char boundary.
fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    &text[..end]
}

/// The local file that keeps what the DLQ topic refuses.
struct Spill {
    path: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl Spill {
    /// Creates the directory and checks the file can be appended to.
    fn open(dir: &Path) -> Result<Self, DlqError> {
        let path = dir.join(SPILL_FILE);
        let unusable = |source| DlqError::SpillDir {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(unusable)?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(unusable)?;
        Ok(Self {
            path,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    async fn write(&self, letter: &DeadLetter) -> Result<(), DlqError> {
        let _guard = self.lock.lock().await;
        append_line(&self.path, &FileEntry::from(letter)).await
    }
}

/// One line of a dead-letter file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileEntry {
    pub(crate) reason: String,
    pub(crate) kind: String,
    pub(crate) time: String,
    pub(crate) source: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// The original payload, when it is UTF-8 (it nearly always is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) payload: Option<String>,
    /// The original payload in hex, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) payload_hex: Option<String>,
}

impl From<&DeadLetter> for FileEntry {
    fn from(letter: &DeadLetter) -> Self {
        let bytes = &letter.record.payload;
        let text = std::str::from_utf8(bytes).ok().map(str::to_owned);
        Self {
            reason: letter.reason.clone(),
            kind: letter.kind.as_str().to_owned(),
            time: letter.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            source: letter.record.origin.source.to_string(),
            partition: letter.record.origin.position.partition,
            offset: letter.record.origin.position.offset,
            payload_hex: text
                .is_none()
                .then(|| bytes.iter().map(|b| format!("{b:02x}")).collect()),
            payload: text,
        }
    }
}

/// The original payload of one line of a dead-letter file, for
/// `dlq replay --file` (see [`crate::source::file::LineReader`]).
pub(crate) fn letter_line(line: &[u8]) -> Option<Bytes> {
    serde_json::from_slice::<FileEntry>(line)
        .ok()?
        .payload_bytes()
}

impl FileEntry {
    /// The original payload bytes.
    pub(crate) fn payload_bytes(&self) -> Option<Bytes> {
        if let Some(text) = &self.payload {
            return Some(Bytes::from(text.clone().into_bytes()));
        }
        let hex = self.payload_hex.as_deref()?;
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect();
        bytes.map(Bytes::from)
    }
}

async fn append_line(path: &Path, entry: &FileEntry) -> Result<(), DlqError> {
    let io = |source| DlqError::File {
        path: path.to_owned(),
        source,
    };
    let mut line = serde_json::to_vec(entry).map_err(|e| io(e.into()))?;
    line.push(b'\n');
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(io)?;
    file.write_all(&line).await.map_err(io)?;
    file.sync_data().await.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::Position;
    use crate::source::Origin;

    fn letter(payload: &[u8]) -> DeadLetter {
        let record = Record {
            payload: Bytes::copy_from_slice(payload),
            key: None,
            headers: vec![],
            origin: Origin {
                source: Arc::from("t"),
                position: Position {
                    partition: 2,
                    offset: 7,
                },
            },
        };
        DeadLetter::new(
            record,
            DeadLetterKind::Fee,
            "computed_fee is not a non-negative integer",
        )
    }

    #[test]
    fn only_transient_produce_errors_are_retried() {
        use rdkafka::types::RDKafkaErrorCode as C;
        let produce = KafkaError::MessageProduction;
        assert_eq!(
            refusal(&produce(C::MessageSizeTooLarge)),
            Some(Refusal::TooLarge)
        );
        for code in [
            C::TopicAuthorizationFailed,
            C::UnknownTopicOrPartition,
            C::UnknownTopic,
            C::InvalidTopic,
        ] {
            assert_eq!(refusal(&produce(code)), Some(Refusal::ForGood), "{code:?}");
        }
        for code in [
            C::MessageTimedOut,
            C::AllBrokersDown,
            C::QueueFull,
            C::NotLeaderForPartition,
        ] {
            assert_eq!(refusal(&produce(code)), None, "{code:?}");
        }
    }

    #[test]
    fn a_letter_too_large_for_the_broker_shrinks_to_stock_then_64k_then_nothing() {
        let overhead = 2000;
        let stock = STOCK_BROKER_FIT - RECORD_OVERHEAD - overhead;
        assert_eq!(smaller_fit(1 << 20, overhead), Some(stock));
        assert_eq!(smaller_fit(stock, overhead), Some(64 * 1024));
        assert_eq!(smaller_fit(64 * 1024, overhead), Some(0));
        assert_eq!(smaller_fit(0, overhead), None);
    }

    #[test]
    fn the_original_is_identified_by_its_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        assert_eq!(truncate_utf8("ééé", 3), "é");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }

    #[test]
    fn a_producer_limit_below_max_event_bytes_plus_headers_is_refused_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let config = KafkaConfig {
            brokers: "127.0.0.1:9".into(),
            topic: "t".into(),
            group: "g".into(),
            sasl_username: None,
            sasl_password: None,
            sasl_mechanism: "PLAIN".into(),
            tls: false,
            extra: vec![("message.max.bytes".into(), "1000000".into())],
            commit_interval: Duration::from_secs(1),
            stall_after: Duration::from_secs(60),
        };
        let made = DeadLetterSink::kafka(&config, "t.dlq".into(), 1 << 20, dir.path());
        assert!(matches!(made, Err(DlqError::Inconsistent { .. })));
    }

    #[test]
    fn file_entry_keeps_utf8_payload_verbatim() {
        let e = FileEntry::from(&letter(br#"{"a":1}"#));
        assert_eq!(e.payload.as_deref(), Some(r#"{"a":1}"#));
        assert_eq!((e.partition, e.offset), (2, 7));
        assert_eq!(e.payload_bytes().unwrap().as_ref(), br#"{"a":1}"#);
    }

    #[test]
    fn file_entry_round_trips_binary_payload_as_hex() {
        let e = FileEntry::from(&letter(&[0xff, 0x00, 0x10]));
        assert_eq!(e.payload_hex.as_deref(), Some("ff0010"));
        assert_eq!(e.payload_bytes().unwrap().as_ref(), &[0xff, 0x00, 0x10]);
    }

    #[tokio::test]
    async fn file_sink_appends_one_json_line_per_letter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dlq.jsonl");
        let sink = DeadLetterSink::file(&path);
        sink.put(&letter(b"x")).await;
        sink.put(&letter(b"y")).await;
        let text = std::fs::read_to_string(&path).unwrap();
        let entries: Vec<FileEntry> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[1].reason,
            "computed_fee is not a non-negative integer"
        );
    }
}
