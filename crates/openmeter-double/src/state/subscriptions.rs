use axum::http::StatusCode;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::Value;

use super::tables::State;
use super::PlanSelector;
use crate::cadence::Cadence;
use crate::model::{
    new_id, Labels, Plan, PlanRef, Subscription, SubscriptionItem, SubscriptionPhase,
    DEFAULT_SETTLEMENT_MODE,
};
use crate::problem::{ApiResult, InvalidParam, Problem};

/// The detail of the 409 for a second subscription: the validation issue
/// `ErrOnlySingleSubscriptionAllowed` (`subscription/errors.go`), raised by the
/// uniqueness hook (`subscription/uniqueness.go`) and wrapped by the service
/// and the workflow on its way out.
pub(crate) const ONLY_SINGLE_SUBSCRIPTION: &str = "failed to create subscription: failed to \
     validate subscription: only single subscription is allowed per customer at a time";

/// A Stripe-like invoicing app id, named in the billing-setup refusal.
const INVOICING_APP_ID: &str = "01JBQ5Z4WS0T2C5WEX0E3S5HZ1";

/// The 409 the server answers when the invoicing app refuses the customer:
/// the billing validator's `AfterCreate` hook wraps the app's complaint in
/// "invalid billing setup" as a conflict (`billing/validators/subscription/
/// validator.go`), here the Stripe app lacking the customer's data
/// (`app/stripe/appcustomer.go`, `app/stripe/adapter/customer.go`,
/// `app/errors.go`), and the subscription is rolled back.
fn billing_setup_refused(customer_id: &str) -> Problem {
    Problem::conflict(format!(
        "failed to create subscription: failed to validate subscription: invalid billing \
         setup: failed to get stripe customer data: customer with id {customer_id} does not \
         meet condition customer has no data for stripe app for stripe app type with id \
         {INVOICING_APP_ID} in namespace default"
    ))
}

/// Only subscriptions with a price are checked against the billing setup
/// (`hasBillableItems`); the v3 `free` price maps to no price.
fn has_billable_items(sub: &Subscription) -> bool {
    sub.phases.iter().flat_map(|p| &p.items).any(|item| {
        let kind = item.rate_card.get("price").and_then(|p| p.get("type"));
        kind.and_then(Value::as_str).is_some_and(|k| k != "free")
    })
}

/// When a cancel takes effect (`BillingSubscriptionEditTiming`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelTiming {
    Immediate,
    NextBillingCycle,
    At(DateTime<Utc>),
}

/// A validated `BillingSubscriptionCreate`.
#[derive(Debug)]
pub(crate) struct NewSubscription {
    /// `(id, key)`; the id wins when both are given.
    pub(crate) customer_id: Option<String>,
    pub(crate) customer_key: Option<String>,
    pub(crate) plan: PlanSelector,
    pub(crate) labels: Option<Labels>,
    pub(crate) billing_anchor: Option<DateTime<Utc>>,
    pub(crate) settlement_mode: Option<String>,
    pub(crate) cost_basis_mode: Option<String>,
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

struct Dates {
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
}

fn from_plan(
    plan: &Plan,
    customer_id: String,
    dates: Dates,
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
        active_from: dates.from,
        active_to: dates.to,
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
        billing_anchor: anchor.unwrap_or(dates.from),
        status: String::new(),
        settlement_mode: settlement,
        phases: plan
            .phases
            .iter()
            .map(|p| phase_from_plan(p, dates.from))
            .collect(),
    }
    .observed_at(now)
}

fn forbidden(action: &str, status: &str) -> Problem {
    // `subscription/state.go`, `CanTransitionOrErr`: a GenericForbiddenError.
    Problem::new(
        StatusCode::FORBIDDEN,
        format!("transition {action} in state {status} not allowed"),
    )
}

fn timing_problem(reason: &str) -> Problem {
    Problem::bad_request(
        format!("invalid cancelation timing: {reason}"),
        vec![InvalidParam::invalid("timing", reason)],
    )
}

