//! Source: where records come from — a Kafka topic in a consumer group
//! (watched for stalled partitions by [`watchdog`]), or a file / stdin of
//! JSON lines. Each source registers every record with the
//! [`OffsetTracker`](crate::commit::OffsetTracker) as it is read, then
//! hands it to the pipeline through a bounded channel (back-pressure).

pub(crate) mod file;
pub(crate) mod kafka;
mod watchdog;

use std::sync::Arc;

use bytes::Bytes;

use crate::commit::Position;

/// One record as read, kept whole so a dead letter carries the original.
#[derive(Debug, Clone)]
pub struct Record {
    pub payload: Bytes,
    pub key: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
    pub origin: Origin,
}

/// Where a record came from: topic (or file name) and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub source: Arc<str>,
    pub position: Position,
}
