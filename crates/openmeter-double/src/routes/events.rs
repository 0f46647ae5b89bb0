//! `POST /events` (CloudEvents ingest) and `GET /events` (cursor-paged list).

use std::ops::Bound::{Excluded, Included};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::problem::{ApiResult, InvalidParam, Problem};
use crate::query::{self, Filter, Kind, ListQuery, Op};
use crate::state::{State as Data, StoredEvent};
use crate::store::Store;
use crate::validate::{checker, malformed, parse_datetime, Checker, Schema};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Single,
    Batch,
    Either,
}

fn shape(headers: &HeaderMap) -> ApiResult<Shape> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/cloudevents+json" => Ok(Shape::Single),
        "application/cloudevents-batch+json" => Ok(Shape::Batch),
        "application/json" => Ok(Shape::Either),
        _ => Err(Problem::bad_request(
            format!("unsupported content type {ct:?}"),
            vec![InvalidParam::choice(
                "Content-Type",
                &[
                    "application/cloudevents+json",
                    "application/cloudevents-batch+json",
                    "application/json",
                ],
            )
            .from_source("header")],
        )),
    }
}

fn shape_error(reason: &str) -> Problem {
    Problem::bad_request(
        reason.to_string(),
        vec![InvalidParam::rule("body", "type", reason.to_string())],
    )
}

fn split_body(shape: Shape, body: Value) -> ApiResult<Vec<Value>> {
    match (shape, body) {
        (Shape::Batch | Shape::Either, Value::Array(items)) => Ok(items),
        (Shape::Single | Shape::Either, v @ Value::Object(_)) => Ok(vec![v]),
        (Shape::Batch, _) => Err(shape_error("a CloudEvents batch must be a JSON array")),
        _ => Err(shape_error("a CloudEvent must be a JSON object")),
    }
}

/// An event the spec refuses: the name the problem's detail gives it, and
/// what is wrong with it.
type Refused = (String, Vec<InvalidParam>);

/// An accepted event, with its `data` parsed.
type Accepted = (StoredEvent, Option<Value>);

/// Check one event against the spec's `MeteringEvent` and read it; its
/// problems are named under `[i]`, the event by its id (else `#i`).
fn to_event(check: &Checker, i: usize, v: Value) -> Result<Accepted, Refused> {
    if !check.is_valid(&v) {
        let name = match v.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => format!("#{i}"),
        };
        return Err((name, check.violations(&v, &format!("[{i}]"))));
    }
    // `data` moves as it is: reading it through serde would rebuild the map.
    let unreadable = |reason: String| {
        (
            format!("#{i}"),
            vec![InvalidParam::invalid(format!("[{i}]"), reason)],
        )
    };
    let Value::Object(mut fields) = v else {
        return Err(unreadable("must be an object".into()));
    };
    let data = fields.remove("data").filter(|d| !d.is_null());
    let mut ev: StoredEvent =
        serde_json::from_value(Value::Object(fields)).map_err(|e| unreadable(e.to_string()))?;
    if let Some(t) = &ev.time {
        let Some(time) = parse_datetime(t) else {
            let reason = "must be an RFC 3339 date-time";
            let param = InvalidParam::rule(format!("[{i}].time"), "is_date_time", reason);
            return Err((ev.id, vec![param]));
        };
        ev.time_ns = time.timestamp_nanos_opt();
    }
    ev.data = match &data {
        Some(d) => Some(serde_json::value::to_raw_value(d).map_err(|e| unreadable(e.to_string()))?),
        None => None,
    };
    Ok((ev, data))
}

/// Validate a whole batch; any invalid event fails the request.
fn validate_batch(items: Vec<Value>) -> ApiResult<Vec<Accepted>> {
    let check = checker(Schema::MeteringEvent)?;
    let mut errs = Vec::new();
    let mut bad_ids = Vec::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, v) in items.into_iter().enumerate() {
        match to_event(&check, i, v) {
            Ok(ev) => out.push(ev),
            Err((name, params)) => {
                bad_ids.push(name);
                errs.extend(params);
            }
        }
    }
    if errs.is_empty() {
        return Ok(out);
    }
    Err(Problem::bad_request(
        format!("invalid events: {}", bad_ids.join(", ")),
        errs,
    ))
}

