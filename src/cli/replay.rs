//! `replay FILE|-` (backfills, and `--dry-run` with no network) and
//! `dlq replay` (dead letters back through the pipeline).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde_json::json;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::args::{DlqReplayArgs, ReplayArgs};
use super::{shutdown_signal, start_pipeline};
use crate::commit::{OffsetTracker, Position};
use crate::deliver::Tally;
use crate::dlq::{DeadLetterSink, FileEntry};
use crate::domain::EthUsdPrice;
use crate::pipeline::{judge, Fate};
use crate::source::file::read_lines;
use crate::source::Record;

pub async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if args.dry_run {
        let Some(price) = args.pipeline.price.eth_usd_price else {
            bail!("--dry-run uses no network: set ETH_USD_PRICE (or --eth-usd-price)");
        };
        return dry_run(&args.file, &price, args.pipeline.batch.max_event_bytes).await;
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
async fn dry_run(path: &Path, price: &EthUsdPrice, max_bytes: usize) -> anyhow::Result<ExitCode> {
    let (tx, mut rx) = mpsc::channel(256);
    let reading = tokio::spawn(read_lines(
        open(path).await?,
        Arc::from(path.display().to_string()),
        tx,
        Arc::default(),
        CancellationToken::new(),
    ));
    let mut out = std::io::stdout().lock();
    while let Some(record) = rx.recv().await {
        let line = match judge(&record.payload, max_bytes, price) {
            Fate::Event { json, .. } => String::from_utf8_lossy(&json).into_owned(),
            Fate::Skip(reason) => json!({ "skip": reason.to_string() }).to_string(),
            Fate::DeadLetter { reason, .. } => json!({ "dead_letter": reason }).to_string(),
        };
        writeln!(out, "{line}")?;
    }
    reading.await??;
    Ok(ExitCode::SUCCESS)
}

pub async fn dlq_replay(args: DlqReplayArgs) -> anyhow::Result<ExitCode> {
    let Some(file) = args.file.clone() else {
        return super::kafka_dlq::replay_topic(args).await;
    };
    let out = args.dlq_out.clone().unwrap_or_else(|| again_path(&file));
    if out == file {
        bail!("--dlq-out must differ from --file, or letters that fail again would be replayed for ever");
    }
    let cancel = shutdown_signal();
    let tracker = Arc::new(OffsetTracker::default());
    let dlq = DeadLetterSink::file(&out);
    let pipeline = start_pipeline(&args.pipeline, dlq, tracker.clone(), &cancel).await?;
    let (tx, rx) = mpsc::channel(pipeline.config.batch_max_events * 2);
    let reading = tokio::spawn(read_dead_letters(file.clone(), tx, tracker.clone()));
    let settled = pipeline.run(rx, &cancel).await;
    let unreadable = reading.await??;
    report(&pipeline.tally(), &out);
    if unreadable > 0 {
        eprintln!(
            "{unreadable} line(s) of {} were not dead letters and were left alone",
            file.display()
        );
    }
    Ok(exit(settled && unreadable == 0))
}

fn again_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".again.jsonl");
    PathBuf::from(name)
}

/// Feeds a dead-letter file's original payloads into the pipeline; returns
/// how many lines could not be read as dead letters.
async fn read_dead_letters(
    path: PathBuf,
    tx: mpsc::Sender<Record>,
    tracker: Arc<OffsetTracker>,
) -> anyhow::Result<u64> {
    let name: Arc<str> = Arc::from(path.display().to_string());
    let mut lines = open(&path).await?.lines();
    let (mut number, mut unreadable) = (0i64, 0u64);
    while let Some(line) = lines.next_line().await? {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str::<FileEntry>(&line)
            .ok()
            .and_then(|entry| entry.into_record(name.clone(), number));
        let Some(record) = record else {
            eprintln!("{}:{number}: not a dead letter", path.display());
            unreadable += 1;
            continue;
        };
        tracker.read(Position {
            partition: 0,
            offset: number,
        });
        if tx.send(record).await.is_err() {
            break;
        }
    }
    Ok(unreadable)
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
