//! Deliver: ensure every subject of a batch, then send the batch to
//! OpenMeter's ingest API, and settle each event — delivered or
//! dead-lettered — in the offset tracker. Nothing is dropped:
//!
//! - transient failures (network, 408/429/5xx) and configuration failures
//!   (401/403/404, no plan) are retried with backoff for as long as it
//!   takes; the batch holds its offsets, so the source backs up and pauses;
//! - a batch OpenMeter rejects (400/413/422…) is split in halves until the
//!   offending events are isolated; those are dead-lettered with
//!   OpenMeter's detail, the rest delivered;
//! - self-heal, as in the original: after a rejection the batch's subjects
//!   are forgotten in the ensure cache and ensured again before the retry,
//!   and a lone event gets one retry after that before it is dead-lettered.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;

use crate::commit::{OffsetTracker, Position};
use crate::dlq::{DeadLetter, DeadLetterSink};
use crate::domain::{CustomerKey, Identity};
use crate::ensure::{EnsureError, ErrorClass, Provisioner};
use crate::health::health;
use crate::metrics::metrics;
use crate::openmeter::{ApiError, OpenMeterClient};
use crate::retry::Backoff;
use crate::source::Record;

/// How many subjects of one batch are ensured concurrently.
const ENSURE_CONCURRENCY: usize = 16;

/// An event ready to send: its CloudEvent, serialised once, and the
/// original record in case it must be dead-lettered.
#[derive(Debug, Clone)]
pub struct Pending {
    pub record: Record,
    pub identity: Identity,
    pub json: Bytes,
    pub read_at: Instant,
}

/// What happened to the events a pipeline handled.
#[derive(Debug, Default)]
pub struct Tally {
    pub read: AtomicU64,
    pub skipped: AtomicU64,
    pub delivered: AtomicU64,
    pub dead_lettered: AtomicU64,
}

