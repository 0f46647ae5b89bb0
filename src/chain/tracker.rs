//! Gaps while running: the collector's chain tracking.
//!
//! Every billable record a batch judges (delivered or dead-lettered: both
//! reached Kafka) is one call of its session's chain. Memory is one
//! [`Session`](super::Session) per session active within `CHAIN_IDLE`,
//! never one entry per event. A session's events are spread over every
//! partition (the key is a random envelope id), so a call can arrive before
//! the call it follows; an orphan's gap is reported only once
//!
//! - it has not changed for `CHAIN_SETTLE`, and
//! - every partition has been read past its missing call's time plus
//!   `CHAIN_SETTLE`, or was caught up (no record beyond our position) when
//!   librdkafka's statistics last said, and
//! - nothing holds the pipeline and no partition is stalled.
//!
//! Only a member that owns every partition of the topic sees whole
//! chains: while this member owns fewer (a consumer group of several), the
//! tracking is off (`ticketmeter_chain_watching` 0) and the audit is what
//! finds gaps. Watching starts when it owns them all, and starts afresh
//! after every rebalance that revokes a partition; a call whose missing
//! predecessor was signed before then plus `CHAIN_SETTLE` may have been
//! read by the previous owner (a restart, a rebalance) and is never
//! reported, so a restart reports no false gap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use smallvec::SmallVec;
use tokio_util::sync::CancellationToken;

use super::{Chains, Found, Link, Names, Tick, Verdict};
use crate::contract::Contract;
use crate::domain::FeeWei;
use crate::health::Health;
use crate::metrics::metrics;
use crate::price::PriceFeed;

/// `CHAIN_SETTLE` and `CHAIN_IDLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainSettings {
    /// How long an orphan waits for the call it follows.
    pub settle: Duration,
    /// A session with no call for this long (in signed time, behind the
    /// newest call seen) is forgotten.
    pub idle: Duration,
}

impl Default for ChainSettings {
    fn default() -> Self {
        Self {
            settle: Duration::from_secs(120),
            idle: Duration::from_secs(3600),
        }
    }
}

/// A billable record a batch judged, as the tracker needs it.
#[derive(Debug)]
pub struct Seen {
    pub partition: i32,
    /// `None`: the event carries no chain.
    pub link: Option<Link>,
    /// Read again only when its session is new, for its names.
    pub payload: Bytes,
}

/// The collector's chain tracking; clones share one state.
#[derive(Clone)]
pub struct Tracker {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ChainSettings,
    /// Names are read under the collector's contract.
    contract: Contract,
    max_event_bytes: usize,
    price: PriceFeed,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// `None` while this member does not own every partition.
    chains: Option<Chains>,
    /// The topic's partitions (every one ours while `chains` is kept).
    total: usize,
    partitions: HashMap<i32, Progress>,
}

