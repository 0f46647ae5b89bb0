//! Knowing the customers without asking one by one.
//!
//! An unknown identity costs up to five sequential calls (find customer,
//! create, find subscriptions, plan, subscribe). After a restart every
//! identity is unknown to the cache, though nearly all exist upstream: a
//! mature organisation of 100k customers 80 ms away would spend most of an
//! hour asking about customers it already has while their events wait. So
//! the cache is filled from whole pages instead: every customer and every
//! subscription, 1,000 a page, eight pages at a time (100k customers:
//! about 200 calls). Only identities OpenMeter does not know yet are then
//! ensured one by one.
//!
//! It runs when the collector starts, and again when a batch brings many
//! identities the cache does not hold (a backlog, or a cache evicted by
//! capacity), at most once per [`REWARM_AFTER`]. A warm-up that fails is
//! logged and changes nothing: ensure still asks one by one.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::OwnedMutexGuard;

use super::{billing_now, Created, EnsureError, Ensured, Provisioner};
use crate::domain::{CustomerKey, Identity};
use crate::openmeter::model::{Customer, Subscription};
use crate::openmeter::{ApiError, Call};

/// Unknown identities in one batch that make it worth reading every page.
pub(crate) const BACKLOG_MISSES: usize = 64;
/// A backlog warms the cache again at most this often.
pub(crate) const REWARM_AFTER: Duration = Duration::from_secs(300);

/// What one warm-up learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warmed {
    /// Customers listed (deleted ones included).
    pub customers: usize,
    /// Identities now cached: customers with a current subscription, and
    /// the other subject keys they own.
    pub identities: usize,
    pub took: Duration,
}

impl Provisioner {
    /// Fills the ensure cache with every customer that has a current
    /// subscription, from paged listings.
    ///
    /// Pages are folded as they arrive: only live customers and current
    /// subscriptions are kept until both listings are done, never whole
    /// pages (the peak was about 2 KB per customer when every page was
    /// collected first; BENCHMARKS.md).
    pub async fn warm(&self) -> Result<Warmed, EnsureError> {
        let started = Instant::now();
        let now = Utc::now();
        let (mut listed, mut customers) = (0, Vec::new());
        let mut current = Current::default();
        let customer_pages = self.client.each_customer_page(|page| {
            listed += page.len();
            customers.extend(page.into_iter().filter(is_live));
        });
        let subscription_pages = self
            .client
            .each_subscription_page(|page| current.add(page, now));
        tokio::try_join!(customer_pages, subscription_pages).map_err(|e: ApiError| {
            EnsureError::Upstream {
                step: Call::FindCustomer,
                source: e,
            }
        })?;
        let mut identities = 0;
        known(customers, current, self.plan_key(), |key, ensured| {
            identities += 1;
            self.ensured.insert(&key, &ensured) < self.ensured.capacity()
        });
        Ok(Warmed {
            customers: listed,
            identities,
            took: started.elapsed(),
        })
    }

    /// Starts warming the cache (a collector starting). Batches that
    /// arrive meanwhile with many unknown identities wait for it rather
    /// than ask one by one.
    pub(crate) async fn warm_in_background(&self) {
        if !self.warm_up {
            return;
        }
        let last = self.warmed.clone().lock_owned().await;
        let this = self.clone();
        tokio::spawn(async move { this.warm_holding(last, "start-up").await });
    }

    /// Warms the cache first when `identities` hold many it does not know
    /// and the last warm-up is older than [`REWARM_AFTER`]; concurrent
    /// callers wait for one warm-up.
    pub(crate) async fn warm_for<'a>(&self, identities: impl Iterator<Item = &'a Identity>) {
        if !self.warm_up {
            return;
        }
        let misses = identities
            .filter(|i| !self.ensured.contains(&i.customer_key()))
            .take(BACKLOG_MISSES)
            .count();
        if misses < BACKLOG_MISSES {
            return;
        }
        let last = self.warmed.clone().lock_owned().await;
        if last.is_some_and(|at| at.elapsed() < REWARM_AFTER) {
            return;
        }
        self.warm_holding(last, "a batch brought many unknown identities")
            .await;
    }

    /// Warms the cache while holding `last` (so no one else warms it
    /// meanwhile), logging what it learnt or why it could not.
    async fn warm_holding(&self, mut last: OwnedMutexGuard<Option<Instant>>, why: &str) {
        match self.warm().await {
            Ok(w) => tracing::info!(
                why,
                customers = w.customers,
                identities = w.identities,
                took = ?w.took,
                "ensure cache warmed from OpenMeter's customer and subscription pages"
            ),
            Err(e) => tracing::warn!(
                why,
                error = %e,
                "could not warm the ensure cache; ensuring identities one by one"
            ),
        }
        *last = Some(Instant::now());
    }
}

/// Each customer's subscription that bills now, by customer id: what
/// ensure's [`billing_now`] picks among them, kept as pages arrive.
#[derive(Default)]
struct Current(HashMap<String, Subscription>);

impl Current {
    fn add(&mut self, page: Vec<Subscription>, now: DateTime<Utc>) {
        for s in page {
            let customer_id = s.customer_id.clone();
            let kept = self.0.remove(&customer_id);
            if let Some(current) = billing_now(kept.into_iter().chain([s]), &customer_id, now) {
                self.0.insert(customer_id, current);
            }
        }
    }
}

