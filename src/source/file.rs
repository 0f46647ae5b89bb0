//! The file source: JSON lines from a file or stdin, for backfills, dead
//! letter replays and the demo. Line N is at partition 0, offset N.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Origin, Record};
use crate::commit::{OffsetTracker, Position};

/// Turns one line into the payload to process, or `None` when the line is
/// not of the expected form (it is logged and left alone).
pub(crate) type LineReader = fn(&[u8]) -> Option<Bytes>;

/// Event JSON lines: the line is the payload.
pub(crate) fn payload_line(line: &[u8]) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(line))
}

/// What a file held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinesRead {
    /// Records handed to the pipeline.
    pub records: u64,
    /// Lines that were not of the expected form (logged, left alone).
    pub unreadable: u64,
    /// The input was read to its end (false when the run stopped first).
    pub ended: bool,
}

/// Reads every non-blank line into the pipeline. Stops early when `cancel`
/// fires or the pipeline is gone.
pub(crate) async fn read_lines<R: AsyncBufRead + Unpin>(
    mut reader: R,
    read_line: LineReader,
    source: Arc<str>,
    tx: mpsc::Sender<Record>,
    tracker: Arc<OffsetTracker>,
    cancel: CancellationToken,
) -> std::io::Result<LinesRead> {
    let mut line = Vec::new();
    let mut number = 0i64;
    let mut read = LinesRead::default();
    loop {
        line.clear();
        let n = tokio::select! {
            _ = cancel.cancelled() => break,
            n = reader.read_until(b'\n', &mut line) => n?,
        };
        if n == 0 {
            read.ended = true;
            break;
        }
        number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let origin = Origin {
            source: source.clone(),
            position: Position {
                partition: 0,
                offset: number,
            },
        };
        let Some(payload) = read_line(trim_newline(&line)) else {
            tracing::warn!(file = %source, line = number, "unreadable line: left alone");
            read.unreadable += 1;
            continue;
        };
        let record = Record {
            payload,
            key: None,
            headers: Vec::new(),
            origin,
        };
        tracker.read(record.origin.position);
        if tx.send(record).await.is_err() {
            break;
        }
        read.records += 1;
    }
    Ok(read)
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
