//! Resource shapes, serialized exactly as the spec's response schemas.
//!
//! They double as the typed snapshots tests read (`Double::customers()`, …),
//! so every field is public. Optional fields are omitted, never `null`,
//! because the spec declares them non-nullable.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

pub type Labels = BTreeMap<String, String>;

/// A fresh spec-valid ULID (`^[0-7][0-9A-HJKMNP-TV-Z]{25}$`), greater than
/// every id made before it (a monotonic generator: within one millisecond
/// the random part counts up), so the order things were made in is their
/// id order, the order `sort=id` asks for.
pub(crate) fn new_id() -> String {
    static IDS: std::sync::Mutex<ulid::Generator> = std::sync::Mutex::new(ulid::Generator::new());
    let mut ids = IDS.lock().unwrap_or_else(|e| e.into_inner());
    // Only 2^80 ids in one millisecond exhaust it; then a fresh one.
    ids.generate()
        .unwrap_or_else(|_| ulid::Ulid::new())
        .to_string()
}

/// `BillingCustomerUsageAttribution`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageAttribution {
    pub subject_keys: Vec<String>,
}

/// `BillingCustomer`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Customer {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_attribution: Option<UsageAttribution>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_address: Option<Value>,
}

impl Customer {
    /// The subject keys attributed to this customer (possibly empty).
    pub fn subject_keys(&self) -> &[String] {
        self.usage_attribution
            .as_ref()
            .map(|u| u.subject_keys.as_slice())
            .unwrap_or(&[])
    }
}

/// `BillingPlan`. Phases are kept as the JSON the client sent (a usage
/// discount normalized as the server stores it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub id: String,
    pub name: String,
    /// Stored as sent, never answered: the server keeps a plan's labels as
    /// its metadata, and the v3 plan read does not return them
    /// (`api/v3/handlers/plans/convert.go`, `ToAPIBillingPlan`).
    #[serde(skip_serializing)]
    pub labels: Option<Labels>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    pub key: String,
    pub version: u32,
    pub currency: String,
    pub billing_cadence: String,
    pub pro_rating_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_from: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_to: Option<DateTime<Utc>>,
    /// `draft`, `active`, `archived` or `scheduled`: computed at the moment
    /// it is read (see [`Plan::status_at`]).
    pub status: String,
    /// Read-only in v3: a plan created there gets `credit_then_invoice`
    /// (`openmeter/productcatalog/plan/service/plan.go`, `CreatePlan`).
    pub settlement_mode: String,
    pub phases: Vec<Value>,
}

/// What the server gives a plan created without a settlement mode.
pub(crate) const DEFAULT_SETTLEMENT_MODE: &str = "credit_then_invoice";

impl Plan {
    /// The status at `at`, from the effective period as the server computes
    /// it on every read (`productcatalog/plan.go`, `PlanMeta.StatusAt`):
    /// `draft` without an effective period, `scheduled` before
    /// `effective_from`, `active` until `effective_to`, `archived` after.
    /// (At the exact instant of a boundary the server says `invalid`, which
    /// the spec cannot carry; here the boundary belongs to the later state.)
    pub fn status_at(&self, at: DateTime<Utc>) -> &'static str {
        match (self.effective_from, self.effective_to) {
            (None, None) => "draft",
            (Some(from), _) if from > at => "scheduled",
            (_, Some(to)) if to <= at => "archived",
            _ => "active",
        }
    }

    /// A copy with `status` computed at `at`.
    pub fn observed_at(&self, at: DateTime<Utc>) -> Plan {
        Plan {
            status: self.status_at(at).into(),
            ..self.clone()
        }
    }
}

