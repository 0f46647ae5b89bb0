//! The positive cache of ensured identities: about 120 bytes per identity
//! (ULIDs kept as 16 bytes, plan keys interned, status as an enum), so
//! 100k customers fit in ~12 MB. moka, which keeps ~350 bytes of
//! bookkeeping per entry, still runs the in-flight coalescing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ulid::Ulid;

use super::{Created, Ensured};
use crate::domain::CustomerKey;

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
    /// Index into the interned plan keys.
    plan: u16,
    scheduled: bool,
    expires: Instant,
}

/// A bounded, expiring map of ensured identities.
#[derive(Debug)]
pub struct EnsuredCache {
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
    pub fn new(capacity: u64, ttl: Duration) -> Self {
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

    /// The cached result for `key`, if still fresh.
    pub fn get(&self, key: &CustomerKey) -> Option<Ensured> {
        let mut state = self.lock();
        let known = state.known.get(key)?;
        if known.expires <= Instant::now() {
            state.known.remove(key);
            return None;
        }
        Some(Ensured {
            customer_key: key.clone(),
            customer_id: known.customer_id.expand(),
            subscription_id: known.subscription_id.expand(),
            plan_key: state.plans[usize::from(known.plan)].to_string(),
            status: if known.scheduled {
                "scheduled"
            } else {
                "active"
            }
            .to_owned(),
            created: Created {
                customer: false,
                subscription: false,
            },
        })
    }

    /// Remembers a successful ensure; returns how many identities are cached.
    pub fn insert(&self, ensured: &Ensured) -> usize {
        let now = Instant::now();
        let mut state = self.lock();
        if self.capacity == 0 || self.ttl.is_zero() {
            return state.known.len();
        }
        let Some(plan) = state.intern(&ensured.plan_key) else {
            return state.known.len();
        };
        if state.known.len() >= self.capacity && !state.known.contains_key(&ensured.customer_key) {
            state.evict(self.capacity, now);
        }
        let known = Known {
            customer_id: CompactId::new(&ensured.customer_id),
            subscription_id: CompactId::new(&ensured.subscription_id),
            plan,
            scheduled: ensured.status == "scheduled",
            expires: now + self.ttl,
        };
        state.known.insert(ensured.customer_key.clone(), known);
        state.known.len()
    }

    pub fn remove(&self, key: &CustomerKey) {
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

    fn ensured(key: &str, customer_id: &str) -> Ensured {
        Ensured {
            customer_key: Identity::from_compound("auth_id", key)
                .unwrap()
                .customer_key(),
            customer_id: customer_id.to_owned(),
            subscription_id: "01J9ZQ7V3N8K6T2W5X4Y1R0P9M".to_owned(),
            plan_key: "clearinghouse_default_ppu".to_owned(),
            status: "active".to_owned(),
            created: Created {
                customer: true,
                subscription: true,
            },
        }
    }

    #[test]
    fn cached_result_reads_back_with_nothing_created() {
        let cache = EnsuredCache::new(10, Duration::from_secs(60));
        let e = ensured("a:b", "01J9ZQ7V3N8K6T2W5X4Y1R0P9A");
        cache.insert(&e);
        let hit = cache.get(&e.customer_key).unwrap();
        assert_eq!(hit.customer_id, e.customer_id);
        assert_eq!(hit.plan_key, e.plan_key);
        assert!(!hit.created.customer && !hit.created.subscription);
    }

    #[test]
    fn non_ulid_ids_are_kept_verbatim() {
        let cache = EnsuredCache::new(10, Duration::from_secs(60));
        let e = ensured("a:b", "cus_not-a-ulid");
        cache.insert(&e);
        assert_eq!(
            cache.get(&e.customer_key).unwrap().customer_id,
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
        let e = ensured("a:b", "x");
        cache.insert(&e);
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.get(&e.customer_key).is_none());
    }

    #[test]
    fn capacity_is_never_exceeded() {
        let cache = EnsuredCache::new(100, Duration::from_secs(60));
        for i in 0..1000 {
            cache.insert(&ensured(&format!("c:{i}"), "x"));
        }
        assert!(cache.len() <= 100);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = EnsuredCache::new(0, Duration::from_secs(60));
        cache.insert(&ensured("a:b", "x"));
        assert_eq!(cache.len(), 0);
    }
}
