//! Dead-letter queue: records that cannot be billed, kept whole with the
//! reason, so nothing is dropped and `ticketmeter dlq replay` can feed them
//! back once the cause is fixed.
//!
//! A record counts as finished only after its dead letter is durably
//! written (Kafka acknowledged it, or a file was synced). Only transient
//! failures are retried (a broker down, a full disk); what the DLQ topic
//! refuses for good is spilled to a file instead ([`kafka`]).
//!
//! - [`letter`]: the format of a letter, in the topic and in a file;
//! - [`kafka`]: the DLQ topic's producer, truncating and spilling;
//! - [`mod@file`]: files of letters (the `File` sink, and the spill file in
//!   `DLQ_SPILL_DIR`, which `dlq replay --file` reads).

mod dead_letter;
mod error;
mod file;
mod kafka;
mod letter;
mod producer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::health::Health;
use crate::kafka::KafkaConfig;
use crate::retry::{Backoff, RetryPolicy};
use file::LetterFile;
use kafka::KafkaDlq;

pub(crate) use dead_letter::{DeadLetter, DeadLetterKind};
pub(crate) use error::DlqError;

pub(crate) use letter::{letter_line, Letter};

/// Where `replay` appends its dead letters, and `audit --file` reads them.
pub(crate) const DEFAULT_DLQ_FILE: &str = "ticketmeter-dlq.jsonl";

/// Where dead letters the DLQ topic refuses are kept.
pub(crate) const DEFAULT_SPILL_DIR: &str = "ticketmeter-dlq-spill";

/// Where dead letters go, and the health told while writing them holds
/// the pipeline up. A new sink reports to a health of its own, and waits
/// the default backoff, until it is assembled into a pipeline
/// (`in_pipeline`).
#[derive(Clone)]
pub struct DeadLetterSink {
    target: Target,
    health: Health,
    retry: RetryPolicy,
}

#[derive(Clone)]
enum Target {
    /// A Kafka topic (default `<topic>.dlq`): original key, payload and
    /// headers, plus `ticketmeter.dlq.*` headers with the reason and origin.
    Kafka(Arc<KafkaDlq>),
    /// A JSON-lines file, one [`letter::FileEntry`] per line.
    File(Arc<LetterFile>),
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
        let dlq = KafkaDlq::connect(config, topic, max_event_bytes, spill_dir)?;
        Ok(Self::to(Target::Kafka(Arc::new(dlq))))
    }

    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::to(Target::File(Arc::new(LetterFile::new(path.into()))))
    }

    pub fn memory() -> Self {
        Self::to(Target::Memory(Arc::default()))
    }

    fn to(target: Target) -> Self {
        Self {
            target,
            health: Health::default(),
            retry: RetryPolicy::pipeline(Backoff::default()),
        }
    }

    /// The same sink in a pipeline: reporting to its `health`, and waiting
    /// between attempts as its `retry` policy (the pipeline role: a dead
    /// letter is never given up, its offset stays uncommitted meanwhile).
    pub(crate) fn in_pipeline(self, health: Health, retry: RetryPolicy) -> Self {
        Self {
            health,
            retry,
            ..self
        }
    }

    /// Letters a file sink did not append because the file held them
    /// already (0 for the other sinks).
    pub fn repeated(&self) -> u64 {
        match &self.target {
            Target::File(file) => file.repeated(),
            _ => 0,
        }
    }

    /// The dead letters kept by a memory sink (empty for the others).
    pub fn kept(&self) -> Vec<DeadLetter> {
        match &self.target {
            Target::Memory(kept) => kept.lock().map(|k| k.clone()).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Writes one dead letter, retrying transient failures until it
    /// succeeds (refusals for good are spilled, never retried).
    pub async fn put(&self, letter: &DeadLetter) {
        let mut attempt = 1;
        while let Err(e) = self.write(letter).await {
            let wait = self.retry.delay(attempt, None);
            tracing::error!(error = %e, ?wait, "cannot write dead letter; retrying (its offset stays uncommitted)");
            let _ = self
                .health
                .held(format!("the dead-letter queue cannot be written: {e}"));
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
        self.health.progressed();
        tracing::warn!(
            source = %letter.record.origin.source,
            partition = letter.record.origin.position.partition,
            offset = letter.record.origin.position.offset,
            reason = %letter.reason,
            "dead-lettered"
        );
    }

    async fn write(&self, letter: &DeadLetter) -> Result<(), DlqError> {
        match &self.target {
            Target::Kafka(dlq) => dlq.write(letter).await,
            Target::File(file) => file.write(letter).await,
            Target::Memory(kept) => {
                if let Ok(mut kept) = kept.lock() {
                    kept.push(letter.clone());
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::letter::FileEntry;
    use super::*;
    use crate::commit::Position;
    use crate::source::{Origin, Record};

    pub(crate) fn letter(payload: &[u8]) -> DeadLetter {
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

    #[tokio::test]
    async fn a_file_sink_does_not_append_a_letter_the_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dlq.jsonl");
        DeadLetterSink::file(&path).put(&letter(b"x")).await;
        let again = DeadLetterSink::file(&path);
        again.put(&letter(b"x")).await;
        again.put(&letter(b"y")).await;
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert_eq!(again.repeated(), 1);
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
