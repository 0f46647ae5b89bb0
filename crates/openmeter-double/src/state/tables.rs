//! What the double holds: customers, plans, subscriptions, meters, features
//! and events, with the indexes that keep each lookup O(1).

use std::collections::{HashMap, HashSet};

use super::event_store::EventStore;
use crate::model::{Customer, Feature, Meter, Plan, Subscription};

#[derive(Default)]
pub(crate) struct State {
    pub(crate) customers: Vec<Customer>,
    /// How many of `customers` are deleted (none: a page of them is a slice).
    pub(crate) deleted_customers: usize,
    /// Customer id → index into `customers`.
    pub(crate) customer_by_id: HashMap<String, usize>,
    /// Non-deleted customer key → index.
    pub(crate) customer_by_key: HashMap<String, usize>,
    /// Usage-attribution subject key → index of the customer that owns it.
    pub(crate) subject_owner: HashMap<String, usize>,
    pub(crate) plans: Vec<Plan>,
    pub(crate) subscriptions: Vec<Subscription>,
    /// Customer id → indexes into `subscriptions` (lists by customer stay
    /// O(1) with 100k customers, for load benchmarks).
    pub(crate) subscriptions_by_customer: HashMap<String, Vec<usize>>,
    pub(crate) meters: Vec<Meter>,
    pub(crate) features: Vec<Feature>,
    pub(crate) events: EventStore,
    /// Ingest requests containing one of these event ids are rejected.
    pub(crate) rejected_event_ids: HashSet<String>,
    /// Events with these ids are lost on their next ingest as #5118 loses
    /// them: the id is claimed, nothing is stored, the request succeeds.
    pub(crate) lost_event_ids: HashSet<String>,
    /// Customer keys or ids whose billing setup the invoicing app refuses.
    pub(crate) billing_refused: HashSet<String>,
}
