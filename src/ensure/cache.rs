//! The positive cache of ensured identities, compact enough to hold an
//! organisation of a million customers: one 56-byte slot per identity in
//! one vector (ULIDs as 16 bytes, `active_from` as nanoseconds, the plan
//! key and billing cadence interned as one pair), a record per identity in
//! one arena (its key, and only what most identities lack: a customer key
//! other than its own, `active_to`, a billing anchor other than
//! `active_from`, ids that are not ULIDs), and a hash index of slot numbers
//! (about 10 bytes per identity). No allocation per identity: about 95
//! bytes each with keys of 29 characters; the sizing table in
//! `docs/operations.md` has what a whole collector needs.
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

use super::ensured::{Billable, Created, Ensured};
use crate::billing::{BillingTerms, Cadence};
use crate::clock::Moment;
use crate::domain::CustomerKey;
use crate::openmeter::model::SubscriptionStatus;

/// Expiry stamps are milliseconds after the table's epoch, in a `u32`; the
/// epoch moves forward before they would overflow.
const REBASE_AFTER_MS: u64 = 1 << 31;
/// The arena is compacted when this much of it, and half of it, is garbage.
const COMPACT_GARBAGE: usize = 1 << 20;

/// Slot flags: what the record holds besides the key and owner.
const ACTIVE_TO: u8 = 1;
const ANCHOR: u8 = 1 << 1;
const CUSTOMER_ID_TEXT: u8 = 1 << 2;
const SUBSCRIPTION_ID_TEXT: u8 = 1 << 3;
/// Read since the clock hand last passed.
const USED: u8 = 1 << 4;
const FREE: u8 = 1 << 5;

/// What is remembered of one ensured identity; the rest is its record in
/// the arena, at `at`: key, owner key, then `active_to`, the anchor and
/// the ids' text, each only when its flag says so.
#[derive(Debug, Clone, Copy)]
struct Slot {
    at: u32,
    key_len: u16,
    /// The customer's key, when it is not the identity's own (0: it is).
    owner_len: u16,
    /// Index into the interned (plan key, cadence) pairs.
    terms: u16,
    status: SubscriptionStatus,
    flags: u8,
    /// Milliseconds after the epoch.
    expires: u32,
    active_from: i64,
    /// A ULID's 16 bytes, or (with `CUSTOMER_ID_TEXT`) the text's length
    /// in the first two.
    customer_id: [u8; 16],
    subscription_id: [u8; 16],
}

impl Slot {
    const VACANT: Self = Self {
        at: 0,
        key_len: 0,
        owner_len: 0,
        terms: 0,
        status: SubscriptionStatus::Unknown,
        flags: FREE,
        expires: 0,
        active_from: 0,
        customer_id: [0; 16],
        subscription_id: [0; 16],
    };

    fn is_free(&self) -> bool {
        self.flags & FREE != 0
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The record's length in the arena.
    fn record_len(&self) -> usize {
        let mut len = usize::from(self.key_len) + usize::from(self.owner_len);
        len += 8 * usize::from(self.has(ACTIVE_TO)) + 8 * usize::from(self.has(ANCHOR));
        if self.has(CUSTOMER_ID_TEXT) {
            len += text_len(&self.customer_id);
        }
        if self.has(SUBSCRIPTION_ID_TEXT) {
            len += text_len(&self.subscription_id);
        }
        len
    }
}

fn text_len(id: &[u8; 16]) -> usize {
    usize::from(u16::from_le_bytes([id[0], id[1]]))
}

fn nanos(at: DateTime<Utc>) -> Option<i64> {
    at.timestamp_nanos_opt()
}

fn time(nanos: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(nanos)
}

/// An id as a slot holds it: a ULID's bytes, or its text's length (the
/// text goes in the record); `None` when even that does not fit.
fn compact_id(id: &str) -> Option<([u8; 16], bool)> {
    match Ulid::from_string(id) {
        Ok(ulid) if ulid.to_string() == id => Some((ulid.to_bytes(), false)),
        _ => {
            let mut bytes = [0; 16];
            bytes[..2].copy_from_slice(&u16::try_from(id.len()).ok()?.to_le_bytes());
            Some((bytes, true))
        }
    }
}

/// The slots and the records they point into.
#[derive(Debug, Default)]
struct Store {
    slots: Vec<Slot>,
    free: Vec<u32>,
    arena: Vec<u8>,
    /// Arena bytes no slot points to any more.
    garbage: usize,
}

impl Store {
    fn bytes(&self, at: usize, len: usize) -> &[u8] {
        &self.arena[at..at + len]
    }

