//! One session's chain, kept in constant memory.
//!
//! The calls of a session form a tree: each call points at its parent by
//! `previous_time` and has the parent's number + 1. A client that retries
//! with an old state blob, or calls twice on one blob, makes a branch; a
//! call whose parent never arrived is an orphan: a link is missing before
//! it. The tree is kept as its received *runs*: stretches of calls each the
//! parent of the next. A run knows its first call (number, time, and the
//! time it points back to), its last call and the one before the last
//! exactly; the calls between are known by their number range and time
//! span only. So a session costs one run while it is whole, whatever its
//! length, and a few while events arrive out of order or a branch is fresh.
//!
//! What that costs in precision: a call whose parent is strictly inside a
//! run (by number and time) is taken to hang off that run. A branch from
//! deep inside the history whose first call was lost is therefore not seen
//! as a gap; a branch off the last two calls of a run (what a retry makes)
//! is checked exactly.

use smallvec::SmallVec;

use crate::link::Link;

/// Coarse time for settling, in seconds since the tracker started.
pub(crate) type Tick = u32;

/// One received stretch of calls, each the parent of the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first_seq: u32,
    last_seq: u32,
    /// The first call's `previous_time`: where its parent is.
    first_prev: i64,
    first_cur: i64,
    last_cur: i64,
    /// The call before the last (`last_seq - 1`), when the run has two.
    before_last_cur: i64,
    /// When the run last changed.
    changed: Tick,
    /// Its first call's parent is known (received, or it is a root), or
    /// the gap before it was reported or lies before the history kept.
    rooted: bool,
}

/// A call, as far as the chain is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Call {
    seq: u32,
    cur: i64,
}

impl Run {
    fn of(link: &Link, tick: Tick, rooted: bool) -> Self {
        Self {
            first_seq: link.seq,
            last_seq: link.seq,
            first_prev: link.previous_ns,
            first_cur: link.current_ns,
            last_cur: link.current_ns,
            before_last_cur: i64::MIN,
            changed: tick,
            rooted,
        }
    }

    /// The calls known exactly: first, the one before the last, last.
    fn known(&self) -> impl Iterator<Item = Call> {
        let first = Call {
            seq: self.first_seq,
            cur: self.first_cur,
        };
        let before_last = (self.last_seq > self.first_seq).then(|| Call {
            seq: self.last_seq - 1,
            cur: self.before_last_cur,
        });
        let last = Call {
            seq: self.last_seq,
            cur: self.last_cur,
        };
        [Some(first), before_last, Some(last)].into_iter().flatten()
    }

    /// Whether `seq` is strictly between the calls known exactly.
    fn strictly_inside(&self, seq: u32) -> bool {
        seq > self.first_seq && seq + 1 < self.last_seq
    }

    /// Whether the run holds call `seq` made at `cur`: exactly for the
    /// calls it knows, by number and time span for those between.
    fn holds(&self, seq: u32, cur: i64) -> bool {
        if self.strictly_inside(seq) {
            return self.first_cur < cur && cur < self.last_cur;
        }
        self.known().any(|c| c == Call { seq, cur })
    }

    fn append(&mut self, link: &Link, tick: Tick) {
        self.before_last_cur = self.last_cur;
        self.last_seq = link.seq;
        self.last_cur = link.current_ns;
        self.changed = tick;
    }

    /// `link` becomes the first call, `rooted` saying whether its parent
    /// is known.
    fn prepend(&mut self, link: &Link, tick: Tick, rooted: bool) {
        if self.first_seq == self.last_seq {
            self.before_last_cur = link.current_ns;
        }
        self.first_seq = link.seq;
        self.first_prev = link.previous_ns;
        self.first_cur = link.current_ns;
        self.changed = tick;
        self.rooted = rooted;
    }

    /// `next` continues this run: its first call is the child of our last,
    /// or follows a gap reported between them.
    fn join(&mut self, next: &Run, tick: Tick) {
        self.before_last_cur = if next.first_seq == next.last_seq {
            next.first_prev
        } else {
            next.before_last_cur
        };
        self.last_seq = next.last_seq;
        self.last_cur = next.last_cur;
        self.changed = tick;
    }

    /// Whether this run's first call is the child of `link`.
    fn is_child_of(&self, link: &Link) -> bool {
        self.first_seq == link.seq.wrapping_add(1) && self.first_prev == link.current_ns
    }
}

