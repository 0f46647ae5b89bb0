//! The positive cache of ensured identities, compact enough to hold an
//! organisation of a million customers: one 80-byte slot per identity in
//! one vector (ULIDs as 16 bytes, times as nanoseconds, plan keys and
//! billing cadences interned), its key's bytes in one arena, and a hash
//! index of slot numbers (about 5 bytes per identity) — no allocation per
//! entry. About 115 bytes per identity with keys of 27 characters; the
//! sizing table in `docs/operations.md` has what a whole collector needs.
//!
//! An entry never outlives its subscription's `active_to`. When the cache
//! is full, a new identity takes the slot of one not used since the clock
//! hand last passed it (CLOCK, an approximation of least recently used),
//! so an organisation larger than the cache keeps its active customers
//! cached rather than churning. The warm-up ([`super::warm`]) fills it
//! without evicting.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hashbrown::HashTable;
use ulid::Ulid;

use super::{Created, Ensured};
use crate::billing::{BillingTerms, Cadence};
use crate::domain::CustomerKey;
use crate::openmeter::model::SubscriptionStatus;

/// Expiry stamps are milliseconds after the table's epoch, in a `u32`; the
/// epoch moves forward before they would overflow.
const REBASE_AFTER_MS: u64 = 1 << 31;
/// The arena is compacted when this much of it, and half of it, is garbage.
const COMPACT_GARBAGE: usize = 1 << 20;
/// `active_to` absent.
const NO_TIME: i64 = i64::MIN;

/// Slot flags.
const CUSTOMER_ID_TEXT: u8 = 1;
const SUBSCRIPTION_ID_TEXT: u8 = 1 << 1;
/// Read since the clock hand last passed.
const USED: u8 = 1 << 2;
const FREE: u8 = 1 << 3;

/// A place in the arena.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    at: u32,
    len: u16,
}

/// What is remembered of one ensured identity.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key_at: u32,
    /// The customer's key, when it is not the identity's own (`owner_len`
    /// 0: it is).
    owner_at: u32,
    key_len: u16,
    owner_len: u16,
    /// Index into the interned plan keys.
    plan: u16,
    /// 0: no cadence; else 1 + index into the interned cadences.
    cadence: u16,
    /// A ULID's 16 bytes, or (with `CUSTOMER_ID_TEXT`) the text's span.
    customer_id: [u8; 16],
    subscription_id: [u8; 16],
    active_from: i64,
    active_to: i64,
    anchor: i64,
    /// Milliseconds after the epoch.
    expires: u32,
    status: SubscriptionStatus,
    flags: u8,
}

impl Slot {
    fn key(&self) -> Span {
        Span {
            at: self.key_at,
            len: self.key_len,
        }
    }

    fn is_free(&self) -> bool {
        self.flags & FREE != 0
    }
}

/// An id as stored: a ULID's bytes, or text kept in the arena.
fn id_span(id: &[u8; 16]) -> Span {
    let [a, b, c, d, e, f, ..] = *id;
    Span {
        at: u32::from_le_bytes([a, b, c, d]),
        len: u16::from_le_bytes([e, f]),
    }
}

fn span_id(span: Span) -> [u8; 16] {
    let mut id = [0; 16];
    id[..4].copy_from_slice(&span.at.to_le_bytes());
    id[4..6].copy_from_slice(&span.len.to_le_bytes());
    id
}

fn nanos(at: DateTime<Utc>) -> Option<i64> {
    at.timestamp_nanos_opt().filter(|n| *n != NO_TIME)
}

fn time(nanos: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(nanos)
}

/// The slots and the bytes their spans point into.
#[derive(Debug, Default)]
struct Store {
    slots: Vec<Slot>,
    free: Vec<u32>,
    arena: Vec<u8>,
    /// Arena bytes no slot points to any more.
    garbage: usize,
}

