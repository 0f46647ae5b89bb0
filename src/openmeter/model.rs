//! The slice of OpenMeter's v3 schemas we read and write. Reads are lenient
//! (unknown fields ignored); writes carry only fields the spec declares.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::UsdMicros;

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
pub(crate) struct CreateCustomer<'a> {
    pub(crate) key: &'a str,
    pub(crate) name: &'a str,
    pub(crate) usage_attribution: UsageAttribution<'a>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct UsageAttribution<'a> {
    pub(crate) subject_keys: [&'a str; 1],
}

/// `BillingSubscriptionPlanReference`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRef {
    pub id: String,
    pub key: String,
    pub version: u32,
}

/// `BillingSubscriptionStatus`; a status a newer server adds reads as
/// `Unknown` (and bills nothing here) rather than failing the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Active,
    Inactive,
    Canceled,
    Scheduled,
    #[serde(other)]
    Unknown,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Canceled => "canceled",
            Self::Scheduled => "scheduled",
            Self::Unknown => "unknown",
        }
    }
}

/// Compares with the spec's spelling (`status == "active"`).
impl PartialEq<&str> for SubscriptionStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `BillingPlanStatus`, with the same fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    Draft,
    Active,
    Archived,
    Scheduled,
    #[serde(other)]
    Unknown,
}

impl PlanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Active => "active",
            Self::Archived => "archived",
            Self::Scheduled => "scheduled",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for PlanStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `BillingSubscription`, as much of it as ensure needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub customer_id: String,
    pub status: SubscriptionStatus,
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
            && match self.status {
                SubscriptionStatus::Active | SubscriptionStatus::Scheduled => true,
                SubscriptionStatus::Canceled => self.active_to.is_some_and(|to| to > now),
                SubscriptionStatus::Inactive | SubscriptionStatus::Unknown => false,
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
    pub status: PlanStatus,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub billing_cadence: String,
    #[serde(default)]
    pub deleted_at: Option<String>,
    /// Read-only in v3; absent means the spec's default,
    /// `credit_then_invoice`.
    #[serde(default)]
    pub settlement_mode: Option<String>,
    #[serde(default)]
    pub phases: serde_json::Value,
}

impl Plan {
    /// A version customers can subscribe to now: OpenMeter refuses a
    /// version that is not active at the time of the create
    /// (`productcatalog/subscription/service/create.go`), so a `scheduled`
    /// one does not count.
    pub fn is_subscribable(&self) -> bool {
        self.deleted_at.is_none() && self.status == PlanStatus::Active
    }

    /// Of a plan's versions, the newest live draft that is newer than every
    /// subscribable one: the draft a publish would make current.
    pub fn newest_draft(versions: &[Plan]) -> Option<&Plan> {
        let live = || versions.iter().filter(|p| p.deleted_at.is_none());
        let published = live()
            .filter(|p| p.is_subscribable())
            .map(|p| p.version)
            .max();
        live()
            .filter(|p| p.status == PlanStatus::Draft && published.is_none_or(|v| p.version > v))
            .max_by_key(|p| p.version)
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
pub(crate) struct Page<T> {
    pub(crate) data: Vec<T>,
    pub(crate) meta: PageMetaEnvelope,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageMetaEnvelope {
    pub(crate) page: PageMeta,
}

/// `PageMeta`, of which only the total is needed (the spec types its
/// fields as JSON numbers).
#[derive(Debug, Deserialize)]
pub(crate) struct PageMeta {
    pub(crate) total: serde_json::Number,
}

impl PageMeta {
    /// Whether a later page may hold more items.
    pub(crate) fn has_more(&self, fetched_so_far: u64) -> bool {
        self.total
            .as_u64()
            .is_some_and(|total| fetched_so_far < total)
    }
}

// ---- metering events and billing periods, read back by the audit -------

/// A page of a cursor-paginated list (`*PaginatedResponse` with `CursorMeta`).
#[derive(Debug, Deserialize)]
pub(crate) struct CursorPage<T> {
    pub(crate) data: Vec<T>,
    pub(crate) meta: CursorMetaEnvelope,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CursorMetaEnvelope {
    pub(crate) page: CursorMeta,
}

/// `CursorMetaPage`. The server sets `next` on every full page, so the last
/// page may be empty.
#[derive(Debug, Deserialize)]
pub(crate) struct CursorMeta {
    #[serde(default)]
    pub(crate) next: Option<String>,
}

/// `MeteringIngestedEvent`: a stored event and what OpenMeter makes of it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IngestedEvent {
    pub event: StoredEvent,
    #[serde(default)]
    pub customer: Option<CustomerReference>,
    pub ingested_at: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    pub validation_errors: Vec<EventValidationError>,
}

/// `MeteringEvent` as stored; `data` keeps only what the audit reads.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct StoredEvent {
    pub id: String,
    #[serde(default)]
    pub source: String,
    pub subject: String,
    #[serde(default)]
    pub time: Option<String>,
    #[serde(default)]
    pub data: Option<StoredEventData>,
}

/// The `data` fields ticketmeter writes that the audit sums and matches.
/// Lenient: a field of an unexpected type reads as absent.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct StoredEventData {
    #[serde(default, deserialize_with = "lenient::text")]
    pub fee_wei: Option<String>,
    #[serde(default, deserialize_with = "lenient::amount")]
    pub network_fee_usd_micros: Option<UsdMicros>,
    /// The signed time, when the event was sent with a later `time`.
    #[serde(default, deserialize_with = "lenient::text")]
    pub signed_at: Option<String>,
    /// The id this event stands in for (an audit repair under a derived id).
    #[serde(default, deserialize_with = "lenient::text")]
    pub original_id: Option<String>,
}

// ---- meter queries, read by the audit's totals ---------------------------

/// `Meter`, as much as a query needs: the path takes its id, never its key.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct MeterRef {
    pub(crate) id: String,
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) deleted_at: Option<String>,
}

