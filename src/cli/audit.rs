//! `ticketmeter audit`, and the continuous audit `run` starts when
//! `AUDIT_INTERVAL` is set. Exit codes are the contract: 0 clean, 1
//! discrepancies remain (after `--repair`: what it could not fix), 2 the
//! audit could not run.

use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::args::{AuditArgs, KafkaArgs, RunArgs};
use super::{client, kafka_config, price_source, provisioner};
use crate::audit::continuous::ContinuousAudit;
use crate::audit::range::TimeRange;
use crate::audit::source::SourceSpec;
use crate::audit::{Audit, AuditConfig, RepairMode};
use crate::pipeline::Pipeline;
use crate::price::PriceFeed;

/// The audit could not run.
const CANNOT_RUN: u8 = 2;

pub async fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match run(&args).await {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(CANNOT_RUN))
        }
    }
}

async fn run(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let range = TimeRange::parse(&args.from, args.to.as_deref(), Utc::now())?;
    let price = PriceFeed::start(price_source(&args.pipeline.price), CancellationToken::new())
        .await
        .context("an ETH/USD price is needed for signed USD micros (set ETH_USD_PRICE or fix PRICE_ORACLE_URL)")?
        .current()
        .price;
    let (source, dead_letters) = match &args.file {
        Some(file) => (
            SourceSpec::File(file.clone()),
            SourceSpec::File(args.dlq_file.clone()),
        ),
        None => kafka_sources(&args.kafka),
    };
    let audit = Audit {
        client: client(&args.pipeline.openmeter, super::ONE_SHOT_ATTEMPTS)?,
        price,
        source,
        dead_letters: Some(dead_letters),
        config: AuditConfig {
            range,
            settle: args.settle,
            collection_window: args.collection_window,
            max_event_bytes: args.pipeline.batch.max_event_bytes,
            progress: true,
        },
    };
    let (mut report, mut findings) = audit.run().await?;
    if args.repair {
        let mode = if args.dry_run {
            RepairMode::DryRun
        } else {
            RepairMode::Apply
        };
        let provisioner = provisioner(audit.client.clone(), &args.pipeline.ensure);
        report = audit.repair(&mut findings, &provisioner, mode).await?;
    }
    print!("{}", report.render(args.format));
    Ok(if report.discrepancies() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The gateway topic and its dead-letter topic.
fn kafka_sources(args: &KafkaArgs) -> (SourceSpec, SourceSpec) {
    let config = kafka_config(args);
    let mut dlq = config.clone();
    dlq.topic = args.dlq_topic();
    (SourceSpec::Kafka(config), SourceSpec::Kafka(dlq))
}

/// The continuous audit of `run`, when `AUDIT_INTERVAL` is set.
pub fn continuous(args: &RunArgs, pipeline: &Pipeline) -> Option<ContinuousAudit> {
    let a = &args.audit;
    let interval = a.audit_interval?;
    let (source, dead_letters) = kafka_sources(&args.kafka);
    let provisioner = pipeline.deliverer.provisioner.clone();
    let now = Utc::now();
    let audit = Audit {
        client: provisioner.client().clone(),
        price: pipeline.price.current().price,
        source,
        dead_letters: Some(dead_letters),
        config: AuditConfig {
            range: TimeRange::settled_window(now, a.audit_window, a.audit_settle),
            settle: a.audit_settle,
            collection_window: a.audit_collection_window,
            max_event_bytes: args.pipeline.batch.max_event_bytes,
            progress: false,
        },
    };
    tracing::info!(every = %humantime::format_duration(interval), window = %humantime::format_duration(a.audit_window), repair = a.audit_repair, "continuous audit on");
    Some(ContinuousAudit {
        audit,
        interval,
        window: a.audit_window,
        repair: a.audit_repair.then_some(provisioner),
        price: pipeline.price.clone(),
    })
}