/// What one gap is: which calls are missing and which time they covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    /// The numbers of the missing calls, `first_missing..=last_missing`.
    pub(crate) first_missing: u32,
    pub(crate) last_missing: u32,
    /// The uncovered time starts at the last call received before the gap;
    /// `None` when no call of the session before the gap was seen.
    pub(crate) after_ns: Option<i64>,
    /// ... and ends at the last missing call's time (the `previous_time`
    /// of the call after the gap).
    pub(crate) until_ns: i64,
    /// The call after the gap, when it was signed.
    pub(crate) next_ns: i64,
    /// What the missing calls would have billed, at the session's rate.
    pub(crate) estimate: Estimate,
}

impl Gap {
    pub(crate) fn missing_calls(&self) -> u32 {
        self.last_missing - self.first_missing + 1
    }
}

/// An estimate of a gap's fee, never an exact figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Estimate {
    pub(crate) fee_wei: u128,
    pub(crate) basis: Basis,
}

/// How an estimate was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Basis {
    /// The session's fee per second over the uncovered time.
    Time,
    /// The session's mean fee per call times the missing calls (the
    /// uncovered time is not known).
    Calls,
}

impl Basis {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Time => "session fee rate × uncovered time",
            Self::Calls => "session mean fee per call × missing calls",
        }
    }
}

/// Whole milliseconds of a span in ns, saturating.
fn millis(ns: i64) -> u32 {
    u32::try_from(ns.unsigned_abs() / 1_000_000).unwrap_or(u32::MAX)
}

/// Whether an orphan's gap may be reported now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Report it.
    Report,
    /// Not yet: its parent may still arrive.
    Wait,
    /// Never: its parent lies where nothing is watched (before the history
    /// kept, after the range audited).
    Unknown,
}

/// One session's chain and its fee rate.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    runs: SmallVec<[Run; 1]>,
    /// Σ fee of the calls that cover time (every call but a root), in two
    /// words so the session stays 8-byte aligned.
    fee_wei: [u64; 2],
    /// Σ (`current_time` − `previous_time`) of those calls, in whole ms
    /// (49 days fit, in 4 bytes).
    covered_ms: u32,
    calls: u32,
    /// Parents older than this were never watched: no gap is reported
    /// before it.
    history_from: i64,
}

impl Session {
    pub(crate) fn new(history_from: i64) -> Self {
        Self {
            runs: SmallVec::new(),
            fee_wei: [0, 0],
            covered_ms: 0,
            calls: 0,
            history_from,
        }
    }

    /// Adds a call; false when it was already known (a redelivery).
    pub(crate) fn observe(&mut self, link: &Link, tick: Tick) -> bool {
        // Nearly every call continues a whole session's one run.
        if let [run] = self.runs.as_mut_slice() {
            if run.last_seq.wrapping_add(1) == link.seq && run.last_cur == link.previous_ns {
                run.append(link, tick);
                self.count(link);
                return true;
            }
        }
        if self.runs.iter().any(|r| r.holds(link.seq, link.current_ns)) {
            return false;
        }
        self.count(link);
        let append = self
            .runs
            .iter()
            .position(|r| r.last_seq.wrapping_add(1) == link.seq && r.last_cur == link.previous_ns);
        let rooted = append.is_some() || self.parent_known(link.seq, link.previous_ns, usize::MAX);
        let mut children = self
            .runs
            .iter()
            .enumerate()
            .filter(|(i, r)| Some(*i) != append && r.is_child_of(link))
            .map(|(i, _)| i);
        let child = children.next();
        let more: SmallVec<[usize; 2]> = children.collect();
        for i in more {
            self.runs[i].rooted = true;
        }
        match (append, child) {
            (Some(a), Some(c)) => {
                let next = self.runs[c];
                self.runs[a].append(link, tick);
                self.runs[a].join(&next, tick);
                self.runs.remove(c);
            }
            (Some(a), None) => self.runs[a].append(link, tick),
            (None, Some(c)) => self.runs[c].prepend(link, tick, rooted),
            (None, None) => self.runs.push(Run::of(link, tick, rooted)),
        }
        true
    }

    /// The session's rate counts the calls that cover time and whose fee
    /// reads (not a root, not a dead letter's unreadable fee).
    fn count(&mut self, link: &Link) {
        let Some(fee_wei) = link.fee_wei.filter(|_| !link.is_root()) else {
            return;
        };
        let fee = self.fee().saturating_add(fee_wei);
        self.fee_wei = [(fee >> 64) as u64, fee as u64];
        let covered = millis(link.current_ns - link.previous_ns);
        self.covered_ms = self.covered_ms.saturating_add(covered);
        self.calls = self.calls.saturating_add(1);
    }

