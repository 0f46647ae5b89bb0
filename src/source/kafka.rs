//! The Kafka source: a consumer-group member on the gateway topic.
//!
//! Committing uses librdkafka's stored offsets: every `KAFKA_COMMIT_INTERVAL`
//! the [`OffsetTracker`]'s committable offsets (never past an unfinished
//! record) are stored with `store_offsets`, a local call, and librdkafka's
//! auto-commit sends them, and on its own commits them when partitions are
//! revoked and when the consumer closes. So the rebalance callback only
//! stores offsets and returns at once: it never waits for in-flight batches
//! nor for a commit round trip while holding the poll thread. In-flight
//! records of a revoked partition still finish (OpenMeter gets them), but
//! they are not committed by us: the next owner redelivers them and
//! OpenMeter deduplicates them by id. Chosen over the previous design (a
//! commit loop plus a callback that waited up to `KAFKA_REBALANCE_DRAIN`,
//! 10 s, for in-flight batches, then committed synchronously) because the
//! callback's time no longer depends on OpenMeter: measured with three
//! members and one killed mid-batch, longest poll gap 0.25 s against
//! 0.33 s, for 201 redelivered (deduplicated) events against 28; while
//! OpenMeter is down the old callback held the poll thread the whole 10 s
//! (by construction of its wait loop).
//! See `docs/operations.md`, "Rebalances".
//!
//! Back-pressure: when the pipeline stops taking records, the assigned
//! partitions are paused (the consumer keeps polling, so it stays in the
//! group) and resumed once the pipeline drains or its backlog is revoked.
//! Partitions assigned meanwhile take the same state.
//!
//! Progress watchdog: librdkafka's statistics (every few seconds) give each
//! partition's high watermark as the broker reports it in fetch responses;
//! a partition with records beyond our position that reads nothing for
//! `STALL_AFTER` while not paused is reported to [`health`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rdkafka::config::ClientConfig as RdConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::{Partition as PartitionStats, Statistics};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Origin, Record};
use crate::commit::{OffsetTracker, Position};
use crate::health::{health, PartitionStall};
use crate::metrics::{metrics, Partition};
use crate::secret::{ExposeSecret, Secret};

/// How long the pipeline may refuse a record before partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_millis(250);
/// The most often librdkafka statistics (watermarks for lag and the
/// watchdog) are emitted; they come four times per `STALL_AFTER` at most
/// every 5 s.
const STATS_EVERY_MAX: Duration = Duration::from_secs(5);

/// Kafka connection settings, named as the original's environment.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    pub sasl_mechanism: String,
    pub tls: bool,
    /// Pass-through librdkafka settings (from `KAFKA_OPT_*`).
    pub extra: Vec<(String, String)>,
    /// How often settled progress is stored and auto-committed.
    pub commit_interval: Duration,
    /// How long a partition with work may read nothing before it counts
    /// as stalled.
    pub stall_after: Duration,
}

