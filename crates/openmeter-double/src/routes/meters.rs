use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{created, missing, paged};
use crate::model::Meter;
use crate::problem::{ApiResult, InvalidParam};
use crate::query::{self, Kind};
use crate::state::NewMeter;
use crate::store::Store;
use crate::validate::{parse_object, Errors, Obj};

const FILTERS: &[(&str, Kind)] = &[("key", Kind::String), ("name", Kind::String)];

const FIELDS: &[&str] = &[
    "name",
    "labels",
    "key",
    "aggregation",
    "event_type",
    "events_from",
    "value_property",
    "dimensions",
];

const AGGREGATIONS: &[&str] = &[
    "sum",
    "count",
    "unique_count",
    "avg",
    "min",
    "max",
    "latest",
];

fn dimensions(e: &mut Errors, obj: &Obj) -> Option<BTreeMap<String, String>> {
    let dims = e.opt_object(obj, "", "dimensions")?;
    let mut out = BTreeMap::new();
    for (k, v) in dims {
        match v.as_str() {
            Some(s) => {
                out.insert(k.clone(), s.to_string());
            }
            None => e.push(InvalidParam::rule(
                format!("dimensions.{k}"),
                "is_string",
                "must be a string",
            )),
        }
    }
    Some(out)
}

/// Validate a `CreateMeterRequest` (also used by `Double::seed_meter`).
pub(crate) fn parse_new(body: &[u8]) -> ApiResult<NewMeter> {
    let obj = parse_object(body)?;
    let mut e = Errors::default();
    e.allow_only(&obj, "", FIELDS);
    let new = NewMeter {
        name: e.req_str(&obj, "", "name", 1, 256).unwrap_or_default(),
        key: e.req_resource_key(&obj, "", "key").unwrap_or_default(),
        labels: e.opt_labels(&obj, ""),
        aggregation: e
            .req_enum(&obj, "", "aggregation", AGGREGATIONS)
            .unwrap_or_default(),
        event_type: e
            .req_str(&obj, "", "event_type", 1, usize::MAX)
            .unwrap_or_default(),
        events_from: e.opt_datetime(&obj, "", "events_from"),
        value_property: e.opt_str(&obj, "", "value_property", 1, usize::MAX),
        dimensions: dimensions(&mut e, &obj),
    };
    let needs_value = !new.aggregation.is_empty() && new.aggregation != "count";
    if needs_value && new.value_property.is_none() && !obj.contains_key("value_property") {
        e.push(InvalidParam::required("value_property"));
    }
    e.finish("meter")?;
    Ok(new)
}

pub(crate) async fn create(State(store): State<Arc<Store>>, body: Bytes) -> ApiResult<Response> {
    let new = parse_new(&body)?;
    let meter = store.lock().create_meter(new)?;
    Ok(created(meter))
}

pub(crate) async fn get_one(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let state = store.lock();
    let meter = state.meter(&id).ok_or_else(|| missing("meter", &id))?;
    Ok(Json(meter).into_response())
}

fn field<'a>(m: &'a Meter, name: &str) -> Vec<&'a str> {
    match name {
        "key" => vec![m.key.as_str()],
        "name" => vec![m.name.as_str()],
        _ => Vec::new(),
    }
}

pub(crate) async fn list(
    State(store): State<Arc<Store>>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = query::parse(raw.as_deref(), FILTERS)?;
    let page = q.page()?;
    let state = store.lock();
    let items: Vec<&Meter> = state
        .meters
        .iter()
        .filter(|m| m.deleted_at.is_none())
        .filter(|m| query::matches_all(&q.filters, |f| field(m, f)))
        .collect();
    Ok(paged(items, page))
}
