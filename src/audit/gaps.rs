//! The audit's section on what never reached Kafka: gaps in the signer's
//! session chains (`crate::chain`). Every record read is one call of its
//! session, whether its ticket is signed in the range, dead-lettered or
//! read from just outside the range (those hold the calls either side of a
//! gap at its edges). A gap is reported when its last missing call was
//! signed in the range and the call after it is older than the settle
//! time; each is a discrepancy. Its fee is an estimate — the session's own
//! rate over the uncovered time — kept apart from every exact figure and
//! never billed.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::config::AuditConfig;
use super::range::TimeRange;
use crate::chain::record::Chained;
use crate::chain::{missing_text, time_text, Chains, Found, Names, Verdict};
use crate::contract::Contract;
use crate::domain::{EthUsdPrice, FeeWei};

/// What no chain can show, said in every report.
pub(crate) const NOT_VISIBLE: [&str; 5] = [
    "the lost tail of a session: no later call points back to it",
    "a session lost whole",
    "a lost call no later call continues (the abandoned twin of a retried call)",
    "a lost call on a branch leaving a received stretch of calls from inside it (taken as joined to it)",
    "events of a signer with monitoring off, or too old to carry session_id, sequence_number and previous_time (counted as without a chain)",
];

/// The chains of every record read.
#[derive(Debug)]
pub(crate) struct AuditGaps {
    chains: Chains,
    contract: Contract,
    max_event_bytes: usize,
}

impl AuditGaps {
    /// Watching starts at the range's start: a gap before it is not this
    /// audit's.
    pub(crate) fn new(config: &AuditConfig) -> Self {
        Self {
            chains: Chains::new(nanos(config.range.from), None),
            contract: config.contract,
            max_event_bytes: config.max_event_bytes,
        }
    }

    /// One record of the source, as read.
    pub(crate) fn observe(&mut self, payload: &[u8]) {
        match Chained::of(payload) {
            Chained::Link(link) => {
                let (max_bytes, contract) = (self.max_event_bytes, &self.contract);
                self.chains
                    .observe(&link, 0, || Names::of(payload, max_bytes, contract));
            }
            Chained::Unchained => self.chains.unchained(),
            Chained::NotTicket => {}
        }
    }

    /// The gaps in `range` whose next call was signed before
    /// `settled_before_ns`, estimated at `price`.
    pub(crate) fn report(
        &self,
        range: TimeRange,
        settled_before_ns: i64,
        price: &EthUsdPrice,
    ) -> GapReport {
        let (from, to) = (nanos(range.from), nanos(range.to));
        let mut in_flight = 0;
        let mut found = self.chains.gaps_now(|gap| {
            if gap.until_ns < from || gap.until_ns >= to {
                Verdict::Unknown
            } else if gap.next_ns > settled_before_ns {
                in_flight += 1;
                Verdict::Unknown
            } else {
                Verdict::Report
            }
        });
        found.sort_by(|a, b| {
            (&a.names.customer, &a.names.session_id, a.gap.first_missing).cmp(&(
                &b.names.customer,
                &b.names.session_id,
                b.gap.first_missing,
            ))
        });
        let gaps: Vec<GapLine> = found.iter().map(|f| GapLine::of(f, price)).collect();
        // The sum of the whole micros shown per gap, as the collector's
        // counter adds them.
        let total: u64 = gaps.iter().map(|g| g.micros).fold(0, u64::saturating_add);
        GapReport {
            sessions: self.chains.sessions() as u64,
            missing_calls: gaps.iter().map(|g| u64::from(g.missing_calls)).sum(),
            estimated_unbilled_usd_micros: total.to_string(),
            gaps,
            in_flight,
            unchained_events: self.chains.unchained_events(),
            not_visible: NOT_VISIBLE.to_vec(),
        }
    }
}

/// The chain section of the report (`chain` in `--format json`).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct GapReport {
    /// Signer sessions among the records read.
    pub(crate) sessions: u64,
    pub(crate) gaps: Vec<GapLine>,
    pub(crate) missing_calls: u64,
    /// Σ of the gaps' estimates (each in whole µUSD): never billed, in no
    /// exact figure.
    pub(crate) estimated_unbilled_usd_micros: String,
    /// Gaps whose next call is younger than the settle time: not counted.
    pub(crate) in_flight: u64,
    /// Billable events read without session_id, sequence_number and
    /// previous_time: their losses cannot be seen.
    pub(crate) unchained_events: u64,
    pub(crate) not_visible: Vec<&'static str>,
}

