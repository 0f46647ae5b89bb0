//! `POST /meters/{meterId}/query`: usage of a meter, as the real server
//! answers it (`api/v3/handlers/meters/query.go`, `query/params.go`).
//!
//! The counting itself lives in `state/usage.rs`. Deviations, on purpose:
//! only the UTC time zone is supported (anything else is a 400 saying so), and
//! the `text/csv` representation is not offered (always JSON).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::missing;
use crate::model::Meter;
use crate::problem::{ApiResult, InvalidParam, Problem};
use crate::state::{MeterQuery, StringFilter, UsageRow, Window, CUSTOMER_ID, SUBJECT};
use crate::store::Store;
use crate::validate::{parse_object, Errors, Obj};

const FIELDS: &[&str] = &[
    "from",
    "to",
    "granularity",
    "time_zone",
    "group_by_dimensions",
    "filters",
];
const MAP_ITEM_FIELDS: &[&str] = &[
    "exists",
    "eq",
    "neq",
    "in",
    "nin",
    "contains",
    "ncontains",
    "and",
    "or",
];
const GRANULARITIES: &[&str] = &["PT1M", "PT1H", "P1D", "P1M"];
/// `maxGroupByFilterComplexityDepth` in `query/params.go`.
const MAX_FILTER_DEPTH: usize = 2;

/// A `MeterQueryRequest` before it meets its meter.
struct Request {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    window: Option<Window>,
    group_by: Vec<String>,
    filters: Vec<(String, StringFilter)>,
}

fn window(s: &str) -> Option<Window> {
    match s {
        "PT1M" => Some(Window::Minute),
        "PT1H" => Some(Window::Hour),
        "P1D" => Some(Window::Day),
        "P1M" => Some(Window::Month),
        _ => None,
    }
}

fn time_zone(e: &mut Errors, obj: &Obj) {
    let tz = e.opt_str(obj, "", "time_zone", 0, usize::MAX);
    if tz.is_some_and(|tz| tz != "UTC" && tz != "Etc/UTC") {
        e.push(InvalidParam::invalid(
            "time_zone",
            "openmeter-double supports only the UTC time zone",
        ));
    }
}

