//! Chain tracking benchmark: prints figures, asserts nothing.
//!
//! `cargo bench --bench chain` (options after `--`: `--sessions N`,
//! `--calls C`, `--batch B`). N sessions are active at once; each makes C
//! signing calls, the sessions' calls interleaved as a busy signer's are
//! (every session moves one call per round), with one session in ten
//! delivering a round's call before the call it follows (partitions read
//! out of order) and one in a hundred retrying a call (a branch). Events
//! reach the collector's tracker as its batch tasks hand them over:
//! `ChainTracker::observe` of a batch of B, under one lock. Printed:
//! - the tracker's time per event (the batches' `observe` and a sweep per
//!   round, wall clock, one thread), which is all the collector adds per
//!   event beyond decode reading three more fields (criterion `decode_map`
//!   measures decode);
//! - the bytes the tracker holds per active session once every session
//!   is whole again (a counting allocator: bytes allocated and not freed);
//! - what decode adds per event to read the chain: `decode` of a
//!   continuing call against the same record with `sequence_number` and
//!   `previous_time` renamed (skipped unread, as before the chain; decode
//!   read `session_id` and `orch_address` as dimensions already), this
//!   thread's CPU time, alternated.

use std::alloc::System;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use ticketmeter::{
    decode, ChainSettings, ChainTracker, Chained, Contract, Link, PriceFeed, Seen,
    DEFAULT_MAX_BYTES,
};

/// Counts the bytes allocated and freed.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn option(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This thread's time on a CPU so far, ns (`/proc/thread-self/schedstat`).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn go_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// One session's state: its number and the time of its last call.
#[derive(Clone, Copy)]
struct State {
    seq: u32,
    last: DateTime<Utc>,
}

/// The event of session `s`'s call `seq` at `now`, its previous call at
/// `previous`.
fn event(s: usize, seq: u32, now: DateTime<Utc>, previous: DateTime<Utc>) -> Bytes {
    Bytes::from(format!(
        r#"{{"id":"e-{s}-{seq}","type":"create_signed_ticket","data":{{"session_id":"{s:08x}","orch_address":"0xabababababababababababababababababababab","sequence_number":{seq},"current_time":"{}","previous_time":"{}","computed_fee":"5000000000000","auth_id":"app-{c}:user-{s}"}}}}"#,
        go_time(now),
        go_time(previous),
        c = s % 1000
    ))
}

/// The billing subject decode gives the event (`app-C:user-S`).
fn customer_of(seen: &Seen) -> String {
    let text = std::str::from_utf8(&seen.payload).unwrap_or_default();
    text.split("\"auth_id\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned()
}

fn seen(payload: Bytes, partition: i32) -> Seen {
    let link: Option<Link> = match Chained::of(&payload) {
        Chained::Link(link) => Some(link),
        _ => None,
    };
    Seen {
        partition,
        link,
        payload,
    }
}

/// One round: every session makes its next call. One session in ten
/// delivers its call of an even round only after its next round's call
/// (the child read before its parent, as partitions read unevenly do); one
/// in a hundred retries its call with the same blob and goes on from the
/// retry. Returns the round's events in batches.
fn round(
    states: &mut [State],
    held: &mut [Option<Seen>],
    clock: &mut DateTime<Utc>,
    batch: usize,
    last: bool,
) -> Vec<Vec<Seen>> {
    let mut out: Vec<Seen> = Vec::with_capacity(states.len() + states.len() / 50);
    for (s, state) in states.iter_mut().enumerate() {
        *clock += chrono::Duration::microseconds(10);
        let now = *clock;
        let first = state.seq == u32::MAX;
        let seq = state.seq.wrapping_add(1);
        let previous = if first { now } else { state.last };
        let partition = (s % 6) as i32;
        let e = seen(event(s, seq, now, previous), partition);
        *state = State { seq, last: now };
        if !first && s % 100 == 7 {
            out.push(e);
            let retry = now + chrono::Duration::microseconds(5);
            out.push(seen(event(s, seq, retry, previous), (partition + 1) % 6));
            state.last = retry;
        } else if s % 10 == 3 && seq % 2 == 0 && !last {
            held[s] = Some(e);
        } else {
            out.push(e);
            out.extend(held[s].take());
        }
    }
    let mut batches = Vec::new();
    let mut it = out.into_iter().peekable();
    while it.peek().is_some() {
        batches.push(it.by_ref().take(batch).collect());
    }
    batches
}

/// A continuing call as go-livepeer publishes it (the `decode_map` bench's
/// ticket, call 5 of its session).
const CONTINUING: &str = r#"{"id":"0b6c1a52-0000-4000-8000-000000000001","type":"create_signed_ticket","timestamp":"1788912000000","gateway":"","data":{"session_id":"state_req-0001","session_status":"continuing","pipeline":"live-video-to-video","request_id":"req-0001","orch_address":"0xabababababababababababababababababababab","orch_url":"https://orch.example:8935","manifest_id":"manifest_req-0001","pm_session_id":"pm_req-0001","current_time":"2026-09-09T00:00:10.000000001Z","current_time_unix":1788912010000,"previous_time":"2026-09-09T00:00:00.000000001Z","previous_time_unix":1788912000000,"billable_secs":10.5,"pixels":0,"session_balance":"100","computed_fee":"1200000000000","cost":"1.0000000000","sequence_number":5,"num_tickets":1,"auth_id":"demo-client:demo-user"}}"#;

/// CPU ns per `decode` of `payload`, over `n` calls.
fn decode_cpu(payload: &str, n: usize) -> f64 {
    let contract = Contract::default();
    let on_cpu = cpu_ns();
    for _ in 0..n {
        std::hint::black_box(decode(
            std::hint::black_box(payload.as_bytes()),
            DEFAULT_MAX_BYTES,
            &contract,
        ))
        .ok();
    }
    (cpu_ns() - on_cpu) as f64 / n as f64
}

/// Decode with and without reading the chain, alternated: medians, ns.
fn decode_cost() -> (f64, f64) {
    let unread = CONTINUING
        .replace("\"sequence_number\"", "\"xsequence_number\"")
        .replace("\"previous_time\"", "\"xprevious_time\"");
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        with.push(decode_cpu(CONTINUING, 100_000));
        without.push(decode_cpu(&unread, 100_000));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut with), median(&mut without))
}

