use axum::body::Bytes;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::{created, missing, paged};
use crate::model::Feature;
use crate::problem::ApiResult;
use crate::query::{self, Kind};
use crate::state::NewFeature;
use crate::store::Store;
use crate::validate::{parse_object, Errors, Obj};

const FILTERS: &[(&str, Kind)] = &[
    ("key", Kind::String),
    ("name", Kind::String),
    ("meter_id", Kind::Exact),
];

const FIELDS: &[&str] = &["name", "labels", "key", "meter", "unit_cost"];

/// `FeatureMeterReference`: `{id, filters?}`.
fn meter_ref(e: &mut Errors, obj: &Obj) -> Option<Value> {
    let m = e.opt_object(obj, "", "meter")?;
    e.allow_only(m, "meter", &["id", "filters"]);
    e.req_str(m, "meter", "id", 1, 26);
    e.opt_object(m, "meter", "filters");
    Some(Value::Object(m.clone()))
}

/// `BillingFeatureUnitCost`: an object discriminated by `type`.
fn unit_cost(e: &mut Errors, obj: &Obj) -> Option<Value> {
    let u = e.opt_object(obj, "", "unit_cost")?;
    e.req_enum(u, "unit_cost", "type", &["manual", "llm"]);
    Some(Value::Object(u.clone()))
}

fn parse_new(body: &[u8]) -> ApiResult<NewFeature> {
    let obj = parse_object(body)?;
    let mut e = Errors::default();
    e.allow_only(&obj, "", FIELDS);
    let new = NewFeature {
        name: e.req_str(&obj, "", "name", 1, 256).unwrap_or_default(),
        key: e.req_resource_key(&obj, "", "key").unwrap_or_default(),
        labels: e.opt_labels(&obj, ""),
        meter: meter_ref(&mut e, &obj),
        unit_cost: unit_cost(&mut e, &obj),
    };
    e.finish("feature")?;
    Ok(new)
}

pub(crate) async fn create(State(store): State<Arc<Store>>, body: Bytes) -> ApiResult<Response> {
    let new = parse_new(&body)?;
    let feature = store.lock().create_feature(new)?;
    Ok(created(feature))
}

pub(crate) async fn get_one(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let state = store.lock();
    let feature = state.feature(&id).ok_or_else(|| missing("feature", &id))?;
    Ok(Json(feature).into_response())
}

fn field<'a>(f: &'a Feature, name: &str) -> Vec<&'a str> {
    match name {
        "key" => vec![f.key.as_str()],
        "name" => vec![f.name.as_str()],
        "meter_id" => f.meter_id().into_iter().collect(),
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
    let items: Vec<&Feature> = state
        .features
        .iter()
        .filter(|f| f.deleted_at.is_none())
        .filter(|f| query::matches_all(&q.filters, |n| field(f, n)))
        .collect();
    Ok(paged(items, page))
}
