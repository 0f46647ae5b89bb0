//! Call counters and per-route fault injection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::route::Route;

const N: usize = Route::ALL.len();

/// Lock-free counters, so counting never contends with the state lock.
#[derive(Default)]
pub(crate) struct Counters {
    per_route: [AtomicU64; N],
    total: AtomicU64,
    writes: AtomicU64,
}

impl Counters {
    pub(crate) fn record(&self, route: Option<Route>, is_write: bool) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = route {
            self.per_route[r.index()].fetch_add(1, Ordering::Relaxed);
        }
        if is_write && route != Some(Route::IngestEvents) {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn route(&self, r: Route) -> u64 {
        self.per_route[r.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub(crate) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    pub(crate) fn reset(&self) {
        for c in &self.per_route {
            c.store(0, Ordering::Relaxed);
        }
        self.total.store(0, Ordering::Relaxed);
        self.writes.store(0, Ordering::Relaxed);
    }
}

/// What to do to one request before it reaches its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Pass,
    /// Answer with a problem of this status, optionally with `Retry-After`.
    Fail {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Close the connection without a response.
    Drop,
}

#[derive(Debug, Default, Clone)]
struct RouteFaults {
    fail_remaining: u32,
    fail_status: u16,
    retry_after: Option<u64>,
    drop_remaining: u32,
    latency: Duration,
}

#[derive(Default)]
pub(crate) struct Faults {
    routes: Mutex<[RouteFaults; N]>,
    /// Ingest requests left that claim their ids, then fail (issue #5118).
    swallow_remaining: Mutex<u32>,
}

impl Faults {
    fn with<T>(&self, r: Route, f: impl FnOnce(&mut RouteFaults) -> T) -> T {
        let mut guard = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard[r.index()])
    }

    pub(crate) fn fail_next(&self, r: Route, n: u32, status: u16, retry_after: Option<u64>) {
        self.with(r, |f| {
            f.fail_remaining = n;
            f.fail_status = status;
            f.retry_after = retry_after;
        });
    }

    pub(crate) fn drop_next(&self, r: Route, n: u32) {
        self.with(r, |f| f.drop_remaining = n);
    }

    pub(crate) fn set_latency(&self, r: Route, latency: Duration) {
        self.with(r, |f| f.latency = latency);
    }

    pub(crate) fn clear(&self) {
        let mut guard = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        for f in guard.iter_mut() {
            *f = RouteFaults::default();
        }
        *self.swallow_lock() = 0;
    }

    /// Make the next `n` ingest requests claim their ids and fail.
    pub(crate) fn swallow_next(&self, n: u32) {
        *self.swallow_lock() = n;
    }

    fn swallow_lock(&self) -> std::sync::MutexGuard<'_, u32> {
        self.swallow_remaining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this ingest request is one that claims its ids and fails.
    pub(crate) fn take_swallow(&self) -> bool {
        let mut remaining = self.swallow_lock();
        let hit = *remaining > 0;
        *remaining = remaining.saturating_sub(1);
        hit
    }

    /// Consume one pending fault (drops before failures) and report latency.
    pub(crate) fn take(&self, r: Route) -> (Action, Duration) {
        self.with(r, |f| {
            let action = if f.drop_remaining > 0 {
                f.drop_remaining -= 1;
                Action::Drop
            } else if f.fail_remaining > 0 {
                f.fail_remaining -= 1;
                Action::Fail {
                    status: f.fail_status,
                    retry_after: f.retry_after,
                }
            } else {
                Action::Pass
            };
            (action, f.latency)
        })
    }
}
