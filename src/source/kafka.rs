//! The Kafka source: a consumer-group member on the gateway topic, with
//! auto-commit off. Offsets are committed by [`KafkaSource::commit`] from
//! the [`OffsetTracker`], never past an unfinished record.
//!
//! Back-pressure: when the pipeline stops taking records, the assigned
//! partitions are paused (the consumer keeps polling, so it stays in the
//! group) and resumed once the pipeline drains.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::config::ClientConfig as RdConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Origin, Record};
use crate::commit::{OffsetTracker, Position};
use crate::metrics::metrics;
use crate::secret::Secret;

/// How long the pipeline may refuse a record before partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_millis(250);
/// How often the consumer-lag gauge is refreshed.
const LAG_EVERY: Duration = Duration::from_secs(15);

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
    /// How long a revoked partition's in-flight records may take to finish.
    pub drain_timeout: Duration,
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
                self.sasl_password.as_ref().map_or("", Secret::expose),
            );
        }
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    fn consumer_config(&self) -> RdConfig {
        let mut c = self.client_config();
        c.set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
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

/// Commits revoked partitions' progress before they move to another member.
pub struct TrackingContext {
    tracker: Arc<OffsetTracker>,
    topic: String,
    drain_timeout: Duration,
}

impl ClientContext for TrackingContext {}

impl ConsumerContext for TrackingContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        if partitions.is_empty() {
            return;
        }
        // Give in-flight batches a bounded time to finish, so the next owner
        // does not redeliver them (OpenMeter would dedupe them anyway).
        let deadline = Instant::now() + self.drain_timeout;
        while self.tracker.pending(&partitions) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let offsets = self.tracker.committable(&partitions);
        if let Err(e) = commit_offsets(consumer, &self.topic, &offsets) {
            tracing::warn!(error = %e, "commit on revoke failed; the next owner will redeliver");
        }
        self.tracker.revoke(&partitions);
        tracing::info!(?partitions, "partitions revoked");
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(?partitions, "partitions assigned");
        }
    }
}

fn commit_offsets<C: Consumer<X>, X: ConsumerContext>(
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
    consumer.commit(&tpl, CommitMode::Sync)
}

/// A consumer-group member reading the gateway topic.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<TrackingContext>>,
    topic: Arc<str>,
    tracker: Arc<OffsetTracker>,
}

impl KafkaSource {
    pub fn connect(config: &KafkaConfig, tracker: Arc<OffsetTracker>) -> Result<Self, KafkaError> {
        let context = TrackingContext {
            tracker: tracker.clone(),
            topic: config.topic.clone(),
            drain_timeout: config.drain_timeout,
        };
        let consumer: StreamConsumer<TrackingContext> =
            config.consumer_config().create_with_context(context)?;
        consumer.subscribe(&[&config.topic])?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topic: Arc::from(config.topic.as_str()),
            tracker,
        })
    }

    /// Reads until `cancel` fires or the pipeline goes away.
    pub async fn run(&self, tx: mpsc::Sender<Record>, cancel: CancellationToken) {
        let mut backlog: VecDeque<Record> = VecDeque::new();
        let mut paused = false;
        loop {
            let waiting = !backlog.is_empty();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                permit = tx.reserve(), if waiting => {
                    let (Ok(permit), Some(record)) = (permit, backlog.pop_front()) else { return };
                    permit.send(record);
                    if backlog.is_empty() && paused {
                        paused = !self.set_paused(false);
                    }
                }
                _ = tokio::time::sleep(PAUSE_AFTER), if waiting && !paused => {
                    paused = self.set_paused(true);
                }
                message = self.consumer.recv(), if !waiting || paused => match message {
                    Ok(m) => backlog.push_back(self.take(&m)),
                    Err(e) => {
                        tracing::warn!(error = %e, "Kafka consumer error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
    }

    /// Pauses or resumes every assigned partition; true when it took effect.
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
                tracing::debug!(pause, "pipeline back-pressure");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, pause, "could not change partition pause state");
                false
            }
        }
    }

    fn take(&self, m: &BorrowedMessage<'_>) -> Record {
        let position = Position {
            partition: m.partition(),
            offset: m.offset(),
        };
        self.tracker.read(position);
        let headers = m
            .headers()
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
            .unwrap_or_default();
        Record {
            payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
            key: m.key().map(Bytes::copy_from_slice),
            headers,
            origin: Origin {
                source: self.topic.clone(),
                position,
            },
        }
    }

    /// Commits every partition's progress; blocking, so run off the runtime.
    pub async fn commit(&self) -> Result<usize, KafkaError> {
        let consumer = self.consumer.clone();
        let tracker = self.tracker.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let offsets = tracker.to_commit();
            commit_offsets(consumer.as_ref(), &topic, &offsets)?;
            tracker.committed(&offsets);
            Ok(offsets.len())
        })
        .await
        .unwrap_or(Ok(0))
    }

    /// Commits every `every` until `cancel` fires; refreshes the lag gauge
    /// every [`LAG_EVERY`] (it asks the broker).
    pub async fn commit_periodically(&self, every: Duration, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(every);
        let mut lag_due = Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(e) = self.commit().await {
                tracing::warn!(error = %e, "offset commit failed; will retry");
            }
            if Instant::now() >= lag_due {
                lag_due = Instant::now() + LAG_EVERY;
                let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
                let _ = tokio::task::spawn_blocking(move || record_lag(consumer.as_ref(), &topic))
                    .await;
            }
        }
    }

    /// Whether this member currently owns any partition.
    pub fn assigned(&self) -> bool {
        self.consumer.assignment().is_ok_and(|tpl| tpl.count() > 0)
    }
}

/// Consumer lag per assigned partition: high watermark minus our position.
fn record_lag(consumer: &StreamConsumer<TrackingContext>, topic: &str) {
    let Ok(positions) = consumer.position() else {
        return;
    };
    for element in positions.elements_for_topic(topic) {
        let Offset::Offset(position) = element.offset() else {
            continue;
        };
        let partition = element.partition();
        if let Ok((_, high)) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(2)) {
            metrics()
                .consumer_lag
                .get_or_create(&vec![("partition", partition.to_string())])
                .set(high.saturating_sub(position));
        }
    }
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
            sasl_password: Some(Secret::new("pw")),
            sasl_mechanism: "PLAIN".into(),
            tls,
            extra: vec![("session.timeout.ms".into(), "6000".into())],
            drain_timeout: Duration::from_secs(1),
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
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
    }
}
