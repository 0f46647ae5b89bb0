//! What ensure found or made for an identity: the `/ensure` answer, and
//! what the cache keeps of it.

use serde::Serialize;

use crate::billing::BillingTerms;
use crate::domain::PlanKey;
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