impl Store {
    fn text(&self, span: Span) -> &str {
        let start = span.at as usize;
        let bytes = &self.arena[start..start + usize::from(span.len)];
        // Only whole `&str`s are ever written to the arena.
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    fn key(&self, slot: u32) -> &str {
        self.text(self.slots[slot as usize].key())
    }

    /// Appends `text`; `None` when it does not fit a span.
    fn push(&mut self, text: &str) -> Option<Span> {
        let at = u32::try_from(self.arena.len()).ok()?;
        let len = u16::try_from(text.len()).ok()?;
        at.checked_add(u32::from(len))?;
        self.arena.extend_from_slice(text.as_bytes());
        Some(Span { at, len })
    }

    /// Stores `id` as a ULID when it is one (in its canonical text), else
    /// as text; `Some(true)` when it is text.
    fn id(&mut self, id: &str) -> Option<([u8; 16], bool)> {
        match Ulid::from_string(id) {
            Ok(ulid) if ulid.to_string() == id => Some((ulid.to_bytes(), false)),
            _ => Some((span_id(self.push(id)?), true)),
        }
    }

    fn expand_id(&self, id: &[u8; 16], text: bool) -> String {
        if text {
            self.text(id_span(id)).to_owned()
        } else {
            Ulid::from_bytes(*id).to_string()
        }
    }

    /// The arena spans a slot holds besides its key.
    fn spans_of(slot: &Slot) -> impl Iterator<Item = Span> {
        let owner = (slot.owner_len > 0).then_some(Span {
            at: slot.owner_at,
            len: slot.owner_len,
        });
        let customer = (slot.flags & CUSTOMER_ID_TEXT != 0).then(|| id_span(&slot.customer_id));
        let subscription =
            (slot.flags & SUBSCRIPTION_ID_TEXT != 0).then(|| id_span(&slot.subscription_id));
        owner.into_iter().chain(customer).chain(subscription)
    }

    /// Counts the arena bytes of a slot's data (not its key) as garbage.
    fn discard_data(&mut self, slot: u32) {
        let spans: usize = Self::spans_of(&self.slots[slot as usize])
            .map(|s| usize::from(s.len))
            .sum();
        self.garbage += spans;
    }

    /// Copies every live span into a fresh arena once garbage dominates.
    fn compact_if_wasteful(&mut self) {
        if self.garbage < COMPACT_GARBAGE || self.garbage * 2 < self.arena.len() {
            return;
        }
        let old = std::mem::take(&mut self.arena);
        let mut arena = Vec::with_capacity(old.len() - self.garbage);
        let mut moved = |span: Span| {
            let start = span.at as usize;
            let at = arena.len() as u32;
            arena.extend_from_slice(&old[start..start + usize::from(span.len)]);
            Span { at, len: span.len }
        };
        for slot in self.slots.iter_mut().filter(|s| !s.is_free()) {
            let key = moved(slot.key());
            slot.key_at = key.at;
            if slot.owner_len > 0 {
                slot.owner_at = moved(Span {
                    at: slot.owner_at,
                    len: slot.owner_len,
                })
                .at;
            }
            if slot.flags & CUSTOMER_ID_TEXT != 0 {
                slot.customer_id = span_id(moved(id_span(&slot.customer_id)));
            }
            if slot.flags & SUBSCRIPTION_ID_TEXT != 0 {
                slot.subscription_id = span_id(moved(id_span(&slot.subscription_id)));
            }
        }
        self.arena = arena;
        self.garbage = 0;
    }
}

/// The table behind the cache's lock.
#[derive(Debug)]
struct Table {
    /// Slot numbers, by their key's hash.
    index: HashTable<u32>,
    store: Store,
    hasher: RandomState,
    plans: Vec<Arc<str>>,
    cadences: Vec<Cadence>,
    epoch: Instant,
    /// The clock hand: the next slot eviction looks at.
    hand: usize,
}

impl Table {
    fn new() -> Self {
        Self {
            index: HashTable::new(),
            store: Store::default(),
            hasher: RandomState::new(),
            plans: Vec::new(),
            cadences: Vec::new(),
            epoch: Instant::now(),
            hand: 0,
        }
    }

    fn find(&self, key: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        let store = &self.store;
        self.index.find(hash, |&s| store.key(s) == key).copied()
    }

    /// Milliseconds after the epoch, moving the epoch (and every stamp)
    /// forward before they would overflow.
    fn stamp(&mut self, at: Instant) -> u64 {
        let ms = at.saturating_duration_since(self.epoch).as_millis() as u64;
        if ms < REBASE_AFTER_MS {
            return ms;
        }
        let shift = u32::try_from(ms).unwrap_or(u32::MAX);
        for slot in &mut self.store.slots {
            slot.expires = slot.expires.saturating_sub(shift);
        }
        self.epoch += Duration::from_millis(u64::from(shift));
        ms - u64::from(shift)
    }

