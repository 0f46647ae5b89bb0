//! The `ticketmeter` command line: the binary's edge, where configuration
//! becomes components and errors become exit codes (`anyhow` lives here only).

pub mod args;
mod audit;
mod check;
#[cfg(feature = "double")]
mod demo;
mod kafka_dlq;
mod replay;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use args::Cli;
use args::{
    ApiArgs, BatchArgs, Command, EnsureArgs, KafkaArgs, OpenMeterArgs, PipelineArgs, PriceArgs,
};

use crate::api::{self, ApiState, Readiness, ReadyCheck};
use crate::bootstrap::{
    bootstrap, check_catalog_against_collector, BootstrapError, BootstrapOptions, Catalog,
};
use crate::commit::OffsetTracker;
use crate::deliver::{BillingPolicy, Deliverer, Tally};
use crate::dlq::DeadLetterSink;
use crate::domain::Identity;
use crate::ensure::{EnsureConfig, Provisioner};
use crate::health::health;
use crate::openmeter::{ClientConfig, Endpoint, OpenMeterClient};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::price::{PriceFeed, PriceSource};
use crate::retry::Backoff;
use crate::secret::Secret;
use crate::source::kafka::{KafkaConfig, KafkaSource};

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(a) => run_collector(a).await,
        Command::Serve(a) => serve(a).await,
        Command::Ensure(a) => ensure_one(a).await,
        Command::Replay(a) => replay::replay(a).await,
        Command::Dlq(args::DlqCommand::Replay(a)) => replay::dlq_replay(a).await,
        Command::Bootstrap(a) => bootstrap_catalog(a).await,
        #[cfg(feature = "double")]
        Command::Demo(a) => demo::demo(a).await,
        #[cfg(feature = "double")]
        Command::Double(a) => double(a).await,
        Command::Check(a) => check::check(a).await,
        Command::Healthcheck(a) => healthcheck(a).await,
        Command::Audit(a) => audit::audit(a).await,
    }
}

/// Attempts per call of a client whose caller does not retry (the API, the
/// one-shot commands).
pub const ONE_SHOT_ATTEMPTS: u32 = 4;
/// The pipeline's client makes one attempt per call: the delivery stage's
/// hold-and-retry loop is its only retry layer.
pub const PIPELINE_ATTEMPTS: u32 = 1;

/// The OpenMeter client from `OPENMETER_*`, making up to `attempts`
/// attempts per call.
pub fn client(args: &OpenMeterArgs, attempts: u32) -> anyhow::Result<OpenMeterClient> {
    let Some(url) = args
        .openmeter_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
    else {
        bail!("OPENMETER_URL is required (e.g. https://us.api.konghq.com/v3/openmeter or http://openmeter:8888/api/v3)");
    };
    let endpoint = Endpoint::parse(url, args.openmeter_ingest_url.as_deref())?;
    let mut config = ClientConfig::new(endpoint, token(args)?);
    config.timeout = args.openmeter_timeout;
    config.attempts = attempts;
    Ok(OpenMeterClient::new(config)?)
}

fn token(args: &OpenMeterArgs) -> anyhow::Result<Option<Secret>> {
    if let Some(key) = args
        .openmeter_api_key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        return Ok(Some(Secret::from(key)));
    }
    let Some(path) = &args.openmeter_api_key_file else {
        return Ok(None);
    };
    let key = std::fs::read_to_string(path)
        .with_context(|| format!("reading OPENMETER_API_KEY_FILE {}", path.display()))?;
    Ok(Some(Secret::from(key.trim())))
}

pub fn provisioner(client: OpenMeterClient, args: &EnsureArgs) -> Provisioner {
    let config = EnsureConfig {
        cache_ttl: args.ensure_cache_ttl,
        cache_capacity: args.ensure_cache_capacity,
        plan_ttl: args.plan_cache_ttl,
        refusal_ttl: args.ensure_refusal_ttl,
    };
    Provisioner::new(client, args.default_plan_key.clone(), config)
}

pub fn price_source(args: &PriceArgs) -> PriceSource {
    match args.eth_usd_price {
        Some(price) => PriceSource::Fixed(price),
        None => PriceSource::Oracle {
            url: args.price_oracle_url.clone(),
            refresh: args.price_oracle_refresh,
        },
    }
}

pub fn pipeline_config(args: &BatchArgs) -> PipelineConfig {
    PipelineConfig {
        batch_max_events: args.batch_max_events.max(1),
        batch_max_bytes: args.batch_max_bytes,
        linger: args.batch_linger,
        max_in_flight: args.batch_max_in_flight.max(1),
        max_event_bytes: args.max_event_bytes,
        shutdown_timeout: args.shutdown_timeout,
        billing: BillingPolicy {
            event_time: args.event_time,
            collection_window: args.billing_collection_window,
        },
        backoff: Backoff::default(),
    }
}

