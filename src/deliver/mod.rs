//! Deliver: ensure the customers of a batch, bill each event from its
//! subscription's start, send the batch to OpenMeter's ingest API, and
//! return every event's outcome — delivered or dead-lettered — after each
//! attempt, for the pipeline to settle. Nothing is dropped, and one
//! customer never stops the others. What an OpenMeter failure concerns is
//! decided by [`crate::openmeter::classify`]:
//!
//! - transient (network, 408/429/5xx) and configuration (token, URL, no
//!   plan) failures hold the events they concern and retry them with
//!   backoff for as long as it takes; this loop is the pipeline's only
//!   retry (its client makes one attempt per call). Held events keep their
//!   offsets, so the source backs up and pauses;
//! - a customer OpenMeter refuses (its creation, its subscription, its
//!   billing setup) has its events dead-lettered with the kind and
//!   OpenMeter's detail, never sent unbilled, so a `dlq replay` after the
//!   cause is fixed bills them in full; everyone else's events are sent;
//! - events OpenMeter rejects (400/413/422) are isolated by splitting the
//!   chunk in halves, and dead-lettered with OpenMeter's detail; before the
//!   first split the chunk's customers are ensured afresh (self-heal), and a
//!   lone event gets one retry after that.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use tracing::Instrument;

use crate::billing::BillingPolicy;
use crate::commit::Position;
pub use crate::concurrency::InFlightBounds;
pub(crate) use crate::concurrency::Slot;
use crate::concurrency::{AdaptiveLimit, Growth, Signal};
use crate::dlq::DeadLetterKind;
use crate::domain::{CustomerKey, Identity};
use crate::ensure::{EnsureError, Ensured, Provisioner};
use crate::health::Health;
use crate::map::UsageEvent;
use crate::metrics::metrics;
use crate::openmeter::{classify, ApiError, Call, ErrorClass};
use crate::retry::RetryPolicy;
use crate::settle::{Outcome, Settlement};
use crate::source::Record;

/// An event to send, and the original record in case it must be
/// dead-lettered. Its CloudEvent is serialised once, straight into the
/// request body, after its time is placed in its subscription's period.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) record: Record,
    pub(crate) identity: Identity,
    /// Boxed: a `Pending` moves through several vectors.
    pub(crate) event: Box<UsageEvent>,
    /// The event's `time`.
    pub(crate) time: DateTime<Utc>,
}

/// The span that ties one batch's log lines (ensure, send, split, dead
/// letters) together: its size and its lowest and highest positions, which
/// are its offset range when it holds one partition. The positions are only
/// looked up when the span is recorded.
fn batch_span<P>(events: usize, positions: P) -> tracing::Span
where
    P: Iterator<Item = Position> + Clone,
{
    let span = tracing::info_span!(
        "batch",
        events,
        first.partition = tracing::field::Empty,
        first.offset = tracing::field::Empty,
        last.partition = tracing::field::Empty,
        last.offset = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let (Some(first), Some(last)) = (positions.clone().min(), positions.max()) {
        span.record("first.partition", first.partition);
        span.record("first.offset", first.offset);
        span.record("last.partition", last.partition);
        span.record("last.offset", last.offset);
    }
    span
}

/// The ensure-then-ingest stage, shared by all in-flight batches.
pub(crate) struct Deliverer {
    /// Its one OpenMeter handle: ensures go through it, and ingest through
    /// its client (the same organisation and retry policy).
    provisioner: Provisioner,
    /// [`RetryPolicy::pipeline`]: held events are retried until stopped.
    pub(crate) retry: RetryPolicy,
    pub(crate) billing: BillingPolicy,
    /// Customers already logged for moved or late events.
    pub(crate) noted: Noted,
    /// Told when events are held, and when a batch gets through.
    pub(crate) health: Health,
    /// How many batches may be in flight; each ingest tells it how
    /// OpenMeter is coping.
    pub(crate) in_flight: Arc<AdaptiveLimit>,
    /// Bytes per ingest request: a larger batch is sent in parts.
    pub(crate) max_body_bytes: usize,
    /// Why delivery gave up, once `retry` (a one-shot command's) ran out on
    /// a failure that concerns every event: no batch is tried after that.
    gave_up: Mutex<Option<String>>,
    /// When a rate-limited hold was last logged.
    pub(crate) rate_limited: Throttled,
}

/// How a deliverer bills, how many batches it keeps in flight, and how
/// large its requests may be (from the pipeline's configuration).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeliveryConfig {
    pub(crate) billing: BillingPolicy,
    pub(crate) in_flight: InFlightBounds,
    pub(crate) max_body_bytes: usize,
}

