//! What a meter query asks: the `MeterQueryRequest` body read into typed
//! filters under the server's own rules, then checked against its meter
//! (`api/v3/handlers/meters/query/params.go`, `BuildQueryParams`). The
//! counting lives in `usage.rs`.
//!
//! One deviation, on purpose: only the UTC time zone is supported (anything
//! else is a 400 saying so).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::model::Meter;
use crate::problem::{ApiResult, InvalidParam, Problem};
use crate::validate::{decode, Errors};

pub(crate) const SUBJECT: &str = "subject";
pub(crate) const CUSTOMER_ID: &str = "customer_id";

/// `MeterQueryGranularity`: the tumbling window usage is grouped into (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Window {
    Minute,
    Hour,
    Day,
    Month,
}

/// A string comparison on a dimension (`QueryFilterStringMapItem`), as the
/// server turns it into SQL (`pkg/filter/filter.go`, `SelectWhereExpr`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StringFilter {
    Eq(String),
    Neq(String),
    In(Vec<String>),
    Nin(Vec<String>),
    /// `contains` becomes a case-sensitive `LIKE '%v%'` (`api/v3/request/filter.go`).
    Contains(String),
    Ncontains(String),
    /// `IS [NOT] NULL` on `JSON_VALUE`, which is never NULL (a missing path
    /// reads as ''): `exists: true` matches every event, `false` none.
    Exists(bool),
    And(Vec<StringFilter>),
    Or(Vec<StringFilter>),
}

impl StringFilter {
    pub(crate) fn matches(&self, v: &str) -> bool {
        match self {
            StringFilter::Eq(x) => v == x,
            StringFilter::Neq(x) => v != x,
            StringFilter::In(xs) => xs.iter().any(|x| x == v),
            StringFilter::Nin(xs) => xs.iter().all(|x| x != v),
            StringFilter::Contains(x) => v.contains(x.as_str()),
            StringFilter::Ncontains(x) => !v.contains(x.as_str()),
            StringFilter::Exists(want) => *want,
            StringFilter::And(fs) => fs.iter().all(|f| f.matches(v)),
            StringFilter::Or(fs) => fs.iter().any(|f| f.matches(v)),
        }
    }
}

/// A validated meter query (`MeterQueryRequest`, after
/// `api/v3/handlers/meters/query/params.go`, `BuildQueryParams`).
#[derive(Debug, Clone, Default)]
pub(crate) struct MeterQuery {
    pub(crate) from: Option<DateTime<Utc>>,
    pub(crate) to: Option<DateTime<Utc>>,
    pub(crate) window: Option<Window>,
    /// Dimension names, `subject` and `customer_id` included, in request order.
    pub(crate) group_by: Vec<String>,
    /// Only events of these subjects (empty: all).
    pub(crate) subjects: Vec<String>,
    /// Only events attributed to these customer ids (empty: all).
    pub(crate) customers: Vec<String>,
    /// Filters on the meter's own dimensions.
    pub(crate) dimension_filters: Vec<(String, StringFilter)>,
}

/// `maxGroupByFilterComplexityDepth` in `query/params.go`.
const MAX_FILTER_DEPTH: usize = 2;

/// A `MeterQueryRequest` body, read after the spec accepted it.
#[derive(Debug, Deserialize)]
pub(crate) struct MeterQueryBody {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    granularity: Option<String>,
    time_zone: Option<String>,
    #[serde(default)]
    group_by_dimensions: Vec<String>,
    filters: Option<Filters>,
}

/// `MeterQueryFilters`. The dimensions stay a JSON map so their order is
/// the request's.
#[derive(Debug, Deserialize)]
struct Filters {
    dimensions: Option<Map<String, Value>>,
}

/// `QueryFilterStringMapItem` (and, nested, `QueryFilterString`, which the
/// spec allows everything but `exists`).
#[derive(Debug, Deserialize)]
struct FilterItem {
    exists: Option<bool>,
    eq: Option<String>,
    neq: Option<String>,
    contains: Option<String>,
    ncontains: Option<String>,
    #[serde(rename = "in")]
    any_of: Option<Vec<String>>,
    nin: Option<Vec<String>>,
    and: Option<Vec<FilterItem>>,
    or: Option<Vec<FilterItem>>,
}

/// One operator of a filter item, with the filter it makes.
enum Operand {
    Text(fn(String) -> StringFilter, String),
    List(fn(Vec<String>) -> StringFilter, Vec<String>),
    Nested(fn(Vec<StringFilter>) -> StringFilter, Vec<FilterItem>),
    Flag(bool),
}

impl FilterItem {
    /// The operators that are set, by name.
    fn operators(self) -> Vec<(&'static str, Operand)> {
        let text = |f, v: Option<String>| v.map(|v| Operand::Text(f, v));
        let list = |f, v: Option<Vec<String>>| v.map(|v| Operand::List(f, v));
        let nested = |f, v: Option<Vec<FilterItem>>| v.map(|v| Operand::Nested(f, v));
        [
            ("exists", self.exists.map(Operand::Flag)),
            ("eq", text(StringFilter::Eq, self.eq)),
            ("neq", text(StringFilter::Neq, self.neq)),
            ("contains", text(StringFilter::Contains, self.contains)),
            ("ncontains", text(StringFilter::Ncontains, self.ncontains)),
            ("in", list(StringFilter::In, self.any_of)),
            ("nin", list(StringFilter::Nin, self.nin)),
            ("and", nested(StringFilter::And, self.and)),
            ("or", nested(StringFilter::Or, self.or)),
        ]
        .into_iter()
        .filter_map(|(name, op)| op.map(|op| (name, op)))
        .collect()
    }
}