/// When a cancel of `sub` with `timing` ends it, as `subscription/timing.go`
/// resolves it: now, the end of the current billing period, or a given
/// instant that must be a billing period boundary (`ValidateForAction`,
/// `isDateAlignedWithBillingCadence`).
fn cancel_time(sub: &Subscription, timing: CancelTiming) -> ApiResult<DateTime<Utc>> {
    let cadence = Cadence::parse(&sub.billing_cadence);
    let period = |t: DateTime<Utc>| {
        let (from, to) = cadence?.period_at(sub.billing_anchor, t)?;
        (t >= sub.active_from).then_some((from.max(sub.active_from), to))
    };
    match timing {
        CancelTiming::Immediate => Ok(started_now()),
        CancelTiming::NextBillingCycle => period(started_now())
            .map(|(_, to)| to)
            .ok_or_else(|| timing_problem("the subscription has no current billing period")),
        CancelTiming::At(t) => match period(t) {
            Some((from, to)) if from == t || to == t => Ok(t),
            _ => Err(timing_problem(
                "cannot cancel aligned subscription with custom misaligned timing",
            )),
        },
    }
}

impl State {
    /// 404 unknown customer/plan, 400 unusable plan, 409 when the customer
    /// already has a subscription that has not ended: active, scheduled, or
    /// canceled but still running (`subscription/uniqueness.go`).
    pub(crate) fn create_subscription(&mut self, new: NewSubscription) -> ApiResult<Subscription> {
        let customer = match (&new.customer_id, &new.customer_key) {
            (Some(id), _) => self.customer(id).filter(|c| c.deleted_at.is_none()),
            (None, Some(key)) => self.customer_by_key(key),
            (None, None) => None,
        };
        let customer_id = customer
            .map(|c| c.id.clone())
            .ok_or_else(|| Problem::not_found("customer not found"))?;
        let plan = self.resolve_plan(&new.plan)?.clone();
        let start = started_now();
        if self
            .customer_subscriptions(&customer_id)
            .any(|s| s.runs_after(start))
        {
            return Err(Problem::conflict(ONLY_SINGLE_SUBSCRIPTION));
        }
        let dates = Dates {
            from: start,
            to: None,
        };
        let refused = self.billing_refused_for(&customer_id);
        let sub = from_plan(&plan, customer_id, dates, Some(new));
        if refused && has_billable_items(&sub) {
            return Err(billing_setup_refused(&sub.customer_id));
        }
        self.push_subscription(sub.clone());
        Ok(sub)
    }

    /// Is the customer's billing setup refused (by its id or its key)?
    fn billing_refused_for(&self, customer_id: &str) -> bool {
        let key = self.customer(customer_id).map(|c| c.key.as_str());
        self.billing_refused.contains(customer_id)
            || key.is_some_and(|k| self.billing_refused.contains(k))
    }

    fn push_subscription(&mut self, sub: Subscription) {
        self.subscriptions_by_customer
            .entry(sub.customer_id.clone())
            .or_default()
            .push(self.subscriptions.len());
        self.subscriptions.push(sub);
    }