/// `MeterQueryRequest`: a meter grouped by subject in windows of
/// `granularity` (UTC, OpenMeter's default time zone), optionally for some
/// subjects only.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MeterQuery<'a> {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) granularity: &'static str,
    pub(crate) group_by_dimensions: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) filters: Option<MeterQueryFilters<'a>>,
}

/// `MeterQueryFilters` with the one filter the audit uses.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MeterQueryFilters<'a> {
    pub(crate) dimensions: SubjectFilter<'a>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SubjectFilter<'a> {
    pub(crate) subject: AnyOf<'a>,
}

/// `QueryFilterStringMapItem` with `in` (at most 100 values).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AnyOf<'a> {
    #[serde(rename = "in")]
    pub(crate) any_of: &'a [&'a str],
}

/// `MeterQueryResult`.
#[derive(Debug, Deserialize)]
pub(crate) struct MeterQueryResult {
    pub(crate) data: Vec<MeterQueryRow>,
}

/// `MeterQueryRow`: `value` is a decimal string (a float64's, see the
/// audit's `totals`); of its dimensions only the subject is kept (a month's
/// query holds a row per customer).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct MeterQueryRow {
    pub(crate) value: String,
    pub(crate) from: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    pub(crate) dimensions: RowDimensions,
}

/// The `subject` of `MeterQueryRow.dimensions`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RowDimensions {
    #[serde(default)]
    pub(crate) subject: Option<String>,
}

/// `CustomerReference`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CustomerReference {
    pub id: String,
}

/// `MeteringIngestedEventValidationError`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct EventValidationError {
    #[serde(default)]
    pub message: String,
}

mod lenient {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    use crate::domain::UsdMicros;

    pub(super) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    }

    /// A decimal amount, as a number (its exact digits) or a string.
    pub(super) fn amount<'de, D: Deserializer<'de>>(d: D) -> Result<Option<UsdMicros>, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Number(n) => n.to_string().parse().ok(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(version: u32, status: &str, deleted: bool) -> Plan {
        serde_json::from_value(serde_json::json!({
            "id": format!("p{version}"), "key": "k", "version": version, "status": status,
            "deleted_at": deleted.then_some("2026-01-01T00:00:00Z"),
        }))
        .unwrap()
    }

    #[test]
    fn a_status_a_newer_server_adds_reads_as_unknown() {
        let s: SubscriptionStatus = serde_json::from_str(r#""paused""#).unwrap();
        assert_eq!(s, SubscriptionStatus::Unknown);
        let p: PlanStatus = serde_json::from_str(r#""retired""#).unwrap();
        assert_eq!(p, PlanStatus::Unknown);
        assert_eq!(
            serde_json::to_string(&SubscriptionStatus::Canceled).unwrap(),
            r#""canceled""#
        );
    }

    #[test]
    fn the_newest_draft_is_the_newest_live_one_above_every_published_version() {
        let versions = [
            plan(1, "active", false),
            plan(2, "draft", false),
            plan(3, "draft", true),
        ];
        assert_eq!(Plan::newest_draft(&versions).map(|p| p.version), Some(2));
        let stale = [plan(1, "draft", false), plan(2, "active", false)];
        assert!(Plan::newest_draft(&stale).is_none());
        let unpublished = [plan(1, "draft", false), plan(2, "draft", false)];
        assert_eq!(Plan::newest_draft(&unpublished).map(|p| p.version), Some(2));
    }
}
