//! Files of dead letters, one [`FileEntry`] JSON line each: the `File`
//! sink writes one, and the Kafka sink spills what its topic refuses into
//! `DLQ_SPILL_DIR/dead-letters.jsonl`. `dlq replay --file` reads both.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;

use super::dead_letter::DeadLetter;
use super::error::DlqError;
use super::letter::{fingerprint, FileEntry};

/// The spill file's name inside `DLQ_SPILL_DIR`.
const SPILL_FILE: &str = "dead-letters.jsonl";

/// A dead-letter file, appended to by one writer at a time. A letter the
/// file already holds (the same record: where it was read and its bytes)
/// is not appended again, so running a replay twice, or replaying a
/// redelivered record, never duplicates letters.
pub(crate) struct LetterFile {
    path: PathBuf,
    /// The fingerprints of the letters in the file, read at the first
    /// write.
    lock: tokio::sync::Mutex<Option<HashSet<[u8; 32]>>>,
    /// Letters not appended because the file held them already.
    repeated: AtomicU64,
}

impl LetterFile {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: tokio::sync::Mutex::new(None),
            repeated: AtomicU64::new(0),
        }
    }

    /// Letters not appended because the file held them already.
    pub(super) fn repeated(&self) -> u64 {
        self.repeated.load(Ordering::Relaxed)
    }

    /// The spill file in `dir`. Creates the directory and checks the file
    /// can be appended to, so an unusable `DLQ_SPILL_DIR` stops start-up
    /// rather than the first refused letter.
    pub(super) fn spill(dir: &Path) -> Result<Self, DlqError> {
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
        Ok(Self::new(path))
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the letter as one line and syncs it: written means durable.
    /// A letter the file holds already counts as written.
    pub(super) async fn write(&self, letter: &DeadLetter) -> Result<(), DlqError> {
        let mut known = self.lock.lock().await;
        if known.is_none() {
            *known = Some(fingerprints(&self.path).await?);
        }
        let record = &letter.record;
        let this = fingerprint(
            &record.origin.source,
            record.origin.position.partition,
            record.origin.position.offset,
            &record.payload,
        );
        if known.as_ref().is_some_and(|k| k.contains(&this)) {
            self.repeated.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        append_line(&self.path, &FileEntry::from(letter)).await?;
        if let Some(known) = known.as_mut() {
            known.insert(this);
        }
        Ok(())
    }
}

/// The fingerprints of the letters in the file at `path` (none when it
/// does not exist yet); a line that is not a letter is ignored.
async fn fingerprints(path: &Path) -> Result<HashSet<[u8; 32]>, DlqError> {
    let text = match tokio::fs::read(path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(source) => {
            return Err(DlqError::File {
                path: path.to_owned(),
                source,
            })
        }
    };
    Ok(text
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<FileEntry>(line).ok())
        .filter_map(|entry| entry.fingerprint())
        .collect())
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
