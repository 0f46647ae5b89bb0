//! The totals mode: prove a range by OpenMeter's own meter totals, and read
//! events only where they differ.
//!
//! 1. Every customer and subscription is read once ([`Accounts`]; the
//!    continuous audit reuses them for six hours), and the dead letters of
//!    the range.
//! 2. The source is streamed once: each signed ticket is placed where the
//!    collector sent it (its signed time, or its subscription's start when
//!    it was signed before it: `billing`'s rule) and added to its
//!    customer's calendar-month [`Tally`]: count, µUSD as sent, id
//!    fingerprints. Memory: customers × months.
//! 3. The meters are queried grouped by subject in `P1M` windows over the
//!    range (one query per meter), and each month whose totals do not
//!    prove it ([`totals::proves`]) is descended: a second, narrow read of
//!    the source tallies those customers' days, hours and minutes; the
//!    meters are queried for those windows only (at most 100 subjects a
//!    query), day → hour → minute.
//! 4. In each minute that still differs, the events are matched one by one
//!    as the event-by-event mode matches them: the source's (a third read,
//!    of those minutes only) against the stored ones listed by subject and
//!    time, then by id where a copy was not found there. What is named
//!    missing, unbillable (mis-attributed included), duplicated or
//!    unexpected is named exactly as in the event-by-event mode.
//!
//! Events are selected by signed time in whole seconds and placed by the
//! time they were sent; events signed after `now − settle` are in flight
//! and not audited; an event sent after the range (its subscription began
//! later) is looked up by id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{SubsecRound, Utc};
use futures::StreamExt;

use super::accounts::{Accounts, Placement};
use super::config::Audit;
use super::error::AuditError;
use super::findings::Findings;
use super::ledger::{Entry, Interner, Ledger, Sums};
use super::range::to_delta;
use super::range::{rfc3339, TimeRange};
use super::report::{Level, Proof, Report};
use super::totals::{Cell, Ledgers, Measure, Reading, Tally};
use super::windows::{at, second_of, Grain};
use super::{original, record, signed_time};
use crate::contract::IdScheme;
use crate::decode::BILLABLE_TYPE;
use crate::map::Mapped;
use crate::openmeter::model::{
    AnyOf, IngestedEvent, MeterQuery, MeterQueryFilters, MeterQueryRow, SubjectFilter,
};
use crate::openmeter::{ApiError, EventQuery};

/// Meter queries (and event listings) in flight at once.
const CONCURRENCY: usize = 8;
/// `subject` filters take at most 100 values (`query/params.go`).
const SUBJECTS_PER_QUERY: usize = 100;

/// What became of a signed ticket in the totals.
enum Fate {
    /// Dead-lettered: matched one by one.
    Letter,
    /// Signed after the settled end of the range.
    InFlight,
    /// Sent after the range: looked up by id.
    Out,
    /// In a window of its subject.
    Window {
        subject: u32,
        sent: i64,
        unsure: bool,
    },
}

impl Fate {
    fn index(&self) -> usize {
        match self {
            Fate::Letter => 0,
            Fate::InFlight => 1,
            Fate::Out => 2,
            Fate::Window { .. } => 3,
        }
    }
}

/// What the passes over the source share.
struct Scope<'a> {
    /// Whole seconds, ending no later than `now − settle`.
    range: TimeRange,
    /// The signed times read: from `range`'s start to the requested end
    /// (what `range` leaves out of that is in flight).
    read: TimeRange,
    accounts: &'a Accounts,
    /// Ids the dead letters name.
    letters: &'a HashSet<String>,
}

/// The meters compared, each with its id, and why the fingerprints are not
/// (when not).
struct Meters {
    compared: Vec<(Measure, String)>,
    without_fingerprints: Option<String>,
}

impl Meters {
    fn fingerprints(&self) -> bool {
        self.compared
            .iter()
            .any(|(m, _)| *m == Measure::Fingerprints)
    }
}

