//! Faults that need the stored data or the request body, so the gate cannot
//! apply them.

use super::Double;

impl Double {
    /// The next `n` ingest requests reproduce openmeterio/openmeter#5118
    /// (open): the ingest dedupe (`openmeter/ingest/dedupe.go`,
    /// `DeduplicatingCollector.Ingest`) claims each `(source, id)` before the
    /// write, the write fails (500), and the claim stays. The client's retry
    /// is answered 202 and its events are dropped as duplicates: metered zero
    /// times. Only listing the events shows they are gone.
    pub fn swallow_next_ingests(&self, n: u32) {
        self.store.faults.swallow_next(n);
    }

    /// The events with these ids are lost on their next ingest, one by one
    /// rather than a batch at a time: each id is claimed and never stored,
    /// and the request answers 202, as the retry after #5118's failed write
    /// is answered (see [`Double::swallow_next_ingests`]). Later deliveries
    /// of the ids are duplicates. For benchmarks that lose a few events at
    /// random among millions.
    pub fn lose_event_ids(&self, ids: &[&str]) {
        let mut state = self.lock();
        state
            .lost_event_ids
            .extend(ids.iter().map(|id| (*id).to_owned()));
    }

    /// Deletes the customer keyed `key` behind every client's back (an
    /// operator, another tool), so clients that cached it keep sending its
    /// usage. Its subject keys stop attributing events at once: OpenMeter
    /// resolves an event's customer when events are listed or metered
    /// (`openmeter/meterevent/adapter/event.go`, `enrichEventsWithCustomerID`).
    /// Returns whether such a customer existed.
    pub fn vanish_customer(&self, key: &str) -> bool {
        let mut state = self.lock();
        let Some(idx) = state.customer_by_key.remove(key) else {
            return false;
        };
        state.subject_owner.retain(|_, owner| *owner != idx);
        if state.customers[idx].deleted_at.is_none() {
            state.deleted_customers += 1;
        }
        state.customers[idx].deleted_at = Some(chrono::Utc::now());
        true
    }
}
