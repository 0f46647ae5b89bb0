//! Prometheus metrics, one process-wide registry served at `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `upstream_calls`' labels: which OpenMeter operation, and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    pub route: &'static str,
    pub status: CallStatus,
}

/// How an OpenMeter call ended: its HTTP status, or `error` when none came back.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CallStatus {
    Http(u16),
    Error,
}

impl EncodeLabelValue for CallStatus {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Self::Http(code) => write!(encoder, "{code}"),
            Self::Error => encoder.write_str("error"),
        }
    }
}

/// `events_dead_lettered`' label: the dead letter's kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

/// The label of per-partition metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Partition {
    pub partition: i32,
}

/// `dead_letters_spilled`' label: why a letter went to the spill file.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Cause {
    pub cause: &'static str,
}

/// `dimensions_unreadable`' label: the `data` field left out.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Field {
    pub field: &'static str,
}

/// Every metric ticketmeter exports.
pub struct Metrics {
    registry: Registry,
    pub events_consumed: Counter,
    pub events_skipped: Counter,
    pub events_delivered: Counter,
    pub events_dead_lettered: Family<Reason, Counter>,
    pub events_time_moved: Counter,
    pub events_missed_invoice: Counter,
    pub usd_micros_missed_invoice: Counter,
    pub batches: Counter,
    pub batch_latency: Histogram,
    pub upstream_calls: Family<RouteStatus, Counter>,
    pub ensure_cache_hits: Counter,
    pub ensure_cache_misses: Counter,
    pub ensure_cached: Gauge,
    pub in_flight_limit: Gauge,
    pub consumer_lag: Family<Partition, Gauge>,
    pub eth_usd_price_micros: Gauge,
    pub price_updated_unix: Gauge,
    pub partition_stalled: Family<Partition, Gauge>,
    pub pipeline_held_since: Gauge,
    pub consumer_poll_gap_max: Gauge<f64, AtomicU64>,
    pub dead_letters_spilled: Family<Cause, Counter>,
    pub dimensions_unreadable: Family<Field, Counter>,
    /// The continuous audit's figures (see `audit::continuous`).
    pub audit: AuditGauges,
    /// The running collector's session chains (see `chain::tracker`).
    pub chain: ChainMetrics,
    /// How ensure copes with the organisation's size (see `ensure`).
    pub ensure: EnsureGauges,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("ticketmeter");
        let m = Self {
            events_consumed: Counter::default(),
            events_skipped: Counter::default(),
            events_delivered: Counter::default(),
            events_dead_lettered: Family::default(),
            events_time_moved: Counter::default(),
            events_missed_invoice: Counter::default(),
            usd_micros_missed_invoice: Counter::default(),
            batches: Counter::default(),
            batch_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            upstream_calls: Family::default(),
            ensure_cache_hits: Counter::default(),
            ensure_cache_misses: Counter::default(),
            ensure_cached: Gauge::default(),
            in_flight_limit: Gauge::default(),
            consumer_lag: Family::default(),
            eth_usd_price_micros: Gauge::default(),
            price_updated_unix: Gauge::default(),
            partition_stalled: Family::default(),
            pipeline_held_since: Gauge::default(),
            consumer_poll_gap_max: Gauge::default(),
            dead_letters_spilled: Family::default(),
            dimensions_unreadable: Family::default(),
            audit: Default::default(),
            chain: Default::default(),
            ensure: Default::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "events_consumed",
            "Records read from the source",
            m.events_consumed.clone(),
        );
        r.register(
            "dimensions_unreadable",
            "Billed events sent without a dimension whose value could not be read, by field",
            m.dimensions_unreadable.clone(),
        );
        r.register(
            "events_skipped",
            "Records of other event types, committed unsent",
            m.events_skipped.clone(),
        );
        r.register(
            "events_delivered",
            "Events OpenMeter accepted",
            m.events_delivered.clone(),
        );
        r.register(
            "events_dead_lettered",
            "Events written to the dead-letter queue, by reason kind",
            m.events_dead_lettered.clone(),
        );
        r.register(
            "events_time_moved",
            "Events older than their subscription, sent at its start so they are invoiced",
            m.events_time_moved.clone(),
        );
        r.register(
            "events_missed_invoice",
            "Events sent after their billing period's invoice was collected: stored, never invoiced",
            m.events_missed_invoice.clone(),
        );
        r.register(
            "usd_micros_missed_invoice",
            "Billable USD micros of events that missed their invoice",
            m.usd_micros_missed_invoice.clone(),
        );
        r.register(
            "batches",
            "Ingest batches OpenMeter accepted",
            m.batches.clone(),
        );
        r.register(
            "batch_latency_seconds",
            "Time from a batch's first event to OpenMeter accepting it",
            m.batch_latency.clone(),
        );
        r.register(
            "upstream_calls",
            "OpenMeter HTTP calls by route and status",
            m.upstream_calls.clone(),
        );
        r.register(
            "ensure_cache_hits",
            "Ensures answered from the cache",
            m.ensure_cache_hits.clone(),
        );
        r.register(
            "ensure_cached_identities",
            "Identities in the ensure cache",
            m.ensure_cached.clone(),
        );
        r.register(
            "delivery_in_flight_limit",
            "Batches delivery may have in flight now (adapted to OpenMeter's round trip and push-back)",
            m.in_flight_limit.clone(),
        );
        r.register(
            "ensure_cache_misses",
            "Ensures that asked OpenMeter",
            m.ensure_cache_misses.clone(),
        );
        r.register(
            "consumer_lag",
            "Kafka consumer lag in records, by partition",
            m.consumer_lag.clone(),
        );
        r.register(
            "eth_usd_price_micros",
            "ETH/USD price in use, in USD micros",
            m.eth_usd_price_micros.clone(),
        );
        r.register(
            "price_updated_unix_seconds",
            "When the price in use was obtained",
            m.price_updated_unix.clone(),
        );
        r.register(
            "partition_stalled",
            "1 while a partition has records behind our position and nothing is read (not paused)",
            m.partition_stalled.clone(),
        );
        r.register(
            "pipeline_held_since_unix_seconds",
            "When every batch began waiting on one failure (OpenMeter, token, plan, DLQ); 0 when none",
            m.pipeline_held_since.clone(),
        );
        r.register(
            "consumer_poll_gap_max_seconds",
            "Longest time the Kafka consumer went without being polled (rebalance callbacks included)",
            m.consumer_poll_gap_max.clone(),
        );
        r.register(
            "dead_letters_spilled",
            "Dead letters written to DLQ_SPILL_DIR, by cause: truncated (too large for the DLQ topic) or refused (the topic refused them)",
            m.dead_letters_spilled.clone(),
        );
        m.audit.register(r);
        m.chain.register(r);
        m.ensure.register(r);
        Self { registry, ..m }
    }

    /// Counts one OpenMeter call.
    pub fn upstream_call(&self, route: &'static str, status: CallStatus) {
        self.upstream_calls
            .get_or_create(&RouteStatus { route, status })
            .inc();
    }

    /// Counts a dead letter of this kind (`DeadLetterKind::as_str`).
    pub fn dead_lettered(&self, reason: &'static str) {
        self.events_dead_lettered
            .get_or_create(&Reason { reason })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The last audit's figures, at `GET /metrics`.
#[derive(Debug, Default)]
pub struct AuditGauges {
    pub signed_events: Gauge,
    pub missing_events: Gauge,
    pub unbillable_events: Gauge,
    pub unbillable_usd_micros: Gauge,
    pub duplicate_events: Gauge,
    pub dead_lettered_events: Gauge,
    pub unexpected_events: Gauge,
    pub last_run_timestamp: Gauge,
    pub last_result: Gauge,
    pub chain_gaps: Gauge,
    pub unproven_usd_micros: Gauge,
}

impl AuditGauges {
    pub fn register(&self, registry: &mut Registry) {
        let gauges = [
            (
                "audit_signed_events",
                "Signed events in the last audited window",
                &self.signed_events,
            ),
            (
                "audit_missing_events",
                "Signed events OpenMeter never stored (last audit)",
                &self.missing_events,
            ),
            (
                "audit_unbillable_events",
                "Stored events OpenMeter will not invoice (last audit)",
                &self.unbillable_events,
            ),
            (
                "audit_unbillable_usd_micros",
                "USD micros stored but not invoiceable (last audit)",
                &self.unbillable_usd_micros,
            ),
            (
                "audit_duplicate_events",
                "Signed events billed more than once (last audit)",
                &self.duplicate_events,
            ),
            (
                "audit_dead_lettered_events",
                "Signed events dead-lettered in the last audited window",
                &self.dead_lettered_events,
            ),
            (
                "audit_unexpected_events",
                "Stored events no signed event explains (last audit)",
                &self.unexpected_events,
            ),
            (
                "audit_last_run_timestamp_seconds",
                "When the last audit finished",
                &self.last_run_timestamp,
            ),
            (
                "audit_last_result",
                "Last audit: 0 clean, 1 discrepancies, 2 could not run",
                &self.last_result,
            ),
            (
                "audit_chain_gaps",
                "Gaps in the signer's session chains: calls signed and never published to Kafka (last audit)",
                &self.chain_gaps,
            ),
            (
                "audit_unproven_usd_micros",
                "USD micros signed in the last audited window not proven billed: missing, unbillable or in flight",
                &self.unproven_usd_micros,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
    }
}

/// What the running collector finds in the signer's session chains.
#[derive(Debug, Default)]
pub struct ChainMetrics {
    pub gaps: Counter,
    pub missing_calls: Counter,
    pub estimated_unbilled_usd_micros: Counter,
    pub unchained_events: Counter,
    pub sessions: Gauge,
    pub watching: Gauge,
}

impl ChainMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                "chain_gaps",
                "Gaps in signer session chains: signed calls that never reached Kafka, one per missing run of calls",
                &self.gaps,
            ),
            (
                "chain_missing_calls",
                "Signing calls missing from session chains (each call is 1 to 100 tickets)",
                &self.missing_calls,
            ),
            (
                "chain_estimated_unbilled_usd_micros",
                "Estimate (session fee rate over the uncovered time) of what the missing calls would have billed; never billed",
                &self.estimated_unbilled_usd_micros,
            ),
            (
                "chain_unchained_events",
                "Billable events without session_id, sequence_number and previous_time: their losses cannot be seen",
                &self.unchained_events,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "chain_sessions",
            "Signer sessions whose chains are tracked (active within CHAIN_IDLE)",
            self.sessions.clone(),
        );
        registry.register(
            "chain_watching",
            "1 while this member owns every partition and tracks chains; 0 otherwise (the audit still finds gaps)",
            self.watching.clone(),
        );
    }
}

