//! Assembly: the one place the collector, and each part the other commands
//! share, is built from one typed [`Config`]. Nothing here reads the
//! environment or installs signal handlers: `cli` fills the `Config` and
//! owns the shutdown, so the whole collector can also run in-process under
//! a test's control (zero2prod's `Application`, mini-redis's
//! `server::run(listener, shutdown)`).

mod api;
mod config;
mod error;
mod parts;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

pub(crate) use api::ProvisioningApi;
pub use config::Config;
pub(crate) use config::{
    ApiSettings, ContinuousAuditSettings, KafkaSettings, OpenMeterSettings, PipelineSettings,
};
pub use error::AppError;
pub use parts::pipeline;
pub(crate) use parts::{
    audit, audit_sources, client, connect_kafka, dlq_replay_consumer, kafka_dead_letters,
    openmeter_readiness, pipeline_for, provisioner, provisioner_for, start_pipeline, Role,
};

use crate::audit::continuous::ContinuousAudit;
use crate::commit::OffsetTracker;
use crate::ensure::Provisioner;
use crate::health::Health;
use crate::kafka::{KafkaConfig, ProbeError};
use crate::pipeline::Pipeline;
use crate::settle::Tally;
use crate::source::kafka::KafkaSource;

/// The collector, built and connected, not yet running.
pub struct Application {
    pipeline: Pipeline,
    source: Arc<KafkaSource>,
    api: ProvisioningApi,
    audit: Option<ContinuousAudit>,
    commit_interval: Duration,
    probes: Probes,
    /// Stops every task; fired by the shutdown, or by the pipeline itself
    /// when a batch task fails.
    cancel: CancellationToken,
    /// Stops the price refresher if the application is dropped unrun.
    _stop_on_drop: DropGuard,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Every record read was settled before the end (else the rest is
    /// redelivered after a restart: its offsets were not committed).
    pub settled: bool,
    /// A task panicked or a batch task failed (logged); `run` exits
    /// non-zero.
    pub failed: bool,
}

impl Application {
    /// Checks what can be checked without the network (the API's guard),
    /// starts the price feed (no start without a price), then connects
    /// Kafka and binds the API: a configuration error stops start-up before
    /// librdkafka starts talking. Nothing is read until
    /// [`Application::run_until_stopped`], which also probes the brokers and
    /// OpenMeter.
    pub async fn build(config: Config) -> Result<Self, AppError> {
        config.api.guard()?;
        let cancel = CancellationToken::new();
        let stop_on_drop = cancel.clone().drop_guard();
        let price = parts::start_price(&config.pipeline, &cancel).await?;
        let max_event_bytes = config.pipeline.batch.max_event_bytes;
        let dlq = kafka_dead_letters(&config.kafka, max_event_bytes)?;
        let tracker = Arc::new(OffsetTracker::default());
        let health = Health::default();
        let mut pipeline = pipeline_for(
            Role::Pipeline,
            &config.pipeline,
            price,
            dlq,
            tracker.clone(),
            health.clone(),
        )?;
        let source = connect_kafka(&config.kafka.consumer, tracker, health.clone())?;
        let chain = parts::chain_tracker(config.chain, &pipeline);
        pipeline.chain = Some(chain.clone());
        source.listen(Arc::new(chain.clone()));
        tokio::spawn(chain.run(health.clone(), cancel.clone()));
        let provisioner = provisioner_for(pipeline.provisioner(), Role::OneShot);
        let ready = parts::readiness(
            source.clone(),
            provisioner.clone(),
            pipeline.price.clone(),
            config.kafka.consumer.stall_after,
            health.clone(),
        );
        let subjects = config.pipeline.batch.contract.subjects;
        let api =
            ProvisioningApi::bind(&config.api, provisioner.clone(), subjects, Some(ready)).await?;
        let audit = config
            .audit
            .map(|settings| parts::continuous_audit(&settings, &config.kafka, &pipeline));
        Ok(Self {
            pipeline,
            source,
            api,
            audit,
            commit_interval: config.kafka.consumer.commit_interval,
            probes: Probes {
                kafka: config.kafka.consumer,
                provisioner,
                health,
            },
            cancel,
            _stop_on_drop: stop_on_drop,
        })
    }

