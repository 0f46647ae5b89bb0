//! What is logged once: a customer's moved or late events once per
//! customer, a rate-limited hold at most once a minute.

use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::Identity;

/// Rate-limited holds are logged at most once per [`Throttled::EVERY`]:
/// under a gateway's limit, delivery and ensure slow down and push-backs
/// keep coming, which is the limit working, not an outage to log each time.
#[derive(Debug, Default)]
pub(super) struct Throttled {
    last: Mutex<Option<Instant>>,
    /// Rate-limited holds that began since the last line.
    since: std::sync::atomic::AtomicU64,
}

impl Throttled {
    const EVERY: Duration = Duration::from_secs(60);

    /// `Some(holds since the last line)` when a line is due.
    pub(super) fn due(&self) -> Option<u64> {
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

/// What is logged once per customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Note {
    Moved,
    Late,
}

/// Customers already logged, so a backlog logs one line per customer, not
/// one per event. Bounded: forgotten wholesale past [`Noted::LIMIT`] (a
/// customer may then be logged once more). Held as 64-bit hashes of the
/// identities (foldhash, hashbrown's default), not the identities: a
/// backlog moves every event, and comparing a stored identity's strings,
/// cold in memory, was a visible share of the collector's CPU (BENCHMARKS.md,
/// "Hot path, part 7"). Two customers whose
/// hashes collide (odds about 10^-11 at the limit) share one line.
#[derive(Debug, Default)]
pub(super) struct Noted {
    seen: Mutex<[hashbrown::HashSet<u64>; 2]>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Noted {
    const LIMIT: usize = 10_000;

    /// True the first time `identity` is noted for `note`. `asked` is what
    /// this chunk already asked about the customer, so a chunk asks here
    /// (a lock and a hash) once per customer, not per event.
    pub(super) fn first(&self, note: Note, identity: &Identity, asked: &mut Asked) -> bool {
        let flag = match note {
            Note::Moved => &mut asked.moved,
            Note::Late => &mut asked.late,
        };
        if std::mem::replace(flag, true) {
            return false;
        }
        let hash = self.hasher.hash_one(identity);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let seen = &mut seen[note as usize];
        if seen.len() >= Self::LIMIT && !seen.contains(&hash) {
            seen.clear();
        }
        seen.insert(hash)
    }
}

/// Which notes a chunk already asked [`Noted`] about one customer.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Asked {
    moved: bool,
    late: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_is_noted_once_within_a_chunk_and_across_chunks() {
        let noted = Noted::default();
        let alice = Identity::of_auth_id("acme:alice");
        let mut chunk = Asked::default();
        assert!(noted.first(Note::Moved, &alice, &mut chunk));
        assert!(!noted.first(Note::Moved, &alice, &mut chunk));
        assert!(!noted.first(Note::Moved, &alice, &mut Asked::default()));
    }

    #[test]
    fn moved_and_late_are_noted_apart() {
        let noted = Noted::default();
        let alice = Identity::of_auth_id("acme:alice");
        let mut chunk = Asked::default();
        assert!(noted.first(Note::Moved, &alice, &mut chunk));
        assert!(noted.first(Note::Late, &alice, &mut chunk));
    }
}
