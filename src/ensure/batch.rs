//! A batch's customers ensured together: each distinct identity once, the
//! cached ones without a call, and the misses concurrently, as many at a
//! time as the provisioner's shared adaptive limit lets run.

use futures::StreamExt;
use hashbrown::{HashMap, HashSet};

use super::{Billable, EnsureError, Provisioner};
use crate::domain::Identity;
use crate::metrics::metrics;

/// What ensure answered for each distinct identity of a batch. hashbrown's
/// default hasher (foldhash, seeded per process) instead of SipHash: every
/// event of a batch is looked up here.
pub(crate) type Answers = HashMap<Identity, Result<Billable, EnsureError>>;

impl Provisioner {
    /// One ensure per distinct identity of `identities`: the cache first,
    /// all of them at once; a warm-up when the misses are a backlog of
    /// unknown identities ([`Self::warm_for`]), then the cache again for
    /// them; then the misses left, concurrently.
    pub(crate) async fn ensure_each<'a>(
        &self,
        identities: impl Iterator<Item = &'a Identity>,
    ) -> Answers {
        // De-duplicate by reference first: only distinct identities are cloned.
        let distinct: Vec<&Identity> = identities.collect::<HashSet<_>>().into_iter().collect();
        let mut answers = HashMap::with_capacity(distinct.len());
        let mut misses = self.take_cached(distinct, &mut answers);
        if self.warm_for(misses.iter().copied()).await {
            misses = self.take_cached(misses, &mut answers);
        }
        let misses: Vec<Identity> = misses.into_iter().cloned().collect();
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

    /// Answers each of `identities` the cache holds, without a call;
    /// returns the others.
    fn take_cached<'a>(
        &self,
        identities: Vec<&'a Identity>,
        answers: &mut Answers,
    ) -> Vec<&'a Identity> {
        let cached = self
            .ensured
            .billable_each(identities.iter().map(|identity| identity.billing_key()));
        let mut misses = Vec::new();
        let mut hits = 0;
        for (identity, hit) in identities.into_iter().zip(cached) {
            match hit {
                Some(billable) => {
                    hits += 1;
                    answers.insert(identity.clone(), Ok(billable));
                }
                None => misses.push(identity),
            }
        }
        metrics().ensure_cache_hits.inc_by(hits);
        misses
    }
}
