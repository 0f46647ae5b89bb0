//! HTTP handlers, one module per resource. Handlers parse and validate
//! outside the state lock, then do one short locked operation.

mod customers;
mod events;
mod features;
mod meter_query;
pub(crate) mod meters;
mod plans;
mod respond;
mod subscriptions;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::store::Store;

pub(crate) use respond::fallback;

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