impl Audit {
    /// The totals mode (see the module's doc).
    pub(super) async fn run_totals(&self) -> Result<(Report, Findings), AuditError> {
        let mut findings = self.findings();
        let started = std::time::Instant::now();
        let accounts = match &self.accounts {
            Some(accounts) => accounts.clone(),
            None => Arc::new(Accounts::load(&self.client, None).await?),
        };
        for (id, terms) in accounts.terms() {
            findings.terms.insert(id.to_owned(), terms.clone());
        }
        let mut letters = self.letters_by_id().await?;
        let letter_ids: HashSet<String> = letters.keys().cloned().collect();
        let range = self.settled_range();
        let scope = Scope {
            range,
            read: TimeRange {
                from: range.from,
                to: self.config.range.to,
            },
            accounts: &accounts,
            letters: &letter_ids,
        };
        let meters = self.meters().await?;
        let top = [Ask {
            from: second_of(range.from),
            to: second_of(range.to),
            subjects: None,
        }];
        // The month totals are asked for while the source is read.
        let (read, month_rows) = tokio::join!(
            self.first_pass(
                &scope,
                &mut findings.ledger,
                &mut findings.gaps,
                &mut letters
            ),
            self.fetch_meters(Grain::Month, &top, &meters),
        );
        let (months, sums) = read?;
        for (id, found) in letters {
            for (customer, reason) in found {
                findings.ledger.dead_letter(&id, &customer, reason);
            }
        }
        tracing::debug!(months = months.len(), elapsed = ?started.elapsed(), "audit: source totals");
        let strangers: HashSet<u32> = months
            .keys()
            .map(|c| c.subject)
            .filter(|&s| accounts.of(findings.ledger.customers.get(s)).is_none())
            .collect();
        let mut levels = BTreeMap::from([(Grain::Month, Ledgers::from(months))]);
        let (leaf, windows) = self
            .descend(
                &scope,
                &meters,
                month_rows?,
                &mut levels,
                &mut findings.ledger,
            )
            .await?;
        tracing::debug!(leaf = leaf.len(), elapsed = ?started.elapsed(), "audit: totals compared");
        if leaf.is_empty() {
            findings.ledger.proven = sums;
        } else {
            self.leaf_pass(&scope, &leaf, &mut findings.ledger).await?;
            self.match_leaf(&scope, &leaf, &mut findings).await?;
        }
        self.refresh_unbilled(&mut findings).await?;
        tracing::debug!(elapsed = ?started.elapsed(), "audit: events matched");
        let mut proven = proof(&findings, &meters, windows);
        proven.subjects_without_customer = strangers.len() as u64;
        findings.proof = Some(proven);
        Ok((self.report(&findings), findings))
    }

    /// The range's dead letters, by the id they name: customer and reason.
    async fn letters_by_id(&self) -> Result<HashMap<String, Vec<(String, String)>>, AuditError> {
        let mut letters: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for (id, customer, reason) in self.read_dead_letters().await? {
            letters.entry(id).or_default().push((customer, reason));
        }
        Ok(letters)
    }

    /// The meters to compare, by id: count and µUSD, which the audit cannot
    /// do without, and the fingerprints unless turned off or absent.
    async fn meters(&self) -> Result<Meters, AuditError> {
        let mut ids = self.client.meter_ids().await?;
        let mut meters = Meters {
            compared: Vec::new(),
            without_fingerprints: None,
        };
        for measure in [Measure::Count, Measure::Micros, Measure::Fingerprints] {
            let id = ids.remove(measure.meter());
            if measure != Measure::Fingerprints {
                let id = id.ok_or(AuditError::NoMeter(measure.meter()))?;
                meters.compared.push((measure, id));
            } else if !self.config.fingerprints {
                meters.without_fingerprints = Some("turned off (--no-fingerprints)".to_owned());
            } else if let Some(id) = id {
                meters.compared.push((measure, id));
            } else {
                meters.without_fingerprints = Some(format!(
                    "OpenMeter has no {} meter (upstream's catalog has none; \
                     `ticketmeter bootstrap` creates it)",
                    measure.meter()
                ));
            }
        }
        Ok(meters)
    }

