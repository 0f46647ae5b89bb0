//! Why the audit itself could not run (exit 2).

use std::path::PathBuf;

use thiserror::Error;

use crate::openmeter::ApiError;

/// Why the audit itself could not run (exit 2).
#[derive(Debug, Error)]
pub(crate) enum AuditError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Kafka topic {topic}: {message}")]
    Kafka { topic: String, message: String },
    #[error(
        "Kafka topic {topic} partition {partition} yielded nothing at offset {offset} before \
         the end of the range ({end}): the range was not fully read"
    )]
    Stalled {
        topic: String,
        partition: i32,
        offset: i64,
        end: i64,
    },
    #[error("reading the source: {0}")]
    Source(String),
    #[error("reading back from OpenMeter: {0}")]
    OpenMeter(#[from] ApiError),
    #[error("OpenMeter's {meter} meter answered {value:?}, which is not a decimal amount")]
    Meter { meter: &'static str, value: String },
    #[error("OpenMeter has no {0} meter: run `ticketmeter bootstrap` (or `--mode events`)")]
    NoMeter(&'static str),
}