/// A filter item as a [`StringFilter`]. Exactly one operator
/// (`pkg/filter/filter.go`, `validateSingleOperator`); an empty value is
/// "filter is invalid: format mismatch". A top-level item without operator
/// filters nothing.
fn string_filter(
    e: &mut Errors,
    item: FilterItem,
    path: &str,
    depth: usize,
    top: bool,
) -> Option<StringFilter> {
    let mut ops = item.operators();
    if ops.len() > 1 {
        e.push(InvalidParam::invalid(
            path,
            "filter is invalid: multiple operators are set",
        ));
        return None;
    }
    let Some((name, operand)) = ops.pop() else {
        if !top {
            e.push(InvalidParam::invalid(
                path,
                "a nested filter needs an operator",
            ));
        }
        return None;
    };
    let at = format!("{path}.{name}");
    match operand {
        Operand::Text(_, v) if v.is_empty() => {
            e.push(InvalidParam::invalid(
                &at,
                "filter is invalid: format mismatch",
            ));
            None
        }
        Operand::Text(make, v) => Some(make(v)),
        Operand::List(make, vs) => Some(make(vs)),
        Operand::Nested(make, items) => filter_list(e, items, &at, depth).map(make),
        Operand::Flag(b) => Some(StringFilter::Exists(b)),
    }
}

fn filter_list(
    e: &mut Errors,
    items: Vec<FilterItem>,
    path: &str,
    depth: usize,
) -> Option<Vec<StringFilter>> {
    if depth >= MAX_FILTER_DEPTH {
        e.push(InvalidParam::invalid(
            path,
            "filter complexity exceeds maximum allowed depth",
        ));
        return None;
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, f)| string_filter(e, f, &format!("{path}[{i}]"), depth + 1, false))
        .collect()
}

fn window(granularity: &str) -> Option<Window> {
    match granularity {
        "PT1M" => Some(Window::Minute),
        "PT1H" => Some(Window::Hour),
        "P1D" => Some(Window::Day),
        "P1M" => Some(Window::Month),
        _ => None,
    }
}

/// A meter query before it meets its meter.
#[derive(Debug)]
pub(crate) struct MeterQueryRequest {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    window: Option<Window>,
    group_by: Vec<String>,
    filters: Vec<(String, StringFilter)>,
}

impl MeterQueryBody {
    /// Apply the server's rules on filters (and the double's UTC-only rule).
    pub(crate) fn into_request(self) -> ApiResult<MeterQueryRequest> {
        let mut e = Errors::default();
        if self
            .time_zone
            .is_some_and(|tz| tz != "UTC" && tz != "Etc/UTC")
        {
            e.push(InvalidParam::invalid(
                "time_zone",
                "openmeter-double supports only the UTC time zone",
            ));
        }
        let mut group_by: Vec<String> = Vec::new();
        for g in self.group_by_dimensions {
            if !group_by.contains(&g) {
                group_by.push(g);
            }
        }
        let dimensions = self.filters.and_then(|f| f.dimensions).unwrap_or_default();
        let mut filters = Vec::with_capacity(dimensions.len());
        for (name, v) in dimensions {
            let path = format!("filters.dimensions.{name}");
            let item: FilterItem = decode(v, &path, "meter query")?;
            if let Some(f) = string_filter(&mut e, item, &path, 0, true) {
                filters.push((name, f));
            }
        }
        e.finish("meter query")?;
        Ok(MeterQueryRequest {
            from: self.from,
            to: self.to,
            window: self.granularity.as_deref().and_then(window),
            group_by,
            filters,
        })
    }
}

/// `subject` and `customer_id` take only `eq` or `in`
/// (`query/convert.go`, `ExtractStringsFromQueryFilterMapItem`).
fn eq_or_in(name: &str, f: StringFilter) -> ApiResult<Vec<String>> {
    match f {
        StringFilter::Eq(v) => Ok(vec![v]),
        StringFilter::In(vs) => Ok(vs),
        _ => Err(Problem::bad_request(
            "only eq and in filter operators are supported for this field",
            vec![InvalidParam::invalid(
                format!("filters.dimensions.{name}"),
                "only eq and in filter operators are supported for this field",
            )],
        )),
    }
}

fn is_dimension(meter: &Meter, name: &str) -> bool {
    meter
        .dimensions
        .as_ref()
        .is_some_and(|d| d.contains_key(name))
}

impl MeterQueryRequest {
    /// Check the request against the meter and build the query, as
    /// `BuildQueryParams` does: a subject or customer filter also groups by it.
    pub(crate) fn resolve(self, meter: &Meter) -> ApiResult<MeterQuery> {
        let mut q = MeterQuery {
            from: self.from,
            to: self.to,
            window: self.window,
            ..MeterQuery::default()
        };
        for g in self.group_by {
            if g != SUBJECT && g != CUSTOMER_ID && !is_dimension(meter, &g) {
                return Err(Problem::bad_request(
                    "invalid group by dimension",
                    vec![InvalidParam::invalid(
                        "group_by_dimensions",
                        format!("invalid group by dimension [value={g}]"),
                    )],
                ));
            }
            q.group_by.push(g);
        }
        for (name, f) in self.filters {
            let reserved = name == SUBJECT || name == CUSTOMER_ID;
            if reserved {
                let values = eq_or_in(&name, f)?;
                if !q.group_by.contains(&name) {
                    q.group_by.push(name.clone());
                }
                if name == SUBJECT {
                    q.subjects = values;
                } else {
                    q.customers = values;
                }
            } else if is_dimension(meter, &name) {
                q.dimension_filters.push((name, f));
            } else {
                return Err(Problem::bad_request(
                    "invalid dimension filter",
                    vec![InvalidParam::invalid(
                        format!("filters.dimensions.{name}"),
                        "invalid dimension filter",
                    )],
                ));
            }
        }
        Ok(q)
    }
}
