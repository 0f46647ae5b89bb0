//! How many requests of one kind are in flight to OpenMeter at once,
//! adapted to its round trip and answers (after Vector's adaptive request
//! concurrency, `src/sinks/util/adaptive_concurrency/controller.rs`). Two
//! limits use it: delivery's batches in flight and ensure's calls.
//!
//! Delivery is bounded by in-flight batches × batch size ÷ round trip: a
//! fixed four batches of 500 against a server 80 ms away cap a backlog's
//! replay at 25k events/s however fast everything else is; new customers
//! are bounded by ensure calls in flight ÷ round trip in the same way. So
//! a limit grows each round trip while OpenMeter answers as fast as before
//! and every slot was used, and shrinks by a tenth when OpenMeter pushes
//! back (429, 5xx, no answer) or its round trip grows well past its usual
//! one (a queue building up on its side). Delivery's grows by one a round
//! trip; ensure's doubles until the first push-back and then grows by one
//! (TCP's slow start), because a flood of new customers needs hundreds of
//! calls in flight within seconds, not minutes. A limit stays within
//! `[min, max]` (`BATCH_MIN_IN_FLIGHT`/`BATCH_MAX_IN_FLIGHT`,
//! `ENSURE_MIN_CONCURRENCY`/`ENSURE_MAX_CONCURRENCY`); equal bounds pin it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

/// The bounds the limit adapts within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlightBounds {
    pub min: usize,
    pub max: usize,
}

impl InFlightBounds {
    /// Bounds with `1 ≤ min ≤ max`.
    pub fn new(min: usize, max: usize) -> Self {
        let max = max.max(1);
        Self {
            min: min.clamp(1, max),
            max,
        }
    }
}

/// How a limit starts, grows while OpenMeter keeps up, and what it reads
/// as a slow answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Growth {
    start: usize,
    /// Doubles each round trip until the first push-back or slow answer,
    /// then grows by one (else by one from the start).
    slow_start: bool,
    /// A round trip this fraction above the usual one (and beyond its
    /// usual spread) is slow: a queue is building up upstream.
    slower_by: f64,
}

impl Growth {
    /// Delivery's: the former fixed four batches, one more a round trip.
    pub(crate) const DELIVERY: Self = Self {
        start: 4,
        slow_start: false,
        slower_by: 0.1,
    };

    /// Ensure's: the former 16 per batch, doubling. A batch hands over
    /// hundreds of identities at once, so even a server that keeps up
    /// answers the last of such a burst a little later than the first; a
    /// quarter above the usual round trip, not a tenth, is a queue.
    pub(crate) const ENSURE: Self = Self {
        start: 16,
        slow_start: true,
        slower_by: 0.25,
    };

    fn start(self, bounds: InFlightBounds) -> usize {
        self.start.clamp(bounds.min, bounds.max)
    }

    /// Below this limit a busy, fast period doubles it.
    fn doubling_below(self) -> usize {
        if self.slow_start {
            usize::MAX
        } else {
            0
        }
    }
}

impl Default for InFlightBounds {
    fn default() -> Self {
        Self::new(1, 32)
    }
}

/// What one request said about OpenMeter's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Signal {
    /// Accepted after this round trip.
    Answered(Duration),
    /// Refused for now: 429, 5xx, or no answer.
    PushedBack,
}

/// A round trip this many deviations above its usual mean (or the
/// limit's `slower_by` fraction above it, whichever is larger, so a steady
/// round trip with no spread does not read noise as congestion) means a
/// queue is building up upstream.
const DEVIATION_SCALE: f64 = 2.5;
/// The share of the limit kept after a push-back.
const DECREASE: f64 = 0.9;
/// Weight of the newest period in the usual round trip's mean.
const EWMA_WEIGHT: f64 = 0.4;

/// An adaptive limit, shared by whoever takes slots (the pipeline for
/// batches, ensure for calls) and whoever reports each request's signal.
#[derive(Debug)]
pub(crate) struct AdaptiveLimit {
    bounds: InFlightBounds,
    state: Mutex<State>,
    freed: Notify,
    /// What a slow answer is (`Growth::slower_by`).
    slower_by: f64,
    /// Where the limit is shown (`ticketmeter_delivery_in_flight_limit`,
    /// `ticketmeter_ensure_concurrency_limit`).
    gauge: Gauge,
}

#[derive(Debug)]
struct State {
    limit: usize,
    in_use: usize,
    period: Period,
    /// The usual round trip: mean and variance, in seconds.
    usual: Option<(f64, f64)>,
    /// Below this the limit doubles rather than growing by one; set to the
    /// limit at each decrease.
    doubling_below: usize,
}