    fn text(&self, at: usize, len: usize) -> &str {
        // Only whole `&str`s are written where text is read back.
        std::str::from_utf8(self.bytes(at, len)).unwrap_or_default()
    }

    fn key(&self, slot: u32) -> &str {
        let s = &self.slots[slot as usize];
        self.text(s.at as usize, usize::from(s.key_len))
    }

    /// Reads a slot's record back: owner key, `active_to`, anchor, ids.
    fn record(&self, slot: &Slot) -> Record<'_> {
        let (head, mut at) = self.head(slot);
        let mut take = |len: usize| {
            let start = at;
            at += len;
            start
        };
        let mut id = |bytes: &[u8; 16], flag: u8| {
            if slot.has(flag) {
                let len = text_len(bytes);
                self.text(take(len), len).to_owned()
            } else {
                Ulid::from_bytes(*bytes).to_string()
            }
        };
        let customer_id = id(&slot.customer_id, CUSTOMER_ID_TEXT);
        let subscription_id = id(&slot.subscription_id, SUBSCRIPTION_ID_TEXT);
        Record {
            head,
            customer_id,
            subscription_id,
        }
    }

    /// The part of a slot's record before its ids (what delivery needs),
    /// and where the ids' text begins.
    fn head(&self, slot: &Slot) -> (Head<'_>, usize) {
        let mut at = slot.at as usize + usize::from(slot.key_len);
        let owner = self.text(at, usize::from(slot.owner_len));
        at += usize::from(slot.owner_len);
        let mut time_at = |flag: u8| {
            slot.has(flag).then(|| {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(self.bytes(at, 8));
                at += 8;
                i64::from_le_bytes(bytes)
            })
        };
        let active_to = time_at(ACTIVE_TO);
        let anchor = time_at(ANCHOR);
        let head = Head {
            owner,
            active_to,
            anchor,
        };
        (head, at)
    }

    /// A slot's `active_to`, read from its record without the rest.
    fn active_to(&self, slot: &Slot) -> Option<i64> {
        if !slot.has(ACTIVE_TO) {
            return None;
        }
        let at = slot.at as usize + usize::from(slot.key_len) + usize::from(slot.owner_len);
        let mut bytes = [0; 8];
        bytes.copy_from_slice(self.bytes(at, 8));
        Some(i64::from_le_bytes(bytes))
    }

    /// Copies every live record into a fresh arena once garbage dominates.
    fn compact_if_wasteful(&mut self) {
        if self.garbage < COMPACT_GARBAGE || self.garbage * 2 < self.arena.len() {
            return;
        }
        let old = std::mem::take(&mut self.arena);
        let mut arena = Vec::with_capacity(old.len() - self.garbage);
        for slot in self.slots.iter_mut().filter(|s| !s.is_free()) {
            let start = slot.at as usize;
            slot.at = arena.len() as u32;
            arena.extend_from_slice(&old[start..start + slot.record_len()]);
        }
        self.arena = arena;
        self.garbage = 0;
    }
}

/// What a slot's record holds, read back.
struct Record<'a> {
    head: Head<'a>,
    customer_id: String,
    subscription_id: String,
}

/// A record's owner key and times, read without its ids.
struct Head<'a> {
    owner: &'a str,
    active_to: Option<i64>,
    anchor: Option<i64>,
}

/// The table behind the cache's lock.
#[derive(Debug)]
struct Table {
    /// Slot numbers, by their key's hash.
    index: HashTable<u32>,
    store: Store,
    hasher: RandomState,
    /// Interned (plan key, billing cadence) pairs.
    terms: Vec<(Arc<str>, Option<Cadence>)>,
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
            terms: Vec::new(),
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