/// How far a partition has been read, in signed time.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    newest_ns: i64,
    /// When statistics last said nothing was beyond our position.
    caught_up_at: Option<Instant>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Tracker {
    pub fn new(
        settings: ChainSettings,
        contract: Contract,
        max_event_bytes: usize,
        price: PriceFeed,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                contract,
                max_event_bytes,
                price,
                started: Instant::now(),
                state: Mutex::default(),
            }),
        }
    }

    fn state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut guard = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    fn tick(&self) -> Tick {
        Tick::try_from(self.inner.started.elapsed().as_secs()).unwrap_or(Tick::MAX)
    }

    /// Adds one batch's billable records, under one lock. `customer` names
    /// the billing subject of `seen[i]` when the batch knows it (asked only
    /// when a call leaves its session with an orphan and no names yet; else
    /// its record is decoded again).
    pub fn observe<'a>(&self, seen: &[Seen], customer: impl Fn(usize) -> Option<&'a str>) {
        if seen.is_empty() {
            return;
        }
        let tick = self.tick();
        let (contract, max_bytes) = (self.inner.contract, self.inner.max_event_bytes);
        // How far each partition was read in this batch, applied once.
        let mut read: SmallVec<[(i32, i64); 8]> = SmallVec::new();
        let mut unchained = 0;
        self.state(|state| {
            let Some(chains) = state.chains.as_mut() else {
                return;
            };
            for (i, s) in seen.iter().enumerate() {
                let Some(link) = &s.link else {
                    chains.unchained();
                    unchained += 1;
                    continue;
                };
                match read.iter_mut().find(|(p, _)| *p == s.partition) {
                    Some((_, newest)) => *newest = (*newest).max(link.current_ns),
                    None => read.push((s.partition, link.current_ns)),
                }
                chains.observe(link, tick, || match customer(i) {
                    Some(c) => Names::read(&s.payload, Some(c)),
                    None => Names::of(&s.payload, max_bytes, &contract),
                });
            }
            for (partition, newest) in read {
                let progress = state.partitions.entry(partition).or_default();
                progress.newest_ns = progress.newest_ns.max(newest);
            }
        });
        if unchained > 0 {
            metrics().chain.unchained_events.inc_by(unchained);
        }
    }

    /// Librdkafka's statistics: whether this member owns all `total`
    /// partitions of the topic (`owned` of them). Watching starts when it
    /// does, and stops (forgetting every chain) when it no longer does.
    pub fn ownership(&self, owned: usize, total: usize) {
        let complete = total > 0 && owned >= total;
        self.state(|state| {
            state.total = total;
            self.watch(state, complete, owned, total);
        });
    }

    fn watch(&self, state: &mut State, complete: bool, owned: usize, total: usize) {
        match (&state.chains, complete) {
            (None, true) => {
                let settle = chrono::TimeDelta::from_std(self.inner.settings.settle)
                    .unwrap_or(chrono::TimeDelta::MAX);
                let horizon = (Utc::now() + settle)
                    .timestamp_nanos_opt()
                    .unwrap_or(i64::MAX);
                let idle = i64::try_from(self.inner.settings.idle.as_nanos()).unwrap_or(i64::MAX);
                state.chains = Some(Chains::new(horizon, Some(idle)));
                state.partitions.clear();
                metrics().chain.watching.set(1);
                tracing::info!(
                    partitions = total,
                    "chain tracking on: this member owns every partition"
                );
            }
            (Some(_), false) => {
                state.chains = None;
                state.partitions.clear();
                metrics().chain.watching.set(0);
                metrics().chain.sessions.set(0);
                tracing::info!(owned, partitions = total, "chain tracking off: this member owns only some partitions; the audit still finds gaps");
            }
            _ => {}
        }
    }

    /// A rebalance took partitions away: watching stops (forgetting every
    /// chain) until the statistics say every partition is ours again, and
    /// starts afresh then.
    pub(crate) fn revoked(&self) {
        self.state(|state| {
            let total = state.total;
            self.watch(state, false, 0, total);
        });
    }

    /// Librdkafka's statistics: `partition` had nothing beyond our position.
    pub(crate) fn caught_up(&self, partition: i32) {
        self.state(|state| {
            state.partitions.entry(partition).or_default().caught_up_at = Some(Instant::now());
        });
    }

    /// Reports the gaps that settled, forgets idle sessions; every
    /// `CHAIN_SETTLE`/4 (1 s to 30 s) until `cancel` fires.
    pub(crate) async fn run(self, health: Health, cancel: CancellationToken) {
        let every =
            (self.inner.settings.settle / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let mut ticker = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            self.sweep(health.flowing());
        }
    }

    /// One sweep; `flowing`: nothing holds the pipeline and no partition
    /// is stalled (else no gap is confirmed now).
    pub fn sweep(&self, flowing: bool) {
        let settle = self.inner.settings.settle;
        let settled_at = self
            .tick()
            .saturating_sub(Tick::try_from(settle.as_secs()).unwrap_or(Tick::MAX));
        let settle_ns = i64::try_from(settle.as_nanos()).unwrap_or(i64::MAX);
        let found = self.state(|state| {
            let State {
                chains,
                total,
                partitions,
            } = state;
            let chains = chains.as_mut()?;
            let now = Instant::now();
            let read_past = |until_ns: i64| {
                partitions.len() >= *total
                    && partitions.values().all(|p| {
                        p.newest_ns >= until_ns.saturating_add(settle_ns)
                            || p.caught_up_at
                                .is_some_and(|at| now.duration_since(at) < settle)
                    })
            };
            let found = chains.gaps(settled_at, |gap| {
                if flowing && read_past(gap.until_ns) {
                    Verdict::Report
                } else {
                    Verdict::Wait
                }
            });
            chains.forget_idle();
            metrics()
                .chain
                .sessions
                .set(i64::try_from(chains.sessions()).unwrap_or(i64::MAX));
            Some(found)
        });
        for f in found.unwrap_or_default() {
            self.report(&f);
        }
    }

    fn report(&self, found: &Found) {
        let gap = &found.gap;
        let price = self.inner.price.current().price;
        let micros = FeeWei::new(gap.estimate.fee_wei)
            .to_usd_micros(&price)
            .whole_u64();
        let m = &metrics().chain;
        m.gaps.inc();
        m.missing_calls.inc_by(u64::from(gap.missing_calls()));
        m.estimated_unbilled_usd_micros.inc_by(micros);
        tracing::warn!(
            session = %found.names.session_id,
            customer = found.names.customer.as_deref().unwrap_or(""),
            missing = %super::missing_text(gap.first_missing, gap.last_missing),
            uncovered_from = %super::time_text(gap.after_ns),
            uncovered_to = %super::time_text(Some(gap.until_ns)),
            estimated_usd_micros = micros,
            estimate = gap.estimate.basis.as_str(),
            "chain gap: signed calls never reached Kafka (dropped by the signer before publishing); nothing is billed for them"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::SessionKey;

    const S: i64 = 1_000_000_000;

    fn tracker(settle: Duration) -> Tracker {
        Tracker::new(
            ChainSettings {
                settle,
                idle: Duration::from_secs(3600),
            },
            Contract::default(),
            1 << 20,
            PriceFeed::fixed("3500".parse().unwrap()),
        )
    }

    fn seen(session: u64, partition: i32, seq: u32, at: i64) -> Seen {
        Seen {
            partition,
            link: Some(Link {
                session: SessionKey(session),
                seq,
                previous_ns: if seq == 0 { at } else { at - 10 * S },
                current_ns: at,
                fee_wei: Some(1_000_000_000_000),
            }),
            payload: Bytes::from_static(br#"{"data":{"session_id":"s9"}}"#),
        }
    }

    fn now_ns() -> i64 {
        Utc::now().timestamp_nanos_opt().unwrap()
    }

    fn sessions(t: &Tracker) -> Option<usize> {
        t.state(|s| s.chains.as_ref().map(Chains::sessions))
    }

    #[test]
    fn nothing_is_watched_until_this_member_owns_every_partition() {
        let t = tracker(Duration::ZERO);
        t.observe(&[seen(1, 0, 0, now_ns())], |_| None);
        t.ownership(1, 2);
        t.observe(&[seen(1, 0, 0, now_ns())], |_| None);
        assert_eq!(sessions(&t), None);
        t.ownership(2, 2);
        t.observe(&[seen(1, 0, 0, now_ns())], |_| None);
        assert_eq!(sessions(&t), Some(1));
        t.ownership(1, 2);
        assert_eq!(sessions(&t), None, "forgotten when a partition goes");
        t.ownership(2, 2);
        t.observe(&[seen(1, 0, 0, now_ns())], |_| None);
        t.revoked();
        assert_eq!(sessions(&t), None, "and on every rebalance that revokes");
    }

    /// The only test that reports a gap to the process-wide counters.
    #[test]
    fn a_gap_is_reported_once_every_partition_was_read_past_it_and_nothing_is_held() {
        let t = tracker(Duration::from_secs(1));
        t.ownership(2, 2);
        let start = now_ns() + 5 * S;
        t.observe(
            &[seen(1, 0, 0, start), seen(1, 0, 2, start + 20 * S)],
            |_| None,
        );
        t.observe(&[seen(2, 1, 0, start - 100 * S)], |_| None);
        let gaps = || metrics().chain.gaps.get();
        let before = gaps();
        t.sweep(true);
        assert_eq!(
            gaps(),
            before,
            "partition 1 was not read past the missing call"
        );
        t.caught_up(1);
        t.sweep(false);
        assert_eq!(gaps(), before, "not while the pipeline is held");
        t.sweep(true);
        assert_eq!(gaps(), before + 1);
        t.sweep(true);
        assert_eq!(gaps(), before + 1, "reported once");
    }
}
