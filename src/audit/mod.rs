//! `ticketmeter audit`: was every ticket the signer signed billed, once, to
//! the right customer?
//!
//! A 202 from ingest only means "queued". The audit re-reads the source
//! range, decodes and maps each record exactly as the pipeline does
//! ([`crate::decode::decode`], [`crate::map::map`]), reads back what
//! OpenMeter stored for the same range, and classifies every signed event:
//! stored and billable, stored but not billable ([`billing`]), dead-lettered
//! (with the reason), in flight (younger than the settle time) or missing.
//! Events are selected by their signed time (`data.current_time`) and
//! matched by CloudEvent id; a stored event sent under a later `time` keeps
//! its signed time in `data.signed_at`, and a repair copy names the event it
//! stands in for in `data.original_id`.
//!
//! Two modes ([`Mode`]). By default ([`descent`]) the audit compares totals
//! first: per customer and calendar month, the source's count, µUSD and id
//! fingerprints against OpenMeter's meters, and reads events only in the
//! windows that differ, descending day → hour → minute → events; memory
//! and calls grow with customers and windows, not with events. The
//! event-by-event mode reads back every stored event of the range and keeps
//! a compact [`ledger::Ledger`] entry per signed event. Either way the
//! events it does match one by one are matched and judged by the same code.

pub(crate) mod accounts;
mod config;
pub(crate) mod continuous;
mod descent;
mod error;
mod findings;
pub(crate) mod gaps;
pub(crate) mod ledger;
pub(crate) mod range;
mod repair;
pub(crate) mod report;
pub(crate) mod source;
pub(crate) mod totals;
pub(crate) mod verdict;
pub(crate) mod windows;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use crate::billing::BillingTerms;
use crate::contract::Contract;
use crate::decode::{claimed_time, decode, event_id, request_id, Decoded, Scalar, BILLABLE_TYPE};
use crate::dlq::Letter;
use crate::domain::{Identity, IdentityClaim, UsdMicros};
use crate::encoding::parse_rfc3339;
use crate::map::{map, Mapped, SOURCE};
use crate::openmeter::model::IngestedEvent;
use crate::openmeter::EventQuery;
use ledger::{Entry, Ledger, StoredCopy};
use range::{rfc3339, to_delta, TimeRange};
use report::{Notes, Report};
use source::{KafkaWindow, RawRecord, SourceSpec, KAFKA_SKEW};
use verdict::{UnbillableKind, MISATTRIBUTED};

pub(crate) use config::{Audit, AuditConfig, Mode};
pub(crate) use error::AuditError;
use findings::{Findings, Found};
pub(crate) use repair::{derived_id, RepairMode};

/// Ids per by-id lookup (each also asks for its derived id).
const LOOKUP_CHUNK: usize = 40;
/// Records a decoder takes at once.
const DECODE_BATCH: usize = 256;
/// Placeholder customer of a dead letter without a readable `auth_id`.
pub(crate) const NO_IDENTITY: &str = "(no identity)";

impl Audit {
    /// Runs the audit; the report says what it found.
    pub(crate) async fn run(&self) -> Result<(Report, Findings), AuditError> {
        match self.config.mode {
            Mode::Totals => self.run_totals().await,
            Mode::Events => self.run_events().await,
        }
    }

    fn findings(&self) -> Findings {
        Findings {
            ledger: Ledger::default(),
            gaps: gaps::AuditGaps::new(&self.config),
            terms: HashMap::new(),
            notes: Notes {
                source: self.source.describe(),
                dead_letters: self
                    .dead_letters
                    .as_ref()
                    .map_or("none".to_owned(), SourceSpec::describe),
                settle: humantime::format_duration(self.config.settle).to_string(),
                price: self.price.to_string(),
                ..Notes::default()
            },
            proof: None,
            pages: 0,
        }
    }

