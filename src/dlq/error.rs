//! Why a dead letter could not be written, or a sink not made.

use std::path::PathBuf;

use rdkafka::error::KafkaError;
use thiserror::Error;

/// Why the dead-letter queue cannot take a letter, or be set up.
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
    #[error("KAFKA_OPT_MESSAGE_MAX_BYTES={configured} is below MAX_EVENT_BYTES ({max_event_bytes}) plus {header_allowance} bytes for headers: dead letters of records MAX_EVENT_BYTES allows would be truncated; raise it to at least {needed} or lower MAX_EVENT_BYTES")]
    Inconsistent {
        configured: usize,
        max_event_bytes: usize,
        /// The bytes kept for the letter's headers.
        header_allowance: usize,
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
