//! What a meter counts, and what invoicing bills of it.
//!
//! Modelled on the ClickHouse meter query (`openmeter/streaming/clickhouse/
//! meter_query.go`, `queryhelper.go`) over the deduplicated events:
//!
//! - only events of the meter's `event_type`, at or after its `events_from`;
//! - by event `time` in whole seconds: `time >= from.Unix()` and
//!   `time < to.Unix()`, the `time` column being a `DateTime` (seconds);
//! - a customer's events are those whose `subject` is the customer's key or
//!   one of its usage-attribution subject keys, at query time
//!   (`streaming/usageattribution.go`, `GetValues`), whoever owned the subject
//!   when the event arrived;
//! - values are `JSON_VALUE(data, value_property)` read as numbers: numbers
//!   and numeric strings count, anything else is NULL and skipped. By
//!   default (`aggregation.enableDecimalPrecision: false`,
//!   `app/config/aggregation.go`) each is read with `toFloat64OrNull` and
//!   summed as a float64; with decimal precision on, as `Decimal128(19)`
//!   (`toDecimal128OrNull`). Either way the row's value becomes a float64
//!   (`scanRows`, `InexactFloat64`) and the v3 API writes that float's
//!   shortest decimal (`api/v3/handlers/meters/convert.go`,
//!   `ToAPIMeterQueryRow`: `alpacadecimal.NewFromFloat(row.Value).String()`).
//!   [`UsageRow::value`] keeps the exact sum (what the façade's
//!   `billable_total` answers); [`UsageRow::reported`] is what the API says;
//! - a row's `from`/`to` are its window's (`tumbleStart`/`tumbleEnd` in UTC;
//!   a day's end is its start plus a day); without a granularity they are
//!   the minutes the data spans (`tumbleStart(min(time))`,
//!   `tumbleEnd(max(time))`);
//! - the events are those stored, which ingest's dedupe already reduced to
//!   one per `(source, id)` (`openmeter/ingest/dedupe.go`; the events table
//!   is a plain `MergeTree`, `streaming/clickhouse/event_query.go`, so a
//!   second copy that passed the dedupe would count twice). The double's
//!   dedupe never expires (the server's keeps ids 32 days by default).
//!
//! Invoicing queries the same way, once per line, with `from`/`to` = the line's
//! service period (`billing/lineengine/quantitysnapshot.go`), and the service
//! periods of a subscription item start at `active_from` truncated to whole
//! seconds (`billing/worker/subscriptionsync/service/targetstate/
//! phaseiterator.go`, `truncateItemsIfNeeded`). An event older than its
//! subscription is therefore accepted and metered but never billed.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::Value;

use super::tables::State;
use crate::model::{Meter, Subscription};
use crate::problem::{ApiResult, InvalidParam, Problem};
use crate::state::event_store::DeliveryRec;
use crate::state::meter_query::{MeterQuery, StringFilter, Window, CUSTOMER_ID, SUBJECT};

const NANOS_PER_SECOND: i64 = 1_000_000_000;
/// One `MeterQueryRow`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UsageRow {
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
    /// The exact aggregate.
    pub(crate) value: Decimal,
    /// The float64 the server answers with.
    pub(crate) reported: f64,
    pub(crate) dimensions: BTreeMap<String, String>,
}

/// The running aggregate of one group.
#[derive(Debug, Clone)]
enum Acc {
    Count(u64),
    /// The exact sum and the float64 one (`toFloat64OrNull` summed).
    Sum(Option<Decimal>, f64),
    Avg(Decimal, u64, f64),
    Min(Option<Decimal>),
    Max(Option<Decimal>),
    Unique(HashSet<String>),
    /// `argMax(value, time)`: the value of the latest event.
    Latest(Option<(i64, Decimal)>),
}

impl Acc {
    fn new(aggregation: &str) -> Acc {
        match aggregation {
            "count" => Acc::Count(0),
            "avg" => Acc::Avg(Decimal::ZERO, 0, 0.0),
            "min" => Acc::Min(None),
            "max" => Acc::Max(None),
            "unique_count" => Acc::Unique(HashSet::new()),
            "latest" => Acc::Latest(None),
            _ => Acc::Sum(None, 0.0),
        }
    }

