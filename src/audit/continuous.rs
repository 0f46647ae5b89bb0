//! The continuous audit inside `run` (`AUDIT_INTERVAL`, hourly by default,
//! `off` to turn it off): `AUDIT_SETTLE` after each interval boundary (the
//! hour) it audits the `AUDIT_WINDOW` that closed there, by totals (one
//! meter query per meter when it is clean), exports the result as gauges,
//! logs each discrepancy and, with `AUDIT_REPAIR`, repairs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use super::accounts::Accounts;
use super::config::Audit;
use super::error::AuditError;
use super::range::TimeRange;
use super::repair::RepairMode;
use super::report::Report;
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
    /// Customers and subscriptions, when they were read, and the subjects
    /// they were read for.
    pub(crate) accounts: Option<(Instant, Arc<Accounts>, HashSet<Box<str>>)>,
}

/// How long the continuous audit reuses the customers and subscriptions it
/// read, unless a window bills a subject they were not read for, or an
/// audit met a subject without a customer (a new customer): read again. A customer or subscription newer than what was
/// read only makes its windows differ (read event by event, where
/// OpenMeter's own attribution and terms judge them), never a wrong
/// verdict.
const ACCOUNTS_FOR: Duration = Duration::from_secs(6 * 3600);

impl ContinuousAudit {
    /// Audits `AUDIT_SETTLE` after every interval boundary until `cancel`
    /// fires.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        loop {
            let wait = until_next(Utc::now(), self.interval, self.audit.config.settle);
            tokio::select! {
                _ = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                () = self.once() => {}
            }
        }
    }

    /// The accounts to audit the window with: those read less than
    /// [`ACCOUNTS_FOR`] ago for every subject the window's tickets bill,
    /// else read now for these subjects only (one more read of the
    /// window's source; memory per customer active in it, not per customer
    /// of the organisation).
    async fn accounts(&mut self) -> Result<Arc<Accounts>, AuditError> {
        let subjects = self.audit.subjects().await?;
        if let Some((read, accounts, read_for)) = &self.accounts {
            if read.elapsed() < ACCOUNTS_FOR && subjects.is_subset(read_for) {
                return Ok(accounts.clone());
            }
        }
        let accounts = Arc::new(Accounts::load(&self.audit.client, Some(&subjects)).await?);
        self.accounts = Some((Instant::now(), accounts.clone(), subjects));
        Ok(accounts)
    }

    async fn once(&mut self) {
        let gauges = &metrics().audit;
        match self.audited().await {
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

    /// The window closed last, audited (and repaired when asked).
    async fn audited(&mut self) -> Result<Report, AuditError> {
        self.audit.price = self.price.current().price;
        self.audit.config.range = closed_window(
            Utc::now(),
            self.interval,
            self.window,
            self.audit.config.settle,
        );
        self.audit.accounts = Some(self.accounts().await?);
        let (report, mut findings) = self.audit.run().await?;
        if report
            .proof
            .as_ref()
            .is_some_and(|p| p.subjects_without_customer > 0)
        {
            self.accounts = None;
        }
        match &self.repair {
            Some(p) if report.discrepancies() > 0 => {
                self.audit.repair(&mut findings, p, RepairMode::Apply).await
            }
            _ => Ok(report),
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
    gauges
        .unproven_usd_micros
        .set(i64::try_from(t.unproven_usd_micros.whole_u64()).unwrap_or(i64::MAX));
    gauges.last_result.set(if report.discrepancies() == 0 {
        CLEAN
    } else {
        DISCREPANCIES
    });
    gauges.last_run_timestamp.set(Utc::now().timestamp());
}

/// How long from `now` until `settle` after the next multiple of
/// `interval` (counted from the epoch, so hourly audits run at `:10`).
fn until_next(now: DateTime<Utc>, interval: Duration, settle: Duration) -> Duration {
    let period = interval.as_millis().max(1) as i64;
    let shifted = now.timestamp_millis() - settle.as_millis() as i64;
    let next = (shifted.div_euclid(period) + 1) * period;
    Duration::from_millis(u64::try_from(next - shifted).unwrap_or(0))
}

/// The `window` that ends at the last multiple of `interval` at least
/// `settle` before `now`.
fn closed_window(
    now: DateTime<Utc>,
    interval: Duration,
    window: Duration,
    settle: Duration,
) -> TimeRange {
    let period = interval.as_millis().max(1) as i64;
    let settled = now.timestamp_millis() - settle.as_millis() as i64;
    let end_ms = settled.div_euclid(period) * period;
    let to = DateTime::from_timestamp_millis(end_ms).unwrap_or(now);
    let from = to - TimeDelta::from_std(window).unwrap_or(TimeDelta::hours(1));
    TimeRange { from, to }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::range::rfc3339;
    use crate::encoding::parse_rfc3339;

    const HOUR: Duration = Duration::from_secs(3600);
    const SETTLE: Duration = Duration::from_secs(600);

    #[test]
    fn hourly_audits_run_settle_after_each_hour() {
        let now = parse_rfc3339("2026-11-24T09:55:00Z").unwrap();
        assert_eq!(until_next(now, HOUR, SETTLE), Duration::from_secs(15 * 60));
        let just_after = parse_rfc3339("2026-11-24T10:10:00Z").unwrap();
        assert_eq!(until_next(just_after, HOUR, SETTLE), HOUR);
    }

    #[test]
    fn each_audit_covers_the_hour_that_closed_before_it() {
        let at = |s| closed_window(parse_rfc3339(s).unwrap(), HOUR, HOUR, SETTLE);
        let w = at("2026-11-24T10:10:00.004Z");
        assert_eq!(rfc3339(w.from), "2026-11-24T09:00:00Z");
        assert_eq!(rfc3339(w.to), "2026-11-24T10:00:00Z");
        let early = at("2026-11-24T10:09:59Z");
        assert_eq!(rfc3339(early.to), "2026-11-24T09:00:00Z");
    }
}
