//! Health: whether billing is making progress, so a stall is never silent.
//!
//! Two kinds of stall end up here and in `/ready`:
//! - a pipeline-wide hold: every batch waits on the same failure (OpenMeter
//!   unreachable, the token refused, no plan, the dead-letter queue down).
//!   Whoever retries says [`Health::held`]; whoever moves work on says
//!   [`Health::progressed`]. A hold older than `STALL_AFTER` is a stall.
//! - a stalled partition: the Kafka source sees work behind our position
//!   but reads nothing ([`Health::partition_stalled`]).
//!
//! A handle, not a global: `app` builds one per collector and hands clones
//! to the parts that report (deliver, the dead-letter sink, the pipeline,
//! the Kafka source's watchdog) and to `/ready`, which reads it, as
//! mini-redis hands its `Db` to each connection. So several collectors in
//! one process each answer `/ready` for their own progress. The gauges it
//! sets are process-wide, like every metric.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::metrics::{metrics, Partition};

/// Progress bookkeeping; see the module docs. Clones share one state.
#[derive(Debug, Clone, Default)]
pub(crate) struct Health {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    hold: Option<Hold>,
    stalls: BTreeMap<i32, PartitionStall>,
    /// The brokers cannot be reached: since when, and librdkafka's reason.
    brokers_down: Option<(DateTime<Utc>, String)>,
}

#[derive(Debug)]
struct Hold {
    reason: String,
    since: DateTime<Utc>,
    started: Instant,
    reported: bool,
}

/// A partition with work behind our position and nothing read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionStall {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    /// The next offset we would read.
    pub(crate) position: i64,
    /// The broker's high watermark.
    pub(crate) end: i64,
    /// When the last record was read (or the partition was assigned or
    /// resumed).
    pub(crate) since: DateTime<Utc>,
}

impl fmt::Display for PartitionStall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "partition {}/{} stalled since {}: {} records behind (position {}, end {}) and nothing read",
            self.topic,
            self.partition,
            rfc3339(self.since),
            self.end - self.position,
            self.position,
            self.end
        )
    }
}

impl Health {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Work is waiting on `reason`; the hold started at the first call
    /// since the last [`progressed`](Self::progressed), the reason is the
    /// latest one. True when that is news: the hold began, or its reason
    /// changed.
    pub(crate) fn held(&self, reason: impl fmt::Display) -> bool {
        let reason = reason.to_string();
        self.with(|s| match &mut s.hold {
            Some(hold) if hold.reason == reason => false,
            Some(hold) => {
                hold.reason = reason;
                true
            }
            None => {
                let since = Utc::now();
                metrics().pipeline_held_since.set(since.timestamp());
                s.hold = Some(Hold {
                    reason,
                    since,
                    started: Instant::now(),
                    reported: false,
                });
                true
            }
        })
    }

    /// Work moved on (a batch delivered, a dead letter written): any hold
    /// is over.
    pub(crate) fn progressed(&self) {
        let ended = self.with(|s| s.hold.take());
        if let Some(hold) = ended {
            metrics().pipeline_held_since.set(0);
            if hold.reported {
                tracing::info!(held_for = ?hold.started.elapsed(), "pipeline moving again");
            }
        }
    }

    /// Records a stalled partition; logs an error the first time.
    pub(crate) fn partition_stalled(&self, stall: PartitionStall) {
        let partition = stall.partition;
        let new = self.with(|s| s.stalls.insert(partition, stall.clone()).is_none());
        metrics()
            .partition_stalled
            .get_or_create(&Partition { partition })
            .set(1);
        if new {
            tracing::error!(
                topic = %stall.topic,
                partition,
                position = stall.position,
                end = stall.end,
                since = %rfc3339(stall.since),
                "partition stalled: the broker reports records behind our position but returns none; check the broker (leader, ACLs, proxies)"
            );
        }
    }

    /// The partition reads again, is caught up, paused or no longer ours.
    pub(crate) fn partition_flowing(&self, partition: i32) {
        if self.with(|s| s.stalls.remove(&partition)).is_some() {
            tracing::info!(partition, "partition reading again");
        }
        metrics()
            .partition_stalled
            .get_or_create(&Partition { partition })
            .set(0);
    }

