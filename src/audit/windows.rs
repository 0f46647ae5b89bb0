//! The windows OpenMeter's meter query groups usage into, cut as its
//! ClickHouse query cuts them (openmeterio/openmeter
//! `openmeter/streaming/clickhouse/meter_query.go`): tumbling windows of a
//! minute, an hour, a day or a calendar month in the query's time zone
//! (UTC: the audit never sends another, and UTC is the default), over the
//! event `time` in whole seconds (the events table's `time` is a
//! `DateTime`, `event_query.go`); a query's `from`/`to` are read as
//! `time >= from.Unix()` and `time < to.Unix()`.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

/// A window size, coarsest first: the audit proves a month per customer,
/// and descends a level only where the totals differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Grain {
    Month,
    Day,
    Hour,
    Minute,
}

impl Grain {
    pub(crate) const ALL: [Grain; 4] = [Grain::Month, Grain::Day, Grain::Hour, Grain::Minute];

    /// `MeterQueryGranularity`.
    pub(crate) fn granularity(self) -> &'static str {
        match self {
            Grain::Month => "P1M",
            Grain::Day => "P1D",
            Grain::Hour => "PT1H",
            Grain::Minute => "PT1M",
        }
    }

    /// The next finer window, `None` below a minute (events come next).
    pub(crate) fn finer(self) -> Option<Grain> {
        match self {
            Grain::Month => Some(Grain::Day),
            Grain::Day => Some(Grain::Hour),
            Grain::Hour => Some(Grain::Minute),
            Grain::Minute => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Grain::Month => "month",
            Grain::Day => "day",
            Grain::Hour => "hour",
            Grain::Minute => "minute",
        }
    }

    /// The start (unix seconds) of the window holding second `secs`.
    pub(crate) fn start(self, secs: i64) -> i64 {
        let fixed = |len: i64| secs - secs.rem_euclid(len);
        match self {
            Grain::Minute => fixed(60),
            Grain::Hour => fixed(3_600),
            Grain::Day => fixed(86_400),
            Grain::Month => {
                let d = at(secs).date_naive();
                month_start(d.year(), d.month()).unwrap_or(secs)
            }
        }
    }

    /// The end (exclusive) of the window starting at `start`.
    pub(crate) fn end(self, start: i64) -> i64 {
        match self {
            Grain::Minute => start + 60,
            Grain::Hour => start + 3_600,
            Grain::Day => start + 86_400,
            Grain::Month => {
                let d = at(start).date_naive();
                let (y, m) = if d.month() == 12 {
                    (d.year() + 1, 1)
                } else {
                    (d.year(), d.month() + 1)
                };
                month_start(y, m).unwrap_or(start)
            }
        }
    }
}

fn month_start(year: i32, month: u32) -> Option<i64> {
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp())
}

/// Unix seconds as a time.
pub(crate) fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

/// The whole second `t` falls in, as the meter query reads event times.
pub(crate) fn second_of(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn a_month_runs_from_its_first_midnight_to_the_next_months() {
        let start = Grain::Month.start(secs("2024-12-31T23:59:59Z"));
        assert_eq!(start, secs("2024-12-01T00:00:00Z"));
        assert_eq!(Grain::Month.end(start), secs("2025-01-01T00:00:00Z"));
        let feb = Grain::Month.start(secs("2024-02-29T12:00:00Z"));
        assert_eq!(Grain::Month.end(feb), secs("2024-03-01T00:00:00Z"));
    }

    #[test]
    fn the_last_second_of_a_day_is_in_it_and_midnight_in_the_next() {
        let last = secs("2026-11-30T23:59:59Z");
        assert_eq!(Grain::Day.start(last), secs("2026-11-30T00:00:00Z"));
        assert_eq!(Grain::Day.start(last + 1), secs("2026-12-01T00:00:00Z"));
        assert_eq!(Grain::Month.start(last + 1), last + 1);
    }

    #[test]
    fn windows_nest_and_seconds_before_1970_fall_in_their_own_minute() {
        let t = secs("2026-11-24T09:17:42Z");
        for pair in Grain::ALL.windows(2) {
            let (coarse, fine) = (pair[0], pair[1]);
            assert!(coarse.start(t) <= fine.start(t));
            assert!(fine.end(fine.start(t)) <= coarse.end(coarse.start(t)));
        }
        assert_eq!(Grain::Minute.start(-1), -60);
    }
}
