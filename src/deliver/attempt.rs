//! One attempt at a chunk of a batch: ensure its customers, place each
//! event in its subscription's period, serialise the request bodies and
//! send them; what OpenMeter refuses is split (`split`), what must wait is
//! held (`hold`).

use std::collections::HashMap;
use std::time::Instant;

use chrono::Utc;

use super::body::{batch_bodies, Part};
use super::hold::{rate_limited, Hold, Round};
use super::noted::Asked;
use super::{Chunk, Deliverer, Pending};
use crate::concurrency::Signal;
use crate::domain::CustomerKey;
use crate::ensure::EnsureError;
use crate::metrics::metrics;
use crate::openmeter::{classify, ApiError, Call, ErrorClass};
use crate::settle::Outcome;

impl Deliverer {
    /// One attempt at a chunk: ensure its customers, send what can be sent
    /// (in parts of at most `max_body_bytes`). Rejected halves go back on
    /// `todo`; outcomes and what must wait go to `round`.
    pub(super) async fn attempt(&self, chunk: Chunk, todo: &mut Vec<Chunk>, round: &mut Round) {
        let healed = chunk.healed;
        let ready = self.ensure_customers(chunk, round).await;
        for part in self.bodies(ready) {
            self.send(part, healed, todo, round).await;
        }
    }

    /// Sends one part: delivered, or put back on `todo` or held.
    async fn send(&self, part: Part, healed: bool, todo: &mut Vec<Chunk>, round: &mut Round) {
        let Part {
            events: ready,
            body,
        } = part;
        let sent = Instant::now();
        let Err(e) = self.provisioner.client().ingest_batch(body).await else {
            self.in_flight.observe(Signal::Answered(sent.elapsed()));
            self.accepted(ready, round);
            return;
        };
        let class = classify(Call::Ingest, &e);
        if class == ErrorClass::Transient {
            self.in_flight.observe(Signal::PushedBack);
        }
        let chunk = Chunk {
            events: ready,
            healed,
        };
        match class {
            ErrorClass::Rejected => self.rejected(chunk, &e, todo, round),
            _ => round.held.push(
                chunk,
                Hold {
                    class,
                    retry_after: e.retry_after(),
                    reason: e.to_string(),
                    rate_limited: rate_limited(Some(&e)),
                },
            ),
        }
    }

    /// Ensures every distinct customer of the chunk. Returns the events
    /// whose customer is ensured, their time set to what will be billed;
    /// refused customers' events are dead-lettered, the others held.
    async fn ensure_customers(&self, chunk: Chunk, round: &mut Round) -> Vec<Pending> {
        let answers = self
            .provisioner
            .ensure_each(chunk.events.iter().map(|p| &p.identity))
            .await;
        for (asked, e) in answers.failures() {
            log_ensure_failure(&chunk.events[asked].identity.customer_key(), e);
        }
        let now = Utc::now();
        let mut ready = Vec::with_capacity(chunk.events.len());
        let mut waiting: HashMap<ErrorClass, (Vec<Pending>, Hold)> = HashMap::new();
        let mut noted = vec![Asked::default(); answers.distinct()];
        for (asked, mut pending) in chunk.events.into_iter().enumerate() {
            match answers.at(asked) {
                (place, Ok(billable)) => {
                    self.place_in_period(&mut pending, billable, now, &mut noted[place]);
                    ready.push(pending);
                }
                (_, Err(e)) if e.concerns_customer() => {
                    let reason = format!(
                        "OpenMeter refused customer {}: {e}",
                        pending.identity.customer_key()
                    );
                    round.dead_letter([pending], e.dead_letter_kind(), &reason);
                }
                (_, Err(e)) => {
                    let class = e.class();
                    let slot = waiting.entry(class).or_insert_with(|| {
                        let hold = Hold {
                            class,
                            retry_after: e.upstream().and_then(ApiError::retry_after),
                            reason: e.to_string(),
                            rate_limited: rate_limited(e.upstream()),
                        };
                        (Vec::new(), hold)
                    });
                    slot.0.push(pending);
                }
            }
        }
        for (events, hold) in waiting.into_values() {
            let chunk = Chunk {
                events,
                healed: chunk.healed,
            };
            round.held.push(chunk, hold);
        }
        ready
    }

    /// The request bodies of `ready`.
    fn bodies(&self, ready: Vec<Pending>) -> Vec<Part> {
        if ready.is_empty() {
            return Vec::new();
        }
        batch_bodies(ready, self.max_body_bytes)
    }

    fn accepted(&self, chunk: Vec<Pending>, round: &mut Round) {
        self.health.progressed();
        metrics().batches.inc();
        for pending in chunk {
            round.settled.add(pending.record, Outcome::Delivered);
        }
    }
}

/// A refused customer is logged with its key; a failure that holds events
/// is logged once per hold by [`Deliverer::log_hold`], not once per customer.
fn log_ensure_failure(key: &CustomerKey, e: &EnsureError) {
    if e.concerns_customer() {
        tracing::warn!(customer = %key, kind = %e.dead_letter_kind(), error = %e, "OpenMeter refused this customer; dead-lettering its events, billing everyone else");
    } else {
        // The batch's hold says it once for all its customers.
        tracing::debug!(customer = %key, error = %e, "ensure failed; holding this customer's events");
    }
}
