//! The test-facing handle: configuration, snapshots, seeding and faults.

mod faults;
pub(crate) mod running;

use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use axum::Router;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::config::DoubleConfig;
use crate::model::{Customer, Delivery, Feature, Meter, Plan, PlanSeed, Subscription};
use crate::problem::Problem;
use crate::route::Route;
use crate::state::State;
use crate::store::Store;

/// An in-memory OpenMeter. Cheap to clone: clones share one state, so a test
/// keeps a handle while the server task serves requests.
#[derive(Clone)]
pub struct Double {
    store: Arc<Store>,
}

impl Default for Double {
    fn default() -> Self {
        Self::new(DoubleConfig::default())
    }
}

impl Double {
    pub fn new(config: DoubleConfig) -> Self {
        Self {
            store: Store::new(config),
        }
    }

    pub fn config(&self) -> &DoubleConfig {
        &self.store.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.store.lock()
    }

    /// The API as an axum router (both `/api/v3` and `/v3` prefixes), for
    /// in-process use. Dropped connections ([`Double::drop_next`]) need a real
    /// socket: through this router they surface as a bare 503.
    pub fn router(&self) -> Router {
        crate::server::router(self.store.clone())
    }

    // ---- counters -------------------------------------------------------

    /// Requests that reached `route`, including faulted and rejected ones.
    pub fn calls(&self, route: Route) -> u64 {
        self.store.counters.route(route)
    }

    /// Every request, including unknown routes.
    pub fn total_calls(&self) -> u64 {
        self.store.counters.total()
    }

    /// POST/PUT/PATCH/DELETE requests other than event ingest: what a cache in
    /// front of the API is supposed to save.
    pub fn write_calls(&self) -> u64 {
        self.store.counters.writes()
    }

    pub fn reset_counters(&self) {
        self.store.counters.reset();
    }

    // ---- snapshots ------------------------------------------------------

    pub fn customers(&self) -> Vec<Customer> {
        self.lock().customers.clone()
    }

