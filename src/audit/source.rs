//! Re-reading the source range: JSON lines from a file, or a Kafka topic
//! read by partition from the offsets for the range's start time up to the
//! high watermark seen when the audit began. The Kafka reader assigns
//! partitions itself under a throw-away group id and never commits, so the
//! collector's consumer group is never touched.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::ProgressBar;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use super::error::AuditError;
use crate::kafka::{owned_headers, KafkaConfig};

/// Where signed events (or dead letters) are read from.
#[derive(Debug, Clone)]
pub(crate) enum SourceSpec {
    /// JSON lines, as `replay` reads them.
    File(PathBuf),
    /// `config.topic`, in the brokers of `config`.
    Kafka(KafkaConfig),
}

impl SourceSpec {
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Kafka(config) => format!("Kafka topic {}", config.topic),
        }
    }
}

/// One record as read.
#[derive(Debug, Clone)]
pub(crate) struct RawRecord {
    pub(crate) payload: Bytes,
    /// `file:line` or `topic/partition@offset`, to name undecodable records.
    pub(crate) position: String,
    pub(crate) headers: Vec<(String, Bytes)>,
}

/// Which Kafka records to read, by record timestamp (ms). Producers stamp a
/// record when the signer sends it, a moment after it signed, so both ends
/// are widened by [`KAFKA_SKEW`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct KafkaWindow {
    pub(crate) start_ms: i64,
    /// A partition is done at its first record stamped after this.
    pub(crate) stop_after_ms: Option<i64>,
}

/// Allowance between signing a ticket and its record's Kafka timestamp.
pub(crate) const KAFKA_SKEW: Duration = Duration::from_secs(300);
/// A partition that yields nothing for this long before its end stalls the audit.
const STALL: Duration = Duration::from_secs(30);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Streams every record of `spec` (within `window` for Kafka) into `tx`;
/// returns how many were read. `optional`: a missing file or topic is empty.
pub(crate) async fn stream(
    spec: &SourceSpec,
    window: KafkaWindow,
    optional: bool,
    tx: mpsc::Sender<RawRecord>,
    progress: ProgressBar,
) -> Result<u64, AuditError> {
    match spec {
        SourceSpec::File(path) => read_file(path.clone(), optional, tx, progress).await,
        SourceSpec::Kafka(config) => {
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                read_kafka(&config, window, optional, &tx, &progress)
            })
            .await
            .map_err(|e| AuditError::Source(e.to_string()))?
        }
    }
}

async fn read_file(
    path: PathBuf,
    optional: bool,
    tx: mpsc::Sender<RawRecord>,
    progress: ProgressBar,
) -> Result<u64, AuditError> {
    let io = |source| AuditError::Io {
        path: path.clone(),
        source,
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(e)),
    };
    if let Ok(meta) = file.metadata().await {
        progress.set_length(meta.len());
    }
    let name = path.display().to_string();
    let mut reader = BufReader::new(file);
    let (mut line, mut number, mut read) = (Vec::new(), 0u64, 0u64);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).await.map_err(io)?;
        if n == 0 {
            break;
        }
        progress.inc(n as u64);
        number += 1;
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let record = RawRecord {
            payload: Bytes::copy_from_slice(text),
            position: format!("{name}:{number}"),
            headers: Vec::new(),
        };
        if tx.send(record).await.is_err() {
            break;
        }
        read += 1;
    }
    Ok(read)
}

/// Where one partition's reading starts and stops.
struct Span {
    partition: i32,
    start: i64,
    end: i64,
}

fn kafka_error(topic: &str) -> impl Fn(rdkafka::error::KafkaError) -> AuditError + '_ {
    move |e| AuditError::Kafka {
        topic: topic.to_owned(),
        message: e.to_string(),
    }
}

fn read_kafka(
    config: &KafkaConfig,
    window: KafkaWindow,
    optional: bool,
    tx: &mpsc::Sender<RawRecord>,
    progress: &ProgressBar,
) -> Result<u64, AuditError> {
    let topic = config.topic.as_str();
    let group = format!("{}.audit-{}", config.group, uuid::Uuid::new_v4());
    let consumer: BaseConsumer = config
        .client_config()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", "16384")
        .create()
        .map_err(kafka_error(topic))?;
    let spans = spans(&consumer, topic, window.start_ms, optional)?;
    progress.set_length(spans.iter().map(|s| (s.end - s.start) as u64).sum());
    let mut assignment = TopicPartitionList::new();
    for span in &spans {
        assignment
            .add_partition_offset(topic, span.partition, Offset::Offset(span.start))
            .map_err(kafka_error(topic))?;
    }
    consumer.assign(&assignment).map_err(kafka_error(topic))?;
    let mut open: std::collections::HashMap<i32, (i64, i64)> = spans
        .iter()
        .map(|s| (s.partition, (s.start, s.end)))
        .collect();
    let (mut read, mut last_progress) = (0u64, Instant::now());
    while !open.is_empty() {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            if last_progress.elapsed() > STALL {
                let (&partition, &(offset, end)) = open.iter().next().unwrap_or((&0, &(0, 0)));
                return Err(AuditError::Stalled {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    end,
                });
            }
            continue;
        };
        let m = message.map_err(kafka_error(topic))?;
        let partition = m.partition();
        let Some(&(_, end)) = open.get(&partition) else {
            continue;
        };
        last_progress = Instant::now();
        progress.inc(1);
        let late = window
            .stop_after_ms
            .zip(m.timestamp().to_millis())
            .is_some_and(|(stop, ts)| ts > stop);
        if m.offset() >= end || late {
            close(&consumer, topic, partition, &mut open);
            continue;
        }
        open.insert(partition, (m.offset() + 1, end));
        if tx.blocking_send(record(&m, topic)).is_err() {
            break;
        }
        read += 1;
        if m.offset() + 1 >= end {
            close(&consumer, topic, partition, &mut open);
        }
    }
    Ok(read)
}

fn close(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    open: &mut std::collections::HashMap<i32, (i64, i64)>,
) {
    open.remove(&partition);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let _ = consumer.pause(&tpl);
}

fn record(m: &rdkafka::message::BorrowedMessage<'_>, topic: &str) -> RawRecord {
    let headers = owned_headers(m);
    RawRecord {
        payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
        position: format!("{topic}/{}@{}", m.partition(), m.offset()),
        headers,
    }
}

/// Each partition's first offset at or after `start_ms`, and its high
/// watermark now; partitions with nothing to read are left out.
fn spans(
    consumer: &BaseConsumer,
    topic: &str,
    start_ms: i64,
    optional: bool,
) -> Result<Vec<Span>, AuditError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(kafka_error(topic))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return if optional {
            Ok(Vec::new())
        } else {
            Err(AuditError::Kafka {
                topic: topic.to_owned(),
                message: "the topic does not exist or has no partitions".to_owned(),
            })
        };
    }
    let mut query = TopicPartitionList::new();
    for &p in &partitions {
        query
            .add_partition_offset(topic, p, Offset::Offset(start_ms.max(0)))
            .map_err(kafka_error(topic))?;
    }
    let starts = consumer
        .offsets_for_times(query, METADATA_TIMEOUT)
        .map_err(kafka_error(topic))?;
    let mut spans = Vec::new();
    for element in starts.elements_for_topic(topic) {
        let partition = element.partition();
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            .map_err(kafka_error(topic))?;
        let start = match element.offset() {
            Offset::Offset(o) => o.max(low),
            Offset::End => high,
            _ => low,
        };
        if start < high {
            spans.push(Span {
                partition,
                start,
                end: high,
            });
        }
    }
    Ok(spans)
}
