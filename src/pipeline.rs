//! The pipeline: records from a source are grouped into batches (by count,
//! bytes and linger) in the order they are read, and each batch is decoded,
//! mapped, ensured and delivered by one of a bounded number of concurrent
//! flush tasks, so the per-event work spreads over every core instead of
//! queueing behind one loop. A batch's outcomes are settled in one place,
//! its task ([`run_batch`]): what judge skipped or dead-lettered at once,
//! then what each delivery attempt delivered or dead-lettered (acted on by
//! [`crate::settle`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use crate::billing::BillingPolicy;
use crate::chain::record::Chained;
use crate::chain::tracker::{Seen, Tracker};
use crate::contract::Contract;
use crate::decode::{decode, Decoded, SkipReason, DEFAULT_MAX_BYTES};
use crate::deliver::{Deliverer, DeliveryConfig, InFlightBounds, Pending, Slot};
use crate::dlq::DeadLetterKind;
use crate::domain::{EthUsdPrice, Identity};
use crate::ensure::Provisioner;
use crate::link::Link;
use crate::map::{map, UsageEvent};
use crate::metrics::{metrics, Field};
use crate::price::PriceFeed;
use crate::retry::Backoff;
use crate::settle::{Outcome, Settlement, Settler, Tally};
use crate::source::file::{payload_line, read_lines, LineReader, LinesRead};
use crate::source::Record;
use tokio::io::AsyncBufRead;

/// Records the run loop takes off its channel at once.
const RECEIVE_AT_ONCE: usize = 256;

/// Batching and shutdown settings.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    /// Events per ingest request.
    pub batch_max_events: usize,
    /// Bytes per batch (its records as read) and per ingest request (its
    /// serialised CloudEvents: a larger batch is sent in parts).
    pub batch_max_bytes: usize,
    /// How long a partial batch waits for more events.
    pub linger: Duration,
    /// Bounds of the batches being ensured/delivered at once; the number
    /// adapts to OpenMeter within them (`deliver::concurrency`).
    pub in_flight: InFlightBounds,
    /// Records larger than this are dead-lettered unread.
    pub max_event_bytes: usize,
    /// How long shutdown waits for in-flight batches.
    pub shutdown_timeout: Duration,
    /// Which `time` events are sent with, and the invoice collection window.
    pub billing: BillingPolicy,
    /// How long held events wait between delivery attempts.
    pub backoff: Backoff,
    /// Which id, billing subject and amounts events are sent with.
    pub contract: Contract,
}

impl PipelineConfig {
    /// What the deliverer needs of it.
    pub(crate) fn delivery(&self) -> DeliveryConfig {
        DeliveryConfig {
            billing: self.billing,
            in_flight: self.in_flight,
            max_body_bytes: self.batch_max_bytes,
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            batch_max_events: 500,
            batch_max_bytes: 1 << 20,
            linger: Duration::from_millis(100),
            in_flight: InFlightBounds::default(),
            max_event_bytes: DEFAULT_MAX_BYTES,
            shutdown_timeout: Duration::from_secs(25),
            billing: BillingPolicy::default(),
            backoff: Backoff::default(),
            contract: Contract::default(),
        }
    }
}

/// What decode → map makes of a billable record: a CloudEvent to send,
/// for this identity.
#[derive(Debug)]
pub(crate) struct ToSend {
    pub(crate) identity: Identity,
    pub(crate) event: Box<UsageEvent>,
    /// The event's `time`, parsed.
    pub(crate) signed_at: DateTime<Utc>,
    /// Its place in its session's chain.
    pub(crate) link: Option<Link>,
}

/// Why decode → map settles a record unsent. Only OpenMeter delivers, so
/// judge has no `Delivered`.
#[derive(Debug)]
pub(crate) enum Unsent {
    /// Not billable.
    Skip(SkipReason),
    /// Never sent: dead-lettered with why.
    DeadLetter {
        kind: DeadLetterKind,
        reason: String,
    },
}

/// Decodes and maps one payload at `price` under `contract`: the event to
/// send, or why the record settles unsent. `run`, `replay` and `replay
/// --dry-run` all judge records here, so a dry run shows exactly what a
/// real run would do.
pub(crate) fn judge(
    payload: &[u8],
    max_bytes: usize,
    price: &EthUsdPrice,
    contract: &Contract,
) -> Result<ToSend, Unsent> {
    match decode(payload, max_bytes, contract) {
        Ok(Decoded::Skip(reason)) => Err(Unsent::Skip(reason)),
        Ok(Decoded::Ticket(mut ticket)) => {
            let link = ticket.link.take();
            let mapped = map(*ticket, price, contract);
            for field in &mapped.unreadable {
                metrics()
                    .dimensions_unreadable
                    .get_or_create(&Field { field })
                    .inc();
            }
            Ok(ToSend {
                identity: mapped.identity,
                event: Box::new(mapped.event),
                signed_at: mapped.signed_at,
                link,
            })
        }
        Err(rejection) => Err(Unsent::DeadLetter {
            kind: rejection.kind(),
            reason: rejection.to_string(),
        }),
    }
}

