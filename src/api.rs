//! The provisioning API, compatible with the original Go sidecar:
//! `POST /ensure`, `GET /health`; plus `GET /ready` and `GET /metrics`.
//! Every error is JSON `{"error": "..."}` with a 4xx/5xx status.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::contract::SubjectRule;
use crate::domain::{Identity, IdentityClaim, IdentityError};
use crate::ensure::{EnsureError, Provisioner};
use crate::metrics::metrics;
use crate::openmeter::ErrorClass;
use crate::secret::{ExposeSecret, Secret};
use subtle::ConstantTimeEq;

/// Largest `/ensure` body accepted; a real one is under 1 KiB.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// A readiness probe, supplied by whoever runs the API.
pub(crate) type ReadyCheck =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, Readiness> + Send + Sync>;

/// What a readiness probe found: named checks, and in words why billing is
/// not progressing (a stalled partition, a pipeline-wide hold).
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    pub(crate) checks: Vec<(String, bool)>,
    pub(crate) problems: Vec<String>,
}

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) provisioner: Provisioner,
    /// The contract's `BILLING_SUBJECT`, which identities are read by.
    pub(crate) subjects: SubjectRule,
    /// When set, `/ensure` demands `Authorization: Bearer <token>`.
    pub(crate) token: Option<Secret>,
    pub(crate) ready: Option<ReadyCheck>,
}

/// The API's router.
pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route("/ensure", post(ensure))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(Arc::new(state))
}

/// An API error: status plus a message for `{"error": …}`.
#[derive(Debug)]
pub(crate) struct ApiFailure(StatusCode, String);

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiFailure {
    ApiFailure(StatusCode::BAD_REQUEST, message.into())
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<Arc<ApiState>>) -> Response {
    let readiness = match &state.ready {
        Some(check) => check().await,
        None => Readiness::default(),
    };
    let ok = readiness.checks.iter().all(|(_, passed)| *passed) && readiness.problems.is_empty();
    let checks: Map<String, Value> = readiness
        .checks
        .into_iter()
        .map(|(k, v)| (k, Value::Bool(v)))
        .collect();
    let mut body = json!({ "ready": ok, "checks": checks });
    if !readiness.problems.is_empty() {
        body["problems"] = json!(readiness.problems);
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn render_metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics().render(),
    )
        .into_response()
}

async fn method_not_allowed() -> ApiFailure {
    ApiFailure(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into())
}

async fn not_found() -> ApiFailure {
    ApiFailure(
        StatusCode::NOT_FOUND,
        "not found: the API serves POST /ensure, GET /health, GET /ready, GET /metrics".into(),
    )
}

async fn ensure(
    State(state): State<Arc<ApiState>>,
    request: Request,
) -> Result<Response, ApiFailure> {
    authorize(&state, request.headers())?;
    let body = read_body(request.into_body()).await?;
    let identity = identity_from_body(&body, state.subjects)?;
    let ensured = state
        .provisioner
        .ensure(&identity)
        .await
        .map_err(upstream_failure)?;
    Ok(Json(ensured).into_response())
}

fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiFailure> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.expose_secret().as_bytes()))) {
        Ok(())
    } else {
        Err(ApiFailure(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (PROVISION_TOKEN)".into(),
        ))
    }
}

async fn read_body(body: Body) -> Result<Value, ApiFailure> {
    let bytes = to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        ApiFailure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {MAX_BODY_BYTES} bytes"),
        )
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| bad_request(format!("request body is not valid JSON: {e}")))
}

