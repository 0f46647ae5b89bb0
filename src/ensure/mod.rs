//! Ensure: the customer for an identity exists and has a current
//! subscription, before any of its usage is sent.
//!
//! Race safety: within one process, concurrent ensures of one key share one
//! upstream flight (moka's `try_get_with`); across processes, a create that
//! loses the race (`ErrorClass::Conflict`: 409, or a 400 saying the key
//! exists) falls back to lookup.
//! Only successes are cached ([`cache::EnsuredCache`]), so a failure is
//! retried on the next call.
//!
//! Flights share one adaptive limit on the calls in flight
//! ([`crate::concurrency`], slow start), across every batch and the API:
//! it grows while OpenMeter answers fast and backs off when it pushes back
//! (429, 5xx, slow answers), so new customers arrive as fast as OpenMeter
//! allows rather than 16 at a time per batch.

mod batch;
mod cache;
mod census;
mod ensured;
mod warm;
pub use census::Warmed;
pub(crate) use ensured::{Billable, Created, Ensured};

use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use moka::future::Cache;
use thiserror::Error;

use crate::concurrency::{AdaptiveLimit, Growth, InFlightBounds, Signal};
use crate::dlq::DeadLetterKind;
use crate::domain::{CustomerKey, Identity, PlanKey, SubjectKind};
use crate::metrics::metrics;
use crate::openmeter::model::{CreateSubscription, Customer, CustomerById, PlanRef, Subscription};
use crate::openmeter::{classify, ApiError, Call, ErrorClass, OpenMeterClient};
use cache::EnsuredCache;
use census::{Census, LastWarmUp, BACKLOG_MISSES};

/// Cache sizes and lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct EnsureConfig {
    /// How long a positive result is trusted.
    pub cache_ttl: Duration,
    /// How many identities are remembered.
    pub cache_capacity: u64,
    /// How long the resolved default plan is trusted.
    pub plan_ttl: Duration,
    /// How long a customer OpenMeter refused is not asked about again, so
    /// its events are dead-lettered without four calls per batch.
    pub refusal_ttl: Duration,
    /// Whether the cache is filled from OpenMeter's customer and
    /// subscription pages at start-up and on a backlog of unknown
    /// identities (`warm`), rather than one identity at a time.
    pub warm_up: bool,
    /// Bounds of the ensure calls in flight at once, across every batch
    /// (`ENSURE_MIN_CONCURRENCY`, `ENSURE_MAX_CONCURRENCY`).
    pub concurrency: InFlightBounds,
}

impl Default for EnsureConfig {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(3600),
            cache_capacity: 1_000_000,
            plan_ttl: Duration::from_secs(60),
            refusal_ttl: Duration::from_secs(30),
            warm_up: true,
            concurrency: InFlightBounds::new(1, 512),
        }
    }
}

#[derive(Debug, Clone, Error)]
pub enum EnsureError {
    /// OpenMeter's error says which call failed, in words (`list
    /// customers`); `step` is for classifying it, not for operators.
    #[error("{source}")]
    Upstream {
        step: Call,
        #[source]
        source: ApiError,
    },
    #[error(
        "plan {0} has no version active now in OpenMeter: run `ticketmeter bootstrap` \
         (a draft must be published) or set OPENMETER_DEFAULT_PLAN_KEY (OPENMETER_OWNER_PLAN_KEY for owners) to a published plan"
    )]
    NoSubscribablePlan(PlanKey),
}

