use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::respond::{created, missing, paged, paged_slice};
use crate::model::{Customer, Labels};
use crate::problem::ApiResult;
use crate::query::{self, Kind};
use crate::state::{NewCustomer, State as Data};
use crate::store::Store;
use crate::validate::{self, Schema};

const FILTERS: &[(&str, Kind)] = &[
    ("key", Kind::String),
    ("name", Kind::String),
    ("primary_email", Kind::String),
    ("usage_attribution_subject_key", Kind::String),
    ("plan_key", Kind::String),
    ("billing_profile_id", Kind::Exact),
];

/// A `CreateCustomerRequest` as the spec shapes it.
#[derive(Deserialize)]
struct CreateCustomer {
    name: String,
    key: String,
    labels: Option<Labels>,
    usage_attribution: Option<UsageAttribution>,
    primary_email: Option<String>,
    currency: Option<String>,
    billing_address: Option<Value>,
}

#[derive(Deserialize)]
struct UsageAttribution {
    subject_keys: Vec<String>,
}

impl From<CreateCustomer> for NewCustomer {
    fn from(c: CreateCustomer) -> Self {
        NewCustomer {
            name: c.name,
            key: c.key,
            labels: c.labels,
            subject_keys: c.usage_attribution.map(|u| u.subject_keys),
            primary_email: c.primary_email,
            currency: c.currency,
            billing_address: c.billing_address,
        }
    }
}

pub(crate) async fn create(State(store): State<Arc<Store>>, body: Bytes) -> ApiResult<Response> {
    let body: CreateCustomer = validate::body(&body, Schema::CreateCustomer, "customer")?;
    let customer = store.lock().create_customer(body.into())?;
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

/// Customers in the order they were made, which is id order (`new_id`):
/// `sort=id`, as the warm-up asks. Other sort fields are not modelled.
pub(crate) async fn list(
    State(store): State<Arc<Store>>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = query::parse(raw.as_deref(), FILTERS)?;
    let page = q.page()?;
    let state = store.lock();
    if q.filters.is_empty() && state.deleted_customers == 0 {
        return Ok(paged_slice(&state.customers, page, |c| c));
    }
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
