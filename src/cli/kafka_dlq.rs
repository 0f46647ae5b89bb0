//! `dlq replay` from the Kafka dead-letter topic.
//!
//! Reads the DLQ topic in its own consumer group (`<group>.dlq-replay`, so
//! progress is remembered between replays) and feeds each original payload
//! back through the pipeline. Letters that fail again are appended to the
//! same topic; a partition stops being read at the first letter written
//! after the replay began, so a replay never chases its own output. The
//! replay ends when every partition reached that point or the topic has
//! been idle for `--idle`. A truncated letter (its original was too large
//! for the topic) is settled with a warning naming the spill file that
//! holds the original: replaying its cut payload would only fail again.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;

use super::args::DlqReplayArgs;
use super::config;
use super::replay::Replayed;
use super::signal::shutdown_signal;
use crate::app;
use crate::commit::OffsetTracker;
use crate::decode::SkipReason;
use crate::dlq::Letter;
use crate::health::Health;
use crate::kafka::ProbeError;
use crate::settle::{Outcome, Settlement};
use crate::source::Record;

/// How long an empty DLQ topic is waited on before the replay ends.
const IDLE: Duration = Duration::from_secs(5);

pub(super) async fn replay_topic(args: DlqReplayArgs) -> anyhow::Result<ExitCode> {
    let cancel = shutdown_signal();
    let settings = config::pipeline(&args.pipeline)?;
    let kafka = config::kafka(&args.kafka);
    let dlq_topic = kafka.dlq_topic.clone();
    let probe = kafka.consumer.clone();
    let topic = dlq_topic.clone();
    match tokio::task::spawn_blocking(move || probe.probe(&topic, "KAFKA_DLQ_TOPIC")).await? {
        Ok(_) => {}
        Err(ProbeError::NoTopic { .. }) => {
            say!("no dead letters to replay: topic {dlq_topic} (KAFKA_DLQ_TOPIC) does not exist");
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e.into()),
    }
    let dlq = app::kafka_dead_letters(&kafka, settings.batch.max_event_bytes)?;
    let tracker = Arc::new(OffsetTracker::default());
    // One health for the replay's pipeline and consumer; no `/ready` serves it.
    let health = Health::default();
    let pipeline =
        app::start_pipeline(&settings, dlq, tracker.clone(), health.clone(), &cancel).await?;
    let letters = app::dlq_replay_consumer(&kafka);
    let source = app::connect_kafka(&letters, tracker.clone(), health)?;

    let started = Utc::now();
    let (tx, rx) = mpsc::channel(pipeline.config.batch_max_events * 2);
    let (raw_tx, mut raw_rx) = mpsc::channel::<Record>(1024);
    let stop = cancel.child_token();
    let reader = tokio::spawn({
        let (source, stop) = (source.clone(), stop.clone());
        async move { source.run(raw_tx, stop).await }
    });
    let settler = pipeline.settler().clone();
    let gate = tokio::spawn(async move {
        let mut done_partitions = std::collections::HashSet::new();
        loop {
            let next = tokio::time::timeout(IDLE, raw_rx.recv()).await;
            let Ok(Some(record)) = next else { break };
            let partition = record.origin.position.partition;
            let letter = Letter::from_topic(&record.payload, &record.headers);
            if letter.written.is_some_and(|t| t >= started) {
                done_partitions.insert(partition);
                continue;
            }
            // Letters after a partition's cut-off stay unsettled (and
            // uncommitted): the next replay picks them up.
            if done_partitions.contains(&partition) {
                continue;
            }
            if let Some(spill) = letter.truncated {
                tracing::warn!(
                    partition,
                    offset = record.origin.position.offset,
                    %spill,
                    "a truncated dead letter cannot be replayed from the topic: replay its full original from the spill file with `ticketmeter dlq replay --file`"
                );
                settler.received(1);
                let mut skipped = Settlement::default();
                skipped.add(
                    record,
                    Outcome::Skipped(SkipReason::TruncatedLetter { spill }),
                );
                settler.settle(skipped).await;
                continue;
            }
            if tx.send(record).await.is_err() {
                break;
            }
        }
        stop.cancel();
    });
    pipeline.run(rx, &cancel).await;
    let _ = gate.await;
    let _ = reader.await;
    source.commit().await?;
    let replayed = Replayed::of(&pipeline.tally(), 0);
    say!("{}", replayed.summary(&dlq_topic, &dlq_topic));
    if let Some(why) = pipeline.gave_up() {
        say!("stopped: {why}");
    }
    if replayed.not_replayed > 0 {
        say!(
            "the letters not replayed stay uncommitted in {dlq_topic} (group {}): the next replay reads them",
            letters.group
        );
    }
    Ok(if replayed.all_billed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
