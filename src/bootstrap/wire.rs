//! The request and response bodies of the meter, feature and plan calls.
//! Writes carry only fields the spec declares (`additionalProperties:
//! false` everywhere); reads keep only what the bootstrap compares.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::catalog::{
    Aggregation, DimensionName, Duration, FeatureSpec, JsonPath, MeterSpec, Numeric, PhaseSpec,
    PlanSpec, Price, RateCardSpec,
};
use super::plan_meta;

/// `CreateMeterRequest`.
#[derive(Debug, Serialize)]
pub(super) struct CreateMeterRequest<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub key: &'a str,
    pub aggregation: Aggregation,
    pub event_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_property: Option<&'a JsonPath>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub dimensions: &'a BTreeMap<DimensionName, JsonPath>,
}

impl<'a> From<&'a MeterSpec> for CreateMeterRequest<'a> {
    fn from(m: &'a MeterSpec) -> Self {
        Self {
            name: &m.name,
            description: m.description.as_deref(),
            key: m.key.as_str(),
            aggregation: m.aggregation,
            event_type: &m.event_type,
            value_property: m.value_property.as_ref(),
            dimensions: &m.dimensions,
        }
    }
}

/// `Meter`, the fields that define it.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Meter {
    pub id: String,
    pub key: String,
    pub aggregation: String,
    pub event_type: String,
    #[serde(default)]
    pub value_property: Option<String>,
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    #[serde(default)]
    pub deleted_at: Option<String>,
}

/// `{ "id": … }`: `FeatureMeterReference` and `FeatureReference` alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct IdRef {
    pub id: String,
}

/// `CreateFeatureRequest`.
#[derive(Debug, Serialize)]
pub(super) struct CreateFeatureRequest<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub key: &'a str,
    pub meter: IdRef,
}

impl<'a> CreateFeatureRequest<'a> {
    pub(super) fn new(f: &'a FeatureSpec, meter_id: &str) -> Self {
        Self {
            name: &f.name,
            description: f.description.as_deref(),
            key: f.key.as_str(),
            meter: IdRef {
                id: meter_id.to_owned(),
            },
        }
    }
}

/// `Feature`, as much as the bootstrap compares.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Feature {
    pub id: String,
    pub key: String,
    #[serde(default)]
    pub meter: Option<IdRef>,
    #[serde(default)]
    pub deleted_at: Option<String>,
}

/// `CreatePlanRequest`: the plan's `metadata` goes as `labels`; its role
/// and settlement mode have no field here (see [`plan_meta`]).
#[derive(Debug, Serialize)]
pub(super) struct CreatePlanRequest<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<&'a str, &'a str>,
    pub key: &'a str,
    pub currency: &'a str,
    pub billing_cadence: &'a Duration,
    pub phases: Vec<PhaseRequest<'a>>,
}

/// `BillingPlanPhase` as written.
#[derive(Debug, Serialize)]
pub(super) struct PhaseRequest<'a> {
    pub name: &'a str,
    pub key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<&'a Duration>,
    pub rate_cards: Vec<RateCardRequest<'a>>,
}

/// `BillingRateCard` as written: the feature goes by id, as the spec says;
/// a usage price always carries its billing cadence, which OpenMeter
/// requires to publish the plan.
#[derive(Debug, Serialize)]
pub(super) struct RateCardRequest<'a> {
    pub name: &'a str,
    pub key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<IdRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_cadence: Option<&'a Duration>,
    pub price: &'a Price,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discounts: Option<DiscountsRequest<'a>>,
}

/// `BillingRateCardDiscounts` as written: the catalog's usage discount is
/// already in its v3 form, a decimal string of free units.
#[derive(Debug, Serialize)]
pub(super) struct DiscountsRequest<'a> {
    pub usage: &'a Numeric,
}

impl<'a> CreatePlanRequest<'a> {
    /// The request for `plan`; `feature_id` resolves a catalog feature key
    /// (the caller has checked every one resolves).
    pub(super) fn new(plan: &'a PlanSpec, feature_id: &dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            name: &plan.name,
            description: plan.description.as_deref(),
            labels: plan_meta::labels(plan),
            key: plan.key.as_str(),
            currency: &plan.currency,
            billing_cadence: &plan.billing_cadence,
            phases: plan
                .phases
                .iter()
                .map(|p| PhaseRequest::new(plan, p, feature_id))
                .collect(),
        }
    }
}

impl<'a> PhaseRequest<'a> {
    fn new(
        plan: &'a PlanSpec,
        phase: &'a PhaseSpec,
        feature_id: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        Self {
            name: &phase.name,
            key: phase.key.as_str(),
            duration: phase.duration.as_ref(),
            rate_cards: phase
                .rate_cards
                .iter()
                .map(|c| RateCardRequest::new(plan, c, feature_id))
                .collect(),
        }
    }
}

impl<'a> RateCardRequest<'a> {
    fn new(
        plan: &'a PlanSpec,
        card: &'a RateCardSpec,
        feature_id: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        Self {
            name: &card.name,
            key: card.key.as_str(),
            feature: card
                .feature
                .as_ref()
                .and_then(|f| feature_id(f.as_str()))
                .map(|id| IdRef { id }),
            billing_cadence: card.billing_cadence(plan),
            price: &card.price,
            discounts: card
                .usage_discount()
                .map(|usage| DiscountsRequest { usage }),
        }
    }
}

/// `BillingPlanPhase` as read back, for comparison only.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct PhaseRead {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub rate_cards: Vec<RateCardRead>,
}

/// `BillingRateCard` as read back, for comparison only.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct RateCardRead {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub feature: Option<IdRef>,
    #[serde(default)]
    pub billing_cadence: Option<String>,
    #[serde(default)]
    pub price: Option<PriceRead>,
    #[serde(default)]
    pub discounts: Option<DiscountsRead>,
}

/// `BillingRateCardDiscounts` as read back.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct DiscountsRead {
    #[serde(default)]
    pub usage: Option<String>,
    #[serde(default)]
    pub percentage: Option<serde_json::Number>,
}

/// `BillingPrice` as read back: any type, any amount.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct PriceRead {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub amount: Option<String>,
}