    fn is_fresh(&self, slot: &Slot, now_ms: u64, now: DateTime<Utc>) -> bool {
        u64::from(slot.expires) > now_ms
            && (slot.active_to == NO_TIME || time(slot.active_to) > now)
    }

    fn intern_plan(&mut self, plan: &str) -> Option<u16> {
        if let Some(i) = self.plans.iter().position(|p| &**p == plan) {
            return u16::try_from(i).ok();
        }
        let i = u16::try_from(self.plans.len()).ok()?;
        self.plans.push(Arc::from(plan));
        Some(i)
    }

    fn intern_cadence(&mut self, cadence: Option<Cadence>) -> Option<u16> {
        let Some(cadence) = cadence else {
            return Some(0);
        };
        let i = match self.cadences.iter().position(|c| *c == cadence) {
            Some(i) => i,
            None => {
                self.cadences.push(cadence);
                self.cadences.len() - 1
            }
        };
        u16::try_from(i + 1).ok()
    }

    fn ensured(&self, slot: u32) -> Ensured {
        let s = &self.store.slots[slot as usize];
        let key = if s.owner_len > 0 {
            Span {
                at: s.owner_at,
                len: s.owner_len,
            }
        } else {
            s.key()
        };
        Ensured {
            customer_key: self.store.text(key).to_owned(),
            customer_id: self
                .store
                .expand_id(&s.customer_id, s.flags & CUSTOMER_ID_TEXT != 0),
            subscription_id: self
                .store
                .expand_id(&s.subscription_id, s.flags & SUBSCRIPTION_ID_TEXT != 0),
            plan_key: self.plans[usize::from(s.plan)].to_string(),
            status: s.status,
            terms: BillingTerms {
                active_from: time(s.active_from),
                active_to: (s.active_to != NO_TIME).then(|| time(s.active_to)),
                anchor: time(s.anchor),
                cadence: s
                    .cadence
                    .checked_sub(1)
                    .map(|i| self.cadences[usize::from(i)]),
            },
            created: Created {
                customer: false,
                subscription: false,
            },
        }
    }

    /// A slot for a new key: a free one, else a new one.
    fn vacant_slot(&mut self) -> Option<u32> {
        if let Some(slot) = self.store.free.pop() {
            return Some(slot);
        }
        let slot = u32::try_from(self.store.slots.len()).ok()?;
        self.store.slots.push(Slot {
            key_at: 0,
            owner_at: 0,
            key_len: 0,
            owner_len: 0,
            plan: 0,
            cadence: 0,
            customer_id: [0; 16],
            subscription_id: [0; 16],
            active_from: 0,
            active_to: NO_TIME,
            anchor: 0,
            expires: 0,
            status: SubscriptionStatus::Unknown,
            flags: FREE,
        });
        Some(slot)
    }

    fn remove(&mut self, key: &str) {
        let hash = self.hasher.hash_one(key);
        let store = &self.store;
        let Ok(entry) = self.index.find_entry(hash, |&s| store.key(s) == key) else {
            return;
        };
        let (slot, _) = entry.remove();
        self.release(slot);
    }

    /// Frees a slot already out of the index.
    fn release(&mut self, slot: u32) {
        self.store.discard_data(slot);
        let s = &mut self.store.slots[slot as usize];
        self.store.garbage += usize::from(s.key_len);
        s.flags = FREE;
        s.key_len = 0;
        s.owner_len = 0;
        self.store.free.push(slot);
        self.store.compact_if_wasteful();
    }

    /// Evicts one identity: the first the clock hand finds expired or not
    /// used since it last passed.
    fn evict_one(&mut self, now_ms: u64, now: DateTime<Utc>) {
        let len = self.store.slots.len();
        for _ in 0..2 * len + 1 {
            if self.hand >= len {
                self.hand = 0;
            }
            let i = self.hand;
            self.hand += 1;
            let slot = self.store.slots[i];
            if slot.is_free() {
                continue;
            }
            if slot.flags & USED != 0 && self.is_fresh(&slot, now_ms, now) {
                self.store.slots[i].flags &= !USED;
                continue;
            }
            let key = self.store.key(i as u32).to_owned();
            self.remove(&key);
            return;
        }
    }