    /// The range in whole seconds (as the meter query reads it): from the
    /// second `from` falls in to the first whole second at or after its end
    /// or the settle time before now, whichever is earlier. What the source
    /// holds beyond the requested end is not read; what the meters hold of
    /// it is listed and left out where its window differs.
    fn settled_range(&self) -> TimeRange {
        let settled = Utc::now() - to_delta(self.config.settle);
        let range = self.config.range;
        let end = range.to.min(settled);
        let whole = end.trunc_subsecs(0);
        TimeRange {
            from: range.from.trunc_subsecs(0),
            to: if whole < end {
                whole + chrono::TimeDelta::seconds(1)
            } else {
                whole
            },
        }
    }

    /// What becomes of a signed ticket: the one rule every pass applies.
    fn fate(&self, scope: &Scope<'_>, subjects: &mut Interner<Box<str>>, mapped: &Mapped) -> Fate {
        if scope.letters.contains(&mapped.event.id) {
            return Fate::Letter;
        }
        if mapped.signed_at >= scope.range.to {
            return Fate::InFlight;
        }
        let (sent, placement) = scope.accounts.place(
            mapped.event.subject(),
            mapped.signed_at,
            self.config.event_time,
        );
        if sent >= scope.range.to {
            return Fate::Out;
        }
        Fate::Window {
            subject: subjects.intern_str(mapped.event.subject()),
            sent: second_of(sent),
            unsure: placement != Placement::Billed,
        }
    }

    /// Every signed ticket of the range, read once: month tallies, and the
    /// sums per customer; dead-lettered tickets, and those sent after the
    /// range, become ledger entries.
    async fn first_pass(
        &self,
        scope: &Scope<'_>,
        ledger: &mut Ledger,
        gaps: &mut super::gaps::AuditGaps,
        letters: &mut HashMap<String, Vec<(String, String)>>,
    ) -> Result<(HashMap<Cell, Tally>, HashMap<u32, Sums>), AuditError> {
        let mut months: HashMap<Cell, Tally> = HashMap::new();
        let mut sums: HashMap<u32, Sums> = HashMap::new();
        let mut fates = [0u64; 4];
        let ids = self.config.contract.ids;
        let read = self
            .each_signed(&scope.read, "signed events", Some(gaps), |mapped, entry| {
                let fee_wei = entry.fee_wei;
                let micros = entry.usd_micros;
                let fate = self.fate(scope, &mut ledger.customers, &mapped);
                fates[fate.index()] += 1;
                match fate {
                    Fate::Letter => {
                        let id = mapped.event.id.clone();
                        sign(ledger, &mapped, entry, ids);
                        for (customer, reason) in letters.remove(&id).unwrap_or_default() {
                            ledger.dead_letter(&id, &customer, reason);
                        }
                    }
                    Fate::InFlight => {
                        let subject = ledger.customers.intern_str(mapped.event.subject());
                        ledger
                            .in_flight
                            .entry(subject)
                            .or_default()
                            .add(fee_wei, micros);
                    }
                    Fate::Out => sign(ledger, &mapped, entry, ids),
                    Fate::Window {
                        subject,
                        sent,
                        unsure,
                    } => {
                        let data = &mapped.event.data;
                        months
                            .entry(Cell::at(subject, Grain::Month, sent))
                            .or_default()
                            .add(data.billable_usd_micros, data.id_fingerprint, unsure);
                        sums.entry(subject).or_default().add(fee_wei, micros);
                    }
                }
            })
            .await?;
        ledger.records_read = read;
        let [letters, in_flight, out, windowed] = fates;
        tracing::debug!(
            read,
            letters,
            in_flight,
            out,
            windowed,
            "audit: signed tickets placed"
        );
        Ok((months, sums))
    }

