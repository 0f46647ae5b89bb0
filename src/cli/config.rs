//! Arguments → the typed configuration [`crate::app`] builds from. What can
//! be checked without the network is checked here (a URL is given, the token
//! file reads), and this is the one place beyond clap and the logger that
//! reads the environment (`KAFKA_OPT_*`, `AUDIT_COLLECTION_WINDOW`).

use std::net::SocketAddr;

use anyhow::{bail, Context};

use super::args::{
    ApiArgs, BatchArgs, ContinuousAuditArgs, EnsureArgs, KafkaArgs, OpenMeterArgs, PipelineArgs,
    PriceArgs, RunArgs,
};
use crate::app::{
    ApiSettings, Config, ContinuousAuditSettings, KafkaSettings, OpenMeterSettings,
    PipelineSettings,
};
use crate::billing::BillingPolicy;
use crate::bootstrap::owner_plan;
use crate::contract::Contract;
use crate::deliver::InFlightBounds;
use crate::domain::PlanKey;
use crate::ensure::EnsureConfig;
use crate::kafka::KafkaConfig;
use crate::openmeter::{ClientConfig, Endpoint};
use crate::pipeline::PipelineConfig;
use crate::price::PriceSource;
use crate::retry::Backoff;
use crate::secret::Secret;

/// The collector's configuration (`run`).
pub(super) fn collector(args: &RunArgs) -> anyhow::Result<Config> {
    Ok(Config {
        pipeline: pipeline(&args.pipeline)?,
        kafka: kafka(&args.kafka),
        api: api(&args.api),
        audit: continuous_audit(&args.audit),
        chain: crate::chain::tracker::ChainSettings {
            settle: args.chain.chain_settle,
            idle: args.chain.chain_idle,
        },
    })
}

pub(super) fn pipeline(args: &PipelineArgs) -> anyhow::Result<PipelineSettings> {
    Ok(PipelineSettings {
        openmeter: openmeter(&args.openmeter, &args.ensure)?,
        price: price(&args.price),
        batch: batch(&args.batch, contract(args))?,
    })
}

pub(super) fn openmeter(
    args: &OpenMeterArgs,
    ensure: &EnsureArgs,
) -> anyhow::Result<OpenMeterSettings> {
    Ok(OpenMeterSettings {
        client: client(args)?,
        plan_key: ensure.default_plan_key.clone(),
        owner_plan_key: owner_plan_key(ensure)?,
        ensure: EnsureConfig {
            cache_ttl: ensure.ensure_cache_ttl,
            cache_capacity: ensure.ensure_cache_capacity,
            plan_ttl: ensure.plan_cache_ttl,
            refusal_ttl: ensure.ensure_refusal_ttl,
            warm_up: ensure.ensure_warm_up,
            concurrency: InFlightBounds::new(
                ensure.ensure_min_concurrency,
                ensure.ensure_max_concurrency,
            ),
        },
    })
}

/// `OPENMETER_OWNER_PLAN_KEY`, else the `subscribe_role: owner` plan of
/// `CATALOG_FILE`; a catalog whose default plan is not
/// `OPENMETER_DEFAULT_PLAN_KEY` is named in a warning.
fn owner_plan_key(ensure: &EnsureArgs) -> anyhow::Result<Option<PlanKey>> {
    let Some(path) = &ensure.catalog else {
        return Ok(ensure.owner_plan_key.clone());
    };
    let from_catalog = owner_plan(path, &ensure.default_plan_key)?;
    Ok(ensure.owner_plan_key.clone().or(from_catalog))
}