    /// Writes `ensured` into `slot` (its key already in place).
    fn write(&mut self, slot: u32, key: &str, ensured: &Ensured, expires: u32) -> Option<()> {
        let plan = self.intern_plan(&ensured.plan_key)?;
        let cadence = self.intern_cadence(ensured.terms.cadence)?;
        let terms = &ensured.terms;
        let active_from = nanos(terms.active_from)?;
        let anchor = nanos(terms.anchor)?;
        let active_to = match terms.active_to {
            Some(to) => nanos(to)?,
            None => NO_TIME,
        };
        self.store.discard_data(slot);
        let owner = if ensured.customer_key == key {
            Span::default()
        } else {
            self.store.push(&ensured.customer_key)?
        };
        let (customer_id, customer_text) = self.store.id(&ensured.customer_id)?;
        let (subscription_id, subscription_text) = self.store.id(&ensured.subscription_id)?;
        let s = &mut self.store.slots[slot as usize];
        s.owner_at = owner.at;
        s.owner_len = owner.len;
        s.plan = plan;
        s.cadence = cadence;
        s.customer_id = customer_id;
        s.subscription_id = subscription_id;
        s.active_from = active_from;
        s.active_to = active_to;
        s.anchor = anchor;
        s.expires = expires;
        s.status = ensured.status;
        s.flags = (s.flags & USED)
            | if customer_text { CUSTOMER_ID_TEXT } else { 0 }
            | if subscription_text {
                SUBSCRIPTION_ID_TEXT
            } else {
                0
            };
        Some(())
    }
}

/// Whether a full cache makes room for a new identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WhenFull {
    /// Evict the least recently used (an identity just ensured).
    Evict,
    /// Keep what is cached (the warm-up: it would only churn).
    Keep,
}

/// A bounded, expiring map of ensured identities.
#[derive(Debug)]
pub(super) struct EnsuredCache {
    table: Mutex<Table>,
    ttl: Duration,
    capacity: usize,
}

