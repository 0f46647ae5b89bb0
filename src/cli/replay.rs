//! `replay FILE|-` (backfills, and `--dry-run` with no network) and
//! `dlq replay` (dead letters back through the pipeline).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde_json::json;
use tokio::io::{AsyncBufRead, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::args::{DlqReplayArgs, ReplayArgs};
use super::{shutdown_signal, start_pipeline};
use crate::contract::Contract;
use crate::dlq::{letter_line, DeadLetterSink};
use crate::domain::EthUsdPrice;
use crate::pipeline::{judge, Fate};
use crate::settle::{Outcome, Tally};
use crate::source::file::{payload_line, read_lines};

pub(super) async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if args.dry_run {
        let Some(price) = args.pipeline.price.eth_usd_price else {
            bail!("--dry-run uses no network: set ETH_USD_PRICE (or --eth-usd-price)");
        };
        let contract = super::config::contract(&args.pipeline);
        let max_bytes = args.pipeline.batch.max_event_bytes;
        return dry_run(&args.file, &price, max_bytes, &contract).await;
    }
    let cancel = shutdown_signal();
    let dlq = DeadLetterSink::file(&args.dlq_file);
    let pipeline = start_pipeline(&args.pipeline, dlq, Arc::default(), &cancel).await?;
    let name = args.file.display().to_string();
    let settled = pipeline
        .run_lines(open(&args.file).await?, &name, &cancel)
        .await?;
    report(&pipeline.tally(), &args.dlq_file);
    Ok(exit(settled))
}

/// Opens a file, or stdin for `-`.
async fn open(path: &Path) -> anyhow::Result<Box<dyn AsyncBufRead + Unpin + Send>> {
    if path == Path::new("-") {
        return Ok(Box::new(BufReader::new(tokio::io::stdin())));
    }
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(Box::new(BufReader::new(file)))
}

/// Prints, for each line, the CloudEvent that would be sent, or
/// `{"skip": …}` / `{"dead_letter": …}` (the fixtures' format). Lines are
/// read as bytes and judged exactly as `replay` would judge them, so a line
/// that is not UTF-8 is a dead letter here too, not the end of the run.
async fn dry_run(
    path: &Path,
    price: &EthUsdPrice,
    max_bytes: usize,
    contract: &Contract,
) -> anyhow::Result<ExitCode> {
    let (tx, mut rx) = mpsc::channel(256);
    let reading = tokio::spawn(read_lines(
        open(path).await?,
        payload_line,
        Arc::from(path.display().to_string()),
        tx,
        Arc::default(),
        CancellationToken::new(),
    ));
    let mut out = std::io::stdout().lock();
    while let Some(record) = rx.recv().await {
        let line = match judge(&record.payload, max_bytes, price, contract) {
            Fate::Event { event, .. } => serde_json::to_string(&event)?,
            Fate::Settle(Outcome::Skipped(reason)) => {
                json!({ "skip": reason.to_string() }).to_string()
            }
            Fate::Settle(Outcome::DeadLettered { reason, .. }) => {
                json!({ "dead_letter": reason }).to_string()
            }
            Fate::Settle(Outcome::Delivered) => json!({ "delivered": true }).to_string(),
        };
        writeln!(out, "{line}")?;
    }
    reading.await??;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn dlq_replay(args: DlqReplayArgs) -> anyhow::Result<ExitCode> {
    let Some(file) = args.file.clone() else {
        return super::kafka_dlq::replay_topic(args).await;
    };
    let out = args.dlq_out.clone().unwrap_or_else(|| again_path(&file));
    if out == file {
        bail!("--dlq-out must differ from --file, or letters that fail again would be replayed for ever");
    }
    let cancel = shutdown_signal();
    let dlq = DeadLetterSink::file(&out);
    let pipeline = start_pipeline(&args.pipeline, dlq, Arc::default(), &cancel).await?;
    let name = file.display().to_string();
    let (settled, read) = pipeline
        .run_file(open(&file).await?, letter_line, &name, &cancel)
        .await?;
    report(&pipeline.tally(), &out);
    if read.unreadable > 0 {
        eprintln!(
            "{} line(s) of {name} were not dead letters and were left alone",
            read.unreadable
        );
    }
    Ok(exit(settled && read.unreadable == 0))
}

fn again_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".again.jsonl");
    PathBuf::from(name)
}

fn report(tally: &Tally, dlq: &Path) {
    let dead = Tally::get(&tally.dead_lettered);
    eprintln!(
        "read {}, delivered {}, skipped {}, dead-lettered {}{}",
        Tally::get(&tally.read),
        Tally::get(&tally.delivered),
        Tally::get(&tally.skipped),
        dead,
        if dead > 0 {
            format!(" (see {})", dlq.display())
        } else {
            String::new()
        }
    );
}

fn exit(settled: bool) -> ExitCode {
    if settled {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
