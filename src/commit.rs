//! Commit: which offsets are safe to commit.
//!
//! Every record is registered when read and marked finished once it was
//! delivered, dead-lettered or skipped. Per partition, the committable
//! offset is the lowest still-pending offset (or one past the highest read
//! when none is pending), so a commit never passes an unfinished record,
//! whatever order batches finish in.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// Where a record sits in its source: a Kafka partition and offset, or
/// partition 0 and the line number of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Default)]
struct PartitionState {
    pending: BTreeSet<i64>,
    next: i64,
    committed: Option<i64>,
}

impl PartitionState {
    fn committable(&self) -> i64 {
        self.pending.first().copied().unwrap_or(self.next)
    }
}

/// Per-partition offset bookkeeping; shared by the source, the stages and
/// the committer.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: Mutex<HashMap<i32, PartitionState>>,
}

impl OffsetTracker {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<i32, PartitionState>) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-update of
        // plain integers; the data is still consistent enough to go on.
        let mut guard = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// A record was read and is now in flight.
    pub fn read(&self, at: Position) {
        self.with(|parts| {
            let state = parts.entry(at.partition).or_default();
            state.pending.insert(at.offset);
            state.next = state.next.max(at.offset + 1);
        });
    }

    /// Records are finished (delivered, dead-lettered or skipped). Unknown
    /// positions (a partition revoked meanwhile) are ignored.
    pub fn finished(&self, done: impl IntoIterator<Item = Position>) {
        self.with(|parts| {
            for at in done {
                if let Some(state) = parts.get_mut(&at.partition) {
                    state.pending.remove(&at.offset);
                }
            }
        });
    }

    /// Partitions whose committable offset moved since the last commit, with
    /// the offset to commit (the next record to read).
    pub fn to_commit(&self) -> Vec<(i32, i64)> {
        self.with(|parts| {
            parts
                .iter()
                .filter_map(|(p, s)| {
                    let offset = s.committable();
                    (s.committed != Some(offset) && offset > 0).then_some((*p, offset))
                })
                .collect()
        })
    }

    /// Records that those offsets were committed.
    pub fn committed(&self, offsets: &[(i32, i64)]) {
        self.with(|parts| {
            for (p, offset) in offsets {
                if let Some(state) = parts.get_mut(p) {
                    state.committed = Some(*offset);
                }
            }
        });
    }

    /// The committable offset of each listed partition that is tracked.
    pub fn committable(&self, partitions: &[i32]) -> Vec<(i32, i64)> {
        self.with(|parts| {
            partitions
                .iter()
                .filter_map(|p| parts.get(p).map(|s| (*p, s.committable())))
                .filter(|(_, offset)| *offset > 0)
                .collect()
        })
    }

    /// Records still in flight in the listed partitions (all when empty).
    pub fn pending(&self, partitions: &[i32]) -> usize {
        self.with(|parts| {
            parts
                .iter()
                .filter(|(p, _)| partitions.is_empty() || partitions.contains(p))
                .map(|(_, s)| s.pending.len())
                .sum()
        })
    }

    /// Forgets partitions this consumer no longer owns.
    pub fn revoke(&self, partitions: &[i32]) {
        self.with(|parts| parts.retain(|p, _| !partitions.contains(p)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: i64) -> Position {
        Position {
            partition: 0,
            offset,
        }
    }

    #[test]
    fn commit_never_passes_an_unfinished_record() {
        let t = OffsetTracker::default();
        (10..15).for_each(|o| t.read(at(o)));
        t.finished([at(10), at(12), at(13), at(14)]);
        assert_eq!(t.to_commit(), vec![(0, 11)]);
        t.finished([at(11)]);
        assert_eq!(t.to_commit(), vec![(0, 15)]);
    }

    #[test]
    fn committed_offsets_are_not_offered_again() {
        let t = OffsetTracker::default();
        t.read(at(0));
        t.finished([at(0)]);
        t.committed(&t.to_commit());
        assert!(t.to_commit().is_empty());
    }

    #[test]
    fn nothing_read_means_nothing_to_commit() {
        let t = OffsetTracker::default();
        assert!(t.to_commit().is_empty());
        assert!(t.committable(&[0]).is_empty());
    }

    #[test]
    fn a_record_read_and_not_finished_is_not_committed() {
        let t = OffsetTracker::default();
        t.read(at(0));
        assert!(t.to_commit().is_empty());
    }

    #[test]
    fn revoked_partitions_ignore_late_completions() {
        let t = OffsetTracker::default();
        t.read(at(5));
        t.revoke(&[0]);
        t.finished([at(5)]);
        assert_eq!(t.pending(&[]), 0);
        assert!(t.to_commit().is_empty());
    }
}
