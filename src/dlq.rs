//! Dead-letter queue: records that cannot be billed, kept whole with the
//! reason, so nothing is dropped and `ticketmeter dlq replay` can feed them
//! back once the cause is fixed.
//!
//! A record counts as finished only after its dead letter is durably
//! written (Kafka acknowledged it, or the file was synced); a failing sink
//! is retried for as long as it takes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use crate::commit::Position;
use crate::metrics::metrics;
use crate::retry::Backoff;
use crate::source::kafka::KafkaConfig;
use crate::source::{Origin, Record};

/// Header names on dead letters in the DLQ topic.
pub const HEADER_PREFIX: &str = "ticketmeter.dlq.";

/// A record that will not be billed, and why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub record: Record,
    pub reason: String,
    /// Low-cardinality class of the reason, for metrics.
    pub kind: &'static str,
    pub at: DateTime<Utc>,
}

impl DeadLetter {
    pub fn new(record: Record, kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            record,
            reason: reason.into(),
            kind,
            at: Utc::now(),
        }
    }
}

#[derive(Debug, Error)]
pub enum DlqError {
    #[error("dead-letter topic {topic}: {message}")]
    Kafka { topic: String, message: String },
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
    Kafka {
        producer: FutureProducer,
        topic: String,
    },
    /// A JSON-lines file, one [`FileEntry`] per line.
    File {
        path: PathBuf,
        lock: Arc<tokio::sync::Mutex<()>>,
    },
    /// Kept in memory (the demo and `--dry-run` print them at the end).
    Memory(Arc<Mutex<Vec<DeadLetter>>>),
}

impl DeadLetterSink {
    pub fn kafka(config: &KafkaConfig, topic: String) -> Result<Self, DlqError> {
        let producer = config
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .map_err(|e| DlqError::Kafka {
                topic: topic.clone(),
                message: e.to_string(),
            })?;
        Ok(Self::Kafka { producer, topic })
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

    /// Writes one dead letter, retrying a failing sink until it succeeds.
    pub async fn put(&self, letter: &DeadLetter) {
        let backoff = Backoff::default();
        let mut attempt = 1;
        while let Err(e) = self.write(letter).await {
            let wait = backoff.delay(attempt, None);
            tracing::error!(error = %e, ?wait, "cannot write dead letter; retrying (its offset stays uncommitted)");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
        metrics().dead_lettered(letter.kind);
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
            Self::Kafka { producer, topic } => write_kafka(producer, topic, letter).await,
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

async fn write_kafka(
    producer: &FutureProducer,
    topic: &str,
    letter: &DeadLetter,
) -> Result<(), DlqError> {
    let origin = &letter.record.origin;
    let mut headers = OwnedHeaders::new();
    for (key, value) in letter
        .record
        .headers
        .iter()
        .filter(|(k, _)| !k.starts_with(HEADER_PREFIX))
    {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_ref()),
        });
    }
    let meta = [
        ("reason", letter.reason.clone()),
        ("kind", letter.kind.to_owned()),
        ("source.topic", origin.source.to_string()),
        ("source.partition", origin.position.partition.to_string()),
        ("source.offset", origin.position.offset.to_string()),
        (
            "time",
            letter.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        ),
    ];
    for (name, value) in &meta {
        let key = format!("{HEADER_PREFIX}{name}");
        headers = headers.insert(Header {
            key: &key,
            value: Some(value.as_bytes()),
        });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
        .payload(letter.record.payload.as_ref())
        .headers(headers);
    if let Some(key) = &letter.record.key {
        record = record.key(key.as_ref());
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(e, _)| DlqError::Kafka {
            topic: topic.to_owned(),
            message: e.to_string(),
        })
}

/// One line of a dead-letter file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub reason: String,
    pub kind: String,
    pub time: String,
    pub source: String,
    pub partition: i32,
    pub offset: i64,
    /// The original payload, when it is UTF-8 (it nearly always is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The original payload in hex, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_hex: Option<String>,
}

impl From<&DeadLetter> for FileEntry {
    fn from(letter: &DeadLetter) -> Self {
        let bytes = &letter.record.payload;
        let text = std::str::from_utf8(bytes).ok().map(str::to_owned);
        Self {
            reason: letter.reason.clone(),
            kind: letter.kind.to_owned(),
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

impl FileEntry {
    /// The original payload bytes.
    pub fn payload_bytes(&self) -> Option<Bytes> {
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

    /// The entry as a record to replay, positioned at `line` of `file`.
    pub fn into_record(self, file: Arc<str>, line: i64) -> Option<Record> {
        Some(Record {
            payload: self.payload_bytes()?,
            key: None,
            headers: Vec::new(),
            origin: Origin {
                source: file,
                position: Position {
                    partition: 0,
                    offset: line,
                },
            },
        })
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
        DeadLetter::new(record, "fee", "computed_fee is not a non-negative integer")
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