    fn add(&mut self, raw: &str, time_ns: i64) -> ApiResult<()> {
        if let Acc::Count(n) = self {
            *n += 1;
            return Ok(());
        }
        if let Acc::Unique(seen) = self {
            if raw != "null" {
                seen.insert(raw.to_string());
            }
            return Ok(());
        }
        let Some(v) = numeric(raw) else {
            return Ok(());
        };
        let float = raw.trim().parse::<f64>().ok().filter(|f| f.is_finite());
        match self {
            Acc::Sum(total, sum) => {
                *total = Some(checked_add(total.unwrap_or_default(), v)?);
                *sum += float.unwrap_or_default();
            }
            Acc::Avg(total, n, sum) => {
                *total = checked_add(*total, v)?;
                *n += 1;
                *sum += float.unwrap_or_default();
            }
            Acc::Min(m) => *m = Some(m.map_or(v, |m| m.min(v))),
            Acc::Max(m) => *m = Some(m.map_or(v, |m| m.max(v))),
            Acc::Latest(l) => {
                if l.is_none_or(|(t, _)| time_ns >= t) {
                    *l = Some((time_ns, v));
                }
            }
            Acc::Count(_) | Acc::Unique(_) => {}
        }
        Ok(())
    }

    /// The aggregate, or `None` when it is SQL NULL (no numeric value seen).
    fn value(&self) -> Option<Decimal> {
        match self {
            Acc::Count(n) => Some(Decimal::from(*n)),
            Acc::Unique(seen) => Some(Decimal::from(seen.len())),
            Acc::Sum(v, _) | Acc::Min(v) | Acc::Max(v) => *v,
            Acc::Avg(total, n, _) => (*n > 0).then(|| *total / Decimal::from(*n)),
            Acc::Latest(l) => l.map(|(_, v)| v),
        }
    }

    /// The float64 the server answers with: the float sum (or mean) when
    /// it summed floats, else the exact aggregate made a float.
    fn reported(&self, exact: Decimal, decimal_precision: bool) -> f64 {
        use rust_decimal::prelude::ToPrimitive;
        match self {
            Acc::Sum(_, sum) if !decimal_precision => *sum,
            Acc::Avg(_, n, sum) if !decimal_precision && *n > 0 => *sum / *n as f64,
            _ => exact.to_f64().unwrap_or_default(),
        }
    }
}

fn checked_add(a: Decimal, b: Decimal) -> ApiResult<Decimal> {
    a.checked_add(b).ok_or_else(|| {
        Problem::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "meter value overflows a decimal",
        )
    })
}

/// `toDecimal128OrNull(nullIf(s, 'null'))`: numbers and numeric strings.
fn numeric(s: &str) -> Option<Decimal> {
    let s = s.trim();
    if s.is_empty() || s == "null" {
        return None;
    }
    s.parse::<Decimal>()
        .ok()
        .or_else(|| Decimal::from_scientific(s).ok())
}

/// ClickHouse `JSON_VALUE(data, path)`: the scalar at `path` as text; ''
/// when the path is missing or names an object or array.
pub(crate) fn json_value(data: Option<&Value>, path: &str) -> String {
    let found = data.and_then(|d| json_path(d, path));
    match found {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Null) => "null".into(),
        _ => String::new(),
    }
}

/// A JSONPath of `.name`, `['name']` and `[index]` steps after `$`.
fn json_path<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    let mut rest = path.trim().strip_prefix('$')?;
    let mut cur = root;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.get(&r[..end])?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let step = &r[..end];
            let quoted = step
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| step.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
            cur = match quoted {
                Some(name) => cur.get(name)?,
                None => cur.get(step.parse::<usize>().ok()?)?,
            };
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(cur)
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

