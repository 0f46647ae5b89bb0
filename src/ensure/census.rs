//! What a warm-up learnt, kept for ensure and for deciding the next
//! warm-up: the census of keys OpenMeter held, and what the last one cost.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

/// Unknown identities in one batch that make it worth reading every page,
/// at the least (and never fewer than the pages cost).
pub(crate) const BACKLOG_MISSES: usize = 64;
/// A backlog warms the cache again at most this often.
pub(crate) const REWARM_AFTER: Duration = Duration::from_secs(300);
/// What one warm-up learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warmed {
    /// Live customers listed.
    pub customers: usize,
    /// Identities now cached: customers with a current subscription, and
    /// the other subject keys they own.
    pub identities: usize,
    /// Page requests made.
    pub pages: usize,
    /// More customers than the cache holds.
    pub oversize: bool,
    pub took: Duration,
}

/// The keys OpenMeter held when a warm-up listed them all, together with
/// the cache: a fingerprint each (sorted) of those the cache does not hold,
/// of all of them when the organisation is larger than the cache. A key
/// neither lists did not exist then (a fingerprint shared by two keys only
/// makes ensure look the second one up; a cached key forgotten since, after
/// OpenMeter rejected its events, costs one conflicting create).
#[derive(Debug)]
pub(super) struct Census {
    pub(super) fingerprints: Vec<u64>,
    pub(super) hasher: RandomState,
    pub(super) taken: Instant,
}

impl Census {
    pub(super) fn lists(&self, key: &str) -> bool {
        self.fingerprints
            .binary_search(&self.hasher.hash_one(key))
            .is_ok()
    }

    /// Whether it is younger than `ttl` (as long as a cached answer is
    /// trusted).
    pub(super) fn is_fresh(&self, ttl: Duration) -> bool {
        self.taken.elapsed() < ttl
    }
}

/// What the last warm-up costs and found, for deciding the next.
#[derive(Debug, Default)]
pub(super) struct LastWarmUp {
    pub(super) at: Option<Instant>,
    pub(super) pages: usize,
    pub(super) oversize: bool,
}
