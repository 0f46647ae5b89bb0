//! The catalog's meters, features and plans, as the spec names them. What
//! OpenMeter refuses of them is checked by [`super::rules`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use super::newtypes::{DimensionName, Duration, JsonPath, Key, Numeric};
use crate::domain::PlanKey;

/// `MeterAggregation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Sum,
    Count,
    UniqueCount,
    Avg,
    Min,
    Max,
    Latest,
}

impl Aggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sum => "sum",
            Self::Count => "count",
            Self::UniqueCount => "unique_count",
            Self::Avg => "avg",
            Self::Min => "min",
            Self::Max => "max",
            Self::Latest => "latest",
        }
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A meter to create. Meters are immutable in OpenMeter, so this is the
/// definition an existing meter is compared against, never pushed onto it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterSpec {
    pub key: Key,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub aggregation: Aggregation,
    pub event_type: String,
    /// Required for every aggregation but `count`, which ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_property: Option<JsonPath>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimensions: BTreeMap<DimensionName, JsonPath>,
}

/// A feature, tied to a catalog meter by the meter's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub key: Key,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The key of a meter in this catalog (`meter_key` upstream).
    #[serde(alias = "meter_key")]
    pub meter: Key,
}

/// `BillingPrice`'s type, the ones a catalog may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceType {
    Free,
    Flat,
    Unit,
}

/// `BillingPrice`: `{type, amount}`. A plain struct rather than a tagged
/// enum, so a bad amount is reported at its own line (serde buffers tagged
/// enums and loses the position); [`super::Catalog::validate`] checks that
/// `amount` is present exactly when the type takes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[serde(rename = "type")]
    pub kind: PriceType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Numeric>,
}

impl Price {
    /// A unit price: `amount` per unit of the feature's meter.
    pub fn unit(amount: Numeric) -> Self {
        Self {
            kind: PriceType::Unit,
            amount: Some(amount),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.kind {
            PriceType::Free => "free",
            PriceType::Flat => "flat",
            PriceType::Unit => "unit",
        }
    }

    pub fn amount(&self) -> Option<&Numeric> {
        self.amount.as_ref()
    }

    /// A price per unit of usage (OpenMeter's usage-based rate card), as
    /// opposed to a flat fee or nothing.
    pub fn is_usage(&self) -> bool {
        self.kind == PriceType::Unit
    }

    /// Whether anything is charged (OpenMeter reads `free` as no price).
    pub(super) fn is_billable(&self) -> bool {
        self.kind != PriceType::Free
    }

    /// Why the spec would reject this price, if it would.
    pub(super) fn problem(&self) -> Option<&'static str> {
        match (self.kind, &self.amount) {
            (PriceType::Free, Some(_)) => Some("a free price takes no amount"),
            (PriceType::Flat | PriceType::Unit, None) => Some("required for this price type"),
            _ => None,
        }
    }
}

/// `BillingRateCardDiscounts`, the part a catalog may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discounts {
    /// Units of usage free in each billing period before the price applies
    /// (upstream's included allowance: "5000000" USD micros is $5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Numeric>,
}

/// A rate card; `feature` is a catalog feature key (sent as `{id}`), which
/// OpenMeter requires to equal the card's own key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateCardSpec {
    pub key: Key,
    pub name: String,
    /// `feature_key` upstream.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "feature_key"
    )]
    pub feature: Option<Key>,
    /// How often the card is billed; see [`Self::billing_cadence`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_cadence: Option<Duration>,
    pub price: Price,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discounts: Option<Discounts>,
}

impl RateCardSpec {
    /// The cadence sent to OpenMeter. A usage price is billed every period:
    /// the card's own cadence, else the plan's (OpenMeter creates a usage
    /// rate card without one but refuses to publish it). A flat or free
    /// price without one is charged once.
    pub fn billing_cadence<'a>(&'a self, plan: &'a PlanSpec) -> Option<&'a Duration> {
        match &self.billing_cadence {
            Some(own) => Some(own),
            None if self.price.is_usage() => Some(&plan.billing_cadence),
            None => None,
        }
    }

