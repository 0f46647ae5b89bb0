//! Contract test: every request our OpenMeter client sends and every response
//! the OpenMeter double returns is checked against the real v3 API spec
//! (`shared/reference/openmeter-v3-openapi.yaml`).
//!
//! # How
//!
//! ```text
//! OpenMeterClient ──> tap ──> Prism (validating proxy) ──> openmeter-double
//!  …/api/v3/openmeter/…   strips /api/v3   /openmeter/…          /api/v3/openmeter/…
//! ```
//!
//! Prism runs as
//! `prism proxy <spec> http://127.0.0.1:<double>/api/v3 --errors --port <free> --host 127.0.0.1`.
//! Prism matches the *request path* against the spec's `paths` as they are
//! (`/openmeter/customers`): it does not strip a `servers` base path, so
//! `/api/v3/openmeter/customers` is answered with `NO_PATH_MATCHED_ERROR`
//! (verified by experiment). Our client's [`Endpoint`] always ends its base in
//! `/v3`, so it cannot talk to Prism directly; the *tap*, a few lines of
//! axum + reqwest in this file, strips the `/api/v3` prefix, forwards to
//! Prism, and records every exchange (request body, status, headers).
//!
//! # What "no violation" means
//!
//! With `--errors`, a request or response that violates the spec at severity
//! *error* is replaced by Prism's own problem response
//! (`type: https://stoplight.io/prism/errors#…`, a `validation` list). Lesser
//! violations (e.g. a status code the spec does not document for the
//! operation) pass through, and Prism reports them in the `sl-violations`
//! response header. The tap sees both, so an exchange is clean when it has no
//! `sl-violations` header and its body is not a Prism error; every test
//! asserts the exact statuses it expects *and* that every exchange is clean.
//! (Prism's log is captured too, and printed when an assertion fails; the
//! header is asserted on rather than the log because it belongs to exactly
//! one exchange and needs no waiting for log lines to be flushed.)
//!
//! # Batches
//!
//! Prism wrongly rejects JSON arrays on `POST /openmeter/events`
//! (`application/cloudevents-batch+json`: "Request body must be object"), so
//! the tap sends batch ingests straight to the double, and the test validates
//! each element of every batch body our client sent against the spec's
//! `MeteringEvent` schema with the `jsonschema` crate. Single-event ingest
//! (`application/cloudevents+json`) goes through Prism.
//!
//! # Response bodies
//!
//! Prism does not validate every response body: for some operations (the
//! subscription, plan and feature ones, the meter query, …) a body with a
//! wrong type or an undeclared field passes with no `sl-violations` (verified
//! by experiment against a stub upstream; it checks the status code only).
//! So [`Contract::assert_no_violation`] also validates every JSON response
//! the tap recorded against the schema the spec declares for that operation
//! and status, with the `jsonschema` crate.
//!
//! Prism comes from `npm ci` (see `package.json`); the test fails, never
//! skips, when `node_modules/.bin/prism` is missing.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use openmeter_double::{Double, DoubleConfig, PlanSeed, Route, RunningDouble};
use serde_json::{json, Value};
use ticketmeter::bootstrap::{bootstrap, BootstrapOptions, Catalog};
use ticketmeter::{
    decode, map, ApiError, ClientConfig, CreateSubscription, CustomerById, DeadLetterSink, Decoded,
    Endpoint, EnsureConfig, Identity, OpenMeterClient, PlanKey, Provisioner, Secret, SubjectRule,
    CLOUDEVENT_BATCH, DEFAULT_MAX_BYTES,
};

use crate::support;
use crate::support::double::PLAN;

const TOKEN: &str = "contract-test-token";
/// What Prism's own error responses have as `type`.
const PRISM_ERROR: &str = "https://stoplight.io/prism/errors#";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `shared/` sits beside the repository (locally and in CI).
fn shared(path: &str) -> PathBuf {
    repo().join("../shared").join(path)
}

fn spec_path() -> PathBuf {
    shared("reference/openmeter-v3-openapi.yaml")
}

fn fixture_path() -> PathBuf {
    shared("fixtures/upstream-events.jsonl")
}

fn plan_key() -> PlanKey {
    PLAN.parse().expect("valid plan key")
}

// ---- Prism --------------------------------------------------------------

/// A Prism proxy child process, killed on drop.
struct Prism {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Prism {
    fn binary() -> PathBuf {
        let bin = repo().join("node_modules/.bin/prism");
        assert!(
            bin.exists(),
            "Prism is missing at {}: run `npm ci` in {} first (package.json pins \
             @stoplight/prism-cli); the contract test needs it and does not skip",
            bin.display(),
            repo().display()
        );
        bin
    }

    /// Starts Prism in front of `upstream` on a free port and waits until it
    /// answers. A port taken between choosing and binding it is retried.
    async fn start(upstream: &str) -> Prism {
        let bin = Self::binary();
        let spec = spec_path();
        assert!(spec.exists(), "the spec is missing at {}", spec.display());
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = tempfile::NamedTempFile::new().expect("temp file for Prism's log");
            let out = log.reopen().expect("reopen Prism log");
            let err = log.reopen().expect("reopen Prism log");
            let child = Command::new(&bin)
                .arg("proxy")
                .arg(&spec)
                .arg(upstream)
                .arg("--errors")
                .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
                .stdin(Stdio::null())
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut prism = Prism { child, port, log };
            if prism.wait_ready().await {
                return prism;
            }
            last_log = prism.log();
            if !last_log.contains("EADDRINUSE") {
                break;
            }
        }
        panic!("Prism did not start; its log:\n{last_log}");
    }

