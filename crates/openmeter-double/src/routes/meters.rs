use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::respond::{created, missing, paged};
use crate::model::Meter;
use crate::problem::{ApiResult, InvalidParam};
use crate::query::{self, Kind};
use crate::state::NewMeter;
use crate::store::Store;
use crate::validate::{self, Errors, Schema};

const FILTERS: &[(&str, Kind)] = &[("key", Kind::String), ("name", Kind::String)];

/// Read a `CreateMeterRequest` (also used by `Double::seed_meter`). Beyond
/// the spec, every aggregation but `count` needs a `value_property`
/// (`openmeter/meter/meter.go`, `validateMeterAggregation`).
pub(crate) fn parse_new(body: &[u8]) -> ApiResult<NewMeter> {
    let new: NewMeter = validate::body(body, Schema::CreateMeter, "meter")?;
    let mut e = Errors::default();
    if new.aggregation != "count" && new.value_property.is_none() {
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