/// 400 when the batch holds an id the test asked to reject.
fn rejected(state: &Data, batch: &[Accepted]) -> Option<Problem> {
    if state.rejected_event_ids.is_empty() {
        return None;
    }
    let hits: Vec<(usize, &str)> = batch
        .iter()
        .enumerate()
        .filter(|(_, (e, _))| state.rejected_event_ids.contains(&e.id))
        .map(|(i, (e, _))| (i, e.id.as_str()))
        .collect();
    if hits.is_empty() {
        return None;
    }
    let ids: Vec<&str> = hits.iter().map(|(_, id)| *id).collect();
    let params = hits
        .iter()
        .map(|(i, id)| InvalidParam::invalid(format!("[{i}].id"), format!("event {id} rejected")))
        .collect();
    Some(Problem::bad_request(
        format!("invalid events: {}", ids.join(", ")),
        params,
    ))
}

pub(crate) async fn ingest(
    State(store): State<Arc<Store>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let shape = shape(&headers)?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| malformed(&e))?;
    let batch = validate_batch(split_body(shape, value)?)?;
    let now = Utc::now();
    {
        let mut state = store.lock();
        if let Some(p) = rejected(&state, &batch) {
            return Err(p);
        }
        if store.faults.take_swallow() {
            state.claim_only(batch.iter().map(|(e, _)| e));
            return Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "writing the events failed after their ids were claimed (fault injected: openmeter#5118)",
            ));
        }
        state.ingest(batch, now);
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

// ---- listing ---------------------------------------------------------------

const FILTERS: &[(&str, Kind)] = &[
    ("id", Kind::String),
    ("source", Kind::String),
    ("subject", Kind::String),
    ("type", Kind::String),
    ("customer_id", Kind::Exact),
    ("time", Kind::DateTime),
    ("ingested_at", Kind::DateTime),
    ("stored_at", Kind::DateTime),
];

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A filter made ready to test many events: date-time bounds parsed once.
enum Test<'q> {
    /// `(event time or arrival time, operator, bound in ns)`.
    Time(TimeField, &'q Op, i64),
    Text(&'q Filter),
}

#[derive(Clone, Copy)]
enum TimeField {
    Event,
    Arrival,
}

fn compile(filters: &[Filter]) -> Vec<Test<'_>> {
    filters
        .iter()
        .map(|f| {
            let field = match f.field.as_str() {
                "time" => TimeField::Event,
                "ingested_at" | "stored_at" => TimeField::Arrival,
                _ => return Test::Text(f),
            };
            let bound = match &f.op {
                Op::Eq(v) | Op::Gt(v) | Op::Gte(v) | Op::Lt(v) | Op::Lte(v) => v,
                _ => return Test::Text(f),
            };
            let ns = parse_datetime(bound)
                .and_then(|t| t.timestamp_nanos_opt())
                .unwrap_or_default();
            Test::Time(field, &f.op, ns)
        })
        .collect()
}

fn text_field<'s>(state: &'s Data, idx: usize, name: &str) -> Option<&'s str> {
    let e = &state.events.deliveries[idx].event;
    match name {
        "id" => Some(&e.id),
        "source" => Some(&e.source),
        "subject" => Some(&e.subject),
        "type" => Some(&e.ty),
        "customer_id" => owner(state, idx).map(|c| state.customers[c].id.as_str()),
        _ => None,
    }
}