/// Events sent together, and whether their customers were ensured afresh
/// after OpenMeter rejected them.
struct Chunk {
    events: Vec<Pending>,
    healed: bool,
}

/// Why events wait for another attempt.
struct Hold {
    class: ErrorClass,
    retry_after: Option<Duration>,
    /// OpenMeter's error, for the logs and `/ready`.
    reason: String,
    /// OpenMeter (or a gateway in front of it) answered 429: flow control,
    /// not an outage.
    rate_limited: bool,
}

/// Whether an OpenMeter answer was a 429.
fn rate_limited(e: Option<&ApiError>) -> bool {
    e.and_then(ApiError::status) == Some(429)
}

/// Rate-limited holds are logged at most once per [`Throttled::EVERY`]:
/// under a gateway's limit, delivery and ensure slow down and push-backs
/// keep coming, which is the limit working, not an outage to log each time.
#[derive(Debug, Default)]
pub(crate) struct Throttled {
    last: Mutex<Option<Instant>>,
    /// Holds since the last line.
    since: std::sync::atomic::AtomicU64,
}

impl Throttled {
    const EVERY: Duration = Duration::from_secs(60);

    /// `Some(holds since the last line)` when a line is due.
    fn due(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let held = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < Self::EVERY) {
            return None;
        }
        *last = Some(Instant::now());
        self.since.store(0, Ordering::Relaxed);
        Some(held)
    }
}

/// One attempt's leftovers: events to retry after a backoff.
#[derive(Default)]
struct Held {
    chunks: Vec<Chunk>,
    hold: Option<Hold>,
}

/// What one attempt at a batch made of its events: the outcomes to settle
/// (delivered, dead-lettered), and the events held for the next attempt.
#[derive(Default)]
struct Round {
    settled: Settlement,
    held: Held,
}

impl Round {
    /// `events` end dead-lettered with `kind` and `reason`.
    fn dead_letter(
        &mut self,
        events: impl IntoIterator<Item = Pending>,
        kind: DeadLetterKind,
        reason: &str,
    ) {
        for pending in events {
            let outcome = Outcome::dead_letter(kind, reason);
            self.settled.add(pending.record, outcome);
        }
    }
}

impl Held {
    fn push(&mut self, chunk: Chunk, hold: Hold) {
        if !chunk.events.is_empty() {
            self.chunks.push(chunk);
            self.hold = Some(hold);
        }
    }
}

impl Deliverer {
    pub(crate) fn new(
        provisioner: Provisioner,
        retry: RetryPolicy,
        config: DeliveryConfig,
        health: Health,
    ) -> Self {
        Self {
            provisioner,
            retry,
            billing: config.billing,
            noted: Noted::default(),
            health,
            in_flight: Arc::new(AdaptiveLimit::new(
                config.in_flight,
                Growth::DELIVERY,
                metrics().in_flight_limit.clone(),
            )),
            max_body_bytes: config.max_body_bytes,
            gave_up: Mutex::default(),
            rate_limited: Throttled::default(),
        }
    }

    /// The provisioner ensures go through: its caches and in-flight ensures
    /// are what `/ensure` and the continuous audit share under `run`.
    pub(crate) fn provisioner(&self) -> &Provisioner {
        &self.provisioner
    }

