//! The middleware every request passes: count, authenticate, inject faults,
//! then render problems (which need the request path as `instance`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::faults::Action;
use crate::network::RetryAfterForm;
use crate::problem::{PendingProblem, Problem};
use crate::route::Route;
use crate::store::Store;

/// Response extension telling the server to close the connection instead of
/// answering (see `server.rs`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

fn is_write(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn authorized(store: &Store, req: &Request) -> bool {
    let Some(token) = &store.config.token else {
        return true;
    };
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    header
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == token)
}

fn injected(status: u16, retry_after: Option<u64>) -> Problem {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut p = Problem::new(status, "fault injected by openmeter-double");
    p.retry_after = retry_after;
    p
}

/// A gateway's 429: `Retry-After` says when a token is free, rounded up
/// to whole seconds, in the form the network is set to use.
fn rate_limited(wait: Duration, form: RetryAfterForm) -> RateLimited {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    RateLimited { secs, form }
}

struct RateLimited {
    secs: u64,
    form: RetryAfterForm,
}

impl RateLimited {
    fn render(self, path: &str) -> Response {
        let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
        p.retry_after = Some(self.secs);
        let mut resp = p.render(path);
        if self.form == RetryAfterForm::HttpDate {
            let at = chrono::Utc::now() + chrono::TimeDelta::seconds(self.secs as i64);
            let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            if let Ok(value) = HeaderValue::from_str(&date) {
                resp.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        resp
    }
}

pub(crate) async fn gate(State(store): State<Arc<Store>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let route = Route::classify(req.method(), &path);
    // A meter query is a POST that changes nothing: not a write to save.
    let write = is_write(req.method()) && route != Some(Route::QueryMeter);
    store.counters.record(route, write);
    let round_trip = store.network.delay();
    if !round_trip.is_zero() {
        tokio::time::sleep(round_trip).await;
    }
    if let Some((wait, form)) = store.network.admit() {
        return rate_limited(wait, form).render(&path);
    }
    if !authorized(&store, &req) {
        let mut resp =
            Problem::new(StatusCode::UNAUTHORIZED, "missing or invalid bearer token").render(&path);
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    if let Some(r) = route {
        let (action, latency) = store.faults.take(r);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match action {
            Action::Pass => {}
            Action::Fail {
                status,
                retry_after,
            } => return injected(status, retry_after).render(&path),
            Action::Drop => {
                let mut resp = StatusCode::SERVICE_UNAVAILABLE.into_response();
                resp.extensions_mut().insert(DropConnection);
                return resp;
            }
        }
    }
    finish(next.run(req).await, &path)
}

/// Render pending problems; turn axum's bare 405 into a problem.
fn finish(mut resp: Response, path: &str) -> Response {
    if let Some(PendingProblem(p)) = resp.extensions_mut().remove::<PendingProblem>() {
        return p.render(path);
    }
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        let allow = resp.headers().get(header::ALLOW).cloned();
        let mut out =
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed").render(path);
        if let Some(a) = allow {
            out.headers_mut().insert(header::ALLOW, a);
        }
        return out;
    }
    resp
}
