//! The OpenMeter v3 HTTP client: Bearer auth, deepObject query strings,
//! problem+json errors, bounded retries of transient failures.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::endpoint::Endpoint;
use super::error::{ApiError, Problem};
use super::model::{
    CreateCustomer, CreateSubscription, CursorPage, Customer, IngestedEvent, MeterQuery,
    MeterQueryResult, MeterQueryRow, MeterRef, Page, Plan, Subscription, UsageAttribution,
};
use crate::domain::{CustomerKey, PlanKey};
use crate::metrics::{metrics, CallStatus};
use crate::retry::RetryPolicy;
use crate::secret::{ExposeSecret, Secret};

/// Page size for list calls; OpenMeter's default is smaller.
const PAGE_SIZE: u32 = 100;
/// A runaway server cannot make a list call loop for ever.
const MAX_PAGES: u32 = 1000;
/// Page size when reading a whole collection: the server's maximum
/// (`pkg/framework/commonhttp/pagination.go`, `MaxPageSize`).
pub(crate) const BULK_PAGE_SIZE: u32 = 1000;

/// Events per page when listing them: the server's maximum
/// (`meterevent.MaximumLimit`).
pub(crate) const EVENT_PAGE_SIZE: u32 = 100;

/// Filters of `GET /openmeter/events` (deepObject `filter[field][op]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EventQuery {
    pub source: Option<String>,
    pub kind: Option<String>,
    pub subject: Option<String>,
    /// RFC 3339 bounds on the event `time`: `time_from` and `time_to`
    /// inclusive, `time_before` exclusive.
    pub time_from: Option<String>,
    pub time_to: Option<String>,
    pub time_before: Option<String>,
    /// Any of these ids (`oeq`; ids must not contain a comma).
    pub ids: Vec<String>,
}

impl EventQuery {
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = Vec::new();
        let optional = [
            ("filter[source][eq]", &self.source),
            ("filter[type][eq]", &self.kind),
            ("filter[subject][eq]", &self.subject),
            ("filter[time][gte]", &self.time_from),
            ("filter[time][lte]", &self.time_to),
            ("filter[time][lt]", &self.time_before),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                params.push((name, value.clone()));
            }
        }
        if !self.ids.is_empty() {
            params.push(("filter[id][oeq]", self.ids.join(",")));
        }
        params
    }
}

/// One page of stored events; `next` is `None` on the last one.
#[derive(Debug)]
pub(super) struct EventPage {
    pub events: Vec<IngestedEvent>,
    pub next: Option<String>,
}

/// The pages of stored events matching a query, following the cursor until
/// the last page (or a cursor that does not move).
pub(crate) struct EventPages<'a> {
    client: &'a OpenMeterClient,
    query: &'a EventQuery,
    after: Option<String>,
    done: bool,
}

impl EventPages<'_> {
    /// The next page's events; `None` after the last page.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<IngestedEvent>>, ApiError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .client
            .list_events_page(self.query, self.after.as_deref())
            .await?;
        match page.next {
            Some(next) if Some(&next) != self.after.as_ref() => self.after = Some(next),
            _ => self.done = true,
        }
        Ok(Some(page.events))
    }
}

/// How the client talks to OpenMeter.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub endpoint: Endpoint,
    pub token: Option<Secret>,
    pub timeout: Duration,
    /// How transient failures are retried: the caller's role decides
    /// (`app` sets it).
    pub retry: RetryPolicy,
}

impl ClientConfig {
    /// Per-request timeout unless `OPENMETER_TIMEOUT` says otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    pub fn new(endpoint: Endpoint, token: Option<Secret>) -> Self {
        Self {
            endpoint,
            token,
            timeout: Self::DEFAULT_TIMEOUT,
            retry: RetryPolicy::one_shot(),
        }
    }
}

/// An OpenMeter API client; cheap to clone.
#[derive(Debug, Clone)]
pub struct OpenMeterClient {
    http: reqwest::Client,
    config: ClientConfig,
}

/// The ingest endpoint's content type for a JSON array of CloudEvents.
pub const CLOUDEVENT_BATCH: &str = "application/cloudevents-batch+json";