/// How a flush task judges its batch: at the price current when the batch
/// was handed over.
struct Judge {
    price: EthUsdPrice,
    max_event_bytes: usize,
    contract: Contract,
    /// Where billable records (sent or dead-lettered) are told, when the
    /// collector tracks session chains.
    chain: Option<Tracker>,
}

impl Judge {
    /// Decodes and maps every record of a batch: the events to send, and
    /// the outcomes of the others (skipped, dead-lettered) to settle.
    fn batch(&self, records: Vec<Record>) -> (Vec<Pending>, Settlement) {
        let mut events = Vec::with_capacity(records.len());
        let mut unsent = Settlement::default();
        // Each chain link seen, and which event (if sent) it is.
        let (mut seen, mut sent_as) = (Vec::new(), Vec::new());
        for record in records {
            let judged = judge(
                &record.payload,
                self.max_event_bytes,
                &self.price,
                &self.contract,
            );
            let outcome = match judged {
                Ok(ToSend {
                    identity,
                    event,
                    signed_at,
                    link,
                }) => {
                    if self.chain.is_some() {
                        seen.push(seen_of(&record, link));
                        sent_as.push(Some(events.len()));
                    }
                    events.push(Pending {
                        record,
                        identity,
                        event,
                        time: signed_at,
                    });
                    continue;
                }
                Err(Unsent::Skip(reason)) => Outcome::Skipped(reason),
                Err(Unsent::DeadLetter { kind, reason }) => {
                    if self.chain.is_some() {
                        if let Chained::Link(link) = Chained::of(&record.payload) {
                            seen.push(seen_of(&record, Some(link)));
                            sent_as.push(None);
                        }
                    }
                    Outcome::DeadLettered { kind, reason }
                }
            };
            unsent.add(record, outcome);
        }
        if let Some(chain) = &self.chain {
            chain.observe(&seen, |i| {
                let event = sent_as.get(i).copied().flatten()?;
                let pending: &Pending = events.get(event)?;
                Some(pending.identity.billing_key().as_str())
            });
        }
        (events, unsent)
    }
}

/// One batch, from records read to every event settled: judge's outcomes
/// settle at once, then each delivery attempt's, all here. After
/// `cancel`, a dead letter of judge's that cannot be written is abandoned
/// unsettled (its offset stays uncommitted). When delivery gives up (a
/// one-shot command's), the pipeline stops.
async fn run_batch(
    judge: Judge,
    records: Vec<Record>,
    opened: Instant,
    deliverer: &Deliverer,
    settler: &Settler,
    cancel: &CancellationToken,
) {
    let (events, unsent) = judge.batch(records);
    tokio::select! {
        biased;
        () = settler.settle(unsent) => {}
        () = cancel.cancelled() => {}
    }
    if deliverer
        .flush(events, opened, |settled| settler.settle(settled))
        .await
    {
        deliverer.health.progressed();
    } else {
        cancel.cancel();
    }
}

/// A billable record as the chain tracker is told of it.
fn seen_of(record: &Record, link: Option<Link>) -> Seen {
    Seen {
        partition: record.origin.position.partition,
        link,
        payload: record.payload.clone(),
    }
}

/// Batch → decode → map → ensure → deliver → settle, over one record
/// channel.
pub struct Pipeline {
    pub(crate) deliverer: Arc<Deliverer>,
    /// Where every outcome of every batch takes effect.
    pub(crate) settler: Arc<Settler>,
    pub(crate) price: PriceFeed,
    pub(crate) config: PipelineConfig,
    /// The collector's session-chain tracking, when on.
    pub(crate) chain: Option<Tracker>,
}

/// Records waiting for their batch to fill, as read.
#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    bytes: usize,
    /// When the first record was read.
    opened: Option<Instant>,
    deadline: Option<tokio::time::Instant>,
}

/// Batches being ensured and delivered, each holding a slot of the
/// deliverer's adaptive limit.
struct InFlight {
    tasks: JoinSet<()>,
    cancel: CancellationToken,
}

impl Pipeline {
    pub fn tally(&self) -> Arc<Tally> {
        self.settler().tally().clone()
    }

    /// The provisioner this pipeline ensures customers through: its ensure
    /// cache and in-flight ensures, for the parts of `run` that share them.
    pub(crate) fn provisioner(&self) -> &Provisioner {
        self.deliverer.provisioner()
    }

    /// Starts filling the ensure cache from OpenMeter's pages, and keeping
    /// it filled, in the background until `stop` (when `ENSURE_WARM_UP` is
    /// on).
    pub(crate) async fn start_warm_up(&self, stop: CancellationToken) {
        self.deliverer.provisioner().warm_in_background(stop).await;
    }