impl EnsureError {
    /// Whom the failure concerns, as [`classify`] decides; a conflict
    /// ensure returns is one its read-back did not explain (not a lost
    /// race: a second subscription, an invalid billing setup, a key another
    /// customer holds), so it concerns that customer.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Upstream { step, source } => match classify(*step, source) {
                ErrorClass::Conflict => ErrorClass::Customer,
                class => class,
            },
            Self::NoSubscribablePlan(_) => ErrorClass::Configuration,
        }
    }

    /// Whether the failure concerns this customer alone (its creation, its
    /// subscription, its billing setup): its events are dead-lettered,
    /// `/ensure` answers 422, everyone else is billed, and the refusal is
    /// remembered for `ENSURE_REFUSAL_TTL`. The one test of it: the other
    /// classes concern everyone.
    pub fn concerns_customer(&self) -> bool {
        self.class() == ErrorClass::Customer
    }

    /// OpenMeter's own words, when the error came from it.
    pub fn upstream(&self) -> Option<&ApiError> {
        match self {
            Self::Upstream { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The dead-letter kind for events of a customer this error refused.
    pub fn dead_letter_kind(&self) -> DeadLetterKind {
        match self {
            Self::Upstream {
                step: Call::FindCustomer | Call::CreateCustomer,
                ..
            } => DeadLetterKind::CustomerRejected,
            _ => DeadLetterKind::SubscriptionRefused,
        }
    }
}

/// Bound on concurrently coalesced flights (entries leave when they land).
const FLIGHTS: u64 = 100_000;

fn at(step: Call) -> impl FnOnce(ApiError) -> EnsureError {
    move |source| EnsureError::Upstream { step, source }
}

/// Of a customer's subscriptions, the one that bills its usage `now`: of
/// the current ones, the one that started first (a canceled one still
/// running comes before the one scheduled to follow it).
fn billing_now(
    subscriptions: impl IntoIterator<Item = Subscription>,
    customer_id: &str,
    now: chrono::DateTime<Utc>,
) -> Option<Subscription> {
    subscriptions
        .into_iter()
        .filter(|s| s.customer_id == customer_id && s.is_current(now))
        .min_by_key(|s| s.active_from)
}

/// Ensures customers and subscriptions, idempotently and race-safely.
#[derive(Clone)]
pub struct Provisioner {
    client: OpenMeterClient,
    plan_key: PlanKey,
    /// The plan new app-owner customers get, when it is not the default.
    owner_plan_key: Option<PlanKey>,
    ensured: Arc<EnsuredCache>,
    /// Ensures under way; an entry lives only while its flight does.
    flights: Cache<CustomerKey, Arc<Ensured>>,
    /// Customers OpenMeter refused ([`ErrorClass::Customer`]), briefly.
    refused: Cache<CustomerKey, Arc<EnsureError>>,
    plans: Cache<PlanKey, PlanRef>,
    /// Whether to warm the cache from pages ([`warm`]).
    warm_up: bool,
    /// How long a cached answer, and the census, are trusted.
    ttl: Duration,
    /// The last warm-up; held while one runs.
    warmed: Arc<tokio::sync::Mutex<LastWarmUp>>,
    /// Unknown identities in one batch that make a warm-up worth its pages
    /// (`usize::MAX`: never, the organisation does not fit the cache).
    rewarm_threshold: Arc<AtomicUsize>,
    /// Every key the last complete warm-up listed.
    census: Arc<RwLock<Option<Arc<Census>>>>,
    /// Ensure calls in flight, shared by every flight.
    limit: Arc<AdaptiveLimit>,
}

impl Provisioner {
    pub fn new(client: OpenMeterClient, plan_key: PlanKey, config: EnsureConfig) -> Self {
        let gauges = &metrics().ensure;
        gauges
            .cache_capacity
            .set(i64::try_from(config.cache_capacity).unwrap_or(i64::MAX));
        let limit = AdaptiveLimit::new(
            config.concurrency,
            Growth::ENSURE,
            gauges.concurrency_limit.clone(),
        );
        Self {
            client,
            plan_key,
            owner_plan_key: None,
            ensured: Arc::new(EnsuredCache::new(config.cache_capacity, config.cache_ttl)),
            flights: Cache::builder().max_capacity(FLIGHTS).build(),
            refused: Cache::builder()
                .max_capacity(FLIGHTS)
                .time_to_live(config.refusal_ttl)
                .build(),
            plans: Cache::builder()
                .max_capacity(16)
                .time_to_live(config.plan_ttl)
                .build(),
            warm_up: config.warm_up && config.cache_capacity > 0,
            ttl: config.cache_ttl,
            warmed: Arc::default(),
            rewarm_threshold: Arc::new(AtomicUsize::new(BACKLOG_MISSES)),
            census: Arc::default(),
            limit: Arc::new(limit),
        }
    }

    /// New app-owner customers (`owner_wallet`) are subscribed to `key`,
    /// everyone else to the default plan.
    pub fn with_owner_plan(mut self, key: Option<PlanKey>) -> Self {
        self.owner_plan_key = key.filter(|k| *k != self.plan_key);
        self
    }

    pub fn plan_key(&self) -> &PlanKey {
        &self.plan_key
    }

    /// The plan a new customer of this kind is subscribed to.
    pub fn plan_for(&self, kind: SubjectKind) -> &PlanKey {
        match (kind, &self.owner_plan_key) {
            (SubjectKind::OwnerWallet, Some(owner)) => owner,
            _ => &self.plan_key,
        }
    }

    /// This provisioner, its caches and in-flight ensures shared, calling
    /// OpenMeter through `client` (the same organisation, another retry
    /// policy). A caller that joins an ensure already in flight gets that
    /// flight's answer.
    pub(crate) fn with_client(&self, client: OpenMeterClient) -> Self {
        Self {
            client,
            ..self.clone()
        }
    }

    pub fn client(&self) -> &OpenMeterClient {
        &self.client
    }

    /// Whether the last complete warm-up proved that no customer has `key`
    /// as its key or subject: neither its census nor the cache holds it,
    /// and the census is younger than `ENSURE_CACHE_TTL`.
    fn proven_absent(&self, key: &str) -> bool {
        let census = self
            .census
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        census.is_some_and(|c| c.is_fresh(self.ttl) && !c.lists(key)) && !self.ensured.knows(key)
    }

    /// One OpenMeter call of a flight, its answer told to the shared limit.
    async fn call<T>(
        &self,
        step: Call,
        request: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, EnsureError> {
        let sent = Instant::now();
        let result = request.await;
        self.observe(&result, sent);
        result.map_err(at(step))
    }

    /// Tells the shared limit what a call sent at `sent` said: its round
    /// trip, or a push-back (429, 5xx, no answer).
    fn observe<T>(&self, result: &Result<T, ApiError>, sent: Instant) {
        self.limit.observe(match result {
            Err(e) if e.is_transient() => Signal::PushedBack,
            _ => Signal::Answered(sent.elapsed()),
        });
    }

    /// What the cache holds for `identity`, the whole answer, without a
    /// call (a batch asks for what delivery needs of many at once:
    /// `take_cached`).
    fn cached(&self, identity: &Identity) -> Option<Ensured> {
        let hit = self.ensured.get(identity.billing_key())?;
        metrics().ensure_cache_hits.inc();
        Some(hit)
    }

    /// Ensures `identity` has a customer with a current subscription.
    /// Cached results, and refusals for `refusal_ttl`, cost no upstream call.
    pub async fn ensure(&self, identity: &Identity) -> Result<Ensured, EnsureError> {
        if let Some(hit) = self.cached(identity) {
            return Ok(hit);
        }
        let key = identity.customer_key();
        if let Some(refusal) = self.refused.get(&key).await {
            return Err((*refusal).clone());
        }
        metrics().ensure_cache_misses.inc();
        let flight: Result<Arc<Ensured>, Arc<EnsureError>> = self
            .flights
            .try_get_with(key.clone(), async {
                let _slot = self.limit.acquire().await;
                let plan = self.plan_for(identity.kind());
                // Boxed: a flight waiting for its slot stays small.
                let ensured = Box::pin(self.ensure_upstream(&key, plan)).await?;
                let cached = self.ensured.insert(&key, &ensured);
                metrics()
                    .ensure_cached
                    .set(i64::try_from(cached).unwrap_or(i64::MAX));
                Ok::<_, EnsureError>(Arc::new(ensured))
            })
            .await;
        self.flights.invalidate(&key).await;
        match flight {
            Ok(ensured) => Ok((*ensured).clone()),
            Err(e) => {
                if e.concerns_customer() {
                    self.refused.insert(key, e.clone()).await;
                }
                Err((*e).clone())
            }
        }
    }

    /// Forgets a cached identity, so the next ensure asks OpenMeter again
    /// (self-heal after OpenMeter rejected its usage).
    pub fn forget(&self, key: &CustomerKey) {
        self.ensured.remove(key);
    }

    /// Finds or makes the customer and its subscription. A customer the
    /// last warm-up proved absent is created outright, and a customer just
    /// created is subscribed outright: two calls instead of four.
    ///
    /// That is safe because the warm-up listed every customer and every
    /// subject key (its census), so a key missing from it was new then; and
    /// where it is not new any more (another instance, or an identity
    /// service, created it since; or the listing missed it while customers
    /// were added), OpenMeter refuses the create with a conflict, since
    /// keys and subject keys are unique (`customer/adapter/customer.go`),
    /// and ensure falls back to the lookup. It never makes a second
    /// customer: a wrong guess costs one call. A customer we just created
    /// has no subscription unless another instance raced to subscribe it,
    /// which the subscription's conflict (one at a time) reveals the same
    /// way. Its log lines share one `ensure` span naming the customer.
    #[tracing::instrument(name = "ensure", skip_all, fields(customer = %key))]
    async fn ensure_upstream(
        &self,
        key: &CustomerKey,
        plan: &PlanKey,
    ) -> Result<Ensured, EnsureError> {
        let (customer, customer_created) = if self.proven_absent(key.as_str()) {
            self.create_customer(key).await?
        } else {
            self.find_or_create_customer(key).await?
        };
        let (subscription, subscription_created) = if customer_created {
            self.create_subscription(&customer, plan).await?
        } else {
            self.find_or_create_subscription(&customer, plan).await?
        };
        if customer_created || subscription_created {
            tracing::info!(
                customer = %key,
                customer_created,
                subscription_created,
                active_from = %subscription.active_from,
                "provisioned OpenMeter customer"
            );
        }
        if customer.key != key.as_str() {
            tracing::info!(
                identity = %key,
                customer = %customer.key,
                "identity is a usage subject of an existing customer; billing that customer"
            );
        }
        let created = Created {
            customer: customer_created,
            subscription: subscription_created,
        };
        Ok(Ensured::of(customer, subscription, plan, created))
    }

    async fn find_customer(&self, key: &CustomerKey) -> Result<Option<Customer>, EnsureError> {
        let found = self
            .call(Call::FindCustomer, self.client.find_customers(key))
            .await?;
        Ok(found.into_iter().next())
    }

    /// The customer whose usage-attribution subjects include `key` (one
    /// made by an earlier identity tool, under another key).
    async fn find_subject_owner(&self, key: &CustomerKey) -> Result<Option<Customer>, EnsureError> {
        let found = self
            .call(
                Call::FindCustomer,
                self.client.find_subject_owners(key.as_str()),
            )
            .await?;
        Ok(found.into_iter().next())
    }

    /// Finds the customer by key, else creates it. A create refused with a
    /// conflict is either a lost race (the key now exists) or the key is
    /// already another customer's usage subject (OpenMeter answers 409
    /// "overlaps with subject of another customer",
    /// `customer/adapter/customer.go`): that customer is used, never a
    /// duplicate made. Looking the subject up only after a conflict keeps a
    /// new identity at five calls.
    async fn find_or_create_customer(
        &self,
        key: &CustomerKey,
    ) -> Result<(Customer, bool), EnsureError> {
        if let Some(existing) = self.find_customer(key).await? {
            return Ok((existing, false));
        }
        self.create_customer(key).await
    }

    /// Creates the customer; on a conflict, uses the customer that holds
    /// the key (or has it as a subject), as [`Self::find_or_create_customer`]
    /// says.
    async fn create_customer(&self, key: &CustomerKey) -> Result<(Customer, bool), EnsureError> {
        let sent = Instant::now();
        let created = self.client.create_customer(key).await;
        self.observe(&created, sent);
        match created {
            Ok(created) => Ok((created, true)),
            Err(e) if classify(Call::CreateCustomer, &e) == ErrorClass::Conflict => {
                tracing::debug!(customer = %key, error = %e, "customer create conflicted; looking it up");
                if let Some(existing) = self.find_customer(key).await? {
                    return Ok((existing, false));
                }
                match self.find_subject_owner(key).await? {
                    Some(owner) => Ok((owner, false)),
                    None => Err(at(Call::CreateCustomer)(e)),
                }
            }
            Err(e) => Err(at(Call::CreateCustomer)(e)),
        }
    }

    /// The subscription that bills the customer's usage now
    /// ([`billing_now`]).
    async fn current_subscription(
        &self,
        customer_id: &str,
    ) -> Result<Option<Subscription>, EnsureError> {
        let subscriptions = self
            .call(
                Call::FindSubscriptions,
                self.client.customer_subscriptions(customer_id),
            )
            .await?;
        Ok(billing_now(subscriptions, customer_id, Utc::now()))
    }

    /// A conflict on create means the customer has a subscription after all (a
    /// lost race) or OpenMeter refuses this customer (a second subscription,
    /// an invalid billing setup); the re-read tells which.
    async fn find_or_create_subscription(
        &self,
        customer: &Customer,
        plan_key: &PlanKey,
    ) -> Result<(Subscription, bool), EnsureError> {
        if let Some(current) = self.current_subscription(&customer.id).await? {
            return Ok((current, false));
        }
        self.create_subscription(customer, plan_key).await
    }

    /// Subscribes the customer to the plan; on a conflict, uses the
    /// subscription that won, as [`Self::find_or_create_subscription`] says.
    async fn create_subscription(
        &self,
        customer: &Customer,
        plan_key: &PlanKey,
    ) -> Result<(Subscription, bool), EnsureError> {
        let plan = self.plan(plan_key).await?;
        let body = CreateSubscription {
            customer: CustomerById { id: &customer.id },
            plan: &plan,
        };
        let sent = Instant::now();
        let created = self.client.create_subscription(&body).await;
        self.observe(&created, sent);
        match created {
            Ok(created) => Ok((created, true)),
            Err(e) if classify(Call::CreateSubscription, &e) == ErrorClass::Conflict => {
                match self.current_subscription(&customer.id).await? {
                    Some(current) => Ok((current, false)),
                    None => Err(at(Call::CreateSubscription)(e)),
                }
            }
            Err(e) => {
                let e = at(Call::CreateSubscription)(e);
                if e.class() == ErrorClass::Configuration {
                    // The plan itself was refused: resolve it afresh next time.
                    self.plans.invalidate(plan_key).await;
                }
                Err(e)
            }
        }
    }

    /// The highest version of the default plan active now, cached briefly.
    pub async fn default_plan(&self) -> Result<PlanRef, EnsureError> {
        self.plan(&self.plan_key.clone()).await
    }

    /// The highest version of plan `key` active now, cached briefly.
    pub async fn plan(&self, key: &PlanKey) -> Result<PlanRef, EnsureError> {
        self.plans
            .try_get_with(key.clone(), self.resolve_plan(key))
            .await
            .map_err(|e| (*e).clone())
    }

    async fn resolve_plan(&self, key: &PlanKey) -> Result<PlanRef, EnsureError> {
        let versions = self
            .call(Call::ResolvePlan, self.client.plan_versions(key))
            .await?;
        versions
            .iter()
            .filter(|p| p.is_subscribable())
            .max_by_key(|p| p.version)
            .map(|p| p.reference())
            .ok_or_else(|| EnsureError::NoSubscribablePlan(key.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_of_the_customer_concerns_the_customer_alone() {
        let status = |code: u16| ApiError::Status {
            operation: "create customer",
            status: code,
            title: "t".into(),
            detail: String::new(),
            invalid_parameters: None,
            retry_after: None,
        };
        assert!(at(Call::CreateCustomer)(status(422)).concerns_customer());
        assert!(!at(Call::CreateCustomer)(status(503)).concerns_customer());
        assert!(!at(Call::FindCustomer)(status(401)).concerns_customer());
        let plan: PlanKey = "p".parse().unwrap();
        assert!(!EnsureError::NoSubscribablePlan(plan).concerns_customer());
    }

    #[test]
    fn a_conflict_ensure_could_not_read_back_concerns_that_customer() {
        let refused = ApiError::Status {
            operation: "create subscription",
            status: 409,
            title: "Conflict".into(),
            detail: "invalid billing setup".into(),
            invalid_parameters: None,
            retry_after: None,
        };
        for step in [Call::CreateCustomer, Call::CreateSubscription] {
            let e = at(step)(refused.clone());
            assert_eq!(e.class(), ErrorClass::Customer, "{step:?}");
        }
    }
}