impl KafkaConfig {
    /// librdkafka settings shared by the consumer and the DLQ producer.
    pub fn client_config(&self) -> RdConfig {
        let mut c = RdConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        let protocol = match (self.sasl_username.is_some(), self.tls) {
            (true, true) => "SASL_SSL",
            (true, false) => "SASL_PLAINTEXT",
            (false, true) => "SSL",
            (false, false) => "PLAINTEXT",
        };
        c.set("security.protocol", protocol);
        if self.tls {
            // The vendored OpenSSL looks for CAs under its own build prefix;
            // probe the system's usual bundle locations instead.
            c.set("ssl.ca.location", "probe");
        }
        if let Some(user) = &self.sasl_username {
            c.set("sasl.mechanism", &self.sasl_mechanism);
            c.set("sasl.username", user);
            c.set(
                "sasl.password",
                self.sasl_password
                    .as_ref()
                    .map_or("", |p| p.expose_secret()),
            );
        }
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    fn consumer_config(&self) -> RdConfig {
        let mut c = self.client_config();
        let stats_every = (self.stall_after / 4).clamp(Duration::from_millis(100), STATS_EVERY_MAX);
        c.set("group.id", &self.group)
            // Auto-commit sends only what we stored: settled progress.
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.commit.interval.ms",
                self.commit_interval.as_millis().max(1).to_string(),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set(
                "statistics.interval.ms",
                stats_every.as_millis().to_string(),
            )
            // Bounds event→accepted latency on brokers that hold a fetch for
            // the whole wait (tansu does); costs a few idle fetches a second.
            .set("fetch.wait.max.ms", "100");
        // The operator's KAFKA_OPT_* settings win over these defaults too.
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

/// What the source and its librdkafka callbacks share.
struct Shared {
    topic: String,
    tracker: Arc<OffsetTracker>,
    stall_after: Duration,
    /// The partitions we own, each with its progress clock.
    owned: Mutex<HashMap<i32, Watch>>,
    /// Paused for back-pressure: no partition can stall meanwhile.
    paused: AtomicBool,
    gap: PollGap,
}

/// One owned partition's progress.
#[derive(Debug)]
struct Watch {
    /// When a record was last read (or the partition was assigned or
    /// resumed, or caught up).
    progress: Instant,
    progress_at: DateTime<Utc>,
    /// A watermark below our position was logged already.
    anomaly: bool,
}

impl Watch {
    fn new() -> Self {
        Self {
            progress: Instant::now(),
            progress_at: Utc::now(),
            anomaly: false,
        }
    }

    fn progressed(&mut self) {
        self.progress = Instant::now();
        self.progress_at = Utc::now();
    }
}

impl Shared {
    fn owned<R>(&self, f: impl FnOnce(&mut HashMap<i32, Watch>) -> R) -> R {
        let mut guard = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect()
    }

    /// Checks every owned partition against librdkafka's statistics:
    /// refreshes its lag, and reports it stalled or flowing.
    fn watch(&self, stats: &Statistics) {
        let Some(topic) = stats.topics.get(&self.topic) else {
            return;
        };
        let paused = self.paused.load(Ordering::Relaxed);
        self.owned(|owned| {
            for (partition, watch) in owned.iter_mut() {
                if let Some(p) = topic.partitions.get(partition) {
                    self.watch_one(*partition, watch, p, paused);
                }
            }
        });
    }

    fn watch_one(&self, partition: i32, watch: &mut Watch, stats: &PartitionStats, paused: bool) {
        // Our position: the next record we would hand on; before the first
        // one, where fetching starts.
        let position = [stats.app_offset, stats.committed_offset, stats.next_offset]
            .into_iter()
            .find(|o| *o >= 0);
        let (Some(position), end) = (position, stats.hi_offset) else {
            return;
        };
        if end < 0 {
            return;
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
            health().partition_flowing(partition);
        } else if watch.progress.elapsed() >= self.stall_after {
            health().partition_stalled(PartitionStall {
                topic: self.topic.clone(),
                partition,
                position,
                end,
                since: watch.progress_at,
            });
        } else {
            health().partition_flowing(partition);
        }
    }

    /// Forgets partitions we no longer own: their lag and stall state too.
    fn disown(&self, partitions: &[i32]) {
        self.owned(|owned| owned.retain(|p, _| !partitions.contains(p)));
        for p in partitions {
            metrics().consumer_lag.remove(&Partition { partition: *p });
            health().partition_flowing(*p);
        }
    }
}

/// The longest stretch the consumer went unpolled: while the source held
/// records back unpaused, or a callback ran on the poll thread.
#[derive(Debug, Default)]
struct PollGap {
    idle_since: Mutex<Option<Instant>>,
    longest_micros: AtomicU64,
}

impl PollGap {
    /// About to poll: closes the idle stretch, if any.
    fn polling(&self) {
        let since = self.idle_since.lock().ok().and_then(|mut s| s.take());
        if let Some(since) = since {
            self.record(since.elapsed());
        }
    }

    /// Not polling from now on (until [`polling`](Self::polling)).
    fn idle(&self) {
        if let Ok(mut s) = self.idle_since.lock() {
            s.get_or_insert_with(Instant::now);
        }
    }

    fn record(&self, gap: Duration) {
        let micros = u64::try_from(gap.as_micros()).unwrap_or(u64::MAX);
        let previous = self.longest_micros.fetch_max(micros, Ordering::Relaxed);
        if micros > previous {
            metrics().consumer_poll_gap_max.set(gap.as_secs_f64());
        }
    }
}

/// The consumer's librdkafka callbacks. They run on the poll thread, so
/// each does local bookkeeping only and returns at once.
pub(crate) struct TrackingContext {
    shared: Arc<Shared>,
}

impl ClientContext for TrackingContext {
    fn stats(&self, statistics: Statistics) {
        self.shared.watch(&statistics);
    }
}

impl ConsumerContext for TrackingContext {
    /// On revoke: store the settled offsets (librdkafka commits them as it
    /// unassigns) and forget the partitions, so their backlog is dropped
    /// and late completions are ignored.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let started = Instant::now();
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions = self.shared.partitions(tpl);
        if partitions.is_empty() {
            return;
        }
        let offsets = self.shared.tracker.committable(&partitions);
        if let Err(e) = store_offsets(consumer, &self.shared.topic, &offsets) {
            tracing::warn!(error = %e, "storing offsets on revoke failed; the next owner will redeliver");
        }
        self.shared.tracker.revoke(&partitions);
        self.shared.disown(&partitions);
        tracing::info!(?partitions, ?offsets, "partitions revoked");
        self.shared.gap.record(started.elapsed());
    }

    /// On assign: the new partitions take the consumer's pause state.
    /// librdkafka keeps a partition's pause flag across rebalances, and a
    /// resume reaches only the partitions assigned at the time, so a
    /// partition paused while it was ours before would come back paused
    /// for good.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let started = Instant::now();
        if let Rebalance::Assign(tpl) = rebalance {
            let pause = self.shared.paused.load(Ordering::Relaxed);
            let aligned = if pause {
                consumer.pause(tpl)
            } else {
                consumer.resume(tpl)
            };
            if let Err(e) = aligned {
                tracing::warn!(error = %e, pause, "could not set the pause state of assigned partitions");
            }
            let partitions = self.shared.partitions(tpl);
            self.shared.owned(|owned| {
                for p in &partitions {
                    owned.insert(*p, Watch::new());
                }
            });
            tracing::info!(?partitions, "partitions assigned");
        }
        self.shared.gap.record(started.elapsed());
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            if !matches!(
                e,
                KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)
            ) {
                tracing::warn!(error = %e, offsets = offsets.count(), "offset commit failed; librdkafka retries with the next commit");
            }
        }
    }
}

