//! What can go wrong talking to OpenMeter, and the one place that decides
//! whom a failure concerns ([`classify`]): ensure, deliver, bootstrap and
//! the API all act on its answer.

use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// An `application/problem+json` body as OpenMeter sends it.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Problem {
    #[serde(default)]
    pub(crate) title: String,
    #[serde(default)]
    pub(crate) detail: String,
    #[serde(default)]
    pub(crate) invalid_parameters: Option<serde_json::Value>,
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
    /// Any other non-success status. A 404 or 405 on a read is nearly
    /// always a wrong `OPENMETER_URL`, so it says so.
    #[error(
        "OpenMeter {operation} failed: HTTP {status} {title}{}{}",
        detail_suffix(.detail),
        url_hint(operation, *status)
    )]
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

/// The hint a 404/405 gets, unless the call names an object that may
/// really be missing (a subscription's plan, a meter being queried).
fn url_hint(operation: &str, status: u16) -> &'static str {
    let names_an_object = operation.starts_with("create subscription");
    if matches!(status, 404 | 405) && !names_an_object {
        " (check OPENMETER_URL: OpenMeter's API base, e.g. http://openmeter:8888/api/v3, \
         or https://us.api.konghq.com/v3/openmeter for Konnect)"
    } else {
        ""
    }
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl ApiError {
    /// Whether OpenMeter may answer differently later (unreachable,
    /// overloaded, or a success body we could not read, e.g. a proxy's):
    /// the one definition, which [`classify`] starts from and the client's
    /// retries follow.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Decode { .. } => true,
            Self::Status { status, .. } => is_transient_status(*status),
            Self::Unauthorized { .. } => false,
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

    /// Whether OpenMeter answered 409 Conflict: the status alone. Whether a
    /// create lost a race is [`classify`]'s [`ErrorClass::Conflict`].
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }
}

/// What a refusal's detail says that its status does not: the one place
/// OpenMeter's English is read. OpenMeter's problem `type` is one per
/// status (`api/v3/apierrors/errors_ctors.go`: every 400 is
/// `.../bad-request`, every 409 `.../resource-conflict`), so where two
/// refusals share a status their words are all that tells them apart.
struct Said {
    /// The object exists already. OpenMeter itself answers a duplicate key
    /// 409 (`openmeter/customer/errors.go`'s `KeyConflictError` is a
    /// `models.GenericConflictError`, which
    /// `pkg/framework/commonhttp/encoder.go` answers 409); some servers and
    /// proxies answer a unique-key violation 400 with these words.
    exists: bool,
    /// The refusal is about the plan: a subscription create refused
    /// because the plan version is not active now or deleted is a 400
    /// `models.NewGenericValidationError` ("plan %s@%d is not active at
    /// %s", `openmeter/productcatalog/subscription/service/create.go`), as
    /// a refusal of the customer would be.
    names_the_plan: bool,
}

impl Said {
    fn of(e: &ApiError) -> Self {
        let text = e.detail().to_ascii_lowercase();
        Self {
            exists: ["already exists", "conflict", "duplicate"]
                .iter()
                .any(|words| text.contains(words)),
            names_the_plan: text.contains("plan"),
        }
    }
}

/// The OpenMeter call that failed: what a status means depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    FindCustomer,
    CreateCustomer,
    FindSubscriptions,
    ResolvePlan,
    CreateSubscription,
    Ingest,
    /// Bootstrap and `check`: meters, features, plans (reads and creates).
    Catalog,
}

impl Call {
    /// Whether the call creates something another caller may have created
    /// first.
    fn creates(self) -> bool {
        matches!(
            self,
            Self::CreateCustomer | Self::CreateSubscription | Self::Catalog
        )
    }
}

/// Whom a failure concerns, and so what the caller does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// OpenMeter is unavailable or overloaded: retry later.
    Transient,
    /// What was sent was refused (ingest 400/413/422: isolate and
    /// dead-letter those events, the rest of the batch goes through; a
    /// catalog object: report it, the other objects go on).
    Rejected,
    /// Something about one customer was refused (its creation, its
    /// subscription, its billing setup): dead-letter that customer's events
    /// and keep billing everyone else.
    Customer,
    /// Token, URL or plan is wrong: nothing succeeds until an operator acts,
    /// so consumption pauses.
    Configuration,
    /// A create collided with something that exists (a lost create race,
    /// or a retried create that had landed). The caller reads it back; one
    /// it cannot read back concerns what was created (ensure:
    /// [`ErrorClass::Customer`]; bootstrap: that object).
    Conflict,
}

