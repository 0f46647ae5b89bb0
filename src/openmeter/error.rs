//! What can go wrong talking to OpenMeter, classified so callers know
//! whether to retry (transient) or give up on the request (permanent).

use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// An `application/problem+json` body as OpenMeter sends it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Problem {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub invalid_parameters: Option<serde_json::Value>,
}

/// A failed OpenMeter call.
#[derive(Debug, Clone, Error)]
pub enum ApiError {
    /// Connection refused/reset, DNS, TLS or timeout: worth retrying.
    #[error("OpenMeter unreachable ({operation}): {message}")]
    Transport {
        operation: &'static str,
        message: String,
    },
    /// 401/403: the token is wrong, expired or lacks permissions.
    #[error(
        "OpenMeter refused the API token ({operation}: HTTP {status}{}): check OPENMETER_API_KEY \
         (a Konnect kpat_… token or an OpenMeter token) and its permissions",
        detail_suffix(.detail)
    )]
    Unauthorized {
        operation: &'static str,
        status: u16,
        detail: String,
    },
    /// Any other non-success status.
    #[error("OpenMeter {operation} failed: HTTP {status} {title}{}", detail_suffix(.detail))]
    Status {
        operation: &'static str,
        status: u16,
        title: String,
        detail: String,
        invalid_parameters: Option<serde_json::Value>,
        retry_after: Option<Duration>,
    },
    /// A success status whose body did not match the spec.
    #[error("OpenMeter {operation} answered with an unexpected body: {message}")]
    Decode {
        operation: &'static str,
        message: String,
    },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl ApiError {
    /// Transient errors are retried; permanent ones are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => is_transient_status(*status),
            Self::Unauthorized { .. } | Self::Decode { .. } => false,
        }
    }

    /// The HTTP status, when OpenMeter answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized { status, .. } | Self::Status { status, .. } => Some(*status),
            Self::Transport { .. } | Self::Decode { .. } => None,
        }
    }

    /// What OpenMeter said, for operators and dead letters.
    pub fn detail(&self) -> String {
        match self {
            Self::Status { title, detail, .. } if detail.is_empty() => title.clone(),
            Self::Status { detail, .. } | Self::Unauthorized { detail, .. } => detail.clone(),
            Self::Transport { message, .. } | Self::Decode { message, .. } => message.clone(),
        }
    }

    /// The server's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }
}

/// 408, 425, 429 and 5xx are worth retrying; other statuses are final.
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429) || (500..600).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> ApiError {
        ApiError::Status {
            operation: "test",
            status: code,
            title: "t".into(),
            detail: String::new(),
            invalid_parameters: None,
            retry_after: None,
        }
    }

    #[test]
    fn server_errors_and_throttling_are_transient() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(status(code).is_transient(), "{code}");
        }
    }

    #[test]
    fn client_errors_are_permanent() {
        for code in [400, 404, 409, 422] {
            assert!(!status(code).is_transient(), "{code}");
        }
    }

    #[test]
    fn unauthorized_message_tells_operator_to_check_the_token() {
        let e = ApiError::Unauthorized {
            operation: "list customers",
            status: 401,
            detail: String::new(),
        };
        assert!(e.to_string().contains("OPENMETER_API_KEY"));
        assert!(!e.is_transient());
    }
}