/// One gap: calls the signer made and never published.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GapLine {
    pub(crate) session: String,
    /// The billing subject the session's events are billed to.
    pub(crate) customer: String,
    pub(crate) missing_sequence_numbers: Missing,
    pub(crate) missing_calls: u32,
    /// From the last call received before the gap (null: none of the
    /// session's earlier calls was seen) ...
    pub(crate) uncovered_from: Option<String>,
    /// ... to the last missing call's time.
    pub(crate) uncovered_to: String,
    pub(crate) estimate: EstimateLine,
    #[serde(skip)]
    micros: u64,
}

/// `first..=last`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Missing {
    pub(crate) first: u32,
    pub(crate) last: u32,
}

/// What the missing calls would have billed: an estimate, never billed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EstimateLine {
    pub(crate) fee_wei: String,
    /// Whole µUSD at the audit's price.
    pub(crate) usd_micros: String,
    pub(crate) basis: &'static str,
}

impl GapLine {
    fn of(found: &Found, price: &EthUsdPrice) -> Self {
        let gap = &found.gap;
        let micros = FeeWei::new(gap.estimate.fee_wei)
            .to_usd_micros(price)
            .whole_u64();
        Self {
            session: found.names.session_id.clone(),
            customer: found.names.customer.clone().unwrap_or_default(),
            missing_sequence_numbers: Missing {
                first: gap.first_missing,
                last: gap.last_missing,
            },
            missing_calls: gap.missing_calls(),
            uncovered_from: gap.after_ns.map(|ns| time_text(Some(ns))),
            uncovered_to: time_text(Some(gap.until_ns)),
            estimate: EstimateLine {
                fee_wei: gap.estimate.fee_wei.to_string(),
                usd_micros: micros.to_string(),
                basis: gap.estimate.basis.as_str(),
            },
            micros,
        }
    }

    fn missing_text(&self) -> String {
        let m = self.missing_sequence_numbers;
        missing_text(m.first, m.last)
    }
}

impl GapReport {
    /// Gaps count as discrepancies.
    pub(crate) fn count(&self) -> u64 {
        self.gaps.len() as u64
    }

    /// The table's section.
    pub(crate) fn table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nsigner session chains: {} sessions, gaps: {}, calls signed and never published to Kafka: {}, estimated µUSD never billed: {}, in flight (younger than settle): {}, tickets without a chain: {}",
            self.sessions,
            self.gaps.len(),
            self.missing_calls,
            self.estimated_unbilled_usd_micros,
            self.in_flight,
            self.unchained_events
        );
        if !self.gaps.is_empty() {
            let _ = writeln!(
                out,
                "\ngaps (calls missing from a session's chain; estimates, not billed):"
            );
            for g in &self.gaps {
                let _ = writeln!(
                    out,
                    "  {}  session {}  call {}  uncovered {} .. {}  ≈ {} µUSD ({})",
                    g.customer,
                    g.session,
                    g.missing_text(),
                    g.uncovered_from.as_deref().unwrap_or("unknown"),
                    g.uncovered_to,
                    g.estimate.usd_micros,
                    g.estimate.basis
                );
            }
        }
        let _ = writeln!(
            out,
            "not visible in a chain: {}",
            self.not_visible.join("; ")
        );
    }

    /// The CSV's second section, after a blank line, when there are gaps.
    pub(crate) fn csv(&self) -> String {
        if self.gaps.is_empty() {
            return String::new();
        }
        let mut writer = csv::Writer::from_writer(Vec::new());
        let _ = writer.write_record(CSV_HEADER);
        for g in &self.gaps {
            let m = g.missing_sequence_numbers;
            let _ = writer.write_record([
                g.session.clone(),
                g.customer.clone(),
                m.first.to_string(),
                m.last.to_string(),
                g.missing_calls.to_string(),
                g.uncovered_from.clone().unwrap_or_default(),
                g.uncovered_to.clone(),
                g.estimate.fee_wei.clone(),
                g.estimate.usd_micros.clone(),
                g.estimate.basis.to_owned(),
            ]);
        }
        let bytes = writer.into_inner().unwrap_or_default();
        format!("\n{}", String::from_utf8(bytes).unwrap_or_default())
    }
}

