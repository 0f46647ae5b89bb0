use axum::body::Bytes;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::Value;

use super::{created, missing, paged_with};
use crate::model::Plan;
use crate::problem::{ApiResult, InvalidParam};
use crate::query::{self, Kind};
use crate::state::NewPlan;
use crate::store::Store;
use crate::validate::{parse_object, Errors, Obj};

const FILTERS: &[(&str, Kind)] = &[
    ("key", Kind::String),
    ("name", Kind::String),
    ("status", Kind::Exact),
    ("currency", Kind::Exact),
];

const FIELDS: &[&str] = &[
    "name",
    "labels",
    "key",
    "currency",
    "billing_cadence",
    "pro_rating_enabled",
    "phases",
];

const PHASE_FIELDS: &[&str] = &["name", "labels", "key", "duration", "rate_cards"];

const RATE_CARD_FIELDS: &[&str] = &[
    "name",
    "labels",
    "key",
    "feature",
    "currency",
    "billing_cadence",
    "price",
    "unit_config",
    "payment_term",
    "commitments",
    "discounts",
    "tax_config",
    "entitlement",
];

/// `BillingRateCard`: known fields only, required name/key/price; the
/// nested price and config objects are stored as given.
fn rate_card(e: &mut Errors, card: &Value, path: &str) {
    let Some(obj) = card.as_object() else {
        e.push(InvalidParam::rule(path, "is_object", "must be an object"));
        return;
    };
    e.allow_only(obj, path, RATE_CARD_FIELDS);
    e.req_str(obj, path, "name", 1, 256);
    e.req_resource_key(obj, path, "key");
    e.req_object(obj, path, "price");
    e.opt_labels(obj, path);
    e.opt_duration(obj, path, "billing_cadence");
    e.opt_object(obj, path, "feature");
}

/// `BillingPlanPhase`: required name, key, rate_cards.
fn phase(e: &mut Errors, phase: &Value, path: &str) {
    let Some(obj) = phase.as_object() else {
        e.push(InvalidParam::rule(path, "is_object", "must be an object"));
        return;
    };
    e.allow_only(obj, path, PHASE_FIELDS);
    e.req_str(obj, path, "name", 1, 256);
    e.req_resource_key(obj, path, "key");
    e.opt_labels(obj, path);
    e.opt_duration(obj, path, "duration");
    if let Some(cards) = e.req_array(obj, path, "rate_cards") {
        for (i, card) in cards.iter().enumerate() {
            rate_card(e, card, &format!("{path}.rate_cards[{i}]"));
        }
    }
}

fn phases(e: &mut Errors, obj: &Obj) -> Vec<Value> {
    let Some(list) = e.req_array(obj, "", "phases") else {
        return Vec::new();
    };
    if list.is_empty() {
        e.push(InvalidParam::min_items("phases", 1));
    }
    for (i, p) in list.iter().enumerate() {
        phase(e, p, &format!("phases[{i}]"));
    }
    list.clone()
}

fn parse_new(body: &[u8]) -> ApiResult<NewPlan> {
    let obj = parse_object(body)?;
    let mut e = Errors::default();
    e.allow_only(&obj, "", FIELDS);
    let new = NewPlan {
        name: e.req_str(&obj, "", "name", 1, 256).unwrap_or_default(),
        key: e.req_resource_key(&obj, "", "key").unwrap_or_default(),
        labels: e.opt_labels(&obj, ""),
        currency: e
            .currency(&obj, "", "currency", true, true)
            .unwrap_or_default(),
        billing_cadence: e
            .req_duration(&obj, "", "billing_cadence")
            .unwrap_or_default(),
        pro_rating_enabled: e.opt_bool(&obj, "", "pro_rating_enabled").unwrap_or(true),
        phases: phases(&mut e, &obj),
    };
    e.finish("plan")?;
    Ok(new)
}

pub(crate) async fn create(State(store): State<Arc<Store>>, body: Bytes) -> ApiResult<Response> {
    let new = parse_new(&body)?;
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
