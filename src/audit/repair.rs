//! `audit --repair`: make missing and unbillable events billable, never
//! twice.
//!
//! 1. Customers of missing events and of events stored without a customer
//!    are ensured again (the ensure cache is bypassed).
//! 2. Those events are sent again under their own id (OpenMeter's dedupe
//!    makes that safe), and the audit waits up to the settle time for them.
//! 3. An event still absent after that is proven swallowed (openmeter#5118:
//!    the dedupe kept the id of a failed write). It is sent under
//!    [`derived_id`], recorded in `data.original_id`; so is a stored event
//!    whose `time` is older than its subscription, with `time` moved to the
//!    subscription's start and the signed time kept in `data.signed_at`.
//!    A derived copy is sent only when none is stored yet, and the derived
//!    id is the same on every run, so OpenMeter dedupes a second repair.
//!
//! Resent events carry the audit's ETH/USD price in `data.eth_usd_price`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;

use super::config::Audit;
use super::error::AuditError;
use super::findings::{Findings, Found};
use super::range::to_delta;
use super::report::{status, Action, RepairAction, Report, Status};
use super::verdict::{Unbillable, UnbillableKind};
use crate::billing::BillingTerms;
use crate::domain::Identity;
use crate::ensure::Provisioner;
use crate::map::UsageEvent;
use crate::openmeter::ApiError;

/// `--repair` with or without `--dry-run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RepairMode {
    /// List what would be done; send nothing.
    DryRun,
    Apply,
}

/// The id a repair sends an event under once its own id is proven lost.
/// Deterministic, so no second repair can bill the event again.
pub(crate) fn derived_id(id: &str) -> String {
    format!("{id}.repair")
}

/// What an event needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Missing: ensure its customer and send it again.
    Resend,
    /// Stored without a customer: ensure the customer, send again.
    Customer,
    /// Stored before its subscription began: a derived copy at its start.
    MoveTime,
}

impl Audit {
    /// Repairs what `findings` found; returns the report after the repair.
    pub(crate) async fn repair(
        &self,
        findings: &mut Findings,
        provisioner: &Provisioner,
        mode: RepairMode,
    ) -> Result<Report, AuditError> {
        let targets = self.targets(findings);
        let actions = match mode {
            RepairMode::DryRun => dry_run(&targets),
            RepairMode::Apply => self.apply(findings, provisioner, &targets).await?,
        };
        let mut report = self.report(findings);
        report.repairs = actions;
        Ok(report)
    }

    fn targets(&self, findings: &Findings) -> Vec<(String, Need)> {
        let settled = Utc::now() - to_delta(self.config.settle);
        let settled = settled.timestamp_nanos_opt().unwrap_or(i64::MAX);
        let ledger = &findings.ledger;
        let mut targets: Vec<(String, Need)> = ledger
            .entries
            .iter()
            .filter_map(|(id, entry)| {
                let need = match status(entry, settled) {
                    Status::Missing => Need::Resend,
                    Status::Unbillable => match entry.unbillable?.0 {
                        UnbillableKind::NoCustomer => Need::Customer,
                        UnbillableKind::BeforeActiveFrom => Need::MoveTime,
                        UnbillableKind::Other => return None,
                    },
                    _ => return None,
                };
                Some((id.to_string(), need))
            })
            .collect();
        targets.sort_by(|a, b| a.0.cmp(&b.0));
        targets
    }