    /// True once Prism answers HTTP; false when it exited first.
    async fn wait_ready(&mut self) -> bool {
        let http = plain_http();
        // A path the spec lacks: Prism answers it itself (404) without
        // calling the upstream, so the double's counters stay untouched.
        let probe = format!("{}/__contract_probe", self.url());
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(resp) = http.get(&probe).send().await {
                if resp.status() == StatusCode::NOT_FOUND {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "Prism did not answer within 120 s; its log:\n{}",
            self.log()
        );
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = self.log.reopen() {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Prism's log lines that report a violation or an error.
    fn violation_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("Violation") || l.contains("✖"))
            .filter(|l| !l.contains("__contract_probe"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// reqwest without proxies from the environment and without redirects.
fn plain_http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

// ---- the tap ------------------------------------------------------------

/// Which way the tap sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Prism,
    /// Batch ingest, straight to the double (see the module docs).
    Direct,
}

/// One request and its response, as the tap saw them.
#[derive(Debug, Clone)]
struct Exchange {
    method: String,
    /// The spec path (without `/api/v3`).
    path: String,
    query: Vec<(String, String)>,
    request_content_type: String,
    request_body: Bytes,
    via: Via,
    status: u16,
    response_content_type: String,
    /// Prism's `sl-violations` header, when present.
    violations: Option<String>,
    response_body: Bytes,
}

impl Exchange {
    /// Prism's own error (a request or response violation under `--errors`,
    /// or an unmatched route), rather than the double's answer.
    fn prism_error(&self) -> bool {
        serde_json::from_slice::<Value>(&self.response_body)
            .ok()
            .and_then(|v| v["type"].as_str().map(|t| t.starts_with(PRISM_ERROR)))
            .unwrap_or(false)
    }

    fn clean(&self) -> bool {
        self.violations.is_none() && !self.prism_error() && self.body_violations().is_empty()
    }

    /// How the JSON response body departs from the schema the spec declares
    /// for this operation and status (see "Response bodies" above).
    fn body_violations(&self) -> Vec<String> {
        if self.prism_error() || !self.response_content_type.contains("json") {
            return Vec::new();
        }
        let Some(schema) = response_schema(&self.method, &self.path, self.status) else {
            return Vec::new();
        };
        let Ok(body) = serde_json::from_slice::<Value>(&self.response_body) else {
            return vec!["the response body is not JSON".into()];
        };
        violations_of(&validator_of(&schema), &body)
    }

    /// `METHOD /path STATUS`, ids replaced by `{id}`.
    fn summary(&self) -> String {
        format!("{} {} {}", self.method, templated(&self.path), self.status)
    }

    fn describe(&self) -> String {
        format!(
            "{} {}?{:?} via {:?} -> {} {}\n  sl-violations: {}\n  schema violations: {:?}\n  request body: {}\n  response body: {}",
            self.method,
            self.path,
            self.query,
            self.via,
            self.status,
            self.response_content_type,
            self.violations.as_deref().unwrap_or("-"),
            self.body_violations(),
            String::from_utf8_lossy(&self.request_body),
            String::from_utf8_lossy(&self.response_body),
        )
    }
}

/// Replaces ULID-like path segments with `{id}`.
fn templated(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            let ulid = seg.len() == 26 && seg.chars().all(|c| c.is_ascii_alphanumeric());
            if ulid && seg.chars().any(|c| c.is_ascii_digit()) {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

struct TapState {
    http: reqwest::Client,
    prism: String,
    double: String,
    exchanges: Mutex<Vec<Exchange>>,
}

/// Headers a hop must not copy.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "content-length" | "transfer-encoding" | "connection" | "keep-alive"
    )
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn forward(State(tap): State<Arc<TapState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("read request body");
    let full = parts.uri.path();
    let path = full.strip_prefix("/api/v3").unwrap_or(full).to_owned();
    let raw_query = parts.uri.query().unwrap_or_default().to_owned();
    let request_content_type = header(&parts.headers, "content-type");
    let batch = parts.method == axum::http::Method::POST
        && path == "/openmeter/events"
        && request_content_type.starts_with(CLOUDEVENT_BATCH);
    let (via, base) = if batch {
        (Via::Direct, &tap.double)
    } else {
        (Via::Prism, &tap.prism)
    };
    let mut url = format!("{base}{path}");
    if !raw_query.is_empty() {
        url.push('?');
        url.push_str(&raw_query);
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let upstream = tap
        .http
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("tap: forwarding to {url} failed: {e}"));
    let status = upstream.status();
    let response_headers = upstream.headers().clone();
    let response_body = upstream.bytes().await.expect("read upstream body");
    tap.exchanges.lock().unwrap().push(Exchange {
        method: parts.method.to_string(),
        path,
        query: url::form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        request_content_type,
        request_body: body,
        via,
        status: status.as_u16(),
        response_content_type: header(&response_headers, "content-type"),
        violations: response_headers
            .get("sl-violations")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        response_body: response_body.clone(),
    });
    let mut response = Response::builder().status(status);
    for (name, value) in &response_headers {
        if !hop_by_hop(name) {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from(response_body))
        .expect("tap response")
}

/// The recording, prefix-stripping hop in front of Prism.
struct Tap {
    addr: SocketAddr,
    state: Arc<TapState>,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    async fn start(prism: String, double: String) -> Tap {
        let state = Arc::new(TapState {
            http: plain_http(),
            prism,
            double,
            exchanges: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the tap");
        let addr = listener.local_addr().expect("tap address");
        let app = Router::new().fallback(forward).with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("tap server");
        });
        Tap { addr, state, task }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- the environment ----------------------------------------------------

/// A double, Prism in front of it, and the tap in front of Prism.
struct Contract {
    double: Double,
    running: RunningDouble,
    prism: Prism,
    tap: Tap,
}

impl Contract {
    /// A double demanding [`TOKEN`].
    async fn start() -> Contract {
        let double = Double::new(DoubleConfig {
            token: Some(TOKEN.to_owned()),
            ..Default::default()
        });
        let running = double
            .spawn("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("spawn the double");
        let prism = Prism::start(&running.base_url()).await;
        let tap = Tap::start(prism.url(), running.base_url()).await;
        Contract {
            double,
            running,
            prism,
            tap,
        }
    }

    fn client_at(base: &str, token: &str) -> OpenMeterClient {
        let endpoint = Endpoint::parse(base, None).expect("endpoint");
        let mut config = ClientConfig::new(endpoint, Some(Secret::from(token)));
        // One attempt: a failure must show as the exchange it was.
        config.retry = ticketmeter::RetryPolicy::once();
        OpenMeterClient::new(config).expect("client")
    }

    /// Our client, through the tap and Prism.
    fn client(&self) -> OpenMeterClient {
        self.client_with_token(TOKEN)
    }

    fn client_with_token(&self, token: &str) -> OpenMeterClient {
        Self::client_at(&format!("http://{}/api/v3", self.tap.addr), token)
    }

    /// Our client straight to the double, for setting up state unobserved.
    fn direct_client(&self) -> OpenMeterClient {
        Self::client_at(&self.running.base_url(), TOKEN)
    }

    /// The catalog (meters, features, published plan), set up directly.
    async fn bootstrapped() -> Contract {
        let contract = Contract::start().await;
        let report = bootstrap(
            &contract.direct_client(),
            &Catalog::builtin(&plan_key()),
            &BootstrapOptions::default(),
        )
        .await
        .expect("bootstrap the double");
        assert!(!report.failed(), "setup bootstrap failed:\n{report}");
        contract
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.tap.state.exchanges.lock().unwrap().clone()
    }

    fn summaries(&self) -> Vec<String> {
        self.exchanges().iter().map(Exchange::summary).collect()
    }

    /// Every exchange so far is free of spec violations.
    fn assert_no_violation(&self) {
        let exchanges = self.exchanges();
        assert!(!exchanges.is_empty(), "no request went through the tap");
        let dirty: Vec<String> = exchanges
            .iter()
            .filter(|e| !e.clean())
            .map(Exchange::describe)
            .collect();
        assert!(
            dirty.is_empty(),
            "{} of {} exchanges violate the spec:\n{}\n\nPrism's violation log lines:\n{}",
            dirty.len(),
            exchanges.len(),
            dirty.join("\n"),
            self.prism.violation_lines().join("\n"),
        );
    }
}

fn query_has(exchange: &Exchange, name: &str, value: &str) -> bool {
    exchange.query.iter().any(|(k, v)| k == name && v == value)
}

// ---- schemas via jsonschema ----------------------------------------------

/// The spec as JSON.
fn spec() -> Value {
    let text = std::fs::read_to_string(spec_path()).expect("read the spec");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("parse the spec");
    serde_json::to_value(yaml).expect("the spec as JSON")
}

/// OpenAPI 3.0's `nullable: true` as JSON Schema (`type: [t, "null"]`).
fn denull(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true)) {
                if let Some(Value::String(t)) = map.get("type").cloned() {
                    map.insert("type".into(), json!([t, "null"]));
                }
                if let Some(Value::Array(choices)) = map.get_mut("enum") {
                    choices.push(Value::Null);
                }
            }
            map.values_mut().for_each(denull);
        }
        Value::Array(items) => items.iter_mut().for_each(denull),
        _ => {}
    }
}

/// The spec as JSON Schema: `nullable` translated, parsed once.
fn schema_document() -> &'static Value {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = spec();
        denull(&mut doc);
        doc
    })
}

/// A validator of `schema` (which may `$ref` the spec's components),
/// formats checked. References stay references, so recursive schemas work.
fn validator_of(schema: &Value) -> jsonschema::Validator {
    let root = json!({
        "allOf": [schema],
        "components": schema_document()["components"],
    });
    jsonschema::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("compile {schema}: {e}"))
}

/// The spec's component schema `name`.
fn component_validator(name: &str) -> jsonschema::Validator {
    assert!(
        schema_document()["components"]["schemas"][name].is_object(),
        "no {name} schema in the spec"
    );
    validator_of(&json!({"$ref": format!("#/components/schemas/{name}")}))
}

/// Does the spec path template (`/openmeter/plans/{planId}`) match `path`?
fn template_matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
}

