//! Knowing the customers without asking one by one.
//!
//! An unknown identity costs two to four sequential calls (find customer,
//! then find its subscriptions, or create it and subscribe it). After a restart every identity
//! is unknown to the cache, though nearly all exist upstream: a mature
//! organisation of 100k customers 80 ms away would spend most of an hour
//! asking about customers it already has while their events wait. So the
//! cache is filled from whole pages instead: every customer and every
//! subscription, 1,000 a page, page `n` of each fetched together, eight
//! pairs at a time (1M customers: about 2,000 calls).
//!
//! Memory: pages are joined as they arrive, and only what ensure needs is
//! kept (the cache's compact slots): a customer whose subscription has not
//! been read yet waits (its key only), and a subscription whose customer
//! has not been read yet waits (one current subscription per customer).
//! Both listings are sorted by id and customers are subscribed as they are
//! created, so page `n` of one mostly joins page `n` of the other and the
//! waiting sets stay a few pages small.
//!
//! What was listed is also kept as a [`Census`]: one 64-bit fingerprint
//! per key the cache does not hold (customers without a current
//! subscription, and in an organisation larger than the cache every key: 8
//! bytes a customer), so an identity neither holds is proven new and ensure
//! creates it outright (see `Provisioner::ensure_upstream`).
//!
//! An organisation larger than `ENSURE_CACHE_CAPACITY`: the cache takes
//! customers until it is full and keeps them (no eviction while warming),
//! the census still lists every one, and a warning says so once per
//! warm-up. The others cost a lookup (two calls) when first seen, then take
//! the place of a customer not used lately; a backlog of unknown
//! identities does not re-read the pages (they would not fit), so nothing
//! churns.
//!
//! It runs when the collector starts and again before its entries expire
//! (every three quarters of `ENSURE_CACHE_TTL`), and when one batch brings
//! more unknown identities than re-reading every page costs calls, at most
//! once per [`REWARM_AFTER`]. A warm-up that fails is logged and changes
//! nothing: ensure still asks one by one. Its page requests are its own
//! caller's: they retry a few times ([`RetryPolicy::one_shot`], honouring
//! `Retry-After`), since the pipeline's client makes one attempt.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

use super::cache::WhenFull;
use super::census::{Census, LastWarmUp, Warmed, BACKLOG_MISSES, REWARM_AFTER};
use super::{billing_now, Created, EnsureError, Ensured, Provisioner};
use crate::domain::{Identity, PlanKey};
use crate::metrics::metrics;
use crate::openmeter::model::{Customer, Page, Subscription};
use crate::openmeter::{ApiError, Call, BULK_PAGE_SIZE};
use crate::retry::RetryPolicy;

/// Pairs of pages (customers, subscriptions) fetched at once.
const PAGE_PAIRS_AT_ONCE: usize = 8;
/// Pages of one listing read at most: 100M customers (a larger listing is
/// read no further, and proves nobody absent).
const MAX_PAGES: u64 = 100_000;

impl Provisioner {
    /// Fills the ensure cache with every customer that has a current
    /// subscription, from paged listings, and takes the census.
    pub async fn warm(&self) -> Result<Warmed, EnsureError> {
        let started = Instant::now();
        let client = self.client.with_retry(RetryPolicy::one_shot());
        let listing = |e: ApiError| EnsureError::Upstream {
            step: Call::FindCustomer,
            source: e,
        };
        let (customers, subscriptions) =
            tokio::try_join!(client.customer_page(1), client.subscription_page(1))
                .map_err(listing)?;
        let (customer_pages, subscription_pages) = (pages(&customers), pages(&subscriptions));
        let total = customers.meta.page.total.as_u64().unwrap_or(0);
        let oversize = usize::try_from(total).map_or(true, |t| t > self.ensured.capacity());
        self.ensured
            .reserve(usize::try_from(total).unwrap_or(usize::MAX));
        let mut join = Join::new(self, Utc::now(), oversize);
        join.complete = total <= MAX_PAGES * u64::from(BULK_PAGE_SIZE);
        join.customers(customers.data);
        join.subscriptions(subscriptions.data);
        let mut calls = 2;
        let client = &client;
        let mut rest = futures::stream::iter(2..=customer_pages.max(subscription_pages))
            .map(|n| async move {
                let customers = async {
                    match n <= customer_pages {
                        true => client.customer_page(n).await.map(Some),
                        false => Ok(None),
                    }
                };
                let subscriptions = async {
                    match n <= subscription_pages {
                        true => client.subscription_page(n).await.map(Some),
                        false => Ok(None),
                    }
                };
                tokio::try_join!(customers, subscriptions)
            })
            .buffer_unordered(PAGE_PAIRS_AT_ONCE)
            .map_err(listing);
        while let Some((customers, subscriptions)) = rest.try_next().await? {
            if let Some(page) = customers {
                calls += 1;
                join.customers(page.data);
            }
            if let Some(page) = subscriptions {
                calls += 1;
                join.subscriptions(page.data);
            }
        }
        let (listed, identities) = join.finish();
        metrics().ensure.organisation_customers.set(listed as i64);
        metrics().ensure_cached.set(self.ensured.len() as i64);
        Ok(Warmed {
            customers: listed,
            identities,
            pages: calls,
            oversize,
            took: started.elapsed(),
        })
    }