impl Tally {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The ensure-then-ingest stage, shared by all in-flight batches.
pub struct Deliverer {
    pub client: OpenMeterClient,
    pub provisioner: Provisioner,
    pub dlq: DeadLetterSink,
    pub tracker: Arc<OffsetTracker>,
    pub tally: Arc<Tally>,
    pub backoff: Backoff,
}

/// A delivery attempt's verdict.
enum Verdict {
    Accepted,
    Rejected(ApiError),
}

impl Deliverer {
    /// Ensures, sends and settles one batch. Returns once every event in it
    /// is delivered or dead-lettered.
    pub async fn flush(&self, batch: Vec<Pending>) {
        let started = batch.iter().map(|p| p.read_at).min();
        let batch = self.ensure_subjects(batch).await;
        let mut stack = vec![(batch, false)];
        while let Some((chunk, healed)) = stack.pop() {
            if chunk.is_empty() {
                continue;
            }
            match self.send(&chunk).await {
                Verdict::Accepted => self.accepted(&chunk),
                Verdict::Rejected(e) => {
                    let chunk = if healed {
                        chunk
                    } else {
                        self.heal(chunk).await
                    };
                    match (chunk.len(), healed) {
                        (1, true) => self.reject(chunk, &e).await,
                        (1, false) => stack.push((chunk, true)),
                        (_, _) => {
                            let mut left = chunk;
                            let right = left.split_off(left.len() / 2);
                            stack.push((right, true));
                            stack.push((left, true));
                        }
                    }
                }
            }
        }
        if let Some(started) = started {
            metrics()
                .batch_latency
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// Ensures every distinct subject; returns the events whose subject is
    /// ensured. Events of an identity OpenMeter rejects are dead-lettered;
    /// transient and configuration failures are retried until they pass.
    async fn ensure_subjects(&self, mut batch: Vec<Pending>) -> Vec<Pending> {
        let mut attempt = 1;
        loop {
            let (rejected, wait) = self.ensure_round(&batch).await;
            if !rejected.is_empty() {
                let (bad, good): (Vec<_>, Vec<_>) = batch
                    .into_iter()
                    .partition(|p| rejected.contains_key(&p.identity.customer_key()));
                for pending in bad {
                    let reason = format!(
                        "OpenMeter rejected customer {}: {}",
                        pending.identity.customer_key(),
                        rejected[&pending.identity.customer_key()]
                    );
                    self.dead_letter(pending.record, "customer_rejected", reason)
                        .await;
                }
                batch = good;
            }
            let Some(retry_after) = wait else {
                return batch;
            };
            let delay = self.backoff.delay(attempt, retry_after);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One pass of ensures over the batch's distinct identities. Returns
    /// the identities rejected for good, and whether (and how soon) to retry.
    async fn ensure_round(
        &self,
        batch: &[Pending],
    ) -> (HashMap<CustomerKey, String>, Option<Option<Duration>>) {
        // De-duplicate by reference first: only distinct identities are cloned.
        let distinct: HashSet<&Identity> = batch.iter().map(|p| &p.identity).collect();
        let ensures = distinct
            .into_iter()
            .cloned()
            .map(|identity| ensure_one(&self.provisioner, identity));
        let results: Vec<(CustomerKey, Result<(), EnsureError>)> = futures::stream::iter(ensures)
            .buffer_unordered(ENSURE_CONCURRENCY)
            .collect()
            .await;
        let mut rejected = HashMap::new();
        let mut wait = None;
        for (key, result) in results {
            let Err(e) = result else { continue };
            if e.class() != ErrorClass::Identity {
                health().held(&e);
            }
            match e.class() {
                ErrorClass::Identity => {
                    rejected.insert(key, e.to_string());
                }
                ErrorClass::Transient => {
                    tracing::warn!(customer = %key, error = %e, "ensure failed; holding the batch");
                    wait = Some(e.upstream().and_then(ApiError::retry_after));
                }
                ErrorClass::Configuration => {
                    tracing::error!(error = %e, "ensure cannot succeed until the configuration is fixed; consumption paused");
                    wait = Some(None);
                }
            }
        }
        (rejected, wait)
    }

    /// Sends a chunk until OpenMeter accepts or rejects it for good.
    async fn send(&self, chunk: &[Pending]) -> Verdict {
        let body = batch_body(chunk);
        let mut attempt = 1;
        loop {
            let e = match self.client.ingest_batch(body.clone()).await {
                Ok(()) => return Verdict::Accepted,
                Err(e) => e,
            };
            if !e.is_transient() && !is_configuration(&e) {
                return Verdict::Rejected(e);
            }
            health().held(&e);
            let delay = self.backoff.delay(attempt, e.retry_after());
            if is_configuration(&e) {
                tracing::error!(error = %e, ?delay, "ingest refused; fix the configuration (consumption paused)");
            } else {
                tracing::warn!(error = %e, ?delay, events = chunk.len(), "ingest failed; retrying");
            }
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Forgets the chunk's subjects and ensures them again.
    async fn heal(&self, chunk: Vec<Pending>) -> Vec<Pending> {
        let keys: HashSet<CustomerKey> = chunk.iter().map(|p| p.identity.customer_key()).collect();
        for key in &keys {
            self.provisioner.forget(key).await;
        }
        self.ensure_subjects(chunk).await
    }

    fn accepted(&self, chunk: &[Pending]) {
        self.tracker.finished(positions(chunk));
        Tally::add(&self.tally.delivered, chunk.len());
        metrics().events_delivered.inc_by(chunk.len() as u64);
        metrics().batches.inc();
    }

    async fn reject(&self, chunk: Vec<Pending>, e: &ApiError) {
        for pending in chunk {
            let reason = format!("OpenMeter rejected the event: {}", e.detail());
            self.dead_letter(pending.record, "rejected", reason).await;
        }
    }

    /// Writes a dead letter, then settles its offset.
    pub async fn dead_letter(&self, record: Record, kind: &'static str, reason: String) {
        let position = record.origin.position;
        self.dlq.put(&DeadLetter::new(record, kind, reason)).await;
        self.tracker.finished([position]);
        Tally::add(&self.tally.dead_lettered, 1);
    }

    /// Settles a record that is not billable.
    pub fn skipped(&self, position: Position) {
        self.tracker.finished([position]);
        Tally::add(&self.tally.skipped, 1);
        metrics().events_skipped.inc();
    }
}

async fn ensure_one(
    provisioner: &Provisioner,
    identity: Identity,
) -> (CustomerKey, Result<(), EnsureError>) {
    let result = provisioner.ensure(&identity).await.map(drop);
    (identity.customer_key(), result)
}

/// 401/403 (token), 404/405 (URL): no event is at fault, so never split or
/// dead-letter because of them.
fn is_configuration(e: &ApiError) -> bool {
    matches!(e, ApiError::Unauthorized { .. }) || matches!(e.status(), Some(404 | 405))
}

fn positions(chunk: &[Pending]) -> impl Iterator<Item = Position> + '_ {
    chunk.iter().map(|p| p.record.origin.position)
}

/// `[e1,e2,…]` from the pre-serialised events.
fn batch_body(chunk: &[Pending]) -> Bytes {
    let size = chunk.iter().map(|p| p.json.len() + 1).sum::<usize>() + 2;
    let mut body = BytesMut::with_capacity(size);
    body.put_u8(b'[');
    for (i, pending) in chunk.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(&pending.json);
    }
    body.put_u8(b']');
    body.freeze()
}