/// The JSON schema the spec declares for this response, if it declares one.
fn response_schema(method: &str, path: &str, status: u16) -> Option<Value> {
    let doc = schema_document();
    let paths = doc["paths"].as_object()?;
    // Where templates tie, literal segments beat parameters.
    let (_, item) = paths
        .iter()
        .filter(|(template, _)| template_matches(template, path))
        .min_by_key(|(template, _)| template.matches('{').count())?;
    let op = item.get(method.to_ascii_lowercase())?;
    let mut response = op["responses"].get(status.to_string())?;
    if let Some(target) = response["$ref"].as_str() {
        let name = target.strip_prefix("#/components/responses/")?;
        response = &doc["components"]["responses"][name];
    }
    let content = response["content"].as_object()?;
    content
        .iter()
        .find(|(media, _)| media.contains("json"))
        .map(|(_, c)| c["schema"].clone())
}

/// The spec's `MeteringEvent`.
fn metering_event_validator() -> jsonschema::Validator {
    component_validator("MeteringEvent")
}

fn violations_of(validator: &jsonschema::Validator, event: &Value) -> Vec<String> {
    validator
        .iter_errors(event)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect()
}

/// The first fixture event, as the pipeline maps it.
fn first_mapped_event() -> Value {
    let text = std::fs::read_to_string(fixture_path()).expect("read the fixtures");
    let price = "3500".parse().expect("price");
    text.lines()
        .find_map(|line| {
            match decode(
                line.as_bytes(),
                DEFAULT_MAX_BYTES,
                &ticketmeter::Contract::default(),
            ) {
                Ok(Decoded::Ticket(ticket)) => {
                    Some(map(*ticket, &price, &ticketmeter::Contract::default()))
                }
                _ => None,
            }
        })
        .map(|mapped| serde_json::to_value(&mapped.event).expect("event as JSON"))
        .expect("a billable fixture event")
}