/// The client's settings from `OPENMETER_*`.
pub(super) fn client(args: &OpenMeterArgs) -> anyhow::Result<ClientConfig> {
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
    Ok(config)
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

pub(super) fn price(args: &PriceArgs) -> PriceSource {
    match args.eth_usd_price {
        Some(price) => PriceSource::Fixed(price),
        None => PriceSource::Oracle {
            url: args.price_oracle_url.clone(),
            refresh: args.price_oracle_refresh,
        },
    }
}

/// The event contract: `EVENT_ID`, `BILLING_SUBJECT`, `USD_MICROS`.
pub(super) fn contract(args: &PipelineArgs) -> Contract {
    Contract {
        ids: args.batch.event_id,
        subjects: args.ensure.billing_subject,
        amounts: args.batch.usd_micros,
    }
}

fn batch(args: &BatchArgs, contract: Contract) -> anyhow::Result<PipelineConfig> {
    let legacy = std::env::var(LEGACY_COLLECTION_WINDOW).ok();
    Ok(PipelineConfig {
        batch_max_events: args.batch_max_events.max(1),
        batch_max_bytes: args.batch_max_bytes,
        linger: args.batch_linger,
        in_flight: InFlightBounds::new(args.batch_min_in_flight, args.batch_max_in_flight),
        max_event_bytes: args.max_event_bytes,
        shutdown_timeout: args.shutdown_timeout,
        billing: BillingPolicy {
            event_time: args.event_time,
            collection_window: collection_window(
                args.billing_collection_window,
                legacy.as_deref(),
            )?,
        },
        backoff: Backoff::default(),
        contract,
    })
}

/// The audit's own name for the collection window before there was one
/// setting for it; an operator's `.env` may still set it.
pub(super) const LEGACY_COLLECTION_WINDOW: &str = "AUDIT_COLLECTION_WINDOW";

/// The prefix of the librdkafka settings passed through.
pub(super) const KAFKA_OPT_PREFIX: &str = "KAFKA_OPT_";

/// OpenMeter's collection interval: `BILLING_COLLECTION_WINDOW`, else the
/// legacy `AUDIT_COLLECTION_WINDOW`, else OpenMeter's default.
fn collection_window(
    set: Option<std::time::Duration>,
    legacy: Option<&str>,
) -> anyhow::Result<std::time::Duration> {
    if let Some(window) = set {
        return Ok(window);
    }
    match legacy.map(super::args::duration).transpose() {
        Ok(window) => Ok(window.unwrap_or(BillingPolicy::default().collection_window)),
        Err(e) => anyhow::bail!("{LEGACY_COLLECTION_WINDOW}: {e}"),
    }
}

pub(super) fn kafka(args: &KafkaArgs) -> KafkaSettings {
    let consumer = KafkaConfig {
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
    };
    KafkaSettings {
        dlq_topic: args
            .kafka_dlq_topic
            .clone()
            .unwrap_or_else(|| consumer.default_dlq_topic()),
        consumer,
        spill_dir: args.dlq_spill_dir.clone(),
    }
}

/// `KAFKA_OPT_SESSION_TIMEOUT_MS=6000` → `session.timeout.ms=6000`.
fn kafka_passthrough(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    vars.filter_map(|(k, v)| {
        let name = k.strip_prefix(KAFKA_OPT_PREFIX)?;
        Some((name.to_ascii_lowercase().replace('_', "."), v))
    })
    .collect()
}

pub(super) fn api(args: &ApiArgs) -> ApiSettings {
    ApiSettings {
        addr: SocketAddr::new(args.provision_bind, args.provision_port),
        token: args
            .provision_token
            .clone()
            .filter(|t| !t.is_empty())
            .map(Secret::from),
    }
}

fn continuous_audit(args: &ContinuousAuditArgs) -> Option<ContinuousAuditSettings> {
    Some(ContinuousAuditSettings {
        interval: args.audit_interval.0?,
        window: args.audit_window,
        settle: args.audit_settle,
        repair: args.audit_repair,
    })
}

#[cfg(test)]
mod tests {
    use super::{collection_window, continuous_audit, kafka_passthrough};
    use crate::cli::args::ContinuousAuditArgs;
    use clap::Parser;
    use std::time::Duration;

    #[derive(Parser)]
    struct Audit {
        #[command(flatten)]
        audit: ContinuousAuditArgs,
    }

    #[test]
    fn run_audits_every_closed_hour_unless_turned_off() {
        let hour = Duration::from_secs(3600);
        let default = Audit::try_parse_from(["run"]).unwrap();
        let on = continuous_audit(&default.audit).unwrap();
        assert_eq!((on.interval, on.window), (hour, hour));
        let off = Audit::try_parse_from(["run", "--audit-interval", "off"]).unwrap();
        assert!(continuous_audit(&off.audit).is_none());
    }

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

    #[test]
    fn the_collection_window_falls_back_to_its_legacy_audit_setting() {
        let hour = Duration::from_secs(3600);
        let two = Duration::from_secs(7200);
        assert_eq!(collection_window(Some(two), Some("3h")).unwrap(), two);
        assert_eq!(collection_window(None, Some("2h")).unwrap(), two);
        assert_eq!(collection_window(None, None).unwrap(), hour);
        let bad = collection_window(None, Some("soon"))
            .unwrap_err()
            .to_string();
        assert!(bad.starts_with("AUDIT_COLLECTION_WINDOW"), "{bad}");
    }
}