fn group_by(e: &mut Errors, obj: &Obj) -> Vec<String> {
    let Some(list) = obj.get("group_by_dimensions") else {
        return Vec::new();
    };
    let Some(items) = list.as_array() else {
        e.push(InvalidParam::rule(
            "group_by_dimensions",
            "is_array",
            "must be an array",
        ));
        return Vec::new();
    };
    if items.len() > 100 {
        e.push(InvalidParam::invalid(
            "group_by_dimensions",
            "at most 100 items",
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, v) in items.iter().enumerate() {
        match v.as_str() {
            Some(s) if !out.iter().any(|o| o == s) => out.push(s.to_string()),
            Some(_) => {}
            None => e.push(InvalidParam::rule(
                format!("group_by_dimensions[{i}]"),
                "is_string",
                "must be a string",
            )),
        }
    }
    out
}

fn strings(e: &mut Errors, v: &Value, path: &str) -> Option<Vec<String>> {
    let Some(items) = v.as_array() else {
        e.push(InvalidParam::rule(path, "is_array", "must be an array"));
        return None;
    };
    if items.is_empty() || items.len() > 100 {
        e.push(InvalidParam::invalid(path, "must have 1 to 100 items"));
        return None;
    }
    let out: Option<Vec<String>> = items
        .iter()
        .map(|i| i.as_str().map(str::to_string))
        .collect();
    if out.is_none() {
        e.push(InvalidParam::rule(
            path,
            "is_string",
            "items must be strings",
        ));
    }
    out
}

fn filter_list(e: &mut Errors, v: &Value, path: &str, depth: usize) -> Option<Vec<StringFilter>> {
    if depth >= MAX_FILTER_DEPTH {
        e.push(InvalidParam::invalid(
            path,
            "filter complexity exceeds maximum allowed depth",
        ));
        return None;
    }
    let Some(items) = v.as_array().filter(|a| (1..=10).contains(&a.len())) else {
        e.push(InvalidParam::invalid(
            path,
            "must be an array of 1 to 10 filters",
        ));
        return None;
    };
    items
        .iter()
        .enumerate()
        .map(|(i, f)| string_filter(e, f, &format!("{path}[{i}]"), depth + 1, false))
        .collect::<Option<Vec<_>>>()
}

/// A `QueryFilterStringMapItem` (or, nested, a `QueryFilterString`). Exactly
/// one operator (`pkg/filter/filter.go`, `validateSingleOperator`); an empty
/// value is "filter is invalid: format mismatch".
fn string_filter(
    e: &mut Errors,
    v: &Value,
    path: &str,
    depth: usize,
    top: bool,
) -> Option<StringFilter> {
    let Some(obj) = v.as_object() else {
        e.push(InvalidParam::rule(path, "is_object", "must be an object"));
        return None;
    };
    let allowed = if top {
        MAP_ITEM_FIELDS
    } else {
        &MAP_ITEM_FIELDS[1..]
    };
    e.allow_only(obj, path, allowed);
    let mut ops = obj.iter().filter(|(k, _)| allowed.contains(&k.as_str()));
    let Some((op, value)) = ops.next() else {
        if !top {
            e.push(InvalidParam::invalid(
                path,
                "a nested filter needs an operator",
            ));
        }
        return None;
    };
    if ops.next().is_some() {
        e.push(InvalidParam::invalid(
            path,
            "filter is invalid: multiple operators are set",
        ));
        return None;
    }
    let at = format!("{path}.{op}");
    let text = |e: &mut Errors| match value.as_str() {
        Some("") => {
            e.push(InvalidParam::invalid(
                &at,
                "filter is invalid: format mismatch",
            ));
            None
        }
        Some(s) => Some(s.to_string()),
        None => {
            e.push(InvalidParam::rule(&at, "is_string", "must be a string"));
            None
        }
    };
    match op.as_str() {
        "eq" => text(e).map(StringFilter::Eq),
        "neq" => text(e).map(StringFilter::Neq),
        "contains" => text(e).map(StringFilter::Contains),
        "ncontains" => text(e).map(StringFilter::Ncontains),
        "in" => strings(e, value, &at).map(StringFilter::In),
        "nin" => strings(e, value, &at).map(StringFilter::Nin),
        "and" => filter_list(e, value, &at, depth).map(StringFilter::And),
        "or" => filter_list(e, value, &at, depth).map(StringFilter::Or),
        _ => match value.as_bool() {
            Some(b) => Some(StringFilter::Exists(b)),
            None => {
                e.push(InvalidParam::rule(&at, "is_boolean", "must be a boolean"));
                None
            }
        },
    }
}

fn filters(e: &mut Errors, obj: &Obj) -> Vec<(String, StringFilter)> {
    let Some(f) = e.opt_object(obj, "", "filters") else {
        return Vec::new();
    };
    e.allow_only(f, "filters", &["dimensions"]);
    let Some(dims) = e.opt_object(f, "filters", "dimensions") else {
        return Vec::new();
    };
    if dims.len() > 10 {
        e.push(InvalidParam::invalid(
            "filters.dimensions",
            "at most 10 dimensions",
        ));
    }
    dims.iter()
        .filter_map(|(name, v)| {
            let path = format!("filters.dimensions.{name}");
            string_filter(e, v, &path, 0, true).map(|f| (name.clone(), f))
        })
        .collect()
}

fn parse(body: &[u8]) -> ApiResult<Request> {
    let obj = parse_object(body)?;
    let mut e = Errors::default();
    e.allow_only(&obj, "", FIELDS);
    let from = e.opt_datetime(&obj, "", "from");
    let to = e.opt_datetime(&obj, "", "to");
    let window = e
        .opt_enum(&obj, "", "granularity", GRANULARITIES)
        .and_then(|g| window(&g));
    time_zone(&mut e, &obj);
    let group_by = group_by(&mut e, &obj);
    let filters = filters(&mut e, &obj);
    e.finish("meter query")?;
    Ok(Request {
        from,
        to,
        window,
        group_by,
        filters,
    })
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

/// Check the request against the meter and build the query, as
/// `BuildQueryParams` does: a subject or customer filter also groups by it.
fn resolve(meter: &Meter, req: Request) -> ApiResult<MeterQuery> {
    let mut q = MeterQuery {
        from: req.from,
        to: req.to,
        window: req.window,
        ..MeterQuery::default()
    };
    for g in req.group_by {
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
    for (name, f) in req.filters {
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

fn row(r: UsageRow) -> Value {
    json!({
        "value": r.value.normalize().to_string(),
        "from": r.from,
        "to": r.to,
        "dimensions": r.dimensions,
    })
}

pub(crate) async fn query(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req = parse(&body)?;
    let (from, to) = (req.from, req.to);
    let rows = {
        let state = store.lock();
        let meter = state
            .meter_by_id_or_key(&id)
            .ok_or_else(|| missing("meter", &id))?;
        let q = resolve(meter, req)?;
        state.query_meter(meter, &q)?
    };
    let mut body = json!({"data": rows.into_iter().map(row).collect::<Vec<_>>()});
    if let Some(from) = from {
        body["from"] = json!(from);
    }
    if let Some(to) = to {
        body["to"] = json!(to);
    }
    Ok(Json(body).into_response())
}
