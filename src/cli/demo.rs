//! `ticketmeter demo`: the real pipeline over a bundled sample of events,
//! against an in-process OpenMeter double on loopback. No Kafka, no account.

use std::process::ExitCode;
use std::sync::Arc;

use std::collections::BTreeMap;

use anyhow::Context;
use openmeter_double::{Double, DoubleConfig};
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

use super::args::DemoArgs;
use crate::app::{self, OpenMeterSettings, PipelineSettings, Role};
use crate::bootstrap::{bootstrap, BootstrapOptions, Catalog};
use crate::commit::OffsetTracker;
use crate::contract::Contract;
use crate::decode::{decode, Decoded, DEFAULT_MAX_BYTES};
use crate::dlq::DeadLetterSink;
use crate::domain::{EthUsdPrice, UsdMicros, DEFAULT_PLAN_KEY};
use crate::ensure::EnsureConfig;
use crate::health::Health;
use crate::map::map;
use crate::openmeter::{ClientConfig, Endpoint};
use crate::pipeline::PipelineConfig;
use crate::price::{PriceFeed, PriceSource};
use crate::settle::Tally;

/// The meter the default plan's rate card prices.
const BILLED_METER: &str = "billable_usd_micros";

/// The bundled sample: five customers, one other event type, four bad events.
const SAMPLE: &str = include_str!("../../examples/sample-events.jsonl");

pub(super) async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let double = Double::new(DoubleConfig::default());
    let running = double.spawn(([127, 0, 0, 1], 0).into()).await?;
    let settings = PipelineSettings {
        openmeter: OpenMeterSettings {
            client: ClientConfig::new(Endpoint::parse(&running.base_url(), None)?, None),
            plan_key: DEFAULT_PLAN_KEY.parse()?,
            owner_plan_key: None,
            ensure: EnsureConfig::default(),
        },
        price: PriceSource::Fixed(args.eth_usd_price),
        batch: PipelineConfig::default(),
    };
    let client = app::client(&settings.openmeter.client, Role::OneShot)?;
    say!("OpenMeter double at {}", running.base_url());

    let catalog = Catalog::builtin(&settings.openmeter.plan_key);
    let report = bootstrap(&client, &catalog, &BootstrapOptions::default())
        .await
        .context("bootstrapping the catalog")?;
    say!("\n== bootstrap\n{report}");
    double.reset_counters();

    let dlq = DeadLetterSink::memory();
    let pipeline = app::pipeline_for(
        Role::Pipeline,
        &settings,
        PriceFeed::fixed(args.eth_usd_price),
        dlq.clone(),
        Arc::new(OffsetTracker::default()),
        Health::default(),
    )?;
    let (text, name) = match &args.events {
        Some(path) => (
            tokio::fs::read_to_string(path)
                .await
                .with_context(|| format!("reading {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (SAMPLE.to_owned(), "bundled sample".to_owned()),
    };
    let signed = signed_micros(&text, &args.eth_usd_price);
    let settled = pipeline
        .run_lines(
            std::io::Cursor::new(text.into_bytes()),
            &name,
            &CancellationToken::new(),
        )
        .await?;

    print_outcome(
        &double,
        &pipeline.tally(),
        &dlq,
        &args.eth_usd_price.to_string(),
    );
    print_money(&double, &signed);
    Ok(if settled {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// USD micros signed per customer: every line decoded and mapped exactly
/// as the pipeline does (lines it dead-letters sign nothing billable).
fn signed_micros(text: &str, price: &EthUsdPrice) -> BTreeMap<String, UsdMicros> {
    let contract = Contract::default();
    let mut signed: BTreeMap<String, UsdMicros> = BTreeMap::new();
    for line in text.lines() {
        let Ok(Decoded::Ticket(ticket)) = decode(line.as_bytes(), DEFAULT_MAX_BYTES, &contract)
        else {
            continue;
        };
        let mapped = map(*ticket, price, &contract);
        let sum = signed.entry(mapped.event.subject().to_owned()).or_default();
        *sum = sum
            .checked_add(mapped.event.data.billable_usd_micros)
            .unwrap_or(*sum);
    }
    signed
}

/// What each customer will be invoiced (the double's meter query, counting
/// only events inside the subscription's service period, as invoicing does)
/// next to what the signer signed for it.
fn print_money(double: &Double, signed: &BTreeMap<String, UsdMicros>) {
    say!("\n== money: signed vs. what OpenMeter will invoice (meter {BILLED_METER}, µUSD)");
    let customers = double.customers();
    let (mut signed_total, mut billed_total) = (Decimal::ZERO, Decimal::ZERO);
    for (customer, micros) in signed {
        let signed = Decimal::from_str_exact(&micros.to_string()).unwrap_or(Decimal::MAX);
        let billed = customers
            .iter()
            .find(|c| c.subject_keys().iter().any(|k| k == customer))
            .map_or(Decimal::ZERO, |c| {
                double.billable_total(BILLED_METER, &c.id).normalize()
            });
        let mark = if billed == signed { "✓" } else { "✗" };
        say!("  {mark} {customer:<22} signed {signed:>10}  billed {billed:>10}");
        signed_total += signed;
        billed_total += billed;
    }
    say!(
        "  total: signed {} µUSD, billed {} µUSD",
        signed_total.normalize(),
        billed_total.normalize()
    );
}

fn print_outcome(double: &Double, tally: &Tally, dlq: &DeadLetterSink, price: &str) {
    say!("== pipeline (ETH/USD {price})");
    say!(
        "read {}, delivered {}, skipped {}, dead-lettered {}",
        Tally::get(&tally.read),
        Tally::get(&tally.delivered),
        Tally::get(&tally.skipped),
        Tally::get(&tally.dead_lettered)
    );
    say!("\n== customers created (each with a subscription before its first event)");
    let subscriptions = double.subscriptions();
    for customer in double.customers() {
        let plan = subscriptions
            .iter()
            .find(|s| s.customer_id == customer.id)
            .map_or("none".to_owned(), |s| {
                let plan = s.plan.as_ref().map_or("?", |p| p.key.as_str());
                format!("{plan} ({})", s.status)
            });
        say!("  {:<22} subscription: {plan}", customer.key);
    }
    say!("\n== events accepted by OpenMeter");
    for event in double.unique_events() {
        let data = &event["data"];
        say!(
            "  {:<14} {:<20} {:>8} µUSD  pipeline={} model={}",
            event["id"].as_str().unwrap_or_default(),
            event["subject"].as_str().unwrap_or_default(),
            data["network_fee_usd_micros"],
            data["pipeline"].as_str().unwrap_or_default(),
            data["model_id"].as_str().unwrap_or_default()
        );
    }
    say!("\n== dead letters (never sent, never dropped)");
    for letter in dlq.kept() {
        say!(
            "  line {:>2}: {}",
            letter.record.origin.position.offset,
            letter.reason
        );
    }
    say!(
        "\n== upstream calls by the pipeline: {} for {} events (4 or 5 per new customer, then one ingest per batch)",
        double.total_calls(),
        Tally::get(&tally.delivered)
    );
}
