use axum::body::Bytes;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::{created, missing, paged};
use crate::model::Customer;
use crate::problem::{ApiResult, InvalidParam};
use crate::query::{self, Kind};
use crate::state::{NewCustomer, State as Data};
use crate::store::Store;
use crate::validate::{join, parse_object, Errors, Obj};

const FILTERS: &[(&str, Kind)] = &[
    ("key", Kind::String),
    ("name", Kind::String),
    ("primary_email", Kind::String),
    ("usage_attribution_subject_key", Kind::String),
    ("plan_key", Kind::String),
    ("billing_profile_id", Kind::Exact),
];

const FIELDS: &[&str] = &[
    "name",
    "description",
    "labels",
    "key",
    "usage_attribution",
    "primary_email",
    "currency",
    "billing_address",
];

const ADDRESS_FIELDS: &[&str] = &[
    "country",
    "postal_code",
    "state",
    "city",
    "line1",
    "line2",
    "phone_number",
];

fn subject_keys(e: &mut Errors, obj: &Obj) -> Option<Vec<String>> {
    let ua = e.opt_object(obj, "", "usage_attribution")?;
    e.allow_only(ua, "usage_attribution", &["subject_keys"]);
    let keys = e.req_array(ua, "usage_attribution", "subject_keys")?;
    let mut out = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        match k.as_str() {
            Some(s) if !s.is_empty() => out.push(s.to_string()),
            Some(_) => e.push(InvalidParam::min_length(
                format!("usage_attribution.subject_keys[{i}]"),
                1,
            )),
            None => e.push(InvalidParam::rule(
                format!("usage_attribution.subject_keys[{i}]"),
                "is_string",
                "must be a string",
            )),
        }
    }
    Some(out)
}

fn address(e: &mut Errors, obj: &Obj) -> Option<Value> {
    let addr = e.opt_object(obj, "", "billing_address")?;
    e.allow_only(addr, "billing_address", ADDRESS_FIELDS);
    for f in ADDRESS_FIELDS {
        e.opt_str(addr, "billing_address", f, 0, usize::MAX);
    }
    if let Some(c) = e.opt_str(addr, "billing_address", "country", 0, usize::MAX) {
        if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            e.push(InvalidParam::rule(
                join("billing_address", "country"),
                "matches_regex",
                "must be an ISO 3166-1 alpha-2 code",
            ));
        }
    }
    Some(Value::Object(addr.clone()))
}

fn parse_new(body: &[u8]) -> ApiResult<NewCustomer> {
    let obj = parse_object(body)?;
    let mut e = Errors::default();
    e.allow_only(&obj, "", FIELDS);
    let new = NewCustomer {
        name: e.req_str(&obj, "", "name", 1, 256).unwrap_or_default(),
        key: e.req_str(&obj, "", "key", 1, 256).unwrap_or_default(),
        description: e.opt_str(&obj, "", "description", 0, 1024),
        labels: e.opt_labels(&obj, ""),
        subject_keys: subject_keys(&mut e, &obj),
        primary_email: e.opt_str(&obj, "", "primary_email", 0, usize::MAX),
        currency: e.currency(&obj, "", "currency", false, false),
        billing_address: address(&mut e, &obj),
    };
    e.finish("customer")?;
    Ok(new)
}

pub(crate) async fn create(State(store): State<Arc<Store>>, body: Bytes) -> ApiResult<Response> {
    let new = parse_new(&body)?;
    let customer = store.lock().create_customer(new)?;
    Ok(created(customer))
}

pub(crate) async fn get_one(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let state = store.lock();
    let c = state
        .customer(&id)
        .ok_or_else(|| missing("customer", &id))?;
    Ok(Json(c).into_response())
}

/// Plan keys of the customer's subscriptions (for `filter[plan_key]`).
fn plan_keys<'a>(s: &'a Data, c: &Customer) -> Vec<&'a str> {
    s.subscriptions
        .iter()
        .filter(|sub| sub.customer_id == c.id)
        .filter_map(|sub| sub.plan.as_ref().map(|p| p.key.as_str()))
        .collect()
}

fn field<'a>(s: &'a Data, c: &'a Customer, name: &str) -> Vec<&'a str> {
    match name {
        "key" => vec![c.key.as_str()],
        "name" => vec![c.name.as_str()],
        "primary_email" => c.primary_email.as_deref().into_iter().collect(),
        "usage_attribution_subject_key" => c.subject_keys().iter().map(String::as_str).collect(),
        "plan_key" => plan_keys(s, c),
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
    let candidates: Box<dyn Iterator<Item = &Customer>> = match query::eq_value(&q.filters, "key") {
        Some(key) => Box::new(state.customer_by_key(key).into_iter()),
        None => Box::new(state.customers.iter()),
    };
    let items: Vec<&Customer> = candidates
        .filter(|c| c.deleted_at.is_none())
        .filter(|c| query::matches_all(&q.filters, |f| field(&state, c, f)))
        .collect();
    Ok(paged(items, page))
}