    /// Every stored event of the range read back and matched.
    async fn run_events(&self) -> Result<(Report, Findings), AuditError> {
        let mut findings = self.findings();
        let started = std::time::Instant::now();
        self.read_signed(&mut findings.ledger, &mut findings.gaps)
            .await?;
        let signed = findings.ledger.entries.len();
        tracing::debug!(signed, elapsed = ?started.elapsed(), "audit: source read");
        for (id, customer, reason) in self.read_dead_letters().await? {
            findings.ledger.dead_letter(&id, &customer, reason);
        }
        tracing::debug!(letters = findings.ledger.letters.len(), elapsed = ?started.elapsed(), "audit: dead letters read");
        self.scan_stored(&mut findings).await?;
        tracing::debug!(customers = findings.terms.len(), elapsed = ?started.elapsed(), "audit: stored events read");
        self.refresh_unbilled(&mut findings).await?;
        tracing::debug!(elapsed = ?started.elapsed(), "audit: looked up by id");
        Ok((self.report(&findings), findings))
    }

    /// Looks up by id every signed event with no billable copy found yet.
    async fn refresh_unbilled(&self, findings: &mut Findings) -> Result<(), AuditError> {
        let pending: Vec<String> = findings
            .ledger
            .entries
            .iter()
            .filter(|(_, e)| e.billable_copies == 0)
            .map(|(id, _)| id.to_string())
            .collect();
        self.refresh(findings, &pending).await?;
        Ok(())
    }

    /// The report of `findings` as they stand now.
    pub(crate) fn report(&self, findings: &Findings) -> Report {
        let settled_before = Utc::now() - to_delta(self.config.settle);
        let settled_before_ns = settled_before.timestamp_nanos_opt().unwrap_or(i64::MAX);
        let mut report = Report::build(
            &findings.ledger,
            &self.price,
            self.config.range,
            settled_before_ns,
            findings.notes.clone(),
        );
        report.chain = (findings.gaps).report(self.config.range, settled_before_ns, &self.price);
        report.proof.clone_from(&findings.proof);
        report
    }