    /// Fresh: within its TTL, and its subscription (if canceled) not ended.
    fn is_fresh(&self, slot: u32, now_ms: u64, now: DateTime<Utc>) -> bool {
        let s = &self.store.slots[slot as usize];
        u64::from(s.expires) > now_ms && self.store.active_to(s).is_none_or(|to| time(to) > now)
    }

    fn intern(&mut self, plan: &str, cadence: Option<Cadence>) -> Option<u16> {
        let found = self
            .terms
            .iter()
            .position(|(p, c)| &**p == plan && *c == cadence);
        let i = match found {
            Some(i) => i,
            None => {
                self.terms.push((Arc::from(plan), cadence));
                self.terms.len() - 1
            }
        };
        u16::try_from(i).ok()
    }

    fn ensured(&self, slot: u32) -> Ensured {
        let s = &self.store.slots[slot as usize];
        let record = self.store.record(s);
        let (plan, _) = &self.terms[usize::from(s.terms)];
        let customer_key = if s.owner_len > 0 {
            record.head.owner
        } else {
            self.store.key(slot)
        };
        Ensured {
            customer_key: customer_key.to_owned(),
            customer_id: record.customer_id,
            subscription_id: record.subscription_id,
            plan_key: plan.to_string(),
            status: s.status,
            terms: self.terms_of(s, &record.head),
            created: Created {
                customer: false,
                subscription: false,
            },
        }
    }

    /// What delivery needs of a slot, its ids left unread.
    fn billable(&self, slot: u32) -> Billable {
        let s = &self.store.slots[slot as usize];
        let (head, _) = self.store.head(s);
        Billable::new(
            self.terms_of(s, &head),
            Some(head.owner).filter(|o| !o.is_empty()),
        )
    }

    fn terms_of(&self, s: &Slot, head: &Head<'_>) -> BillingTerms {
        let (_, cadence) = &self.terms[usize::from(s.terms)];
        BillingTerms {
            active_from: time(s.active_from),
            active_to: head.active_to.map(time),
            anchor: time(head.anchor.unwrap_or(s.active_from)),
            cadence: *cadence,
        }
    }

    /// A slot for a new key: a free one, else a new one.
    fn vacant_slot(&mut self) -> Option<u32> {
        if let Some(slot) = self.store.free.pop() {
            return Some(slot);
        }
        let slot = u32::try_from(self.store.slots.len()).ok()?;
        self.store.slots.push(Slot::VACANT);
        Some(slot)
    }

