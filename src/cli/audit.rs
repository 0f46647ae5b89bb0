//! `ticketmeter audit` (`app` assembles the continuous audit of `run`).
//! Exit codes are the contract: 0 clean, 1 discrepancies remain (after
//! `--repair`: what it could not fix), 2 the audit could not run.

use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::args::AuditArgs;
use super::config;
use crate::app::{self, Role};
use crate::audit::range::TimeRange;
use crate::audit::source::SourceSpec;
use crate::audit::{Audit, AuditConfig, RepairMode};
use crate::price::PriceFeed;

/// The audit could not run.
const CANNOT_RUN: u8 = 2;

pub(super) async fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
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
    let settings = config::pipeline(&args.pipeline)?;
    let price = PriceFeed::start(settings.price, CancellationToken::new())
        .await
        .context("an ETH/USD price is needed for signed USD micros (set ETH_USD_PRICE or fix PRICE_ORACLE_URL)")?
        .current()
        .price;
    let openmeter = settings.openmeter;
    let (source, dead_letters) = match &args.file {
        Some(file) => (
            SourceSpec::File(file.clone()),
            SourceSpec::File(args.dlq_file.clone()),
        ),
        None => app::audit_sources(&config::kafka(&args.kafka)),
    };
    let audit = Audit {
        client: app::client(&openmeter.client, Role::OneShot)?,
        price,
        source,
        dead_letters: Some(dead_letters),
        accounts: None,
        config: AuditConfig {
            range,
            mode: args.mode,
            fingerprints: !args.no_fingerprints,
            event_time: settings.batch.billing.event_time,
            settle: args.settle,
            collection_window: settings.batch.billing.collection_window,
            max_event_bytes: settings.batch.max_event_bytes,
            contract: settings.batch.contract,
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
        let provisioner = app::provisioner(audit.client.clone(), &openmeter);
        report = audit.repair(&mut findings, &provisioner, mode).await?;
    }
    print!("{}", report.render(args.format));
    Ok(if report.discrepancies() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
