//! The positive cache of ensured identities: about 190 bytes per identity
//! (ULIDs kept as 16 bytes, plan keys interned, status as an enum, the
//! billing terms inline), so 100k customers fit in ~20 MB. An entry never
//! outlives its subscription's `active_to`. moka, which keeps ~350 bytes of
//! bookkeeping per entry, still runs the in-flight coalescing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ulid::Ulid;

use chrono::Utc;

use super::{Created, Ensured};
use crate::billing::BillingTerms;
use crate::domain::CustomerKey;
use crate::openmeter::model::SubscriptionStatus;

/// An OpenMeter id: a ULID in 16 bytes, or the text when it is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CompactId {
    Ulid([u8; 16]),
    Text(Box<str>),
}

impl CompactId {
    fn new(id: &str) -> Self {
        match Ulid::from_string(id) {
            Ok(ulid) if ulid.to_string() == id => Self::Ulid(ulid.to_bytes()),
            _ => Self::Text(id.into()),
        }
    }

    fn expand(&self) -> String {
        match self {
            Self::Ulid(bytes) => Ulid::from_bytes(*bytes).to_string(),
            Self::Text(text) => text.to_string(),
        }
    }
}

/// What is remembered of one ensured identity.
#[derive(Debug)]
struct Known {
    customer_id: CompactId,
    subscription_id: CompactId,
    /// The customer's key, when it is not the identity's own.
    owner_key: Option<Box<str>>,
    /// Index into the interned plan keys.
    plan: u16,
    /// `active`, `scheduled` or `canceled` (only current ones are cached).
    status: SubscriptionStatus,
    terms: BillingTerms,
    expires: Instant,
}

/// A bounded, expiring map of ensured identities.
#[derive(Debug)]
pub(super) struct EnsuredCache {
    state: Mutex<State>,
    ttl: Duration,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    known: HashMap<CustomerKey, Known>,
    plans: Vec<Arc<str>>,
}

impl State {
    fn intern(&mut self, plan: &str) -> Option<u16> {
        if let Some(i) = self.plans.iter().position(|p| &**p == plan) {
            return u16::try_from(i).ok();
        }
        let i = u16::try_from(self.plans.len()).ok()?;
        self.plans.push(Arc::from(plan));
        Some(i)
    }

    /// Makes room: expired entries first, then an arbitrary eighth.
    fn evict(&mut self, capacity: usize, now: Instant) {
        self.known.retain(|_, k| k.expires > now);
        if self.known.len() >= capacity {
            let drop: Vec<CustomerKey> =
                self.known.keys().take(capacity / 8 + 1).cloned().collect();
            for key in drop {
                self.known.remove(&key);
            }
        }
    }
}

