//! How a caller retries transient failures. One [`RetryPolicy`] per role,
//! chosen where `app` builds the clients (after Vector's
//! `sinks/util/retries.rs`); whether a failure is transient at all is
//! decided elsewhere, once (`openmeter::classify`, the DLQ producer's
//! refusal rules).
//!
//! - [`RetryPolicy::pipeline`]: the collector retries until it is stopped;
//!   it never gives up on an event, and its health reports the hold. Its
//!   OpenMeter client makes a single attempt ([`RetryPolicy::once`]), so
//!   delivery's hold loop is the one retry layer.
//! - [`RetryPolicy::one_shot`]: a caller that answers someone (the API's
//!   `/ensure`, the commands, the audit) tries a few times, then reports.

use std::time::Duration;

use rand::Rng;

/// How long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The longest wait before attempt `attempt + 1`: `base × 2^(attempt-1)`,
    /// capped at `max`.
    fn ceiling(&self, attempt: u32) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)))
            .min(self.max)
    }

    /// The wait before attempt `attempt + 1`: the server's `Retry-After`
    /// when given (capped at `max`), else a random delay up to the
    /// ceiling, never below half of it (spreads retries of many callers).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        self.wait(attempt, retry_after, Jitter::Full)
    }

    fn wait(&self, attempt: u32, retry_after: Option<Duration>, jitter: Jitter) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max);
        }
        let ceiling = self.ceiling(attempt);
        match jitter {
            Jitter::Full => {
                let half = ceiling / 2;
                half + rand::thread_rng().gen_range(Duration::ZERO..=half)
            }
            Jitter::None => ceiling,
        }
    }
}

/// Whether waits are randomised. `None` makes them exact, for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    #[default]
    Full,
    None,
}

/// How many attempts a caller makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempts {
    /// At most this many (at least one).
    UpTo(u32),
    /// Until the caller is stopped.
    UntilStopped,
}

/// A role's retry policy: how many attempts, and the waits between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: Attempts,
    pub backoff: Backoff,
    pub jitter: Jitter,
}

impl RetryPolicy {
    /// Attempts of a caller that answers someone.
    pub const ONE_SHOT_ATTEMPTS: u32 = 4;

    /// A caller that answers someone: a few attempts, then it reports.
    pub fn one_shot() -> Self {
        Self {
            attempts: Attempts::UpTo(Self::ONE_SHOT_ATTEMPTS),
            backoff: Backoff::default(),
            jitter: Jitter::Full,
        }
    }

    /// The collector: retries with `backoff` until it is stopped.
    pub fn pipeline(backoff: Backoff) -> Self {
        Self {
            attempts: Attempts::UntilStopped,
            backoff,
            jitter: Jitter::Full,
        }
    }

    /// A single attempt: for a client whose caller is the retry layer.
    pub fn once() -> Self {
        Self {
            attempts: Attempts::UpTo(1),
            ..Self::one_shot()
        }
    }

    /// The same policy with exact waits (tests).
    pub fn without_jitter(self) -> Self {
        Self {
            jitter: Jitter::None,
            ..self
        }
    }

    /// Whether a transient failure of attempt `attempt` (counting from 1)
    /// is tried again.
    pub fn retries_after(&self, attempt: u32) -> bool {
        match self.attempts {
            Attempts::UpTo(n) => attempt < n,
            Attempts::UntilStopped => true,
        }
    }

    /// Whether the caller retries until it is stopped (the collector).
    pub fn until_stopped(&self) -> bool {
        self.attempts == Attempts::UntilStopped
    }

    /// The wait before attempt `attempt + 1`; see [`Backoff::delay`].
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        self.backoff.wait(attempt, retry_after, self.jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_and_is_capped() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert!(b.delay(1, None) <= Duration::from_millis(100));
        assert!(b.delay(3, None) >= Duration::from_millis(200));
        assert!(b.delay(30, None) <= Duration::from_secs(1));
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let b = Backoff::default();
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(b.delay(1, Some(Duration::from_secs(999))), b.max);
    }

    #[test]
    fn without_jitter_the_waits_double_exactly_up_to_the_cap() {
        let policy = RetryPolicy::pipeline(Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(500),
        })
        .without_jitter();
        let waits: Vec<u128> = (1..=5).map(|a| policy.delay(a, None).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn a_one_shot_caller_gives_up_and_the_pipeline_never_does() {
        let one_shot = RetryPolicy::one_shot();
        assert!(one_shot.retries_after(RetryPolicy::ONE_SHOT_ATTEMPTS - 1));
        assert!(!one_shot.retries_after(RetryPolicy::ONE_SHOT_ATTEMPTS));
        assert!(!RetryPolicy::once().retries_after(1));
        assert!(RetryPolicy::pipeline(Backoff::default()).retries_after(u32::MAX));
    }
}
