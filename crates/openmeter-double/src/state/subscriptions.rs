use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;

use super::{PlanSelector, State};
use crate::model::{
    new_id, Labels, Plan, PlanRef, Subscription, SubscriptionItem, SubscriptionPhase,
};
use crate::problem::{ApiResult, Problem};

/// A validated `BillingSubscriptionCreate`.
#[derive(Debug)]
pub(crate) struct NewSubscription {
    /// `(id, key)`; the id wins when both are given.
    pub customer_id: Option<String>,
    pub customer_key: Option<String>,
    pub plan: PlanSelector,
    pub labels: Option<Labels>,
    pub billing_anchor: Option<DateTime<Utc>>,
    pub settlement_mode: Option<String>,
    pub cost_basis_mode: Option<String>,
}

fn phase_from_plan(phase: &Value, now: DateTime<Utc>) -> SubscriptionPhase {
    let text = |k: &str| {
        phase
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let items = phase
        .get("rate_cards")
        .and_then(Value::as_array)
        .map(|cards| {
            cards
                .iter()
                .map(|rc| SubscriptionItem {
                    id: new_id(),
                    active_from: now,
                    rate_card: rc.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    SubscriptionPhase {
        id: new_id(),
        name: text("name"),
        labels: phase.get("labels").cloned(),
        created_at: now,
        updated_at: now,
        key: text("key"),
        active_from: now,
        items,
    }
}

/// The instant a v3 create starts a subscription, as the server stores it.
///
/// The v3 create body has no start time: the handler always asks for
/// `timing: immediate` (`api/v3/handlers/subscriptions/convert.go`), which
/// resolves to `clock.Now()` (`subscription/timing.go`, `Timing.Resolve`), and
/// the workflow uses it as `active_from` and the default billing anchor
/// (`subscription/workflow/service/subscription.go`, `CreateFromPlan`). Nothing
/// truncates it to seconds there; Postgres `timestamptz` keeps microseconds,
/// so that is the precision a client reads back. (Invoicing truncates the
/// service period to whole seconds later, see `usage.rs`.)
pub(crate) fn started_now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn from_plan(
    plan: &Plan,
    customer_id: String,
    status: &str,
    new: Option<NewSubscription>,
) -> Subscription {
    let now = started_now();
    let (labels, anchor, settlement, cost_basis) = match new {
        Some(n) => (
            n.labels,
            n.billing_anchor,
            n.settlement_mode,
            n.cost_basis_mode,
        ),
        None => (None, None, None, None),
    };
    Subscription {
        id: new_id(),
        labels,
        created_at: now,
        updated_at: now,
        name: plan.name.clone(),
        active_from: now,
        active_to: None,
        customer_id,
        plan_id: Some(plan.id.clone()),
        plan: Some(PlanRef {
            id: plan.id.clone(),
            key: plan.key.clone(),
            version: plan.version,
        }),
        invoice_currency: plan.currency.clone(),
        cost_basis_mode: cost_basis.unwrap_or_else(|| "dynamic".into()),
        cost_basis_pins: Vec::new(),
        billing_cadence: plan.billing_cadence.clone(),
        billing_anchor: anchor.unwrap_or(now),
        status: status.into(),
        settlement_mode: settlement,
        phases: plan
            .phases
            .iter()
            .map(|p| phase_from_plan(p, now))
            .collect(),
    }
}

impl State {
    /// 404 unknown customer/plan, 400 unusable plan, 409 when the customer
    /// already has an active or scheduled subscription.
    pub fn create_subscription(&mut self, new: NewSubscription) -> ApiResult<Subscription> {
        let customer = match (&new.customer_id, &new.customer_key) {
            (Some(id), _) => self.customer(id).filter(|c| c.deleted_at.is_none()),
            (None, Some(key)) => self.customer_by_key(key),
            (None, None) => None,
        };
        let customer_id = customer
            .map(|c| c.id.clone())
            .ok_or_else(|| Problem::not_found("customer not found"))?;
        let plan = self.resolve_plan(&new.plan)?.clone();
        if let Some(existing) = self.live_subscription(&customer_id) {
            return Err(Problem::conflict(format!(
                "customer {customer_id} already has a {} subscription {}",
                existing.status, existing.id
            )));
        }
        let sub = from_plan(&plan, customer_id, "active", Some(new));
        self.push_subscription(sub.clone());
        Ok(sub)
    }

    fn live_subscription(&self, customer_id: &str) -> Option<&Subscription> {
        self.customer_subscriptions(customer_id)
            .find(|s| s.status == "active" || s.status == "scheduled")
    }

    fn push_subscription(&mut self, sub: Subscription) {
        self.subscriptions_by_customer
            .entry(sub.customer_id.clone())
            .or_default()
            .push(self.subscriptions.len());
        self.subscriptions.push(sub);
    }

    /// The subscriptions of one customer, through the index.
    pub fn customer_subscriptions<'a>(
        &'a self,
        customer_id: &str,
    ) -> impl Iterator<Item = &'a Subscription> + 'a {
        self.subscriptions_by_customer
            .get(customer_id)
            .into_iter()
            .flatten()
            .map(|&i| &self.subscriptions[i])
    }

    pub fn subscription(&self, id: &str) -> Option<&Subscription> {
        self.subscriptions.iter().find(|s| s.id == id)
    }

    /// Insert a subscription with any status, no checks. An unknown plan id
    /// yields a plan-less USD/P1M subscription.
    pub fn seed_subscription(&mut self, customer_id: &str, plan_id: &str, status: &str) -> String {
        let sub = match self.plan(plan_id) {
            Some(plan) => from_plan(plan, customer_id.into(), status, None),
            None => {
                let placeholder = Plan {
                    id: plan_id.into(),
                    name: "seeded".into(),
                    labels: None,
                    created_at: Utc::now(),
                    updated_at: Utc::now(),
                    deleted_at: None,
                    key: "seeded".into(),
                    version: 1,
                    currency: "USD".into(),
                    billing_cadence: "P1M".into(),
                    pro_rating_enabled: true,
                    effective_from: None,
                    effective_to: None,
                    status: "active".into(),
                    phases: Vec::new(),
                };
                let mut s = from_plan(&placeholder, customer_id.into(), status, None);
                s.plan = None;
                s.plan_id = None;
                s
            }
        };
        let id = sub.id.clone();
        self.push_subscription(sub);
        id
    }
}
