//! The DLQ topic's producer. Only transient failures are retried (by the
//! sink): a letter the topic refuses for good is never retried for ever,
//! which would stop every partition behind it. Instead:
//! - too large for the topic: the full original is spilled first, then the
//!   letter goes to the topic with its payload truncated to fit and the
//!   original's size and SHA-256 in headers;
//! - the topic refuses it (unknown, not authorised, invalid): the whole
//!   letter is spilled.

use std::path::Path;

use bytes::Bytes;
use rdkafka::error::KafkaError;

use super::dead_letter::DeadLetter;
use super::error::DlqError;
use super::file::LetterFile;
use super::letter::{meta_headers, original_headers, topic_headers, Truncation, HEADER_PREFIX};
use super::producer::LetterProducer;
use crate::encoding::sha256_hex;
use crate::kafka::KafkaConfig;
use crate::metrics::{metrics, Cause};

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

/// The Kafka dead-letter topic, with the spill file for what it refuses.
pub(crate) struct KafkaDlq {
    producer: LetterProducer,
    topic: String,
    /// The producer's `message.max.bytes`.
    message_max: usize,
    spill: LetterFile,
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

impl KafkaDlq {
    /// Checks at start-up that the producer can carry a letter of
    /// `max_event_bytes` plus headers, and that the spill directory can be
    /// written.
    pub(super) fn connect(
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
                    header_allowance: HEADER_ALLOWANCE,
                    needed,
                })
            }
            Some(configured) => configured,
            None => needed,
        };
        client
            .set("message.max.bytes", message_max.to_string())
            .set("enable.idempotence", "true")
            .set("acks", "all");
        let producer =
            LetterProducer::create(&client, config.quiet()).map_err(DlqError::Producer)?;
        let spill = LetterFile::spill(spill_dir)?;
        Ok(Self {
            producer,
            topic,
            message_max,
            spill,
        })
    }

    /// Sends the letter whole when it fits; else spills the original and
    /// sends it truncated, shorter each time the topic says it is too
    /// large; spills the whole letter when the topic refuses it for good.
    pub(super) async fn write(&self, letter: &DeadLetter) -> Result<(), DlqError> {
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
                spill: self.spill.path(),
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
            spill = %self.spill.path().display(),
            "the dead-letter topic refused a letter for good; it is kept in the spill file (replay it with `ticketmeter dlq replay --file`)"
        );
        Ok(())
    }

    /// Produces the letter with its payload cut to `keep` bytes.
    async fn send(
        &self,
        letter: &DeadLetter,
        keep: usize,
        truncation: Option<&Truncation<'_>>,
    ) -> Result<(), KafkaError> {
        let headers = topic_headers(letter, truncation);
        let payload = &letter.record.payload[..keep];
        let key = letter.record.key.as_deref();
        self.producer.send(&self.topic, key, payload, headers).await
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::DeadLetterSink;
    use std::time::Duration;

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
}
