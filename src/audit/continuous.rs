//! The continuous audit inside `run` (`AUDIT_INTERVAL`, off by default):
//! every interval it audits the window that has settled, `AUDIT_WINDOW`
//! back from `now - AUDIT_SETTLE`, exports the result as gauges, logs each
//! discrepancy and, with `AUDIT_REPAIR`, repairs.

use std::time::Duration;

use chrono::Utc;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::range::TimeRange;
use super::report::Report;
use super::{Audit, RepairMode};
use crate::ensure::Provisioner;
use crate::metrics::metrics;
use crate::price::PriceFeed;

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
}

/// `ticketmeter_audit_last_result`.
pub(crate) const CLEAN: i64 = 0;
pub(crate) const DISCREPANCIES: i64 = 1;
pub(crate) const FAILED: i64 = 2;

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
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
    }

    fn record(&self, report: &Report) {
        let t = &report.totals;
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.signed_events.set(n(t.signed_events));
        self.missing_events.set(n(t.missing_events));
        self.unbillable_events.set(n(t.unbillable_events));
        self.unbillable_usd_micros
            .set(i64::try_from(t.money.unbillable_usd_micros).unwrap_or(i64::MAX));
        self.duplicate_events.set(n(t.duplicate_events));
        self.dead_lettered_events.set(n(t.dead_lettered_events));
        self.unexpected_events.set(n(t.unexpected_events));
        self.last_result.set(if report.discrepancies() == 0 {
            CLEAN
        } else {
            DISCREPANCIES
        });
        self.last_run_timestamp.set(Utc::now().timestamp());
    }
}

/// The periodic audit of a running collector.
pub(crate) struct ContinuousAudit {
    /// The audit to run; its range is replaced by each window.
    pub(crate) audit: Audit,
    pub(crate) interval: Duration,
    pub(crate) window: Duration,
    /// Repair what is found, with this provisioner.
    pub(crate) repair: Option<Provisioner>,
    /// Signed micros are computed at the collector's current price.
    pub(crate) price: PriceFeed,
}

impl ContinuousAudit {
    /// Audits every interval until `cancel` fires.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                () = self.once() => {}
            }
        }
    }

    async fn once(&mut self) {
        let gauges = &metrics().audit;
        self.audit.price = self.price.current().price;
        self.audit.config.range =
            TimeRange::settled_window(Utc::now(), self.window, self.audit.config.settle);
        let result = match self.audit.run().await {
            Ok((report, mut findings)) => match &self.repair {
                Some(p) if report.discrepancies() > 0 => {
                    self.audit.repair(&mut findings, p, RepairMode::Apply).await
                }
                _ => Ok(report),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(report) => {
                gauges.record(&report);
                log(&report);
            }
            Err(e) => {
                gauges.last_result.set(FAILED);
                gauges.last_run_timestamp.set(Utc::now().timestamp());
                tracing::error!(error = %e, "audit could not run");
            }
        }
    }
}

fn log(report: &Report) {
    let t = &report.totals;
    for c in &report.customers {
        for id in &c.missing {
            tracing::warn!(customer = %c.customer, id = %id, "audit: signed event missing from OpenMeter");
        }
        for u in &c.unbillable {
            tracing::warn!(customer = %c.customer, id = %u.id, reason = %u.reason, "audit: stored event will not be invoiced");
        }
    }
    for r in &report.repairs {
        tracing::info!(id = %r.id, sent_as = %r.sent_as, action = %r.action, "audit repair");
    }
    tracing::info!(
        from = %super::range::rfc3339(report.from),
        to = %super::range::rfc3339(report.to),
        signed = t.signed_events,
        stored = t.stored_events,
        missing = t.missing_events,
        unbillable = t.unbillable_events,
        duplicates = t.duplicate_events,
        dead_lettered = t.dead_lettered_events,
        unexpected = t.unexpected_events,
        "audit finished"
    );
}