    async fn apply(
        &self,
        findings: &mut Findings,
        provisioner: &Provisioner,
        targets: &[(String, Need)],
    ) -> Result<Vec<RepairAction>, AuditError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let mut events = self.reread(targets).await?;
        let mut actions: HashMap<String, RepairAction> = HashMap::new();
        for (id, _) in targets {
            if !events.contains_key(id) {
                let why = "not found in the source on re-reading".into();
                fail(findings, &mut actions, id, why);
            }
        }
        let ensured = self.ensure_customers(provisioner, targets, &events).await;
        let mut resend = Vec::new();
        for (id, need) in targets {
            let Some((identity, event)) = events.get(id) else {
                continue;
            };
            if *need == Need::MoveTime {
                continue;
            }
            match ensured.get(identity) {
                Some(Err(why)) => fail(findings, &mut actions, id, why.clone()),
                _ => resend.push(event.clone()),
            }
        }
        if let Err(e) = self.send(&resend).await {
            for event in &resend {
                let id = event.id.as_str();
                fail(findings, &mut actions, id, e.to_string());
            }
        }
        let ids: Vec<String> = targets
            .iter()
            .map(|(id, _)| id.clone())
            .filter(|id| !actions.contains_key(id))
            .collect();
        // Only resent events can appear by waiting.
        let wait = !resend.is_empty();
        let found = self.settle(findings, &ids, wait).await?;
        let mut derived = Vec::new();
        for id in &ids {
            if billable(findings, id) {
                actions.insert(id.clone(), action(id, id, Action::Resent));
                continue;
            }
            let copies: Vec<&Found> = found.iter().filter(|f| &f.key == id).collect();
            let Some((identity, event)) = events.remove(id) else {
                continue;
            };
            let current = ensured.get(&identity).and_then(|r| r.as_ref().ok());
            match derive(id, event, &copies, current) {
                Some(copy) => derived.push(copy),
                None => {
                    actions.insert(id.clone(), action(id, id, Action::NotRecovered));
                }
            }
        }
        if let Err(e) = self.send(&derived).await {
            for event in &derived {
                let id = event.data.original_id.as_deref().unwrap_or_default();
                fail(findings, &mut actions, id, e.to_string());
            }
        }
        let pending: Vec<String> = derived
            .iter()
            .filter_map(|e| e.data.original_id.clone())
            .filter(|id| !actions.contains_key(id))
            .collect();
        self.settle(findings, &pending, !derived.is_empty()).await?;
        for id in pending {
            let verdict = if billable(findings, &id) {
                Action::ResentDerived
            } else {
                Action::NotRecovered
            };
            actions.insert(id.clone(), action(&id, &derived_id(&id), verdict));
        }
        let mut actions: Vec<RepairAction> = actions.into_values().collect();
        actions.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(actions)
    }

    /// The targets' events, decoded and mapped again from the source.
    async fn reread(
        &self,
        targets: &[(String, Need)],
    ) -> Result<HashMap<String, (Identity, UsageEvent)>, AuditError> {
        let wanted: HashSet<&str> = targets.iter().map(|(id, _)| id.as_str()).collect();
        let mut events = HashMap::new();
        self.each_signed(&self.config.range, "re-reading", None, |mapped, _| {
            if wanted.contains(mapped.event.id.as_str()) && !events.contains_key(&mapped.event.id) {
                events.insert(mapped.event.id.clone(), (mapped.identity, mapped.event));
            }
        })
        .await?;
        Ok(events)
    }

    /// Ensures, bypassing the cache, every customer that lost events; for
    /// each, the terms of its current subscription (or why ensure failed).
    async fn ensure_customers(
        &self,
        provisioner: &Provisioner,
        targets: &[(String, Need)],
        events: &HashMap<String, (Identity, UsageEvent)>,
    ) -> HashMap<Identity, Result<BillingTerms, String>> {
        let identities: HashSet<&Identity> = targets
            .iter()
            .filter(|(_, need)| *need != Need::MoveTime)
            .filter_map(|(id, _)| events.get(id).map(|(identity, _)| identity))
            .collect();
        let mut ensured = HashMap::new();
        for identity in identities {
            provisioner.forget(&identity.customer_key());
            let result = match provisioner.ensure(identity).await {
                Ok(e) => Ok(e.terms),
                Err(e) => Err(format!("ensure failed: {e}")),
            };
            ensured.insert(identity.clone(), result);
        }
        ensured
    }

    /// Refreshes `ids` until all are billable or, when `wait`, the settle
    /// time passed.
    async fn settle(
        &self,
        findings: &mut Findings,
        ids: &[String],
        wait: bool,
    ) -> Result<Vec<Found>, AuditError> {
        let settle = if wait {
            self.config.settle
        } else {
            Duration::ZERO
        };
        let deadline = Instant::now() + settle;
        let poll = (settle / 10).clamp(Duration::from_millis(100), Duration::from_secs(15));
        loop {
            findings.terms.clear();
            let found = self.refresh(findings, ids).await?;
            let done = ids.iter().all(|id| billable(findings, id));
            let now = Instant::now();
            if done || now >= deadline {
                return Ok(found);
            }
            tokio::time::sleep(poll.min(deadline - now)).await;
        }
    }

    /// Sends events in batches (the client retries transient failures).
    async fn send(&self, events: &[UsageEvent]) -> Result<(), ApiError> {
        for chunk in events.chunks(100) {
            let body = Bytes::from(serde_json::to_vec(chunk).unwrap_or_default());
            self.client.ingest_batch(body).await?;
        }
        Ok(())
    }
}

