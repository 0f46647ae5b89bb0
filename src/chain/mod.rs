//! Chains: the tickets the signer signed but never published, found session
//! by session.
//!
//! go-livepeer's remote signer publishes at most once: its events go
//! through one in-memory channel of 100 shared by every event type; a full
//! channel drops the event (a warning and `kafka_event_send_errors`), a
//! batch that fails its 3 tries is dropped with a log line ("the gateway
//! logs are lost"), and nothing is flushed at shutdown (`monitor/kafka.go`).
//! Each such event is a ticket the client paid for that nobody bills. The
//! calls of one session form a chain ([`link`]): every call but the first
//! names its previous call's time and has its number + 1, so a call whose
//! previous call never arrived shows a loss before it ([`session`]).
//!
//! What cannot be seen: the lost tail of a session (nothing comes after it
//! to point back), a session lost whole, a lost call on a branch no later
//! call continues (a retried call's abandoned twin), and events of a signer
//! whose monitoring is off or older than the chain fields.
//!
//! [`Chains`] keeps every session seen, in constant memory each; the audit
//! (`audit::gaps`) and the running collector ([`tracker`]) both read gaps
//! from it.

pub(crate) mod record;
pub(crate) mod session;
pub(crate) mod tracker;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

pub(crate) use record::Names;
pub(crate) use session::{Gap, Session, Tick, Verdict};

use crate::link::{Link, SessionKey};

/// Every session seen, and where watching began.
#[derive(Debug)]
pub(crate) struct Chains {
    sessions: HashMap<SessionKey, Session, BuildHasherDefault<KeyHasher>>,
    /// The names of the sessions with an orphan (only a gap is ever named,
    /// and a gap is an orphan's): `session_id`, then the customer after a
    /// unit separator. A whole session costs no names.
    labels: HashMap<SessionKey, Box<str>, BuildHasherDefault<KeyHasher>>,
    /// No gap is reported whose missing call is older than this (ns): the
    /// audited range's start, or when the collector began to see every
    /// partition.
    horizon_ns: i64,
    /// Sessions whose newest call is this much older than the newest call
    /// seen are forgotten (the collector); the audit keeps every session.
    idle_ns: Option<i64>,
    newest_ns: i64,
    /// Billable events that carry no chain.
    unchained: u64,
}

const SEPARATOR: char = '\u{1f}';

/// A gap found, with the session it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) names: Names,
    pub(crate) gap: Gap,
}

impl Chains {
    pub(crate) fn new(horizon_ns: i64, idle_ns: Option<i64>) -> Self {
        Self {
            sessions: HashMap::default(),
            labels: HashMap::default(),
            horizon_ns,
            idle_ns,
            newest_ns: i64::MIN,
            unchained: 0,
        }
    }

    /// Adds a call at `tick`; `names` is asked for only when its session
    /// gets an orphan and has no names yet. False when the call was already
    /// known.
    pub(crate) fn observe(
        &mut self,
        link: &Link,
        tick: Tick,
        names: impl FnOnce() -> Names,
    ) -> bool {
        self.newest_ns = self.newest_ns.max(link.current_ns);
        let history_from = self.history_from();
        let session = self
            .sessions
            .entry(link.session)
            .or_insert_with(|| Session::new(history_from));
        let new = session.observe(link, tick);
        if session.has_orphans() {
            self.labels.entry(link.session).or_insert_with(|| {
                let names = names();
                let customer = names.customer.unwrap_or_default();
                format!("{}{SEPARATOR}{customer}", names.session_id).into()
            });
        }
        new
    }

    /// Counts a billable event without a chain.
    pub(crate) fn unchained(&mut self) {
        self.unchained += 1;
    }

    pub(crate) fn unchained_events(&self) -> u64 {
        self.unchained
    }

    pub(crate) fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Where a session first seen now starts watching: at the horizon, or
    /// (the collector) at the oldest call a forgotten session could have
    /// had, so a session that resumes after being forgotten is not taken
    /// for one whose calls went missing.
    fn history_from(&self) -> i64 {
        let forgotten = self
            .idle_ns
            .map_or(i64::MIN, |idle| self.newest_ns.saturating_sub(idle));
        self.horizon_ns.max(forgotten)
    }

    /// The gaps of orphans settled by `settled_at` that `judge` lets be
    /// reported, by session (in no particular order), each once; then
    /// every session with nothing waiting is folded to one run.
    pub(crate) fn gaps(
        &mut self,
        settled_at: Tick,
        mut judge: impl FnMut(&Gap) -> Verdict,
    ) -> Vec<Found> {
        let mut found = Vec::new();
        for (key, session) in &mut self.sessions {
            if session.has_orphans() {
                for gap in session.gaps(settled_at, &mut judge) {
                    found.push(Found {
                        names: names(self.labels.get(key).map(|l| &**l)),
                        gap,
                    });
                }
            }
            session.fold();
            session.shrink();
        }
        let sessions = &self.sessions;
        self.labels
            .retain(|key, _| sessions.get(key).is_some_and(Session::has_orphans));
        found
    }