fn is_live(customer: &Customer) -> bool {
    customer.deleted_at.is_none()
}

/// Hands `learn` the identities the live `customers` answer for, with what
/// ensure would find for each: a customer with a current subscription
/// under its own key, and under each other subject key it owns that is no
/// customer's key. Stops when `learn` says so (the cache is full).
fn known(
    live: Vec<Customer>,
    mut current: Current,
    default_plan: &crate::domain::PlanKey,
    mut learn: impl FnMut(CustomerKey, Ensured) -> bool,
) {
    let keys: HashSet<&str> = live.iter().map(|c| c.key.as_str()).collect();
    for customer in &live {
        let Some(current) = current.0.remove(&customer.id) else {
            continue;
        };
        let created = Created {
            customer: false,
            subscription: false,
        };
        let ensured = Ensured::of(customer.clone(), current, default_plan, created);
        let subjects = customer
            .usage_attribution
            .iter()
            .flat_map(|u| u.subject_keys.iter())
            .filter(|k| **k != customer.key && !keys.contains(k.as_str()));
        for key in std::iter::once(&customer.key).chain(subjects) {
            if !learn(CustomerKey::listed(key), ensured.clone()) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::openmeter::model::{SubjectKeys, SubscriptionStatus};

    fn customer(id: &str, key: &str, subjects: &[&str]) -> Customer {
        Customer {
            id: id.into(),
            key: key.into(),
            usage_attribution: Some(SubjectKeys {
                subject_keys: subjects.iter().map(|s| s.to_string()).collect(),
            }),
            deleted_at: None,
        }
    }

    fn subscription(id: &str, customer_id: &str, status: SubscriptionStatus) -> Subscription {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "customer_id": customer_id,
            "status": status,
            "active_from": (Utc::now() - TimeDelta::days(1)).to_rfc3339(),
            "billing_cadence": "P1M",
        }))
        .unwrap()
    }

    fn keys(known: &[(CustomerKey, Ensured)]) -> Vec<(String, String)> {
        let mut keys: Vec<_> = known
            .iter()
            .map(|(k, e)| (k.to_string(), e.customer_key.clone()))
            .collect();
        keys.sort();
        keys
    }

    /// What a warm-up learns from these listings, as one list.
    fn learnt(
        customers: Vec<Customer>,
        subscriptions: Vec<Subscription>,
        plan: &crate::domain::PlanKey,
    ) -> Vec<(CustomerKey, Ensured)> {
        let mut current = Current::default();
        current.add(subscriptions, Utc::now());
        let mut learnt = Vec::new();
        let live = customers.into_iter().filter(is_live).collect();
        known(live, current, plan, |key, ensured| {
            learnt.push((key, ensured));
            true
        });
        learnt
    }

    fn plan() -> crate::domain::PlanKey {
        "clearinghouse_default_ppu".parse().unwrap()
    }

    #[test]
    fn a_customer_with_a_current_subscription_is_known_under_its_key() {
        let known = learnt(
            vec![customer("c1", "alice", &["alice"])],
            vec![subscription("s1", "c1", SubscriptionStatus::Active)],
            &plan(),
        );
        assert_eq!(keys(&known), [("alice".into(), "alice".into())]);
        let ensured = &known[0].1;
        assert_eq!(
            (
                ensured.customer_id.as_str(),
                ensured.subscription_id.as_str()
            ),
            ("c1", "s1")
        );
        assert!(!ensured.created.customer && !ensured.created.subscription);
    }

    #[test]
    fn a_customer_without_a_current_subscription_is_left_to_ensure() {
        let known = learnt(
            vec![
                customer("c1", "alice", &["alice"]),
                customer("c2", "bob", &[]),
            ],
            vec![subscription("s1", "c1", SubscriptionStatus::Inactive)],
            &plan(),
        );
        assert!(known.is_empty());
    }

    #[test]
    fn another_subject_key_a_customer_owns_bills_that_customer() {
        let known = learnt(
            vec![customer("c1", "acme", &["acme", "legacy-subject"])],
            vec![subscription("s1", "c1", SubscriptionStatus::Active)],
            &plan(),
        );
        assert_eq!(
            keys(&known),
            [
                ("acme".into(), "acme".into()),
                ("legacy-subject".into(), "acme".into())
            ]
        );
    }

    #[test]
    fn a_subject_key_that_is_also_a_customers_key_is_that_customers() {
        let known = learnt(
            vec![
                customer("c1", "acme", &["acme", "bob"]),
                customer("c2", "bob", &["bob"]),
            ],
            vec![
                subscription("s1", "c1", SubscriptionStatus::Active),
                subscription("s2", "c2", SubscriptionStatus::Active),
            ],
            &plan(),
        );
        assert_eq!(
            keys(&known),
            [("acme".into(), "acme".into()), ("bob".into(), "bob".into())]
        );
    }

    #[test]
    fn a_deleted_customer_is_not_known() {
        let mut gone = customer("c1", "alice", &["alice"]);
        gone.deleted_at = Some("2026-01-01T00:00:00Z".into());
        let known = learnt(
            vec![gone],
            vec![subscription("s1", "c1", SubscriptionStatus::Active)],
            &plan(),
        );
        assert!(known.is_empty());
    }
}
