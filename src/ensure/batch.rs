//! A batch's customers ensured together: each distinct identity once, the
//! cached ones without a call, and the misses concurrently, as many at a
//! time as the provisioner's shared adaptive limit lets run.

use futures::StreamExt;
use hashbrown::{HashMap, HashSet};

use super::{Billable, EnsureError, Provisioner};
use crate::domain::Identity;

/// What ensure answered for each distinct identity of a batch. hashbrown's
/// default hasher (foldhash, seeded per process) instead of SipHash: every
/// event of a batch is looked up here.
pub(crate) type Answers = HashMap<Identity, Result<Billable, EnsureError>>;

impl Provisioner {
    /// One ensure per distinct identity of `identities`: a warm-up first
    /// when they hold a backlog of unknown ones ([`Self::warm_for`]), then
    /// the cache, then the misses concurrently.
    pub(crate) async fn ensure_each<'a>(
        &self,
        identities: impl Iterator<Item = &'a Identity>,
    ) -> Answers {
        // De-duplicate by reference first: only distinct identities are cloned.
        let distinct: HashSet<&Identity> = identities.collect();
        self.warm_for(distinct.iter().copied()).await;
        let mut answers = HashMap::with_capacity(distinct.len());
        let mut misses = Vec::new();
        for identity in distinct {
            match self.cached_billable(identity) {
                Some(hit) => {
                    answers.insert(identity.clone(), Ok(hit));
                }
                None => misses.push(identity.clone()),
            }
        }
        let ensures = misses.into_iter().map(|identity| async move {
            let result = self.ensure(&identity).await;
            let billable = result.map(|ensured| ensured.billable(&identity));
            (identity, billable)
        });
        // The shared limit decides how many of these run.
        let at_once = self.limit.max();
        let mut ensured = futures::stream::iter(ensures).buffer_unordered(at_once);
        while let Some((identity, result)) = ensured.next().await {
            answers.insert(identity, result);
        }
        answers
    }
}
