//! Deliver: ensure the customers of a batch, bill each event from its
//! subscription's start, send the batch to OpenMeter's ingest API, and
//! return every event's outcome — delivered or dead-lettered — after each
//! attempt, for the pipeline to settle. Nothing is dropped, and one
//! customer never stops the others. What an OpenMeter failure concerns is
//! decided by [`crate::openmeter::classify`]:
//!
//! - transient (network, 408/429/5xx) and configuration (token, URL, no
//!   plan) failures hold the events they concern and retry them with
//!   backoff for as long as it takes; this loop is the pipeline's only
//!   retry (its client makes one attempt per call). Held events keep their
//!   offsets, so the source backs up and pauses;
//! - a customer OpenMeter refuses (its creation, its subscription, its
//!   billing setup) has its events dead-lettered with the kind and
//!   OpenMeter's detail, never sent unbilled, so a `dlq replay` after the
//!   cause is fixed bills them in full; everyone else's events are sent;
//! - events OpenMeter rejects (400/413/422) are isolated by splitting the
//!   chunk in halves, and dead-lettered with OpenMeter's detail; before the
//!   first split the chunk's customers are ensured afresh (self-heal), and a
//!   lone event gets one retry after that.
//!
//! One file each: the hold loop that retries a batch until every event is
//! delivered or dead-lettered (`hold`), one attempt at it (`attempt`: ensure,
//! bodies, send), where an event's time is placed in its subscription's
//! period (`period`), the split and self-heal of a refused chunk (`split`),
//! the request bodies (`body`), and what is logged once per customer or
//! once a minute (`noted`).

mod attempt;
mod body;
mod hold;
mod noted;
mod period;
mod split;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::billing::BillingPolicy;
pub use crate::concurrency::InFlightBounds;
pub(crate) use crate::concurrency::Slot;
use crate::concurrency::{AdaptiveLimit, Growth};
use crate::domain::Identity;
use crate::ensure::Provisioner;
use crate::health::Health;
use crate::map::UsageEvent;
use crate::metrics::metrics;
use crate::retry::RetryPolicy;
use crate::source::Record;
use noted::{Noted, Throttled};

/// An event to send, and the original record in case it must be
/// dead-lettered. Its CloudEvent is serialised once, straight into the
/// request body, after its time is placed in its subscription's period.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) record: Record,
    pub(crate) identity: Identity,
    /// Boxed: a `Pending` moves through several vectors.
    pub(crate) event: Box<UsageEvent>,
    /// The event's `time`.
    pub(crate) time: DateTime<Utc>,
}

/// The ensure-then-ingest stage, shared by all in-flight batches.
pub(crate) struct Deliverer {
    /// Its one OpenMeter handle: ensures go through it, and ingest through
    /// its client (the same organisation and retry policy).
    provisioner: Provisioner,
    /// [`RetryPolicy::pipeline`]: held events are retried until stopped.
    retry: RetryPolicy,
    billing: BillingPolicy,
    /// Customers already logged for moved or late events.
    noted: Noted,
    /// Told when events are held, and when a batch gets through.
    pub(crate) health: Health,
    /// How many batches may be in flight; each ingest tells it how
    /// OpenMeter is coping.
    pub(crate) in_flight: Arc<AdaptiveLimit>,
    /// Bytes per ingest request: a larger batch is sent in parts.
    max_body_bytes: usize,
    /// Why delivery gave up, once `retry` (a one-shot command's) ran out on
    /// a failure that concerns every event: no batch is tried after that.
    gave_up: Mutex<Option<String>>,
    /// When a rate-limited hold was last logged.
    rate_limited: Throttled,
}

/// How a deliverer bills, how many batches it keeps in flight, and how
/// large its requests may be (from the pipeline's configuration).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeliveryConfig {
    pub(crate) billing: BillingPolicy,
    pub(crate) in_flight: InFlightBounds,
    pub(crate) max_body_bytes: usize,
}

/// Events sent together, and whether their customers were ensured afresh
/// after OpenMeter rejected them.
struct Chunk {
    events: Vec<Pending>,
    healed: bool,
}

impl Deliverer {
    pub(crate) fn new(
        provisioner: Provisioner,
        retry: RetryPolicy,
        config: DeliveryConfig,
        health: Health,
    ) -> Self {
        Self {
            provisioner,
            retry,
            billing: config.billing,
            noted: Noted::default(),
            health,
            in_flight: Arc::new(AdaptiveLimit::new(
                config.in_flight,
                Growth::DELIVERY,
                metrics().in_flight_limit.clone(),
            )),
            max_body_bytes: config.max_body_bytes,
            gave_up: Mutex::default(),
            rate_limited: Throttled::default(),
        }
    }

    /// The provisioner ensures go through: its caches and in-flight ensures
    /// are what `/ensure` and the continuous audit share under `run`.
    pub(crate) fn provisioner(&self) -> &Provisioner {
        &self.provisioner
    }

    /// Why delivery gave up, if it did (see [`Deliverer::flush`]).
    pub(crate) fn gave_up(&self) -> Option<String> {
        self.gave_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the first reason delivery gave up for.
    fn give_up(&self, reason: &str) {
        let mut gave_up = self.gave_up.lock().unwrap_or_else(|e| e.into_inner());
        gave_up.get_or_insert_with(|| reason.to_owned());
    }
}