/// The `[start, end)` of the window holding second `secs` (UTC).
fn window_of(window: Window, secs: i64) -> (i64, i64) {
    let fixed = |len: i64| {
        let start = secs - secs.rem_euclid(len);
        (start, start + len)
    };
    match window {
        Window::Minute => fixed(60),
        Window::Hour => fixed(3_600),
        Window::Day => fixed(86_400),
        Window::Month => {
            let d = at(secs).date_naive();
            let first = |y: i32, m: u32| {
                NaiveDate::from_ymd_opt(y, m, 1)
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|t| t.and_utc().timestamp())
                    .unwrap_or(secs)
            };
            let (ny, nm) = if d.month() == 12 {
                (d.year() + 1, 1)
            } else {
                (d.year(), d.month() + 1)
            };
            (first(d.year(), d.month()), first(ny, nm))
        }
    }
}

/// One group's key and what it has seen.
struct Group {
    acc: Acc,
    first: i64,
    last: i64,
}

/// Which customer each attributed subject belongs to.
struct Attribution<'s> {
    by_subject: HashMap<&'s str, &'s str>,
}

impl State {
    /// Resolve the customer filter like `query/customers.go`: deleted
    /// customers count, an unknown id is a 404 "customer not found".
    fn attribution(&self, ids: &[String]) -> ApiResult<Attribution<'_>> {
        let mut by_subject = HashMap::new();
        for id in ids {
            let c = self.customer(id).ok_or_else(|| {
                let mut p = Problem::not_found(format!("customer not found [customer_id={id}]"));
                p.invalid_parameters = vec![InvalidParam::invalid(
                    "filters.dimensions.customer_id",
                    "customer not found",
                )];
                p
            })?;
            for value in std::iter::once(&c.key).chain(c.subject_keys()) {
                by_subject.entry(value.as_str()).or_insert(c.id.as_str());
            }
        }
        Ok(Attribution { by_subject })
    }

    /// The stored events a query can count, in time order: those of the
    /// filtered subjects (and the filtered customers' subjects) when it is
    /// filtered, else all; within `[from, to)` in whole seconds.
    fn candidates(
        &self,
        q: &MeterQuery,
        attribution: &Attribution<'_>,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Vec<usize> {
        let lo = from.map_or(i64::MIN, |f| f.saturating_mul(NANOS_PER_SECOND));
        let hi = to.map_or(i64::MAX, |t| t.saturating_mul(NANOS_PER_SECOND));
        if lo >= hi {
            return Vec::new();
        }
        let span = (lo, 0)..(hi, 0);
        let events = &self.events;
        if q.subjects.is_empty() && q.customers.is_empty() {
            return events.by_time.range(span).map(|&(_, i)| i).collect();
        }
        let mut subjects: Vec<&str> = if q.subjects.is_empty() {
            attribution.by_subject.keys().copied().collect()
        } else {
            q.subjects.iter().map(String::as_str).collect()
        };
        subjects.sort_unstable();
        subjects.dedup();
        let mut keys: Vec<(i64, usize)> = subjects
            .iter()
            .filter_map(|s| events.by_subject.get(*s))
            .flat_map(|index| index.range(span.clone()).copied())
            .collect();
        keys.sort_unstable();
        keys.into_iter().map(|(_, i)| i).collect()
    }

    /// Run `q` against `meter` over the deduplicated events;
    /// `decimal_precision` is the server's setting of that name.
    pub(crate) fn query_meter(
        &self,
        meter: &Meter,
        q: &MeterQuery,
        decimal_precision: bool,
    ) -> ApiResult<Vec<UsageRow>> {
        let attribution = self.attribution(&q.customers)?;
        let from = match (q.from, meter.events_from) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
        .map(|t| t.timestamp());
        let to = q.to.map(|t| t.timestamp());
        let value_path = meter.value_property.as_deref().unwrap_or("");
        let meter_index = self.meters.iter().position(|m| m.id == meter.id);
        let mut groups: HashMap<(i64, Vec<Cow<'_, str>>), Group> = HashMap::new();
        for i in self.candidates(q, &attribution, from, to) {
            let d = &self.events.deliveries[i];
            let e = &d.event;
            let time_ns = d.sort_ns();
            let secs = time_ns.div_euclid(NANOS_PER_SECOND);
            if e.ty != meter.event_type {
                continue;
            }
            if !q.subjects.is_empty() && !q.subjects.contains(&e.subject) {
                continue;
            }
            let customer = attribution.by_subject.get(e.subject.as_str()).copied();
            if !q.customers.is_empty() && customer.is_none() {
                continue;
            }
            if !self.dimensions_match(meter, d, &q.dimension_filters) {
                continue;
            }
            let window = q.window.map_or(0, |w| window_of(w, secs).0);
            let key = (window, self.group_values(meter, d, customer, &q.group_by));
            let group = groups.entry(key).or_insert_with(|| Group {
                acc: Acc::new(&meter.aggregation),
                first: secs,
                last: secs,
            });
            group.first = group.first.min(secs);
            group.last = group.last.max(secs);
            let cached = meter_index
                .and_then(|m| d.meter_values.get(m))
                .and_then(|v| v.as_deref());
            let value = match (cached, &group.acc) {
                (_, Acc::Count(_)) => std::borrow::Cow::Borrowed(""),
                (Some(v), _) => std::borrow::Cow::Borrowed(v),
                (None, _) => {
                    std::borrow::Cow::Owned(json_value(e.data_value().as_ref(), value_path))
                }
            };
            group.acc.add(&value, time_ns)?;
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(groups
            .into_iter()
            .filter_map(|((window, values), g)| {
                let value = g.acc.value()?;
                let (start, end) = match q.window {
                    Some(w) => window_of(w, window),
                    // Without a granularity the server reports the minutes
                    // the data spans: tumbleStart(min(time)), tumbleEnd(max(time)).
                    None => (
                        window_of(Window::Minute, g.first).0,
                        window_of(Window::Minute, g.last).1,
                    ),
                };
                let values = values.into_iter().map(Cow::into_owned);
                let dimensions = q.group_by.iter().cloned().zip(values).collect();
                Some(UsageRow {
                    from: at(start),
                    to: at(end),
                    value,
                    reported: g.acc.reported(value, decimal_precision),
                    dimensions,
                })
            })
            .collect())
    }

    fn dimensions_match(
        &self,
        meter: &Meter,
        d: &DeliveryRec,
        filters: &[(String, StringFilter)],
    ) -> bool {
        filters.iter().all(|(name, f)| {
            let path = meter
                .dimensions
                .as_ref()
                .and_then(|m| m.get(name))
                .map(String::as_str)
                .unwrap_or("");
            f.matches(&json_value(d.event.data_value().as_ref(), path))
        })
    }

    /// The values `d` groups by (borrowed for `subject` and `customer_id`:
    /// a query over millions of events makes a key for each).
    fn group_values<'s>(
        &self,
        meter: &Meter,
        d: &'s DeliveryRec,
        customer: Option<&'s str>,
        group_by: &[String],
    ) -> Vec<Cow<'s, str>> {
        group_by
            .iter()
            .map(|name| match name.as_str() {
                SUBJECT => Cow::Borrowed(d.event.subject.as_str()),
                CUSTOMER_ID => Cow::Borrowed(customer.unwrap_or_default()),
                dim => {
                    let path = meter
                        .dimensions
                        .as_ref()
                        .and_then(|m| m.get(dim))
                        .map(String::as_str)
                        .unwrap_or("");
                    Cow::Owned(json_value(d.event.data_value().as_ref(), path))
                }
            })
            .collect()
    }

    /// The meter's value for one customer over `[from, to)` (either open).
    fn customer_total(
        &self,
        meter: &Meter,
        customer_id: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Decimal {
        let q = MeterQuery {
            from,
            to,
            customers: vec![customer_id.to_string()],
            group_by: vec![CUSTOMER_ID.to_string()],
            ..MeterQuery::default()
        };
        self.query_meter(meter, &q, true)
            .map(|rows| rows.iter().map(|r| r.value).sum())
            .unwrap_or_default()
    }

    /// Everything `meter` counts for the customer, whenever it happened.
    pub(crate) fn metered_total(&self, meter: &Meter, customer_id: &str) -> Decimal {
        self.customer_total(meter, customer_id, None, None)
    }

    /// What invoicing bills of `meter` for the customer: the meter over each
    /// service period of each subscription that prices the meter, from
    /// `active_from` to `active_to` (open while running), both truncated to
    /// whole seconds.
    pub(crate) fn billable_total(&self, meter: &Meter, customer_id: &str) -> Decimal {
        self.customer_subscriptions(customer_id)
            .filter(|s| self.prices_meter(s, meter))
            .map(|s| {
                let from = trunc_seconds(s.active_from);
                let to = s.active_to.map(trunc_seconds);
                self.customer_total(meter, customer_id, Some(from), to)
            })
            .sum()
    }

    /// Does a rate card of the subscription put a usage-based price (unit,
    /// graduated, volume; `api/v3/handlers/plans/convert.go`) on a feature
    /// metered by `meter`? Only such items are billed from the meter.
    fn prices_meter(&self, sub: &Subscription, meter: &Meter) -> bool {
        sub.phases
            .iter()
            .flat_map(|p| &p.items)
            .any(|item| self.rate_card_meters(&item.rate_card) == Some(meter.id.as_str()))
    }

    /// The meter a usage-priced rate card bills from, if any.
    pub(crate) fn rate_card_meters(&self, card: &Value) -> Option<&str> {
        let price = card.get("price")?.get("type")?.as_str()?;
        if !is_usage_price(price) {
            return None;
        }
        let feature_id = card.get("feature")?.get("id")?.as_str()?;
        self.feature(feature_id)?.meter_id()
    }

    pub(crate) fn meter_by_id_or_key(&self, id_or_key: &str) -> Option<&Meter> {
        self.meters
            .iter()
            .filter(|m| m.deleted_at.is_none())
            .find(|m| m.id == id_or_key || m.key == id_or_key)
    }
}

