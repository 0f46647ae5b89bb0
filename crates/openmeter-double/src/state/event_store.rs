//! The events the double stored: each delivery, and the indexes listings
//! and meter queries read.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// A `MeteringEvent` the spec accepted, stored field by field, `data` as its
/// JSON text (a parsed map costs several times its text for the millions
/// of events a benchmark holds). Serializes back to the spec shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredEvent {
    pub(crate) id: String,
    pub(crate) source: String,
    pub(crate) specversion: String,
    #[serde(rename = "type")]
    pub(crate) ty: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) datacontenttype: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dataschema: Option<String>,
    pub(crate) subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<Box<RawValue>>,
    /// `time` as nanoseconds since the epoch, for sorting.
    #[serde(skip)]
    pub(crate) time_ns: Option<i64>,
}

impl StoredEvent {
    /// `data` parsed (for the rare reads the meter cache does not answer).
    pub(crate) fn data_value(&self) -> Option<Value> {
        self.data
            .as_ref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    }
}

pub(crate) struct DeliveryRec {
    pub(crate) event: StoredEvent,
    /// Per meter (by index into `State::meters`, those that existed when
    /// the event arrived): `JSON_VALUE(data, value_property)` for a meter of
    /// the event's type, read once at ingest. Meters are immutable.
    pub(crate) meter_values: Box<[Option<Box<str>>]>,
    pub(crate) received_at: DateTime<Utc>,
    pub(crate) duplicate: bool,
    /// Index of the customer owning the subject at ingest time.
    pub(crate) customer: Option<usize>,
}

impl DeliveryRec {
    /// Event time, falling back to arrival time, for "time desc" ordering.
    pub(crate) fn sort_ns(&self) -> i64 {
        self.event
            .time_ns
            .or_else(|| self.received_at.timestamp_nanos_opt())
            .unwrap_or_default()
    }
}

#[derive(Default)]
pub(crate) struct EventStore {
    /// Every delivery, duplicates included, in arrival order.
    pub(crate) deliveries: Vec<DeliveryRec>,
    /// Indices into `deliveries` of first arrivals per `(source, id)`.
    pub(crate) unique: Vec<usize>,
    /// `unique` ordered by `(sort_ns, index)`: a listing page is a range.
    pub(crate) by_time: BTreeSet<(i64, usize)>,
    /// `unique` by event id (one per source), for `filter[id]` lookups.
    pub(crate) by_id: HashMap<String, Vec<usize>>,
    /// `unique` by subject, ordered like `by_time`: a meter query or a
    /// listing filtered by subject reads only that subject's events (the
    /// server's events table is ordered by subject and time for the same
    /// reason: `streaming/clickhouse/event_query.go`, `createEventsTable`).
    pub(crate) by_subject: HashMap<String, BTreeSet<(i64, usize)>>,
    pub(super) seen: HashSet<(String, String)>,
}