    fn fee(&self) -> u128 {
        (u128::from(self.fee_wei[0]) << 64) | u128::from(self.fee_wei[1])
    }

    /// Whether call `seq`'s parent, made at `previous`, is held by a run
    /// other than `except`; a root has no parent to miss.
    fn parent_known(&self, seq: u32, previous: i64, except: usize) -> bool {
        let Some(parent) = seq.checked_sub(1) else {
            return true;
        };
        self.runs
            .iter()
            .enumerate()
            .any(|(i, r)| i != except && r.holds(parent, previous))
    }

    /// The time of the newest call received.
    pub(crate) fn newest_ns(&self) -> i64 {
        self.runs
            .iter()
            .map(|r| r.last_cur)
            .max()
            .unwrap_or(i64::MIN)
    }

    /// Whether an orphan waits for its parent.
    pub(crate) fn has_orphans(&self) -> bool {
        self.runs.iter().any(|r| !r.rooted)
    }

    /// The gaps of orphans unchanged since `settled_at` or earlier whose
    /// parent is still missing and `judge` says may be reported, oldest
    /// first. Each gap reported is closed (its orphan joined to the call
    /// before the gap), so it is reported once.
    pub(crate) fn gaps(
        &mut self,
        settled_at: Tick,
        mut judge: impl FnMut(&Gap) -> Verdict,
    ) -> Vec<Gap> {
        let mut found = Vec::new();
        while let Some(i) = self.next_orphan(settled_at) {
            let Run {
                first_seq,
                first_prev,
                ..
            } = self.runs[i];
            if self.parent_known(first_seq, first_prev, i) || first_prev < self.history_from {
                self.runs[i].rooted = true;
                continue;
            }
            let (gap, anchor) = self.gap(i);
            match judge(&gap) {
                Verdict::Report => {
                    found.push(gap);
                    self.close(i, anchor);
                }
                Verdict::Unknown => self.runs[i].rooted = true,
                Verdict::Wait => break,
            }
        }
        found
    }

