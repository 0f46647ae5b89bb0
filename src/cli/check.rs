//! `ticketmeter check`: a ✓/✗ checklist of everything `run` needs —
//! configuration, the price, the OpenMeter token, the default plan, the
//! catalog's meters, the broker and topic — without writing anything.
//!
//! Each line is printed as soon as its item is known. The broker is asked
//! in the background from the start (it may take up to 10 s to give up),
//! so its line comes last. A failure that concerns every OpenMeter call
//! (token, URL, unreachable) is said once, on the plan's line: the items
//! that need OpenMeter too get one line saying they were not checked.

use std::process::ExitCode;

use super::args::CheckArgs;
use super::config;
use crate::app::{self, OpenMeterSettings, Role};
use crate::bootstrap::{bootstrap, BootstrapOptions, Catalog, Kind, Outcome};
use crate::domain::PlanKey;
use crate::ensure::EnsureError;
use crate::openmeter::model::Plan;
use crate::openmeter::OpenMeterClient;
use crate::price::PriceFeed;

/// One line of the checklist.
struct Check {
    name: String,
    result: Result<String, String>,
}

impl Check {
    /// Prints the line; true when it passed.
    fn print(&self) -> bool {
        match &self.result {
            Ok(detail) => say!("✓ {}: {detail}", self.name),
            Err(problem) => say!("✗ {}: {problem}", self.name),
        }
        self.result.is_ok()
    }
}

pub(super) async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let kafka = config::kafka(&args.kafka).consumer;
    let brokers = tokio::task::spawn_blocking(move || kafka_check(&kafka));
    let mut ok = price_check(&args).await.print();
    let openmeter = config::openmeter(&args.openmeter, &args.ensure).and_then(|settings| {
        let client = app::client(&settings.client, Role::OneShot)?;
        Ok((client, settings))
    });
    match openmeter {
        Err(e) => {
            ok &= Check {
                name: "configuration".into(),
                result: Err(super::error_text(e.as_ref())),
            }
            .print();
        }
        Ok((client, settings)) => ok &= openmeter_checks(&client, &settings, &args).await,
    }
    ok &= brokers.await?.print();
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The plans, then the catalog's meters, each line printed when known;
/// true when all passed. After a failure that concerns every call, the
/// rest is one line.
async fn openmeter_checks(
    client: &OpenMeterClient,
    settings: &OpenMeterSettings,
    args: &CheckArgs,
) -> bool {
    let mut ok = true;
    for (role, key) in plans(settings) {
        let (check, answered) = plan_check(client, settings, role, key).await;
        ok &= check.print();
        if !answered {
            Check {
                name: "the rest of OpenMeter (plans, catalog meters)".into(),
                result: Err("not checked: OpenMeter did not answer the check above".into()),
            }
            .print();
            return false;
        }
    }
    for check in catalog_checks(client, args).await {
        ok &= check.print();
    }
    ok
}

/// The default plan, and the owner plan when app owners get another one.
fn plans(settings: &OpenMeterSettings) -> Vec<(&'static str, &PlanKey)> {
    let mut plans = vec![("default", &settings.plan_key)];
    if let Some(owner) = settings
        .owner_plan_key
        .as_ref()
        .filter(|k| **k != settings.plan_key)
    {
        plans.push(("app-owner", owner));
    }
    plans
}

/// The broker answers and the topic exists (metadata request, no group
/// join). Blocking.
fn kafka_check(kafka: &crate::kafka::KafkaConfig) -> Check {
    let name = format!("Kafka {} topic {}", kafka.brokers, kafka.topic);
    let result = kafka
        .probe(&kafka.topic, "KAFKA_GATEWAY_TOPIC")
        .map(|partitions| format!("{partitions} partition(s)"))
        .map_err(|e| e.to_string());
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
        result: feed.map(|f| f.current().price.to_string()).map_err(|e| {
            format!("{e} (set ETH_USD_PRICE for a fixed price, or PRICE_ORACLE_URL to an oracle that answers)")
        }),
    }
}

/// The token works and the plan `role` customers get has a version they
/// can be subscribed to. A plan that exists only as a draft (a publish
/// OpenMeter refused) is named as such, with what to do about it. The
/// flag says whether OpenMeter answered at all (false: the token, the URL,
/// or OpenMeter unreachable, which every other call would meet too).
async fn plan_check(
    client: &OpenMeterClient,
    settings: &OpenMeterSettings,
    role: &str,
    key: &PlanKey,
) -> (Check, bool) {
    let (result, answered) = match app::provisioner(client.clone(), settings).plan(key).await {
        Ok(plan) => (
            Ok(format!("version {} is subscribable", plan.version)),
            true,
        ),
        Err(e) if !answered(&e) => (Err(e.to_string()), false),
        Err(e) => (
            Err(match only_draft(client, key).await {
                Some(version) => format!(
                    "exists only as unpublished draft version {version}, so no customer can be \
                     subscribed: run `ticketmeter bootstrap` to publish it (its report names \
                     OpenMeter's reason if publishing is refused)"
                ),
                None => e.to_string(),
            }),
            true,
        ),
    };
    let check = Check {
        name: format!("OpenMeter token and {role} plan {key}"),
        result,
    };
    (check, answered)
}

/// Whether OpenMeter answered the call (a missing plan is an answer; a
/// refused token, a wrong URL or no connection is not).
fn answered(e: &EnsureError) -> bool {
    let Some(upstream) = e.upstream() else {
        return true;
    };
    !(upstream.is_transient() || matches!(upstream.status(), Some(401 | 403 | 404 | 405)))
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
                Outcome::Failed(why) => Err(why.clone()),
                Outcome::Created | Outcome::Published => Ok("exists".into()),
            },
        })
        .collect()
}
