use axum::body::Bytes;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::Value;

use super::{created, missing, paged_with};
use crate::model::Subscription;
use crate::problem::{ApiResult, InvalidParam};
use crate::query::{self, Kind};
use crate::state::{CancelTiming, NewSubscription, PlanSelector};
use crate::store::Store;
use crate::validate::{parse_datetime, parse_object, Errors, Obj};

const FILTERS: &[(&str, Kind)] = &[
    ("id", Kind::Exact),
    ("customer_id", Kind::Exact),
    ("status", Kind::Exact),
    ("plan_id", Kind::Exact),
    ("plan_key", Kind::Exact),
];

const FIELDS: &[&str] = &[
    "labels",
    "settlement_mode",
    "customer",
    "plan",
    "billing_anchor",
    "cost_basis_mode",
];

fn customer_ref(e: &mut Errors, obj: &Obj) -> (Option<String>, Option<String>) {
    let Some(c) = e.req_object(obj, "", "customer") else {
        return (None, None);
    };
    e.allow_only(c, "customer", &["id", "key"]);
    let id = e.opt_str(c, "customer", "id", 1, 26);
    let key = e.opt_str(c, "customer", "key", 1, 256);
    if id.is_none() && key.is_none() && !c.contains_key("id") && !c.contains_key("key") {
        e.push(InvalidParam::required("customer.id"));
    }
    (id, key)
}

fn version(e: &mut Errors, plan: &Obj) -> Option<u32> {
    match plan.get("version") {
        None | Some(Value::Null) => None,
        Some(v) => {
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
    }
}

fn plan_ref(e: &mut Errors, obj: &Obj) -> Option<PlanSelector> {
    let p = e.req_object(obj, "", "plan")?;
    e.allow_only(p, "plan", &["id", "key", "version"]);
    let id = e.opt_str(p, "plan", "id", 1, 26);
    let key = e.opt_resource_key(p, "plan", "key");
    let version = version(e, p);
    match (id, key) {
        (Some(id), _) => Some(PlanSelector::Id(id)),
        (None, Some(key)) => Some(PlanSelector::Key { key, version }),
        (None, None) => {
            if !p.contains_key("id") && !p.contains_key("key") {
                e.push(InvalidParam::required("plan.id"));
            }
            None
        }
    }
}

fn parse_new(body: &[u8]) -> ApiResult<NewSubscription> {
    let obj = parse_object(body)?;
    let mut e = Errors::default();
    e.allow_only(&obj, "", FIELDS);
    let (customer_id, customer_key) = customer_ref(&mut e, &obj);
    let plan = plan_ref(&mut e, &obj);
    let labels = e.opt_labels(&obj, "");
    let billing_anchor = e.opt_datetime(&obj, "", "billing_anchor");
    let settlement_mode = e.opt_enum(
        &obj,
        "",
        "settlement_mode",
        &["credit_then_invoice", "credit_only"],
    );
    let cost_basis_mode = e.opt_enum(&obj, "", "cost_basis_mode", &["dynamic", "pinned"]);
    e.finish("subscription")?;
    Ok(NewSubscription {
        customer_id,
        customer_key,
        plan: plan.unwrap_or(PlanSelector::Id(String::new())),
        labels,
        billing_anchor,
        settlement_mode,
        cost_basis_mode,
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

/// `BillingSubscriptionCancel`: `timing` is an RFC 3339 instant or
/// `immediate` (the default) or `next_billing_cycle`; the instant is tried
/// first, as `api/v3/handlers/subscriptions/convert.go` does.
fn parse_cancel(body: &[u8]) -> ApiResult<CancelTiming> {
    let obj = parse_object(body)?;
    let mut e = Errors::default();
    e.allow_only(&obj, "", &["timing"]);
    let timing = e.opt_str(&obj, "", "timing", 1, usize::MAX);
    let parsed = match timing.as_deref() {
        None | Some("immediate") => Some(CancelTiming::Immediate),
        Some("next_billing_cycle") => Some(CancelTiming::NextBillingCycle),
        Some(t) => parse_datetime(t).map(CancelTiming::At),
    };
    if parsed.is_none() {
        e.push(InvalidParam::invalid(
            "timing",
            "must be immediate, next_billing_cycle or an RFC 3339 date-time",
        ));
    }
    e.finish("cancelation")?;
    Ok(parsed.unwrap_or(CancelTiming::Immediate))
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

pub(crate) async fn list(
    State(store): State<Arc<Store>>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = query::parse(raw.as_deref(), FILTERS)?;
    let page = q.page()?;
    let state = store.lock();
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