/// The sidecar's identity fields, each the first non-blank of its aliases,
/// top level, then `data`: `client_id`/`clientId`,
/// `external_user_id`/`externalUserId` (or `usage_subject`/`usageSubject`),
/// and the compound id, `auth_id`/`authId`, else `subject`. Which of them
/// wins is a request's precedence ([`IdentityClaim::Request`]), and the
/// identity is resolved by the same rule as events ([`Identity::resolve`]):
/// `acme:owner:U1` ensures the owner `U1`.
pub(crate) fn identity_from_body(body: &Value, rule: SubjectRule) -> Result<Identity, ApiFailure> {
    let top = body
        .as_object()
        .ok_or_else(|| bad_request("request body must be a JSON object"))?;
    let data = match top.get("data") {
        None | Some(Value::Null) => None,
        Some(Value::Object(data)) => Some(data),
        Some(_) => return Err(bad_request("data must be a JSON object")),
    };
    let field = |names: &[&'static str]| pick(top, data, names);
    let client = field(&["client_id", "clientId"])?;
    let user = field(&[
        "external_user_id",
        "externalUserId",
        "usage_subject",
        "usageSubject",
    ])?;
    // Like the sidecar, the compound id is read only when a half is
    // missing, so a malformed one beside both halves is no error.
    let compound = match (&client, &user) {
        (Some(_), Some(_)) => None,
        _ => match field(&["auth_id", "authId"])? {
            Some(auth) => Some(("auth_id", auth)),
            None => field(&["subject"])?.map(|s| ("subject", s)),
        },
    };
    let claim = IdentityClaim::Request {
        client_id: client.as_deref(),
        external_user_id: user.as_deref(),
        compound: compound.as_ref().map(|(name, raw)| (*name, raw.as_str())),
    };
    Identity::resolve(claim, rule).map_err(|e| match e {
        IdentityError::Missing => bad_request(missing_message(client.is_some(), user.is_some())),
        e => bad_request(e.to_string()),
    })
}

fn missing_message(has_client: bool, has_user: bool) -> String {
    let missing = match (has_client, has_user) {
        (true, false) => "external_user_id is missing",
        (false, true) => "client_id is missing",
        _ => "client_id and external_user_id are missing",
    };
    format!(
        "{missing}; send client_id and external_user_id, or auth_id as client_id:external_user_id"
    )
}

/// The first non-blank string among `names`, at top level, then in `data`.
fn pick(
    top: &Map<String, Value>,
    data: Option<&Map<String, Value>>,
    names: &[&'static str],
) -> Result<Option<String>, ApiFailure> {
    for scope in std::iter::once(top).chain(data) {
        for name in names {
            match scope.get(*name) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.trim().is_empty() => {}
                Some(Value::String(s)) => return Ok(Some(s.clone())),
                Some(_) => return Err(bad_request(format!("{name} must be a string"))),
            }
        }
    }
    Ok(None)
}

/// Maps an ensure failure by whom it concerns: 422 when OpenMeter refuses
/// this customer (its creation, subscription or billing setup), 502 when it
/// refuses our configuration (token, URL, plan), 503 when it is unavailable.
fn upstream_failure(e: EnsureError) -> ApiFailure {
    let status = if e.concerns_customer() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else if e.class() == ErrorClass::Transient {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_GATEWAY
    };
    tracing::warn!(error = %e, "ensure failed");
    ApiFailure(status, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: Value) -> Result<String, String> {
        identity_from_body(&body, SubjectRule::Upstream)
            .map(|i| i.customer_key().to_string())
            .map_err(|f| f.1)
    }

    #[test]
    fn snake_case_parts_make_the_key() {
        assert_eq!(
            key(json!({"client_id": "c", "external_user_id": "u"})),
            Ok("c:u".into())
        );
    }

    #[test]
    fn camel_case_aliases_are_accepted() {
        assert_eq!(
            key(json!({"clientId": "c", "externalUserId": "u"})),
            Ok("c:u".into())
        );
    }

    #[test]
    fn parts_inside_data_are_accepted() {
        assert_eq!(
            key(json!({"data": {"client_id": "c", "externalUserId": "u"}})),
            Ok("c:u".into())
        );
    }

    #[test]
    fn top_level_part_wins_over_data() {
        assert_eq!(
            key(
                json!({"client_id": "top", "data": {"client_id": "inner", "external_user_id": "u"}})
            ),
            Ok("top:u".into())
        );
    }

    #[test]
    fn auth_id_splits_at_first_colon() {
        let id =
            identity_from_body(&json!({"authId": " acme:user:x "}), SubjectRule::Upstream).unwrap();
        assert_eq!((id.client_id(), id.external_user_id()), ("acme", "user:x"));
    }

    #[test]
    fn auth_id_inside_data_is_accepted() {
        assert_eq!(key(json!({"data": {"auth_id": "c:u"}})), Ok("c:u".into()));
    }

    #[test]
    fn subject_is_the_last_resort() {
        assert_eq!(key(json!({"subject": "c:u"})), Ok("c:u".into()));
        assert_eq!(
            key(json!({"subject": "s:s", "auth_id": "a:a"})),
            Ok("a:a".into())
        );
    }

    #[test]
    fn one_part_alone_falls_back_to_auth_id() {
        assert_eq!(
            key(json!({"client_id": "c", "auth_id": "x:y"})),
            Ok("x:y".into())
        );
    }

    #[test]
    fn non_compound_auth_id_is_a_bad_request() {
        let e = key(json!({"auth_id": "session_123"})).unwrap_err();
        assert!(e.contains("client_id:external_user_id"), "{e}");
    }

    #[test]
    fn auth_id_with_a_bidi_override_is_a_bad_request() {
        let e = key(json!({"auth_id": "acme:\u{202E}ecilA"})).unwrap_err();
        assert!(e.contains("U+202E"), "{e}");
        let e = key(json!({"client_id": "acme", "external_user_id": "al\u{200B}ice"})).unwrap_err();
        assert!(e.contains("U+200B"), "{e}");
    }

    #[test]
    fn missing_identity_names_what_is_missing() {
        assert!(key(json!({"client_id": "c"}))
            .unwrap_err()
            .contains("external_user_id is missing"));
        assert!(key(json!({}))
            .unwrap_err()
            .contains("client_id and external_user_id are missing"));
    }

    #[test]
    fn non_string_field_is_a_bad_request() {
        assert_eq!(
            key(json!({"client_id": 5, "external_user_id": "u"})),
            Err("client_id must be a string".into())
        );
    }

    #[test]
    fn an_owner_identity_ensures_the_bare_owner() {
        assert_eq!(
            key(json!({"auth_id": "app_abc:owner: U1 "})),
            Ok("U1".into())
        );
        assert_eq!(
            key(json!({"client_id": "app_abc", "external_user_id": "owner:U1"})),
            Ok("U1".into())
        );
        assert_eq!(
            key(json!({"client_id": "app_abc", "usage_subject": "eu_9#bot"})),
            Ok("eu_9".into())
        );
    }

    #[test]
    fn an_empty_owner_id_is_a_bad_request() {
        assert_eq!(
            key(json!({"auth_id": "app_x:owner: "})),
            Err("empty owner id".into())
        );
    }

    #[test]
    fn under_the_auth_id_rule_the_whole_identity_is_ensured() {
        let id = identity_from_body(&json!({"auth_id": "app_abc:owner:U1"}), SubjectRule::AuthId)
            .unwrap();
        assert_eq!(id.customer_key().as_str(), "app_abc:owner:U1");
    }

    #[test]
    fn non_object_body_is_a_bad_request() {
        assert!(key(json!([1])).is_err());
        assert!(key(json!({"data": "x", "auth_id": "c:u"})).is_err());
    }

    #[test]
    fn blank_fields_count_as_missing() {
        assert_eq!(
            key(json!({"client_id": " ", "external_user_id": "u", "auth_id": "a:b"})),
            Ok("a:b".into())
        );
    }
}