    fn progress(&self, what: &str) -> ProgressBar {
        let visible = self.config.progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = ProgressBar::with_draw_target(
            None,
            if visible {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        let style = ProgressStyle::with_template("{msg:>24} {wide_bar} {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(what.to_owned());
        bar
    }

    fn kafka_window(&self, stop: bool) -> KafkaWindow {
        let skew = to_delta(KAFKA_SKEW);
        KafkaWindow {
            start_ms: (self.config.range.from - skew).timestamp_millis(),
            stop_after_ms: stop.then(|| (self.config.range.to + skew).timestamp_millis()),
        }
    }

    /// Streams `spec` through `each`, in order; bounded by the channel.
    async fn each_record(
        &self,
        spec: &SourceSpec,
        stop: bool,
        optional: bool,
        what: &str,
        mut each: impl FnMut(RawRecord),
    ) -> Result<u64, AuditError> {
        let (tx, mut rx) = mpsc::channel(1024);
        let progress = self.progress(what);
        let reading = source::stream(
            spec,
            self.kafka_window(stop),
            optional,
            tx,
            progress.clone(),
        );
        let consuming = async {
            while let Some(record) = rx.recv().await {
                each(record);
            }
        };
        let (read, ()) = tokio::join!(reading, consuming);
        progress.finish_and_clear();
        read
    }

    /// Decodes and maps a record as the pipeline does; `Some` for a ticket
    /// signed inside `range`.
    fn signed(&self, payload: &[u8], range: &TimeRange) -> Option<(Mapped, Entry)> {
        let contract = &self.config.contract;
        let Ok(Decoded::Ticket(ticket)) = decode(payload, self.config.max_event_bytes, contract)
        else {
            return None;
        };
        let signed = parse_rfc3339(&ticket.time)?;
        if !range.contains(signed) {
            return None;
        }
        let fee_wei = ticket.fee.get();
        let mapped = map(*ticket, &self.price, contract);
        let entry = Entry {
            customer: 0,
            signed_ns: signed.timestamp_nanos_opt().unwrap_or_default(),
            fee_wei,
            usd_micros: mapped.event.data.network_fee_usd_micros,
            stored_fee_wei: 0,
            stored_usd_micros: UsdMicros::ZERO,
            copies: 0,
            billable_copies: 0,
            unbillable: None,
            dead_letter: None,
        };
        Some((mapped, entry))
    }

    /// Every signed ticket of the source range, decoded and mapped as the
    /// pipeline does. Each pass over the source reads its records here and
    /// nowhere else; the first pass of a mode (`read_signed`, `descent`'s
    /// totals) sees every record once. Records are decoded on every core,
    /// in batches, and handed to `each` on this task, in no particular
    /// order. With `gaps`, every record is also shown to the session
    /// chains, in the source's order, before it is decoded. Returns the
    /// records read.
    async fn each_signed(
        &self,
        range: &TimeRange,
        what: &str,
        gaps: Option<&mut gaps::AuditGaps>,
        mut each: impl FnMut(Mapped, Entry),
    ) -> Result<u64, AuditError> {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
        let (records, queue) = mpsc::channel::<RawRecord>(4 * DECODE_BATCH);
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let (decoded, mut signed) = mpsc::channel::<Vec<(Mapped, Entry)>>(4 * workers);
        let (audit, range) = (Arc::new(self.clone()), *range);
        let mut decoders = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let (queue, decoded, audit) = (queue.clone(), decoded.clone(), audit.clone());
            decoders.spawn(async move {
                let mut batch = Vec::with_capacity(DECODE_BATCH);
                loop {
                    batch.clear();
                    if queue.lock().await.recv_many(&mut batch, DECODE_BATCH).await == 0 {
                        return;
                    }
                    let tickets: Vec<(Mapped, Entry)> = batch
                        .iter()
                        .filter_map(|r| audit.signed(&r.payload, &range))
                        .collect();
                    if !tickets.is_empty() && decoded.send(tickets).await.is_err() {
                        return;
                    }
                }
            });
        }
        drop(decoded);
        let progress = self.progress(what);
        let (read_into, tapped) = match gaps {
            Some(gaps) => {
                let (tx, rx) = mpsc::channel::<RawRecord>(4 * DECODE_BATCH);
                (tx, Some((gaps, rx)))
            }
            None => (records.clone(), None),
        };
        let reading = source::stream(
            &self.source,
            self.kafka_window(true),
            false,
            read_into,
            progress.clone(),
        );
        let watching = async move {
            if let Some((gaps, mut rx)) = tapped {
                while let Some(record) = rx.recv().await {
                    gaps.observe(&record.payload);
                    if records.send(record).await.is_err() {
                        break;
                    }
                }
            }
        };
        let consuming = async {
            while let Some(tickets) = signed.recv().await {
                for (mapped, entry) in tickets {
                    each(mapped, entry);
                }
            }
        };
        let (read, (), ()) = tokio::join!(reading, watching, consuming);
        progress.finish_and_clear();
        while decoders.join_next().await.is_some() {}
        read
    }

    /// The billing subjects of the tickets signed in the range.
    pub(crate) async fn subjects(&self) -> Result<HashSet<Box<str>>, AuditError> {
        let mut subjects = HashSet::new();
        self.each_signed(&self.config.range, "subjects", None, |mapped, _| {
            subjects.insert(Box::from(mapped.event.subject()));
        })
        .await?;
        Ok(subjects)
    }

    async fn read_signed(
        &self,
        ledger: &mut Ledger,
        gaps: &mut gaps::AuditGaps,
    ) -> Result<(), AuditError> {
        let ids = self.config.contract.ids;
        let read = self
            .each_signed(
                &self.config.range,
                "signed events",
                Some(gaps),
                |mapped, entry| {
                    let key = mapped.identity.customer_key();
                    ledger.sign(&mapped.event.id, mapped.other_id(ids), key.as_str(), entry);
                },
            )
            .await?;
        ledger.records_read = read;
        Ok(())
    }

    /// The dead letters whose events were signed (or, unreadable, written)
    /// in the range: id, customer and reason. Bounded by what failed.
    async fn read_dead_letters(&self) -> Result<Vec<(String, String, String)>, AuditError> {
        let Some(spec) = &self.dead_letters else {
            return Ok(Vec::new());
        };
        let file = matches!(spec, SourceSpec::File(_));
        let mut letters = Vec::new();
        self.each_record(spec, false, true, "dead letters", |record| {
            let Some((letter, reason, position)) = read_letter(&record, file) else {
                return;
            };
            let who = identify(
                &letter.payload,
                self.config.max_event_bytes,
                &self.config.contract,
            );
            let signed = who.signed.or(letter.written);
            if signed.is_some_and(|t| self.config.range.contains(t)) {
                let id = who.id.unwrap_or(position);
                let customer = who.customer.unwrap_or_else(|| NO_IDENTITY.to_owned());
                letters.push((id, customer, reason));
            }
        })
        .await?;
        Ok(letters)
    }

    /// Pages through our stored events whose `time` is in the range.
    async fn scan_stored(&self, findings: &mut Findings) -> Result<(), AuditError> {
        let query = EventQuery {
            source: Some(SOURCE.to_owned()),
            kind: Some(BILLABLE_TYPE.to_owned()),
            time_from: Some(rfc3339(self.config.range.from)),
            time_to: Some(rfc3339(self.config.range.to)),
            ..EventQuery::default()
        };
        let progress = self.progress("stored events");
        let mut pages = self.client.event_pages(&query);
        while let Some(events) = pages.next().await? {
            progress.inc(events.len() as u64);
            for event in events {
                let key = findings.ledger.resolve(original(&event).0);
                let signed = signed_time(&event);
                if !signed.is_some_and(|t| self.config.range.contains(t)) {
                    continue;
                }
                let found = self.judge(&mut findings.terms, key, event).await?;
                record(&mut findings.ledger, &found);
            }
        }
        progress.finish_and_clear();
        Ok(())
    }

    /// Looks `ids` up by id (and derived id), whatever their stored time,
    /// and replaces what the ledger knows of their copies. Returns the
    /// copies found.
    async fn refresh(
        &self,
        findings: &mut Findings,
        ids: &[String],
    ) -> Result<Vec<Found>, AuditError> {
        let mut all = Vec::new();
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            let found = self
                .lookup(
                    &mut findings.terms,
                    &findings.ledger,
                    chunk,
                    &mut findings.pages,
                )
                .await?;
            for id in chunk {
                if let Some(entry) = findings.ledger.entries.get_mut(id.as_str()) {
                    entry.forget_copies();
                }
            }
            for f in &found {
                record(&mut findings.ledger, f);
            }
            all.extend(found);
        }
        Ok(all)
    }

    /// Asks for each id, its derived repair id and the id the other
    /// scheme gives it (an event stored before a cut-over).
    async fn lookup(
        &self,
        terms: &mut HashMap<String, Arc<[BillingTerms]>>,
        ledger: &Ledger,
        ids: &[String],
        pages_read: &mut u64,
    ) -> Result<Vec<Found>, AuditError> {
        let wanted: Vec<String> = ids
            .iter()
            .flat_map(|id| {
                let other = ledger.other_id(id).map(str::to_owned);
                [Some(id.clone()), Some(derived_id(id)), other]
            })
            .flatten()
            .collect();
        let (plain, odd): (Vec<String>, Vec<String>) =
            wanted.into_iter().partition(|id| !id.contains(','));
        let mut queries: Vec<Vec<String>> = Vec::new();
        if !plain.is_empty() {
            queries.push(plain);
        }
        // `oeq` splits at commas: such ids are asked for one at a time.
        queries.extend(odd.into_iter().map(|id| vec![id]));
        let mut found = Vec::new();
        for ids in queries {
            let query = EventQuery {
                source: Some(SOURCE.to_owned()),
                ids,
                ..EventQuery::default()
            };
            let mut pages = self.client.event_pages(&query);
            while let Some(events) = pages.next().await? {
                *pages_read += 1;
                for event in events {
                    let key = ledger.resolve(original(&event).0);
                    found.push(self.judge(terms, key, event).await?);
                }
            }
        }
        Ok(found)
    }

    /// The billing terms of the customer's subscriptions (deleted ones
    /// bill nothing).
    async fn subscription_terms(&self, customer_id: &str) -> Result<Vec<BillingTerms>, AuditError> {
        let subscriptions = self.client.customer_subscriptions(customer_id).await?;
        Ok(subscriptions
            .iter()
            .filter(|s| s.customer_id == customer_id && s.deleted_at.is_none())
            .map(BillingTerms::of)
            .collect())
    }

    /// Whether a stored copy will be invoiced.
    async fn judge(
        &self,
        terms: &mut HashMap<String, Arc<[BillingTerms]>>,
        key: String,
        event: IngestedEvent,
    ) -> Result<Found, AuditError> {
        let customer_terms: Arc<[BillingTerms]> = match &event.customer {
            None => Arc::from(Vec::new()),
            Some(c) => match terms.get(&c.id) {
                Some(t) => t.clone(),
                None => {
                    let fetched: Arc<[BillingTerms]> =
                        Arc::from(self.subscription_terms(&c.id).await?);
                    terms.insert(c.id.clone(), fetched.clone());
                    fetched
                }
            },
        };
        let verdict = verdict::verdict(
            &event,
            &customer_terms,
            to_delta(self.config.collection_window),
        );
        let derived = key != event.event.id;
        Ok(Found {
            key,
            derived,
            event,
            verdict,
        })
    }
}

/// Adds a found copy to the ledger; an unknown id is unexpected, unless it
/// was dead-lettered and replayed since.
fn record(ledger: &mut Ledger, found: &Found) {
    let data = found.event.event.data.as_ref();
    let copy = StoredCopy {
        fee_wei: data
            .and_then(|d| d.fee_wei.as_deref())
            .and_then(|f| f.parse().ok())
            .unwrap_or(0),
        usd_micros: data
            .and_then(|d| d.network_fee_usd_micros)
            .unwrap_or_default(),
        verdict: match (&found.verdict, ledger.customer_of(&found.key)) {
            (Err(r), _) => Err((r.kind(), r.to_string())),
            // Billed, but to another customer than the one who signed.
            (Ok(()), Some(signer)) if signer != found.event.event.subject => Err((
                UnbillableKind::Other,
                format!(
                    "{MISATTRIBUTED} {} (signed for {signer})",
                    found.event.event.subject
                ),
            )),
            (Ok(()), _) => Ok(()),
        },
    };
    if !ledger.stored(&found.key, copy) && !ledger.is_letter(&found.key) {
        let source = &found.event.event.source;
        if source.is_empty() || source == SOURCE {
            ledger.unexpected.add(&found.key);
        } else {
            ledger
                .unexpected
                .add(&format!("{} (source {source})", found.key));
        }
    }
}

/// The signed event a stored one stands for, and whether it is a repair copy.
fn original(event: &IngestedEvent) -> (String, bool) {
    match event
        .event
        .data
        .as_ref()
        .and_then(|d| d.original_id.clone())
    {
        Some(original) => (original, true),
        None => (event.event.id.clone(), false),
    }
}

/// `data.signed_at` when the event was sent with a later `time`, else `time`.
fn signed_time(event: &IngestedEvent) -> Option<DateTime<Utc>> {
    event
        .event
        .data
        .as_ref()
        .and_then(|d| d.signed_at.as_deref())
        .or(event.event.time.as_deref())
        .and_then(parse_rfc3339)
}

/// A dead letter read from a file line or a topic record (a topic record
/// without a reason is none of ours), with its reason and the name of the
/// record it holds: `source:offset` from a file, `topic/partition@offset`
/// from the topic (else where in the topic the letter is).
fn read_letter(record: &RawRecord, file: bool) -> Option<(Letter, String, String)> {
    let letter = if file {
        Letter::from_line(&record.payload)?
    } else {
        Letter::from_topic(&record.payload, &record.headers)
    };
    let reason = letter.reason.clone()?;
    let position = match (&letter.origin, file) {
        (Some(o), true) => format!("{}:{}", o.source, o.offset),
        (Some(o), false) => format!("{}/{}@{}", o.source, o.partition, o.offset),
        (None, _) => record.position.clone(),
    };
    Some((letter, reason, position))
}

/// What a dead letter's payload says about itself, as far as it can be read.
#[derive(Debug, Default, PartialEq, Eq)]
struct Identified {
    id: Option<String>,
    customer: Option<String>,
    signed: Option<DateTime<Utc>>,
}

/// Who and when a dead letter's payload names, by decode's rules: the
/// whole ticket when it decodes, else each claim that can be read.
fn identify(payload: &[u8], max_bytes: usize, contract: &Contract) -> Identified {
    if let Ok(Decoded::Ticket(t)) = decode(payload, max_bytes, contract) {
        return Identified {
            signed: parse_rfc3339(&t.time),
            customer: Some(t.identity.customer_key().to_string()),
            id: Some(t.event_id),
        };
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return Identified::default();
    };
    let data = &value["data"];
    let signed = claimed_time(
        Scalar::of(&data["current_time"]),
        Scalar::of(&data["current_time_unix"]),
        Scalar::of(&value["timestamp"]),
    )
    .map(|(_, at)| at);
    let id = event_id(
        contract.ids,
        value["id"].as_str().unwrap_or_default(),
        &request_id(Scalar::of(&data["request_id"])),
        payload,
    );
    let claim = IdentityClaim::event(
        data["auth_id"].as_str(),
        data["client_id"].as_str(),
        data["usage_subject"].as_str(),
    );
    let customer = claim
        .named()
        .map(|raw| match Identity::resolve(claim, contract.subjects) {
            Ok(identity) => identity.customer_key().to_string(),
            Err(_) => raw.into_owned(),
        });
    Identified {
        id: Some(id),
        customer,
        signed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undecodable_letter_is_still_named_by_its_event_id_customer_and_time() {
        let payload = br#"{"id":"env","type":"create_signed_ticket","data":{"request_id":"r-9","auth_id":"a:b","computed_fee":"1.5","current_time":"2026-11-24T09:00:00Z"}}"#;
        let who = identify(payload, 1 << 20, &Contract::default());
        assert_eq!(who.id.as_deref(), Some("env"));
        assert_eq!(who.customer.as_deref(), Some("a:b"));
        assert_eq!(who.signed, parse_rfc3339("2026-11-24T09:00:00Z"));
    }

    #[test]
    fn a_letter_without_identity_falls_back_to_the_envelope_and_its_timestamp() {
        let payload = br#"{"id":"env-7","type":"create_signed_ticket","timestamp":"1795510860000","data":{"auth_id":" "}}"#;
        let who = identify(payload, 1 << 20, &Contract::default());
        assert_eq!(who.id.as_deref(), Some("env-7"));
        assert_eq!(who.customer, None);
        assert_eq!(
            who.signed,
            DateTime::from_timestamp_millis(1_795_510_860_000)
        );
    }

    #[test]
    fn an_undecodable_letter_is_read_by_decodes_rules() {
        let payload = br#"{"type":"create_signed_ticket","timestamp":1795510860000,"data":{"request_id":42,"client_id":"app_abc","usage_subject":"owner:U2","computed_fee":"x","current_time_unix":0}}"#;
        let who = identify(payload, 1 << 20, &Contract::default());
        assert_eq!(who.id.as_deref(), Some("42"));
        assert_eq!(who.customer.as_deref(), Some("U2"));
        assert_eq!(
            who.signed,
            DateTime::from_timestamp_millis(1_795_510_860_000),
            "a unix time of 0 is no time"
        );
    }

    #[test]
    fn garbage_identifies_as_nothing() {
        assert_eq!(
            identify(b"\xff\x00", 1 << 20, &Contract::default()),
            Identified::default()
        );
    }
}