    /// Every subscription, each `status` computed now.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        let now = Utc::now();
        let state = self.lock();
        state
            .subscriptions
            .iter()
            .map(|s| s.observed_at(now))
            .collect()
    }

    /// How many customers it holds (deleted ones too), without copying them.
    pub fn customer_count(&self) -> usize {
        self.lock().customers.len()
    }

    /// How many subscriptions it holds, without copying them.
    pub fn subscription_count(&self) -> usize {
        self.lock().subscriptions.len()
    }

    /// Every plan version, each `status` computed now.
    pub fn plans(&self) -> Vec<Plan> {
        let now = Utc::now();
        self.lock()
            .plans
            .iter()
            .map(|p| p.observed_at(now))
            .collect()
    }

    pub fn meters(&self) -> Vec<Meter> {
        self.lock().meters.clone()
    }

    pub fn features(&self) -> Vec<Feature> {
        self.lock().features.clone()
    }

    /// Every event delivery in arrival order, duplicates included.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries_since(0)
    }

    /// The deliveries after the first `first` (a load run's own, without
    /// copying every earlier one).
    pub fn deliveries_since(&self, first: usize) -> Vec<Delivery> {
        let state = self.lock();
        state
            .events
            .deliveries
            .iter()
            .skip(first)
            .map(|d| Delivery {
                event: serde_json::to_value(&d.event).unwrap_or_default(),
                received_at: d.received_at,
                duplicate: d.duplicate,
                customer_id: d.customer.map(|i| state.customers[i].id.clone()),
            })
            .collect()
    }

    /// Number of deliveries, without copying them (for load tests).
    pub fn delivery_count(&self) -> usize {
        self.lock().events.deliveries.len()
    }

    /// Events deduplicated by `(source, id)`, in first-arrival order: what
    /// OpenMeter would bill.
    pub fn unique_events(&self) -> Vec<Value> {
        let state = self.lock();
        let events = &state.events;
        events
            .unique
            .iter()
            .map(|&i| serde_json::to_value(&events.deliveries[i].event).unwrap_or_default())
            .collect()
    }

    // ---- usage ----------------------------------------------------------

    /// What invoicing would bill the customer from meter `meter_key`: the
    /// meter's value over the service periods of the customer's subscriptions
    /// that put a usage price on a feature of this meter, each period running
    /// from `active_from` to `active_to` (open while the subscription runs),
    /// truncated to whole seconds. Events of other subjects, other event
    /// types, duplicates by `(source, id)`, and events timed before a
    /// subscription started (or after it ended) are not billed, exactly as
    /// OpenMeter's invoicing does (see `state/usage.rs` for the sources).
    /// This is what lets a test say "billed = signed". It is the quantity
    /// invoicing reads, before a rate card's usage discount takes its free
    /// units off (those are not modelled).
    ///
    /// # Panics
    /// When no meter has the key or no customer has the id: a typo in a test
    /// must not read as "nothing billed".
    pub fn billable_total(&self, meter_key: &str, customer_id: &str) -> Decimal {
        let state = self.lock();
        let meter = usage_subject(&state, meter_key, customer_id);
        state.billable_total(meter, customer_id)
    }

    /// Everything meter `meter_key` counts for the customer, whenever the
    /// events happened and whether or not a subscription bills them: what a
    /// meter query filtered by the customer answers without `from`/`to`.
    /// `metered_total - billable_total` is usage accepted but never invoiced.
    ///
    /// # Panics
    /// Like [`Double::billable_total`].
    pub fn metered_total(&self, meter_key: &str, customer_id: &str) -> Decimal {
        let state = self.lock();
        let meter = usage_subject(&state, meter_key, customer_id);
        state.metered_total(meter, customer_id)
    }

    // ---- seeding --------------------------------------------------------

    /// Insert a plan in any status (including deleted ones) to test plan
    /// resolution. Returns its id.
    pub fn seed_plan(&self, seed: PlanSeed) -> String {
        self.lock().seed_plan(seed)
    }

    /// Insert a customer named and keyed `key`, skipping conflict checks.
    pub fn seed_customer(&self, key: &str, subject_keys: &[&str]) -> String {
        self.lock().seed_customer(key, subject_keys)
    }

    /// Insert a subscription that has `status` now, skipping all checks.
    /// Status is computed from the dates, so they are chosen to match:
    /// `active` starts now, `scheduled` in a day, `canceled` starts now and
    /// ends in 30 days, `inactive` ended a day ago.
    ///
    /// # Panics
    /// On any other status: a bug in the test.
    pub fn seed_subscription(&self, customer_id: &str, plan_id: &str, status: &str) -> String {
        self.lock().seed_subscription(customer_id, plan_id, status)
    }

    /// Make the invoicing app refuse (or, with `refused = false`, accept
    /// again) the billing setup of the customer with this key or id, which
    /// may not exist yet (lifting by either clears both). While refused, creating a subscription for it
    /// answers 409 "… invalid billing setup: …" and creates nothing, as the
    /// server does when, say, its Stripe app lacks the customer's data
    /// (`billing/validators/subscription`). Like the server, only a
    /// subscription with a priced rate card is checked: a plan seeded by
    /// `PlanSeed::new` has none, so give it priced phases (or bootstrap a
    /// real catalog) to see the refusal.
    pub fn refuse_billing_setup(&self, customer_key_or_id: &str, refused: bool) {
        let mut state = self.lock();
        if refused {
            state.billing_refused.insert(customer_key_or_id.to_string());
            return;
        }
        let named = state
            .customer(customer_key_or_id)
            .or_else(|| state.customer_by_key(customer_key_or_id))
            .map(|c| [c.id.clone(), c.key.clone()]);
        state.billing_refused.remove(customer_key_or_id);
        for alias in named.into_iter().flatten() {
            state.billing_refused.remove(&alias);
        }
    }

    /// Cancel subscription `subscription_id` as of `active_to`, skipping
    /// the server's rules (status, billing-period alignment; an `active_to`
    /// in the past is allowed): the subscription reads as `canceled` while
    /// now < `active_to` and `inactive` from then on, and stops billing at
    /// `active_to` (see [`Double::billable_total`]). The API route
    /// `POST /subscriptions/{id}/cancel` applies the rules.
    pub fn cancel_subscription_at(
        &self,
        subscription_id: &str,
        active_to: DateTime<Utc>,
    ) -> Result<Subscription, Problem> {
        self.lock()
            .cancel_subscription_at(subscription_id, active_to)
    }

    /// Start subscription `subscription_id` at `active_from` (its billing
    /// anchor too), as if created then: a v3 create always starts now, so
    /// this is how a test or benchmark gets customers subscribed long
    /// before the usage it sends. No checks.
    pub fn start_subscription_at(
        &self,
        subscription_id: &str,
        active_from: DateTime<Utc>,
    ) -> Result<Subscription, Problem> {
        self.lock()
            .start_subscription_at(subscription_id, active_from)
    }

    /// Create a meter from a `CreateMeterRequest` body, exactly as
    /// `POST /meters` would.
    ///
    /// # Panics
    /// When the body is invalid or the key is taken: that is a bug in the
    /// test, and a panic names it.
    pub fn seed_meter(&self, body: Value) -> String {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let result =
            crate::routes::meters::parse_new(&bytes).and_then(|new| self.lock().create_meter(new));
        match result {
            Ok(meter) => meter.id,
            Err(p) => panic!("seed_meter: {} {}", p.status, p.detail),
        }
    }

    // ---- faults ---------------------------------------------------------

    /// Answer the next `n` calls of `route` with a problem of `status`
    /// (429/503 carry `Retry-After`, see [`DoubleConfig::retry_after_secs`]).
    pub fn fail_next(&self, route: Route, n: u32, status: u16) {
        let retry = matches!(status, 429 | 503).then_some(self.store.config.retry_after_secs);
        self.store.faults.fail_next(route, n, status, retry);
    }

    /// Like [`Double::fail_next`] with an explicit `Retry-After`.
    pub fn fail_next_with_retry_after(&self, route: Route, n: u32, status: u16, secs: u64) {
        self.store.faults.fail_next(route, n, status, Some(secs));
    }

    /// Delay every call of `route` (zero turns it off).
    pub fn set_latency(&self, route: Route, latency: Duration) {
        self.store.faults.set_latency(route, latency);
    }

    /// Put the double `network` away from its clients: every request
    /// waits its round trip, and its rate limit answers 429 (benchmarks of
    /// a distant server). [`Network::default`] is loopback again.
    pub fn set_network(&self, network: crate::Network) {
        self.store.network.set(network);
    }

    /// Requests the network's rate limit answered 429.
    pub fn rate_limited(&self) -> u64 {
        self.store.network.limited()
    }

    /// Close the connection of the next `n` calls of `route` without sending
    /// a single response byte, like a crashed proxy.
    pub fn drop_next(&self, route: Route, n: u32) {
        self.store.faults.drop_next(route, n);
    }

    /// Remove all pending faults and latencies.
    pub fn clear_faults(&self) {
        self.store.faults.clear();
        self.lock().rejected_event_ids.clear();
    }

    /// Reject (400, naming the ids) every ingest request that contains one
    /// of these event ids, to test that a client splits a failing batch.
    pub fn reject_event_ids(&self, ids: &[&str]) {
        let mut state = self.lock();
        state
            .rejected_event_ids
            .extend(ids.iter().map(|s| s.to_string()));
    }
}

/// The meter keyed `meter_key`, after checking the customer exists.
fn usage_subject<'s>(state: &'s State, meter_key: &str, customer_id: &str) -> &'s Meter {
    assert!(
        state.customer(customer_id).is_some(),
        "no customer with id {customer_id:?}"
    );
    state
        .meter_by_id_or_key(meter_key)
        .unwrap_or_else(|| panic!("no meter with key {meter_key:?}"))
}