/// Price types the server maps to a usage-based rate card.
pub(crate) fn is_usage_price(kind: &str) -> bool {
    matches!(kind, "unit" | "graduated" | "volume")
}

fn trunc_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    at(t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_value_reads_scalars_and_blanks_the_rest() {
        let data = json!({"a": {"b": [1, "x"]}, "n": 12.5, "s": "7", "z": null, "o": {}});
        assert_eq!(json_value(Some(&data), "$.n"), "12.5");
        assert_eq!(json_value(Some(&data), "$.s"), "7");
        assert_eq!(json_value(Some(&data), "$.a.b[1]"), "x");
        assert_eq!(json_value(Some(&data), "$['a']['b'][0]"), "1");
        assert_eq!(json_value(Some(&data), "$.z"), "null");
        assert_eq!(json_value(Some(&data), "$.o"), "");
        assert_eq!(json_value(Some(&data), "$.missing"), "");
        assert_eq!(json_value(None, "$.n"), "");
    }

    #[test]
    fn numeric_accepts_numbers_and_numeric_strings_only() {
        assert_eq!(numeric("12.5"), Some(Decimal::new(125, 1)));
        assert_eq!(numeric("1e3"), Some(Decimal::from(1000)));
        assert_eq!(numeric(""), None);
        assert_eq!(numeric("null"), None);
        assert_eq!(numeric("abc"), None);
    }

    #[test]
    fn month_windows_follow_the_calendar() {
        let secs = Utc
            .with_ymd_and_hms(2024, 12, 31, 23, 59, 59)
            .unwrap()
            .timestamp();
        let (start, end) = window_of(Window::Month, secs);
        assert_eq!(at(start).to_rfc3339(), "2024-12-01T00:00:00+00:00");
        assert_eq!(at(end).to_rfc3339(), "2025-01-01T00:00:00+00:00");
        assert_eq!(window_of(Window::Minute, -1), (-60, 0));
    }
}
