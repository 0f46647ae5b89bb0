//! HTTP handlers, one module per resource. Handlers parse and validate
//! outside the state lock, then do one short locked operation.

mod customers;
mod events;
mod features;
mod meter_query;
pub(crate) mod meters;
mod plans;
mod subscriptions;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::problem::Problem;
use crate::query::Page;
use crate::store::Store;

/// The routes under one prefix (`/api/v3` or `/v3`).
pub(crate) fn api() -> Router<Arc<Store>> {
    Router::new()
        .route(
            "/openmeter/customers",
            get(customers::list).post(customers::create),
        )
        .route("/openmeter/customers/{id}", get(customers::get_one))
        .route(
            "/openmeter/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route("/openmeter/subscriptions/{id}", get(subscriptions::get_one))
        .route(
            "/openmeter/subscriptions/{id}/cancel",
            post(subscriptions::cancel),
        )
        .route(
            "/openmeter/subscriptions/{id}/unschedule-cancelation",
            post(subscriptions::unschedule_cancelation),
        )
        .route("/openmeter/plans", get(plans::list).post(plans::create))
        .route("/openmeter/plans/{id}", get(plans::get_one))
        .route("/openmeter/plans/{id}/publish", post(plans::publish))
        .route("/openmeter/meters", get(meters::list).post(meters::create))
        .route("/openmeter/meters/{id}", get(meters::get_one))
        .route("/openmeter/meters/{id}/query", post(meter_query::query))
        .route(
            "/openmeter/features",
            get(features::list).post(features::create),
        )
        .route("/openmeter/features/{id}", get(features::get_one))
        .route("/openmeter/events", get(events::list).post(events::ingest))
}

/// Unknown paths: a 404 problem.
pub(crate) async fn fallback() -> Problem {
    Problem::not_found("no such route")
}

/// `201 Created` with a JSON body.
pub(crate) fn created<T: Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

/// One page of `items` as a `*PagePaginatedResponse`.
pub(crate) fn paged<T: Serialize + Clone>(items: Vec<&T>, page: Page) -> Response {
    paged_with(items, page, T::clone)
}

/// Like [`paged`], rendering only the page's items through `view` (for
/// fields computed at read time, such as a status).
pub(crate) fn paged_with<T, U: Serialize>(
    items: Vec<&T>,
    page: Page,
    view: impl Fn(&T) -> U,
) -> Response {
    let total = items.len();
    let start = (page.number - 1).saturating_mul(page.size).min(total);
    let end = start.saturating_add(page.size).min(total);
    let data: Vec<U> = items[start..end].iter().map(|t| view(t)).collect();
    let body = json!({
        "data": data,
        "meta": {"page": {"number": page.number, "size": page.size, "total": total}},
    });
    Json(body).into_response()
}

/// One page of a whole collection read in order (no filter: the page is a
/// slice, serialised straight from it, so reading 1M items a page at a
/// time stays linear).
pub(crate) fn paged_slice<'a, T, U: Serialize>(
    items: &'a [T],
    page: Page,
    view: impl Fn(&'a T) -> U,
) -> Response {
    #[derive(Serialize)]
    struct Body<U> {
        data: Vec<U>,
        meta: Meta,
    }
    #[derive(Serialize)]
    struct Meta {
        page: PageMeta,
    }
    #[derive(Serialize)]
    struct PageMeta {
        number: usize,
        size: usize,
        total: usize,
    }
    let total = items.len();
    let start = (page.number - 1).saturating_mul(page.size).min(total);
    let end = start.saturating_add(page.size).min(total);
    let body = Body {
        data: items[start..end].iter().map(view).collect(),
        meta: Meta {
            page: PageMeta {
                number: page.number,
                size: page.size,
                total,
            },
        },
    };
    Json(body).into_response()
}

/// The shared 404 for `GET /{resource}/{id}`.
pub(crate) fn missing(what: &str, id: &str) -> Problem {
    Problem::not_found(format!("{what} {id} not found"))
}
