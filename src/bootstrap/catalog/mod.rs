//! The catalog the bootstrap creates: meters, features and plans.
//!
//! It is plain data an operator may write as YAML or JSON, and upstream's
//! `catalog.json` (livepeer/clearinghouse `openmeter-collector/provision/
//! catalog.json`) is read as it is: `$` keys annotate ([`super::annotations`]),
//! `meter_key` and `feature_key` are the names it gives a feature's meter and
//! a rate card's feature, and `plans` lists plans chosen by `subscribe_role`
//! ([`super::plan_meta`]). Every string the
//! API constrains (keys, JSONPaths, amounts, durations) is a newtype checked
//! while parsing, so a bad value is reported with the parser's line and
//! column; cross-references, and what OpenMeter refuses when it publishes a
//! plan, are checked afterwards by [`Catalog::validate`], whose problems a
//! file's catalog reports at their lines too.
//!
//! - [`newtypes`]: the checked strings;
//! - [`model`]: meters, features, plans and their prices;
//! - [`rules`]: what [`Catalog::validate`] refuses, beside the model;
//! - [`load`]: reading a catalog as written, from a file;
//! - [`builtin`]: the catalog built in;
//! - [`error`]: its errors, problems and notices.

mod builtin;
mod error;
mod load;
mod model;
mod newtypes;
mod rules;

use std::sync::Arc;

use super::lines::Lines;
use super::plan_meta;
use crate::domain::PlanKey;

pub(super) use error::joined;
pub(crate) use error::Problem;
pub use error::{CatalogError, Notice};
pub(super) use model::{Aggregation, FeatureSpec, MeterSpec, PhaseSpec, Price, RateCardSpec};
pub use model::{PlanSpec, SettlementMode, SubscribeRole};
pub(crate) use newtypes::JsonPath;
use newtypes::Key;
pub(super) use newtypes::{DimensionName, Duration, Numeric};

/// Everything `ticketmeter bootstrap` makes sure exists.
///
/// A file writes one `plan`, or a `plans` list; `plan` is the default plan
/// either way (see [`Catalog::plan_key`]), and a list's other plans are
/// kept in the order written, so a problem names the field as written.
///
/// It is read and written as a [`load::CatalogFile`] (the serde impls sit
/// there).
#[derive(Debug, Clone)]
pub struct Catalog {
    pub meters: Vec<MeterSpec>,
    pub features: Vec<FeatureSpec>,
    /// The default plan: the single `plan`, or of `plans` the `m2m` one
    /// (else the first without a role, else the first).
    pub plan: PlanSpec,
    /// A `plans` list's other plans, in the order written.
    other_plans: Vec<PlanSpec>,
    /// Where `plan` stands in a `plans` list; `None` for a single `plan`.
    default_at: Option<usize>,
    /// Where each field is written, for a catalog read from a file.
    lines: Option<Arc<Lines>>,
}

/// The same meters, features and plans, however they were read.
impl PartialEq for Catalog {
    fn eq(&self, other: &Self) -> bool {
        self.meters == other.meters
            && self.features == other.features
            && self.plan == other.plan
            && self.other_plans == other.other_plans
            && self.default_at == other.default_at
    }
}

impl Eq for Catalog {}

impl Catalog {
    /// The default plan's key: the plan every customer without a role of
    /// its own is subscribed to (the one `OPENMETER_DEFAULT_PLAN_KEY`
    /// should name).
    pub fn plan_key(&self) -> &PlanKey {
        &self.plan.key
    }

    /// The key of the plan written for `role`, if one is. A customer of a
    /// role no plan names gets the default plan ([`Self::plan_key`]).
    pub fn plan_for(&self, role: SubscribeRole) -> Option<&PlanKey> {
        self.plans()
            .find(|p| p.subscribe_role == Some(role))
            .map(|p| &p.key)
    }

    /// Every plan, in the order written.
    pub fn plans(&self) -> impl Iterator<Item = &PlanSpec> {
        self.plans_written().into_iter().map(|(_, p)| p)
    }

    /// Every plan with the field it is written as (`plan`, `plans[1]`), in
    /// the order written.
    pub(super) fn plans_written(&self) -> Vec<(String, &PlanSpec)> {
        let Some(at) = self.default_at else {
            return vec![("plan".to_owned(), &self.plan)];
        };
        let mut plans: Vec<&PlanSpec> = self.other_plans.iter().collect();
        plans.insert(at.min(plans.len()), &self.plan);
        plans
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("plans[{i}]"), p))
            .collect()
    }

    /// What of the catalog is not sent to OpenMeter, and why, each at its
    /// line when read from a file (see [`super::plan_meta`]).
    pub fn notices(&self) -> Vec<Notice> {
        let mut notices: Vec<Notice> = self
            .plans_written()
            .iter()
            .flat_map(|(at, plan)| plan_meta::notices(at, plan))
            .collect();
        if let Some(lines) = &self.lines {
            for notice in &mut notices {
                notice.line = lines.line(&notice.field);
            }
        }
        notices
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::builtin::builtin_plan;
    use super::*;

    pub(crate) fn default_key() -> PlanKey {
        "clearinghouse_default_ppu".parse().expect("valid key")
    }

    pub(crate) fn card(catalog: &mut Catalog) -> &mut RateCardSpec {
        &mut catalog.plan.phases[0].rate_cards[0]
    }

    pub(crate) fn problem_fields(catalog: &Catalog) -> Vec<String> {
        match catalog.validate() {
            Ok(()) => Vec::new(),
            Err(problems) => problems.into_iter().map(|p| p.field).collect(),
        }
    }

    /// A catalog of the built-in meters and features with `plans` as given.
    pub(crate) fn with_plans(plans: serde_json::Value) -> Result<Catalog, serde_json::Error> {
        let builtin = serde_json::to_value(Catalog::builtin(&default_key()))?;
        serde_json::from_value(serde_json::json!({
            "meters": builtin["meters"], "features": builtin["features"], "plans": plans
        }))
    }

    /// The built-in plan as JSON, keyed `key`, with `role` if any.
    pub(crate) fn plan_json(key: &str, role: Option<&str>) -> serde_json::Value {
        let mut plan = serde_json::to_value(builtin_plan(&key.parse().expect("valid key")))
            .expect("serialises");
        if let Some(role) = role {
            plan["subscribe_role"] = role.into();
        }
        plan
    }
}