    /// Compares each grain's totals, coarsest first, querying the meters
    /// only for the windows whose parents differed; returns the minutes
    /// that still differ and what each grain took.
    async fn descend(
        &self,
        scope: &Scope<'_>,
        meters: &Meters,
        month_rows: (Fetched, u64),
        levels: &mut BTreeMap<Grain, Ledgers>,
        ledger: &mut Ledger,
    ) -> Result<(HashSet<Cell>, Vec<Level>), AuditError> {
        let (from, to) = (second_of(scope.range.from), second_of(scope.range.to));
        let mut fetched = month_rows;
        let mut parents: Option<HashSet<Cell>> = None;
        let mut windows = Vec::new();
        let mut grain = Grain::Month;
        loop {
            let level = levels.entry(grain).or_default();
            let (rows, queries) = fetched;
            record_rows(grain, rows, &mut ledger.customers, &mut level.readings)?;
            let compared = compared(level, grain, parents.as_ref());
            let differing: HashSet<Cell> = level
                .differing(meters.fingerprints())
                .into_iter()
                .filter(|c| in_parents(c, grain, parents.as_ref()))
                .collect();
            windows.push(Level {
                window: grain.name(),
                compared,
                differing: differing.len() as u64,
                queries,
            });
            let Some(finer) = grain.finer() else {
                return Ok((differing, windows));
            };
            if differing.is_empty() {
                return Ok((differing, windows));
            }
            if grain == Grain::Month {
                self.finer_pass(scope, &differing, levels, ledger).await?;
            }
            let asks = asks_for(&differing, from, to, &ledger.customers);
            fetched = self.fetch_meters(finer, &asks, meters).await?;
            parents = Some(differing);
            grain = finer;
        }
    }

    /// The second, narrow read: the days, hours and minutes of the months
    /// that differ.
    async fn finer_pass(
        &self,
        scope: &Scope<'_>,
        months: &HashSet<Cell>,
        levels: &mut BTreeMap<Grain, Ledgers>,
        ledger: &mut Ledger,
    ) -> Result<(), AuditError> {
        let mut finer: [HashMap<Cell, Tally>; 3] = Default::default();
        self.each_signed(&scope.read, "differing months", None, |mapped, _| {
            let Fate::Window {
                subject,
                sent,
                unsure,
            } = self.fate(scope, &mut ledger.customers, &mapped)
            else {
                return;
            };
            if !months.contains(&Cell::at(subject, Grain::Month, sent)) {
                return;
            }
            let data = &mapped.event.data;
            for (tallies, grain) in finer
                .iter_mut()
                .zip([Grain::Day, Grain::Hour, Grain::Minute])
            {
                tallies
                    .entry(Cell::at(subject, grain, sent))
                    .or_default()
                    .add(data.billable_usd_micros, data.id_fingerprint, unsure);
            }
        })
        .await?;
        for (tallies, grain) in finer
            .into_iter()
            .zip([Grain::Day, Grain::Hour, Grain::Minute])
        {
            levels.entry(grain).or_default().tallies = tallies;
        }
        Ok(())
    }

    /// Each measure's rows for `asks` at `grain`, and the queries made.
    async fn fetch_meters(
        &self,
        grain: Grain,
        asks: &[Ask],
        meters: &Meters,
    ) -> Result<(Fetched, u64), AuditError> {
        let jobs: Vec<(Measure, &str, &Ask)> = asks
            .iter()
            .flat_map(|ask| {
                meters
                    .compared
                    .iter()
                    .map(move |(m, id)| (*m, id.as_str(), ask))
            })
            .collect();
        let queries = jobs.len() as u64;
        let asked: Vec<_> = jobs
            .into_iter()
            .map(|(measure, id, ask)| self.query_one(grain, measure, id, ask))
            .collect();
        let mut answers = futures::stream::iter(asked).buffer_unordered(CONCURRENCY);
        let mut fetched = Vec::new();
        while let Some((measure, answer)) = answers.next().await {
            fetched.push((measure, answer?));
        }
        Ok((fetched, queries))
    }