    /// Why delivery gave up, if it did (see [`Deliverer::flush`]).
    pub(crate) fn gave_up(&self) -> Option<String> {
        self.gave_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Events held: said when the hold is news (it began, or its reason
    /// changed) and the caller retries until stopped (the collector; a
    /// one-shot command's summary says why it stopped), else at debug
    /// level, so an outage is named once, not once per batch and attempt.
    /// Under a gateway's rate limit push-backs keep coming and their
    /// reasons alternate (ensure's calls, ingest): that is the limit
    /// working, said at most once a minute with the holds since. `/ready`
    /// names a hold for as long as it lasts.
    fn log_hold(&self, hold: &Hold, events: usize, delay: Duration, news: bool) {
        let error = &hold.reason;
        let delay = humantime::format_duration(Duration::from_millis(delay.as_millis() as u64));
        let delay = delay.to_string();
        match (news, hold.class) {
            (false, _) => tracing::debug!(events, delay, error, "holding events"),
            (true, ErrorClass::Configuration) => tracing::error!(
                error,
                "OpenMeter refuses the configuration (token, URL or plan): holding events until an operator fixes it"
            ),
            (true, _) if hold.rate_limited => match self.rate_limited.due() {
                Some(holds) => tracing::warn!(
                    events, delay, error, holds,
                    "OpenMeter is rate-limiting us (429): holding events and slowing down (logged at most once a minute; ticketmeter_upstream_calls_total counts them by status)"
                ),
                None => tracing::debug!(events, delay, error, "rate-limited: holding events"),
            },
            (true, _) => tracing::warn!(error, "OpenMeter unavailable: holding events until it answers"),
        }
    }

    /// Records the first reason delivery gave up for.
    fn give_up(&self, reason: &str) {
        let mut gave_up = self.gave_up.lock().unwrap_or_else(|e| e.into_inner());
        gave_up.get_or_insert_with(|| reason.to_owned());
    }

    /// Ensures and sends one batch, whose first record was read at
    /// `opened`, handing what each attempt delivered or dead-lettered to
    /// `settle` before the next. Returns true once every event in it is
    /// delivered or dead-lettered; false when `retry` ran out on a failure
    /// that concerns every event (a one-shot command's policy; the
    /// collector's never does), or another batch gave up already: the
    /// events still held are left unsettled, and [`Deliverer::gave_up`]
    /// says why. Its log lines share one `batch` span.
    pub(crate) async fn flush<S, F>(&self, batch: Vec<Pending>, opened: Instant, settle: S) -> bool
    where
        S: FnMut(Settlement) -> F,
        F: Future<Output = ()>,
    {
        let span = batch_span(batch.len(), batch.iter().map(|p| p.record.origin.position));
        let settled = self.flush_batch(batch, settle).instrument(span).await;
        metrics()
            .batch_latency
            .observe(opened.elapsed().as_secs_f64());
        settled
    }

    async fn flush_batch<S, F>(&self, batch: Vec<Pending>, mut settle: S) -> bool
    where
        S: FnMut(Settlement) -> F,
        F: Future<Output = ()>,
    {
        let mut todo = vec![Chunk {
            events: batch,
            healed: false,
        }];
        let mut attempt = 1;
        loop {
            let mut round = Round::default();
            while let Some(chunk) = todo.pop() {
                self.attempt(chunk, &mut todo, &mut round).await;
            }
            let Round { settled, held } = round;
            settle(settled).await;
            let Some(hold) = held.hold else { return true };
            let events: usize = held.chunks.iter().map(|c| c.events.len()).sum();
            if !self.retry.retries_after(attempt) || self.gave_up().is_some() {
                tracing::debug!(events, attempt, error = %hold.reason, "giving up: events not sent");
                self.give_up(&hold.reason);
                return false;
            }
            let news = self.health.held(&hold.reason);
            let delay = self.retry.delay(attempt, hold.retry_after);
            self.log_hold(&hold, events, delay, news && self.retry.until_stopped());
            tokio::time::sleep(delay).await;
            todo = held.chunks;
            attempt += 1;
        }
    }

    /// One attempt at a chunk: ensure its customers, send what can be sent
    /// (in parts of at most `max_body_bytes`). Rejected halves go back on
    /// `todo`; outcomes and what must wait go to `round`.
    async fn attempt(&self, chunk: Chunk, todo: &mut Vec<Chunk>, round: &mut Round) {
        let healed = chunk.healed;
        let ready = self.ensure_customers(chunk, round).await;
        for part in self.bodies(ready, round) {
            self.send(part, healed, todo, round).await;
        }
    }

    /// Sends one part: delivered, or put back on `todo` or held.
    async fn send(&self, part: Part, healed: bool, todo: &mut Vec<Chunk>, round: &mut Round) {
        let Part {
            events: ready,
            body,
        } = part;
        let sent = Instant::now();
        let Err(e) = self.provisioner.client().ingest_batch(body).await else {
            self.in_flight.observe(Signal::Answered(sent.elapsed()));
            self.accepted(ready, round);
            return;
        };
        let class = classify(Call::Ingest, &e);
        if class == ErrorClass::Transient {
            self.in_flight.observe(Signal::PushedBack);
        }
        let chunk = Chunk {
            events: ready,
            healed,
        };
        match class {
            ErrorClass::Rejected => self.rejected(chunk, &e, todo, round),
            _ => round.held.push(
                chunk,
                Hold {
                    class,
                    retry_after: e.retry_after(),
                    reason: e.to_string(),
                    rate_limited: rate_limited(Some(&e)),
                },
            ),
        }
    }

    /// Ensures every distinct customer of the chunk. Returns the events
    /// whose customer is ensured, their time set to what will be billed;
    /// refused customers' events are dead-lettered, the others held.
    async fn ensure_customers(&self, chunk: Chunk, round: &mut Round) -> Vec<Pending> {
        let answers = self
            .provisioner
            .ensure_each(chunk.events.iter().map(|p| &p.identity))
            .await;
        for (identity, answer) in &answers {
            if let Err(e) = answer {
                log_ensure_failure(&identity.customer_key(), e);
            }
        }
        let now = Utc::now();
        let mut ready = Vec::with_capacity(chunk.events.len());
        let mut waiting: HashMap<ErrorClass, (Vec<Pending>, Hold)> = HashMap::new();
        for mut pending in chunk.events {
            match &answers[&pending.identity] {
                Ok(ensured) => {
                    self.place_in_period(&mut pending, ensured, now);
                    ready.push(pending);
                }
                Err(e) if e.concerns_customer() => {
                    let reason = format!(
                        "OpenMeter refused customer {}: {e}",
                        pending.identity.customer_key()
                    );
                    round.dead_letter([pending], e.dead_letter_kind(), &reason);
                }
                Err(e) => {
                    let class = e.class();
                    let slot = waiting.entry(class).or_insert_with(|| {
                        let hold = Hold {
                            class,
                            retry_after: e.upstream().and_then(ApiError::retry_after),
                            reason: e.to_string(),
                            rate_limited: rate_limited(e.upstream()),
                        };
                        (Vec::new(), hold)
                    });
                    slot.0.push(pending);
                }
            }
        }
        for (events, hold) in waiting.into_values() {
            let chunk = Chunk {
                events,
                healed: chunk.healed,
            };
            round.held.push(chunk, hold);
        }
        ready
    }

    /// Sets the event's time to the one its subscription bills (the rule
    /// is `billing`'s), and counts usage that arrives after its period's
    /// invoice was collected.
    fn place_in_period(&self, pending: &mut Pending, ensured: &Ensured, now: DateTime<Utc>) {
        let terms = &ensured.terms;
        if let Some(start) = self.billing.moved_time(terms, pending.time) {
            pending.event.bill_from(start);
            pending.time = start;
            metrics().events_time_moved.inc();
            if self.noted.first(Note::Moved, &pending.identity) {
                tracing::info!(
                    customer = %ensured.customer_key,
                    subscription_active_from = %terms.active_from,
                    signed_at = pending.event.data.signed_at.as_deref().unwrap_or_default(),
                    "events older than the customer's subscription are sent at its start so they are invoiced"
                );
            }
        }
        if terms.missed_invoice(pending.time, self.billing.window(), now) {
            metrics().events_missed_invoice.inc();
            metrics()
                .usd_micros_missed_invoice
                .inc_by(pending.event.data.billable_usd_micros.whole_u64());
            if self.noted.first(Note::Late, &pending.identity) {
                tracing::warn!(
                    customer = %ensured.customer_key,
                    time = %pending.time,
                    period_end = %terms
                        .period_end(pending.time)
                        .map_or_else(|| "unknown".to_owned(), |end| end.to_rfc3339()),
                    "usage of a billing period whose invoice was already collected: OpenMeter stores it but will not invoice it"
                );
            }
        }
    }

    /// A chunk OpenMeter refused: ensure its customers afresh once, then
    /// split it until the refused events stand alone, and dead-letter those.
    fn rejected(&self, chunk: Chunk, e: &ApiError, todo: &mut Vec<Chunk>, round: &mut Round) {
        if !chunk.healed {
            let keys: HashSet<CustomerKey> = chunk
                .events
                .iter()
                .map(|p| p.identity.customer_key())
                .collect();
            for key in &keys {
                self.provisioner.forget(key);
            }
        }
        let mut left = chunk.events;
        match (left.len(), chunk.healed) {
            (1, true) => {
                let reason = format!("OpenMeter rejected the event: {}", e.detail());
                round.dead_letter(left, DeadLetterKind::Rejected, &reason);
            }
            (1, false) => todo.push(Chunk {
                events: left,
                healed: true,
            }),
            _ => {
                let right = left.split_off(left.len() / 2);
                todo.push(Chunk {
                    events: right,
                    healed: true,
                });
                todo.push(Chunk {
                    events: left,
                    healed: true,
                });
            }
        }
    }

    /// The request bodies of `ready`; an event that cannot be serialised
    /// (a bug, never its data) is dead-lettered with the reason.
    fn bodies(&self, ready: Vec<Pending>, round: &mut Round) -> Vec<Part> {
        if ready.is_empty() {
            return Vec::new();
        }
        let Bodies { parts, failed } = batch_bodies(ready, self.max_body_bytes);
        for (pending, e) in failed {
            let reason = format!("the CloudEvent could not be serialised: {e}");
            round.dead_letter([pending], DeadLetterKind::InvalidData, &reason);
        }
        parts
    }

    fn accepted(&self, chunk: Vec<Pending>, round: &mut Round) {
        self.health.progressed();
        metrics().batches.inc();
        for pending in chunk {
            round.settled.add(pending.record, Outcome::Delivered);
        }
    }
}

/// A refused customer is logged with its key; a failure that holds events
/// is logged once per hold by [`Deliverer::log_hold`], not once per customer.
fn log_ensure_failure(key: &CustomerKey, e: &EnsureError) {
    if e.concerns_customer() {
        tracing::warn!(customer = %key, kind = %e.dead_letter_kind(), error = %e, "OpenMeter refused this customer; dead-lettering its events, billing everyone else");
    } else {
        // The batch's hold says it once for all its customers.
        tracing::debug!(customer = %key, error = %e, "ensure failed; holding this customer's events");
    }
}

/// Events sent in one ingest request, and its body.
struct Part {
    events: Vec<Pending>,
    body: Bytes,
}

/// A batch's ingest requests, and the events that could not be serialised.
#[derive(Default)]
struct Bodies {
    parts: Vec<Part>,
    failed: Vec<(Pending, serde_json::Error)>,
}

/// Ingest request bodies, `[e1,e2,…]`, each event serialised straight into
/// its body: a body is closed before the event that would take it past
/// `max_bytes` (an event alone in its body may exceed it; OpenMeter then
/// decides).
fn batch_bodies(ready: Vec<Pending>, max_bytes: usize) -> Bodies {
    let mut out = Bodies::default();
    let mut part = Vec::with_capacity(ready.len());
    let mut body = BytesMut::with_capacity(max_bytes.min(ready.len() * 1024) + 2);
    body.put_u8(b'[');
    for pending in ready {
        let mark = body.len();
        if !part.is_empty() {
            body.put_u8(b',');
        }
        if let Err(e) = serde_json::to_writer((&mut body).writer(), &pending.event) {
            body.truncate(mark);
            out.failed.push((pending, e));
            continue;
        }
        if body.len() + 1 > max_bytes && !part.is_empty() {
            let event = body.split_off(mark);
            body.put_u8(b']');
            out.parts.push(Part {
                events: std::mem::take(&mut part),
                body: body.split().freeze(),
            });
            body.put_u8(b'[');
            body.extend_from_slice(event.get(1..).unwrap_or_default());
        }
        part.push(pending);
    }
    if !part.is_empty() {
        body.put_u8(b']');
        out.parts.push(Part {
            events: part,
            body: body.freeze(),
        });
    }
    out
}

/// What is logged once per customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Note {
    Moved,
    Late,
}

/// Customers already logged, so a backlog logs one line per customer, not
/// one per event. Bounded: forgotten wholesale past [`Noted::LIMIT`] (a
/// customer may then be logged once more).
#[derive(Debug, Default)]
pub(crate) struct Noted(Mutex<HashMap<Note, HashSet<Identity>>>);

impl Noted {
    const LIMIT: usize = 10_000;

