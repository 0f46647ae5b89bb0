//! The answers handlers share: created, a page, a missing resource, an
//! unknown route.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use crate::problem::Problem;
use crate::query::Page;

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
