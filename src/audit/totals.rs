//! Totals per customer and window, from the source and from OpenMeter's
//! meters, and when they prove a window.
//!
//! A window is proven when the source's count equals the `signed_ticket_count`
//! meter's, its µUSD equal the `billable_usd_micros` meter's, and (when the
//! catalog has it) the sum of its tickets' id fingerprints equals the
//! `id_fingerprint` meter's. OpenMeter answers every value as a float64
//! (`streaming/clickhouse/meter_query.go`, `scanRows`; by default it even
//! sums the values as float64s, `aggregation.enableDecimalPrecision: false`
//! in `app/config/aggregation.go`), so:
//!
//! - counts and fingerprint sums are integers below 2^53 and compared
//!   exactly; a window of 2^21 tickets or more (their fingerprints could
//!   pass 2^53) is never proven by its fingerprints: it is descended;
//! - the µUSD sum is compared within the error bound of summing n float64s,
//!   `(n + 2) · 2^-52 · Σ` (under one µUSD for a million tickets of $4k):
//!   a lost or extra ticket changes the count anyway, and the bound only
//!   matters to two tickets of nearly equal fee swapped, which the
//!   fingerprints see.

use std::collections::HashMap;

use super::windows::Grain;
use crate::domain::UsdMicros;

/// A window of one subject: its grain and start (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Cell {
    pub(crate) subject: u32,
    pub(crate) grain: Grain,
    pub(crate) start: i64,
}

impl Cell {
    pub(crate) fn end(&self) -> i64 {
        self.grain.end(self.start)
    }

    /// The window of `grain` holding second `secs` of this cell's subject.
    pub(crate) fn at(subject: u32, grain: Grain, secs: i64) -> Self {
        Self {
            subject,
            grain,
            start: grain.start(secs),
        }
    }
}

/// What the source says a window holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) count: u64,
    /// `billable_usd_micros` as sent.
    pub(crate) micros: UsdMicros,
    pub(crate) fingerprints: u64,
    /// A ticket here is billed other than at its signed time inside a
    /// subscription (moved, uncovered, or with no customer): the totals
    /// cannot tell a billed copy from an unbilled one, so it is read.
    pub(crate) unsure: bool,
}

impl Tally {
    pub(crate) fn add(&mut self, micros: UsdMicros, fingerprint: u32, unsure: bool) {
        self.count += 1;
        self.micros = self.micros.checked_add(micros).unwrap_or(self.micros);
        self.fingerprints += u64::from(fingerprint);
        self.unsure |= unsure;
    }
}

/// What OpenMeter's meters say a window holds (absent rows are zero).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reading {
    pub(crate) count: UsdMicros,
    pub(crate) micros: UsdMicros,
    pub(crate) fingerprints: UsdMicros,
}

/// Which meter a value was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measure {
    Count,
    Micros,
    Fingerprints,
}

impl Measure {
    /// The meter's key in the built-in catalog (and upstream's, but for
    /// the fingerprints).
    pub(crate) fn meter(self) -> &'static str {
        match self {
            Measure::Count => "signed_ticket_count",
            Measure::Micros => "billable_usd_micros",
            Measure::Fingerprints => "id_fingerprint",
        }
    }
}

impl Reading {
    pub(crate) fn set(&mut self, measure: Measure, value: UsdMicros) {
        let slot = match measure {
            Measure::Count => &mut self.count,
            Measure::Micros => &mut self.micros,
            Measure::Fingerprints => &mut self.fingerprints,
        };
        *slot = slot.checked_add(value).unwrap_or(*slot);
    }
}

/// Largest number of tickets whose 32-bit fingerprints a float64 sums
/// exactly (2^21 · 2^32 = 2^53).
pub(crate) const FINGERPRINT_EXACT_BELOW: u64 = 1 << 21;

/// Whether the meters prove the window the source describes.
pub(crate) fn proves(tally: &Tally, reading: &Reading, fingerprints: bool) -> bool {
    if tally.unsure || reading.count != UsdMicros::from(tally.count) {
        return false;
    }
    if !sums_agree(tally.micros, reading.micros, tally.count) {
        return false;
    }
    !fingerprints
        || (tally.count < FINGERPRINT_EXACT_BELOW
            && reading.fingerprints == UsdMicros::from(tally.fingerprints))
}

