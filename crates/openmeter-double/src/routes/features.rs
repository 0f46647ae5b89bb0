use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::respond::{created, missing, paged};
use crate::model::Feature;
use crate::problem::ApiResult;
use crate::query::{self, Kind};
use crate::state::NewFeature;
use crate::store::Store;
use crate::validate::{self, Schema};

const FILTERS: &[(&str, Kind)] = &[
    ("key", Kind::String),
    ("name", Kind::String),
    ("meter_id", Kind::Exact),
];

pub(crate) async fn create(State(store): State<Arc<Store>>, body: Bytes) -> ApiResult<Response> {
    let new: NewFeature = validate::body(&body, Schema::CreateFeature, "feature")?;
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
