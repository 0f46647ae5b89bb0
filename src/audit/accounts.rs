//! Who bills each subject, and under which terms, read once for the whole
//! audit: every customer and every subscription in pages of the server's
//! maximum (as the ensure cache's warm-up reads them), keeping all of them
//! or (the continuous audit) those of the subjects its window bills, so the
//! totals need no call per customer. A subject is attributed to the customer whose key or
//! usage-attribution subject key it is (`streaming/usageattribution.go`,
//! `GetValues`); deleted customers and subscriptions bill nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::billing::{BillingTerms, EventTime};
use crate::openmeter::model::{Customer, Subscription};
use crate::openmeter::{ApiError, OpenMeterClient};

/// One live customer and the terms of its subscriptions.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) id: String,
    pub(crate) terms: Arc<[BillingTerms]>,
}

/// Every live customer, by the subjects attributed to it.
#[derive(Debug, Default)]
pub(crate) struct Accounts {
    accounts: Vec<Account>,
    by_subject: HashMap<String, u32>,
}

/// Where an event signed at some time is metered, and whether invoicing
/// bills it there (the collector's time rule, `billing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Sent at its signed time, inside a subscription's service period.
    Billed,
    /// Signed before its subscription began: sent at the subscription's
    /// start (`BillingTerms::billable_from`).
    Moved,
    /// No subscription covers its time, before or after it.
    NotCovered,
    /// Its subject is no live customer's.
    NoCustomer,
}

impl Accounts {
    /// Reads every customer and subscription, or with `only` those of the
    /// customers these subjects attribute to. Pages are joined as they
    /// arrive, keeping an id and terms per customer kept, never a page:
    /// the continuous audit inside `run` reads only the subjects of its
    /// window, so its memory follows the customers active in an hour, not
    /// the organisation (which the ensure cache's budget is sized for).
    pub(crate) async fn load(
        client: &OpenMeterClient,
        only: Option<&HashSet<Box<str>>>,
    ) -> Result<Self, ApiError> {
        let mut accounts = Self::default();
        let mut by_id: HashMap<String, u32> = HashMap::new();
        client
            .each_customer_page(|page| {
                for customer in page.into_iter().filter(|c| c.deleted_at.is_none()) {
                    if only.is_none_or(|only| subjects_of(&customer).any(|s| only.contains(s))) {
                        let index = accounts.add(&customer);
                        by_id.insert(customer.id, index);
                    }
                }
            })
            .await?;
        let mut terms: Vec<Vec<BillingTerms>> = vec![Vec::new(); accounts.accounts.len()];
        client
            .each_subscription_page(|page: Vec<Subscription>| {
                for s in page.into_iter().filter(|s| s.deleted_at.is_none()) {
                    if let Some(&index) = by_id.get(&s.customer_id) {
                        terms[index as usize].push(BillingTerms::of(&s));
                    }
                }
            })
            .await?;
        for (account, terms) in accounts.accounts.iter_mut().zip(terms) {
            account.set_terms(terms);
        }
        Ok(accounts)
    }

    /// Adds a live customer without terms; returns its index.
    fn add(&mut self, customer: &Customer) -> u32 {
        let index = u32::try_from(self.accounts.len()).unwrap_or(u32::MAX);
        for subject in subjects_of(customer) {
            self.by_subject.entry(subject.to_owned()).or_insert(index);
        }
        self.accounts.push(Account {
            id: customer.id.clone(),
            terms: Arc::from([]),
        });
        index
    }

    /// The customer `subject` attributes to.
    pub(crate) fn of(&self, subject: &str) -> Option<&Account> {
        let index = *self.by_subject.get(subject)?;
        self.accounts.get(index as usize)
    }

    /// Every customer id with its terms, for the audit's verdicts on events.
    pub(crate) fn terms(&self) -> impl Iterator<Item = (&str, &Arc<[BillingTerms]>)> {
        self.accounts.iter().map(|a| (a.id.as_str(), &a.terms))
    }

    /// When the collector sent an event of `subject` signed at `signed`,
    /// and whether that time is billed: the signed time, or (under
    /// `EVENT_TIME=billable`) the start of the earliest later subscription
    /// when no subscription covers the signed time.
    pub(crate) fn place(
        &self,
        subject: &str,
        signed: DateTime<Utc>,
        event_time: EventTime,
    ) -> (DateTime<Utc>, Placement) {
        let Some(account) = self.of(subject) else {
            return (signed, Placement::NoCustomer);
        };
        if account.terms.iter().any(|t| t.covers(signed)) {
            return (signed, Placement::Billed);
        }
        let later = account
            .terms
            .iter()
            .filter(|t| t.service_start() > signed)
            .min_by_key(|t| t.service_start());
        match (later, event_time) {
            (Some(terms), EventTime::Billable) => {
                (terms.bill_time(signed).unwrap_or(signed), Placement::Moved)
            }
            _ => (signed, Placement::NotCovered),
        }
    }
}

impl Account {
    fn set_terms(&mut self, mut terms: Vec<BillingTerms>) {
        terms.sort_by_key(|t| t.active_from);
        self.terms = Arc::from(terms);
    }
}

/// The subjects a customer bills: its usage-attribution subject keys, then
/// its key.
fn subjects_of(customer: &Customer) -> impl Iterator<Item = &str> {
    customer
        .usage_attribution
        .iter()
        .flat_map(|u| u.subject_keys.iter().map(String::as_str))
        .chain(std::iter::once(customer.key.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::parse_rfc3339;

    fn t(s: &str) -> DateTime<Utc> {
        parse_rfc3339(s).unwrap()
    }

    fn accounts(active_from: &str, active_to: Option<&str>) -> Accounts {
        let customer: Customer = serde_json::from_value(serde_json::json!({
            "id": "c1", "key": "acme:alice",
            "usage_attribution": {"subject_keys": ["acme:alice", "legacy-alice"]},
        }))
        .unwrap();
        let terms = BillingTerms {
            active_from: t(active_from),
            active_to: active_to.map(t),
            anchor: t(active_from),
            cadence: None,
        };
        let mut accounts = Accounts::default();
        let index = accounts.add(&customer);
        accounts.accounts[index as usize].set_terms(vec![terms]);
        accounts
    }

    #[test]
    fn an_event_inside_its_subscription_is_metered_at_its_signed_time() {
        let a = accounts("2026-11-01T00:00:00Z", None);
        let signed = t("2026-11-10T00:00:00.250Z");
        assert_eq!(
            a.place("legacy-alice", signed, EventTime::Billable),
            (signed, Placement::Billed)
        );
    }

    #[test]
    fn an_event_older_than_its_subscription_is_metered_at_the_next_whole_second_of_its_start() {
        let a = accounts("2026-11-01T00:00:59.300Z", None);
        let signed = t("2026-11-01T00:00:58Z");
        assert_eq!(
            a.place("acme:alice", signed, EventTime::Billable),
            (t("2026-11-01T00:01:00Z"), Placement::Moved)
        );
        assert_eq!(
            a.place("acme:alice", signed, EventTime::Signed),
            (signed, Placement::NotCovered)
        );
    }

    #[test]
    fn after_the_last_subscription_ended_or_without_a_customer_nothing_bills() {
        let a = accounts("2026-11-01T00:00:00Z", Some("2026-11-15T00:00:00Z"));
        let late = t("2026-11-16T00:00:00Z");
        assert_eq!(
            a.place("acme:alice", late, EventTime::Billable),
            (late, Placement::NotCovered)
        );
        assert_eq!(
            a.place("stranger", late, EventTime::Billable),
            (late, Placement::NoCustomer)
        );
    }
}