    /// The oldest orphan settled by `settled_at`.
    fn next_orphan(&self, settled_at: Tick) -> Option<usize> {
        self.runs
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.rooted && r.changed <= settled_at)
            .min_by_key(|(_, r)| r.first_cur)
            .map(|(i, _)| i)
    }

    /// The gap before run `i`'s first call, and where the last call
    /// received before it is (run index, and whether it is that run's last
    /// call). The missing calls run from after the newest call known
    /// exactly that could precede the gap (two numbers below the orphan,
    /// signed before its parent) up to the orphan's parent.
    fn gap(&self, i: usize) -> (Gap, Option<(usize, bool)>) {
        let orphan = self.runs[i];
        let parent = orphan.first_seq - 1;
        let anchor = self
            .runs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(j, r)| r.known().map(move |c| (j, c, c.seq == r.last_seq)))
            .filter(|(_, c, _)| c.seq < parent && c.cur < orphan.first_prev)
            .max_by_key(|(_, c, _)| (c.seq, c.cur));
        let first_missing = anchor.map_or(parent, |(_, c, _)| c.seq + 1);
        let after_ns = anchor.map(|(_, c, _)| c.cur);
        let missing = parent - first_missing + 1;
        let uncovered = after_ns.map(|after| (orphan.first_prev - after).unsigned_abs());
        let gap = Gap {
            first_missing,
            last_missing: parent,
            after_ns,
            until_ns: orphan.first_prev,
            next_ns: orphan.first_cur,
            estimate: self.estimate(missing, uncovered),
        };
        (gap, anchor.map(|(j, _, last)| (j, last)))
    }

    /// The session's rate over the uncovered time; per call when that time
    /// is not known (or no call covered any).
    fn estimate(&self, missing_calls: u32, uncovered_ns: Option<u64>) -> Estimate {
        let fee = self.fee();
        match uncovered_ns {
            Some(ns) if self.covered_ms > 0 => Estimate {
                fee_wei: fee.saturating_mul(u128::from(ns))
                    / (u128::from(self.covered_ms) * 1_000_000),
                basis: Basis::Time,
            },
            _ => Estimate {
                fee_wei: fee.saturating_mul(u128::from(missing_calls))
                    / u128::from(self.calls.max(1)),
                basis: Basis::Calls,
            },
        }
    }

    /// Closes a reported gap: the orphan run is joined to the run whose
    /// last call precedes the gap, so the calls in between count as seen;
    /// otherwise it is only marked rooted.
    fn close(&mut self, i: usize, anchor: Option<(usize, bool)>) {
        match anchor {
            Some((j, true)) => {
                let orphan = self.runs[i];
                self.runs[j].join(&orphan, orphan.changed);
                self.runs.remove(i);
            }
            _ => self.runs[i].rooted = true,
        }
    }

    /// Folds every run into the newest once nothing waits: a finished
    /// branch's calls then count as the newest run's history (by number
    /// and time span), so memory stays one run per session.
    pub(crate) fn fold(&mut self) {
        if self.runs.len() < 2 || self.has_orphans() {
            return;
        }
        let newest = self
            .runs
            .iter()
            .enumerate()
            .max_by_key(|(_, r)| r.last_cur)
            .map_or(0, |(i, _)| i);
        let mut kept = self.runs[newest];
        for r in &self.runs {
            if r.first_seq < kept.first_seq
                || (r.first_seq == kept.first_seq && r.first_cur < kept.first_cur)
            {
                kept.first_seq = r.first_seq;
                kept.first_prev = r.first_prev;
                kept.first_cur = r.first_cur;
            }
        }
        self.runs = SmallVec::from_buf([kept]);
    }

    /// Gives back a spilled run list once one run is left.
    pub(crate) fn shrink(&mut self) {
        if self.runs.spilled() && self.runs.len() <= 1 {
            self.runs.shrink_to_fit();
        }
    }

    #[cfg(test)]
    fn runs(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::SessionKey;

    const S: i64 = 1_000_000_000;

    /// Call `seq` at second `at`, its parent at second `prev`.
    fn call(seq: u32, at: i64, prev: i64) -> Link {
        Link {
            session: SessionKey(1),
            seq,
            previous_ns: prev * S,
            current_ns: at * S,
            fee_wei: Some(10 * (at - prev) as u128),
        }
    }

    /// A linear session: call n at second 10 n.
    fn linear(n: u32) -> Vec<Link> {
        (0..n)
            .map(|seq| {
                let at = 10 * i64::from(seq);
                call(seq, at, if seq == 0 { at } else { at - 10 })
            })
            .collect()
    }

    fn session(calls: &[Link]) -> Session {
        let mut s = Session::new(i64::MIN);
        for c in calls {
            s.observe(c, 0);
        }
        s
    }

    fn report(s: &mut Session) -> Vec<Gap> {
        s.gaps(Tick::MAX, |_| Verdict::Report)
    }

    fn missing(gaps: &[Gap]) -> Vec<(u32, u32)> {
        gaps.iter()
            .map(|g| (g.first_missing, g.last_missing))
            .collect()
    }

    /// BENCHMARKS.md's memory per session rests on it.
    #[test]
    fn a_session_is_96_bytes_without_an_allocation_of_its_own() {
        assert_eq!(std::mem::size_of::<Session>(), 96);
        assert!(!session(&linear(50)).runs.spilled());
    }

    #[test]
    fn a_whole_chain_is_one_run_in_any_order() {
        let mut calls = linear(20);
        assert_eq!(session(&calls).runs(), 1);
        calls.reverse();
        let mut s = session(&calls);
        assert_eq!(s.runs(), 1);
        assert!(report(&mut s).is_empty());
        calls.sort_by_key(|c| (c.seq % 3, c.seq));
        let mut s = session(&calls);
        assert_eq!(s.runs(), 1);
        assert!(report(&mut s).is_empty());
    }

    #[test]
    fn a_call_missing_from_the_middle_is_named_with_its_time() {
        let calls: Vec<Link> = linear(10).into_iter().filter(|c| c.seq != 4).collect();
        let mut s = session(&calls);
        let gaps = report(&mut s);
        assert_eq!(missing(&gaps), [(4, 4)]);
        assert_eq!(gaps[0].after_ns, Some(30 * S));
        assert_eq!(gaps[0].until_ns, 40 * S);
        assert_eq!(
            gaps[0].estimate,
            Estimate {
                fee_wei: 100,
                basis: Basis::Time
            }
        );
        assert_eq!(s.runs(), 1, "the gap is closed");
        assert!(report(&mut s).is_empty(), "and reported once");
    }

    #[test]
    fn consecutive_missing_calls_are_one_gap() {
        let calls: Vec<Link> = linear(10)
            .into_iter()
            .filter(|c| !(5..=7).contains(&c.seq))
            .rev()
            .collect();
        let gaps = report(&mut session(&calls));
        assert_eq!(missing(&gaps), [(5, 7)]);
        assert_eq!(gaps[0].estimate.fee_wei, 300);
    }

    #[test]
    fn a_retry_that_repeats_a_number_is_no_gap() {
        // 0..3, then 4a and its retry 4b (both children of 3); 5.. follow 4b.
        let mut calls = linear(4);
        calls.push(call(4, 40, 30));
        calls.push(call(4, 42, 30));
        calls.extend((5..8).map(|seq| {
            let at = 42 + 10 * i64::from(seq - 4);
            call(seq, at, at - 10)
        }));
        for order in [calls.clone(), calls.iter().rev().copied().collect()] {
            let mut s = session(&order);
            assert!(report(&mut s).is_empty(), "{order:?}");
            s.fold();
            assert_eq!(s.runs(), 1);
        }
    }

    #[test]
    fn the_lost_branch_a_retry_continued_from_is_a_gap() {
        // 4a received, its retry 4b lost, 5 follows 4b.
        let mut calls = linear(4);
        calls.push(call(4, 40, 30));
        calls.push(call(5, 52, 42));
        let gaps = report(&mut session(&calls));
        assert_eq!(missing(&gaps), [(4, 4)]);
        assert_eq!(gaps[0].after_ns, Some(30 * S), "after 3, the parent of 4b");
        assert_eq!(gaps[0].until_ns, 42 * S);
    }

    #[test]
    fn concurrent_calls_on_one_blob_are_no_gap() {
        let mut calls = linear(3);
        calls.push(call(3, 30, 20));
        calls.push(call(3, 31, 20));
        calls.push(call(4, 41, 31));
        calls.push(call(4, 40, 30));
        for order in [calls.clone(), calls.iter().rev().copied().collect()] {
            assert!(report(&mut session(&order)).is_empty());
        }
    }

    #[test]
    fn a_redelivered_call_counts_once() {
        let mut calls = linear(5);
        calls.extend(linear(5));
        let s = session(&calls);
        assert_eq!((s.calls, s.fee(), s.covered_ms), (4, 400, 40_000));
    }

    #[test]
    fn a_session_that_ends_has_no_gap() {
        let mut s = session(&linear(3));
        assert!(report(&mut s).is_empty());
    }

    #[test]
    fn a_lost_parent_without_earlier_calls_names_only_the_parent() {
        let calls: Vec<Link> = linear(6).into_iter().skip(3).collect();
        let gaps = report(&mut session(&calls));
        assert_eq!(missing(&gaps), [(2, 2)]);
        assert_eq!(gaps[0].after_ns, None);
        assert_eq!(gaps[0].estimate.basis, Basis::Calls);
        assert_eq!(gaps[0].estimate.fee_wei, 100);
    }

    #[test]
    fn parents_before_the_history_kept_are_not_gaps() {
        let calls: Vec<Link> = linear(6).into_iter().skip(3).collect();
        let mut s = Session::new(25 * S);
        for c in &calls {
            s.observe(c, 0);
        }
        assert!(report(&mut s).is_empty(), "2's time, 20 s, is before 25 s");
    }

    #[test]
    fn an_orphan_waits_until_it_settled_and_is_judged() {
        let calls: Vec<Link> = linear(6).into_iter().filter(|c| c.seq != 2).collect();
        let mut s = Session::new(i64::MIN);
        for c in &calls {
            s.observe(c, 5);
        }
        assert!(s.gaps(4, |_| Verdict::Report).is_empty(), "changed at 5");
        assert!(s.gaps(5, |_| Verdict::Wait).is_empty());
        assert!(s.has_orphans());
        s.observe(&call(2, 20, 10), 6);
        assert!(!s.has_orphans(), "its parent arrived late");
        assert!(s.gaps(6, |_| Verdict::Report).is_empty());
    }

    #[test]
    fn an_unknown_gap_is_dropped_unreported() {
        let calls: Vec<Link> = linear(6).into_iter().filter(|c| c.seq != 2).collect();
        let mut s = session(&calls);
        assert!(s.gaps(Tick::MAX, |_| Verdict::Unknown).is_empty());
        assert!(!s.has_orphans());
    }

    #[test]
    fn two_gaps_in_one_session_are_each_named() {
        let calls: Vec<Link> = linear(12)
            .into_iter()
            .filter(|c| ![3, 7, 8].contains(&c.seq))
            .collect();
        for order in [calls.clone(), calls.iter().rev().copied().collect()] {
            let mut s = session(&order);
            assert_eq!(missing(&report(&mut s)), [(3, 3), (7, 8)]);
            assert_eq!(s.runs(), 1);
        }
    }
}
