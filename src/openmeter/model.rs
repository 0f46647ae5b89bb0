//! The slice of OpenMeter's v3 schemas we read and write. Reads are lenient
//! (unknown fields ignored); writes carry only fields the spec declares.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `BillingCustomer`, as much of it as ensure needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Customer {
    pub id: String,
    pub key: String,
    #[serde(default)]
    pub usage_attribution: Option<SubjectKeys>,
    #[serde(default)]
    pub deleted_at: Option<String>,
}

/// `BillingCustomerUsageAttribution`, as read back.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SubjectKeys {
    #[serde(default)]
    pub subject_keys: Vec<String>,
}

impl Customer {
    /// Whether usage sent with `subject` is attributed to this customer.
    pub fn owns_subject(&self, subject: &str) -> bool {
        self.usage_attribution
            .as_ref()
            .is_some_and(|u| u.subject_keys.iter().any(|k| k == subject))
    }
}

/// `CreateCustomerRequest`.
#[derive(Debug, Clone, Serialize)]
pub struct CreateCustomer<'a> {
    pub key: &'a str,
    pub name: &'a str,
    pub usage_attribution: UsageAttribution<'a>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UsageAttribution<'a> {
    pub subject_keys: [&'a str; 1],
}

/// `BillingSubscriptionPlanReference`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRef {
    pub id: String,
    pub key: String,
    pub version: u32,
}

/// `BillingSubscription`, as much of it as ensure needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub customer_id: String,
    pub status: String,
    /// When the subscription became (or becomes) active: invoicing bills a
    /// usage rate card only for events at or after this instant.
    pub active_from: DateTime<Utc>,
    /// When a canceled subscription stops billing.
    #[serde(default)]
    pub active_to: Option<DateTime<Utc>>,
    /// The billing period length, an ISO 8601 duration (`P1M`).
    #[serde(default)]
    pub billing_cadence: String,
    /// Where billing periods are aligned.
    #[serde(default)]
    pub billing_anchor: Option<DateTime<Utc>>,
    #[serde(default)]
    pub plan: Option<PlanRef>,
    #[serde(default)]
    pub deleted_at: Option<String>,
}

impl Subscription {
    /// Whether this subscription bills usage at `now`. OpenMeter's
    /// `canceled` means "active until `active_to`" and `scheduled` starts
    /// later (openmeterio/openmeter `subscription/state.go`); a customer has
    /// at most one such subscription.
    pub fn is_current(&self, now: DateTime<Utc>) -> bool {
        self.deleted_at.is_none()
            && match self.status.as_str() {
                "active" | "scheduled" => true,
                "canceled" => self.active_to.is_some_and(|to| to > now),
                _ => false,
            }
    }
}

/// `BillingSubscriptionCreate`.
#[derive(Debug, Clone, Serialize)]
pub struct CreateSubscription<'a> {
    pub customer: CustomerById<'a>,
    pub plan: &'a PlanRef,
}

#[derive(Debug, Clone, Serialize)]
pub struct CustomerById<'a> {
    pub id: &'a str,
}

/// `BillingPlan`; phases stay raw JSON so the bootstrap can compare them.
#[derive(Debug, Clone, Deserialize)]
pub struct Plan {
    pub id: String,
    pub key: String,
    pub version: u32,
    pub status: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub billing_cadence: String,
    #[serde(default)]
    pub deleted_at: Option<String>,
    #[serde(default)]
    pub phases: serde_json::Value,
}

impl Plan {
    /// A version customers can subscribe to now: OpenMeter refuses a
    /// version that is not active at the time of the create
    /// (`productcatalog/subscription/service/create.go`), so a `scheduled`
    /// one does not count.
    pub fn is_subscribable(&self) -> bool {
        self.deleted_at.is_none() && self.status == "active"
    }

    pub fn reference(&self) -> PlanRef {
        PlanRef {
            id: self.id.clone(),
            key: self.key.clone(),
            version: self.version,
        }
    }
}

/// A page of a page-paginated list (`*PagePaginatedResponse`).
#[derive(Debug, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub meta: PageMetaEnvelope,
}

#[derive(Debug, Deserialize)]
pub struct PageMetaEnvelope {
    pub page: PageMeta,
}

/// `PageMeta`: the spec types these as JSON numbers.
#[derive(Debug, Deserialize)]
pub struct PageMeta {
    pub number: serde_json::Number,
    pub size: serde_json::Number,
    pub total: serde_json::Number,
}

impl PageMeta {
    /// Whether a later page may hold more items.
    pub fn has_more(&self, fetched_so_far: u64) -> bool {
        self.total
            .as_u64()
            .is_some_and(|total| fetched_so_far < total)
    }
}
