//! `ticketmeter audit` (`app` assembles the continuous audit of `run`).
//! Exit codes are the contract: 0 clean, 1 discrepancies remain (after
//! `--repair`: what it could not fix), 2 the audit could not run.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::Utc;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use super::args::AuditArgs;
use super::config;
use crate::app::{self, PipelineSettings, Role};
use crate::audit::range::TimeRange;
use crate::audit::source::SourceSpec;
use crate::audit::RepairMode;
use crate::domain::EthUsdPrice;
use crate::pipeline::{judge, Unsent};
use crate::price::PriceFeed;

/// The audit could not run.
const CANNOT_RUN: u8 = 2;

pub(super) async fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match run(&args).await {
        Ok(code) => Ok(code),
        Err(e) => {
            super::note(format!("error: {}", super::error_text(e.as_ref())));
            Ok(ExitCode::from(CANNOT_RUN))
        }
    }
}

/// With `--file`, a dead-letter file that does not exist is fine only when
/// no record of the source decodes to a dead letter: otherwise their
/// letters are somewhere else (another `DLQ_FILE`) or lost, and the audit
/// cannot account for them, so it does not run.
async fn dead_letters_present(
    source: &Path,
    letters: &Path,
    price: &EthUsdPrice,
    settings: &PipelineSettings,
) -> anyhow::Result<()> {
    if tokio::fs::try_exists(letters).await.unwrap_or(true) {
        return Ok(());
    }
    let file = tokio::fs::File::open(source)
        .await
        .with_context(|| format!("reading {}", source.display()))?;
    let mut reader = tokio::io::BufReader::new(file);
    let (mut line, mut expected) = (Vec::new(), 0usize);
    // Line by line: the source may be a month of tickets.
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .await
            .with_context(|| format!("reading {}", source.display()))?;
        if read == 0 {
            break;
        }
        let record = line.strip_suffix(b"\n").unwrap_or(&line);
        if record.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let fate = judge(
            record,
            settings.batch.max_event_bytes,
            price,
            &settings.batch.contract,
        );
        if matches!(fate, Err(Unsent::DeadLetter { .. })) {
            expected += 1;
        }
    }
    if expected > 0 {
        bail!(
            "the dead-letter file {} does not exist, but {expected} record(s) of {} decode to a \
             dead letter: name the file `replay` wrote them to (--dlq-file or DLQ_FILE)",
            letters.display(),
            source.display()
        );
    }
    Ok(())
}

async fn run(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let range = TimeRange::parse(&args.from, args.to.as_deref(), Utc::now())?;
    let settings = config::pipeline(&args.pipeline)?;
    let price = PriceFeed::start(settings.price.clone(), CancellationToken::new())
        .await
        .context("an ETH/USD price is needed for signed USD micros (set ETH_USD_PRICE or fix PRICE_ORACLE_URL)")?
        .current()
        .price;
    if let Some(file) = &args.file {
        dead_letters_present(file, &args.dlq_file, &price, &settings).await?;
    }
    let openmeter = settings.openmeter;
    let (source, dead_letters) = match &args.file {
        Some(file) => (
            SourceSpec::File(file.clone()),
            SourceSpec::File(args.dlq_file.clone()),
        ),
        None => app::audit_sources(&config::kafka(&args.kafka)),
    };
    let mut audit = app::audit(
        app::client(&openmeter.client, Role::OneShot)?,
        price,
        (source, dead_letters),
        &settings.batch,
        range,
        args.settle,
    );
    audit.config.mode = args.mode;
    audit.config.fingerprints = !args.no_fingerprints;
    audit.config.progress = true;
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
    super::out::text(report.render(args.format));
    Ok(if report.discrepancies() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