    /// The gaps as they stand, leaving every session as it is (the audit
    /// builds its report more than once); `judge` as for [`Self::gaps`].
    pub(crate) fn gaps_now(&self, mut judge: impl FnMut(&Gap) -> Verdict) -> Vec<Found> {
        let mut found = Vec::new();
        for (key, session) in &self.sessions {
            if session.has_orphans() {
                for gap in session.clone().gaps(Tick::MAX, &mut judge) {
                    found.push(Found {
                        names: names(self.labels.get(key).map(|l| &**l)),
                        gap,
                    });
                }
            }
        }
        found
    }

    /// Forgets sessions idle for longer than `idle_ns` behind the newest
    /// call seen; returns how many.
    pub(crate) fn forget_idle(&mut self) -> usize {
        let Some(idle) = self.idle_ns else {
            return 0;
        };
        let before = self.sessions.len();
        let cutoff = self.newest_ns.saturating_sub(idle);
        self.sessions.retain(|_, s| s.newest_ns() >= cutoff);
        let sessions = &self.sessions;
        self.labels.retain(|key, _| sessions.contains_key(key));
        before - self.sessions.len()
    }
}

/// A session's names from its label.
fn names(label: Option<&str>) -> Names {
    let label = label.unwrap_or_default();
    let (session_id, customer) = label.split_once(SEPARATOR).unwrap_or((label, ""));
    Names {
        session_id: session_id.to_owned(),
        customer: Some(customer.to_owned()).filter(|c| !c.is_empty()),
    }
}

/// The missing calls' numbers: `5`, or `5..7`.
pub(crate) fn missing_text(first: u32, last: u32) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}..{last}")
    }
}

/// A chain time as RFC 3339 to the nanosecond; `unknown` for none.
pub(crate) fn time_text(ns: Option<i64>) -> String {
    ns.map(|ns| {
        chrono::DateTime::from_timestamp_nanos(ns)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    })
    .unwrap_or_else(|| "unknown".to_owned())
}

/// Session keys are hashes already: the map uses them as they are.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn call(session: u64, seq: u32, at: i64) -> Link {
        Link {
            session: SessionKey(session),
            seq,
            previous_ns: if seq == 0 { at * S } else { (at - 10) * S },
            current_ns: at * S,
            fee_wei: Some(1),
        }
    }

    fn names(id: &str) -> impl FnOnce() -> Names + '_ {
        move || Names {
            session_id: id.to_owned(),
            customer: Some("acme:alice".to_owned()),
        }
    }

    #[test]
    fn a_gap_is_named_by_its_session_and_customer() {
        let mut chains = Chains::new(i64::MIN, None);
        for (seq, at) in [(0, 0), (1, 10), (3, 30)] {
            chains.observe(&call(7, seq, at), 0, names("a1b2c3d4"));
        }
        let found = chains.gaps(0, |_| Verdict::Report);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].names.session_id, "a1b2c3d4");
        assert_eq!(found[0].names.customer.as_deref(), Some("acme:alice"));
        assert_eq!(found[0].gap.first_missing, 2);
    }

    #[test]
    fn a_session_forgotten_while_idle_resumes_without_a_false_gap() {
        let mut chains = Chains::new(i64::MIN, Some(100 * S));
        chains.observe(&call(1, 0, 0), 0, names("old"));
        chains.observe(&call(1, 1, 10), 0, names("old"));
        chains.observe(&call(2, 0, 200), 0, names("busy"));
        assert_eq!(chains.forget_idle(), 1);
        let resumed = Link {
            previous_ns: 10 * S,
            ..call(1, 2, 220)
        };
        chains.observe(&resumed, 0, names("old"));
        assert!(chains.gaps(0, |_| Verdict::Report).is_empty());
        assert_eq!(chains.sessions(), 2);
    }

    #[test]
    fn nothing_before_the_horizon_is_a_gap() {
        let mut chains = Chains::new(25 * S, None);
        for (seq, at) in [(3, 30), (4, 40), (6, 60)] {
            chains.observe(&call(1, seq, at), 0, names("s"));
        }
        let found = chains.gaps(0, |_| Verdict::Report);
        let missing: Vec<u32> = found.iter().map(|f| f.gap.first_missing).collect();
        assert_eq!(missing, [5], "2 (at 20 s) is before the horizon; 5 is not");
    }
}