/// Records a repair step that could not be taken, and why.
fn fail(
    findings: &mut Findings,
    actions: &mut HashMap<String, RepairAction>,
    id: &str,
    why: String,
) {
    findings.notes.repair_errors.push((id.to_owned(), why));
    actions.insert(id.to_owned(), action(id, id, Action::Failed));
}

fn billable(findings: &Findings, id: &str) -> bool {
    findings
        .ledger
        .entries
        .get(id)
        .is_some_and(|e| e.billable_copies > 0)
}

fn action(id: &str, sent_as: &str, action: Action) -> RepairAction {
    RepairAction {
        id: id.to_owned(),
        sent_as: sent_as.to_owned(),
        action,
    }
}

fn dry_run(targets: &[(String, Need)]) -> Vec<RepairAction> {
    targets
        .iter()
        .map(|(id, need)| match need {
            Need::Resend => action(id, id, Action::WouldResend),
            Need::Customer => action(id, id, Action::WouldEnsureAndResend),
            Need::MoveTime => action(id, &derived_id(id), Action::WouldResendDerived),
        })
        .collect()
}

/// The derived copy of `id`, when one is due: its own id is proven absent,
/// or stored before its subscription began; never when a derived copy is
/// already stored. `current`: the terms of the customer's current
/// subscription. Its time is moved by `billing`'s rule, as the collector's.
fn derive(
    id: &str,
    mut event: UsageEvent,
    copies: &[&Found],
    current: Option<&BillingTerms>,
) -> Option<UsageEvent> {
    if copies.iter().any(|f| f.derived) {
        return None;
    }
    let terms = match copies.first().map(|f| &f.verdict) {
        None => current,
        Some(Err(Unbillable::BeforeActiveFrom { terms })) => Some(terms),
        Some(_) => return None,
    };
    let signed = crate::encoding::parse_rfc3339(&event.time);
    if let Some(to) = terms
        .zip(signed)
        .and_then(|(t, signed)| t.bill_time(signed))
    {
        event.bill_from(to);
    }
    event.id = derived_id(id);
    event.data.original_id = Some(id.to_owned());
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Contract;
    use crate::decode::{decode, Decoded};
    use crate::map::map;

    fn event() -> UsageEvent {
        let line = r#"{"id":"e1","type":"create_signed_ticket","data":{"request_id":"r1","auth_id":"a:b","computed_fee":"1","current_time":"2026-11-24T09:00:00Z"}}"#;
        let contract = Contract::seed();
        let Ok(Decoded::Ticket(ticket)) = decode(line.as_bytes(), 1 << 20, &contract) else {
            panic!("a valid ticket");
        };
        map(*ticket, &"3500".parse().unwrap(), &contract).event
    }

    #[test]
    fn the_derived_id_is_the_same_on_every_run() {
        assert_eq!(derived_id("r1"), derived_id("r1"));
        assert_ne!(derived_id("r1"), "r1");
    }

    #[test]
    fn a_proven_absent_event_is_derived_with_its_original_id() {
        let copy = derive("r1", event(), &[], None).unwrap();
        assert_eq!(copy.id, "r1.repair");
        assert_eq!(copy.data.original_id.as_deref(), Some("r1"));
        assert_eq!(copy.time, "2026-11-24T09:00:00Z");
        assert_eq!(copy.data.signed_at, None);
    }

    #[test]
    fn a_derived_copy_never_predates_the_current_subscription() {
        let start = crate::encoding::parse_rfc3339("2026-11-25T00:00:00.300Z").unwrap();
        let terms = BillingTerms {
            active_from: start,
            active_to: None,
            anchor: start,
            cadence: None,
        };
        let copy = derive("r1", event(), &[], Some(&terms)).unwrap();
        assert_eq!(copy.time, "2026-11-25T00:00:01Z");
        assert_eq!(copy.data.signed_at.as_deref(), Some("2026-11-24T09:00:00Z"));
    }
}
