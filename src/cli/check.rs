//! `ticketmeter check`: a ✓/✗ checklist of everything `run` needs —
//! configuration, the broker and topic, the OpenMeter token, the default
//! plan and the catalog's meters — without writing anything.

use std::process::ExitCode;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::args::CheckArgs;
use super::config;
use crate::app::{self, OpenMeterSettings, Role};
use crate::bootstrap::{bootstrap, BootstrapOptions, Catalog, Kind, Outcome};
use crate::domain::PlanKey;
use crate::openmeter::model::Plan;
use crate::openmeter::OpenMeterClient;
use crate::price::PriceFeed;

/// One line of the checklist.
struct Check {
    name: String,
    result: Result<String, String>,
}

pub(super) async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut checks = vec![kafka_check(&args)];
    checks.push(price_check(&args).await);
    let openmeter = config::openmeter(&args.openmeter, &args.ensure).and_then(|settings| {
        let client = app::client(&settings.client, Role::OneShot)?;
        Ok((client, settings))
    });
    match openmeter {
        Err(e) => checks.push(Check {
            name: "OpenMeter configuration".into(),
            result: Err(format!("{e:#}")),
        }),
        Ok((client, settings)) => {
            checks.extend(plan_checks(&client, &settings).await);
            checks.extend(catalog_checks(&client, &args).await);
        }
    }
    for c in &checks {
        match &c.result {
            Ok(detail) => println!("✓ {}: {detail}", c.name),
            Err(problem) => println!("✗ {}: {problem}", c.name),
        }
    }
    Ok(if checks.iter().all(|c| c.result.is_ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The broker answers and the topic exists (metadata request, no group join).
fn kafka_check(args: &CheckArgs) -> Check {
    let kafka = config::kafka(&args.kafka).consumer;
    let name = format!("Kafka {} topic {}", kafka.brokers, kafka.topic);
    let result = kafka
        .client_config()
        .create::<BaseConsumer>()
        .map_err(|e| e.to_string())
        .and_then(|consumer| {
            let metadata = consumer
                .fetch_metadata(Some(&kafka.topic), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            let topic = metadata
                .topics()
                .iter()
                .find(|t| t.name() == kafka.topic)
                .ok_or("topic not in metadata")?;
            match topic.error() {
                Some(e) => Err(format!("{e:?}")),
                None => Ok(format!("{} partition(s)", topic.partitions().len())),
            }
        });
    Check { name, result }
}

async fn price_check(args: &CheckArgs) -> Check {
    let feed = PriceFeed::start(
        config::price(&args.price),
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    Check {
        name: "ETH/USD price".into(),
        result: feed
            .map(|f| f.current().price.to_string())
            .map_err(|e| e.to_string()),
    }
}

/// The token works and the plan `role` customers get has a version they
/// can be subscribed to. A plan that exists only as a draft (a publish
/// OpenMeter refused) is named as such, with what to do about it.
async fn plan_check(
    client: &OpenMeterClient,
    settings: &OpenMeterSettings,
    role: &str,
    key: &PlanKey,
) -> Check {
    let result = match app::provisioner(client.clone(), settings).plan(key).await {
        Ok(plan) => Ok(format!("version {} is subscribable", plan.version)),
        Err(e) => Err(match only_draft(client, key).await {
            Some(version) => format!(
                "exists only as unpublished draft version {version}, so no customer can be \
                 subscribed: run `ticketmeter bootstrap` to publish it (its report names \
                 OpenMeter's reason if publishing is refused)"
            ),
            None => e.to_string(),
        }),
    };
    Check {
        name: format!("OpenMeter token and {role} plan {key}"),
        result,
    }
}

/// The default plan, and the owner plan when app owners get another one.
async fn plan_checks(client: &OpenMeterClient, settings: &OpenMeterSettings) -> Vec<Check> {
    let mut checks = vec![plan_check(client, settings, "default", &settings.plan_key).await];
    if let Some(owner) = settings
        .owner_plan_key
        .as_ref()
        .filter(|k| **k != settings.plan_key)
    {
        checks.push(plan_check(client, settings, "app-owner", owner).await);
    }
    checks
}

/// The newest draft version of `key` when no version is published.
async fn only_draft(client: &OpenMeterClient, key: &PlanKey) -> Option<u32> {
    let versions = client.plan_versions(key).await.ok()?;
    if versions.iter().any(Plan::is_subscribable) {
        return None;
    }
    Plan::newest_draft(&versions).map(|p| p.version)
}

/// The built-in catalog's meters, features and plan, compared read-only.
async fn catalog_checks(client: &OpenMeterClient, args: &CheckArgs) -> Vec<Check> {
    let catalog = Catalog::builtin(&args.ensure.default_plan_key);
    let dry_run = BootstrapOptions {
        dry_run: true,
        publish_new_version: false,
    };
    let report = match bootstrap(client, &catalog, &dry_run).await {
        Ok(report) => report,
        Err(e) => {
            return vec![Check {
                name: "catalog".into(),
                result: Err(e.to_string()),
            }]
        }
    };
    report
        .lines
        .iter()
        .filter(|l| l.kind == Kind::Meter)
        .map(|l| Check {
            name: format!("meter {}", l.key),
            result: match &l.outcome {
                Outcome::Exists => Ok("exists".into()),
                Outcome::Drift(diff) => Err(format!("differs from the catalog: {diff}")),
                Outcome::WouldCreate => Err("missing: run `ticketmeter bootstrap`".into()),
                other => Err(format!("{other:?}")),
            },
        })
        .collect()
}