    /// Warms the cache as the collector starts, then again before its
    /// entries expire, until `stop`. Batches that arrive during the first
    /// warm-up with many unknown identities wait for it rather than ask
    /// one by one.
    pub(crate) async fn warm_in_background(&self, stop: CancellationToken) {
        if !self.warm_up {
            return;
        }
        let last = self.warmed.clone().lock_owned().await;
        let this = self.clone();
        let refresh = self.ttl.mul_f64(0.75).max(REWARM_AFTER);
        tokio::spawn(async move {
            this.warm_holding(last, "start-up").await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(refresh) => {}
                }
                let last = this.warmed.clone().lock_owned().await;
                this.warm_holding(last, "the cached entries are about to expire")
                    .await;
            }
        });
    }

    /// Warms the cache when `misses` (identities it lacks) are more than
    /// re-reading every page costs calls (and at least [`BACKLOG_MISSES`]),
    /// the organisation fits the cache, and the last warm-up is older than
    /// [`REWARM_AFTER`]; concurrent callers wait for one warm-up. Identities
    /// the census proves new do not count: the pages cannot hold them (a
    /// flood of new customers re-reads nothing). True when it warmed.
    pub(crate) async fn warm_for<'a>(&self, misses: impl Iterator<Item = &'a Identity>) -> bool {
        if !self.warm_up {
            return false;
        }
        let worth = self
            .rewarm_threshold
            .load(std::sync::atomic::Ordering::Relaxed);
        if worth == usize::MAX {
            return false;
        }
        let unknown = misses
            .filter(|identity| !self.proven_absent(identity.billing_key().as_str()))
            .take(worth)
            .count();
        if unknown < worth {
            return false;
        }
        let last = self.warmed.clone().lock_owned().await;
        if last.at.is_some_and(|at| at.elapsed() < REWARM_AFTER) {
            return false;
        }
        self.warm_holding(last, "a batch brought many unknown identities")
            .await;
        true
    }

    /// Warms the cache while holding `last` (so no one else warms it
    /// meanwhile), logging what it learnt or why it could not.
    async fn warm_holding(&self, mut last: OwnedMutexGuard<LastWarmUp>, why: &str) {
        match self.warm().await {
            Ok(w) => {
                tracing::info!(
                    why,
                    customers = w.customers,
                    identities = w.identities,
                    pages = w.pages,
                    took = ?w.took,
                    "ensure cache warmed from OpenMeter's customer and subscription pages"
                );
                if w.oversize {
                    tracing::warn!(
                        customers = w.customers,
                        capacity = self.ensured.capacity(),
                        "the organisation has more customers than ENSURE_CACHE_CAPACITY: the others cost a lookup (two calls) when first seen and replace customers not used lately; raise ENSURE_CACHE_CAPACITY, and the memory limit with it (docs/operations.md, \"Sizing\")"
                    );
                }
                last.pages = w.pages;
                last.oversize = w.oversize;
            }
            Err(e) => tracing::warn!(
                why,
                error = %e,
                "could not warm the ensure cache; ensuring identities one by one"
            ),
        }
        last.at = Some(Instant::now());
        let worth = if last.oversize {
            usize::MAX
        } else {
            last.pages.max(BACKLOG_MISSES)
        };
        self.rewarm_threshold
            .store(worth, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Pages of a listing of `total` items.
fn pages_of(total: u64) -> u32 {
    total.div_ceil(u64::from(BULK_PAGE_SIZE)).min(MAX_PAGES) as u32
}

fn pages<T>(first: &Page<T>) -> u32 {
    pages_of(first.meta.page.total.as_u64().unwrap_or(0))
}

/// A customer read before its subscription.
struct Waiting {
    key: String,
}

/// Customers and subscriptions joined as their pages arrive.
struct Join<'a> {
    provisioner: &'a Provisioner,
    now: DateTime<Utc>,
    /// Customers whose current subscription was not read yet, by id.
    customers: HashMap<String, Waiting>,
    /// Current subscriptions whose customer was not read yet, by customer
    /// id: the one that bills now ([`billing_now`]).
    subscriptions: HashMap<String, Subscription>,
    /// The census: fingerprints of the listed keys the cache does not
    /// hold (it knows the others exactly). Of every key when the
    /// organisation is larger than the cache, whose entries then get
    /// evicted.
    hasher: RandomState,
    uncached: Vec<u64>,
    oversize: bool,
    /// Whether every page was read: only then does the census prove anyone
    /// absent.
    complete: bool,
    /// Other subject keys, with the key of the customer that owns them.
    aliases: Vec<(String, String)>,
    listed: usize,
    identities: usize,
}

impl<'a> Join<'a> {
    fn new(provisioner: &'a Provisioner, now: DateTime<Utc>, oversize: bool) -> Self {
        Self {
            provisioner,
            now,
            customers: HashMap::new(),
            subscriptions: HashMap::new(),
            hasher: RandomState::new(),
            uncached: Vec::new(),
            oversize,
            complete: true,
            aliases: Vec::new(),
            listed: 0,
            identities: 0,
        }
    }

    /// Counts `key` in the census.
    fn census(&mut self, key: &str) {
        self.uncached.push(self.hasher.hash_one(key));
    }

    fn customers(&mut self, page: Vec<Customer>) {
        for customer in page.into_iter().filter(|c| c.deleted_at.is_none()) {
            self.listed += 1;
            let subjects = customer
                .usage_attribution
                .iter()
                .flat_map(|u| &u.subject_keys);
            for subject in subjects.filter(|s| **s != customer.key) {
                self.aliases.push((subject.clone(), customer.key.clone()));
            }
            match self.subscriptions.remove(&customer.id) {
                Some(current) => self.learn(&customer.key, customer.id, current),
                None => {
                    self.customers
                        .insert(customer.id, Waiting { key: customer.key });
                }
            }
        }
    }

    fn subscriptions(&mut self, page: Vec<Subscription>) {
        let now = self.now;
        for s in page.into_iter().filter(|s| s.is_current(now)) {
            if let Some(waiting) = self.customers.remove(&s.customer_id) {
                let id = s.customer_id.clone();
                self.learn(&waiting.key, id, s);
            } else {
                let id = s.customer_id.clone();
                let kept = self.subscriptions.remove(&id);
                if let Some(current) = billing_now(kept.into_iter().chain([s]), &id, now) {
                    self.subscriptions.insert(id, current);
                }
            }
        }
    }

    /// Caches `key` as answered by `subscription`, unless the cache is full.
    fn learn(&mut self, key: &str, customer_id: String, subscription: Subscription) {
        let ensured = listed(
            key,
            customer_id.clone(),
            subscription,
            self.provisioner.plan_key(),
        );
        let cached = self.provisioner.ensured.put(key, &ensured, WhenFull::Keep);
        self.identities += usize::from(cached);
        if !cached || self.oversize {
            self.census(key);
        }
    }

    /// Forgets the customers of subscriptions still waiting (a customer
    /// not listed, or a second current subscription read after its
    /// customer was joined: ensure then picks between them), caches the
    /// aliases that are no customer's own key, and publishes the census.
    /// Returns the live customers listed and the identities cached.
    fn finish(mut self) -> (usize, usize) {
        let cache = &self.provisioner.ensured;
        for (_, waiting) in std::mem::take(&mut self.customers) {
            self.census(&waiting.key);
        }
        if !self.subscriptions.is_empty() {
            let ids: HashSet<String> = self.subscriptions.drain().map(|(id, _)| id).collect();
            let forgotten = cache.forget_customers(&ids);
            self.identities = self.identities.saturating_sub(forgotten.len());
            for key in &forgotten {
                self.census(key);
            }
        }
        self.uncached.sort_unstable();
        let mut aliases_uncached = Vec::new();
        for (alias, owner) in std::mem::take(&mut self.aliases) {
            let fingerprint = self.hasher.hash_one(&alias);
            let a_customers_key =
                cache.knows(&alias) || self.uncached.binary_search(&fingerprint).is_ok();
            if a_customers_key {
                continue;
            }
            let cached = cache
                .peek(&owner)
                .is_some_and(|ensured| cache.put(&alias, &ensured, WhenFull::Keep));
            self.identities += usize::from(cached);
            if !cached || self.oversize {
                aliases_uncached.push(fingerprint);
            }
        }
        let mut fingerprints = std::mem::take(&mut self.uncached);
        fingerprints.append(&mut aliases_uncached);
        fingerprints.sort_unstable();
        fingerprints.dedup();
        fingerprints.shrink_to_fit();
        let census = Census {
            fingerprints,
            hasher: self.hasher,
            taken: Instant::now(),
        };
        self.provisioner.set_census(self.complete.then_some(census));
        (self.listed, self.identities)
    }
}

/// What ensure would answer for a listed customer and its current
/// subscription.
fn listed(key: &str, customer_id: String, subscription: Subscription, plan: &PlanKey) -> Ensured {
    let customer = Customer {
        id: customer_id,
        key: key.to_owned(),
        usage_attribution: None,
        deleted_at: None,
    };
    let created = Created {
        customer: false,
        subscription: false,
    };
    Ensured::of(customer, subscription, plan, created)
}

impl Provisioner {
    fn set_census(&self, census: Option<Census>) {
        *self.census.write().unwrap_or_else(|e| e.into_inner()) = census.map(Arc::new);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::ensure::EnsureConfig;
    use crate::openmeter::model::{SubjectKeys, SubscriptionStatus};
    use crate::openmeter::{ClientConfig, Endpoint, OpenMeterClient};

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
        started(id, customer_id, status, TimeDelta::days(1))
    }

    fn started(
        id: &str,
        customer_id: &str,
        status: SubscriptionStatus,
        ago: TimeDelta,
    ) -> Subscription {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "customer_id": customer_id,
            "status": status,
            "active_from": (Utc::now() - ago).to_rfc3339(),
            "active_to": (Utc::now() + TimeDelta::days(30)).to_rfc3339(),
            "billing_cadence": "P1M",
        }))
        .unwrap()
    }

    fn provisioner(capacity: u64) -> Provisioner {
        let endpoint = Endpoint::parse("http://127.0.0.1:1/api/v3", None).unwrap();
        let client = OpenMeterClient::new(ClientConfig::new(endpoint, None)).unwrap();
        let config = EnsureConfig {
            cache_capacity: capacity,
            ..EnsureConfig::default()
        };
        Provisioner::new(client, "clearinghouse_default_ppu".parse().unwrap(), config)
    }

    /// Joins the pages in the order given (customers first, or not).
    fn warmed(
        p: &Provisioner,
        customers: Vec<Customer>,
        subscriptions: Vec<Subscription>,
        customers_first: bool,
    ) -> (usize, usize) {
        let mut join = Join::new(p, Utc::now(), false);
        if customers_first {
            join.customers(customers);
            join.subscriptions(subscriptions);
        } else {
            join.subscriptions(subscriptions);
            join.customers(customers);
        }
        join.finish()
    }

    fn answer(p: &Provisioner, key: &str) -> Option<(String, String, String)> {
        p.ensured
            .peek(key)
            .map(|e| (e.customer_key, e.customer_id, e.subscription_id))
    }

    fn owned(a: &str, b: &str, c: &str) -> Option<(String, String, String)> {
        Some((a.into(), b.into(), c.into()))
    }

    #[test]
    fn a_customer_with_a_current_subscription_is_known_under_its_key_whichever_page_comes_first() {
        for customers_first in [true, false] {
            let p = provisioner(10);
            let (listed, identities) = warmed(
                &p,
                vec![customer("c1", "alice", &["alice"])],
                vec![subscription("s1", "c1", SubscriptionStatus::Active)],
                customers_first,
            );
            assert_eq!((listed, identities), (1, 1));
            assert_eq!(answer(&p, "alice"), owned("alice", "c1", "s1"));
        }
    }

    #[test]
    fn a_customer_without_a_current_subscription_is_left_to_ensure_but_counted_as_existing() {
        let p = provisioner(10);
        warmed(
            &p,
            vec![
                customer("c1", "alice", &["alice"]),
                customer("c2", "bob", &[]),
            ],
            vec![subscription("s1", "c1", SubscriptionStatus::Inactive)],
            true,
        );
        assert_eq!(answer(&p, "alice"), None);
        assert!(
            !p.proven_absent("bob"),
            "bob exists, without a subscription"
        );
        assert!(p.proven_absent("carol"));
    }

    #[test]
    fn another_subject_key_a_customer_owns_bills_that_customer() {
        let p = provisioner(10);
        warmed(
            &p,
            vec![customer("c1", "acme", &["acme", "legacy-subject"])],
            vec![subscription("s1", "c1", SubscriptionStatus::Active)],
            false,
        );
        assert_eq!(answer(&p, "legacy-subject"), owned("acme", "c1", "s1"));
        assert!(!p.proven_absent("legacy-subject"));
    }

    #[test]
    fn a_subject_key_that_is_also_a_customers_key_is_that_customers() {
        let p = provisioner(10);
        warmed(
            &p,
            vec![
                customer("c1", "acme", &["acme", "bob"]),
                customer("c2", "bob", &["bob"]),
            ],
            vec![
                subscription("s1", "c1", SubscriptionStatus::Active),
                subscription("s2", "c2", SubscriptionStatus::Active),
            ],
            true,
        );
        assert_eq!(answer(&p, "bob"), owned("bob", "c2", "s2"));
    }

    #[test]
    fn a_deleted_customer_is_neither_known_nor_counted() {
        let p = provisioner(10);
        let mut gone = customer("c1", "alice", &["alice"]);
        gone.deleted_at = Some("2026-01-01T00:00:00Z".into());
        let (listed, _) = warmed(
            &p,
            vec![gone],
            vec![subscription("s1", "c1", SubscriptionStatus::Active)],
            true,
        );
        assert_eq!(listed, 0);
        assert_eq!(answer(&p, "alice"), None);
        assert!(p.proven_absent("alice"));
    }

    #[test]
    fn of_two_current_subscriptions_the_one_that_started_first_bills() {
        let p = provisioner(10);
        let running = started(
            "s1",
            "c1",
            SubscriptionStatus::Canceled,
            TimeDelta::days(20),
        );
        let next = started(
            "s2",
            "c1",
            SubscriptionStatus::Scheduled,
            -TimeDelta::days(10),
        );
        warmed(
            &p,
            vec![customer("c1", "alice", &["alice"])],
            vec![next.clone(), running.clone()],
            false,
        );
        assert_eq!(answer(&p, "alice"), owned("alice", "c1", "s1"));
        let p = provisioner(10);
        let mut join = Join::new(&p, Utc::now(), false);
        join.customers(vec![customer("c1", "alice", &["alice"])]);
        join.subscriptions(vec![next]);
        join.subscriptions(vec![running]);
        join.finish();
        assert_eq!(
            answer(&p, "alice"),
            None,
            "read after the join: left to ensure"
        );
        assert!(!p.proven_absent("alice"));
    }

    #[test]
    fn an_organisation_larger_than_the_cache_fills_it_and_still_proves_who_is_new() {
        let p = provisioner(2);
        let customers: Vec<Customer> = (0..5)
            .map(|i| customer(&format!("c{i}"), &format!("user-{i}"), &[]))
            .collect();
        let subscriptions = (0..5)
            .map(|i| {
                subscription(
                    &format!("s{i}"),
                    &format!("c{i}"),
                    SubscriptionStatus::Active,
                )
            })
            .collect();
        let (listed, identities) = warmed(&p, customers, subscriptions, true);
        assert_eq!((listed, identities), (5, 2));
        assert!((0..5).all(|i| !p.proven_absent(&format!("user-{i}"))));
        assert!(p.proven_absent("user-5"));
    }

    fn new_identities(n: usize) -> Vec<Identity> {
        (0..n)
            .map(|i| {
                let auth = format!("app:new-{i}");
                Identity::from_compound("auth_id", &auth, crate::contract::SubjectRule::Upstream)
                    .unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn identities_the_census_proves_new_do_not_make_a_batch_re_read_the_pages() {
        let p = provisioner(10);
        warmed(&p, Vec::new(), Vec::new(), true);
        p.warm_for(new_identities(100).iter()).await;
        assert!(p.warmed.lock().await.at.is_none(), "no warm-up ran");
    }

    #[tokio::test]
    async fn without_a_census_a_batch_of_unknown_identities_reads_the_pages() {
        let p = provisioner(10);
        p.warm_for(new_identities(100).iter()).await;
        assert!(p.warmed.lock().await.at.is_some(), "a warm-up was tried");
    }

    #[test]
    fn nothing_is_proven_absent_before_a_warm_up() {
        assert!(!provisioner(10).proven_absent("anyone"));
    }
}