/// The pipeline `run`, `replay` and `dlq replay` share. The price comes
/// first: there is no start without one.
pub async fn start_pipeline(
    args: &PipelineArgs,
    dlq: DeadLetterSink,
    tracker: Arc<OffsetTracker>,
    cancel: &CancellationToken,
) -> anyhow::Result<Pipeline> {
    let price = PriceFeed::start(price_source(&args.price), cancel.child_token())
        .await
        .context(
            "cannot start without an ETH/USD price (set ETH_USD_PRICE or fix PRICE_ORACLE_URL)",
        )?;
    let provisioner = provisioner(client(&args.openmeter, PIPELINE_ATTEMPTS)?, &args.ensure);
    Ok(pipeline(
        provisioner,
        dlq,
        tracker,
        price,
        pipeline_config(&args.batch),
    ))
}

/// A pipeline delivering through `provisioner` and dead-lettering to `dlq`.
pub fn pipeline(
    provisioner: Provisioner,
    dlq: DeadLetterSink,
    tracker: Arc<OffsetTracker>,
    price: PriceFeed,
    config: PipelineConfig,
) -> Pipeline {
    let deliverer = Deliverer::new(
        provisioner.client().clone(),
        provisioner,
        dlq,
        tracker,
        config.backoff,
        config.billing,
    );
    Pipeline {
        deliverer: Arc::new(deliverer),
        price,
        config,
    }
}

pub fn kafka_config(args: &KafkaArgs) -> KafkaConfig {
    KafkaConfig {
        brokers: args.kafka_brokers.clone(),
        topic: args.kafka_gateway_topic.clone(),
        group: args.kafka_consumer_group.clone(),
        sasl_username: args.kafka_sasl_username.clone().filter(|u| !u.is_empty()),
        sasl_password: args.kafka_sasl_password.clone().map(Secret::from),
        sasl_mechanism: args.kafka_sasl_mechanism.clone(),
        tls: args.kafka_tls,
        extra: kafka_passthrough(std::env::vars()),
        commit_interval: args.kafka_commit_interval,
        stall_after: args.stall_after,
    }
}

/// `KAFKA_OPT_SESSION_TIMEOUT_MS=6000` → `session.timeout.ms=6000`.
pub fn kafka_passthrough(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    vars.filter_map(|(k, v)| {
        let name = k.strip_prefix("KAFKA_OPT_")?;
        Some((name.to_ascii_lowercase().replace('_', "."), v))
    })
    .collect()
}

/// Cancelled on SIGINT or SIGTERM.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        cancel.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down: flushing in-flight batches");
        cancel.cancel();
    });
    token
}

/// Binds the provisioning API and serves it until `cancel` fires.
pub async fn start_api(
    args: &ApiArgs,
    provisioner: Provisioner,
    ready: Option<ReadyCheck>,
    cancel: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let token = args
        .provision_token
        .clone()
        .filter(|t| !t.is_empty())
        .map(Secret::from);
    if !args.provision_bind.is_loopback() && token.is_none() {
        bail!(
            "PROVISION_BIND={} is not a loopback address: set PROVISION_TOKEN so /ensure is not open to the network",
            args.provision_bind
        );
    }
    let addr = SocketAddr::new(args.provision_bind, args.provision_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the provisioning API to {addr}"))?;
    tracing::info!(%addr, "provisioning API listening");
    let app = api::router(ApiState {
        provisioner,
        token,
        ready,
    });
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "provisioning API stopped");
        }
    }))
}

async fn serve(args: args::ServeArgs) -> anyhow::Result<ExitCode> {
    let provisioner = provisioner(client(&args.openmeter, ONE_SHOT_ATTEMPTS)?, &args.ensure);
    let cancel = shutdown_signal();
    let handle = start_api(&args.api, provisioner, None, cancel).await?;
    handle.await?;
    Ok(ExitCode::SUCCESS)
}

async fn ensure_one(args: args::EnsureCmd) -> anyhow::Result<ExitCode> {
    let identity = match (&args.auth_id, &args.client_id, &args.external_user_id) {
        (Some(auth), _, _) => Identity::from_compound("auth_id", auth)?,
        (None, Some(client), Some(user)) => Identity::from_parts(client, user)?,
        _ => bail!("give --auth-id client:user, or --client-id and --external-user-id"),
    };
    let provisioner = provisioner(client(&args.openmeter, ONE_SHOT_ATTEMPTS)?, &args.ensure);
    let ensured = provisioner.ensure(&identity).await?;
    println!("{}", serde_json::to_string_pretty(&ensured)?);
    Ok(ExitCode::SUCCESS)
}