fn main() {
    let sessions = option("--sessions", 100_000);
    let calls = option("--calls", 20);
    let batch = option("--batch", 500);
    let tracker = ChainTracker::new(
        ChainSettings {
            settle: Duration::from_secs(120),
            idle: Duration::from_secs(3600),
        },
        Contract::default(),
        1 << 20,
        PriceFeed::fixed("3500".parse().unwrap()),
    );
    tracker.ownership(6, 6);
    let mut states = vec![
        State {
            seq: u32::MAX,
            last: Utc::now()
        };
        sessions
    ];
    let mut held: Vec<Option<Seen>> = (0..sessions).map(|_| None).collect();
    let mut clock = Utc::now() + chrono::Duration::minutes(5);
    // Round 0 opens every session; the others continue them. Each round's
    // batches are made first, then observed and swept (timed: wall clock
    // and this thread's time on a CPU).
    let (mut events, mut spent, mut cpu) = ([0usize; 2], [Duration::ZERO; 2], [0u64; 2]);
    let region = Region::new(GLOBAL);
    for r in 0..calls {
        let phase = usize::from(r > 0);
        let batches = round(&mut states, &mut held, &mut clock, batch, r + 1 == calls);
        // The batch knows each event's customer (decode resolved it).
        let customers: Vec<Vec<String>> = batches
            .iter()
            .map(|b| b.iter().map(customer_of).collect())
            .collect();
        let (started, on_cpu) = (Instant::now(), cpu_ns());
        for (b, names) in batches.iter().zip(&customers) {
            events[phase] += b.len();
            tracker.observe(b, |i| names.get(i).map(String::as_str));
        }
        // The collector sweeps every CHAIN_SETTLE/4: here once a round.
        tracker.sweep(true);
        cpu[phase] += cpu_ns() - on_cpu;
        spent[phase] += started.elapsed();
    }
    // Settled: the sweep closes nothing (no call is missing) and folds
    // every session back to one run.
    let swept = Instant::now();
    tracker.sweep(true);
    let sweep = swept.elapsed();
    let change = region.change();
    // A realloc counts in both sums already.
    let held = change.bytes_allocated as isize - change.bytes_deallocated as isize;
    let allocations = change.allocations as isize - change.deallocations as isize;
    let tracked = ticketmeter::metrics().chain.sessions.get();
    let micros = |spent: Duration, events: usize| spent.as_secs_f64() * 1e6 / events.max(1) as f64;
    let cpu_micros = |ns: u64, events: usize| ns as f64 / 1e3 / events.max(1) as f64;
    println!(
        "FIGURE chain tracking: {} events of {sessions} active sessions ({calls} calls each, 10% read before the call they follow, 1% retried), batches of {batch}",
        events[0] + events[1]
    );
    println!(
        "FIGURE   tracker time per event of a session already seen: {:.3} µs CPU, {:.3} µs wall (observe under one lock per batch, and a sweep per round)",
        cpu_micros(cpu[1], events[1]),
        micros(spent[1], events[1])
    );
    println!(
        "FIGURE   tracker time per session opened (its first call): {:.3} µs CPU, {:.3} µs wall",
        cpu_micros(cpu[0], events[0]),
        micros(spent[0], events[0])
    );
    println!(
        "FIGURE   tracker time per event, all {calls} calls: {:.3} µs CPU, {:.3} µs wall",
        cpu_micros(cpu[0] + cpu[1], events[0] + events[1]),
        micros(spent[0] + spent[1], events[0] + events[1])
    );
    println!(
        "FIGURE   memory per active session: {:.1} bytes requested ({held} bytes, {allocations} allocations held for {tracked} sessions; the allocator adds about 8-16 bytes per allocation)",
        held as f64 / sessions as f64,
    );
    println!(
        "FIGURE   one sweep over {tracked} sessions: {:.1} ms",
        sweep.as_secs_f64() * 1000.0
    );
    println!(
        "FIGURE   gaps found: {} (none expected)",
        ticketmeter::metrics().chain.gaps.get()
    );
    let (with, without) = decode_cost();
    println!(
        "FIGURE   decode of a continuing call: {:.3} µs CPU reading its chain, {:.3} µs with the chain fields skipped: {:.3} µs to read the chain (median of 9 alternated runs of 100k)",
        with / 1000.0,
        without / 1000.0,
        (with - without) / 1000.0
    );
}