/// Stores offsets for librdkafka to commit; a local call.
fn store_offsets<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Result<(), KafkaError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (partition, offset) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.store_offsets(&tpl)
}

/// A consumer-group member reading the gateway topic.
pub(crate) struct KafkaSource {
    consumer: Arc<StreamConsumer<TrackingContext>>,
    topic: Arc<str>,
    shared: Arc<Shared>,
}

impl KafkaSource {
    pub(crate) fn connect(
        config: &KafkaConfig,
        tracker: Arc<OffsetTracker>,
    ) -> Result<Self, KafkaError> {
        let shared = Arc::new(Shared {
            topic: config.topic.clone(),
            tracker,
            stall_after: config.stall_after,
            owned: Mutex::default(),
            paused: AtomicBool::new(false),
            gap: PollGap::default(),
        });
        let context = TrackingContext {
            shared: shared.clone(),
        };
        let consumer: StreamConsumer<TrackingContext> =
            config.consumer_config().create_with_context(context)?;
        consumer.subscribe(&[&config.topic])?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topic: Arc::from(config.topic.as_str()),
            shared,
        })
    }

    /// Reads until `cancel` fires or the pipeline goes away. Records of a
    /// partition revoked meanwhile are dropped from the backlog unsent.
    pub(crate) async fn run(&self, tx: mpsc::Sender<Record>, cancel: CancellationToken) {
        let mut backlog: VecDeque<Record> = VecDeque::new();
        let mut paused = false;
        loop {
            backlog.retain(|r| self.owns(r.origin.position.partition));
            if backlog.is_empty() && paused {
                paused = !self.set_paused(false);
            }
            let waiting = !backlog.is_empty();
            if !waiting || paused {
                self.shared.gap.polling();
            } else {
                self.shared.gap.idle();
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                permit = tx.reserve(), if waiting => {
                    let (Ok(permit), Some(record)) = (permit, backlog.pop_front()) else { return };
                    permit.send(record);
                }
                _ = tokio::time::sleep(PAUSE_AFTER), if waiting && !paused => {
                    paused = self.set_paused(true);
                }
                message = self.consumer.recv(), if !waiting || paused => match message {
                    Ok(m) => backlog.extend(self.take(&m)),
                    Err(e) => {
                        tracing::warn!(error = %e, "Kafka consumer error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
    }

    fn owns(&self, partition: i32) -> bool {
        self.shared.owned(|owned| owned.contains_key(&partition))
    }

    /// Pauses or resumes every assigned partition; true when it took effect.
    /// Resuming restarts every partition's progress clock: time spent paused
    /// is not a stall.
    fn set_paused(&self, pause: bool) -> bool {
        let result = self.consumer.assignment().and_then(|tpl| {
            if pause {
                self.consumer.pause(&tpl)
            } else {
                self.consumer.resume(&tpl)
            }
        });
        match result {
            Ok(()) => {
                self.shared.paused.store(pause, Ordering::Relaxed);
                if !pause {
                    self.shared
                        .owned(|owned| owned.values_mut().for_each(Watch::progressed));
                }
                tracing::debug!(pause, "pipeline back-pressure");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, pause, "could not change partition pause state");
                false
            }
        }
    }

    /// The record, registered with the tracker; `None` for a partition we
    /// no longer own (a late message after a revoke).
    fn take(&self, m: &BorrowedMessage<'_>) -> Option<Record> {
        let position = Position {
            partition: m.partition(),
            offset: m.offset(),
        };
        let owned = self.shared.owned(|owned| {
            owned
                .get_mut(&position.partition)
                .map(Watch::progressed)
                .is_some()
        });
        if !owned {
            return None;
        }
        self.shared.tracker.read(position);
        let headers = owned_headers(m);
        Some(Record {
            payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
            key: m.key().map(Bytes::copy_from_slice),
            headers,
            origin: Origin {
                source: self.topic.clone(),
                position,
            },
        })
    }

    /// Stores every owned partition's settled progress for librdkafka's
    /// auto-commit; a local call. Returns how many partitions moved.
    pub(crate) fn store(&self) -> Result<usize, KafkaError> {
        let offsets: Vec<(i32, i64)> = self
            .shared
            .tracker
            .to_commit()
            .into_iter()
            .filter(|(p, _)| self.owns(*p))
            .collect();
        store_offsets(self.consumer.as_ref(), &self.topic, &offsets)?;
        self.shared.tracker.committed(&offsets);
        Ok(offsets.len())
    }

    /// Stores settled progress and commits it now, synchronously (off the
    /// runtime): for shutdown and the end of a replay.
    pub(crate) async fn commit(&self) -> Result<usize, KafkaError> {
        let stored = self.store()?;
        let consumer = self.consumer.clone();
        let committed =
            tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
                .await
                .unwrap_or(Ok(()));
        match committed {
            Ok(())
            | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {
                Ok(stored)
            }
            Err(e) => Err(e),
        }
    }

    /// Stores settled progress every `every` until `cancel` fires;
    /// librdkafka's auto-commit sends it.
    pub(crate) async fn commit_periodically(&self, every: Duration, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(e) = self.store() {
                tracing::warn!(error = %e, "storing offsets failed; will retry");
            }
        }
    }

    /// Whether this member currently owns any partition.
    pub(crate) fn assigned(&self) -> bool {
        self.consumer.assignment().is_ok_and(|tpl| tpl.count() > 0)
    }
}

/// A message's headers, copied out of librdkafka's buffer.
pub(crate) fn owned_headers(m: &BorrowedMessage<'_>) -> Vec<(String, Bytes)> {
    m.headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        Bytes::copy_from_slice(h.value.unwrap_or_default()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(user: Option<&str>, tls: bool) -> KafkaConfig {
        KafkaConfig {
            brokers: "b:9092".into(),
            topic: "t".into(),
            group: "g".into(),
            sasl_username: user.map(str::to_owned),
            sasl_password: Some(Secret::from("pw")),
            sasl_mechanism: "PLAIN".into(),
            tls,
            extra: vec![("session.timeout.ms".into(), "6000".into())],
            commit_interval: Duration::from_secs(1),
            stall_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn sasl_over_tls_is_sasl_ssl_with_probed_cas() {
        let c = config(Some("user"), true).client_config();
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("sasl.username"), Some("user"));
        assert_eq!(c.get("ssl.ca.location"), Some("probe"));
    }

    #[test]
    fn no_credentials_and_no_tls_is_plaintext() {
        let c = config(None, false).client_config();
        assert_eq!(c.get("security.protocol"), Some("PLAINTEXT"));
        assert_eq!(c.get("sasl.username"), None);
    }

    #[test]
    fn passthrough_settings_win_over_consumer_defaults() {
        let mut cfg = config(None, false);
        cfg.extra
            .push(("auto.offset.reset".into(), "latest".into()));
        let c = cfg.consumer_config();
        assert_eq!(c.get("auto.offset.reset"), Some("latest"));
        assert_eq!(c.get("session.timeout.ms"), Some("6000"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
    }
}