const CSV_HEADER: [&str; 10] = [
    "gap_session",
    "customer",
    "first_missing_sequence_number",
    "last_missing_sequence_number",
    "missing_calls",
    "uncovered_from",
    "uncovered_to",
    "estimated_fee_wei",
    "estimated_usd_micros",
    "estimate_basis",
];

fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = "2026-11-24T09:00:00Z";

    /// A go-livepeer event of session `session`, call `seq` at minute
    /// `at`, its previous call at minute `prev`.
    fn event(session: &str, seq: u32, at: u32, prev: u32) -> String {
        let time = |m: u32| format!("2026-11-24T09:{m:02}:00.123456789Z");
        let status = if seq == 0 { "new" } else { "continuing" };
        format!(
            r#"{{"id":"{session}-{seq}-{at}","type":"create_signed_ticket","data":{{"session_id":"{session}","session_status":"{status}","orch_address":"0xab","request_id":"r{seq}","auth_id":"studio-app:alice","computed_fee":"60000000000000","current_time":"{}","previous_time":"{}","sequence_number":{seq}}}}}"#,
            time(at),
            time(prev)
        )
    }

    fn config() -> AuditConfig {
        AuditConfig {
            range: TimeRange::new(T0.parse().unwrap(), "2026-11-24T10:00:00Z".parse().unwrap())
                .unwrap(),
            mode: crate::audit::Mode::Events,
            fingerprints: false,
            event_time: crate::billing::EventTime::default(),
            settle: std::time::Duration::ZERO,
            collection_window: std::time::Duration::ZERO,
            max_event_bytes: 1 << 20,
            contract: Contract::default(),
            progress: false,
        }
    }

    fn report_of(events: &[String]) -> GapReport {
        let config = config();
        let mut gaps = AuditGaps::new(&config);
        for e in events {
            gaps.observe(e.as_bytes());
        }
        gaps.report(config.range, i64::MAX, &"3500".parse().unwrap())
    }

    #[test]
    fn a_call_removed_from_the_middle_is_named_with_its_session_customer_and_estimate() {
        let events: Vec<String> = (0..6)
            .filter(|seq| *seq != 3)
            .map(|seq| event("s1", seq, 10 + seq, if seq == 0 { 10 } else { 9 + seq }))
            .collect();
        let report = report_of(&events);
        assert_eq!(report.count(), 1);
        let g = &report.gaps[0];
        assert_eq!(
            (g.session.as_str(), g.customer.as_str(), g.missing_calls),
            ("s1", "studio-app:alice", 1)
        );
        assert_eq!(
            g.uncovered_from.as_deref(),
            Some("2026-11-24T09:12:00.123456789Z")
        );
        assert_eq!(g.uncovered_to, "2026-11-24T09:13:00.123456789Z");
        // 4 calls of 60 s at 6e13 wei each: the rate bills 6e13 for the 60 s missing.
        assert_eq!(g.estimate.fee_wei, "60000000000000");
        assert_eq!(g.estimate.usd_micros, "210000");
        assert_eq!(report.estimated_unbilled_usd_micros, "210000");
    }

    #[test]
    fn a_gap_outside_the_range_or_younger_than_settle_is_not_counted() {
        let events = [event("s1", 0, 10, 10), event("s1", 2, 12, 11)];
        let config = config();
        let mut gaps = AuditGaps::new(&config);
        for e in &events {
            gaps.observe(e.as_bytes());
        }
        let young = gaps.report(config.range, 0, &"3500".parse().unwrap());
        assert_eq!((young.count(), young.in_flight), (0, 1));
        let before = TimeRange::new(
            "2026-11-24T09:11:30Z".parse().unwrap(),
            "2026-11-24T10:00:00Z".parse().unwrap(),
        )
        .unwrap();
        let outside = gaps.report(before, i64::MAX, &"3500".parse().unwrap());
        assert_eq!(outside.count(), 0, "call 1 (09:11) is before the range");
    }

    #[test]
    fn the_csv_section_lists_each_gap_after_a_blank_line() {
        let events = [event("s1", 0, 10, 10), event("s1", 3, 13, 12)];
        let csv = report_of(&events).csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "");
        assert!(lines[1].starts_with("gap_session,customer,"));
        assert!(
            lines[2].starts_with("s1,studio-app:alice,1,2,2,"),
            "{}",
            lines[2]
        );
    }
}