async fn run_collector(args: args::RunArgs) -> anyhow::Result<ExitCode> {
    let cancel = shutdown_signal();
    let kafka = kafka_config(&args.kafka);
    let dlq_topic = args.kafka.dlq_topic();
    let dlq = DeadLetterSink::kafka(
        &kafka,
        dlq_topic,
        args.pipeline.batch.max_event_bytes,
        &args.kafka.dlq_spill_dir,
    )?;
    let tracker = Arc::new(OffsetTracker::default());
    let pipeline = start_pipeline(&args.pipeline, dlq, tracker.clone(), &cancel).await?;
    let source = Arc::new(KafkaSource::connect(&kafka, tracker).context("connecting to Kafka")?);
    let provisioner = pipeline.deliverer.provisioner.clone();
    let ready = readiness(
        source.clone(),
        provisioner.clone(),
        pipeline.price.clone(),
        kafka.stall_after,
    );
    let api = start_api(&args.api, provisioner, Some(ready), cancel.clone()).await?;

    let auditor = audit::continuous(&args, &pipeline).map(|continuous| {
        let cancel = cancel.clone();
        tokio::spawn(continuous.run(cancel))
    });
    let (tx, rx) = mpsc::channel(pipeline.config.batch_max_events * 2);
    let reader = tokio::spawn({
        let (source, cancel) = (source.clone(), cancel.clone());
        async move { source.run(tx, cancel).await }
    });
    let committer = tokio::spawn({
        let (source, cancel) = (source.clone(), cancel.clone());
        let every = args.kafka.kafka_commit_interval;
        async move { source.commit_periodically(every, cancel).await }
    });
    let settled = pipeline.run(rx, &cancel).await;
    let mut failed = Tally::get(&pipeline.tally().crashed_batches) > 0;
    failed |= joined("Kafka reader", reader.await);
    failed |= joined("committer", committer.await);
    if let Some(auditor) = auditor {
        failed |= joined("continuous audit", auditor.await);
    }
    let committed = source.commit().await;
    tracing::info!(settled, ?committed, failed, "collector stopped");
    failed |= joined("provisioning API", api.await);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
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

/// `/ready`: partitions assigned, the price fresh (the collector never
/// starts without one), OpenMeter answering with a subscribable plan, and
/// billing progressing (no stalled partition, no hold over `STALL_AFTER`).
fn readiness(
    source: Arc<KafkaSource>,
    provisioner: Provisioner,
    price: PriceFeed,
    stall_after: Duration,
) -> ReadyCheck {
    Arc::new(move || {
        let (source, provisioner, price) = (source.clone(), provisioner.clone(), price.clone());
        Box::pin(async move {
            let openmeter = provisioner.default_plan().await.is_ok();
            let problems = health().problems(stall_after);
            Readiness {
                checks: vec![
                    ("partitions_assigned".to_owned(), source.assigned()),
                    ("price_fresh".to_owned(), price.is_fresh()),
                    ("openmeter".to_owned(), openmeter),
                    ("progress".to_owned(), problems.is_empty()),
                ],
                problems,
            }
        })
    })
}

async fn bootstrap_catalog(args: args::BootstrapArgs) -> anyhow::Result<ExitCode> {
    let catalog = match &args.catalog {
        Some(path) => Catalog::from_file(path)?,
        None => Catalog::builtin(&args.default_plan_key),
    };
    if let Err(problems) = check_catalog_against_collector(&catalog) {
        bail!(
            "the catalog does not match what the collector sends:\n  {}",
            problems.join("\n  ")
        );
    }
    if catalog.plan_key() != &args.default_plan_key {
        tracing::warn!(
            catalog = %catalog.plan_key(),
            configured = %args.default_plan_key,
            "the catalog's plan is not OPENMETER_DEFAULT_PLAN_KEY: new customers will not be subscribed to it"
        );
    }
    let client = client(&args.openmeter, ONE_SHOT_ATTEMPTS)?;
    let options = BootstrapOptions {
        dry_run: args.dry_run,
        publish_new_version: args.publish_new_version,
    };
    let report = match bootstrap(&client, &catalog, &options).await {
        Ok(report) => report,
        Err(BootstrapError::Aborted { source, report }) => {
            println!("{report}");
            return Err(source.into());
        }
        Err(e) => return Err(e.into()),
    };
    println!("{report}");
    Ok(if report.is_success(args.allow_drift) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(feature = "double")]
async fn double(args: args::DoubleArgs) -> anyhow::Result<ExitCode> {
    let double = openmeter_double::Double::new(openmeter_double::DoubleConfig {
        token: args.token,
        ..Default::default()
    });
    let running = double.spawn(SocketAddr::new(args.bind, args.port)).await?;
    println!("OpenMeter double serving {}", running.base_url());
    shutdown_signal().cancelled().await;
    Ok(ExitCode::SUCCESS)
}

async fn healthcheck(args: args::HealthcheckArgs) -> anyhow::Result<ExitCode> {
    let url = format!("http://127.0.0.1:{}/health", args.port);
    let response = reqwest::Client::new()
        .get(&url)
        .timeout(std::time::Duration::from_secs(3))
        .send()
        .await;
    match response {
        Ok(r) if r.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(r) => {
            eprintln!("{url}: HTTP {}", r.status());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::kafka_passthrough;

    #[test]
    fn kafka_opt_variables_become_librdkafka_settings() {
        let vars = [
            ("KAFKA_OPT_SESSION_TIMEOUT_MS".to_owned(), "6000".to_owned()),
            ("KAFKA_BROKERS".to_owned(), "b:9092".to_owned()),
        ];
        assert_eq!(
            kafka_passthrough(vars.into_iter()),
            vec![("session.timeout.ms".to_owned(), "6000".to_owned())]
        );
    }
}