    /// The brokers cannot be reached (librdkafka said so, or a start-up
    /// probe found it); the first time since they were last up counts as
    /// the start, and its reason is kept (the first failure says the most,
    /// e.g. which connection was refused; later ones say "all down").
    pub(crate) fn brokers_down(&self, reason: &str) {
        self.with(|s| {
            s.brokers_down
                .get_or_insert_with(|| (Utc::now(), reason.to_owned()));
        });
    }

    /// A broker connection is up.
    pub(crate) fn brokers_up(&self) {
        self.with(|s| s.brokers_down = None);
    }

    /// Nothing holds the pipeline, no partition is stalled and the brokers
    /// answer, right now (for the chain tracker; reports nothing, unlike
    /// [`Self::problems`]).
    pub(crate) fn flowing(&self) -> bool {
        self.with(|s| s.stalls.is_empty() && s.hold.is_none() && s.brokers_down.is_none())
    }

    /// Why billing is not progressing, or cannot: the brokers unreachable,
    /// each stalled partition, and a hold older than `stall_after`. Empty when all is well. The first time a hold is
    /// reported it is also logged as an error.
    pub(crate) fn problems(&self, stall_after: Duration) -> Vec<String> {
        self.with(|s| {
            let mut problems = Vec::new();
            if let Some((since, reason)) = &s.brokers_down {
                problems.push(format!(
                    "Kafka brokers unreachable since {} (check KAFKA_BROKERS): {reason}",
                    rfc3339(*since)
                ));
            }
            problems.extend(s.stalls.values().map(ToString::to_string));
            if let Some(hold) = s.hold.as_mut().filter(|h| h.started.elapsed() >= stall_after) {
                let problem = format!(
                    "every batch held since {}: {}",
                    rfc3339(hold.since),
                    hold.reason
                );
                if !hold.reported {
                    hold.reported = true;
                    tracing::error!(since = %rfc3339(hold.since), reason = %hold.reason, "pipeline stalled: nothing delivered for longer than STALL_AFTER");
                }
                problems.push(problem);
            }
            problems
        })
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stall(partition: i32) -> PartitionStall {
        PartitionStall {
            topic: "t".into(),
            partition,
            position: 10,
            end: 80,
            since: Utc::now(),
        }
    }

    #[test]
    fn a_hold_is_a_problem_only_after_stall_after() {
        let h = Health::default();
        h.held("OpenMeter unreachable");
        assert!(h.problems(Duration::from_secs(60)).is_empty());
        let problems = h.problems(Duration::ZERO);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("OpenMeter unreachable"),
            "{problems:?}"
        );
    }

    #[test]
    fn progress_ends_a_hold() {
        let h = Health::default();
        h.held("token refused");
        h.progressed();
        assert!(h.problems(Duration::ZERO).is_empty());
    }

    #[test]
    fn a_hold_keeps_its_start_and_takes_the_latest_reason() {
        let h = Health::default();
        h.held("first");
        let since = h.with(|s| s.hold.as_ref().map(|x| x.since));
        h.held("second");
        assert_eq!(h.with(|s| s.hold.as_ref().map(|x| x.since)), since);
        assert!(h.problems(Duration::ZERO)[0].ends_with("second"));
    }

    #[test]
    fn unreachable_brokers_are_a_problem_until_one_is_up() {
        let h = Health::default();
        h.brokers_down("1/1 brokers are down");
        let problems = h.problems(Duration::from_secs(60));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("Kafka brokers unreachable since ")
                && problems[0].contains("KAFKA_BROKERS")
                && problems[0].ends_with("1/1 brokers are down"),
            "{problems:?}"
        );
        h.brokers_up();
        assert!(h.problems(Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn a_stalled_partition_is_named_until_it_flows() {
        let h = Health::default();
        h.partition_stalled(stall(3));
        let problems = h.problems(Duration::from_secs(60));
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("partition t/3") && problems[0].contains("70 records behind"),
            "{problems:?}"
        );
        h.partition_flowing(3);
        assert!(h.problems(Duration::from_secs(60)).is_empty());
    }
}