/// Ensure's limit and the organisation's size against the cache's.
#[derive(Debug, Default)]
pub struct EnsureGauges {
    pub concurrency_limit: Gauge,
    pub organisation_customers: Gauge,
    pub cache_capacity: Gauge,
}

impl EnsureGauges {
    pub fn register(&self, registry: &mut Registry) {
        let gauges = [
            (
                "ensure_concurrency_limit",
                "Ensure calls that may be in flight now, across batches (adapted to OpenMeter's round trip and push-back)",
                &self.concurrency_limit,
            ),
            (
                "ensure_organisation_customers",
                "Live customers the last warm-up listed",
                &self.organisation_customers,
            ),
            (
                "ensure_cache_capacity",
                "Identities the ensure cache holds at most (ENSURE_CACHE_CAPACITY)",
                &self.cache_capacity,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::{CallStatus, Cause, Metrics, Partition};
    /// The names and labels dashboards and alerts select on.
    #[test]
    fn labelled_metrics_render_with_their_label_names_and_values() {
        let m = Metrics::new();
        m.upstream_call("ingest events", CallStatus::Http(202));
        m.upstream_call("ingest events", CallStatus::Error);
        m.dead_lettered("rejected");
        m.consumer_lag
            .get_or_create(&Partition { partition: 3 })
            .set(7);
        m.partition_stalled
            .get_or_create(&Partition { partition: 3 })
            .set(1);
        m.dead_letters_spilled
            .get_or_create(&Cause { cause: "refused" })
            .inc();
        let text = m.render();
        for line in [
            "ticketmeter_upstream_calls_total{route=\"ingest events\",status=\"202\"} 1",
            "ticketmeter_upstream_calls_total{route=\"ingest events\",status=\"error\"} 1",
            "ticketmeter_events_dead_lettered_total{reason=\"rejected\"} 1",
            "ticketmeter_consumer_lag{partition=\"3\"} 7",
            "ticketmeter_partition_stalled{partition=\"3\"} 1",
            "ticketmeter_dead_letters_spilled_total{cause=\"refused\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
