//! The distance between a client and the server: a round trip every
//! request waits (fixed, or jittered), and the rate limit a gateway in
//! front of OpenMeter enforces (Kong Konnect's answers 429 with
//! `Retry-After`; a self-hosted OpenMeter behind a proxy may do the same).
//! OpenMeter itself does not rate-limit ingest, so the limit is off unless
//! a test or benchmark sets it.
//!
//! Benchmarks on loopback, where a call costs microseconds, cannot show
//! what bounds delivery against a real server 50–100 ms away; this can.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far the double is from its clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Network {
    /// Every request waits this long before it is answered.
    pub latency: Duration,
    /// Plus a wait spread evenly over `0..=jitter`.
    pub jitter: Duration,
    /// Requests beyond this rate are answered 429 before they reach the
    /// API (so a limited request changes nothing).
    pub rate_limit: Option<RateLimit>,
}

/// A token bucket: `per_second` requests on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
    /// How the 429 says when to come back.
    pub retry_after: RetryAfterForm,
}

/// `Retry-After`'s two forms (RFC 9110 §10.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfterForm {
    /// Delay seconds, rounded up: `Retry-After: 1`.
    Seconds,
    /// An IMF-fixdate: `Retry-After: Sat, 05 Dec 2026 08:49:37 GMT`.
    HttpDate,
}

/// The network as set, and the rate limit's bucket.
#[derive(Default)]
pub(crate) struct Conditions {
    network: Mutex<Network>,
    bucket: Mutex<Option<Bucket>>,
    /// Requests answered 429 by the rate limit.
    limited: AtomicU64,
    /// Spreads jitter without a random source: successive requests step
    /// through the range (a Weyl sequence), so runs are repeatable.
    step: AtomicU64,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Conditions {
    pub(crate) fn set(&self, network: Network) {
        *lock(&self.network) = network;
        *lock(&self.bucket) = None;
    }

    pub(crate) fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }

    /// The wait this request pays for the round trip.
    pub(crate) fn delay(&self) -> Duration {
        let network = *lock(&self.network);
        if network.jitter.is_zero() {
            return network.latency;
        }
        // 0.618… of the range per step: evenly spread, never periodic.
        const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
        let step = self.step.fetch_add(1, Ordering::Relaxed);
        let fraction = step.wrapping_mul(GOLDEN) as f64 / u64::MAX as f64;
        network.latency + network.jitter.mul_f64(fraction)
    }

    /// `None` when the request may pass, else how long until a token is
    /// free and the form to say it in.
    pub(crate) fn admit(&self) -> Option<(Duration, RetryAfterForm)> {
        let limit = lock(&self.network).rate_limit?;
        let rate = f64::from(limit.per_second.max(1));
        let burst = f64::from(limit.burst.max(1));
        let now = Instant::now();
        let mut bucket = lock(&self.bucket);
        let bucket = bucket.get_or_insert(Bucket {
            tokens: burst,
            refilled: now,
        });
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return None;
        }
        self.limited.fetch_add(1, Ordering::Relaxed);
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / rate);
        Some((wait, limit.retry_after))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(per_second: u32, burst: u32) -> Conditions {
        let c = Conditions::default();
        c.set(Network {
            rate_limit: Some(RateLimit {
                per_second,
                burst,
                retry_after: RetryAfterForm::Seconds,
            }),
            ..Network::default()
        });
        c
    }

    #[test]
    fn a_burst_passes_and_the_next_request_is_limited() {
        let c = limited(1, 3);
        assert!((0..3).all(|_| c.admit().is_none()));
        let (wait, _) = c.admit().expect("limited");
        assert!(wait > Duration::from_millis(900), "{wait:?}");
        assert_eq!(c.limited(), 1);
    }

    #[test]
    fn without_a_limit_every_request_passes() {
        let c = Conditions::default();
        assert!((0..10_000).all(|_| c.admit().is_none()));
    }

    #[test]
    fn jittered_delays_stay_within_the_range_and_spread_over_it() {
        let c = Conditions::default();
        let latency = Duration::from_millis(50);
        let jitter = Duration::from_millis(20);
        c.set(Network {
            latency,
            jitter,
            rate_limit: None,
        });
        let delays: Vec<Duration> = (0..1000).map(|_| c.delay()).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= latency && *d <= latency + jitter));
        let high = delays.iter().filter(|d| **d > latency + jitter / 2).count();
        assert!((400..600).contains(&high), "{high}");
    }
}
