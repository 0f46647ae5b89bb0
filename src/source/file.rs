//! The file source: JSON lines from a file or stdin, for backfills, dead
//! letter replays and the demo. Line N is at partition 0, offset N.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Origin, Record};
use crate::commit::{OffsetTracker, Position};

/// Reads every non-blank line into the pipeline, then returns the number of
/// records read. Stops early when `cancel` fires or the pipeline is gone.
pub async fn read_lines<R: AsyncBufRead + Unpin>(
    mut reader: R,
    source: Arc<str>,
    tx: mpsc::Sender<Record>,
    tracker: Arc<OffsetTracker>,
    cancel: CancellationToken,
) -> std::io::Result<u64> {
    let mut line = Vec::new();
    let (mut number, mut read) = (0i64, 0u64);
    loop {
        line.clear();
        let n = tokio::select! {
            _ = cancel.cancelled() => break,
            n = reader.read_until(b'\n', &mut line) => n?,
        };
        if n == 0 {
            break;
        }
        number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let position = Position {
            partition: 0,
            offset: number,
        };
        tracker.read(position);
        let record = Record {
            payload: Bytes::copy_from_slice(trim_newline(&line)),
            key: None,
            headers: Vec::new(),
            origin: Origin {
                source: source.clone(),
                position,
            },
        };
        if tx.send(record).await.is_err() {
            break;
        }
        read += 1;
    }
    Ok(read)
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