/// `exact` and a float64 `reported` agree within the error of a float64
/// sum of `n` values: `(n + 2) · 2^-52 · exact`.
pub(crate) fn sums_agree(exact: UsdMicros, reported: UsdMicros, n: u64) -> bool {
    let (_, gap) = exact.difference(reported);
    if gap == UsdMicros::ZERO {
        return true;
    }
    let float = |m: UsdMicros| m.to_string().parse::<f64>().unwrap_or(f64::INFINITY);
    float(gap) <= (n as f64 + 2.0) * f64::EPSILON * float(exact)
}

/// The source's and the meters' totals of one grain, by window.
#[derive(Debug, Default)]
pub(crate) struct Ledgers {
    pub(crate) tallies: HashMap<Cell, Tally>,
    pub(crate) readings: HashMap<Cell, Reading>,
}

impl From<HashMap<Cell, Tally>> for Ledgers {
    fn from(tallies: HashMap<Cell, Tally>) -> Self {
        Self {
            tallies,
            readings: HashMap::new(),
        }
    }
}

impl Ledgers {
    /// The windows whose totals do not prove them, in order.
    pub(crate) fn differing(&self, fingerprints: bool) -> Vec<Cell> {
        let (none, zero) = (Tally::default(), Reading::default());
        let mut cells: Vec<Cell> = self
            .tallies
            .keys()
            .chain(
                self.readings
                    .keys()
                    .filter(|c| !self.tallies.contains_key(c)),
            )
            .copied()
            .filter(|c| {
                let tally = self.tallies.get(c).unwrap_or(&none);
                let reading = self.readings.get(c).unwrap_or(&zero);
                !proves(tally, reading, fingerprints)
            })
            .collect();
        cells.sort_unstable();
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> UsdMicros {
        s.parse().unwrap()
    }

    fn tally(count: u64, micros: &str, fingerprints: u64) -> Tally {
        Tally {
            count,
            micros: m(micros),
            fingerprints,
            unsure: false,
        }
    }

    fn reading(count: &str, micros: &str, fingerprints: &str) -> Reading {
        Reading {
            count: m(count),
            micros: m(micros),
            fingerprints: m(fingerprints),
        }
    }

    #[test]
    fn equal_count_sum_and_fingerprints_prove_a_window() {
        let t = tally(3, "12600.3", 7);
        assert!(proves(&t, &reading("3", "12600.3", "7"), true));
    }

    #[test]
    fn a_float64_rounding_of_the_sum_still_proves_it() {
        let t = tally(2, "0.3", 0);
        assert!(proves(&t, &reading("2", "0.30000000000000004", "0"), false));
        let exact = tally(2, "9007199254740993.3", 0);
        assert!(proves(
            &exact,
            &reading("2", "9007199254740994", "0"),
            false
        ));
    }

    #[test]
    fn one_ticket_more_or_less_or_a_different_fee_does_not() {
        let t = tally(3, "12600", 7);
        assert!(!proves(&t, &reading("2", "8400", "5"), true));
        assert!(!proves(&t, &reading("3", "12601", "7"), true));
    }

    #[test]
    fn a_lost_ticket_and_another_stored_twice_cancel_in_count_and_sum_but_not_in_fingerprints() {
        let t = tally(2, "8400", 1_000 + 2_000);
        let swapped = reading("2", "8400", "4000");
        assert!(proves(&t, &swapped, false), "count and sum cannot see it");
        assert!(!proves(&t, &swapped, true));
    }

    #[test]
    fn a_window_of_two_million_tickets_is_never_proven_by_its_fingerprints() {
        let n = FINGERPRINT_EXACT_BELOW;
        let t = tally(n, "1", 5);
        assert!(!proves(&t, &reading(&n.to_string(), "1", "5"), true));
        assert!(proves(&t, &reading(&n.to_string(), "1", "5"), false));
    }

    #[test]
    fn a_window_with_a_moved_or_unbillable_ticket_is_read_whatever_its_totals() {
        let mut t = tally(1, "1", 1);
        t.unsure = true;
        assert!(!proves(&t, &reading("1", "1", "1"), true));
    }

    #[test]
    fn only_the_windows_that_differ_are_listed() {
        let cell = |subject, start| Cell {
            subject,
            grain: Grain::Day,
            start,
        };
        let mut l = Ledgers::default();
        l.tallies.insert(cell(0, 0), tally(1, "5", 9));
        l.readings.insert(cell(0, 0), reading("1", "5", "9"));
        l.tallies.insert(cell(1, 0), tally(1, "5", 9));
        l.readings.insert(cell(2, 86_400), reading("1", "5", "9"));
        assert_eq!(l.differing(true), vec![cell(1, 0), cell(2, 86_400)]);
    }
}