/// What was seen since the limit last changed.
#[derive(Debug)]
struct Period {
    started: Instant,
    rtt_sum: f64,
    answers: u32,
    pushed_back: bool,
    /// Whether every slot was taken at some point (else growing the limit
    /// would not be tested by the load).
    full: bool,
}

impl Period {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            rtt_sum: 0.0,
            answers: 0,
            pushed_back: false,
            full: false,
        }
    }
}

/// A slot, given back when dropped.
pub(crate) struct Slot {
    limit: Arc<AdaptiveLimit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limit.lock().in_use -= 1;
        self.limit.freed.notify_one();
    }
}

impl AdaptiveLimit {
    pub(crate) fn new(bounds: InFlightBounds, growth: Growth, gauge: Gauge) -> Self {
        let limit = growth.start(bounds);
        gauge.set(limit as i64);
        Self {
            bounds,
            state: Mutex::new(State {
                limit,
                in_use: 0,
                period: Period::new(),
                usual: None,
                doubling_below: growth.doubling_below(),
            }),
            freed: Notify::new(),
            slower_by: growth.slower_by,
            gauge,
        }
    }

    /// The most slots it may ever hand out.
    pub(crate) fn max(&self) -> usize {
        self.bounds.max
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The limit now (the gauge `delivery_in_flight_limit` shows it).
    #[cfg(test)]
    fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Waits for a free slot.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_take() {
                return Slot {
                    limit: self.clone(),
                };
            }
            freed.await;
        }
    }

    fn try_take(&self) -> bool {
        let mut state = self.lock();
        if state.in_use >= state.limit {
            state.period.full = true;
            return false;
        }
        state.in_use += 1;
        if state.in_use == state.limit {
            state.period.full = true;
        }
        true
    }

    /// Records one ingest's signal; once a usual round trip has passed
    /// since the last change (at once on a push-back), adjusts the limit.
    pub(crate) fn observe(&self, signal: Signal) {
        let mut state = self.lock();
        match signal {
            Signal::Answered(rtt) => {
                state.period.rtt_sum += rtt.as_secs_f64();
                state.period.answers += 1;
            }
            Signal::PushedBack => state.period.pushed_back = true,
        }
        let due = state.period.pushed_back
            || state.period.started.elapsed().as_secs_f64()
                >= state.usual.map_or(0.0, |(mean, _)| mean);
        if due && (state.period.pushed_back || state.period.answers > 0) {
            let before = state.limit;
            self.adjust(&mut state);
            for _ in before..state.limit {
                self.freed.notify_one();
            }
        }
    }

    fn adjust(&self, state: &mut State) {
        let period = std::mem::replace(&mut state.period, Period::new());
        let mean = (period.answers > 0).then(|| period.rtt_sum / f64::from(period.answers));
        let congested = match (mean, state.usual) {
            (Some(now), Some((usual, variance))) => {
                now > usual + (DEVIATION_SCALE * variance.sqrt()).max(self.slower_by * usual)
            }
            _ => false,
        };
        if period.pushed_back || congested {
            let shrunk = (state.limit as f64 * DECREASE).floor() as usize;
            state.limit = shrunk.min(state.limit - 1).max(self.bounds.min);
            state.doubling_below = state.limit;
        } else if period.full {
            let grown = if state.limit < state.doubling_below {
                state.limit * 2
            } else {
                state.limit + 1
            };
            state.limit = grown.min(self.bounds.max);
        }
        if let Some(now) = mean {
            state.usual = Some(match state.usual {
                None => (now, 0.0),
                Some((usual, variance)) => {
                    let diff = now - usual;
                    let usual = usual + EWMA_WEIGHT * diff;
                    (
                        usual,
                        (1.0 - EWMA_WEIGHT) * (variance + EWMA_WEIGHT * diff * diff),
                    )
                }
            });
        }
        tracing::trace!(
            limit = state.limit,
            round_trip = ?mean.map(Duration::from_secs_f64),
            congested,
            pushed_back = period.pushed_back,
            "adaptive limit adjusted"
        );
        self.gauge.set(state.limit as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(5);

    fn limit(min: usize, max: usize) -> Arc<AdaptiveLimit> {
        growing(min, max, Growth::DELIVERY)
    }

    fn growing(min: usize, max: usize, growth: Growth) -> Arc<AdaptiveLimit> {
        let bounds = InFlightBounds::new(min, max);
        Arc::new(AdaptiveLimit::new(bounds, growth, Gauge::default()))
    }

    /// Takes every slot, waits out a round trip, answers them all in `rtt`.
    async fn busy_period(limit: &Arc<AdaptiveLimit>, rtt: Duration) {
        let n = limit.limit();
        let mut slots = Vec::new();
        for _ in 0..n {
            slots.push(limit.acquire().await);
        }
        tokio::time::sleep(rtt).await;
        for slot in slots {
            limit.observe(Signal::Answered(rtt));
            drop(slot);
        }
    }

    #[test]
    fn a_pipeline_starts_at_the_former_fixed_limit_within_its_bounds() {
        assert_eq!(limit(1, 32).limit(), 4);
        assert_eq!(limit(1, 2).limit(), 2);
        assert_eq!(limit(8, 32).limit(), 8);
    }

    #[test]
    fn bounds_keep_one_slot_at_least_and_min_at_most_max() {
        assert_eq!(InFlightBounds::new(0, 0), InFlightBounds { min: 1, max: 1 });
        assert_eq!(InFlightBounds::new(9, 4), InFlightBounds { min: 4, max: 4 });
    }

    #[tokio::test]
    async fn the_limit_grows_while_every_slot_is_used_and_answers_stay_fast() {
        let limit = limit(1, 32);
        for _ in 0..6 {
            busy_period(&limit, RTT).await;
        }
        assert!(limit.limit() > 4, "{}", limit.limit());
    }

    #[tokio::test]
    async fn the_limit_does_not_grow_past_its_maximum() {
        let limit = limit(1, 5);
        for _ in 0..6 {
            busy_period(&limit, RTT).await;
        }
        assert_eq!(limit.limit(), 5);
    }

    #[tokio::test]
    async fn the_limit_does_not_grow_when_the_load_does_not_fill_it() {
        let limit = limit(1, 32);
        for _ in 0..6 {
            let slot = limit.acquire().await;
            tokio::time::sleep(RTT).await;
            limit.observe(Signal::Answered(RTT));
            drop(slot);
        }
        assert_eq!(limit.limit(), 4);
    }

    #[test]
    fn a_push_back_shrinks_the_limit_at_once_but_not_below_its_minimum() {
        let limit = limit(2, 32);
        limit.observe(Signal::PushedBack);
        assert_eq!(limit.limit(), 3);
        for _ in 0..5 {
            limit.observe(Signal::PushedBack);
        }
        assert_eq!(limit.limit(), 2);
    }

    #[tokio::test]
    async fn a_round_trip_well_above_the_usual_one_shrinks_the_limit() {
        let limit = limit(1, 32);
        for _ in 0..4 {
            busy_period(&limit, RTT).await;
        }
        let grown = limit.limit();
        busy_period(&limit, RTT * 10).await;
        assert!(limit.limit() < grown, "{} < {grown}", limit.limit());
    }

    #[tokio::test]
    async fn equal_bounds_pin_the_limit() {
        let limit = limit(4, 4);
        for _ in 0..4 {
            busy_period(&limit, RTT).await;
        }
        limit.observe(Signal::PushedBack);
        assert_eq!(limit.limit(), 4);
    }

    #[tokio::test]
    async fn a_slow_start_doubles_the_limit_each_busy_round_trip() {
        let limit = growing(1, 512, Growth::ENSURE);
        for expected in [32, 64, 128] {
            busy_period(&limit, RTT).await;
            assert_eq!(limit.limit(), expected);
        }
    }

    #[tokio::test]
    async fn after_a_push_back_a_slow_start_grows_by_one() {
        let limit = growing(1, 512, Growth::ENSURE);
        busy_period(&limit, RTT).await;
        limit.observe(Signal::PushedBack);
        let shrunk = limit.limit();
        assert_eq!(shrunk, 28);
        busy_period(&limit, RTT).await;
        assert_eq!(limit.limit(), shrunk + 1);
    }

    #[tokio::test]
    async fn a_round_trip_a_fifth_above_the_usual_slows_delivery_but_not_ensure() {
        let usual = RTT * 4;
        for (growth, shrinks) in [(Growth::DELIVERY, true), (Growth::ENSURE, false)] {
            let limit = growing(1, 512, growth);
            for _ in 0..3 {
                busy_period(&limit, usual).await;
            }
            // A period's answers are read as the next one ends: the first
            // slow period only primes the second.
            busy_period(&limit, usual * 6 / 5).await;
            let before = limit.limit();
            busy_period(&limit, usual * 6 / 5).await;
            assert_eq!(limit.limit() < before, shrinks, "{growth:?}");
        }
    }

    #[tokio::test]
    async fn a_freed_slot_wakes_the_waiting_taker() {
        let limit = limit(1, 1);
        let held = limit.acquire().await;
        let waiting = tokio::spawn({
            let limit = limit.clone();
            async move { limit.acquire().await }
        });
        tokio::time::sleep(RTT).await;
        assert!(!waiting.is_finished());
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("slot");
    }
}
