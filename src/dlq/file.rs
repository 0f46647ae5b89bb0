//! Files of dead letters, one [`FileEntry`] JSON line each: the `File`
//! sink writes one, and the Kafka sink spills what its topic refuses into
//! `DLQ_SPILL_DIR/dead-letters.jsonl`. `dlq replay --file` reads both.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::letter::FileEntry;
use super::{DeadLetter, DlqError};

/// The spill file's name inside `DLQ_SPILL_DIR`.
const SPILL_FILE: &str = "dead-letters.jsonl";

/// A dead-letter file, appended to by one writer at a time.
pub(crate) struct LetterFile {
    path: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl LetterFile {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: tokio::sync::Mutex::new(()),
        }
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
    pub(super) async fn write(&self, letter: &DeadLetter) -> Result<(), DlqError> {
        let _guard = self.lock.lock().await;
        append_line(&self.path, &FileEntry::from(letter)).await
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