fn matches(state: &Data, idx: usize, tests: &[Test<'_>]) -> bool {
    let d = &state.events.deliveries[idx];
    tests.iter().all(|t| match t {
        Test::Time(field, op, bound) => {
            let value = match field {
                TimeField::Event => d.event.time_ns,
                TimeField::Arrival => d.received_at.timestamp_nanos_opt(),
            };
            value.is_some_and(|v| match op {
                Op::Eq(_) => v == *bound,
                Op::Gt(_) => v > *bound,
                Op::Gte(_) => v >= *bound,
                Op::Lt(_) => v < *bound,
                _ => v <= *bound,
            })
        }
        Test::Text(f) => match text_field(state, idx, &f.field) {
            Some(v) => f.op.matches(&[v]),
            None => f.op.matches(&[]),
        },
    })
}

/// The customer an event attributes to *now*: OpenMeter resolves it from
/// the subject when events are listed, not when they are ingested
/// (`openmeter/meterevent/adapter/event.go`, `enrichEventsWithCustomerID`),
/// so a customer created later claims earlier events and a deleted one
/// leaves its events without a customer.
fn owner(state: &Data, idx: usize) -> Option<usize> {
    state.subject_owner(&state.events.deliveries[idx].event.subject)
}

/// `sort`: `time`, `ingested_at` or `stored_at`, optional ` asc`/` desc`.
/// Omitted, or a field without a suffix, is descending
/// (`api/v3/handlers/events/convert.go`, `fromAPIEventSort`).
fn descending(sort: Option<&str>) -> ApiResult<bool> {
    let Some(s) = sort.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(true);
    };
    let mut parts = s.split_whitespace();
    let field = parts.next().unwrap_or("");
    let order = parts.next().unwrap_or("desc");
    if !matches!(field, "time" | "ingested_at" | "stored_at") || !matches!(order, "asc" | "desc") {
        return Err(Problem::bad_request(
            format!("unsupported sort {s:?}"),
            vec![InvalidParam::invalid("sort", "supported: time [asc|desc]").from_source("query")],
        ));
    }
    Ok(order == "desc")
}

/// Cursor = `"{sort_ns}:{delivery index}"` of the last item on the page.
fn parse_cursor(raw: &str) -> ApiResult<(i64, usize)> {
    raw.split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| {
            Problem::bad_request(
                "invalid cursor",
                vec![
                    InvalidParam::invalid("page[after]", "not a cursor from this server")
                        .from_source("query"),
                ],
            )
        })
}

fn item(state: &Data, idx: usize) -> Value {
    let d = &state.events.deliveries[idx];
    let at = rfc3339(d.received_at);
    let mut obj = json!({"event": &d.event, "ingested_at": at, "stored_at": at});
    match owner(state, idx) {
        Some(c) => obj["customer"] = json!({"id": state.customers[c].id}),
        // Code and message as `validateEvents` (meterevent/adapter/event.go)
        // and `toAPIMeteringIngestedEventValidationErrors`
        // (api/v3/handlers/events/convert.go) produce them.
        None => {
            obj["validation_errors"] = json!([{
                "code": "validation_error",
                "message": format!("no customer found for event subject: {}", d.event.subject),
            }])
        }
    }
    obj
}

/// `page[size]`: default 20, at most 100 (`api/v3/handlers/events/list.go`,
/// `meterevent.MaximumLimit`).
fn page_size(q: &ListQuery) -> ApiResult<usize> {
    const DEFAULT: usize = 20;
    const MAX: usize = 100;
    if q.page_size.is_none() {
        return Ok(DEFAULT);
    }
    let size = q.cursor_size()?;
    if size > MAX {
        return Err(Problem::bad_request(
            format!("page[size] must be between 1 and {MAX}"),
            vec![
                InvalidParam::invalid("page[size]", format!("must be between 1 and {MAX}"))
                    .from_source("query"),
            ],
        ));
    }
    Ok(size)
}

/// The events an `id` `eq`/`oeq` filter allows, from the id index; `None`
/// when no such filter narrows the listing.
fn id_candidates(state: &Data, filters: &[Filter]) -> Option<Vec<(i64, usize)>> {
    let ids: Vec<&str> = filters.iter().find_map(|f| match (&f.field[..], &f.op) {
        ("id", Op::Eq(v)) => Some(vec![v.as_str()]),
        ("id", Op::Oeq(vs)) => Some(vs.iter().map(String::as_str).collect()),
        _ => None,
    })?;
    let events = &state.events;
    let mut keys: Vec<(i64, usize)> = ids
        .iter()
        .filter_map(|id| events.by_id.get(*id))
        .flatten()
        .map(|&i| (events.deliveries[i].sort_ns(), i))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    Some(keys)
}

