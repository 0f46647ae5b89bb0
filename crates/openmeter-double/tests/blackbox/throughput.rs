//! Load check: batched ingest on loopback. Ignored by default (debug builds
//! are slow); run with `cargo test -p openmeter-double --release --test
//! blackbox throughput -- --ignored --nocapture`.

use std::time::Instant;

use serde_json::{json, Value};

use crate::support::{event, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn batched_ingest_sustains_100k_events_per_second() {
    let env = start().await;
    env.double.seed_customer("client:user", &["client:user"]);
    let batches = 200;
    let per_batch = 1000;
    let bodies: Vec<String> = (0..batches)
        .map(|b| {
            let events: Vec<Value> = (0..per_batch)
                .map(|i| {
                    let mut e = event(&format!("{b}-{i}"), "client:user");
                    e["data"] = json!({"client_id": "client", "external_user_id": "user",
                        "network_fee_usd_micros": "1234", "billable_usd_micros": "1234",
                        "pipeline": "live-video-to-video", "model_id": "unknown", "pixels": 921600,
                        "fee_wei": "352612500000000", "gateway_request_id": format!("{b}-{i}")});
                    e
                })
                .collect();
            Value::Array(events).to_string()
        })
        .collect();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for chunk in bodies.chunks(batches / 4) {
        let http = env.http.clone();
        let url = env.url("/openmeter/events");
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for body in chunk {
                let r = http
                    .post(&url)
                    .header("content-type", "application/cloudevents-batch+json")
                    .body(body)
                    .send()
                    .await
                    .expect("send");
                assert_eq!(r.status().as_u16(), 202);
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = (batches * per_batch) as f64 / secs;
    println!(
        "ingested {} events in {secs:.2}s = {rate:.0} events/s",
        batches * per_batch
    );
    assert_eq!(env.double.delivery_count(), batches * per_batch);
}
