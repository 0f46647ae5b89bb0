//! Decode, map and serialise one `create_signed_ticket`, per event
//! (criterion): each step alone, then the three as the collector runs them.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ticketmeter::{decode, map, Contract, Decoded, DEFAULT_MAX_BYTES};

const EVENT: &str = r#"{"id":"0b6c1a52-0000-4000-8000-000000000001","type":"create_signed_ticket","timestamp":"1788912000000","gateway":"","data":{"session_id":"state_req-0001","session_status":"new","pipeline":"live-video-to-video","request_id":"req-0001","orch_address":"0xabababababababababababababababababababab","orch_url":"https://orch.example:8935","manifest_id":"manifest_req-0001","pm_session_id":"pm_req-0001","current_time":"2026-09-09T00:00:00.000000001Z","current_time_unix":1788912000000,"previous_time":"2026-09-09T00:00:00.000000001Z","previous_time_unix":1788912000000,"billable_secs":10.5,"pixels":0,"session_balance":"100","computed_fee":"1200000000000","cost":"1.0000000000","sequence_number":0,"num_tickets":1,"auth_id":"demo-client:demo-user"}}"#;

/// The same ticket as a later call of its session (`sequence_number` 5,
/// `previous_time` its previous call's time): what most events are, and
/// what the chain reads `previous_time` of.
const CONTINUING: &str = r#"{"id":"0b6c1a52-0000-4000-8000-000000000001","type":"create_signed_ticket","timestamp":"1788912000000","gateway":"","data":{"session_id":"state_req-0001","session_status":"continuing","pipeline":"live-video-to-video","request_id":"req-0001","orch_address":"0xabababababababababababababababababababab","orch_url":"https://orch.example:8935","manifest_id":"manifest_req-0001","pm_session_id":"pm_req-0001","current_time":"2026-09-09T00:00:10.000000001Z","current_time_unix":1788912010000,"previous_time":"2026-09-09T00:00:00.000000001Z","previous_time_unix":1788912000000,"billable_secs":10.5,"pixels":0,"session_balance":"100","computed_fee":"1200000000000","cost":"1.0000000000","sequence_number":5,"num_tickets":1,"auth_id":"demo-client:demo-user"}}"#;

fn decode_and_map(c: &mut Criterion) {
    let price = "3500.25".parse().unwrap();
    let contract = Contract::default();
    let mut group = c.benchmark_group("per_event");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode", |b| {
        b.iter(|| decode(black_box(EVENT.as_bytes()), DEFAULT_MAX_BYTES, &contract).unwrap())
    });
    group.bench_function("decode_continuing", |b| {
        b.iter(|| {
            decode(
                black_box(CONTINUING.as_bytes()),
                DEFAULT_MAX_BYTES,
                &contract,
            )
            .unwrap()
        })
    });
    let Ok(Decoded::Ticket(ticket)) = decode(EVENT.as_bytes(), DEFAULT_MAX_BYTES, &contract) else {
        unreachable!("the sample is a ticket")
    };
    group.bench_function("map", |b| {
        b.iter_batched(
            || (*ticket).clone(),
            |t| map(t, &price, &contract),
            BatchSize::SmallInput,
        )
    });
    let event = map((*ticket).clone(), &price, &contract).event;
    // Into a body already sized for it, as `deliver` writes a batch.
    let mut body = Vec::with_capacity(4096);
    group.bench_function("serialize", |b| {
        b.iter(|| {
            body.clear();
            black_box(&event).write_json(&mut body);
        })
    });
    // What `write_json` replaced, for comparison.
    group.bench_function("serialize_with_serde_json", |b| {
        b.iter(|| {
            body.clear();
            serde_json::to_writer(&mut body, black_box(&event)).unwrap();
        })
    });
    group.bench_function("decode_map_serialize", |b| {
        b.iter(|| {
            let Ok(Decoded::Ticket(t)) =
                decode(black_box(EVENT.as_bytes()), DEFAULT_MAX_BYTES, &contract)
            else {
                unreachable!("the sample is a ticket")
            };
            body.clear();
            map(*t, &price, &contract).event.write_json(&mut body);
        })
    });
    group.finish();
}

criterion_group!(benches, decode_and_map);
criterion_main!(benches);