/// The `[lo, hi]` of event times (ns) the filters allow, for seeking.
fn time_bounds(tests: &[Test<'_>]) -> (i64, i64) {
    let (mut lo, mut hi) = (i64::MIN, i64::MAX);
    for t in tests {
        if let Test::Time(TimeField::Event, op, bound) = t {
            match op {
                Op::Eq(_) => (lo, hi) = (lo.max(*bound), hi.min(*bound)),
                Op::Gt(_) => lo = lo.max(bound.saturating_add(1)),
                Op::Gte(_) => lo = lo.max(*bound),
                Op::Lt(_) => hi = hi.min(bound.saturating_sub(1)),
                _ => hi = hi.min(*bound),
            }
        }
    }
    (lo, hi)
}

/// Walks the time index (or one subject's, when the filters name one)
/// from the cursor, within the filters' time bounds: a page costs what it
/// skips inside them.
fn walk(
    state: &Data,
    filters: &[Filter],
    tests: &[Test<'_>],
    after: Option<(i64, usize)>,
    desc: bool,
    size: usize,
) -> Vec<(i64, usize)> {
    let empty = std::collections::BTreeSet::new();
    let index = match query::eq_value(filters, "subject") {
        Some(subject) => state.events.by_subject.get(subject).unwrap_or(&empty),
        None => &state.events.by_time,
    };
    let (lo, hi) = time_bounds(tests);
    if lo > hi {
        return Vec::new();
    }
    let mut lower = Included((lo, 0));
    let mut upper = Included((hi, usize::MAX));
    match (after, desc) {
        (Some(c), true) if c < (hi, usize::MAX) => upper = Excluded(c),
        (Some(c), false) if c >= (lo, 0) => lower = Excluded(c),
        _ => {}
    }
    if after.is_some_and(|c| {
        if desc {
            c <= (lo, 0)
        } else {
            c >= (hi, usize::MAX)
        }
    }) {
        return Vec::new();
    }
    let range = index.range((lower, upper));
    let keep = |k: &&(i64, usize)| matches(state, k.1, tests);
    if desc {
        range.rev().filter(keep).take(size).copied().collect()
    } else {
        range.filter(keep).take(size).copied().collect()
    }
}

pub(crate) async fn list(
    State(store): State<Arc<Store>>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = query::parse(raw.as_deref(), FILTERS)?;
    let size = page_size(&q)?;
    let desc = descending(q.sort.as_deref())?;
    if q.page_before.is_some() {
        return Err(Problem::bad_request(
            "page[before] is not supported by the double",
            vec![InvalidParam::invalid("page[before]", "not supported").from_source("query")],
        ));
    }
    let after = q.page_after.as_deref().map(parse_cursor).transpose()?;
    let state = store.lock();
    let tests = compile(&q.filters);
    let keys = match id_candidates(&state, &q.filters) {
        Some(mut candidates) => {
            candidates.retain(|k| after.is_none_or(|c| if desc { *k < c } else { *k > c }));
            candidates.retain(|k| matches(&state, k.1, &tests));
            candidates.sort_unstable();
            if desc {
                candidates.reverse();
            }
            candidates.truncate(size);
            candidates
        }
        None => walk(&state, &q.filters, &tests, after, desc, size),
    };
    let page = &keys[..];
    // Like the server, a full page always carries a cursor, even when no
    // more events follow (`api/v3/response/cursorpagination.go`).
    let next = page
        .last()
        .filter(|_| page.len() == size)
        .map(|(ns, i)| format!("{ns}:{i}"));
    let data: Vec<Value> = page.iter().map(|&(_, i)| item(&state, i)).collect();
    let body =
        json!({"data": data, "meta": {"page": {"size": size, "next": next, "previous": null}}});
    Ok(Json(body).into_response())
}
