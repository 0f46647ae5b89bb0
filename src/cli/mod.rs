//! The `ticketmeter` command line: the binary's edge. It parses arguments
//! into `app`'s typed configuration, owns the shutdown signal, and turns
//! errors into exit codes (`anyhow` lives here only); `app` builds the parts.

#[macro_use]
mod out;
pub(crate) mod args;
mod audit;
mod check;
mod config;
#[cfg(feature = "double")]
mod demo;
mod kafka_dlq;
mod logging;
mod replay;
mod signal;

use std::process::ExitCode;

use anyhow::bail;
use clap::Parser;

pub use args::Cli;
use args::Command;
pub use logging::init_logging;
pub use out::{error_text, note};
use signal::shutdown_signal;

use crate::app::{self, Application, Config, ProvisioningApi, Role};
use crate::bootstrap::{
    bootstrap, catalog_to_create, BootstrapError, BootstrapOptions, Catalog, Report,
};
use crate::domain::{Identity, IdentityClaim, IdentityError};
use crate::ensure::Provisioner;
use crate::openmeter::ApiError;

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(a) => run_collector(a).await,
        Command::Serve(a) => serve(a).await,
        Command::Ensure(a) => ensure_one(a).await,
        Command::Replay(a) => replay::replay(a).await,
        Command::Dlq(args::DlqCommand::Replay(a)) => match a.file.clone() {
            Some(file) => replay::dlq_replay(file, a).await,
            None => kafka_dlq::replay_topic(a).await,
        },
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

/// `serve`: the API alone; `/ready` answers for OpenMeter, which is
/// probed once at start-up so a wrong token or URL is named at once.
async fn serve(args: args::ServeArgs) -> anyhow::Result<ExitCode> {
    let provisioner = one_shot_provisioner(&args.openmeter, &args.ensure)?;
    let cancel = shutdown_signal();
    let ready = app::openmeter_readiness(provisioner.clone());
    let subjects = args.ensure.billing_subject;
    let api = ProvisioningApi::bind(
        &config::api(&args.api),
        provisioner.clone(),
        subjects,
        Some(ready),
    )
    .await?;
    tokio::spawn(async move {
        if let Err(e) = provisioner.default_plan().await {
            tracing::error!(error = %e, "OpenMeter cannot ensure customers yet; /ensure answers with the error until it can");
        }
    });
    api.serve(cancel.cancelled_owned()).await;
    Ok(ExitCode::SUCCESS)
}

async fn ensure_one(args: args::EnsureCmd) -> anyhow::Result<ExitCode> {
    // clap lets through either the compound id or both halves, never both.
    let claim = IdentityClaim::Request {
        client_id: args.client_id.as_deref(),
        external_user_id: args.external_user_id.as_deref(),
        compound: args.auth_id.as_deref().map(|auth| ("auth_id", auth)),
    };
    let identity = match Identity::resolve(claim, args.ensure.billing_subject) {
        Err(IdentityError::Missing) => {
            bail!("give --auth-id client:user, or --client-id and --external-user-id")
        }
        resolved => resolved?,
    };
    let provisioner = one_shot_provisioner(&args.openmeter, &args.ensure)?;
    let ensured = provisioner.ensure(&identity).await?;
    out::line(serde_json::to_string_pretty(&ensured)?);
    Ok(ExitCode::SUCCESS)
}

/// A provisioner whose client retries, for callers that do not.
fn one_shot_provisioner(
    openmeter: &args::OpenMeterArgs,
    ensure: &args::EnsureArgs,
) -> anyhow::Result<Provisioner> {
    let settings = config::openmeter(openmeter, ensure)?;
    let client = app::client(&settings.client, Role::OneShot)?;
    Ok(app::provisioner(client, &settings))
}

/// The collector's configuration from a `ticketmeter run …` command line,
/// exactly as `run` builds it (the environment fills in what `argv` leaves
/// out): for running the collector in-process, under a shutdown the caller
/// controls.
pub fn collector_config<I, T>(argv: I) -> anyhow::Result<Config>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let Command::Run(args) = Cli::try_parse_from(argv)?.command else {
        bail!("not a `ticketmeter run` command line");
    };
    config::collector(&args)
}

/// `run`: exits non-zero when any of the collector's tasks failed.
async fn run_collector(args: args::RunArgs) -> anyhow::Result<ExitCode> {
    let cancel = shutdown_signal();
    let application = Application::build(config::collector(&args)?).await?;
    let stopped = application
        .run_until_stopped(cancel.cancelled_owned())
        .await;
    Ok(if stopped.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn bootstrap_catalog(args: args::BootstrapArgs) -> anyhow::Result<ExitCode> {
    let catalog = catalog_to_create(args.catalog.as_deref(), &args.default_plan_key)?;
    let client = app::client(&config::client(&args.openmeter)?, Role::OneShot)?;
    let options = BootstrapOptions {
        dry_run: args.dry_run,
        publish_new_version: args.publish_new_version,
    };
    let report = match bootstrap(&client, &catalog, &options).await {
        Ok(report) => report,
        Err(BootstrapError::Aborted { source, report }) => {
            say!("{}", stopped(&catalog, &report, &source));
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    out::text(&report);
    Ok(if report.is_success(args.allow_drift) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What a bootstrap that stopped did, and what it left undone: the lines
/// of the objects handled before, then why it stopped.
fn stopped(catalog: &Catalog, report: &Report, why: &ApiError) -> String {
    let total = catalog.meters.len() + catalog.features.len() + catalog.plans().count();
    let mut text = String::new();
    for notice in &report.notices {
        text.push_str(&format!("notice: {notice}\n"));
    }
    for line in &report.lines {
        text.push_str(&format!("{line}\n"));
    }
    text.push_str(&format!(
        "stopped: {why}\n{} of {total} catalog objects not checked or created",
        total.saturating_sub(report.lines.len())
    ));
    text
}

#[cfg(feature = "double")]
async fn double(args: args::DoubleArgs) -> anyhow::Result<ExitCode> {
    let double = openmeter_double::Double::new(openmeter_double::DoubleConfig {
        token: args.token,
        ..Default::default()
    });
    let running = double
        .spawn(std::net::SocketAddr::new(args.bind, args.port))
        .await?;
    out::line(format_args!(
        "OpenMeter double serving {}",
        running.base_url()
    ));
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
            out::note(format_args!("{url}: HTTP {}", r.status()));
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            out::note(format_args!("{url}: {}", error_text(&e)));
            Ok(ExitCode::FAILURE)
        }
    }
}