// ---- tests --------------------------------------------------------------

#[tokio::test]
async fn ensure_of_a_new_identity_passes_the_proxy_with_no_violation() {
    let contract = Contract::bootstrapped().await;
    let provisioner = Provisioner::new(contract.client(), plan_key(), EnsureConfig::default());
    let identity =
        Identity::from_parts("app-1", "user-1", SubjectRule::Upstream).expect("identity");

    let ensured = provisioner.ensure(&identity).await.expect("ensure");

    assert!(ensured.created.customer && ensured.created.subscription);
    // A customer just created is subscribed outright (`ensure_upstream`).
    assert_eq!(
        contract.summaries(),
        [
            "GET /openmeter/customers 200",
            "POST /openmeter/customers 201",
            "GET /openmeter/plans 200",
            "POST /openmeter/subscriptions 201",
        ]
    );
    let exchanges = contract.exchanges();
    assert!(
        query_has(&exchanges[0], "filter[key][eq]", "app-1:user-1"),
        "customers are looked up with a deepObject filter: {:?}",
        exchanges[0].query
    );
    assert!(query_has(&exchanges[2], "filter[key][eq]", PLAN));
    contract.assert_no_violation();
}

#[tokio::test]
async fn ensure_of_a_known_identity_passes_the_proxy_with_no_violation() {
    let contract = Contract::bootstrapped().await;
    let identity =
        Identity::from_parts("app-1", "user-1", SubjectRule::Upstream).expect("identity");
    let direct = Provisioner::new(
        contract.direct_client(),
        plan_key(),
        EnsureConfig::default(),
    );
    let first = direct.ensure(&identity).await.expect("setup ensure");

    let provisioner = Provisioner::new(contract.client(), plan_key(), EnsureConfig::default());
    let again = provisioner.ensure(&identity).await.expect("ensure");

    assert!(!again.created.customer && !again.created.subscription);
    assert_eq!(again.customer_id, first.customer_id);
    assert_eq!(again.subscription_id, first.subscription_id);
    assert_eq!(
        contract.summaries(),
        [
            "GET /openmeter/customers 200",
            "GET /openmeter/subscriptions 200",
        ]
    );
    assert!(query_has(
        &contract.exchanges()[1],
        "filter[customer_id][eq]",
        &first.customer_id
    ));
    contract.assert_no_violation();
}

#[tokio::test]
async fn a_conflicting_subscription_create_answers_a_409_that_conforms() {
    let contract = Contract::bootstrapped().await;
    let identity =
        Identity::from_parts("app-1", "user-1", SubjectRule::Upstream).expect("identity");
    let direct = Provisioner::new(
        contract.direct_client(),
        plan_key(),
        EnsureConfig::default(),
    );
    let ensured = direct.ensure(&identity).await.expect("setup ensure");
    let plan = direct.default_plan().await.expect("the default plan");

    let body = CreateSubscription {
        customer: CustomerById {
            id: &ensured.customer_id,
        },
        plan: &plan,
    };
    let err = contract
        .client()
        .create_subscription(&body)
        .await
        .expect_err("the customer already has an active subscription");

    assert!(err.is_conflict(), "expected a 409, got {err}");
    assert_eq!(contract.summaries(), ["POST /openmeter/subscriptions 409"]);
    assert_eq!(
        contract.exchanges()[0].response_content_type,
        "application/problem+json"
    );
    contract.assert_no_violation();
}

