//! Where OpenMeter is and how the client talks to it.

use std::time::Duration;

use crate::openmeter::endpoint::Endpoint;
use crate::retry::RetryPolicy;
use crate::secret::Secret;

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