    /// The free units of its usage discount, if it has one.
    pub fn usage_discount(&self) -> Option<&Numeric> {
        self.discounts.as_ref().and_then(|d| d.usage.as_ref())
    }
}

/// A plan phase; only the last may omit `duration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    pub key: Key,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    pub rate_cards: Vec<RateCardSpec>,
}

/// A plan customers are subscribed to. `subscribe_role`,
/// `settlement_mode` and `metadata` are upstream's; what becomes of them
/// is in [`crate::bootstrap::plan_meta`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    #[serde(deserialize_with = "plan_key")]
    pub key: PlanKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe_role: Option<SubscribeRole>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub currency: String,
    pub billing_cadence: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_mode: Option<SettlementMode>,
    /// Sent as the plan's `labels` (the v3 name, also accepted here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", alias = "labels")]
    pub metadata: BTreeMap<String, String>,
    pub phases: Vec<PhaseSpec>,
}

impl PlanSpec {
    /// The mode OpenMeter settles this plan's subscriptions with.
    pub fn effective_settlement_mode(&self) -> SettlementMode {
        self.settlement_mode
            .unwrap_or(SettlementMode::SERVER_DEFAULT)
    }
}

fn plan_key<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PlanKey, D::Error> {
    let raw = String::deserialize(deserializer)?;
    raw.parse().map_err(serde::de::Error::custom)
}

/// Which customers a plan is for. New owner customers are subscribed to
/// the `owner` plan, everyone else to the default plan (the `m2m` one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SubscribeRole {
    /// An app owner, billed on a shared owner wallet.
    #[serde(rename = "owner")]
    Owner,
    /// A machine-to-machine client or a managed end user.
    #[serde(rename = "m2m")]
    M2m,
}

impl SubscribeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::M2m => "m2m",
        }
    }
}

impl fmt::Display for SubscribeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `BillingSettlementMode`: how a subscription's usage is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettlementMode {
    /// Credits first, the rest invoiced; what OpenMeter gives a plan
    /// created without a mode.
    CreditThenInvoice,
    /// Against credits only, never invoiced.
    CreditOnly,
}

impl SettlementMode {
    /// What OpenMeter sets on a plan created without a mode (see
    /// [`crate::bootstrap::plan_meta`]), and so what a catalog without one means.
    pub const SERVER_DEFAULT: Self = Self::CreditThenInvoice;

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreditThenInvoice => "credit_then_invoice",
            Self::CreditOnly => "credit_only",
        }
    }
}

impl fmt::Display for SettlementMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::catalog::tests::{card, default_key};
    use crate::bootstrap::catalog::Catalog;

    #[test]
    fn unknown_price_field_is_rejected() {
        let r: Result<Price, _> = serde_json::from_str(r#"{"type":"unit","amount":"1","x":1}"#);
        assert!(r.is_err());
    }

    #[test]
    fn a_usage_rate_card_is_billed_at_the_plans_cadence_unless_it_has_its_own() {
        let mut catalog = Catalog::builtin(&default_key());
        let plan = catalog.plan.clone();
        let usage = &plan.phases[0].rate_cards[0];
        assert_eq!(
            usage.billing_cadence(&plan).map(Duration::as_str),
            Some("P1M")
        );

        card(&mut catalog).billing_cadence = "P1D".parse().ok();
        let plan = catalog.plan.clone();
        let own = &plan.phases[0].rate_cards[0];
        assert_eq!(
            own.billing_cadence(&plan).map(Duration::as_str),
            Some("P1D")
        );
    }

    #[test]
    fn a_flat_rate_card_without_a_cadence_is_charged_once() {
        let mut catalog = Catalog::builtin(&default_key());
        card(&mut catalog).price.kind = PriceType::Flat;
        let plan = &catalog.plan;
        assert_eq!(plan.phases[0].rate_cards[0].billing_cadence(plan), None);
    }
}