#[tokio::test]
async fn a_duplicate_customer_create_answers_a_conflict_that_conforms() {
    let contract = Contract::start().await;
    contract
        .double
        .seed_customer("app-1:user-1", &["app-1:user-1"]);
    let key = Identity::from_parts("app-1", "user-1", SubjectRule::Upstream)
        .expect("identity")
        .customer_key();

    let err = contract
        .client()
        .create_customer(&key)
        .await
        .expect_err("the key is taken");

    // The spec documents 201/400/401/403 for create-customer; ensure treats
    // both 409 and a 400 saying "already exists" as a lost race.
    match &err {
        ApiError::Status { status, .. } => assert!(
            matches!(status, 400 | 409),
            "a duplicate key must be a client error, got {err}"
        ),
        other => panic!("expected a status error, got {other}"),
    }
    let exchanges = contract.exchanges();
    assert_eq!(exchanges.len(), 1);
    let exchange = &exchanges[0];
    assert_eq!(exchange.response_content_type, "application/problem+json");
    // OpenMeter answers a taken key with 409 Conflict, which the spec does
    // not list for create-customer (only 201/400/401/403). That one warning
    // is expected; any other violation (request body, problem body) fails.
    let violations: Vec<Value> = exchange
        .violations
        .as_deref()
        .map(|v| serde_json::from_str(v).expect("sl-violations is JSON"))
        .unwrap_or_default();
    for v in &violations {
        let message = v["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("Unable to match the returned status code"),
            "unexpected violation: {v}"
        );
    }
    let problem: Value = serde_json::from_slice(&exchange.response_body).expect("problem JSON");
    for field in ["status", "title", "instance", "detail"] {
        assert!(
            problem.get(field).is_some(),
            "BaseError requires {field}: {problem}"
        );
    }
}

#[tokio::test]
async fn a_401_for_a_wrong_token_conforms() {
    let contract = Contract::start().await;
    let key = Identity::from_parts("app-1", "user-1", SubjectRule::Upstream)
        .expect("identity")
        .customer_key();

    let err = contract
        .client_with_token("wrong-token")
        .find_customers(&key)
        .await
        .expect_err("the token is wrong");

    assert!(
        matches!(err, ApiError::Unauthorized { status: 401, .. }),
        "expected 401, got {err}"
    );
    assert_eq!(contract.summaries(), ["GET /openmeter/customers 401"]);
    assert_eq!(
        contract.double.calls(Route::ListCustomers),
        1,
        "the 401 came from the double, not from Prism"
    );
    assert_eq!(
        contract.exchanges()[0].response_content_type,
        "application/problem+json"
    );
    contract.assert_no_violation();
}

#[tokio::test]
async fn bootstrap_of_the_catalog_on_a_fresh_double_passes_with_no_violation() {
    let contract = Contract::start().await;

    let report = bootstrap(
        &contract.client(),
        &Catalog::builtin(&plan_key()),
        &BootstrapOptions::default(),
    )
    .await
    .expect("bootstrap");

    assert!(!report.failed(), "bootstrap failed:\n{report}");
    let summaries = contract.summaries();
    for step in [
        "POST /openmeter/meters 201",
        "POST /openmeter/features 201",
        "POST /openmeter/plans 201",
        "POST /openmeter/plans/{id}/publish 200",
    ] {
        assert!(
            summaries.iter().any(|s| s == step),
            "bootstrap did not {step}: {summaries:#?}"
        );
    }
    assert!(
        contract
            .exchanges()
            .iter()
            .all(|e| (200..300).contains(&e.status)),
        "every bootstrap call succeeds: {summaries:#?}"
    );
    assert_eq!(contract.double.plans().len(), 1);
    assert_eq!(contract.double.plans()[0].status, "active");
    contract.assert_no_violation();
}

/// livepeer/clearinghouse's `openmeter-collector/provision/catalog.json`,
/// copied unchanged (see `tests/blackbox/bootstrap/upstream_catalog.rs` for its commit).
fn upstream_catalog() -> Catalog {
    Catalog::from_file(&repo().join("tests/fixtures/upstream-catalog.json"))
        .expect("upstream's catalog reads")
}