    fn remove(&mut self, key: &str) {
        let hash = self.hasher.hash_one(key);
        let store = &self.store;
        let Ok(entry) = self.index.find_entry(hash, |&s| store.key(s) == key) else {
            return;
        };
        let (slot, _) = entry.remove();
        let s = &mut self.store.slots[slot as usize];
        self.store.garbage += s.record_len();
        *s = Slot::VACANT;
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
            if slot.has(USED) && self.is_fresh(i as u32, now_ms, now) {
                self.store.slots[i].flags &= !USED;
                continue;
            }
            let key = self.store.key(i as u32).to_owned();
            self.remove(&key);
            return;
        }
    }

    /// The slot and record that remember `ensured` under `key`, the
    /// record appended to the arena; `None` when something does not fit.
    fn slot_for(&mut self, key: &str, ensured: &Ensured, expires: u32) -> Option<Slot> {
        let t = &ensured.terms;
        let terms = self.intern(&ensured.plan_key, t.cadence)?;
        let active_from = nanos(t.active_from)?;
        let active_to = t
            .active_to
            .map(nanos)
            .map(|n| n.ok_or(()))
            .transpose()
            .ok()?;
        let anchor = nanos(t.anchor)?;
        let anchor = (anchor != active_from).then_some(anchor);
        let owner = if ensured.customer_key == key {
            ""
        } else {
            ensured.customer_key.as_str()
        };
        let (customer_id, customer_text) = compact_id(&ensured.customer_id)?;
        let (subscription_id, subscription_text) = compact_id(&ensured.subscription_id)?;
        let at = u32::try_from(self.store.arena.len()).ok()?;
        let mut slot = Slot {
            at,
            key_len: u16::try_from(key.len()).ok()?,
            owner_len: u16::try_from(owner.len()).ok()?,
            terms,
            status: ensured.status,
            flags: 0,
            expires,
            active_from,
            customer_id,
            subscription_id,
        };
        let flag = |on: bool, flag: u8| if on { flag } else { 0 };
        slot.flags = flag(active_to.is_some(), ACTIVE_TO)
            | flag(anchor.is_some(), ANCHOR)
            | flag(customer_text, CUSTOMER_ID_TEXT)
            | flag(subscription_text, SUBSCRIPTION_ID_TEXT);
        u32::try_from(at as usize + slot.record_len()).ok()?;
        let arena = &mut self.store.arena;
        arena.extend_from_slice(key.as_bytes());
        arena.extend_from_slice(owner.as_bytes());
        for time in [active_to, anchor].into_iter().flatten() {
            arena.extend_from_slice(&time.to_le_bytes());
        }
        if customer_text {
            arena.extend_from_slice(ensured.customer_id.as_bytes());
        }
        if subscription_text {
            arena.extend_from_slice(ensured.subscription_id.as_bytes());
        }
        Some(slot)
    }

    /// Remembers `ensured` under `key` in a slot of its own (a new key) or
    /// the key's (an update).
    fn write(&mut self, key: &str, ensured: &Ensured, expires: u32) -> Option<()> {
        let existing = self.find(key);
        let slot = self.slot_for(key, ensured, expires)?;
        match existing {
            Some(i) => {
                let old = &mut self.store.slots[i as usize];
                self.store.garbage += old.record_len();
                *old = Slot {
                    flags: slot.flags | (old.flags & USED),
                    ..slot
                };
            }
            None => {
                let Some(i) = self.vacant_slot() else {
                    self.store.garbage += slot.record_len();
                    return None;
                };
                self.store.slots[i as usize] = slot;
                let hash = self.hasher.hash_one(key);
                let (store, hasher) = (&self.store, &self.hasher);
                self.index
                    .insert_unique(hash, i, |&s| hasher.hash_one(store.key(s)));
            }
        }
        self.store.compact_if_wasteful();
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

    /// The slot of `key` if it is fresh at `now`.
    fn fresh(table: &mut Table, key: &str, now: Moment) -> Option<u32> {
        let now_ms = table.stamp(now.at);
        let slot = table.find(key)?;
        table.is_fresh(slot, now_ms, now.utc).then_some(slot)
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

    /// Makes room for `more` identities at once (up to the capacity), so a
    /// warm-up that knows the organisation's size neither regrows the slots
    /// nor rehashes the index as it fills them.
    pub(super) fn reserve(&self, more: usize) {
        let mut table = self.lock();
        let more = more.min(self.capacity.saturating_sub(table.index.len()));
        let Table {
            index,
            store,
            hasher,
            ..
        } = &mut *table;
        store.slots.reserve(more.saturating_sub(store.free.len()));
        index.reserve(more, |&s| hasher.hash_one(store.key(s)));
    }

    /// How many identities it holds.
    pub(super) fn len(&self) -> usize {
        self.lock().index.len()
    }

    /// The cached result for `key`, if still fresh.
    pub(super) fn get(&self, key: &CustomerKey) -> Option<Ensured> {
        let mut table = self.lock();
        let slot = Self::fresh(&mut table, key.as_str(), Moment::now())?;
        table.store.slots[slot as usize].flags |= USED;
        Some(table.ensured(slot))
    }

    /// What delivery needs of each of `keys`' cached results, if still
    /// fresh: a [`get`](Self::get) that copies no id, for a batch's keys
    /// under one lock and one reading of the clocks (per key, those were
    /// most of a cache hit's cost).
    pub(super) fn billable_each<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k CustomerKey>,
    ) -> Vec<Option<Billable>> {
        let now = Moment::now();
        let mut table = self.lock();
        keys.into_iter()
            .map(|key| {
                let slot = Self::fresh(&mut table, key.as_str(), now)?;
                table.store.slots[slot as usize].flags |= USED;
                Some(table.billable(slot))
            })
            .collect()
    }

    /// What `key` holds, if fresh, without counting as a use.
    pub(super) fn peek(&self, key: &str) -> Option<Ensured> {
        let mut table = self.lock();
        let slot = Self::fresh(&mut table, key, Moment::now())?;
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
        let now = Moment::now();
        let ended = ensured.terms.active_to.is_some_and(|to| to <= now.utc);
        if !cacheable || ended || self.capacity == 0 || self.ttl.is_zero() {
            return false;
        }
        let mut table = self.lock();
        let now_ms = table.stamp(now.at);
        let ttl_ms = self.ttl.as_millis().min(u128::from(REBASE_AFTER_MS)) as u64;
        let expires = u32::try_from(now_ms + ttl_ms).unwrap_or(u32::MAX);
        if table.find(key).is_none() && table.index.len() >= self.capacity {
            match when_full {
                WhenFull::Keep => return false,
                WhenFull::Evict => table.evict_one(now_ms, now.utc),
            }
        }
        let written = table.write(key, ensured, expires).is_some();
        if !written {
            table.remove(key);
        }
        written
    }

    pub(super) fn remove(&self, key: &CustomerKey) {
        self.lock().remove(key.as_str());
    }

    /// Forgets every identity that bills one of these customers (by id);
    /// returns the keys forgotten. One pass over every slot.
    pub(super) fn forget_customers(&self, ids: &HashSet<String>) -> Vec<String> {
        let mut table = self.lock();
        let keys: Vec<String> = (0..table.store.slots.len() as u32)
            .filter(|&i| !table.store.slots[i as usize].is_free())
            .filter(|&i| {
                let slot = &table.store.slots[i as usize];
                ids.contains(&table.store.record(slot).customer_id)
            })
            .map(|i| table.store.key(i).to_owned())
            .collect();
        for key in &keys {
            table.remove(key);
        }
        keys
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

    /// The identity of a compound `auth_id` under the whole-`auth_id` rule.
    fn identity(auth_id: &str) -> crate::domain::Identity {
        let claim = crate::domain::IdentityClaim::Event {
            auth_id: Some(auth_id),
            client_id: None,
            usage_subject: None,
        };
        crate::domain::Identity::resolve(claim, crate::contract::SubjectRule::AuthId).unwrap()
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
    fn a_slot_is_fifty_six_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 56);
    }

    #[test]
    fn what_most_identities_lack_reads_back_when_one_has_it() {
        let cache = EnsuredCache::new(10, Duration::from_secs(60));
        let mut e = ensured("a:b", "cus_text");
        e.subscription_id = "sub_text".into();
        e.customer_key = "owner".into();
        e.status = SubscriptionStatus::Canceled;
        e.terms = BillingTerms {
            active_from: Utc::now() - chrono::Duration::days(3),
            active_to: Some(Utc::now() + chrono::Duration::days(9)),
            anchor: Utc::now() - chrono::Duration::days(40),
            cadence: Cadence::parse("P1W"),
        };
        cache.insert(&key("a:b"), &e);
        let hit = cache.get(&key("a:b")).unwrap();
        assert_eq!(
            hit,
            Ensured {
                created: hit.created,
                ..e
            }
        );
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
    fn what_delivery_reads_is_the_answers_terms_and_its_owner_only_when_another() {
        let cache = EnsuredCache::new(10, Duration::from_secs(60));
        let mut owned = ensured("a:b", "x");
        owned.customer_key = "legacy-customer".into();
        owned.terms = BillingTerms {
            active_to: Some(Utc::now() + chrono::Duration::days(9)),
            anchor: Utc::now() - chrono::Duration::days(40),
            ..terms(None)
        };
        cache.insert(&key("a:b"), &owned);
        cache.insert(&key("c:d"), &ensured("c:d", "y"));
        let (a, c) = (identity("a:b"), identity("c:d"));
        let hits = cache.billable_each([a.billing_key(), c.billing_key()]);
        let hit = hits[0].clone().unwrap();
        assert_eq!(hit, owned.billable(&a));
        assert_eq!(
            (hit.terms, hit.customer_key(&a)),
            (owned.terms, "legacy-customer")
        );
        assert_eq!(hits[1].as_ref().unwrap().customer_key(&c), "c:d");
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
        assert_eq!(cache.billable_each([&key("a:b")]), vec![None]);
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