    /// Why delivery gave up, when a one-shot pipeline did (a failure that
    /// concerns every event outlasted its retries); see `Deliverer::flush`.
    pub fn gave_up(&self) -> Option<String> {
        self.deliverer.gave_up()
    }

    /// Where every record this pipeline takes in is settled.
    pub fn settler(&self) -> &Arc<Settler> {
        &self.settler
    }

    /// Runs until `records` closes (the source ended or was cancelled),
    /// then flushes what is left and waits for in-flight batches (at most
    /// `shutdown_timeout` once `cancel` fired). Returns whether everything
    /// read was settled.
    pub async fn run(
        &self,
        mut records: mpsc::Receiver<Record>,
        cancel: &CancellationToken,
    ) -> bool {
        let mut in_flight = InFlight {
            tasks: JoinSet::new(),
            cancel: cancel.clone(),
        };
        let mut batch = Batch::default();
        // Records are taken off the channel many at a time: one wake-up per
        // burst, not per record.
        let mut received = Vec::with_capacity(RECEIVE_AT_ONCE);
        loop {
            let deadline = batch.deadline;
            let open = tokio::select! {
                n = records.recv_many(&mut received, RECEIVE_AT_ONCE) => n > 0,
                _ = sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    self.flush(&mut batch, &mut in_flight).await;
                    continue;
                }
            };
            if !open {
                break;
            }
            self.settler().received(received.len());
            for record in received.drain(..) {
                self.add(&mut batch, record, &mut in_flight).await;
            }
            while let Some(joined) = in_flight.tasks.try_join_next() {
                self.reap(joined, cancel);
            }
        }
        self.flush(&mut batch, &mut in_flight).await;
        self.drain(in_flight.tasks, cancel).await
    }

    /// Runs every line of `reader` (event JSON lines) through the pipeline;
    /// true when every record read was settled.
    pub async fn run_lines<R>(
        &self,
        reader: R,
        name: &str,
        cancel: &CancellationToken,
    ) -> std::io::Result<bool>
    where
        R: AsyncBufRead + Unpin + Send + 'static,
    {
        let (settled, _) = self.run_file(reader, payload_line, name, cancel).await?;
        Ok(settled)
    }

    /// Runs every line of `reader`, read by `read_line`, through the
    /// pipeline; returns whether every record read was settled, and what was
    /// read.
    pub async fn run_file<R>(
        &self,
        reader: R,
        read_line: LineReader,
        name: &str,
        cancel: &CancellationToken,
    ) -> std::io::Result<(bool, LinesRead)>
    where
        R: AsyncBufRead + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(self.config.batch_max_events.max(1) * 2);
        let tracker = self.settler().tracker().clone();
        let reading = tokio::spawn(read_lines(
            reader,
            read_line,
            Arc::from(name),
            tx,
            tracker.clone(),
            cancel.clone(),
        ));
        let settled = self.run(rx, cancel).await;
        let read = reading.await.map_err(std::io::Error::other)??;
        Ok((settled && tracker.pending(&[]) == 0, read))
    }

    async fn add(&self, batch: &mut Batch, record: Record, in_flight: &mut InFlight) {
        let size = record.payload.len() + 1;
        if !batch.records.is_empty() && batch.bytes + size > self.config.batch_max_bytes {
            self.flush(batch, in_flight).await;
        }
        batch.bytes += size;
        batch.records.push(record);
        if batch.deadline.is_none() {
            batch.opened = Some(Instant::now());
            batch.deadline = Some(tokio::time::Instant::now() + self.config.linger);
        }
        if batch.records.len() >= self.config.batch_max_events {
            self.flush(batch, in_flight).await;
        }
    }

    /// Hands the batch to a flush task once an in-flight slot is free. If
    /// shutdown begins while every slot is held (OpenMeter down), the batch
    /// is abandoned unsettled: its offsets stay uncommitted and are
    /// redelivered after the restart. Once delivery gave up (a one-shot
    /// command's pipeline, see [`Deliverer::flush`]), every batch is
    /// abandoned so, and the task that gave up stops the pipeline.
    async fn flush(&self, batch: &mut Batch, in_flight: &mut InFlight) {
        let Batch {
            records, opened, ..
        } = std::mem::take(batch);
        if records.is_empty() || self.deliverer.gave_up().is_some() {
            return;
        }
        let slot: Slot = tokio::select! {
            biased;
            slot = self.deliverer.in_flight.acquire() => slot,
            _ = in_flight.cancel.cancelled() => return,
        };
        let judge = Judge {
            price: self.price.current().price,
            max_event_bytes: self.config.max_event_bytes,
            contract: self.config.contract,
            chain: self.chain.clone(),
        };
        let (deliverer, settler) = (self.deliverer.clone(), self.settler.clone());
        let cancel = in_flight.cancel.clone();
        in_flight.tasks.spawn(async move {
            let opened = opened.unwrap_or_else(Instant::now);
            run_batch(judge, records, opened, &deliverer, &settler, &cancel).await;
            drop(slot);
        });
    }

    /// A finished batch task. One that panicked leaves its offsets pending
    /// for good: it is counted, logged, and the pipeline shuts down so the
    /// restart redelivers them instead of stalling in silence.
    fn reap(&self, joined: Result<(), tokio::task::JoinError>, cancel: &CancellationToken) {
        let Err(e) = joined else { return };
        if e.is_cancelled() {
            return;
        }
        self.settler().crashed();
        tracing::error!(
            error = %e,
            "a batch task failed; its offsets stay uncommitted: shutting down so a restart redelivers them"
        );
        cancel.cancel();
    }

    /// Waits for every in-flight batch; once `cancel` fires, for at most
    /// `shutdown_timeout` more.
    async fn drain(&self, mut flushes: JoinSet<()>, cancel: &CancellationToken) -> bool {
        let mut deadline = None;
        loop {
            tokio::select! {
                next = flushes.join_next() => match next {
                    None => return true,
                    Some(joined) => self.reap(joined, cancel),
                },
                _ = cancel.cancelled(), if deadline.is_none() => {
                    deadline = Some(tokio::time::Instant::now() + self.config.shutdown_timeout);
                }
                _ = sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    tracing::warn!(
                        in_flight = flushes.len(),
                        "shutdown timeout: abandoning in-flight batches; their offsets stay uncommitted and will be redelivered"
                    );
                    flushes.abort_all();
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::OffsetTracker;
    use crate::dlq::DeadLetterSink;
    use crate::ensure::{EnsureConfig, Provisioner};
    use crate::health::Health;
    use crate::openmeter::{ClientConfig, Endpoint, OpenMeterClient};

    fn pipeline() -> Pipeline {
        let endpoint = Endpoint::parse("http://127.0.0.1:1/api/v3", None).unwrap();
        let client = OpenMeterClient::new(ClientConfig::new(endpoint, None)).unwrap();
        let provisioner = Provisioner::new(
            client,
            "clearinghouse_default_ppu".parse().unwrap(),
            EnsureConfig::default(),
        );
        let settler = Settler::new(DeadLetterSink::memory(), Arc::new(OffsetTracker::default()));
        let config = PipelineConfig::default();
        let deliverer = Deliverer::new(
            provisioner,
            crate::retry::RetryPolicy::pipeline(config.backoff),
            config.delivery(),
            Health::default(),
        );
        Pipeline {
            deliverer: Arc::new(deliverer),
            settler: Arc::new(settler),
            price: PriceFeed::fixed("3500".parse().unwrap()),
            config,
            chain: None,
        }
    }

    /// A ticket with every field the contract reads, dimensions included.
    const SAMPLE: &[u8] = br#"{"id":"env-1","type":"create_signed_ticket","timestamp":"1788912000000","data":{"request_id":"r1","auth_id":"app:owner:u#a","client_id":"app","usage_subject":"eu_1","computed_fee":"10","current_time":"2026-09-09T00:00:00.000000001Z","pipeline":"live:m","pixels":"7","billable_secs":1.5,"num_tickets":2}}"#;

    fn judged_under_every_contract(bytes: &[u8]) {
        let price: EthUsdPrice = "3500.5".parse().unwrap();
        for contract in [Contract::default(), Contract::seed()] {
            let _ = judge(bytes, DEFAULT_MAX_BYTES, &price, &contract);
        }
    }

    #[test]
    fn truncated_payloads_never_panic_in_decode_or_map() {
        for cut in 0..SAMPLE.len() {
            judged_under_every_contract(&SAMPLE[..cut]);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(5_000))]

        #[test]
        fn corrupted_payloads_never_panic_in_decode_or_map(
            edits in proptest::collection::vec((0..SAMPLE.len(), proptest::num::u8::ANY), 1..6),
        ) {
            let mut bytes = SAMPLE.to_vec();
            for (at, byte) in edits {
                bytes[at] = byte;
            }
            judged_under_every_contract(&bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic_in_decode_or_map(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
        ) {
            judged_under_every_contract(&bytes);
        }
    }

    #[tokio::test]
    async fn a_batch_task_that_panics_is_counted_and_shuts_the_pipeline_down() {
        let pipeline = pipeline();
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(async { panic!("a bug in a batch") });
        let joined = tasks.join_next().await.unwrap();
        pipeline.reap(joined, &cancel);
        assert_eq!(Tally::get(&pipeline.tally().crashed_batches), 1);
        assert!(cancel.is_cancelled());
    }
}