    /// True the first time `identity` is noted for `note`; no allocation
    /// once it was.
    fn first(&self, note: Note, identity: &Identity) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let seen = seen.entry(note).or_default();
        if seen.contains(identity) {
            return false;
        }
        if seen.len() >= Self::LIMIT {
            seen.clear();
        }
        seen.insert(identity.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::{batch_bodies, batch_span, Pending};
    use crate::commit::Position;
    use crate::contract::Contract;
    use crate::decode::{decode, Decoded};
    use crate::map::map;
    use crate::source::{Origin, Record};

    fn pending(i: usize) -> Pending {
        let payload = format!(
            r#"{{"id":"env-{i}","type":"create_signed_ticket","data":{{"request_id":"r{i}","auth_id":"app:u{i}","computed_fee":"10","current_time":"2026-09-09T00:00:00Z"}}}}"#
        );
        let contract = Contract::default();
        let Ok(Decoded::Ticket(ticket)) = decode(payload.as_bytes(), 1 << 20, &contract) else {
            panic!("a billable sample");
        };
        let mapped = map(*ticket, &"3500".parse().unwrap(), &contract);
        let record = Record {
            payload: payload.into(),
            key: None,
            headers: Vec::new(),
            origin: Origin {
                source: "test".into(),
                position: Position {
                    partition: 0,
                    offset: i as i64,
                },
            },
        };
        Pending {
            record,
            identity: mapped.identity,
            event: Box::new(mapped.event),
            time: mapped.signed_at,
        }
    }

    fn ids(body: &[u8]) -> Vec<String> {
        let events: Vec<serde_json::Value> = serde_json::from_slice(body).expect("a JSON array");
        events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_batch_within_the_byte_limit_is_one_request_of_every_event() {
        let bodies = batch_bodies((0..5).map(pending).collect(), 1 << 20);
        assert_eq!(bodies.parts.len(), 1);
        assert_eq!(ids(&bodies.parts[0].body).len(), 5);
        assert!(bodies.failed.is_empty());
    }

    #[test]
    fn a_batch_past_the_byte_limit_is_split_into_requests_within_it_in_order() {
        let one = batch_bodies(vec![pending(0)], 1 << 20).parts[0].body.len();
        let limit = one * 2 + 2;
        let bodies = batch_bodies((0..5).map(pending).collect(), limit);
        let sizes: Vec<usize> = bodies.parts.iter().map(|p| p.events.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        let mut sent = Vec::new();
        for part in &bodies.parts {
            assert!(part.body.len() <= limit, "{} > {limit}", part.body.len());
            let body_ids = ids(&part.body);
            let event_ids: Vec<String> = part.events.iter().map(|p| p.event.id.clone()).collect();
            assert_eq!(body_ids, event_ids, "a body carries exactly its events");
            sent.extend(body_ids);
        }
        let all: Vec<String> = (0..5).map(|i| pending(i).event.id.clone()).collect();
        assert_eq!(sent, all);
    }

    #[test]
    fn an_event_larger_than_the_byte_limit_is_sent_alone() {
        let bodies = batch_bodies((0..3).map(pending).collect(), 10);
        assert_eq!(bodies.parts.len(), 3);
        assert!(bodies.parts.iter().all(|p| ids(&p.body).len() == 1));
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_batchs_log_lines_carry_its_size_and_position_range() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let positions =
            [(0, 7), (0, 5), (1, 3)].map(|(partition, offset)| Position { partition, offset });
        tracing::subscriber::with_default(subscriber, || {
            let _entered = batch_span(positions.len(), positions.iter().copied()).entered();
            tracing::info!("sent");
        });
        let log =
            String::from_utf8(captured.0.lock().expect("not poisoned").clone()).expect("UTF-8 log");
        assert!(
            log.contains(
                "batch{events=3 first.partition=0 first.offset=5 last.partition=1 last.offset=3}: "
            ),
            "{log}"
        );
    }
}
