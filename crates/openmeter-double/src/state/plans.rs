use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::tables::State;
use crate::model::{new_id, Labels, Plan, PlanSeed, DEFAULT_SETTLEMENT_MODE};
use crate::problem::{ApiResult, InvalidParam, Problem};
use crate::validate;

/// A `CreatePlanRequest`, read from a body the spec accepted.
#[derive(Debug, Deserialize)]
pub(crate) struct NewPlan {
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) labels: Option<Labels>,
    pub(crate) currency: String,
    pub(crate) billing_cadence: String,
    /// The spec's default is `true`.
    #[serde(default = "enabled")]
    pub(crate) pro_rating_enabled: bool,
    pub(crate) phases: Vec<Value>,
}

fn enabled() -> bool {
    true
}

/// How a subscription names its plan (`BillingSubscriptionCreate.plan`).
#[derive(Debug)]
pub(crate) enum PlanSelector {
    Id(String),
    Key { key: String, version: Option<u32> },
}

fn publish_refused(detail: String) -> Problem {
    Problem::bad_request(
        detail.clone(),
        vec![InvalidParam::invalid("planId", detail).from_source("path")],
    )
}

fn not_subscribable(detail: String) -> Problem {
    Problem::bad_request(detail.clone(), vec![InvalidParam::invalid("plan", detail)])
}

impl State {
    /// New draft plan; version = 1 + the highest existing version of the key.
    /// 400 on the rate-card issues the server finds critical.
    pub(crate) fn create_plan(&mut self, mut new: NewPlan) -> ApiResult<Plan> {
        validate::labels::check(new.labels.as_ref())?;
        self.validate_for_create(&new.key, &new.phases)?;
        super::plan_rules::normalize_usage_discounts(&mut new.phases);
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
            settlement_mode: DEFAULT_SETTLEMENT_MODE.into(),
            phases: new.phases,
        };
        self.plans.push(plan.clone());
        Ok(plan)
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

    pub(crate) fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.id == id)
    }

    /// Publish: a draft or scheduled version becomes effective now, and the
    /// version of the key active until now is archived as of the same instant
    /// (`productcatalog/plan/service/plan.go`, `PublishPlan`; the v3 handler
    /// passes `effective_from = now`, `api/v3/handlers/plans/publish.go`).
    pub(crate) fn publish_plan(&mut self, id: &str) -> ApiResult<Plan> {
        let idx = self
            .plans
            .iter()
            .position(|p| p.id == id)
            .ok_or_else(|| Problem::not_found(format!("plan {id} not found")))?;
        let now = Utc::now();
        let plan = &self.plans[idx];
        if let Some(deleted) = plan.deleted_at {
            return Err(publish_refused(format!(
                "cannot publish a deleted Plan [namespace=default, id={id} deleted_at={deleted}]"
            )));
        }
        let status = plan.status_at(now);
        if status != "draft" && status != "scheduled" {
            return Err(publish_refused(format!(
                "invalid Plan: only Plans in [draft scheduled] can be published/rescheduled, \
                 but it has {status} state"
            )));
        }
        self.validate_for_publish(plan)?;
        let key = plan.key.clone();
        for other in self.plans.iter_mut() {
            let live = other.deleted_at.is_none() && other.status_at(now) == "active";
            if other.key == key && other.id != id && live {
                other.effective_to = Some(now);
                other.updated_at = now;
            }
        }
        let plan = &mut self.plans[idx];
        plan.effective_from = Some(now);
        plan.effective_to = None;
        plan.updated_at = now;
        Ok(plan.observed_at(now))
    }

    /// Resolve a subscription's plan as the v3 create does
    /// (`api/v3/handlers/subscriptions/create.go`, `getPlanByIDOrKey`): by id,
    /// by key and version, or by key alone meaning the latest version
    /// whatever its status (`plan/adapter/plan.go`, `IncludeLatest`). 404 when
    /// nothing matches; 400 when it is deleted or not active right now
    /// (`productcatalog/subscription/service/create.go`): a scheduled version
    /// cannot be subscribed to yet.
    pub(crate) fn resolve_plan(&self, sel: &PlanSelector) -> ApiResult<&Plan> {
        let found = match sel {
            PlanSelector::Id(id) => self.plan(id),
            PlanSelector::Key {
                key,
                version: Some(v),
            } => self.plans.iter().find(|p| &p.key == key && p.version == *v),
            PlanSelector::Key { key, version: None } => self
                .plans
                .iter()
                .filter(|p| &p.key == key)
                .max_by_key(|p| p.version),
        };
        let plan = found.ok_or_else(|| Problem::not_found(format!("plan {sel} not found")))?;
        let now = Utc::now();
        if let Some(deleted) = plan.deleted_at.filter(|d| *d <= now) {
            return Err(not_subscribable(format!(
                "plan is deleted [namespace=default, key={}, version={}, deleted_at={deleted}]",
                plan.key, plan.version
            )));
        }
        if plan.status_at(now) != "active" {
            return Err(not_subscribable(format!(
                "plan {}@{} is not active at {now}",
                plan.key, plan.version
            )));
        }
        Ok(plan)
    }

    pub(crate) fn seed_plan(&mut self, seed: PlanSeed) -> String {
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
            settlement_mode: seed.settlement_mode,
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
