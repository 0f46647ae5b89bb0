//! `POST /meters/{meterId}/query`: usage of a meter, as the real server
//! answers it (`api/v3/handlers/meters/query.go`). The body is read and
//! checked in `state/meter_query.rs`, counted in `state/usage.rs`. The
//! `text/csv` representation is not offered (always JSON).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::respond::missing;
use crate::problem::{ApiResult, InvalidParam, Problem};
use crate::state::{MeterQueryBody, UsageRow};
use crate::store::Store;
use crate::validate::{self, Schema};

/// The value as the v3 API writes it: the float64's shortest decimal
/// (`api/v3/handlers/meters/convert.go`, `ToAPIMeterQueryRow`), never in
/// exponent form (Rust's `Display` for `f64` is the same shortest decimal).
fn row(r: UsageRow) -> Value {
    json!({
        "value": r.reported.to_string(),
        "from": r.from,
        "to": r.to,
        "dimensions": r.dimensions,
    })
}

/// The spec's `ULID` pattern, `^[0-7][0-9A-HJKMNP-TV-Z]{25}$`.
fn is_ulid(id: &str) -> bool {
    id.len() == 26
        && id.starts_with(|c: char| ('0'..='7').contains(&c))
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b)))
}

pub(crate) async fn query(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    // The path's `meterId` is a `ULID` in the spec, and the server checks
    // every request against it before any handler runs (kin-openapi,
    // `api/v3/server/server.go`): a meter key is refused here, though the
    // handler behind would resolve one (`GetMeterByIDOrSlug`).
    if !is_ulid(&id) {
        return Err(Problem::bad_request(
            "invalid path parameter meterId",
            vec![InvalidParam::invalid("meterId", "must be a ULID").from_source("path")],
        ));
    }
    let body: MeterQueryBody = validate::body(&body, Schema::MeterQuery, "meter query")?;
    let req = body.into_request()?;
    let (rows, from, to) = {
        let state = store.lock();
        let meter = state
            .meter_by_id_or_key(&id)
            .ok_or_else(|| missing("meter", &id))?;
        let q = req.resolve(meter)?;
        let decimal = store.config.decimal_precision;
        (state.query_meter(meter, &q, decimal)?, q.from, q.to)
    };
    let mut body = json!({"data": rows.into_iter().map(row).collect::<Vec<_>>()});
    if let Some(from) = from {
        body["from"] = json!(from);
    }
    if let Some(to) = to {
        body["to"] = json!(to);
    }
    Ok(Json(body).into_response())
}