/// Classifies a failed call, by status, call and what OpenMeter's detail
/// says ([`Said`]).
///
/// - Transport failures, 408/425/429/5xx and unreadable success bodies are
///   transient ([`ApiError::is_transient`]).
/// - A create answered 409 (or 400 "already exists") is a conflict: read
///   back what exists.
/// - 401/403 (token) and 404/405 (URL) concern everyone; so does any
///   refusal of the plan lookup.
/// - A refused ingest or catalog write concerns what was sent.
/// - Refusals of a customer's lookup, creation or subscription concern that
///   customer: OpenMeter answers 409 for "invalid billing setup"
///   (`billing/validators/subscription`) and for a second subscription
///   (`subscription/errors.go`), 400/422 for a customer it will not store.
///   A subscription create refused for the plan's sake (the detail names
///   the plan, e.g. a version not active now) concerns everyone.
pub(crate) fn classify(call: Call, e: &ApiError) -> ErrorClass {
    if e.is_transient() {
        return ErrorClass::Transient;
    }
    let status = match e {
        ApiError::Status { status, .. } => *status,
        ApiError::Unauthorized { .. } | ApiError::Transport { .. } | ApiError::Decode { .. } => {
            return ErrorClass::Configuration
        }
    };
    let said = Said::of(e);
    if call.creates() && (status == 409 || (status == 400 && said.exists)) {
        return ErrorClass::Conflict;
    }
    if matches!(status, 401 | 403)
        || (matches!(status, 404 | 405) && call != Call::CreateSubscription)
    {
        return ErrorClass::Configuration;
    }
    match call {
        Call::Ingest | Call::Catalog => ErrorClass::Rejected,
        Call::ResolvePlan => ErrorClass::Configuration,
        Call::CreateSubscription if matches!(status, 400 | 404) && said.names_the_plan => {
            ErrorClass::Configuration
        }
        Call::FindCustomer | Call::CreateCustomer | Call::FindSubscriptions => ErrorClass::Customer,
        Call::CreateSubscription => ErrorClass::Customer,
    }
}

/// 408, 425, 429 and 5xx are worth retrying; other statuses are final.
pub(crate) fn is_transient_status(status: u16) -> bool {
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

    fn with_detail(code: u16, detail: &str) -> ApiError {
        ApiError::Status {
            operation: "test",
            status: code,
            title: "t".into(),
            detail: detail.into(),
            invalid_parameters: None,
            retry_after: None,
        }
    }

    #[test]
    fn a_create_answered_409_is_a_conflict_to_read_back() {
        let refused = with_detail(409, "invalid billing setup: missing tax details");
        for call in [
            Call::CreateCustomer,
            Call::CreateSubscription,
            Call::Catalog,
        ] {
            assert_eq!(classify(call, &refused), ErrorClass::Conflict);
        }
        let exists = with_detail(400, "customer with key already exists");
        assert_eq!(
            classify(Call::CreateCustomer, &exists),
            ErrorClass::Conflict
        );
        assert_eq!(classify(Call::Ingest, &status(409)), ErrorClass::Rejected);
    }

    #[test]
    fn an_unreadable_success_body_is_transient_for_every_caller() {
        let e = ApiError::Decode {
            operation: "t",
            message: "expected a customer".into(),
        };
        assert!(e.is_transient());
        assert_eq!(classify(Call::FindCustomer, &e), ErrorClass::Transient);
    }

    #[test]
    fn a_duplicate_key_as_openmeter_words_it_is_a_conflict_to_read_back() {
        // `openmeter/customer/errors.go`: a `GenericConflictError`, so 409.
        let taken = with_detail(
            409,
            "key \"k\" is already used by an another customer in the namespace default",
        );
        assert_eq!(classify(Call::CreateCustomer, &taken), ErrorClass::Conflict);
    }

    #[test]
    fn a_plan_version_openmeter_says_is_not_active_concerns_everyone() {
        // `openmeter/productcatalog/subscription/service/create.go`.
        let e = with_detail(
            400,
            "plan p@2 is not active at 2026-09-09 00:00:00 +0000 UTC",
        );
        assert_eq!(
            classify(Call::CreateSubscription, &e),
            ErrorClass::Configuration
        );
    }

    #[test]
    fn a_subscription_refused_for_the_plan_concerns_everyone() {
        let e = with_detail(400, "plan version is not active");
        assert_eq!(
            classify(Call::CreateSubscription, &e),
            ErrorClass::Configuration
        );
    }

    #[test]
    fn a_refused_customer_concerns_that_customer() {
        for code in [400, 422] {
            assert_eq!(
                classify(Call::CreateCustomer, &status(code)),
                ErrorClass::Customer
            );
        }
    }

    #[test]
    fn token_and_url_errors_concern_everyone() {
        let token = ApiError::Unauthorized {
            operation: "t",
            status: 403,
            detail: String::new(),
        };
        for call in [Call::FindCustomer, Call::Ingest, Call::CreateSubscription] {
            assert_eq!(classify(call, &token), ErrorClass::Configuration);
        }
        assert_eq!(
            classify(Call::Ingest, &status(404)),
            ErrorClass::Configuration
        );
    }

    #[test]
    fn a_refused_catalog_object_concerns_that_object() {
        assert_eq!(
            classify(
                Call::Catalog,
                &with_detail(400, "rate card needs billing_cadence")
            ),
            ErrorClass::Rejected
        );
        assert_eq!(
            classify(Call::Catalog, &status(401)),
            ErrorClass::Configuration
        );
    }

    #[test]
    fn ingest_refusals_concern_the_events() {
        for code in [400, 413, 422] {
            assert_eq!(classify(Call::Ingest, &status(code)), ErrorClass::Rejected);
        }
    }

    #[test]
    fn unavailability_is_transient_whatever_the_call() {
        for call in [Call::CreateCustomer, Call::Ingest, Call::ResolvePlan] {
            assert_eq!(classify(call, &status(503)), ErrorClass::Transient);
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