    /// The subscriptions of one customer, through the index.
    pub(crate) fn customer_subscriptions<'a>(
        &'a self,
        customer_id: &str,
    ) -> impl Iterator<Item = &'a Subscription> + 'a {
        self.subscriptions_by_customer
            .get(customer_id)
            .into_iter()
            .flatten()
            .map(|&i| &self.subscriptions[i])
    }

    pub(crate) fn subscription(&self, id: &str) -> Option<&Subscription> {
        self.subscriptions.iter().find(|s| s.id == id)
    }

    fn subscription_mut(&mut self, id: &str) -> ApiResult<&mut Subscription> {
        self.subscriptions
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(|| Problem::not_found(format!("subscription {id} not found")))
    }

    /// `POST /subscriptions/{id}/cancel`: only an active subscription can be
    /// canceled (`subscription/state.go`); it keeps running until the
    /// resolved `active_to` (`subscription/service/service.go`, `Cancel`).
    pub(crate) fn cancel_subscription(
        &mut self,
        id: &str,
        timing: CancelTiming,
    ) -> ApiResult<Subscription> {
        let now = Utc::now();
        let sub = self.subscription_mut(id)?;
        let status = sub.status_at(now);
        if status != "active" {
            return Err(forbidden("cancel", status));
        }
        let to = cancel_time(sub, timing)?;
        Ok(end_at(sub, Some(to)))
    }

    /// `POST /subscriptions/{id}/unschedule-cancelation`: a canceled
    /// subscription runs on open-ended (the `continue` transition).
    pub(crate) fn continue_subscription(&mut self, id: &str) -> ApiResult<Subscription> {
        let sub = self.subscription_mut(id)?;
        let status = sub.status_at(Utc::now());
        if status != "canceled" {
            return Err(forbidden("continue", status));
        }
        Ok(end_at(sub, None))
    }

    /// Set `active_to` without the server's checks (test seeding).
    pub(crate) fn cancel_subscription_at(
        &mut self,
        id: &str,
        active_to: DateTime<Utc>,
    ) -> ApiResult<Subscription> {
        Ok(end_at(self.subscription_mut(id)?, Some(active_to)))
    }

    /// Insert a subscription that has `status` now, no checks: `scheduled`
    /// starts in a day, `canceled` ends in 30 days, `inactive` ended a day
    /// ago. An unknown plan id yields a plan-less USD/P1M subscription.
    ///
    /// # Panics
    /// On any other status: a bug in the test.
    pub(crate) fn seed_subscription(
        &mut self,
        customer_id: &str,
        plan_id: &str,
        status: &str,
    ) -> String {
        let now = started_now();
        let day = Duration::days(1);
        let dates = match status {
            "active" => Dates {
                from: now,
                to: None,
            },
            "scheduled" => Dates {
                from: now + day,
                to: None,
            },
            "canceled" => Dates {
                from: now,
                to: Some(now + Duration::days(30)),
            },
            "inactive" => Dates {
                from: now - Duration::days(30),
                to: Some(now - day),
            },
            other => panic!("seed_subscription: unknown status {other:?}"),
        };
        let sub = match self.plan(plan_id) {
            Some(plan) => from_plan(plan, customer_id.into(), dates, None),
            None => {
                let placeholder = Plan {
                    id: plan_id.into(),
                    name: "seeded".into(),
                    labels: None,
                    created_at: now,
                    updated_at: now,
                    deleted_at: None,
                    key: "seeded".into(),
                    version: 1,
                    currency: "USD".into(),
                    billing_cadence: "P1M".into(),
                    pro_rating_enabled: true,
                    effective_from: None,
                    effective_to: None,
                    status: "active".into(),
                    settlement_mode: DEFAULT_SETTLEMENT_MODE.into(),
                    phases: Vec::new(),
                };
                let mut s = from_plan(&placeholder, customer_id.into(), dates, None);
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

impl State {
    /// Moves subscription `id`'s start (its `active_from`, billing anchor,
    /// creation time and first phase) to `active_from`, as if it had been
    /// created then; no checks.
    pub(crate) fn start_subscription_at(
        &mut self,
        id: &str,
        active_from: DateTime<Utc>,
    ) -> ApiResult<Subscription> {
        let sub = self.subscription_mut(id)?;
        sub.active_from = active_from;
        sub.billing_anchor = active_from;
        sub.created_at = active_from;
        if let Some(first) = sub.phases.first_mut() {
            first.active_from = active_from;
        }
        Ok(sub.clone().observed_at(started_now()))
    }
}

fn end_at(sub: &mut Subscription, active_to: Option<DateTime<Utc>>) -> Subscription {
    let now = started_now();
    sub.active_to = active_to;
    sub.updated_at = now;
    sub.observed_at(now)
}
