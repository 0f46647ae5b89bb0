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
//! Lag and stalls: librdkafka's statistics feed the stall watchdog
//! ([`super::watchdog`]), which also refreshes the lag gauges.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use rdkafka::config::{ClientConfig as RdConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::watchdog::{stats_interval, Watch, Watchdog};
use super::{Origin, Record};
use crate::clock::Moment;
use crate::commit::{OffsetTracker, Position};
use crate::health::Health;
use crate::kafka::{owned_headers, relay_error, relay_log, KafkaConfig};
use crate::metrics::metrics;

/// How long the pipeline may refuse a record before partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_millis(250);

/// At most this many records are taken from librdkafka's queue at once
/// ([`KafkaSource::take_ready`]); sending one record per wake-up of the
/// pipeline's task was 8% of the collector's CPU.
const READY_RUN: usize = 256;

/// The size of the buffers record payloads are copied into
/// ([`copy_payload`]): about 220 tickets each.
const PAYLOAD_CHUNK: usize = 256 * 1024;

/// The consumer-group member's settings, on top of the shared ones.
impl KafkaConfig {
    fn consumer_config(&self) -> RdConfig {
        let mut c = self.client_config();
        let stats_every = stats_interval(self.stall_after);
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

/// Told, from librdkafka's statistics (every `STALL_AFTER`/4, at most 5 s),
/// how many of the topic's partitions this member owns and which have
/// nothing beyond our position (the collector's chain tracking).
pub(crate) trait PartitionListener: Send + Sync {
    fn ownership(&self, owned: usize, total: usize);
    fn caught_up(&self, partition: i32);
    /// Partitions were revoked (a rebalance): what was owned may have been
    /// read by another member meanwhile.
    fn revoked(&self);
}

/// What the source and its librdkafka callbacks share.
struct Shared {
    topic: String,
    /// `KAFKA_BROKERS`, for the messages.
    brokers: String,
    tracker: Arc<OffsetTracker>,
    /// The partitions we own, each with its progress clock.
    owned: Mutex<HashMap<i32, Watch>>,
    /// Paused for back-pressure: no partition can stall meanwhile.
    paused: AtomicBool,
    /// How many times partitions were disowned: the source drops a revoked
    /// partition's records from its backlog when this moves.
    revokes: AtomicU64,
    gap: PollGap,
    watchdog: Watchdog,
    /// Told which partitions we own of how many, and which are caught up.
    listener: OnceLock<Arc<dyn PartitionListener>>,
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

    /// Hands librdkafka's statistics to the watchdog, and to the chain
    /// tracker when there is one (they list every partition of the topic);
    /// tells health a broker is up when one is (librdkafka says when all
    /// are down, in its error callback, but never when one is back).
    fn watch(&self, stats: &Statistics) {
        if stats.brokers.values().any(|b| b.state == "UP") {
            self.watchdog.health.brokers_up();
            if crate::kafka::brokers_reachable() {
                tracing::info!(brokers = %self.brokers, "Kafka brokers reachable again");
            }
        }
        let Some(topic) = stats.topics.get(&self.topic) else {
            return;
        };
        let paused = self.paused.load(Ordering::Relaxed);
        let (caught_up, owned) =
            self.owned(|owned| (self.watchdog.watch(owned, topic, paused), owned.len()));
        if let Some(listener) = self.listener.get() {
            let total = topic.partitions.keys().filter(|p| **p >= 0).count();
            listener.ownership(owned, total);
            caught_up.into_iter().for_each(|p| listener.caught_up(p));
        }
    }

    /// Forgets partitions we no longer own: their lag and stall state too.
    fn disown(&self, partitions: &[i32]) {
        self.owned(|owned| owned.retain(|p, _| !partitions.contains(p)));
        self.revokes.fetch_add(1, Ordering::Release);
        self.watchdog.forget(partitions);
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

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        relay_log(level, fac, message);
    }

    /// Relayed, each kind once in a while; brokers out of reach are also a
    /// problem `/ready` names until a broker is up again.
    fn error(&self, error: KafkaError, reason: &str) {
        if relay_error(&self.shared.brokers, &error, reason) {
            self.shared.watchdog.health.brokers_down(reason);
        }
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
        if let Some(listener) = self.shared.listener.get() {
            listener.revoked();
        }
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
    /// Joins the group; its watchdog reports stalls to `health`.
    pub(crate) fn connect(
        config: &KafkaConfig,
        tracker: Arc<OffsetTracker>,
        health: Health,
    ) -> Result<Self, KafkaError> {
        let shared = Arc::new(Shared {
            topic: config.topic.clone(),
            brokers: config.brokers.clone(),
            tracker,
            owned: Mutex::default(),
            paused: AtomicBool::new(false),
            revokes: AtomicU64::new(0),
            gap: PollGap::default(),
            watchdog: Watchdog {
                topic: config.topic.clone(),
                stall_after: config.stall_after,
                health,
            },
            listener: OnceLock::new(),
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
        let mut payloads = BytesMut::new();
        let mut paused = false;
        let mut revokes = 0;
        loop {
            let now_revoked = self.shared.revokes.load(Ordering::Acquire);
            if now_revoked != revokes {
                revokes = now_revoked;
                backlog.retain(|r| self.owns(r.origin.position.partition));
            }
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
                    send_while_room(&tx, &mut backlog);
                }
                _ = tokio::time::sleep(PAUSE_AFTER), if waiting && !paused => {
                    paused = self.set_paused(true);
                }
                message = self.consumer.recv(), if !waiting || paused => match message {
                    Ok(m) => {
                        let now = Moment::now();
                        backlog.extend(self.take(&m, &mut payloads, now));
                        self.take_ready(&mut backlog, &mut payloads, now);
                    }
                    Err(e) => {
                        relay_error(&self.shared.brokers, &e, "consuming");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
    }

    /// Takes what librdkafka already holds, up to [`READY_RUN`] records,
    /// without waiting: records then reach the pipeline in runs, not one
    /// wake-up of its task each. An error is left for the next `recv`. The
    /// run is read at one `moment`.
    fn take_ready(&self, backlog: &mut VecDeque<Record>, payloads: &mut BytesMut, now: Moment) {
        for _ in 1..READY_RUN {
            match self.consumer.recv().now_or_never() {
                Some(Ok(m)) => backlog.extend(self.take(&m, payloads, now)),
                _ => return,
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
    /// no longer own (a late message after a revoke). Its partition
    /// progressed at `now`.
    fn take(
        &self,
        m: &BorrowedMessage<'_>,
        payloads: &mut BytesMut,
        now: Moment,
    ) -> Option<Record> {
        let position = Position {
            partition: m.partition(),
            offset: m.offset(),
        };
        let owned = self.shared.owned(|owned| {
            owned
                .get_mut(&position.partition)
                .map(|watch| watch.progressed_at(now))
                .is_some()
        });
        if !owned {
            return None;
        }
        self.shared.tracker.read(position);
        let headers = owned_headers(m);
        Some(Record {
            payload: copy_payload(payloads, m.payload().unwrap_or_default()),
            key: m.key().map(|key| copy_payload(payloads, key)),
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

    /// Tells `listener` which partitions this member owns, from
    /// librdkafka's statistics.
    pub(crate) fn listen(&self, listener: Arc<dyn PartitionListener>) {
        let _ = self.shared.listener.set(listener);
    }

    /// Whether this member currently owns any partition.
    pub(crate) fn assigned(&self) -> bool {
        self.consumer.assignment().is_ok_and(|tpl| tpl.count() > 0)
    }
}

/// `payload` (a record's value or key) copied out of librdkafka into
/// `payloads`, a buffer of [`PAYLOAD_CHUNK`] bytes that records share (each
/// a slice of it, freed when the last is dropped): one allocation per chunk
/// instead of one or two per record. A ticket's ~1.1 KiB is past glibc's
/// per-thread cache, so each copy of its own was a trip through malloc's
/// bins and back (~5% of the collector's CPU).
fn copy_payload(payloads: &mut BytesMut, payload: &[u8]) -> Bytes {
    if payloads.capacity() < payload.len() {
        *payloads = BytesMut::with_capacity(PAYLOAD_CHUNK.max(payload.len()));
    }
    payloads.extend_from_slice(payload);
    payloads.split().freeze()
}

/// Sends records from the front of `backlog` while the channel has room,
/// without waiting.
fn send_while_room(tx: &mpsc::Sender<Record>, backlog: &mut VecDeque<Record>) {
    while !backlog.is_empty() {
        let Ok(permit) = tx.try_reserve() else { return };
        if let Some(record) = backlog.pop_front() {
            permit.send(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{copy_payload, PAYLOAD_CHUNK};
    use crate::kafka::tests::config;
    use bytes::{Bytes, BytesMut};

    #[test]
    fn copied_payloads_share_a_buffer_and_each_reads_back_its_own_bytes() {
        let mut payloads = BytesMut::new();
        let a = copy_payload(&mut payloads, b"first");
        let b = copy_payload(&mut payloads, b"second");
        assert_eq!((&a[..], &b[..]), (&b"first"[..], &b"second"[..]));
        assert_eq!(distance(&a, &b), 5, "b follows a in the same buffer");
        let big = vec![7u8; PAYLOAD_CHUNK + 1];
        assert_eq!(copy_payload(&mut payloads, &big)[..], big[..]);
        drop(payloads);
        assert_eq!(
            &a[..],
            b"first",
            "a record outlives the buffer it was copied into"
        );
    }

    fn distance(a: &Bytes, b: &Bytes) -> usize {
        b.as_ptr() as usize - a.as_ptr() as usize
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
