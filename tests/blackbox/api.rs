//! The provisioning API, served by the real binary on a random port.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openmeter_double::{PlanSeed, Route};
use serde_json::{json, Value};

use crate::support::binary::Binary;
use crate::support::double::{OpenMeter, PLAN, TOKEN};
use crate::support::free_port;

struct Api {
    _binary: Binary,
    base: String,
    http: reqwest::Client,
}

async fn serve(om: &OpenMeter, extra: &[(&'static str, String)]) -> Api {
    let port = free_port();
    let mut env = vec![
        ("OPENMETER_URL", om.url()),
        ("OPENMETER_API_KEY", TOKEN.to_owned()),
        ("PROVISION_PORT", port.to_string()),
    ];
    env.extend_from_slice(extra);
    let binary = Binary::spawn(&["serve"], &env);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Api {
        _binary: binary,
        base,
        http,
    }
}

async fn started() -> (OpenMeter, Api) {
    let om = OpenMeter::start(Some(TOKEN)).await;
    om.double.seed_plan(PlanSeed::new(PLAN, 1, "active"));
    let api = serve(&om, &[]).await;
    (om, api)
}

impl Api {
    async fn post(&self, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/ensure", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn health_answers_ok() {
    let (_om, api) = started().await;
    let body: Value = api
        .http
        .get(format!("{}/health", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"status": "ok"}));
}

#[tokio::test]
async fn healthcheck_exits_0_while_the_api_answers_and_1_when_nothing_listens() {
    let (_om, api) = started().await;
    let port = api.base.rsplit(':').next().unwrap().to_owned();
    let mut answered = Binary::spawn(&["healthcheck"], &[("PROVISION_PORT", port)]);
    let status = answered
        .wait(Duration::from_secs(10))
        .expect("healthcheck ends");
    assert_eq!(status.code(), Some(0));
    let nobody = free_port().to_string();
    let mut unanswered = Binary::spawn(&["healthcheck"], &[("PROVISION_PORT", nobody)]);
    let status = unanswered
        .wait(Duration::from_secs(10))
        .expect("healthcheck ends");
    assert_eq!(status.code(), Some(1));
    assert!(
        unanswered.stderr().contains("/health"),
        "it says what it asked"
    );
}

#[tokio::test]
async fn a_dot_env_in_the_working_directory_is_read_and_the_environment_wins_over_it() {
    let om = OpenMeter::start(Some(TOKEN)).await;
    om.double.seed_plan(PlanSeed::new(PLAN, 1, "active"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (in_file, in_environment) = (free_port(), free_port());
    let dot_env = format!(
        "OPENMETER_URL={}\nOPENMETER_API_KEY={TOKEN}\nPROVISION_PORT={in_file}\n",
        om.url()
    );
    std::fs::write(dir.path().join(".env"), dot_env).expect("a writable .env");
    let _binary = Binary::spawn_in(
        Some(dir.path()),
        &["serve"],
        &[("PROVISION_PORT", in_environment.to_string())],
    );
    let api = Api {
        _binary,
        base: format!("http://127.0.0.1:{in_environment}"),
        http: reqwest::Client::new(),
    };
    assert!(
        listening(in_environment).await,
        "the environment's PROVISION_PORT wins over .env's"
    );
    let (status, body) = api.post(r#"{"auth_id": "acme:dotenv"}"#).await;
    assert_eq!(
        status, 200,
        ".env's OpenMeter URL and token are used: {body}"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", in_file)).is_err());
}

/// Whether something listens on loopback `port` within 10 s.
async fn listening(port: u16) -> bool {
    crate::support::eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ensure_command_takes_a_client_and_end_user_and_exits_1_when_openmeter_refuses_the_customer(
) {
    let om = OpenMeter::bootstrapped(Some(TOKEN)).await;
    om.double.refuse_billing_setup("acme:refused", true);
    let env = [
        ("OPENMETER_URL", om.url()),
        ("OPENMETER_API_KEY", TOKEN.to_owned()),
    ];
    let ensure = |user: &str| {
        Binary::spawn(
            &["ensure", "--client-id", "acme", "--external-user-id", user],
            &env,
        )
    };
    let mut accepted = ensure("alice");
    let status = accepted.wait(Duration::from_secs(30)).expect("ensure ends");
    assert!(status.success(), "{}", accepted.stderr());
    let answer: Value = serde_json::from_str(&accepted.stdout()).unwrap();
    assert_eq!(answer["customerKey"], "acme:alice");
    let mut refused = ensure("refused");
    let status = refused.wait(Duration::from_secs(30)).expect("ensure ends");
    assert_eq!(status.code(), Some(1));
    assert!(
        refused.stderr().contains("billing setup"),
        "{}",
        refused.stderr()
    );
}

#[tokio::test]
async fn the_double_command_demands_its_token() {
    let port = free_port();
    let _double = Binary::spawn(
        &[
            "double",
            "--port",
            &port.to_string(),
            "--token",
            "double-secret",
        ],
        &[],
    );
    let customers = format!("http://127.0.0.1:{port}/api/v3/openmeter/customers");
    let http = reqwest::Client::new();
    assert!(listening(port).await, "the double listens on --port");
    let without = http.get(&customers).send().await.unwrap();
    assert_eq!(without.status().as_u16(), 401);
    let with = http
        .get(&customers)
        .bearer_auth("double-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(with.status().as_u16(), 200);
}

#[tokio::test]
async fn ensure_returns_the_sidecar_response_shape() {
    let (om, api) = started().await;
    let (status, body) = api
        .post(r#"{"data": {"clientId": "acme", "externalUserId": "alice"}}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["customerKey"], "acme:alice");
    assert_eq!(body["planKey"], PLAN);
    assert_eq!(body["status"], "active");
    assert_eq!(
        body["created"],
        json!({"customer": true, "subscription": true})
    );
    assert_eq!(body["customerId"], om.double.customers()[0].id.as_str());
    assert!(body["subscriptionId"].is_string());
}

#[tokio::test]
async fn malformed_json_is_a_400_with_a_json_error() {
    let (_om, api) = started().await;
    let (status, body) = api.post("{not json").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("not valid JSON"));
}

#[tokio::test]
async fn non_compound_auth_id_is_a_400() {
    let (om, api) = started().await;
    let (status, body) = api.post(r#"{"auth_id": "session_123"}"#).await;
    assert_eq!(status, 400);
    assert!(body["error"].is_string());
    // `serve` reads the plans once at start-up (its probe); the identity
    // itself costs no call.
    let about_the_identity: u64 = [
        Route::ListCustomers,
        Route::CreateCustomer,
        Route::ListSubscriptions,
        Route::CreateSubscription,
    ]
    .into_iter()
    .map(|route| om.double.calls(route))
    .sum();
    assert_eq!(about_the_identity, 0);
}

#[tokio::test]
async fn oversized_body_is_a_413() {
    let (_om, api) = started().await;
    let big = format!(r#"{{"auth_id": "a:b", "pad": "{}"}}"#, "x".repeat(100_000));
    let (status, body) = api.post(&big).await;
    assert_eq!(status, 413);
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn wrong_method_is_a_405_with_a_json_error() {
    let (_om, api) = started().await;
    let r = api
        .http
        .get(format!("{}/ensure", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn openmeter_refusing_the_token_is_a_502_naming_the_token() {
    let om = OpenMeter::start(Some(TOKEN)).await;
    let api = serve(&om, &[("OPENMETER_API_KEY", "kpat_wrong".to_owned())]).await;
    let (status, body) = api.post(r#"{"auth_id": "a:b"}"#).await;
    assert_eq!(status, 502);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("OPENMETER_API_KEY") && !error.contains("kpat_wrong"),
        "{error}"
    );
}

#[tokio::test]
async fn openmeter_refusing_this_customer_is_a_422_naming_why() {
    let om = OpenMeter::bootstrapped(Some(TOKEN)).await;
    om.double.refuse_billing_setup("acme:refused", true);
    let api = serve(&om, &[]).await;
    let (status, body) = api.post(r#"{"auth_id": "acme:refused"}"#).await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("billing setup"), "{error}");
    let (status, body) = api.post(r#"{"auth_id": "acme:accepted"}"#).await;
    assert_eq!(status, 200, "another customer is ensured: {body}");
}

#[tokio::test]
async fn openmeter_unavailable_is_a_503() {
    let om = OpenMeter::start(Some(TOKEN)).await;
    om.double.seed_plan(PlanSeed::new(PLAN, 1, "active"));
    om.double
        .fail_next(openmeter_double::Route::ListCustomers, 10, 503);
    let api = serve(&om, &[]).await;
    let (status, _) = api.post(r#"{"auth_id": "a:b"}"#).await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn provision_token_is_demanded_when_set() {
    let om = OpenMeter::start(Some(TOKEN)).await;
    om.double.seed_plan(PlanSeed::new(PLAN, 1, "active"));
    let api = serve(&om, &[("PROVISION_TOKEN", "letmein".to_owned())]).await;
    let (status, _) = api.post(r#"{"auth_id": "a:b"}"#).await;
    assert_eq!(status, 401);
    let r = api
        .http
        .post(format!("{}/ensure", api.base))
        .bearer_auth("letmein")
        .json(&json!({"auth_id": "a:b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[test]
fn binding_off_loopback_without_a_token_refuses_to_start() {
    let mut binary = Binary::spawn(
        &["serve"],
        &[
            ("OPENMETER_URL", "http://127.0.0.1:9/api/v3".to_owned()),
            ("PROVISION_BIND", "0.0.0.0".to_owned()),
            ("PROVISION_PORT", free_port().to_string()),
        ],
    );
    let status = binary.wait(Duration::from_secs(10)).expect("exits");
    assert!(!status.success());
    assert!(binary.stderr().contains("PROVISION_TOKEN"));
}

#[tokio::test]
async fn empty_variables_in_the_environment_count_as_unset() {
    let om = OpenMeter::start(Some(TOKEN)).await;
    om.double.seed_plan(PlanSeed::new(PLAN, 1, "active"));
    let api = serve(
        &om,
        &[
            ("PROVISION_TOKEN", String::new()),
            ("OPENMETER_INGEST_URL", String::new()),
        ],
    )
    .await;
    let (status, body) = api.post(r#"{"auth_id": "a:b"}"#).await;
    assert_eq!(status, 200, "{body}");
}

/// `docs/provisioning-api.openapi.yaml`'s operations: each path, and its
/// methods.
fn documented_operations() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/provisioning-api.openapi.yaml"
    ))
    .expect("the provisioning API's OpenAPI document");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    let paths = doc["paths"].as_mapping().expect("paths");
    paths
        .iter()
        .map(|(path, operations)| {
            let methods = operations
                .as_mapping()
                .expect("a path item")
                .keys()
                .filter_map(|k| k.as_str())
                .filter(|k| METHODS.contains(k))
                .map(str::to_owned)
                .collect();
            (path.as_str().expect("a path").to_owned(), methods)
        })
        .collect()
}

/// The methods an OpenAPI path item may describe that the API could serve.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The paths the API routes, as its router declares them (`src/api.rs`).
fn routed_paths() -> BTreeSet<String> {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/api.rs"))
        .expect("the API's source");
    regex::Regex::new(r#"\.route\(\s*"([^"]+)""#)
        .expect("regex")
        .captures_iter(&source)
        .map(|c| c[1].to_owned())
        .collect()
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_paths_and_methods_the_api_serves() {
    let documented = documented_operations();
    assert_eq!(
        documented.keys().cloned().collect::<BTreeSet<_>>(),
        routed_paths(),
        "the document's paths are the router's"
    );
    let (_om, api) = started().await;
    for (path, methods) in &documented {
        for method in METHODS {
            let status = api
                .http
                .request(
                    reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    format!("{}{path}", api.base),
                )
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            assert_eq!(
                status != 404 && status != 405,
                methods.contains(method),
                "{method} {path} answers {status}"
            );
        }
    }
}