    /// One meter's rows for one [`Ask`].
    async fn query_one(
        &self,
        grain: Grain,
        measure: Measure,
        meter_id: &str,
        ask: &Ask,
    ) -> (Measure, Result<Vec<MeterQueryRow>, ApiError>) {
        let names: Vec<&str> = ask.subjects.iter().flatten().map(|s| &**s).collect();
        let query = MeterQuery {
            from: rfc3339(at(ask.from)),
            to: rfc3339(at(ask.to)),
            granularity: grain.granularity(),
            group_by_dimensions: ["subject"],
            filters: ask.subjects.as_ref().map(|_| MeterQueryFilters {
                dimensions: SubjectFilter {
                    subject: AnyOf { any_of: &names },
                },
            }),
        };
        (measure, self.client.query_meter(meter_id, &query).await)
    }

    /// Every stored event `query` lists, and the pages it took.
    async fn list_all(&self, query: &EventQuery) -> Result<(Vec<IngestedEvent>, u64), AuditError> {
        let (mut events, mut pages) = (Vec::new(), 0u64);
        let mut cursor = self.client.event_pages(query);
        while let Some(page) = cursor.next().await? {
            pages += 1;
            events.extend(page);
        }
        Ok((events, pages))
    }

    /// The third read: the tickets of the minutes that differ become ledger
    /// entries; every other ticket's sums are proven.
    async fn leaf_pass(
        &self,
        scope: &Scope<'_>,
        leaf: &HashSet<Cell>,
        ledger: &mut Ledger,
    ) -> Result<(), AuditError> {
        let mut proven: HashMap<u32, Sums> = HashMap::new();
        let ids = self.config.contract.ids;
        self.each_signed(&scope.read, "differing minutes", None, |mapped, entry| {
            let Fate::Window { subject, sent, .. } =
                self.fate(scope, &mut ledger.customers, &mapped)
            else {
                return;
            };
            if leaf.contains(&Cell::at(subject, Grain::Minute, sent)) {
                sign(ledger, &mapped, entry, ids);
            } else {
                proven
                    .entry(subject)
                    .or_default()
                    .add(entry.fee_wei, entry.usd_micros);
            }
        })
        .await?;
        ledger.proven = proven;
        Ok(())
    }

    /// Lists the stored events of each differing minute (any source: the
    /// meters count them all) and matches them.
    async fn match_leaf(
        &self,
        scope: &Scope<'_>,
        leaf: &HashSet<Cell>,
        findings: &mut Findings,
    ) -> Result<(), AuditError> {
        let (from, to) = (second_of(scope.range.from), second_of(scope.range.to));
        let mut cells: Vec<Cell> = leaf.iter().copied().collect();
        cells.sort_unstable();
        let queries: Vec<EventQuery> = cells
            .iter()
            .map(|c| EventQuery {
                kind: Some(BILLABLE_TYPE.to_owned()),
                subject: Some(findings.ledger.customers.get(c.subject).to_string()),
                time_from: Some(rfc3339(at(c.start.max(from)))),
                time_before: Some(rfc3339(at(c.end().min(to)))),
                ..EventQuery::default()
            })
            .collect();
        let listings: Vec<_> = queries.iter().map(|q| self.list_all(q)).collect();
        let mut listed = futures::stream::iter(listings).buffer_unordered(CONCURRENCY);
        let mut stored: Vec<IngestedEvent> = Vec::new();
        while let Some(answer) = listed.next().await {
            let (events, pages) = answer?;
            findings.pages += pages;
            stored.extend(events);
        }
        drop(listed);
        for event in stored {
            if !signed_time(&event).is_some_and(|t| scope.range.contains(t)) {
                continue;
            }
            let key = findings.ledger.resolve(original(&event).0);
            let found = self.judge(&mut findings.terms, key, event).await?;
            record(&mut findings.ledger, &found);
        }
        Ok(())
    }
}

/// Meter rows as answered, by measure.
type Fetched = Vec<(Measure, Vec<MeterQueryRow>)>;

