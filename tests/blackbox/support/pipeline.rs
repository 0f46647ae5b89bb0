//! ticketmeter's pipeline in-process: at a fixed ETH/USD price, over JSON
//! lines, ensuring and delivering through a given OpenMeter client.

use std::path::Path;
use std::sync::Arc;

use ticketmeter::{
    pipeline, DeadLetterSink, EnsureConfig, OffsetTracker, OpenMeterClient, Pipeline,
    PipelineConfig, PriceFeed, Provisioner,
};
use tokio_util::sync::CancellationToken;

use super::double::PLAN;
use super::fixtures::{fixtures_dir, UPSTREAM_EVENTS};

/// Runs today's fixture file through a real pipeline at ETH/USD 3500 with
/// the default settings, ensuring and delivering through `client`; returns
/// the pipeline (for its tally) and whether every record settled.
pub(crate) async fn run_fixtures(client: OpenMeterClient, dlq: DeadLetterSink) -> (Pipeline, bool) {
    let events = fixtures_dir().join(UPSTREAM_EVENTS);
    run_fixtures_with(client, dlq, &events, PipelineConfig::default()).await
}

/// A pipeline at ETH/USD 3500 that ensures the default plan through
/// `client` and dead-letters to `dlq`.
pub(crate) fn test_pipeline(
    client: OpenMeterClient,
    dlq: DeadLetterSink,
    ensure: EnsureConfig,
    config: PipelineConfig,
) -> Pipeline {
    let provisioner = Provisioner::new(client, PLAN.parse().unwrap(), ensure);
    pipeline(
        provisioner,
        dlq,
        Arc::new(OffsetTracker::default()),
        PriceFeed::fixed("3500".parse().unwrap()),
        config,
    )
}

/// Runs the fixture file `events` with the given pipeline settings.
pub(crate) async fn run_fixtures_with(
    client: OpenMeterClient,
    dlq: DeadLetterSink,
    events: &Path,
    config: PipelineConfig,
) -> (Pipeline, bool) {
    let pipeline = test_pipeline(client, dlq, EnsureConfig::default(), config);
    let file = tokio::fs::File::open(events).await.unwrap();
    let settled = pipeline
        .run_lines(
            tokio::io::BufReader::new(file),
            "fixtures",
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    (pipeline, settled)
}

/// Runs `lines` through the pipeline as one JSON-lines stream and asserts
/// that every record settled.
pub(crate) async fn run_lines(pipeline: &Pipeline, lines: &[String]) {
    let text = lines.join("\n") + "\n";
    let settled = pipeline
        .run_lines(
            std::io::Cursor::new(text.into_bytes()),
            "test",
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(settled, "every record settled");
}
