//! A batch's customers ensured together: each distinct identity once, the
//! cached ones without a call, and the misses concurrently, as many at a
//! time as the provisioner's shared adaptive limit lets run.

use futures::StreamExt;
use hashbrown::HashMap;

use super::{Billable, EnsureError, Provisioner};
use crate::domain::Identity;
use crate::metrics::metrics;

/// What ensure answered for each identity of a batch, by the position it
/// was asked at: each event is hashed once, when its identity is
/// de-duplicated, and read back by position, not looked up by identity a
/// second time.
#[derive(Debug)]
pub(crate) struct Answers {
    /// Each distinct identity's answer, in the order first asked.
    answers: Vec<Result<Billable, EnsureError>>,
    /// Each identity asked, in order: its place in `answers`.
    places: Vec<usize>,
    /// Each distinct identity: where it was first asked.
    first_asked: Vec<usize>,
}

impl Answers {
    /// The answer for the identity asked at `asked` (a position in the
    /// order asked), and its place among the distinct identities.
    pub(crate) fn at(&self, asked: usize) -> (usize, &Result<Billable, EnsureError>) {
        let place = self.places[asked];
        (place, &self.answers[place])
    }

    /// How many distinct identities were asked.
    pub(crate) fn distinct(&self) -> usize {
        self.answers.len()
    }

    /// Each distinct identity ensure refused or could not answer: where it
    /// was first asked, and why.
    pub(crate) fn failures(&self) -> impl Iterator<Item = (usize, &EnsureError)> {
        self.first_asked
            .iter()
            .zip(&self.answers)
            .filter_map(|(&asked, answer)| Some((asked, answer.as_ref().err()?)))
    }
}

impl Provisioner {
    /// One ensure per distinct identity of `identities`: the cache first,
    /// all of them at once; a warm-up when the misses are a backlog of
    /// unknown identities ([`Self::warm_for`]), then the cache again for
    /// them; then the misses left, concurrently.
    pub(crate) async fn ensure_each<'a>(
        &self,
        identities: impl Iterator<Item = &'a Identity>,
    ) -> Answers {
        let Deduplicated {
            distinct,
            places,
            first_asked,
        } = de_duplicate(identities);
        let mut answers: Vec<Option<Result<Billable, EnsureError>>> =
            std::iter::repeat_with(|| None)
                .take(distinct.len())
                .collect();
        let mut misses = self.take_cached(&distinct, (0..distinct.len()).collect(), &mut answers);
        if self.warm_for(misses.iter().map(|&i| distinct[i])).await {
            misses = self.take_cached(&distinct, misses, &mut answers);
        }
        let ensures = misses.into_iter().map(|place| {
            let identity = distinct[place];
            async move {
                let result = self.ensure(identity).await;
                (place, result.map(|ensured| ensured.billable(identity)))
            }
        });
        // The shared limit decides how many of these run.
        let at_once = self.limit.max();
        let mut ensured = futures::stream::iter(ensures).buffer_unordered(at_once);
        while let Some((place, result)) = ensured.next().await {
            answers[place] = Some(result);
        }
        Answers {
            answers: answers
                .into_iter()
                .map(|answer| answer.expect("a cache hit or its ensure answered it"))
                .collect(),
            places,
            first_asked,
        }
    }

    /// Answers each of `places` (in `distinct`) the cache holds, without a
    /// call; returns the others.
    fn take_cached(
        &self,
        distinct: &[&Identity],
        places: Vec<usize>,
        answers: &mut [Option<Result<Billable, EnsureError>>],
    ) -> Vec<usize> {
        let cached = self
            .ensured
            .billable_each(places.iter().map(|&place| distinct[place].billing_key()));
        let mut misses = Vec::new();
        let mut hits = 0;
        for (place, hit) in places.into_iter().zip(cached) {
            match hit {
                Some(billable) => {
                    hits += 1;
                    answers[place] = Some(Ok(billable));
                }
                None => misses.push(place),
            }
        }
        metrics().ensure_cache_hits.inc_by(hits);
        misses
    }
}

/// The identities of a batch, de-duplicated.
struct Deduplicated<'a> {
    /// In the order first asked.
    distinct: Vec<&'a Identity>,
    /// Each identity asked: its place in `distinct`.
    places: Vec<usize>,
    /// Each of `distinct`: where it was first asked.
    first_asked: Vec<usize>,
}

/// Hashes each identity once. hashbrown's default hasher (foldhash, seeded
/// per process) rather than SipHash: every event of a batch comes here.
fn de_duplicate<'a>(identities: impl Iterator<Item = &'a Identity>) -> Deduplicated<'a> {
    let mut seen: HashMap<&Identity, usize> = HashMap::new();
    let (mut distinct, mut first_asked) = (Vec::new(), Vec::new());
    let places = identities
        .enumerate()
        .map(|(asked, identity)| {
            *seen.entry(identity).or_insert_with(|| {
                distinct.push(identity);
                first_asked.push(asked);
                distinct.len() - 1
            })
        })
        .collect();
    Deduplicated {
        distinct,
        places,
        first_asked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_de_duplicated_in_the_order_first_asked() {
        let (a, b) = (
            Identity::of_auth_id("acme:alice"),
            Identity::of_auth_id("acme:bob"),
        );
        let asked = [&a, &b, &a, &a, &b];
        let Deduplicated {
            distinct,
            places,
            first_asked,
        } = de_duplicate(asked.into_iter());
        assert_eq!(distinct, [&a, &b]);
        assert_eq!(places, [0, 1, 0, 0, 1]);
        assert_eq!(first_asked, [0, 1]);
    }

    #[test]
    fn each_event_reads_its_identitys_answer_and_each_failure_is_named_once() {
        let refused = || EnsureError::NoSubscribablePlan("p".parse().unwrap());
        let now = chrono::Utc::now();
        let terms = crate::billing::BillingTerms {
            active_from: now,
            active_to: None,
            anchor: now,
            cadence: None,
        };
        let answers = Answers {
            answers: vec![Err(refused()), Ok(Billable::new(terms, None))],
            places: vec![0, 1, 0],
            first_asked: vec![0, 1],
        };
        assert_eq!(answers.distinct(), 2);
        assert!(matches!(answers.at(2), (0, Err(_))));
        assert!(matches!(answers.at(1), (1, Ok(_))));
        let failures: Vec<usize> = answers.failures().map(|(asked, _)| asked).collect();
        assert_eq!(failures, [0]);
    }
}