/// Adds `rows` (of windows of `grain`) to `readings`.
fn record_rows(
    grain: Grain,
    rows: Fetched,
    subjects: &mut Interner<Box<str>>,
    readings: &mut HashMap<Cell, Reading>,
) -> Result<(), AuditError> {
    for (measure, rows) in rows {
        for row in rows {
            let Some(subject) = &row.dimensions.subject else {
                continue;
            };
            let value = row.value.trim().parse().map_err(|_| AuditError::Meter {
                meter: measure.meter(),
                value: row.value.clone(),
            })?;
            let cell = Cell {
                subject: subjects.intern_str(subject),
                grain,
                start: row.from.timestamp(),
            };
            readings.entry(cell).or_default().set(measure, value);
        }
    }
    Ok(())
}

/// One meter query's windows and subjects (`None`: every subject).
struct Ask {
    from: i64,
    to: i64,
    subjects: Option<Vec<Box<str>>>,
}

/// The queries for the children of `cells`: one per window and hundred
/// subjects, clipped to the range.
fn asks_for(cells: &HashSet<Cell>, from: i64, to: i64, subjects: &Interner<Box<str>>) -> Vec<Ask> {
    let mut by_window: BTreeMap<(i64, i64), Vec<u32>> = BTreeMap::new();
    for c in cells {
        let window = (c.start.max(from), c.end().min(to));
        by_window.entry(window).or_default().push(c.subject);
    }
    let mut asks = Vec::new();
    for ((from, to), mut ids) in by_window {
        ids.sort_unstable();
        for chunk in ids.chunks(SUBJECTS_PER_QUERY) {
            asks.push(Ask {
                from,
                to,
                subjects: Some(chunk.iter().map(|&i| subjects.get(i).clone()).collect()),
            });
        }
    }
    asks
}

/// Whether `cell` lies in a window that differed at the coarser grain.
fn in_parents(cell: &Cell, grain: Grain, parents: Option<&HashSet<Cell>>) -> bool {
    let Some(parents) = parents else {
        return true;
    };
    let coarser = Grain::ALL
        .iter()
        .rev()
        .skip_while(|g| **g != grain)
        .nth(1)
        .copied()
        .unwrap_or(Grain::Month);
    parents.contains(&Cell::at(cell.subject, coarser, cell.start))
}

/// The windows of a grain compared: every window with a tally or a
/// reading, inside a differing parent.
fn compared(level: &Ledgers, grain: Grain, parents: Option<&HashSet<Cell>>) -> u64 {
    let keys: HashSet<&Cell> = level.tallies.keys().chain(level.readings.keys()).collect();
    keys.into_iter()
        .filter(|c| in_parents(c, grain, parents))
        .count() as u64
}

/// A ticket matched one by one.
fn sign(ledger: &mut Ledger, mapped: &Mapped, entry: Entry, ids: IdScheme) {
    ledger.sign(
        &mapped.event.id,
        mapped.other_id(ids),
        mapped.event.subject(),
        entry,
    );
}

fn proof(findings: &Findings, meters: &Meters, windows: Vec<Level>) -> Proof {
    let events_proven: u64 = findings.ledger.proven.values().map(|s| s.events).sum();
    let proven_windows: u64 = windows.iter().map(|l| l.compared - l.differing).sum();
    let residual_risk = match &meters.without_fingerprints {
        None => format!(
            "a lost ticket and another stored twice in one of the {proven_windows} windows proven \
             by their totals cancel out only when their id fingerprints are equal: one chance in \
             2^32 (4.3 billion) per such pair"
        ),
        Some(why) => format!(
            "fingerprints not compared ({why}): in the {proven_windows} windows proven by count \
             and µUSD only ({events_proven} tickets), a lost ticket and another stored twice with \
             the same fee would cancel out unseen"
        ),
    };
    Proof {
        meters: meters.compared.iter().map(|(m, _)| m.meter()).collect(),
        windows,
        events_proven,
        events_matched: findings.ledger.entries.len() as u64,
        event_pages: findings.pages,
        subjects_without_customer: 0,
        residual_risk,
    }
}
