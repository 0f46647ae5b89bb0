use chrono::Utc;
use serde_json::Value;

use super::tables::State;
use crate::model::{new_id, Customer, Labels, UsageAttribution};
use crate::problem::{ApiResult, Problem};

/// The namespace a self-hosted OpenMeter serves, named in some details.
const NAMESPACE: &str = "default";

/// A `CreateCustomerRequest` the spec accepted.
#[derive(Debug, Default)]
pub(crate) struct NewCustomer {
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) labels: Option<Labels>,
    pub(crate) subject_keys: Option<Vec<String>>,
    pub(crate) primary_email: Option<String>,
    pub(crate) currency: Option<String>,
    pub(crate) billing_address: Option<Value>,
}

impl NewCustomer {
    fn into_customer(self) -> Customer {
        let now = Utc::now();
        Customer {
            id: new_id(),
            name: self.name,
            description: None,
            labels: self.labels,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            key: self.key,
            usage_attribution: self
                .subject_keys
                .map(|subject_keys| UsageAttribution { subject_keys }),
            primary_email: self.primary_email,
            currency: self.currency,
            billing_address: self.billing_address,
        }
    }
}

impl State {
    /// Create a customer, refusing with 409 what the server's adapter
    /// refuses, in its order (`customer/adapter/customer.go`,
    /// `CreateCustomer`): a key that is another customer's id, a key that is
    /// another customer's usage-attribution subject key, a taken key
    /// (`customer/errors.go`, `NewKeyConflictError`), then subject keys
    /// already attributed to someone else (`NewSubjectKeyConflictError`).
    pub(crate) fn create_customer(&mut self, new: NewCustomer) -> ApiResult<Customer> {
        if self.customer_by_id.contains_key(&new.key) {
            return Err(Problem::conflict(format!(
                "key {} overlaps with id of another customer",
                new.key
            )));
        }
        if let Some(&owner) = self.subject_owner.get(&new.key) {
            return Err(Problem::conflict(format!(
                "key {} overlaps with subject of another customer: {}",
                new.key, self.customers[owner].id
            )));
        }
        if self.customer_by_key.contains_key(&new.key) {
            return Err(Problem::conflict(format!(
                "key \"{}\" is already used by an another customer in the namespace {NAMESPACE}",
                new.key
            )));
        }
        let subject_keys = new.subject_keys.as_deref().unwrap_or_default();
        if subject_keys
            .iter()
            .any(|sk| self.subject_owner.contains_key(sk))
        {
            return Err(Problem::conflict(format!(
                "one or multiple subject keys of [{}] are already associated with an different \
                 customer in the namespace {NAMESPACE}",
                subject_keys.join(", ")
            )));
        }
        let customer = new.into_customer();
        self.insert_customer(customer.clone());
        Ok(customer)
    }

    /// Insert without conflict checks (seeding). Existing index entries win.
    pub(crate) fn insert_customer(&mut self, customer: Customer) -> usize {
        let idx = self.customers.len();
        self.customer_by_id.insert(customer.id.clone(), idx);
        if customer.deleted_at.is_some() {
            self.deleted_customers += 1;
        } else {
            self.customer_by_key
                .entry(customer.key.clone())
                .or_insert(idx);
            for sk in customer.subject_keys() {
                self.subject_owner.entry(sk.clone()).or_insert(idx);
            }
        }
        self.customers.push(customer);
        idx
    }

    pub(crate) fn seed_customer(&mut self, key: &str, subject_keys: &[&str]) -> String {
        let new = NewCustomer {
            name: key.to_string(),
            key: key.to_string(),
            subject_keys: Some(subject_keys.iter().map(|s| s.to_string()).collect()),
            ..NewCustomer::default()
        };
        let customer = new.into_customer();
        let id = customer.id.clone();
        self.insert_customer(customer);
        id
    }

    pub(crate) fn customer(&self, id: &str) -> Option<&Customer> {
        self.customer_by_id.get(id).map(|&i| &self.customers[i])
    }

    pub(crate) fn customer_by_key(&self, key: &str) -> Option<&Customer> {
        self.customer_by_key.get(key).map(|&i| &self.customers[i])
    }

    /// The customer a subject attributes to: an explicit subject key first,
    /// then a customer whose key equals the subject.
    pub(crate) fn subject_owner(&self, subject: &str) -> Option<usize> {
        self.subject_owner
            .get(subject)
            .or_else(|| self.customer_by_key.get(subject))
            .copied()
    }
}
