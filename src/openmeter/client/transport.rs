//! One request: authorised, sent, retried while its failure is transient,
//! and any failure typed, in words an operator can act on.

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::retry_after::retry_after;
use super::OpenMeterClient;
use crate::metrics::{metrics, CallStatus};
use crate::openmeter::error::{ApiError, Problem};
use crate::secret::ExposeSecret;

impl OpenMeterClient {
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
    pub(super) async fn with_retries(
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

    pub(super) fn authorized(&self, method: Method, url: &str) -> RequestBuilder {
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
    use crate::openmeter::{ClientConfig, Endpoint, OpenMeterClient};
    use crate::retry::RetryPolicy;

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
}
