//! The Kafka source's stall watchdog. librdkafka's statistics (every few
//! seconds) give each partition's high watermark as the broker reports it
//! in fetch responses; a partition with records beyond our position that
//! reads nothing for `STALL_AFTER` while not paused is reported to the
//! collector's [`Health`]. The same statistics refresh the consumer-lag
//! gauges.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::statistics::{Partition as PartitionStats, Topic as TopicStats};

use crate::clock::Moment;
use crate::health::{Health, PartitionStall};
use crate::metrics::{metrics, Partition};

/// The most often librdkafka statistics (watermarks for lag and the
/// watchdog) are emitted; they come four times per `STALL_AFTER` at most
/// every 5 s.
const STATS_EVERY_MAX: Duration = Duration::from_secs(5);

/// How often librdkafka emits statistics for a watchdog of `stall_after`.
pub(super) fn stats_interval(stall_after: Duration) -> Duration {
    (stall_after / 4).clamp(Duration::from_millis(100), STATS_EVERY_MAX)
}

/// One owned partition's progress.
#[derive(Debug)]
pub(super) struct Watch {
    /// When a record was last read (or the partition was assigned or
    /// resumed, or caught up).
    progress: Instant,
    progress_at: DateTime<Utc>,
    /// A watermark below our position was logged already.
    anomaly: bool,
}

impl Watch {
    pub(super) fn new() -> Self {
        let now = Moment::now();
        Self {
            progress: now.at,
            progress_at: now.utc,
            anomaly: false,
        }
    }

    pub(super) fn progressed(&mut self) {
        self.progressed_at(Moment::now());
    }

    /// A record was read at `moment` (or the partition resumed then).
    pub(super) fn progressed_at(&mut self, moment: Moment) {
        self.progress = moment.at;
        self.progress_at = moment.utc;
    }
}

/// Judges the partitions of one topic by their statistics.
pub(super) struct Watchdog {
    pub(super) topic: String,
    pub(super) stall_after: Duration,
    pub(super) health: Health,
}

impl Watchdog {
    /// Checks every owned partition against the topic's statistics:
    /// refreshes its lag, and reports it stalled or flowing. While `paused`
    /// (back-pressure) no partition can stall. Returns the partitions with
    /// nothing beyond our position.
    pub(super) fn watch(
        &self,
        owned: &mut HashMap<i32, Watch>,
        stats: &TopicStats,
        paused: bool,
    ) -> Vec<i32> {
        let mut caught_up = Vec::new();
        for (partition, watch) in owned.iter_mut() {
            if let Some(p) = stats.partitions.get(partition) {
                if self.watch_one(*partition, watch, p, paused) {
                    caught_up.push(*partition);
                }
            }
        }
        caught_up
    }

    /// Whether the partition has nothing beyond our position.
    fn watch_one(
        &self,
        partition: i32,
        watch: &mut Watch,
        stats: &PartitionStats,
        paused: bool,
    ) -> bool {
        // Our position: the next record we would hand on; before the first
        // one, where fetching starts.
        let position = [stats.app_offset, stats.committed_offset, stats.next_offset]
            .into_iter()
            .find(|o| *o >= 0);
        let (Some(position), end) = (position, stats.hi_offset) else {
            return false;
        };
        if end < 0 {
            return false;
        }
        if end < position {
            if !watch.anomaly {
                watch.anomaly = true;
                tracing::warn!(topic = %self.topic, partition, position, high_watermark = end, "broker anomaly: the partition's high watermark is below our position");
            }
        } else {
            watch.anomaly = false;
        }
        metrics()
            .consumer_lag
            .get_or_create(&Partition { partition })
            .set((end - position).max(0));
        if paused || end <= position {
            watch.progressed();
            self.health.partition_flowing(partition);
        } else if watch.progress.elapsed() >= self.stall_after {
            self.health.partition_stalled(PartitionStall {
                topic: self.topic.clone(),
                partition,
                position,
                end,
                since: watch.progress_at,
            });
        } else {
            self.health.partition_flowing(partition);
        }
        end <= position
    }

    /// Forgets partitions we no longer own: their lag and stall state.
    pub(super) fn forget(&self, partitions: &[i32]) {
        for p in partitions {
            metrics().consumer_lag.remove(&Partition { partition: *p });
            self.health.partition_flowing(*p);
        }
    }
}
