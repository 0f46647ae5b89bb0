//! Scale-out: one tansu broker, a topic of 12 partitions, and 1, 2 and 4
//! collector processes in one consumer group, OpenMeter 20 ms away. Each
//! count drains the same load (its own topic and group) of customers that
//! already exist; throughput is first to last accepted event. Then the
//! seed-equivalent mode on the same load, for 20 s per count.

use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use openmeter_double::{Double, Network, Route};

use crate::distance::{seed_customers, Mode};
use crate::harness::{
    cpu_secs, create_topics, event, free_port, produce, producer, tansu, Collector,
};
use crate::Options;

const PARTITIONS: i32 = 12;
const LATENCY: Duration = Duration::from_millis(20);

pub(crate) async fn run(double: &Double, url: &str, opts: &Options) {
    let broker = tansu();
    let producer = producer(&broker.brokers);
    let first_customer = 7_000_000;
    seed_customers(double, first_customer, opts.customers);
    println!(
        "scale-out: {} events over {} existing customers, {PARTITIONS} partitions, OpenMeter {} ms away",
        opts.events,
        opts.customers,
        LATENCY.as_millis()
    );
    let rounds = [Mode::Adaptive, Mode::Seed]
        .into_iter()
        .flat_map(|mode| [1usize, 2, 4].map(|n| (mode, n)));
    for (round, (mode, instances)) in rounds.enumerate() {
        // The seed's mode manages a few hundred events a second: a small load.
        let (events, budget) = match mode {
            Mode::Seed => (5_000, Duration::from_secs(20)),
            _ => (opts.events, Duration::from_secs(300)),
        };
        let topic = format!("scale-{round}-{instances}");
        create_topics(&broker.brokers, &topic, PARTITIONS).await;
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let id_base = 300_000_000 + round * opts.events;
        produce(
            &producer,
            &topic,
            (0..events).map(|i| event(id_base + i, first_customer + i % opts.customers, &now)),
        )
        .await;
        double.set_network(Network {
            latency: LATENCY,
            ..Network::default()
        });
        double.reset_counters();
        let before = double.delivery_count();
        let tansu_cpu0 = cpu_secs(&format!("/proc/{}/stat", broker.child.id())).unwrap_or(0.0);
        let mut collectors: Vec<Collector> = (0..instances)
            .map(|_| {
                let mut env = vec![
                    ("OPENMETER_URL", url.to_owned()),
                    ("ETH_USD_PRICE", "3500".to_owned()),
                    ("BATCH_MAX_EVENTS", "1000".to_owned()),
                    ("PROVISION_PORT", free_port().to_string()),
                    ("KAFKA_BROKERS", broker.brokers.clone()),
                    ("KAFKA_GATEWAY_TOPIC", topic.clone()),
                    ("KAFKA_CONSUMER_GROUP", format!("{topic}-group")),
                    ("KAFKA_COMMIT_INTERVAL", "500ms".to_owned()),
                ];
                env.extend(mode.env());
                Collector::spawn(&["run"], &env)
            })
            .collect();
        let started = Instant::now();
        let mut first = None;
        while double.delivery_count() < before + events && started.elapsed() < budget {
            if first.is_none() && double.delivery_count() > before {
                first = Some(Instant::now());
            }
            for c in &mut collectors {
                c.sample();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let delivered = double.delivery_count() - before;
        let steady = first.map_or(f64::NAN, |f| f.elapsed().as_secs_f64());
        let calls = double.total_calls();
        let cpu: f64 = collectors.iter().map(|c| c.cpu).sum();
        double.set_network(Network::default());
        for c in &mut collectors {
            c.stop();
        }
        println!(
            "  {:<16} {instances} collector(s): {delivered} events, {:>8.0} events/s first→last accepted ({:.2} s, {:.2} s from start), {:.4} calls/event ({} ingest), collectors' CPU {:.1} µs/event, broker {:.1} µs/event",
            mode.label(),
            delivered as f64 / steady,
            steady,
            started.elapsed().as_secs_f64(),
            calls as f64 / delivered.max(1) as f64,
            double.calls(Route::IngestEvents),
            cpu * 1e6 / delivered.max(1) as f64,
            (cpu_secs(&format!("/proc/{}/stat", broker.child.id())).unwrap_or(0.0) - tansu_cpu0) * 1e6
                / delivered.max(1) as f64,
        );
    }
}
