//! The parts the commands share, each built in one place: `run` assembles
//! all of them, `serve`, `replay`, `dlq replay`, `audit` and `check` the
//! ones they need.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::config::{ContinuousAuditSettings, KafkaSettings, OpenMeterSettings, PipelineSettings};
use super::error::AppError;
use crate::api::{Readiness, ReadyCheck};
use crate::audit::continuous::ContinuousAudit;
use crate::audit::range::TimeRange;
use crate::audit::source::SourceSpec;
use crate::audit::{Audit, AuditConfig, Mode};
use crate::chain::tracker::{ChainSettings, Tracker as ChainTracker};
use crate::commit::OffsetTracker;
use crate::deliver::Deliverer;
use crate::dlq::DeadLetterSink;
use crate::domain::EthUsdPrice;
use crate::ensure::Provisioner;
use crate::health::Health;
use crate::kafka::KafkaConfig;
use crate::openmeter::{ClientConfig, OpenMeterClient};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::price::PriceFeed;
use crate::retry::{Backoff, RetryPolicy};
use crate::settle::Settler;
use crate::source::kafka::{KafkaSource, PartitionListener};

/// Whom an OpenMeter client serves, and so how its calls are retried: the
/// one place a retry policy is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The collector: one attempt per call, because delivery's hold loop
    /// (and the DLQ sink's) retry until stopped, under
    /// [`RetryPolicy::pipeline`].
    Pipeline,
    /// Whoever answers someone: the API's `/ensure` (under `run` and
    /// `serve` alike), the commands, bootstrap and the audit, continuous or
    /// not, repairs included.
    OneShot,
}

impl Role {
    pub(crate) fn retry(self) -> RetryPolicy {
        match self {
            Self::Pipeline => RetryPolicy::once(),
            Self::OneShot => RetryPolicy::one_shot(),
        }
    }

    /// How a pipeline of this role retries events held by a failure that
    /// concerns them all (OpenMeter unreachable, the token, the URL, no
    /// plan): the collector until it is stopped (the topic is the buffer),
    /// a one-shot command (`replay`, `dlq replay`) as many times as a
    /// one-shot client, then it gives up and says what it did not send.
    fn hold(self, backoff: Backoff) -> RetryPolicy {
        match self {
            Self::Pipeline => RetryPolicy::pipeline(backoff),
            Self::OneShot => RetryPolicy {
                backoff,
                ..RetryPolicy::one_shot()
            },
        }
    }
}

/// The OpenMeter client of `role`.
pub(crate) fn client(config: &ClientConfig, role: Role) -> Result<OpenMeterClient, AppError> {
    let mut config = config.clone();
    config.retry = role.retry();
    Ok(OpenMeterClient::new(config)?)
}

/// `provisioner` (its caches and in-flight ensures shared) with a client of
/// `role`.
pub(crate) fn provisioner_for(provisioner: &Provisioner, role: Role) -> Provisioner {
    provisioner.with_client(provisioner.client().with_retry(role.retry()))
}

/// Ensures customers through `client`.
pub(crate) fn provisioner(client: OpenMeterClient, settings: &OpenMeterSettings) -> Provisioner {
    Provisioner::new(client, settings.plan_key.clone(), settings.ensure)
        .with_owner_plan(settings.owner_plan_key.clone())
}

/// The price every pipeline bills at; there is no start without one. Its
/// refresher stops with `cancel`.
pub(crate) async fn start_price(
    settings: &PipelineSettings,
    cancel: &CancellationToken,
) -> Result<PriceFeed, AppError> {
    PriceFeed::start(settings.price.clone(), cancel.child_token())
        .await
        .map_err(AppError::Price)
}

/// The pipeline of `role` (`run`'s, or a one-shot command's: see
/// [`Role::hold`]), billing at `price` and reporting to `health`.
pub(crate) fn pipeline_for(
    role: Role,
    settings: &PipelineSettings,
    price: PriceFeed,
    dlq: DeadLetterSink,
    tracker: Arc<OffsetTracker>,
    health: Health,
) -> Result<Pipeline, AppError> {
    let client = client(&settings.openmeter.client, Role::Pipeline)?;
    let provisioner = provisioner(client, &settings.openmeter);
    let hold = role.hold(settings.batch.backoff);
    Ok(assemble(
        provisioner,
        dlq,
        tracker,
        price,
        settings.batch,
        health,
        hold,
    ))
}

