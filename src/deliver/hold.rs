//! The hold loop: a batch is attempted until every event in it is
//! delivered or dead-lettered, each attempt's outcomes handed over to be
//! settled before the next; what a failure that concerns every event holds
//! waits with backoff, said once, not once per batch and attempt.

use std::future::Future;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::{Chunk, Deliverer, Pending};
use crate::commit::Position;
use crate::dlq::DeadLetterKind;
use crate::metrics::metrics;
use crate::openmeter::{ApiError, ErrorClass};
use crate::settle::{Outcome, Settlement};

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

/// Why events wait for another attempt.
pub(super) struct Hold {
    pub(super) class: ErrorClass,
    pub(super) retry_after: Option<Duration>,
    /// OpenMeter's error, for the logs and `/ready`.
    pub(super) reason: String,
    /// OpenMeter (or a gateway in front of it) answered 429: flow control,
    /// not an outage.
    pub(super) rate_limited: bool,
}

/// Whether an OpenMeter answer was a 429.
pub(super) fn rate_limited(e: Option<&ApiError>) -> bool {
    e.and_then(ApiError::status) == Some(429)
}

/// One attempt's leftovers: events to retry after a backoff.
#[derive(Default)]
pub(super) struct Held {
    chunks: Vec<Chunk>,
    hold: Option<Hold>,
}

/// What one attempt at a batch made of its events: the outcomes to settle
/// (delivered, dead-lettered), and the events held for the next attempt.
#[derive(Default)]
pub(super) struct Round {
    pub(super) settled: Settlement,
    pub(super) held: Held,
}

impl Round {
    /// `events` end dead-lettered with `kind` and `reason`.
    pub(super) fn dead_letter(
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
    pub(super) fn push(&mut self, chunk: Chunk, hold: Hold) {
        if !chunk.events.is_empty() {
            self.chunks.push(chunk);
            self.hold = Some(hold);
        }
    }
}

impl Deliverer {
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

    /// Events held: said when the hold is news (it began, or its reason
    /// changed) and the caller retries until stopped (the collector; a
    /// one-shot command's summary says why it stopped), else at debug
    /// level, so an outage is named once, not once per batch and attempt.
    /// Under a gateway's rate limit push-backs keep coming and their
    /// reasons alternate (ensure's calls, ingest): that is the limit
    /// working, said at most once a minute with how many such holds began
    /// since (`holds`). `/ready`
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
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::batch_span;
    use crate::commit::Position;

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