impl EnsuredCache {
    pub(super) fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            state: Mutex::default(),
            ttl,
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The map stays consistent even if a holder panicked mid-call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key` is cached and fresh (no copy made).
    pub(super) fn contains(&self, key: &CustomerKey) -> bool {
        self.lock()
            .known
            .get(key)
            .is_some_and(|k| k.expires > Instant::now())
    }

    /// How many identities it holds at most.
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The cached result for `key`, if still fresh.
    pub(super) fn get(&self, key: &CustomerKey) -> Option<Ensured> {
        let mut state = self.lock();
        let known = state.known.get(key)?;
        if known.expires <= Instant::now() {
            state.known.remove(key);
            return None;
        }
        Some(Ensured {
            customer_key: known
                .owner_key
                .as_deref()
                .unwrap_or(key.as_str())
                .to_owned(),
            customer_id: known.customer_id.expand(),
            subscription_id: known.subscription_id.expand(),
            plan_key: state.plans[usize::from(known.plan)].to_string(),
            status: known.status,
            terms: known.terms,
            created: Created {
                customer: false,
                subscription: false,
            },
        })
    }

    /// Remembers a successful ensure of `key` until the TTL passes or its
    /// subscription ends, whichever is first; returns how many identities
    /// are cached.
    pub(super) fn insert(&self, key: &CustomerKey, ensured: &Ensured) -> usize {
        let now = Instant::now();
        let lifetime = self.lifetime(&ensured.terms);
        let mut state = self.lock();
        let status = ensured.status;
        if !matches!(
            status,
            SubscriptionStatus::Active
                | SubscriptionStatus::Scheduled
                | SubscriptionStatus::Canceled
        ) {
            return state.known.len();
        }
        if self.capacity == 0 || lifetime.is_zero() {
            return state.known.len();
        }
        let Some(plan) = state.intern(&ensured.plan_key) else {
            return state.known.len();
        };
        if state.known.len() >= self.capacity && !state.known.contains_key(key) {
            state.evict(self.capacity, now);
        }
        let known = Known {
            customer_id: CompactId::new(&ensured.customer_id),
            subscription_id: CompactId::new(&ensured.subscription_id),
            owner_key: (ensured.customer_key != key.as_str())
                .then(|| ensured.customer_key.as_str().into()),
            plan,
            status,
            terms: ensured.terms,
            expires: now + lifetime,
        };
        state.known.insert(key.clone(), known);
        state.known.len()
    }

    /// The TTL, cut short by the subscription's end.
    fn lifetime(&self, terms: &BillingTerms) -> Duration {
        match terms.active_to {
            Some(end) => (end - Utc::now())
                .to_std()
                .unwrap_or_default()
                .min(self.ttl),
            None => self.ttl,
        }
    }

    pub(super) fn remove(&self, key: &CustomerKey) {
        self.lock().known.remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().known.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Identity;

    fn key(text: &str) -> CustomerKey {
        Identity::from_compound("auth_id", text, crate::domain::SubjectRule::AuthId)
            .unwrap()
            .customer_key()
    }

    fn terms(active_to: Option<chrono::DateTime<Utc>>) -> BillingTerms {
        BillingTerms {
            active_from: Utc::now(),
            active_to,
            anchor: Utc::now(),
            cadence: None,
        }
    }

    fn ensured(key: &str, customer_id: &str) -> Ensured {
        Ensured {
            customer_key: key.to_owned(),
            customer_id: customer_id.to_owned(),
            subscription_id: "01J9ZQ7V3N8K6T2W5X4Y1R0P9M".to_owned(),
            plan_key: "clearinghouse_default_ppu".to_owned(),
            status: SubscriptionStatus::Active,
            terms: terms(None),
            created: Created {
                customer: true,
                subscription: true,
            },
        }
    }

    #[test]
    fn an_entry_does_not_outlive_its_canceled_subscription() {
        let cache = EnsuredCache::new(10, Duration::from_secs(3600));
        let mut e = ensured("a:b", "x");
        e.status = SubscriptionStatus::Canceled;
        e.terms = terms(Some(Utc::now() + chrono::Duration::milliseconds(30)));
        cache.insert(&key("a:b"), &e);
        assert_eq!(
            cache.get(&key("a:b")).unwrap().status,
            SubscriptionStatus::Canceled
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&key("a:b")).is_none());
    }

    #[test]
    fn the_owner_of_a_subject_reads_back_as_the_customer() {
        let cache = EnsuredCache::new(10, Duration::from_secs(60));
        let mut e = ensured("a:b", "x");
        e.customer_key = "legacy-customer".into();
        cache.insert(&key("a:b"), &e);
        assert_eq!(
            cache.get(&key("a:b")).unwrap().customer_key,
            "legacy-customer"
        );
    }

    #[test]
    fn cached_result_reads_back_with_nothing_created() {
        let cache = EnsuredCache::new(10, Duration::from_secs(60));
        let e = ensured("a:b", "01J9ZQ7V3N8K6T2W5X4Y1R0P9A");
        cache.insert(&key("a:b"), &e);
        let hit = cache.get(&key("a:b")).unwrap();
        assert_eq!(hit.customer_id, e.customer_id);
        assert_eq!(hit.plan_key, e.plan_key);
        assert!(!hit.created.customer && !hit.created.subscription);
    }

    #[test]
    fn non_ulid_ids_are_kept_verbatim() {
        let cache = EnsuredCache::new(10, Duration::from_secs(60));
        let e = ensured("a:b", "cus_not-a-ulid");
        cache.insert(&key("a:b"), &e);
        assert_eq!(
            cache.get(&key("a:b")).unwrap().customer_id,
            "cus_not-a-ulid"
        );
    }

    #[test]
    fn lowercase_ulid_text_is_kept_verbatim() {
        assert_eq!(
            CompactId::new("01j9zq7v3n8k6t2w5x4y1r0p9a").expand(),
            "01j9zq7v3n8k6t2w5x4y1r0p9a"
        );
    }

    #[test]
    fn expired_entries_are_misses() {
        let cache = EnsuredCache::new(10, Duration::from_millis(1));
        cache.insert(&key("a:b"), &ensured("a:b", "x"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.get(&key("a:b")).is_none());
    }

    #[test]
    fn capacity_is_never_exceeded() {
        let cache = EnsuredCache::new(100, Duration::from_secs(60));
        for i in 0..1000 {
            let k = format!("c:{i}");
            cache.insert(&key(&k), &ensured(&k, "x"));
        }
        assert!(cache.len() <= 100);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = EnsuredCache::new(0, Duration::from_secs(60));
        cache.insert(&key("a:b"), &ensured("a:b", "x"));
        assert_eq!(cache.len(), 0);
    }
}
