//! Settle: the one place an event's outcome takes effect. Every record read
//! ends here once — delivered, skipped or dead-lettered — and only here is
//! its offset marked finished, its dead letter written, and it counted in
//! the tally and the metrics. Stages decide outcomes and return them, a
//! batch's gathered in a [`Settlement`]; they never act on them (after
//! Vector's finalization: one status per event, one place that acts on
//! it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::commit::{OffsetTracker, Position};
use crate::decode::SkipReason;
use crate::dlq::{DeadLetter, DeadLetterKind, DeadLetterSink};
use crate::metrics::metrics;
use crate::source::Record;

/// What became of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// OpenMeter accepted it.
    Delivered,
    /// Not billable; settled unsent.
    Skipped(SkipReason),
    /// Never sent: kept whole in the dead-letter queue with why.
    DeadLettered {
        kind: DeadLetterKind,
        reason: String,
    },
}

impl Outcome {
    pub(crate) fn dead_letter(kind: DeadLetterKind, reason: impl Into<String>) -> Self {
        Self::DeadLettered {
            kind,
            reason: reason.into(),
        }
    }
}

/// What happened to the events a pipeline handled.
#[derive(Debug, Default)]
pub struct Tally {
    pub read: AtomicU64,
    pub skipped: AtomicU64,
    pub delivered: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Batch tasks that panicked: their events stay unsettled.
    pub crashed_batches: AtomicU64,
}

impl Tally {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records read but neither delivered, skipped nor dead-lettered: what
    /// a run that stopped early (it gave up, was interrupted) did not send.
    pub fn unsettled(&self) -> u64 {
        let settled =
            Self::get(&self.delivered) + Self::get(&self.skipped) + Self::get(&self.dead_lettered);
        Self::get(&self.read).saturating_sub(settled)
    }

    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The outcomes of one batch (or of one delivery attempt at it), settled
/// together by [`Settler::settle`]: the stages fill it, never act on it.
#[derive(Debug, Default)]
pub(crate) struct Settlement {
    delivered: Vec<Position>,
    skipped: Vec<Position>,
    /// Each record whole, with its dead letter's kind and reason.
    dead_letters: Vec<(Record, DeadLetterKind, String)>,
}

impl Settlement {
    /// `record` ends with `outcome`.
    pub(crate) fn add(&mut self, record: Record, outcome: Outcome) {
        let at = record.origin.position;
        match outcome {
            Outcome::Delivered => self.delivered.push(at),
            Outcome::Skipped(_) => self.skipped.push(at),
            Outcome::DeadLettered { kind, reason } => {
                self.dead_letters.push((record, kind, reason));
            }
        }
    }
}

/// Acts on outcomes: owns the offset tracker, the dead-letter sink and the
/// tally. Shared by the pipeline and every in-flight batch.
pub struct Settler {
    dlq: DeadLetterSink,
    tracker: Arc<OffsetTracker>,
    tally: Arc<Tally>,
}

impl Settler {
    pub fn new(dlq: DeadLetterSink, tracker: Arc<OffsetTracker>) -> Self {
        Self {
            dlq,
            tracker,
            tally: Arc::default(),
        }
    }

    pub fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }

    pub fn tracker(&self) -> &Arc<OffsetTracker> {
        &self.tracker
    }

    /// Counts records taken in; each is settled later, exactly once.
    pub fn received(&self, records: usize) {
        Tally::add(&self.tally.read, records);
        metrics().events_consumed.inc_by(records as u64);
    }

    /// Counts a batch task that panicked, leaving its events unsettled.
    pub fn crashed(&self) {
        Tally::add(&self.tally.crashed_batches, 1);
    }

    /// Settles `settled`: the one place an offset is marked finished. The
    /// delivered and skipped are finished at once; each dead letter is
    /// written (retried until it is durable) before its offset counts as
    /// finished, so a settlement dropped mid-way (at shutdown) leaves only
    /// unwritten letters unsettled.
    pub(crate) async fn settle(&self, settled: Settlement) {
        let Settlement {
            delivered,
            skipped,
            dead_letters,
        } = settled;
        if !delivered.is_empty() || !skipped.is_empty() {
            self.tracker
                .finished(delivered.iter().chain(&skipped).copied());
            Tally::add(&self.tally.delivered, delivered.len());
            metrics().events_delivered.inc_by(delivered.len() as u64);
            Tally::add(&self.tally.skipped, skipped.len());
            metrics().events_skipped.inc_by(skipped.len() as u64);
        }
        for (record, kind, reason) in dead_letters {
            let at = record.origin.position;
            self.dlq.put(&DeadLetter::new(record, kind, reason)).await;
            self.tracker.finished([at]);
            Tally::add(&self.tally.dead_lettered, 1);
            metrics().dead_lettered(kind.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::commit::Position;
    use crate::source::Origin;

    fn record(offset: i64) -> Record {
        Record {
            payload: Bytes::from_static(b"{}"),
            key: None,
            headers: Vec::new(),
            origin: Origin {
                source: Arc::from("test"),
                position: Position {
                    partition: 0,
                    offset,
                },
            },
        }
    }

    fn settler() -> (Settler, DeadLetterSink, Arc<OffsetTracker>) {
        let dlq = DeadLetterSink::memory();
        let tracker = Arc::new(OffsetTracker::default());
        for offset in 0..3 {
            tracker.read(Position {
                partition: 0,
                offset,
            });
        }
        (Settler::new(dlq.clone(), tracker.clone()), dlq, tracker)
    }

    #[tokio::test]
    async fn every_outcome_finishes_its_offsets_and_is_counted_once() {
        let (settler, _, tracker) = settler();
        let mut settled = Settlement::default();
        settled.add(record(0), Outcome::Delivered);
        settled.add(record(1), Outcome::Delivered);
        settled.add(record(2), Outcome::Skipped(SkipReason::OtherType));
        settler.settle(settled).await;
        assert_eq!(tracker.pending(&[]), 0);
        let tally = settler.tally();
        assert_eq!(Tally::get(&tally.delivered), 2);
        assert_eq!(Tally::get(&tally.skipped), 1);
        assert_eq!(Tally::get(&tally.dead_lettered), 0);
    }

    #[tokio::test]
    async fn a_dead_letter_keeps_the_record_whole_with_its_kind_and_reason() {
        let (settler, dlq, tracker) = settler();
        let outcome = Outcome::dead_letter(DeadLetterKind::Fee, "computed_fee is negative");
        let mut settled = Settlement::default();
        settled.add(record(1), outcome);
        settler.settle(settled).await;
        let kept = dlq.kept();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].kind, DeadLetterKind::Fee);
        assert_eq!(kept[0].reason, "computed_fee is negative");
        assert_eq!(kept[0].record.payload, Bytes::from_static(b"{}"));
        assert_eq!(tracker.pending(&[]), 2);
        assert_eq!(Tally::get(&settler.tally().dead_lettered), 1);
    }
}
