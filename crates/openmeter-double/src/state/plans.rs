use chrono::{Duration, Utc};
use serde_json::{json, Value};

use super::State;
use crate::model::{new_id, Labels, Plan, PlanSeed};
use crate::problem::{ApiResult, InvalidParam, Problem};

/// A validated `CreatePlanRequest`.
#[derive(Debug)]
pub(crate) struct NewPlan {
    pub name: String,
    pub key: String,
    pub labels: Option<Labels>,
    pub currency: String,
    pub billing_cadence: String,
    pub pro_rating_enabled: bool,
    pub phases: Vec<Value>,
}

/// How a subscription names its plan (`BillingSubscriptionCreate.plan`).
#[derive(Debug)]
pub(crate) enum PlanSelector {
    Id(String),
    Key { key: String, version: Option<u32> },
}

fn usable(status: &str) -> bool {
    status == "active" || status == "scheduled"
}

impl State {
    /// New draft plan; version = 1 + the highest existing version of the key.
    pub fn create_plan(&mut self, new: NewPlan) -> Plan {
        let now = Utc::now();
        let plan = Plan {
            id: new_id(),
            version: self.next_plan_version(&new.key),
            name: new.name,
            labels: new.labels,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            key: new.key,
            currency: new.currency,
            billing_cadence: new.billing_cadence,
            pro_rating_enabled: new.pro_rating_enabled,
            effective_from: None,
            effective_to: None,
            status: "draft".into(),
            phases: new.phases,
        };
        self.plans.push(plan.clone());
        plan
    }

    fn next_plan_version(&self, key: &str) -> u32 {
        let highest = self
            .plans
            .iter()
            .filter(|p| p.key == key)
            .map(|p| p.version)
            .max();
        highest.unwrap_or(0) + 1
    }

    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.id == id)
    }

    /// Draft → active (effective now); the key's previously active version
    /// becomes archived (effective_to now).
    pub fn publish_plan(&mut self, id: &str) -> ApiResult<Plan> {
        let idx = self
            .plans
            .iter()
            .position(|p| p.id == id)
            .ok_or_else(|| Problem::not_found(format!("plan {id} not found")))?;
        let plan = &self.plans[idx];
        if plan.status != "draft" || plan.deleted_at.is_some() {
            return Err(Problem::bad_request(
                format!("plan {id} is {} and cannot be published", plan.status),
                vec![
                    InvalidParam::invalid("planId", "only draft plans can be published")
                        .from_source("path"),
                ],
            ));
        }
        let key = plan.key.clone();
        let now = Utc::now();
        for other in self.plans.iter_mut() {
            if other.key == key && other.status == "active" && other.id != id {
                other.status = "archived".into();
                other.effective_to = Some(now);
                other.updated_at = now;
            }
        }
        let plan = &mut self.plans[idx];
        plan.status = "active".into();
        plan.effective_from = Some(now);
        plan.updated_at = now;
        Ok(plan.clone())
    }

    /// Resolve a subscription's plan: 404 when nothing matches, 400 when the
    /// match is not active or scheduled.
    pub fn resolve_plan(&self, sel: &PlanSelector) -> ApiResult<&Plan> {
        let found = match sel {
            PlanSelector::Id(id) => self.plan(id),
            PlanSelector::Key {
                key,
                version: Some(v),
            } => self
                .plans
                .iter()
                .find(|p| &p.key == key && p.version == *v && p.deleted_at.is_none()),
            PlanSelector::Key { key, version: None } => self.default_version(key),
        };
        let plan = found.ok_or_else(|| Problem::not_found(format!("plan {sel} not found")))?;
        if !usable(&plan.status) || plan.deleted_at.is_some() {
            return Err(Problem::bad_request(
                format!("plan {sel} is {} and cannot be subscribed to", plan.status),
                vec![InvalidParam::invalid(
                    "plan",
                    "plan must be active or scheduled",
                )],
            ));
        }
        Ok(plan)
    }

    /// The active version of a key, else its highest non-deleted version
    /// (which then fails the status check with a 400).
    fn default_version(&self, key: &str) -> Option<&Plan> {
        let live = || {
            self.plans
                .iter()
                .filter(move |p| p.key == key && p.deleted_at.is_none())
        };
        live()
            .find(|p| p.status == "active")
            .or_else(|| live().max_by_key(|p| p.version))
    }

    pub fn seed_plan(&mut self, seed: PlanSeed) -> String {
        let now = Utc::now();
        let (from, to) = match seed.status.as_str() {
            "active" => (Some(now), None),
            "archived" => (Some(now - Duration::days(30)), Some(now)),
            "scheduled" => (Some(now + Duration::days(1)), None),
            _ => (None, None),
        };
        let phases = seed.phases.unwrap_or_else(|| {
            vec![json!({"name": "Default", "key": "default", "rate_cards": []})]
        });
        let plan = Plan {
            id: new_id(),
            name: seed.name,
            labels: None,
            created_at: now,
            updated_at: now,
            deleted_at: seed.deleted.then_some(now),
            key: seed.key,
            version: seed.version,
            currency: seed.currency,
            billing_cadence: seed.billing_cadence,
            pro_rating_enabled: true,
            effective_from: from,
            effective_to: to,
            status: seed.status,
            phases,
        };
        let id = plan.id.clone();
        self.plans.push(plan);
        id
    }
}

impl std::fmt::Display for PlanSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanSelector::Id(id) => write!(f, "{id}"),
            PlanSelector::Key {
                key,
                version: Some(v),
            } => write!(f, "{key:?} version {v}"),
            PlanSelector::Key { key, version: None } => write!(f, "{key:?}"),
        }
    }
}