/// The pipeline of a one-shot command (`replay`, `dlq replay`), reporting
/// to `health`: it gives up on a failure that concerns every event after
/// the one-shot retries. The price comes first.
pub(crate) async fn start_pipeline(
    settings: &PipelineSettings,
    dlq: DeadLetterSink,
    tracker: Arc<OffsetTracker>,
    health: Health,
    cancel: &CancellationToken,
) -> Result<Pipeline, AppError> {
    let price = start_price(settings, cancel).await?;
    pipeline_for(Role::OneShot, settings, price, dlq, tracker, health)
}

/// A pipeline delivering through `provisioner` and dead-lettering to `dlq`,
/// with a health of its own: no `/ready` serves it.
pub fn pipeline(
    provisioner: Provisioner,
    dlq: DeadLetterSink,
    tracker: Arc<OffsetTracker>,
    price: PriceFeed,
    config: PipelineConfig,
) -> Pipeline {
    let hold = RetryPolicy::pipeline(config.backoff);
    assemble(
        provisioner,
        dlq,
        tracker,
        price,
        config,
        Health::default(),
        hold,
    )
}

/// A pipeline whose delivery and dead-letter sink report to `health`;
/// delivery retries held events by `hold`, the dead-letter sink until it
/// is stopped.
fn assemble(
    provisioner: Provisioner,
    dlq: DeadLetterSink,
    tracker: Arc<OffsetTracker>,
    price: PriceFeed,
    config: PipelineConfig,
    health: Health,
    hold: RetryPolicy,
) -> Pipeline {
    let dlq = dlq.in_pipeline(health.clone(), RetryPolicy::pipeline(config.backoff));
    let deliverer = Deliverer::new(provisioner, hold, config.delivery(), health);
    Pipeline {
        deliverer: Arc::new(deliverer),
        settler: Arc::new(Settler::new(dlq, tracker)),
        price,
        config,
        chain: None,
    }
}

/// The DLQ topic's producer; letters it refuses spill to files.
pub(crate) fn kafka_dead_letters(
    settings: &KafkaSettings,
    max_event_bytes: usize,
) -> Result<DeadLetterSink, AppError> {
    Ok(DeadLetterSink::kafka(
        &settings.consumer,
        settings.dlq_topic.clone(),
        max_event_bytes,
        &settings.spill_dir,
    )?)
}

/// A consumer of `config.topic` in `config.group`, settling into `tracker`
/// and reporting stalled partitions to `health`.
pub(crate) fn connect_kafka(
    config: &KafkaConfig,
    tracker: Arc<OffsetTracker>,
    health: Health,
) -> Result<Arc<KafkaSource>, AppError> {
    let source = KafkaSource::connect(config, tracker, health).map_err(AppError::Kafka)?;
    Ok(Arc::new(source))
}

/// `dlq replay`'s consumer of the dead-letter topic, in a group of its own
/// (`<group>.dlq-replay`) so each replay goes on from where the last one
/// stopped.
pub(crate) fn dlq_replay_consumer(settings: &KafkaSettings) -> KafkaConfig {
    let mut letters = settings.consumer.clone();
    letters.topic = settings.dlq_topic.clone();
    letters.group = format!("{}.dlq-replay", letters.group);
    letters
}

/// What an audit reads: the gateway topic and its dead-letter topic.
pub(crate) fn audit_sources(settings: &KafkaSettings) -> (SourceSpec, SourceSpec) {
    let mut dlq = settings.consumer.clone();
    dlq.topic = settings.dlq_topic.clone();
    (
        SourceSpec::Kafka(settings.consumer.clone()),
        SourceSpec::Kafka(dlq),
    )
}

/// An audit by totals of `range` of `sources` (the records, the dead
/// letters) against what a pipeline configured as `batch` sent (its
/// contract, event time, collection window and size limit), at `price`,
/// reading OpenMeter through `client`.
pub(crate) fn audit(
    client: OpenMeterClient,
    price: EthUsdPrice,
    (source, dead_letters): (SourceSpec, SourceSpec),
    batch: &PipelineConfig,
    range: TimeRange,
    settle: Duration,
) -> Audit {
    Audit {
        client,
        price,
        source,
        dead_letters: Some(dead_letters),
        accounts: None,
        config: AuditConfig {
            range,
            mode: Mode::Totals,
            fingerprints: true,
            event_time: batch.billing.event_time,
            settle,
            collection_window: batch.billing.collection_window,
            max_event_bytes: batch.max_event_bytes,
            contract: batch.contract,
            progress: false,
        },
    }
}

