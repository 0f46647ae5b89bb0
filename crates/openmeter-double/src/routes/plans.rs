use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;

use super::respond::{created, missing, paged_with};
use crate::model::Plan;
use crate::problem::ApiResult;
use crate::query::{self, Kind};
use crate::state::NewPlan;
use crate::store::Store;
use crate::validate::{self, Schema};

const FILTERS: &[(&str, Kind)] = &[
    ("key", Kind::String),
    ("name", Kind::String),
    ("status", Kind::Exact),
    ("currency", Kind::Exact),
];

pub(crate) async fn create(State(store): State<Arc<Store>>, body: Bytes) -> ApiResult<Response> {
    let new: NewPlan = validate::body(&body, Schema::CreatePlan, "plan")?;
    let plan = store.lock().create_plan(new)?;
    Ok(created(plan))
}

pub(crate) async fn get_one(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let state = store.lock();
    let plan = state.plan(&id).ok_or_else(|| missing("plan", &id))?;
    Ok(Json(plan.observed_at(Utc::now())).into_response())
}

pub(crate) async fn publish(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let plan = store.lock().publish_plan(&id)?;
    Ok(Json(plan).into_response())
}

fn field<'a>(p: &'a Plan, name: &str) -> Vec<&'a str> {
    match name {
        "key" => vec![p.key.as_str()],
        "name" => vec![p.name.as_str()],
        "status" => vec![p.status_at(Utc::now())],
        "currency" => vec![p.currency.as_str()],
        _ => Vec::new(),
    }
}

/// Deleted plans are listed too (with `deleted_at`), so clients must skip them.
pub(crate) async fn list(
    State(store): State<Arc<Store>>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = query::parse(raw.as_deref(), FILTERS)?;
    let page = q.page()?;
    let state = store.lock();
    let items: Vec<&Plan> = state
        .plans
        .iter()
        .filter(|p| query::matches_all(&q.filters, |f| field(p, f)))
        .collect();
    let now = Utc::now();
    Ok(paged_with(items, page, |p| p.observed_at(now)))
}
