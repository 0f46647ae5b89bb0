//! `replay FILE|-` (backfills, and `--dry-run` with no network) and
//! `dlq replay` (dead letters back through the pipeline).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde_json::json;
use tokio::io::{AsyncBufRead, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::args::{DlqReplayArgs, PipelineArgs, ReplayArgs};
use super::config;
use super::signal::shutdown_signal;
use crate::app;
use crate::commit::OffsetTracker;
use crate::contract::Contract;
use crate::dlq::{letter_line, DeadLetterSink};
use crate::domain::EthUsdPrice;
use crate::health::Health;
use crate::pipeline::Pipeline;
use crate::pipeline::{judge, ToSend, Unsent};
use crate::settle::Tally;
use crate::source::file::{payload_line, read_lines};

pub(super) async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if args.dry_run {
        let Some(price) = args.pipeline.price.eth_usd_price else {
            bail!("--dry-run uses no network: set ETH_USD_PRICE (or --eth-usd-price)");
        };
        let contract = config::contract(&args.pipeline);
        let max_bytes = args.pipeline.batch.max_event_bytes;
        return dry_run(&args.file, &price, max_bytes, &contract).await;
    }
    let cancel = shutdown_signal();
    let dlq = DeadLetterSink::file(&args.dlq_file);
    let pipeline = start_pipeline(&args.pipeline, dlq, Arc::default(), &cancel).await?;
    let name = args.file.display().to_string();
    let (settled, read) = pipeline
        .run_file(open(&args.file).await?, payload_line, &name, &cancel)
        .await?;
    let tally = pipeline.tally();
    let unsent = tally.unsettled();
    say!(
        "read {}, delivered {}, skipped {}, dead-lettered {}{}{}",
        Tally::get(&tally.read),
        Tally::get(&tally.delivered),
        Tally::get(&tally.skipped),
        Tally::get(&tally.dead_lettered),
        see(Tally::get(&tally.dead_lettered), &args.dlq_file),
        if unsent > 0 {
            format!(", not sent {unsent}")
        } else {
            String::new()
        }
    );
    let done = settled && read.ended;
    if !done {
        say!("{}", stopped(&pipeline));
        say!(
            "not sent: {unsent} event(s){}; run the same replay again once that is fixed \
             (OpenMeter keeps one copy of each event, {} one of each dead letter)",
            if read.ended {
                ""
            } else {
                " and the rest of the input, which was not read"
            },
            args.dlq_file.display()
        );
    }
    Ok(exit(done))
}

/// Why a one-shot pipeline stopped before the end of its input: it gave up
/// on a failure that concerns every event, or it was interrupted.
fn stopped(pipeline: &Pipeline) -> String {
    match pipeline.gave_up() {
        Some(why) => format!("stopped: {why}"),
        None => "stopped: interrupted".to_owned(),
    }
}

/// ` (see FILE)` after a count of dead letters, when there are any.
fn see(dead: u64, file: &Path) -> String {
    if dead > 0 {
        format!(" (see {})", file.display())
    } else {
        String::new()
    }
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
    while let Some(record) = rx.recv().await {
        let line = match judge(&record.payload, max_bytes, price, contract) {
            Ok(ToSend { event, .. }) => serde_json::to_string(&event)?,
            Err(Unsent::Skip(reason)) => json!({ "skip": reason.to_string() }).to_string(),
            Err(Unsent::DeadLetter { reason, .. }) => json!({ "dead_letter": reason }).to_string(),
        };
        say!("{line}");
    }
    reading.await??;
    Ok(ExitCode::SUCCESS)
}

/// `dlq replay --file`.
pub(super) async fn dlq_replay(file: PathBuf, args: DlqReplayArgs) -> anyhow::Result<ExitCode> {
    let out = args.dlq_out.clone().unwrap_or_else(|| again_path(&file));
    if out == file {
        bail!("--dlq-out must differ from --file, or letters that fail again would be replayed for ever");
    }
    let cancel = shutdown_signal();
    let dlq = DeadLetterSink::file(&out);
    let pipeline = start_pipeline(&args.pipeline, dlq.clone(), Arc::default(), &cancel).await?;
    let name = file.display().to_string();
    let (settled, read) = pipeline
        .run_file(open(&file).await?, letter_line, &name, &cancel)
        .await?;
    let replayed = Replayed::of(&pipeline.tally(), dlq.repeated());
    say!("{}", replayed.summary(&name, &out.display()));
    if !settled || !read.ended {
        say!("{}", stopped(&pipeline));
    }
    if read.unreadable > 0 {
        say!(
            "{} line(s) of {name} were not dead letters and were left alone",
            read.unreadable
        );
    }
    let done = settled && read.ended && read.unreadable == 0;
    Ok(exit(done && replayed.all_billed()))
}

/// What a dead-letter replay did, for its summary.
pub(super) struct Replayed {
    read: u64,
    delivered: u64,
    skipped: u64,
    again: u64,
    /// Of `again`, letters the output held already (a file: not written twice).
    repeated: u64,
    pub(super) not_replayed: u64,
}

impl Replayed {
    pub(super) fn of(tally: &Tally, repeated: u64) -> Self {
        Self {
            read: Tally::get(&tally.read),
            delivered: Tally::get(&tally.delivered),
            skipped: Tally::get(&tally.skipped),
            again: Tally::get(&tally.dead_lettered),
            repeated,
            not_replayed: tally.unsettled(),
        }
    }

    /// Every letter read was billed (or is not billable): none failed
    /// again, none was left unreplayed.
    pub(super) fn all_billed(&self) -> bool {
        self.again == 0 && self.not_replayed == 0
    }

    /// One line of counts, then, when letters failed again, a line that
    /// says so and where they are.
    pub(super) fn summary(&self, from: &str, out: &dyn fmt::Display) -> String {
        let mut text = format!(
            "read {} dead letter(s) from {from}: delivered {}, skipped {}, dead-lettered again {}, not replayed {}",
            self.read, self.delivered, self.skipped, self.again, self.not_replayed
        );
        if self.again > 0 {
            text.push_str(&format!(
                "\n{} dead letter(s) failed again (their reasons are in {out}",
                self.again
            ));
            if self.repeated > 0 {
                text.push_str(&format!(
                    "; {} of them were there already, from an earlier replay, and were not written twice",
                    self.repeated
                ));
            }
            text.push_str("): fix the cause, then replay them again");
        }
        text
    }
}

/// The pipeline of `replay` and `dlq replay --file`, from their arguments;
/// no `/ready` serves its health.
async fn start_pipeline(
    args: &PipelineArgs,
    dlq: DeadLetterSink,
    tracker: Arc<OffsetTracker>,
    cancel: &CancellationToken,
) -> anyhow::Result<Pipeline> {
    let settings = config::pipeline(args)?;
    let health = Health::default();
    Ok(app::start_pipeline(&settings, dlq, tracker, health, cancel).await?)
}

fn again_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".again.jsonl");
    PathBuf::from(name)
}

fn exit(done: bool) -> ExitCode {
    if done {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
