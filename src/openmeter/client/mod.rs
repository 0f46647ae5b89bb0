//! The OpenMeter v3 HTTP client: Bearer auth, deepObject query strings,
//! problem+json errors, bounded retries of transient failures.
//!
//! - [`config`]: where OpenMeter is and how the client talks to it;
//! - [`resources`]: the calls, one per resource and operation;
//! - [`pages`]: listing, page by page or by cursor;
//! - [`transport`]: one request: authorised, sent, retried, its failure typed;
//! - [`retry_after`]: OpenMeter's (or its gateway's) `Retry-After`.

pub(super) mod config;
pub(super) mod pages;
mod resources;
mod retry_after;
mod transport;

use std::time::Duration;

use super::endpoint::Endpoint;
use super::error::ApiError;
use crate::retry::RetryPolicy;
use config::ClientConfig;

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
}