/// The continuous audit of `run`, at the pipeline's price and sharing its
/// provisioner's caches; its calls (reads, ensures and resends of a repair)
/// are retried like a one-shot command's.
pub(super) fn continuous_audit(
    settings: &ContinuousAuditSettings,
    kafka: &KafkaSettings,
    pipeline: &Pipeline,
) -> ContinuousAudit {
    let provisioner = provisioner_for(pipeline.provisioner(), Role::OneShot);
    let audit = audit(
        provisioner.client().clone(),
        pipeline.price.current().price,
        audit_sources(kafka),
        &pipeline.config,
        TimeRange::settled_window(Utc::now(), settings.window, settings.settle),
        settings.settle,
    );
    tracing::info!(
        every = %humantime::format_duration(settings.interval),
        window = %humantime::format_duration(settings.window),
        repair = settings.repair,
        "continuous audit on"
    );
    ContinuousAudit {
        audit,
        interval: settings.interval,
        window: settings.window,
        repair: settings.repair.then_some(provisioner),
        price: pipeline.price.clone(),
        accounts: None,
    }
}

/// The collector's session-chain tracking, reading names under the
/// pipeline's contract and estimating at its price.
pub(super) fn chain_tracker(settings: ChainSettings, pipeline: &Pipeline) -> ChainTracker {
    ChainTracker::new(
        settings,
        pipeline.config.contract,
        pipeline.config.max_event_bytes,
        pipeline.price.clone(),
    )
}

/// The Kafka source tells the chain tracker what it owns.
impl PartitionListener for ChainTracker {
    fn ownership(&self, owned: usize, total: usize) {
        ChainTracker::ownership(self, owned, total);
    }

    fn caught_up(&self, partition: i32) {
        ChainTracker::caught_up(self, partition);
    }

    fn revoked(&self) {
        ChainTracker::revoked(self);
    }
}

/// `/ready`: partitions assigned, the price fresh (the collector never
/// starts without one), OpenMeter answering with a subscribable plan, and
/// billing progressing (no stalled partition, no hold over `STALL_AFTER`,
/// as the collector's `health` knows). Each failed check that has a cause
/// in words is also a `problems` entry: the brokers out of reach, what
/// OpenMeter said.
pub(super) fn readiness(
    source: Arc<KafkaSource>,
    provisioner: Provisioner,
    price: PriceFeed,
    stall_after: Duration,
    health: Health,
) -> ReadyCheck {
    Arc::new(move || {
        let (source, provisioner, price) = (source.clone(), provisioner.clone(), price.clone());
        let health = health.clone();
        Box::pin(async move {
            let openmeter = openmeter_problem(&provisioner).await;
            let mut problems = health.problems(stall_after);
            let progress = problems.is_empty();
            problems.extend(openmeter.clone());
            Readiness {
                checks: vec![
                    ("partitions_assigned".to_owned(), source.assigned()),
                    ("price_fresh".to_owned(), price.is_fresh()),
                    ("openmeter".to_owned(), openmeter.is_none()),
                    ("progress".to_owned(), progress),
                ],
                problems,
            }
        })
    })
}

/// `/ready` of `serve`: OpenMeter answering with a subscribable plan,
/// which is all `/ensure` needs.
pub(crate) fn openmeter_readiness(provisioner: Provisioner) -> ReadyCheck {
    Arc::new(move || {
        let provisioner = provisioner.clone();
        Box::pin(async move {
            let problem = openmeter_problem(&provisioner).await;
            Readiness {
                checks: vec![("openmeter".to_owned(), problem.is_none())],
                problems: problem.into_iter().collect(),
            }
        })
    })
}

/// Why OpenMeter cannot bill a new customer now (the token, the URL, no
/// subscribable plan, unreachable), in its own words; `None` when it can.
async fn openmeter_problem(provisioner: &Provisioner) -> Option<String> {
    provisioner
        .default_plan()
        .await
        .err()
        .map(|e| e.to_string())
}