#[tokio::test]
async fn bootstrap_of_the_upstream_catalog_on_a_fresh_double_passes_with_no_violation() {
    let contract = Contract::start().await;

    let report = bootstrap(
        &contract.client(),
        &upstream_catalog(),
        &BootstrapOptions::default(),
    )
    .await
    .expect("bootstrap");

    assert!(!report.failed(), "bootstrap failed:\n{report}");
    let summaries = contract.summaries();
    let count = |step: &str| summaries.iter().filter(|s| *s == step).count();
    assert_eq!(count("POST /openmeter/meters 201"), 6, "{summaries:#?}");
    assert_eq!(count("POST /openmeter/features 201"), 2, "{summaries:#?}");
    assert_eq!(count("POST /openmeter/plans 201"), 2, "{summaries:#?}");
    assert_eq!(
        count("POST /openmeter/plans/{id}/publish 200"),
        2,
        "{summaries:#?}"
    );
    let plan_bodies: Vec<Value> = contract
        .exchanges()
        .iter()
        .filter(|e| e.method == "POST" && e.path == "/openmeter/plans")
        .map(|e| serde_json::from_slice(&e.request_body).expect("a JSON body"))
        .collect();
    for body in &plan_bodies {
        assert_eq!(
            body["labels"]["meter_slug"], "network_fee_usd_micros",
            "{body}"
        );
        assert_eq!(
            body["phases"][0]["rate_cards"][0]["discounts"],
            json!({"usage": "5000000"}),
            "{body}"
        );
        assert!(body.get("settlement_mode").is_none(), "{body}");
    }
    let statuses: Vec<String> = contract
        .double
        .plans()
        .into_iter()
        .map(|p| p.status)
        .collect();
    assert_eq!(statuses, ["active", "active"]);
    contract.assert_no_violation();
}

#[tokio::test]
async fn every_event_of_a_pipeline_batch_validates_against_metering_event() {
    let contract = Contract::bootstrapped().await;
    let validator = metering_event_validator();
    // The validator is not vacuous: it rejects what the spec forbids.
    let mut bad = first_mapped_event();
    bad["colour"] = json!("red");
    assert!(!violations_of(&validator, &bad).is_empty());
    assert!(!violations_of(&validator, &json!({"id": "x"})).is_empty());

    let (_, settled) =
        support::pipeline::run_fixtures(contract.client(), DeadLetterSink::memory()).await;
    assert!(settled, "every fixture record settles");

    let batches: Vec<Exchange> = contract
        .exchanges()
        .into_iter()
        .filter(|e| e.via == Via::Direct)
        .collect();
    assert!(!batches.is_empty(), "the pipeline sent no batch");
    let mut checked = 0;
    for batch in &batches {
        assert_eq!(batch.summary(), "POST /openmeter/events 202");
        assert!(batch.request_content_type.starts_with(CLOUDEVENT_BATCH));
        let events: Vec<Value> =
            serde_json::from_slice(&batch.request_body).expect("a batch is a JSON array");
        for event in &events {
            let errors = violations_of(&validator, event);
            assert!(
                errors.is_empty(),
                "event violates MeteringEvent: {errors:#?}\n{event:#}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no event was checked");
    assert_eq!(checked, contract.double.delivery_count());
    // The ensure calls of the pipeline went through Prism, cleanly.
    contract.assert_no_violation();
}

#[tokio::test]
async fn page_paginated_list_responses_conform() {
    let contract = Contract::start().await;
    let double = &contract.double;
    // One more than the client's page size: every list takes two pages.
    const N: usize = 101;
    let plan_ids: Vec<String> = (0..N)
        .map(|i| double.seed_plan(PlanSeed::new(&format!("plan_{i:03}"), 1, "active")))
        .collect();
    for (i, plan_id) in plan_ids.iter().enumerate() {
        let key = format!("customer-{i:03}");
        let customer = double.seed_customer(&key, &[key.as_str()]);
        double.seed_subscription(&customer, plan_id, "active");
        let meter = double.seed_meter(json!({
            "name": format!("Meter {i}"),
            "key": format!("meter_{i:03}"),
            "aggregation": "sum",
            "event_type": "create_signed_ticket",
            "value_property": "$.network_fee_usd_micros",
        }));
        let _: Value = contract
            .direct_client()
            .send_json(
                "create feature",
                reqwest::Method::POST,
                "/openmeter/features",
                &[],
                Some(&json!({
                    "name": format!("Feature {i}"),
                    "key": format!("feature_{i:03}"),
                    "meter": {"id": meter},
                })),
            )
            .await
            .expect("seed a feature");
    }

    let client = contract.client();
    for (operation, path) in [
        ("list customers", "/openmeter/customers"),
        ("list plans", "/openmeter/plans"),
        ("list subscriptions", "/openmeter/subscriptions"),
        ("list meters", "/openmeter/meters"),
        ("list features", "/openmeter/features"),
    ] {
        let all: Vec<Value> = client
            .list_all(operation, path, &[])
            .await
            .unwrap_or_else(|e| panic!("{operation}: {e}"));
        assert_eq!(all.len(), N, "{operation} returns every item");
    }

    let expected: Vec<String> = ["customers", "plans", "subscriptions", "meters", "features"]
        .iter()
        .flat_map(|r| {
            let page = format!("GET /openmeter/{r} 200");
            [page.clone(), page]
        })
        .collect();
    assert_eq!(contract.summaries(), expected);
    let exchanges = contract.exchanges();
    for (i, exchange) in exchanges.iter().enumerate() {
        let page = (i % 2 + 1).to_string();
        assert!(
            query_has(exchange, "page[number]", &page) && query_has(exchange, "page[size]", "100"),
            "deepObject page parameters: {:?}",
            exchange.query
        );
    }
    contract.assert_no_violation();
}

/// A signed-ticket CloudEvent of `subject` at `time`, worth `micros`.
fn billed_event(
    id: &str,
    subject: &str,
    time: chrono::DateTime<chrono::Utc>,
    micros: u64,
) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": "contract", "type": "create_signed_ticket",
        "subject": subject, "time": time.to_rfc3339(),
        "data": {"billable_usd_micros": micros, "pipeline": "live"},
    })
}