/// What [`crate::Double::seed_plan`] inserts. Start from
/// [`PlanSeed::new`] and override fields with struct update syntax.
#[derive(Debug, Clone)]
pub struct PlanSeed {
    pub key: String,
    pub version: u32,
    /// `draft`, `active`, `archived` or `scheduled`.
    pub status: String,
    pub deleted: bool,
    pub currency: String,
    pub name: String,
    pub billing_cadence: String,
    /// `credit_then_invoice` or `credit_only` (a plan made through another
    /// API than v3's create).
    pub settlement_mode: String,
    /// `BillingPlanPhase` JSON; `None` means one phase with no rate cards.
    pub phases: Option<Vec<Value>>,
}

impl PlanSeed {
    pub fn new(key: &str, version: u32, status: &str) -> Self {
        Self {
            key: key.into(),
            version,
            status: status.into(),
            deleted: false,
            currency: "USD".into(),
            name: key.into(),
            billing_cadence: "P1M".into(),
            settlement_mode: DEFAULT_SETTLEMENT_MODE.into(),
            phases: None,
        }
    }
}

/// `BillingSubscriptionPlanReference`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanRef {
    pub id: String,
    pub key: String,
    pub version: u32,
}

/// `BillingSubscriptionItem`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriptionItem {
    pub id: String,
    pub active_from: DateTime<Utc>,
    pub rate_card: Value,
}

/// `BillingSubscriptionPhase`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriptionPhase {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub key: String,
    pub active_from: DateTime<Utc>,
    pub items: Vec<SubscriptionItem>,
}

/// `BillingSubscription`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subscription {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub name: String,
    pub active_from: DateTime<Utc>,
    /// When the subscription stops (set by a cancel); open-ended when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_to: Option<DateTime<Utc>>,
    pub customer_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanRef>,
    pub invoice_currency: String,
    pub cost_basis_mode: String,
    pub cost_basis_pins: Vec<Value>,
    pub billing_cadence: String,
    pub billing_anchor: DateTime<Utc>,
    /// `active`, `inactive`, `canceled` or `scheduled`: computed at the
    /// moment it is read (see [`Subscription::status_at`]).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement_mode: Option<String>,
    pub phases: Vec<SubscriptionPhase>,
}

impl Subscription {
    /// The status at `at`, as the server computes it on every read
    /// (`subscription/subscription.go`, `GetStatusAt`; `subscription/state.go`):
    /// `scheduled` before `active_from`, then `active`, or `canceled` while a
    /// set `active_to` is still ahead (canceled = still active until then),
    /// and `inactive` from `active_to` on.
    pub fn status_at(&self, at: DateTime<Utc>) -> &'static str {
        if self.active_from > at {
            return "scheduled";
        }
        match self.active_to {
            None => "active",
            Some(to) if to > at => "canceled",
            Some(_) => "inactive",
        }
    }

    /// Whether the subscription still covers some time from `at` on, which
    /// is what makes a second subscription of its customer overlap it.
    pub fn runs_after(&self, at: DateTime<Utc>) -> bool {
        self.active_to.is_none_or(|to| to > at)
    }

    /// A copy with `status` computed at `at`.
    pub fn observed_at(&self, at: DateTime<Utc>) -> Subscription {
        Subscription {
            status: self.status_at(at).into(),
            ..self.clone()
        }
    }
}

/// `Meter`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Meter {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    pub key: String,
    pub aggregation: String,
    pub event_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_from: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_property: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<BTreeMap<String, String>>,
}

/// `Feature`. `meter` is a `FeatureMeterReference`, `unit_cost` a
/// `BillingFeatureUnitCost`, both echoed as given.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feature {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meter: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_cost: Option<Value>,
}

impl Feature {
    /// The referenced meter's id, if the feature is metered.
    pub fn meter_id(&self) -> Option<&str> {
        self.meter.as_ref()?.get("id")?.as_str()
    }
}

/// One event delivery as received (duplicates included).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The CloudEvent as delivered (null optional fields dropped).
    pub event: Value,
    pub received_at: DateTime<Utc>,
    /// True when an earlier delivery had the same `(source, id)`.
    pub duplicate: bool,
    /// The customer owning the event's subject when it arrived.
    pub customer_id: Option<String>,
}