impl EnsuredCache {
    pub(super) fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            table: Mutex::new(Table::new()),
            ttl,
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent even if a holder panicked mid-call.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key` is cached and fresh (no copy made).
    pub(super) fn contains(&self, key: &CustomerKey) -> bool {
        let mut table = self.lock();
        let now_ms = table.stamp(Instant::now());
        table
            .find(key.as_str())
            .is_some_and(|s| table.is_fresh(&table.store.slots[s as usize], now_ms, Utc::now()))
    }

    /// Whether `key` was ensured or listed, even if no longer fresh: its
    /// customer existed.
    pub(super) fn knows(&self, key: &str) -> bool {
        self.lock().find(key).is_some()
    }

    /// How many identities it holds at most.
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many identities it holds.
    pub(super) fn len(&self) -> usize {
        self.lock().index.len()
    }

    /// The cached result for `key`, if still fresh.
    pub(super) fn get(&self, key: &CustomerKey) -> Option<Ensured> {
        let mut table = self.lock();
        let now_ms = table.stamp(Instant::now());
        let slot = table.find(key.as_str())?;
        if !table.is_fresh(&table.store.slots[slot as usize], now_ms, Utc::now()) {
            return None;
        }
        table.store.slots[slot as usize].flags |= USED;
        Some(table.ensured(slot))
    }

    /// Remembers a successful ensure of `key` until the TTL passes or its
    /// subscription ends, whichever is first; a full cache evicts the
    /// least recently used. Returns how many identities are cached.
    pub(super) fn insert(&self, key: &CustomerKey, ensured: &Ensured) -> usize {
        self.put(key.as_str(), ensured, WhenFull::Evict);
        self.len()
    }

    /// Remembers `ensured` under `key` as [`Self::insert`] does, or, when
    /// the cache is full and `key` is new, as `when_full` says. Returns
    /// whether it is cached.
    pub(super) fn put(&self, key: &str, ensured: &Ensured, when_full: WhenFull) -> bool {
        let cacheable = matches!(
            ensured.status,
            SubscriptionStatus::Active
                | SubscriptionStatus::Scheduled
                | SubscriptionStatus::Canceled
        );
        if !cacheable || self.capacity == 0 || self.ttl.is_zero() {
            return false;
        }
        let at = Instant::now();
        let now = Utc::now();
        if ensured.terms.active_to.is_some_and(|to| to <= now) {
            return false;
        }
        let mut table = self.lock();
        let now_ms = table.stamp(at);
        let expires =
            u32::try_from(now_ms + self.ttl.as_millis().min(REBASE_AFTER_MS.into()) as u64)
                .unwrap_or(u32::MAX);
        if let Some(slot) = table.find(key) {
            let written = table.write(slot, key, ensured, expires).is_some();
            if !written {
                table.remove(key);
            }
            table.store.compact_if_wasteful();
            return written;
        }
        if table.index.len() >= self.capacity {
            match when_full {
                WhenFull::Keep => return false,
                WhenFull::Evict => table.evict_one(now_ms, now),
            }
        }
        table.add(key, ensured, expires).is_some()
    }

    pub(super) fn remove(&self, key: &CustomerKey) {
        self.lock().remove(key.as_str());
    }

    /// What `key` holds, if fresh, without counting as a use.
    pub(super) fn peek(&self, key: &str) -> Option<Ensured> {
        let mut table = self.lock();
        let now_ms = table.stamp(Instant::now());
        let slot = table.find(key)?;
        table
            .is_fresh(&table.store.slots[slot as usize], now_ms, Utc::now())
            .then(|| table.ensured(slot))
    }

    /// Forgets every identity that bills one of these customers (by id);
    /// returns how many. One pass over every slot.
    pub(super) fn forget_customers(&self, ids: &HashSet<String>) -> usize {
        let mut table = self.lock();
        let keys: Vec<String> = table
            .store
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_free())
            .filter(|(_, s)| {
                let text = s.flags & CUSTOMER_ID_TEXT != 0;
                ids.contains(&table.store.expand_id(&s.customer_id, text))
            })
            .map(|(i, _)| table.store.key(i as u32).to_owned())
            .collect();
        for key in &keys {
            table.remove(key);
        }
        keys.len()
    }
}

impl Table {
    /// A new slot for `key` holding `ensured`, indexed.
    fn add(&mut self, key: &str, ensured: &Ensured, expires: u32) -> Option<()> {
        let slot = self.vacant_slot()?;
        let Some(span) = self.store.push(key) else {
            self.store.free.push(slot);
            return None;
        };
        {
            let s = &mut self.store.slots[slot as usize];
            s.key_at = span.at;
            s.key_len = span.len;
            s.owner_len = 0;
            s.flags = 0;
        }
        if self.write(slot, key, ensured, expires).is_none() {
            self.store.garbage += usize::from(span.len);
            self.store.slots[slot as usize].flags = FREE;
            self.store.slots[slot as usize].key_len = 0;
            self.store.free.push(slot);
            return None;
        }
        let hash = self.hasher.hash_one(key);
        let (store, hasher) = (&self.store, &self.hasher);
        self.index
            .insert_unique(hash, slot, |&s| hasher.hash_one(store.key(s)));
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> CustomerKey {
        CustomerKey::listed(text)
    }

    fn terms(active_to: Option<chrono::DateTime<Utc>>) -> BillingTerms {
        BillingTerms {
            active_from: Utc::now(),
            active_to,
            anchor: Utc::now(),
            cadence: Cadence::parse("P1M"),
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
    fn a_slot_is_eighty_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 80);
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
    fn cached_result_reads_back_as_ensured_with_nothing_created() {
        let cache = EnsuredCache::new(10, Duration::from_secs(60));
        let e = ensured("a:b", "01J9ZQ7V3N8K6T2W5X4Y1R0P9A");
        cache.insert(&key("a:b"), &e);
        let hit = cache.get(&key("a:b")).unwrap();
        assert_eq!(
            hit,
            Ensured {
                created: Created {
                    customer: false,
                    subscription: false
                },
                ..e
            }
        );
    }

    #[test]
    fn an_update_replaces_what_a_key_holds() {
        let cache = EnsuredCache::new(10, Duration::from_secs(60));
        cache.insert(&key("a:b"), &ensured("a:b", "first"));
        let mut e = ensured("a:b", "second");
        e.customer_key = "owner".into();
        cache.insert(&key("a:b"), &e);
        let hit = cache.get(&key("a:b")).unwrap();
        assert_eq!(
            (hit.customer_id.as_str(), hit.customer_key.as_str()),
            ("second", "owner")
        );
        assert_eq!(cache.len(), 1);
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
        let cache = EnsuredCache::new(10, Duration::from_secs(60));
        cache.insert(&key("a:b"), &ensured("a:b", "01j9zq7v3n8k6t2w5x4y1r0p9a"));
        assert_eq!(
            cache.get(&key("a:b")).unwrap().customer_id,
            "01j9zq7v3n8k6t2w5x4y1r0p9a"
        );
    }

    #[test]
    fn expired_entries_are_misses_but_still_known() {
        let cache = EnsuredCache::new(10, Duration::from_millis(1));
        cache.insert(&key("a:b"), &ensured("a:b", "x"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.get(&key("a:b")).is_none());
        assert!(!cache.contains(&key("a:b")));
        assert!(cache.knows("a:b"));
    }

    #[test]
    fn capacity_is_never_exceeded() {
        let cache = EnsuredCache::new(100, Duration::from_secs(60));
        for i in 0..1000 {
            let k = format!("c:{i}");
            cache.insert(&key(&k), &ensured(&k, "x"));
        }
        assert_eq!(cache.len(), 100);
    }

    #[test]
    fn a_full_cache_evicts_an_identity_not_used_lately() {
        let cache = EnsuredCache::new(4, Duration::from_secs(60));
        for k in ["c:0", "c:1", "c:2", "c:3"] {
            cache.insert(&key(k), &ensured(k, "x"));
        }
        for k in ["c:0", "c:1", "c:3"] {
            assert!(cache.get(&key(k)).is_some());
        }
        cache.insert(&key("c:4"), &ensured("c:4", "x"));
        assert!(!cache.knows("c:2"), "the one not read since was evicted");
        for k in ["c:0", "c:1", "c:3", "c:4"] {
            assert!(cache.get(&key(k)).is_some(), "{k}");
        }
    }

    #[test]
    fn a_full_cache_keeps_what_it_holds_when_told_to() {
        let cache = EnsuredCache::new(1, Duration::from_secs(60));
        assert!(cache.put("c:0", &ensured("c:0", "x"), WhenFull::Keep));
        assert!(!cache.put("c:1", &ensured("c:1", "x"), WhenFull::Keep));
        assert!(cache.knows("c:0") && !cache.knows("c:1"));
        assert!(
            cache.put("c:0", &ensured("c:0", "y"), WhenFull::Keep),
            "an update fits"
        );
    }

    #[test]
    fn removed_keys_give_their_slot_and_bytes_back() {
        let cache = EnsuredCache::new(100_000, Duration::from_secs(60));
        for round in 0..4 {
            for i in 0..20_000 {
                let k = format!("client-{i}:user-{round}-{i}-{}", "x".repeat(40));
                cache.insert(&key(&k), &ensured(&k, "not-a-ulid-id"));
                cache.remove(&key(&k));
            }
        }
        let table = cache.lock();
        assert_eq!(table.index.len(), 0);
        assert!(table.store.slots.len() <= 1, "{}", table.store.slots.len());
        assert!(table.store.arena.len() < 2 * COMPACT_GARBAGE + 4096);
    }

    #[test]
    fn entries_survive_the_arena_being_compacted() {
        let cache = EnsuredCache::new(100_000, Duration::from_secs(60));
        let keep: Vec<String> = (0..100).map(|i| format!("keep:{i}")).collect();
        for k in &keep {
            let mut e = ensured(k, "cus_text_id");
            e.customer_key = format!("owner-of-{k}");
            cache.insert(&key(k), &e);
        }
        for i in 0..60_000 {
            let k = format!("churn:{i}-{}", "y".repeat(30));
            cache.insert(&key(&k), &ensured(&k, "x"));
            cache.remove(&key(&k));
        }
        for k in &keep {
            let hit = cache.get(&key(k)).unwrap();
            assert_eq!(hit.customer_key, format!("owner-of-{k}"));
            assert_eq!(hit.customer_id, "cus_text_id");
        }
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = EnsuredCache::new(0, Duration::from_secs(60));
        cache.insert(&key("a:b"), &ensured("a:b", "x"));
        assert_eq!(cache.len(), 0);
    }
}