#[tokio::test]
async fn a_meter_query_by_customer_passes_the_proxy_with_no_violation() {
    let contract = Contract::start().await;
    let double = &contract.double;
    let meter = double.seed_meter(json!({
        "name": "Billable", "key": "billable_usd_micros", "aggregation": "sum",
        "event_type": "create_signed_ticket", "value_property": "$.billable_usd_micros",
        "dimensions": {"pipeline": "$.pipeline"},
    }));
    let customer = double.seed_customer("app-1:user-1", &["app-1:user-1"]);
    let now = chrono::Utc::now();
    let events = json!([
        billed_event("a", "app-1:user-1", now, 1_500),
        billed_event("b", "app-1:user-1", now, 250),
        billed_event("c", "someone-else", now, 9_999),
    ]);
    contract
        .direct_client()
        .ingest_batch(Bytes::from(events.to_string()))
        .await
        .expect("ingest directly");
    let body = json!({
        "from": (now - chrono::Duration::days(1)).to_rfc3339(),
        "to": (now + chrono::Duration::days(1)).to_rfc3339(),
        "granularity": "P1D",
        "group_by_dimensions": ["pipeline"],
        "filters": {"dimensions": {"customer_id": {"eq": customer}}},
    });

    let result: Value = contract
        .client()
        .send_json(
            "query meter",
            reqwest::Method::POST,
            &format!("/openmeter/meters/{meter}/query"),
            &[],
            Some(&body),
        )
        .await
        .expect("query the meter");

    assert_eq!(
        contract.summaries(),
        ["POST /openmeter/meters/{id}/query 200"]
    );
    let rows = result["data"].as_array().expect("rows");
    let total: u64 = rows
        .iter()
        .map(|r| {
            r["value"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(total, 1_750);
    assert!(rows
        .iter()
        .all(|r| r["dimensions"] == json!({"customer_id": customer, "pipeline": "live"})));
    contract.assert_no_violation();
}

/// Every call of an audit by totals that descends to events: customers and
/// subscriptions in pages, meter queries over every subject and over some,
/// a minute's events listed by subject and time, and a lookup by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_by_totals_down_to_a_minutes_events_passes_the_proxy_with_no_violation() {
    let contract = Contract::bootstrapped().await;
    let provisioner = Provisioner::new(
        contract.direct_client(),
        plan_key(),
        EnsureConfig::default(),
    );
    let price = "3500".parse().expect("price");
    let rules = ticketmeter::Contract::default();
    let customer_of = |line: &str| match decode(line.as_bytes(), DEFAULT_MAX_BYTES, &rules) {
        Ok(Decoded::Ticket(ticket)) => *ticket,
        other => panic!("a ticket: {other:?}"),
    };
    let signed = |id: &str| {
        json!({"id": id, "type": "create_signed_ticket", "data": {"request_id": format!("r-{id}"),
            "auth_id": "app-1:user-1", "computed_fee": "1200000000000",
            "current_time": chrono::Utc::now().to_rfc3339()}})
        .to_string()
    };
    provisioner
        .ensure(&customer_of(&signed("x")).identity)
        .await
        .expect("ensure");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let lines = [signed("kept"), signed("lost")];
    let kept = map(customer_of(&lines[0]), &price, &rules).event;
    contract
        .direct_client()
        .ingest_batch(Bytes::from(json!([kept]).to_string()))
        .await
        .expect("ingest directly");
    let dir = tempfile::tempdir().expect("dir");
    let source = dir.path().join("signed.jsonl");
    std::fs::write(&source, lines.join("\n") + "\n").expect("source");

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ticketmeter"))
        .args(["audit", "--file"])
        .arg(&source)
        .args(["--dlq-file"])
        .arg(dir.path().join("none.jsonl"))
        .args(["--from", "10m", "--settle", "0s", "--format", "json"])
        .env_clear()
        .env(
            "OPENMETER_URL",
            format!("http://{}/api/v3", contract.tap.addr),
        )
        .env("OPENMETER_API_KEY", TOKEN)
        .env("ETH_USD_PRICE", "3500")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run the audit");

    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(report["customers"][0]["missing"], json!(["lost"]));
    let summaries = contract.summaries();
    for call in [
        "GET /openmeter/customers 200",
        "GET /openmeter/subscriptions 200",
        "POST /openmeter/meters/{id}/query 200",
        "GET /openmeter/events 200",
    ] {
        assert!(summaries.iter().any(|s| s == call), "{call}: {summaries:?}");
    }
    contract.assert_no_violation();
}

#[tokio::test]
async fn cancel_and_unschedule_cancelation_pass_the_proxy_with_no_violation() {
    let contract = Contract::start().await;
    let double = &contract.double;
    let plan = double.seed_plan(PlanSeed::new(PLAN, 1, "active"));
    let customer = double.seed_customer("app-1:user-1", &["app-1:user-1"]);
    let subscription = double.seed_subscription(&customer, &plan, "active");
    let client = contract.client();
    let call = |path: &'static str, body: Option<Value>| {
        let client = client.clone();
        let path = format!("/openmeter/subscriptions/{subscription}/{path}");
        async move {
            client
                .send_json::<Value, Value>(
                    "subscription",
                    reqwest::Method::POST,
                    &path,
                    &[],
                    body.as_ref(),
                )
                .await
                .expect("subscription call")
        }
    };

    let at_period_end = call("cancel", Some(json!({"timing": "next_billing_cycle"}))).await;
    let resumed = call("unschedule-cancelation", None).await;
    let ended = call("cancel", Some(json!({}))).await;

    assert_eq!(
        [
            &at_period_end["status"],
            &resumed["status"],
            &ended["status"]
        ],
        ["canceled", "active", "inactive"]
    );
    assert!(at_period_end["active_to"].is_string() && resumed.get("active_to").is_none());
    assert_eq!(
        contract.summaries(),
        [
            "POST /openmeter/subscriptions/{id}/cancel 200",
            "POST /openmeter/subscriptions/{id}/unschedule-cancelation 200",
            "POST /openmeter/subscriptions/{id}/cancel 200",
        ]
    );
    contract.assert_no_violation();
}

#[tokio::test]
async fn meter_query_and_cancel_refusals_conform() {
    let contract = Contract::start().await;
    let double = &contract.double;
    let meter = double.seed_meter(json!({
        "name": "Tickets", "key": "signed_ticket_count", "aggregation": "count",
        "event_type": "create_signed_ticket",
    }));
    let plan = double.seed_plan(PlanSeed::new(PLAN, 1, "active"));
    let customer = double.seed_customer("app-1:user-1", &["app-1:user-1"]);
    let ended = double.seed_subscription(&customer, &plan, "inactive");
    let client = contract.client();

    let unknown_customer =
        json!({"filters": {"dimensions": {"customer_id": {"eq": "01J00000000000000000000000"}}}});
    let query = client
        .send_json::<Value, _>(
            "query meter",
            reqwest::Method::POST,
            &format!("/openmeter/meters/{meter}/query"),
            &[],
            Some(&unknown_customer),
        )
        .await
        .expect_err("no such customer");
    let cancel = client
        .send_json::<Value, _>(
            "cancel subscription",
            reqwest::Method::POST,
            &format!("/openmeter/subscriptions/{ended}/cancel"),
            &[],
            Some(&json!({})),
        )
        .await
        .expect_err("an ended subscription cannot be canceled");

    assert_eq!((query.status(), cancel.status()), (Some(404), Some(403)));
    assert_eq!(
        contract.summaries(),
        [
            "POST /openmeter/meters/{id}/query 404",
            "POST /openmeter/subscriptions/{id}/cancel 403",
        ]
    );
    contract.assert_no_violation();
}

/// Guards the other tests against vacuous passes: a request the spec
/// forbids is caught by Prism and flagged by the tap.
#[tokio::test]
async fn the_proxy_flags_a_request_that_violates_the_spec() {
    let contract = Contract::start().await;
    let response = plain_http()
        .post(format!(
            "http://{}/api/v3/openmeter/customers",
            contract.tap.addr
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"key": "k", "colour": "red"}))
        .send()
        .await
        .expect("POST through the tap");

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let exchanges = contract.exchanges();
    assert_eq!(exchanges.len(), 1);
    assert!(exchanges[0].prism_error() && !exchanges[0].clean());
    let problem: Value = serde_json::from_slice(&exchanges[0].response_body).expect("problem");
    let messages = problem["validation"].to_string();
    assert!(
        messages.contains("name") && messages.contains("colour"),
        "{problem:#}"
    );
    assert_eq!(
        contract.double.calls(Route::CreateCustomer),
        0,
        "Prism stopped the invalid request"
    );
}

/// Guards the response-body check (which covers what Prism lets through,
/// see "Response bodies") against vacuous passes.
#[test]
fn a_response_body_that_breaks_its_schema_is_flagged() {
    let exchange = |path: &str, body: Value| Exchange {
        method: "POST".into(),
        path: path.into(),
        query: Vec::new(),
        request_content_type: "application/json".into(),
        request_body: Bytes::new(),
        via: Via::Prism,
        status: 200,
        response_content_type: "application/json".into(),
        violations: None,
        response_body: Bytes::from(body.to_string()),
    };
    let query = "/openmeter/meters/01ARZ3NDEKTSV4RRFFQ69G5FAV/query";
    assert!(exchange(query, json!({"data": []})).clean());
    let undeclared = exchange(query, json!({"data": [], "colour": "red"}));
    assert!(!undeclared.clean(), "{:?}", undeclared.body_violations());
    let cancel = "/openmeter/subscriptions/01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel";
    assert!(!exchange(cancel, json!({"id": 5})).clean());
}

#[test]
fn prism_is_installed_where_the_contract_test_looks_for_it() {
    assert!(Prism::binary().is_file());
}
