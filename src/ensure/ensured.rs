//! What ensure found or made for an identity: the `/ensure` answer, and
//! what the cache keeps of it.

use serde::Serialize;

use crate::billing::BillingTerms;
use crate::domain::{Identity, PlanKey};
use crate::openmeter::model::{Customer, Subscription, SubscriptionStatus};

/// What `ensure` found or made; the `/ensure` response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ensured {
    /// The OpenMeter customer's key: the identity's own, or that of the
    /// customer that already owned the identity as a usage subject.
    pub customer_key: String,
    pub customer_id: String,
    pub subscription_id: String,
    /// The plan of the subscription that satisfied ensure (maybe not the default).
    pub plan_key: String,
    /// That subscription's status: `active`, `scheduled` or `canceled`
    /// (still billing until `activeTo`).
    pub status: SubscriptionStatus,
    /// When that subscription bills usage from (and until).
    #[serde(flatten)]
    pub terms: BillingTerms,
    pub created: Created,
}

impl Ensured {
    /// What a customer and its current subscription ensure; `plan` names
    /// the plan when the subscription does not say.
    pub(super) fn of(
        customer: Customer,
        subscription: Subscription,
        plan: &PlanKey,
        created: Created,
    ) -> Self {
        Self {
            terms: BillingTerms::of(&subscription),
            customer_key: customer.key,
            customer_id: customer.id,
            plan_key: subscription
                .plan
                .map(|p| p.key)
                .unwrap_or_else(|| plan.to_string()),
            subscription_id: subscription.id,
            status: subscription.status,
            created,
        }
    }
}

/// Whether the flight this call ran or joined created anything (always
/// false for a cached answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Created {
    pub customer: bool,
    pub subscription: bool,
}

/// What delivering a batch needs of an ensured customer: the terms its
/// events are placed by, and the key of the customer that owns the
/// identity when it is not the identity's own (for the log). A cache hit
/// builds it without reading the ids an [`Ensured`] expands into text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Billable {
    pub(crate) terms: BillingTerms,
    owner: Option<Box<str>>,
}

impl Billable {
    pub(super) fn new(terms: BillingTerms, owner: Option<&str>) -> Self {
        Self {
            terms,
            owner: owner.map(Box::from),
        }
    }

    /// The key of the customer `identity`'s events bill.
    pub(crate) fn customer_key<'a>(&'a self, identity: &'a Identity) -> &'a str {
        self.owner
            .as_deref()
            .unwrap_or(identity.billing_key().as_str())
    }
}

impl Ensured {
    /// What delivery needs of this answer for `identity`.
    pub(super) fn billable(&self, identity: &Identity) -> Billable {
        let own = self.customer_key == identity.billing_key().as_str();
        Billable::new(self.terms, (!own).then_some(self.customer_key.as_str()))
    }
}
