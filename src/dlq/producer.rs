//! The DLQ topic's librdkafka producer, its delivery reports served by a
//! task of ours.
//!
//! Not rdkafka's `FutureProducer`: its polling thread calls
//! `BaseProducer::poll` for 100 ms at a time, which polls until its
//! deadline passes and gives librdkafka the time left rounded down to whole
//! milliseconds (rdkafka 0.39, `producer/base_producer.rs` and
//! `Timeout::as_millis` in `util.rs`), so the last millisecond of every 100
//! is a busy loop. An idle collector spent 180 ms of CPU in 20 s there and
//! nothing anywhere else (BENCHMARKS.md, "Hot path, part 6"). Here the
//! queue is served without ever waiting in it: every millisecond while a
//! letter awaits its delivery report, and by a task every [`SERVE_EVERY`]
//! for librdkafka's logs and errors.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use tokio::sync::oneshot;

use crate::kafka::Quiet;

/// How often librdkafka's queue is served while no letter is in flight.
const SERVE_EVERY: Duration = Duration::from_millis(100);
/// How often it is served while a letter awaits its delivery report: a
/// letter's delivery is known at most this late.
const AWAITING_EVERY: Duration = Duration::from_millis(1);
/// Events served per round: each poll serves at most one (a delivery
/// report covers a whole produce request), and an empty queue answers at
/// once.
const EVENTS_PER_ROUND: usize = 16;
/// How long a letter may wait for room in librdkafka's queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// A producer whose `send` resolves once the broker acknowledged the
/// record (or refused it).
pub(super) struct LetterProducer {
    inner: Arc<BaseProducer<Reporting>>,
}

/// [`Quiet`]'s logging, and each delivery report handed to its sender.
struct Reporting(Quiet);

impl ClientContext for Reporting {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.0.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(error, reason);
    }
}

impl ProducerContext for Reporting {
    type DeliveryOpaque = Box<oneshot::Sender<KafkaResult<()>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: Self::DeliveryOpaque) {
        let result = result.as_ref().map(drop).map_err(|(e, _)| e.clone());
        // The sender stopped waiting (shut down): nothing to tell.
        let _ = reply.send(result);
    }
}

impl LetterProducer {
    /// A producer from `config`, served by a task on the current runtime
    /// for as long as the producer lives.
    pub(super) fn create(config: &ClientConfig, context: Quiet) -> KafkaResult<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| KafkaError::ClientCreation("no async runtime to serve it".into()))?;
        let inner = Arc::new(config.create_with_context(Reporting(context))?);
        runtime.spawn(serve(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// Produces one record, waiting for room in librdkafka's queue for up
    /// to [`QUEUE_TIMEOUT`], then for the broker's answer.
    pub(super) async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> KafkaResult<()> {
        let (reply, answer) = oneshot::channel();
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(reply))
            .payload(payload)
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        let started = Instant::now();
        loop {
            match self.inner.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if started.elapsed() < QUEUE_TIMEOUT =>
                {
                    record = back;
                    tokio::time::sleep(AWAITING_EVERY).await;
                    serve_round(&self.inner);
                }
                Err((e, _)) => return Err(e),
            }
        }
        let mut answer = std::pin::pin!(answer);
        loop {
            tokio::select! {
                result = &mut answer => return result.unwrap_or(Err(KafkaError::Canceled)),
                () = tokio::time::sleep(AWAITING_EVERY) => serve_round(&self.inner),
            }
        }
    }
}

/// Serves what librdkafka's queue holds, up to [`EVENTS_PER_ROUND`].
fn serve_round(producer: &BaseProducer<Reporting>) {
    for _ in 0..EVENTS_PER_ROUND {
        producer.poll(Duration::ZERO);
    }
}

/// Serves the producer's queue until the producer is dropped.
async fn serve(producer: Weak<BaseProducer<Reporting>>) {
    let mut every = tokio::time::interval(SERVE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(producer) = producer.upgrade() else {
            return;
        };
        serve_round(&producer);
    }
}