    /// Where the provisioning API listens (the real port when 0 was asked
    /// for, so tests can run several collectors).
    pub fn api_addr(&self) -> SocketAddr {
        self.api.local_addr()
    }

    pub fn api_port(&self) -> u16 {
        self.api_addr().port()
    }

    /// Reads, delivers and commits, audits and serves the API until
    /// `shutdown` resolves (or a batch task fails); then drains in-flight
    /// batches (up to `SHUTDOWN_TIMEOUT`), commits what settled and stops.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> Stopped {
        let Self {
            pipeline,
            source,
            api,
            audit,
            commit_interval,
            probes,
            cancel,
            _stop_on_drop,
        } = self;
        tokio::spawn(probes.run());
        pipeline.start_warm_up(cancel.clone()).await;
        let api = tokio::spawn(api.serve(cancel.clone().cancelled_owned()));
        let auditor = audit.map(|audit| tokio::spawn(audit.run(cancel.clone())));
        let (tx, rx) = mpsc::channel(pipeline.config.batch_max_events * 2);
        let reader = tokio::spawn({
            let (source, cancel) = (source.clone(), cancel.clone());
            async move { source.run(tx, cancel).await }
        });
        let committer = tokio::spawn({
            let (source, cancel) = (source.clone(), cancel.clone());
            async move { source.commit_periodically(commit_interval, cancel).await }
        });
        let settled = until(shutdown, pipeline.run(rx, &cancel), &cancel).await;
        cancel.cancel();
        let mut failed = Tally::get(&pipeline.tally().crashed_batches) > 0;
        failed |= joined("Kafka reader", reader.await);
        failed |= joined("committer", committer.await);
        if let Some(auditor) = auditor {
            failed |= joined("continuous audit", auditor.await);
        }
        let committed = match source.commit().await {
            Ok(partitions) => format!("{partitions} partition(s)"),
            Err(e) => format!("failed: {e}"),
        };
        tracing::info!(settled, committed, failed, "collector stopped");
        failed |= joined("provisioning API", api.await);
        Stopped { settled, failed }
    }
}

/// What `run` checks once at start-up, in the background, so that a
/// broken connection is named at once, in one line that says which
/// setting to check, instead of only by librdkafka's retries or the first
/// batch that cannot be delivered.
struct Probes {
    kafka: KafkaConfig,
    provisioner: Provisioner,
    health: Health,
}

impl Probes {
    async fn run(self) {
        let Self {
            kafka,
            provisioner,
            health,
        } = self;
        let openmeter = async move {
            if let Err(e) = provisioner.default_plan().await {
                tracing::error!(error = %e, "OpenMeter cannot bill yet; events are held until it can");
            }
        };
        let brokers = tokio::task::spawn_blocking(move || {
            match kafka.probe(&kafka.topic, "KAFKA_GATEWAY_TOPIC") {
                Ok(partitions) => {
                    tracing::info!(topic = %kafka.topic, partitions, "Kafka topic found")
                }
                Err(e @ ProbeError::Unreachable { .. }) => {
                    if let ProbeError::Unreachable { reason, .. } = &e {
                        health.brokers_down(reason);
                    }
                    crate::kafka::say_unreachable(&e);
                }
                Err(e) => tracing::error!(error = %e, "nothing to read until it exists"),
            }
        });
        let (_, _) = tokio::join!(openmeter, brokers);
    }
}

/// Runs `work` to its end, firing `cancel` if `shutdown` resolves first so
/// that `work` winds down.
async fn until<T>(
    shutdown: impl Future<Output = ()>,
    work: impl Future<Output = T>,
    cancel: &CancellationToken,
) -> T {
    tokio::pin!(work);
    tokio::select! {
        done = &mut work => return done,
        () = shutdown => cancel.cancel(),
    }
    work.await
}

/// Whether a task of `run` panicked (logged): `run` then exits non-zero.
fn joined<T>(task: &str, result: Result<T, tokio::task::JoinError>) -> bool {
    match result {
        Ok(_) => false,
        Err(e) => {
            tracing::error!(task, error = %e, "collector task failed");
            true
        }
    }
}
