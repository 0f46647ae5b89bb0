//! The continuous audit inside `run` (`AUDIT_INTERVAL`, off by default):
//! every interval it audits the window that has settled, `AUDIT_WINDOW`
//! back from `now - AUDIT_SETTLE`, exports the result as gauges, logs each
//! discrepancy and, with `AUDIT_REPAIR`, repairs.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::range::TimeRange;
use super::report::Report;
use super::{Audit, RepairMode};
use crate::ensure::Provisioner;
use crate::metrics::{metrics, AuditGauges};
use crate::price::PriceFeed;

/// `ticketmeter_audit_last_result`.
pub(crate) const CLEAN: i64 = 0;
pub(crate) const DISCREPANCIES: i64 = 1;
pub(crate) const FAILED: i64 = 2;

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
                record(gauges, &report);
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
    for g in &report.chain.gaps {
        tracing::warn!(customer = %g.customer, session = %g.session, missing_calls = g.missing_calls, estimated_usd_micros = %g.estimate.usd_micros, "audit: calls signed and never published to Kafka (a gap in the session's chain)");
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

/// Sets the gauges from the last audit's report.
fn record(gauges: &AuditGauges, report: &Report) {
    let t = &report.totals;
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    gauges.signed_events.set(n(t.signed_events));
    gauges.missing_events.set(n(t.missing_events));
    gauges.unbillable_events.set(n(t.unbillable_events));
    gauges
        .unbillable_usd_micros
        .set(i64::try_from(t.money.unbillable_usd_micros.whole_u64()).unwrap_or(i64::MAX));
    gauges.duplicate_events.set(n(t.duplicate_events));
    gauges.dead_lettered_events.set(n(t.dead_lettered_events));
    gauges.unexpected_events.set(n(t.unexpected_events));
    gauges.chain_gaps.set(n(report.chain.count()));
    gauges.last_result.set(if report.discrepancies() == 0 {
        CLEAN
    } else {
        DISCREPANCIES
    });
    gauges.last_run_timestamp.set(Utc::now().timestamp());
}
