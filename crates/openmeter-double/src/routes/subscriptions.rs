use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::respond::{created, missing, paged_slice, paged_with};
use crate::model::{Labels, Subscription};
use crate::problem::{ApiResult, InvalidParam};
use crate::query::{self, Kind};
use crate::state::{CancelTiming, NewSubscription, PlanSelector};
use crate::store::Store;
use crate::validate::{self, parse_datetime, Errors, Schema};

const FILTERS: &[(&str, Kind)] = &[
    ("id", Kind::Exact),
    ("customer_id", Kind::Exact),
    ("status", Kind::Exact),
    ("plan_id", Kind::Exact),
    ("plan_key", Kind::Exact),
];

/// A `BillingSubscriptionCreate` as the spec shapes it.
#[derive(Deserialize)]
struct CreateSubscription {
    customer: Ref,
    plan: PlanRef,
    labels: Option<Labels>,
    billing_anchor: Option<DateTime<Utc>>,
    settlement_mode: Option<String>,
    cost_basis_mode: Option<String>,
}

#[derive(Deserialize)]
struct Ref {
    id: Option<String>,
    key: Option<String>,
}

#[derive(Deserialize)]
struct PlanRef {
    id: Option<String>,
    key: Option<String>,
    version: Option<Value>,
}

/// The 400 `api/v3/handlers/subscriptions/create.go` answers when a
/// reference names neither an id nor a key.
fn id_or_key(e: &mut Errors, what: &str) {
    let reason = format!("one of {what}.id or {what}.key is required");
    for field in ["id", "key"] {
        e.push(InvalidParam::rule(
            format!("{what}.{field}"),
            "required",
            reason.clone(),
        ));
    }
}

/// The plan version, a positive integer that fits a `u32`.
fn version(e: &mut Errors, version: Option<Value>) -> Option<u32> {
    let v = version?;
    let n = v
        .as_u64()
        .filter(|n| *n >= 1)
        .and_then(|n| u32::try_from(n).ok());
    if n.is_none() {
        e.push(InvalidParam::rule(
            "plan.version",
            "is_integer",
            "must be an integer >= 1",
        ));
    }
    n
}

fn plan_selector(e: &mut Errors, plan: PlanRef) -> Option<PlanSelector> {
    let version = version(e, plan.version);
    match (plan.id, plan.key) {
        (Some(id), _) => Some(PlanSelector::Id(id)),
        (None, Some(key)) => Some(PlanSelector::Key { key, version }),
        (None, None) => {
            id_or_key(e, "plan");
            None
        }
    }
}

fn parse_new(body: &[u8]) -> ApiResult<NewSubscription> {
    let body: CreateSubscription =
        validate::body(body, Schema::CreateSubscription, "subscription")?;
    let mut e = Errors::default();
    if body.customer.id.is_none() && body.customer.key.is_none() {
        id_or_key(&mut e, "customer");
    }
    let plan = plan_selector(&mut e, body.plan);
    e.finish("subscription")?;
    Ok(NewSubscription {
        customer_id: body.customer.id,
        customer_key: body.customer.key,
        plan: plan.unwrap_or(PlanSelector::Id(String::new())),
        labels: body.labels,
        billing_anchor: body.billing_anchor,
        settlement_mode: body.settlement_mode,
        cost_basis_mode: body.cost_basis_mode,
    })
}

pub(crate) async fn create(State(store): State<Arc<Store>>, body: Bytes) -> ApiResult<Response> {
    let new = parse_new(&body)?;
    let sub = store.lock().create_subscription(new)?;
    Ok(created(sub))
}

pub(crate) async fn get_one(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let state = store.lock();
    let sub = state
        .subscription(&id)
        .ok_or_else(|| missing("subscription", &id))?;
    Ok(Json(sub.observed_at(Utc::now())).into_response())
}

/// A `BillingSubscriptionCancel` as the spec shapes it.
#[derive(Deserialize)]
struct Cancel {
    timing: Option<String>,
}

/// `timing` is an RFC 3339 instant, `immediate` (the default) or
/// `next_billing_cycle` (the spec's `oneOf` has checked which); the instant
/// is tried first, as `api/v3/handlers/subscriptions/convert.go` does.
fn parse_cancel(body: &[u8]) -> ApiResult<CancelTiming> {
    let cancel: Cancel = validate::body(body, Schema::CancelSubscription, "cancelation")?;
    let Some(timing) = cancel.timing else {
        return Ok(CancelTiming::Immediate);
    };
    if let Some(at) = parse_datetime(&timing) {
        return Ok(CancelTiming::At(at));
    }
    match timing.as_str() {
        "next_billing_cycle" => Ok(CancelTiming::NextBillingCycle),
        _ => Ok(CancelTiming::Immediate),
    }
}

pub(crate) async fn cancel(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let timing = parse_cancel(&body)?;
    let sub = store.lock().cancel_subscription(&id, timing)?;
    Ok(Json(sub).into_response())
}

pub(crate) async fn unschedule_cancelation(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let sub = store.lock().continue_subscription(&id)?;
    Ok(Json(sub).into_response())
}

fn field<'a>(s: &'a Subscription, name: &str) -> Vec<&'a str> {
    let plan = s.plan.as_ref();
    match name {
        "id" => vec![s.id.as_str()],
        "customer_id" => vec![s.customer_id.as_str()],
        "status" => vec![s.status_at(Utc::now())],
        "plan_id" => plan.map(|p| p.id.as_str()).into_iter().collect(),
        "plan_key" => plan.map(|p| p.key.as_str()).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// Subscriptions in the order they were made, which is id order
/// (`new_id`): `sort=id`, as the warm-up asks. Other sort fields are not
/// modelled.
pub(crate) async fn list(
    State(store): State<Arc<Store>>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = query::parse(raw.as_deref(), FILTERS)?;
    let page = q.page()?;
    let state = store.lock();
    let now = Utc::now();
    if q.filters.is_empty() {
        return Ok(paged_slice(&state.subscriptions, page, |s| {
            s.observed_at(now)
        }));
    }
    let candidates: Box<dyn Iterator<Item = &Subscription>> =
        match query::eq_value(&q.filters, "customer_id") {
            Some(id) => Box::new(state.customer_subscriptions(id)),
            None => Box::new(state.subscriptions.iter()),
        };
    let items: Vec<&Subscription> = candidates
        .filter(|s| query::matches_all(&q.filters, |f| field(s, f)))
        .collect();
    let now = Utc::now();
    Ok(paged_with(items, page, |s| s.observed_at(now)))
}