impl OpenMeterClient {
    pub fn new(config: ClientConfig) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(32)
            .user_agent(concat!("ticketmeter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Transport {
                operation: "build HTTP client",
                message: e.to_string(),
            })?;
        Ok(Self { http, config })
    }

    /// The same client (and connection pool), retrying by `retry`.
    pub(crate) fn with_retry(&self, retry: RetryPolicy) -> Self {
        let mut config = self.config.clone();
        config.retry = retry;
        Self {
            http: self.http.clone(),
            config,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.config.endpoint
    }

    /// Customers whose key equals `key` (OpenMeter filters; we re-check).
    pub async fn find_customers(&self, key: &CustomerKey) -> Result<Vec<Customer>, ApiError> {
        let filter = [("filter[key][eq]", key.as_str())];
        let all: Vec<Customer> = self
            .list_all("list customers", "/openmeter/customers", &filter)
            .await?;
        Ok(all
            .into_iter()
            .filter(|c| c.key == key.as_str() && c.deleted_at.is_none())
            .collect())
    }

    /// Customers whose usage-attribution subject keys include `subject`
    /// (OpenMeter filters; we re-check).
    pub async fn find_subject_owners(&self, subject: &str) -> Result<Vec<Customer>, ApiError> {
        let filter = [("filter[usage_attribution_subject_key][eq]", subject)];
        let all: Vec<Customer> = self
            .list_all("list customers", "/openmeter/customers", &filter)
            .await?;
        Ok(all
            .into_iter()
            .filter(|c| c.owns_subject(subject) && c.deleted_at.is_none())
            .collect())
    }

    /// Creates the customer whose key, name and one subject key are `key`.
    pub async fn create_customer(&self, key: &CustomerKey) -> Result<Customer, ApiError> {
        let body = CreateCustomer {
            key: key.as_str(),
            name: key.as_str(),
            usage_attribution: UsageAttribution {
                subject_keys: [key.as_str()],
            },
        };
        self.send_json(
            "create customer",
            Method::POST,
            "/openmeter/customers",
            &[],
            Some(&body),
        )
        .await
    }

    /// Every subscription of a customer, all pages.
    pub async fn customer_subscriptions(
        &self,
        customer_id: &str,
    ) -> Result<Vec<Subscription>, ApiError> {
        let filter = [("filter[customer_id][eq]", customer_id)];
        self.list_all("list subscriptions", "/openmeter/subscriptions", &filter)
            .await
    }

    pub async fn create_subscription(
        &self,
        body: &CreateSubscription<'_>,
    ) -> Result<Subscription, ApiError> {
        self.send_json(
            "create subscription",
            Method::POST,
            "/openmeter/subscriptions",
            &[],
            Some(body),
        )
        .await
    }

    /// Every version of the plan `key`, all pages.
    pub async fn plan_versions(&self, key: &PlanKey) -> Result<Vec<Plan>, ApiError> {
        let filter = [("filter[key][eq]", key.as_str())];
        let all: Vec<Plan> = self
            .list_all("list plans", "/openmeter/plans", &filter)
            .await?;
        Ok(all.into_iter().filter(|p| p.key == key.as_str()).collect())
    }

    /// Sends one JSON array of CloudEvents, serialised by the caller. A
    /// resend is safe: OpenMeter deduplicates events by id. The pipeline's
    /// client makes one attempt: the delivery stage owns retry and
    /// back-pressure.
    pub async fn ingest_batch(&self, body: Bytes) -> Result<(), ApiError> {
        let url = self.config.endpoint.ingest();
        let response = self
            .with_retries("ingest events", || {
                self.authorized(Method::POST, url.as_str())
                    .header(CONTENT_TYPE, CLOUDEVENT_BATCH)
                    .body(body.clone())
            })
            .await?;
        drop(response);
        Ok(())
    }

    /// The id of each live meter, by key (a query's path takes the id: the
    /// spec types it a ULID and the server checks requests against it).
    pub(crate) async fn meter_ids(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, ApiError> {
        let meters: Vec<MeterRef> = self
            .list_all("list meters", "/openmeter/meters", &[])
            .await?;
        Ok(meters
            .into_iter()
            .filter(|m| m.deleted_at.is_none())
            .map(|m| (m.key, m.id))
            .collect())
    }

    /// `POST /openmeter/meters/{meter}/query`, `meter` being its id.
    pub(crate) async fn query_meter(
        &self,
        meter: &str,
        query: &MeterQuery<'_>,
    ) -> Result<Vec<MeterQueryRow>, ApiError> {
        let path = format!("/openmeter/meters/{meter}/query");
        let result: MeterQueryResult = self
            .send_json("query meter", Method::POST, &path, &[], Some(query))
            .await?;
        Ok(result.data)
    }

    /// Every stored event matching `query`, a page at a time.
    pub(crate) fn event_pages<'a>(&'a self, query: &'a EventQuery) -> EventPages<'a> {
        EventPages {
            client: self,
            query,
            after: None,
            done: false,
        }
    }

    /// One page of stored events matching `query`, after the cursor `after`.
    async fn list_events_page(
        &self,
        query: &EventQuery,
        after: Option<&str>,
    ) -> Result<EventPage, ApiError> {
        let size = EVENT_PAGE_SIZE.to_string();
        let mut params = query.params();
        params.push(("page[size]", size));
        if let Some(cursor) = after {
            params.push(("page[after]", cursor.to_owned()));
        }
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page: CursorPage<IngestedEvent> = self
            .send_json::<_, ()>(
                "list events",
                Method::GET,
                "/openmeter/events",
                &pairs,
                None,
            )
            .await?;
        let next = page.meta.page.next.filter(|_| !page.data.is_empty());
        Ok(EventPage {
            events: page.data,
            next,
        })
    }

    /// Fetches every page of a page-paginated list.
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        filter: &[(&str, &str)],
    ) -> Result<Vec<T>, ApiError> {
        let mut items = Vec::new();
        for number in 1..=MAX_PAGES {
            let (n, s) = (number.to_string(), PAGE_SIZE.to_string());
            let mut query: Vec<(&str, &str)> = filter.to_vec();
            query.extend([("page[number]", n.as_str()), ("page[size]", s.as_str())]);
            let page: Page<T> = self
                .send_json::<_, ()>(operation, Method::GET, path, &query, None)
                .await?;
            let fetched = page.data.len();
            items.extend(page.data);
            if fetched == 0 || !page.meta.page.has_more(items.len() as u64) {
                break;
            }
        }
        Ok(items)
    }

    /// Page `number` of every customer of the organisation, 1,000 a page
    /// in id order (the ensure cache's warm-up).
    pub(crate) async fn customer_page(&self, number: u32) -> Result<Page<Customer>, ApiError> {
        self.bulk_page("list customers", "/openmeter/customers", number)
            .await
    }

    /// Page `number` of every subscription of the organisation, 1,000 a
    /// page in id order (the ensure cache's warm-up).
    pub(crate) async fn subscription_page(
        &self,
        number: u32,
    ) -> Result<Page<Subscription>, ApiError> {
        self.bulk_page("list subscriptions", "/openmeter/subscriptions", number)
            .await
    }

    /// Every customer of the organisation, a page at a time, in id order
    /// (the audit's accounts).
    pub(crate) async fn each_customer_page(
        &self,
        visit: impl FnMut(Vec<Customer>),
    ) -> Result<(), ApiError> {
        self.each_bulk_page("list customers", "/openmeter/customers", visit)
            .await
    }

    /// Every subscription of the organisation, a page at a time, in id
    /// order (the audit's accounts).
    pub(crate) async fn each_subscription_page(
        &self,
        visit: impl FnMut(Vec<Subscription>),
    ) -> Result<(), ApiError> {
        self.each_bulk_page("list subscriptions", "/openmeter/subscriptions", visit)
            .await
    }

    /// Every page of a whole collection, one after another, until the
    /// server's total is reached or a page comes back empty.
    async fn each_bulk_page<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        mut visit: impl FnMut(Vec<T>),
    ) -> Result<(), ApiError> {
        let mut fetched = 0u64;
        for number in 1.. {
            let page: Page<T> = self.bulk_page(operation, path, number).await?;
            let count = page.data.len() as u64;
            fetched += count;
            visit(page.data);
            if count == 0 || !page.meta.page.has_more(fetched) {
                break;
            }
        }
        Ok(())
    }

    /// A page of a whole collection, of the server's maximum size, sorted
    /// by id: new items (ULIDs grow with time) then land after every page
    /// already read rather than shifting later pages by one, as the
    /// default orders (customers by name, subscriptions by `active_from`)
    /// would while a listing runs.
    async fn bulk_page<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        number: u32,
    ) -> Result<Page<T>, ApiError> {
        let (n, s) = (number.to_string(), BULK_PAGE_SIZE.to_string());
        let query = [
            ("page[number]", n.as_str()),
            ("page[size]", s.as_str()),
            ("sort", "id"),
        ];
        self.send_json::<_, ()>(operation, Method::GET, path, &query, None)
            .await
    }

    /// One JSON call with bounded retries of transient failures.
    pub async fn send_json<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<T, ApiError> {
        let url = self.config.endpoint.url(path);
        let response = self
            .with_retries(operation, || {
                let request = self.authorized(method.clone(), &url).query(query);
                match body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await?;
        decode(operation, response).await
    }

    /// Retries transient failures ([`ApiError::is_transient`]) as the
    /// client's [`RetryPolicy`] says.
    async fn with_retries(
        &self,
        operation: &'static str,
        request: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ApiError> {
        let mut attempt = 1;
        loop {
            match self.execute(operation, request()).await {
                Err(e) if e.is_transient() && self.config.retry.retries_after(attempt) => {
                    let wait = self.config.retry.delay(attempt, e.retry_after());
                    // Debug only: the caller reports the failure once if
                    // the last attempt fails too.
                    tracing::debug!(operation, attempt, error = %e, ?wait, "retrying OpenMeter call");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn authorized(&self, method: Method, url: &str) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.config.token {
            Some(token) => request.bearer_auth(token.expose_secret()),
            None => request,
        }
    }

    /// Sends a request; any non-2xx becomes a typed error.
    async fn execute(
        &self,
        operation: &'static str,
        request: RequestBuilder,
    ) -> Result<Response, ApiError> {
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                metrics().upstream_call(operation, CallStatus::Error);
                return Err(ApiError::Transport {
                    operation,
                    message: transport_message(&e),
                });
            }
        };
        let status = response.status();
        metrics().upstream_call(operation, CallStatus::Http(status.as_u16()));
        if status.is_success() {
            return Ok(response);
        }
        Err(error_from(operation, status, response).await)
    }
}

async fn decode<T: DeserializeOwned>(
    operation: &'static str,
    response: Response,
) -> Result<T, ApiError> {
    let bytes = response.bytes().await.map_err(|e| ApiError::Transport {
        operation,
        message: transport_message(&e),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
        operation,
        message: e.to_string(),
    })
}

async fn error_from(operation: &'static str, status: StatusCode, response: Response) -> ApiError {
    let retry_after = retry_after(response.headers());
    let body = response.bytes().await.unwrap_or_default();
    let problem: Problem = serde_json::from_slice(&body).unwrap_or_default();
    let code = status.as_u16();
    if matches!(code, 401 | 403) {
        return ApiError::Unauthorized {
            operation,
            status: code,
            detail: problem.detail,
        };
    }
    ApiError::Status {
        operation,
        status: code,
        title: if problem.title.is_empty() {
            status.canonical_reason().unwrap_or_default().to_owned()
        } else {
            problem.title
        },
        detail: problem.detail,
        invalid_parameters: problem.invalid_parameters,
        retry_after,
    }
}

/// `Retry-After` in either of its forms (RFC 9110 §10.2.3): delay seconds,
/// or an HTTP-date, read as the wait from now (a date already past is no
/// wait). Rate-limiting gateways in front of OpenMeter send both.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers.get(RETRY_AFTER)?.to_str().ok()?, chrono::Utc::now())
}

fn retry_after_at(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (date.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or_default(),
    )
}

/// What went wrong, for people: where (the URL without its query, whose
/// percent-encoded filters say nothing to an operator and may name a
/// customer) and the innermost cause (`Connection refused (os error
/// 111)`), not reqwest's layers of wrappers each quoting the next.
fn transport_message(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out waiting for"
    } else if e.is_connect() {
        "cannot connect to"
    } else if e.is_body() || e.is_decode() {
        "could not read the answer of"
    } else {
        "request failed:"
    };
    let mut root: &dyn std::error::Error = e;
    while let Some(cause) = root.source() {
        root = cause;
    }
    let cause = if std::ptr::addr_eq(root, e as &dyn std::error::Error) {
        String::new()
    } else {
        format!(": {root}")
    };
    match e.url() {
        Some(url) => format!("{what} {}{cause}", without_query(url)),
        None => format!("{}{cause}", what.trim_end_matches(':')),
    }
}

fn without_query(url: &reqwest::Url) -> reqwest::Url {
    let mut url = url.clone();
    url.set_query(None);
    url
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    #[tokio::test]
    async fn a_transport_failure_names_the_url_without_its_query_and_the_root_cause() {
        let endpoint = Endpoint::parse("http://127.0.0.1:1/api/v3", None).unwrap();
        let mut config = ClientConfig::new(endpoint, None);
        config.retry = RetryPolicy::once();
        let client = OpenMeterClient::new(config).unwrap();
        let e = client
            .find_customers(&crate::domain::CustomerKey::listed("acme:alice"))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "OpenMeter unreachable (list customers): cannot connect to \
             http://127.0.0.1:1/api/v3/openmeter/customers: Connection refused (os error 111)"
        );
    }

    #[test]
    fn retry_after_reads_delay_seconds() {
        let now = Utc::now();
        assert_eq!(retry_after_at(" 7 ", now), Some(Duration::from_secs(7)));
    }

    #[test]
    fn retry_after_reads_an_http_date_as_the_wait_from_now() {
        let now = Utc.with_ymd_and_hms(2026, 12, 5, 8, 49, 30).unwrap();
        let wait = retry_after_at("Sat, 05 Dec 2026 08:49:37 GMT", now);
        assert_eq!(wait, Some(Duration::from_secs(7)));
    }

    #[test]
    fn retry_after_a_date_already_past_is_no_wait() {
        let now = Utc.with_ymd_and_hms(2026, 12, 5, 9, 0, 0).unwrap();
        let wait = retry_after_at("Sat, 05 Dec 2026 08:49:37 GMT", now);
        assert_eq!(wait, Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_that_is_neither_form_is_ignored() {
        assert_eq!(retry_after_at("soon", Utc::now()), None);
    }
}
