//! Command-line arguments. Every option is also read from the environment
//! variable the original Benthos + sidecar stack used, so an existing
//! `.env` keeps working.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::app::{ApiSettings, ContinuousAuditSettings, KafkaSettings};
use crate::billing::EventTime;
use crate::contract::{Amounts, IdScheme, SubjectRule};
use crate::dlq::{DEFAULT_DLQ_FILE, DEFAULT_SPILL_DIR};
use crate::domain::{EthUsdPrice, PlanKey, DEFAULT_PLAN_KEY};
use crate::ensure::EnsureConfig;
use crate::openmeter::ClientConfig;
use crate::pipeline::PipelineConfig;
use crate::price::{DEFAULT_ORACLE_REFRESH, DEFAULT_ORACLE_URL};

#[derive(Debug, Parser)]
#[command(
    name = "ticketmeter",
    version,
    about = "Bills Livepeer remote-signer usage through OpenMeter",
    long_about = "Bills Livepeer remote-signer usage through OpenMeter.\n\n\
        Every option is also an environment variable (shown as [env: …]); \
        ./.env is read at start, the real environment wins, and an empty \
        value counts as unset. Results and summaries go to stdout, logs to \
        stderr (RUST_LOG, LOG_FORMAT=json).",
    next_line_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// Commands whose output is the point print only warnings unless
    /// `RUST_LOG` says otherwise.
    pub fn quiet_by_default(&self) -> bool {
        match self.command {
            #[cfg(feature = "double")]
            Command::Demo(_) => true,
            Command::Ensure(_)
            | Command::Check(_)
            | Command::Bootstrap(_)
            | Command::Healthcheck(_)
            | Command::Audit(_) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The collector: Kafka → exact USD micros → ensure → OpenMeter, plus the provisioning API.
    ///
    /// Consumes KAFKA_GATEWAY_TOPIC in KAFKA_CONSUMER_GROUP until SIGTERM or
    /// SIGINT, then flushes in-flight batches (at most SHUTDOWN_TIMEOUT),
    /// commits and exits 0 (1 when a task failed). While OpenMeter or the
    /// brokers cannot be reached, events wait in the topic. The API on
    /// PROVISION_BIND:PROVISION_PORT serves POST /ensure, GET /health,
    /// GET /ready (503 with `problems` saying why billing cannot progress)
    /// and GET /metrics.
    Run(RunArgs),
    /// The provisioning API alone: POST /ensure, GET /health, GET /ready, GET /metrics.
    ///
    /// /ready is 200 while OpenMeter answers with a subscribable default
    /// plan, else 503 with `problems` giving OpenMeter's reason. Runs until
    /// SIGTERM or SIGINT.
    Serve(ServeArgs),
    /// Ensure one customer and its subscription; prints the JSON result.
    ///
    /// The identity is --auth-id, or --client-id with --external-user-id,
    /// resolved by BILLING_SUBJECT as events are. Exit 0 when ensured, 1
    /// otherwise.
    Ensure(EnsureCmd),
    /// Feed JSON lines from a file (or - for stdin) through the pipeline.
    ///
    /// Dead letters are appended to DLQ_FILE (a letter it holds already is
    /// not written twice). On a failure that concerns every event (token,
    /// URL, no plan, OpenMeter unreachable) it stops after a few attempts.
    /// The summary on stdout counts what was read, delivered, skipped,
    /// dead-lettered and not sent; exit 1 when anything was not sent.
    Replay(ReplayArgs),
    /// Dead-letter queue tools.
    ///
    /// `dlq replay` feeds dead letters back through the pipeline once
    /// their cause is fixed.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Create the OpenMeter catalog (meters, features, default plan) if missing.
    ///
    /// Creates what is missing, never changes what exists, and reports
    /// drift. Stops at a failure that concerns every call (token, URL,
    /// OpenMeter unreachable) and says how much it left undone. Exit 0 when
    /// nothing failed (and nothing drifted, unless --allow-drift).
    Bootstrap(BootstrapArgs),
    /// Run the real pipeline over bundled events against an in-process OpenMeter double.
    ///
    /// Needs no Kafka and no OpenMeter account; prints the customers, the
    /// events accepted, the dead letters and what each customer will be
    /// invoiced.
    #[cfg(feature = "double")]
    Demo(DemoArgs),
    /// Run the OpenMeter test double as a server (demos, benchmarks).
    ///
    /// A stateful OpenMeter v3 stand-in on DOUBLE_BIND:DOUBLE_PORT, API base
    /// http://DOUBLE_BIND:DOUBLE_PORT/api/v3 (set OPENMETER_URL to it). It
    /// starts empty: run `ticketmeter bootstrap` against it first.
    #[cfg(feature = "double")]
    Double(DoubleArgs),
    /// Check configuration, price, OpenMeter token, default plan, catalog, broker and topic; ✓/✗ per item.
    ///
    /// Writes nothing. Each line is printed as soon as its item is known;
    /// the broker (which may take 10 s to give up) comes last. Exit 0 when
    /// every item is ✓, 1 otherwise.
    Check(CheckArgs),
    /// Probe the local API's /health (for container HEALTHCHECKs); exit 0 when healthy.
    ///
    /// Asks http://127.0.0.1:PROVISION_PORT/health with a 3 s timeout.
    Healthcheck(HealthcheckArgs),
    /// Reconcile signed tickets with what OpenMeter stored and will bill; exit 0 clean, 1 discrepancies, 2 could not run.
    ///
    /// Reads the source (Kafka by time, or --file), the dead letters (the
    /// DLQ topic, or --dlq-file) and what OpenMeter stored, and reports per
    /// customer on stdout.
    Audit(AuditArgs),
}

/// The variables two commands read, each with a flag of its own (a name
/// and help fitting the command): declared here once, so the two cannot
/// part (`each_environment_variable_is_declared_once`).
const OPENMETER_DEFAULT_PLAN_KEY: &str = "OPENMETER_DEFAULT_PLAN_KEY";
const CATALOG_FILE: &str = "CATALOG_FILE";
const PROVISION_PORT: &str = "PROVISION_PORT";
const DLQ_FILE: &str = "DLQ_FILE";
const AUDIT_SETTLE: &str = "AUDIT_SETTLE";

/// Every default is read from the `Default` impl or constant that owns it,
/// so each is written once; durations are rendered for `--help`.
fn shown(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

fn batch() -> PipelineConfig {
    PipelineConfig::default()
}

fn ensure() -> EnsureConfig {
    EnsureConfig::default()
}

fn kafka() -> KafkaSettings {
    KafkaSettings::default()
}

fn api() -> ApiSettings {
    ApiSettings::default()
}

fn continuous_audit() -> ContinuousAuditSettings {
    ContinuousAuditSettings::default()
}

/// Parses durations like `5m`, `250ms`, `1h 30m`.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like 5m or 250ms: {e}"))
}

/// A period, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Every(pub(crate) Option<Duration>);

pub(crate) fn interval_or_off(s: &str) -> Result<Every, String> {
    match s.trim() {
        "off" | "0" => Ok(Every(None)),
        other => duration(other).map(|d| Every((!d.is_zero()).then_some(d))),
    }
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "OpenMeter")]
pub(crate) struct OpenMeterArgs {
    /// OpenMeter / Konnect API URL (e.g. https://us.api.konghq.com/v3/openmeter or http://host:8888/api/v3).
    #[arg(long, env = "OPENMETER_URL")]
    pub(crate) openmeter_url: Option<String>,
    /// Full URL of the events endpoint, when it differs from OPENMETER_URL's.
    #[arg(long, env = "OPENMETER_INGEST_URL")]
    pub(crate) openmeter_ingest_url: Option<String>,
    /// Bearer token: a Konnect kpat_… token or an OpenMeter token.
    #[arg(long, env = "OPENMETER_API_KEY", hide_env_values = true)]
    pub(crate) openmeter_api_key: Option<String>,
    /// File holding the token (e.g. a mounted secret); used when OPENMETER_API_KEY is unset.
    #[arg(long, env = "OPENMETER_API_KEY_FILE")]
    pub(crate) openmeter_api_key_file: Option<PathBuf>,
    /// Per-request timeout.
    #[arg(long, env = "OPENMETER_TIMEOUT", default_value = shown(ClientConfig::DEFAULT_TIMEOUT), value_parser = duration)]
    pub(crate) openmeter_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Customers and plans")]
pub(crate) struct EnsureArgs {
    /// Plan every new customer is subscribed to (but app owners, when
    /// OPENMETER_OWNER_PLAN_KEY is set).
    #[arg(long, env = OPENMETER_DEFAULT_PLAN_KEY, default_value = DEFAULT_PLAN_KEY)]
    pub(crate) default_plan_key: PlanKey,
    /// Plan new app-owner customers (`<client>:owner:<id>`) are subscribed
    /// to, e.g. the upstream catalog's `clearinghouse_owner_starter`;
    /// unset: the default plan.
    #[arg(long, env = "OPENMETER_OWNER_PLAN_KEY")]
    pub(crate) owner_plan_key: Option<PlanKey>,
    /// The catalog `bootstrap --catalog` created: without
    /// OPENMETER_OWNER_PLAN_KEY, app owners get its `subscribe_role: owner`
    /// plan.
    #[arg(long, env = CATALOG_FILE)]
    pub(crate) catalog: Option<PathBuf>,
    /// Who an event bills. `upstream`: today's collectors' rules (an
    /// `owner:` payer is the bare owner, `eu_` an end-user wallet,
    /// `payer#actor` bills the payer). `auth_id`: always the whole
    /// `auth_id`, as the original did.
    #[arg(long, env = "BILLING_SUBJECT", value_enum, default_value_t = SubjectRule::default())]
    pub(crate) billing_subject: SubjectRule,
    /// How long an ensured identity is trusted without asking OpenMeter.
    #[arg(long, env = "ENSURE_CACHE_TTL", default_value = shown(ensure().cache_ttl), value_parser = duration)]
    pub(crate) ensure_cache_ttl: Duration,
    /// How many ensured identities are remembered.
    #[arg(long, env = "ENSURE_CACHE_CAPACITY", default_value_t = ensure().cache_capacity)]
    pub(crate) ensure_cache_capacity: u64,
    /// How long the resolved default plan version is trusted.
    #[arg(long, env = "PLAN_CACHE_TTL", default_value = shown(ensure().plan_ttl), value_parser = duration)]
    pub(crate) plan_cache_ttl: Duration,
    /// How long a customer OpenMeter refused (its creation or subscription)
    /// is not asked about again; its events are dead-lettered meanwhile.
    #[arg(long, env = "ENSURE_REFUSAL_TTL", default_value = shown(ensure().refusal_ttl), value_parser = duration)]
    pub(crate) ensure_refusal_ttl: Duration,
    /// Fill the ensure cache from OpenMeter's customer and subscription
    /// pages at start-up and on a backlog of unknown identities; `false`
    /// ensures each identity on its own, as the original did.
    #[arg(long, env = "ENSURE_WARM_UP", default_value_t = ensure().warm_up, action = clap::ArgAction::Set)]
    pub(crate) ensure_warm_up: bool,
    /// Most ensure calls in flight at once, across every batch; the number
    /// adapts to OpenMeter's round trip and push-back (429, 5xx) below it,
    /// starting at 16.
    #[arg(long, env = "ENSURE_MAX_CONCURRENCY", default_value_t = ensure().concurrency.max)]
    pub(crate) ensure_max_concurrency: usize,
    /// Fewest ensure calls in flight once there is work; equal to
    /// `ENSURE_MAX_CONCURRENCY`, it pins the number.
    #[arg(long, env = "ENSURE_MIN_CONCURRENCY", default_value_t = ensure().concurrency.min)]
    pub(crate) ensure_min_concurrency: usize,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Provisioning API")]
pub(crate) struct ApiArgs {
    /// Port of the provisioning API.
    #[arg(long, env = PROVISION_PORT, default_value_t = api().addr.port())]
    pub(crate) provision_port: u16,
    /// Address the API binds to; anything but loopback requires PROVISION_TOKEN.
    #[arg(long, env = "PROVISION_BIND", default_value_t = api().addr.ip())]
    pub(crate) provision_bind: IpAddr,
    /// Bearer token /ensure demands (required off loopback).
    #[arg(long, env = "PROVISION_TOKEN", hide_env_values = true)]
    pub(crate) provision_token: Option<String>,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Price")]
pub(crate) struct PriceArgs {
    /// Fixed ETH/USD price; when unset the oracle is used.
    #[arg(long, env = "ETH_USD_PRICE")]
    pub(crate) eth_usd_price: Option<EthUsdPrice>,
    /// Oracle answering {"price": n}, {"ethereum":{"usd": n}} or {"data":{"amount":"n"}}.
    #[arg(long, env = "PRICE_ORACLE_URL", default_value = DEFAULT_ORACLE_URL)]
    pub(crate) price_oracle_url: String,
    /// How often the oracle is asked again.
    #[arg(long, env = "PRICE_ORACLE_REFRESH", default_value = shown(DEFAULT_ORACLE_REFRESH), value_parser = duration)]
    pub(crate) price_oracle_refresh: Duration,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Batching and billing")]
pub(crate) struct BatchArgs {
    /// Events per ingest request.
    #[arg(long, env = "BATCH_MAX_EVENTS", default_value_t = batch().batch_max_events)]
    pub(crate) batch_max_events: usize,
    /// Bytes per ingest request.
    #[arg(long, env = "BATCH_MAX_BYTES", default_value_t = batch().batch_max_bytes)]
    pub(crate) batch_max_bytes: usize,
    /// How long a partial batch waits for more events.
    #[arg(long, env = "BATCH_LINGER", default_value = shown(batch().linger), value_parser = duration)]
    pub(crate) batch_linger: Duration,
    /// Most batches ensured/delivered concurrently; the number in flight
    /// adapts to OpenMeter's round trip and push-back up to this.
    #[arg(long, env = "BATCH_MAX_IN_FLIGHT", default_value_t = batch().in_flight.max)]
    pub(crate) batch_max_in_flight: usize,
    /// Fewest batches in flight however hard OpenMeter pushes back; equal
    /// to `BATCH_MAX_IN_FLIGHT`, it pins the number (the former fixed limit).
    #[arg(long, env = "BATCH_MIN_IN_FLIGHT", default_value_t = batch().in_flight.min)]
    pub(crate) batch_min_in_flight: usize,
    /// Records larger than this are dead-lettered unread.
    #[arg(long, env = "MAX_EVENT_BYTES", default_value_t = batch().max_event_bytes)]
    pub(crate) max_event_bytes: usize,
    /// How long shutdown waits for in-flight batches.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = shown(batch().shutdown_timeout), value_parser = duration)]
    pub(crate) shutdown_timeout: Duration,
    /// `billable`: an event older than its customer's subscription is sent
    /// at the subscription's start (OpenMeter would store it and never
    /// invoice it), its signed time kept in `data.signed_at`. `signed`:
    /// always the signed time, as the original did.
    #[arg(long, env = "EVENT_TIME", value_enum, default_value_t = batch().billing.event_time)]
    pub(crate) event_time: EventTime,
    /// How long after a billing period ends OpenMeter still collects its
    /// usage (its billing profile's `collection.interval`; default 1h):
    /// later usage of that period is counted (collector) and reported
    /// (audit) as missing its invoice. The older AUDIT_COLLECTION_WINDOW is
    /// read when this is unset.
    #[arg(long, visible_alias = "collection-window", env = "BILLING_COLLECTION_WINDOW", value_parser = duration)]
    pub(crate) billing_collection_window: Option<Duration>,
    /// The CloudEvent id. `envelope`: the envelope `id` (unique per event,
    /// stable on redelivery), else `request_id`, else a digest of the
    /// record. `request_id`: the original's, for a cut-over only: distinct
    /// tickets share 8-hex request ids and OpenMeter keeps one of each pair.
    #[arg(long, env = "EVENT_ID", value_enum, default_value_t = batch().contract.ids)]
    pub(crate) event_id: IdScheme,
    /// `exact`: the exact fractional fee in micros, `fee_wei` and
    /// `eth_usd_price` as numbers. `rounded`: whole micros rounded half-up
    /// per ticket, `fee_wei` and `eth_usd_price` as strings (the original).
    #[arg(long, env = "USD_MICROS", value_enum, default_value_t = batch().contract.amounts)]
    pub(crate) usd_micros: Amounts,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Kafka")]
pub(crate) struct KafkaArgs {
    /// Comma-separated bootstrap brokers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = kafka().consumer.brokers)]
    pub(crate) kafka_brokers: String,
    /// Topic go-livepeer publishes gateway events to.
    #[arg(long, env = "KAFKA_GATEWAY_TOPIC", default_value = kafka().consumer.topic)]
    pub(crate) kafka_gateway_topic: String,
    /// Consumer group shared by every ticketmeter instance.
    #[arg(long, env = "KAFKA_CONSUMER_GROUP", default_value = kafka().consumer.group)]
    pub(crate) kafka_consumer_group: String,
    /// Dead-letter topic (default: <topic>.dlq).
    #[arg(long, env = "KAFKA_DLQ_TOPIC")]
    pub(crate) kafka_dlq_topic: Option<String>,
    /// SASL user name; setting it turns SASL on.
    #[arg(long, env = "KAFKA_SASL_USERNAME")]
    pub(crate) kafka_sasl_username: Option<String>,
    /// SASL password.
    #[arg(long, env = "KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub(crate) kafka_sasl_password: Option<String>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, env = "KAFKA_SASL_MECHANISM", default_value = kafka().consumer.sasl_mechanism)]
    pub(crate) kafka_sasl_mechanism: String,
    /// Use TLS to the brokers.
    #[arg(long, env = "KAFKA_TLS", default_value_t = kafka().consumer.tls, action = clap::ArgAction::Set)]
    pub(crate) kafka_tls: bool,
    /// How often progress is committed.
    #[arg(long, env = "KAFKA_COMMIT_INTERVAL", default_value = shown(kafka().consumer.commit_interval), value_parser = duration)]
    pub(crate) kafka_commit_interval: Duration,
    /// How long a partition with records behind our position may read nothing (while not
    /// paused), or every batch may wait on one failure, before /ready reports a stall.
    #[arg(long, env = "STALL_AFTER", default_value = shown(kafka().consumer.stall_after), value_parser = duration)]
    pub(crate) stall_after: Duration,
    /// Where dead letters the DLQ topic refuses (too large: the full original; topic
    /// unwritable: the whole letter) are kept, as JSON lines `dlq replay --file` reads.
    #[arg(long, env = "DLQ_SPILL_DIR", default_value = DEFAULT_SPILL_DIR)]
    pub(crate) dlq_spill_dir: PathBuf,
}

/// What every pipeline needs: OpenMeter, the ensure caches, the price and batching.
#[derive(Debug, Args)]
pub(crate) struct PipelineArgs {
    #[command(flatten)]
    pub(crate) openmeter: OpenMeterArgs,
    #[command(flatten)]
    pub(crate) ensure: EnsureArgs,
    #[command(flatten)]
    pub(crate) price: PriceArgs,
    #[command(flatten)]
    pub(crate) batch: BatchArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,
    #[command(flatten)]
    pub(crate) audit: ContinuousAuditArgs,
    #[command(flatten)]
    pub(crate) chain: ChainArgs,
}

fn chain() -> crate::chain::tracker::ChainSettings {
    crate::chain::tracker::ChainSettings::default()
}

/// Gaps in the signer's session chains, while running.
#[derive(Debug, Clone, Args)]
pub(crate) struct ChainArgs {
    /// How long a call whose previous call is missing waits for it (events of a session arrive over every partition, out of order) before it is a gap.
    #[arg(long, env = "CHAIN_SETTLE", default_value = shown(chain().settle), value_parser = duration)]
    pub(crate) chain_settle: Duration,
    /// A session with no call for this long (signed time) is forgotten; memory is one entry per session active within it.
    #[arg(long, env = "CHAIN_IDLE", default_value = shown(chain().idle), value_parser = duration)]
    pub(crate) chain_idle: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) openmeter: OpenMeterArgs,
    #[command(flatten)]
    pub(crate) ensure: EnsureArgs,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
}

#[derive(Debug, Args)]
pub(crate) struct EnsureCmd {
    /// The identity as client_id:external_user_id (an event's auth_id).
    #[arg(long, conflicts_with_all = ["client_id", "external_user_id"])]
    pub(crate) auth_id: Option<String>,
    /// The identity's client id (with --external-user-id).
    #[arg(long, requires = "external_user_id")]
    pub(crate) client_id: Option<String>,
    /// The identity's user (with --client-id).
    #[arg(long, requires = "client_id")]
    pub(crate) external_user_id: Option<String>,
    #[command(flatten)]
    pub(crate) openmeter: OpenMeterArgs,
    #[command(flatten)]
    pub(crate) ensure: EnsureArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// JSON-lines file of go-livepeer events, or - for stdin.
    pub(crate) file: PathBuf,
    /// Print the CloudEvents, skips and dead letters without any network.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Where dead letters are appended.
    #[arg(long, env = DLQ_FILE, default_value = DEFAULT_DLQ_FILE)]
    pub(crate) dlq_file: PathBuf,
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// Feed dead letters back through the pipeline once their cause is fixed.
    ///
    /// From --file (a file `replay` wrote, or DLQ_SPILL_DIR's), letters that
    /// fail again go to --dlq-out (a letter it holds already is not written
    /// twice); from the DLQ topic (KAFKA_DLQ_TOPIC, group
    /// <KAFKA_CONSUMER_GROUP>.dlq-replay), back to the topic, and letters not
    /// replayed stay uncommitted for the next replay. The summary on stdout
    /// counts letters delivered, skipped, dead-lettered again and not
    /// replayed; exit 1 unless every letter was delivered or skipped.
    Replay(DlqReplayArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DlqReplayArgs {
    /// A dead-letter file written by `replay`; without it, the Kafka DLQ topic is replayed.
    #[arg(long)]
    pub(crate) file: Option<PathBuf>,
    /// Where letters that fail again go, for a file replay (default: FILE.again.jsonl).
    #[arg(long)]
    pub(crate) dlq_out: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,
}

#[derive(Debug, Args)]
pub(crate) struct BootstrapArgs {
    /// A JSON or YAML catalog replacing the built-in one.
    #[arg(long, env = CATALOG_FILE)]
    pub(crate) catalog: Option<PathBuf>,
    /// Print what would be done; write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Publish a new plan version when the active one differs from the catalog.
    #[arg(long)]
    pub(crate) publish_new_version: bool,
    /// Exit 0 even when drift was found.
    #[arg(long)]
    pub(crate) allow_drift: bool,
    #[command(flatten)]
    pub(crate) openmeter: OpenMeterArgs,
    /// The plan the catalog defines.
    #[arg(long, env = OPENMETER_DEFAULT_PLAN_KEY, default_value = DEFAULT_PLAN_KEY)]
    pub(crate) default_plan_key: PlanKey,
}

#[cfg(feature = "double")]
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Events to run instead of the bundled sample.
    #[arg(long)]
    pub(crate) events: Option<PathBuf>,
    /// ETH/USD price for the demo.
    #[arg(long, default_value = "3500")]
    pub(crate) eth_usd_price: EthUsdPrice,
}

#[cfg(feature = "double")]
#[derive(Debug, Args)]
pub(crate) struct DoubleArgs {
    /// Port the double listens on.
    #[arg(long, env = "DOUBLE_PORT", default_value_t = 8888)]
    pub(crate) port: u16,
    /// Address the double binds to.
    #[arg(long, env = "DOUBLE_BIND", default_value = "127.0.0.1")]
    pub(crate) bind: IpAddr,
    /// Bearer token the double demands (then set OPENMETER_API_KEY to it); none: no auth.
    #[arg(long, env = "DOUBLE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct HealthcheckArgs {
    /// Port of the provisioning API to probe.
    #[arg(long, env = PROVISION_PORT, default_value_t = api().addr.port())]
    pub(crate) port: u16,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub(crate) openmeter: OpenMeterArgs,
    #[command(flatten)]
    pub(crate) ensure: EnsureArgs,
    #[command(flatten)]
    pub(crate) price: PriceArgs,
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Start of the signed-time range (inclusive): RFC 3339, or a duration back from now (2h).
    #[arg(long)]
    pub(crate) from: String,
    /// End of the signed-time range (exclusive): RFC 3339, or a duration back from now; default now.
    #[arg(long)]
    pub(crate) to: Option<String>,
    /// Events younger than this may still be on their way: not counted missing, not repaired; a repair waits this long for resent events.
    #[arg(long, env = AUDIT_SETTLE, default_value = shown(continuous_audit().settle), value_parser = duration)]
    pub(crate) settle: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) format: crate::audit::report::Format,
    /// Re-ensure customers and resend what is missing or unbillable (a derived id only when absence is proven).
    #[arg(long)]
    pub(crate) repair: bool,
    /// With --repair: list the actions, send nothing.
    #[arg(long, requires = "repair")]
    pub(crate) dry_run: bool,
    /// Read the source from a JSON-lines file (a backfill) instead of Kafka.
    #[arg(long)]
    pub(crate) file: Option<PathBuf>,
    /// totals: compare OpenMeter's meter totals per customer and window and read events only where they differ; events: read back every stored event (cost grows with every event).
    #[arg(long, value_enum, default_value_t)]
    pub(crate) mode: crate::audit::Mode,
    /// Totals mode: do not compare the id_fingerprint meter (for ranges sent before events carried data.id_fingerprint, or by another collector).
    #[arg(long)]
    pub(crate) no_fingerprints: bool,
    /// With --file: the dead-letter file `replay` wrote.
    #[arg(long, env = DLQ_FILE, default_value = DEFAULT_DLQ_FILE)]
    pub(crate) dlq_file: PathBuf,
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,
}

/// The audit `run` repeats on its own (every closed hour unless AUDIT_INTERVAL=off).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Continuous audit")]
pub(crate) struct ContinuousAuditArgs {
    /// Audit the windows closed this often (by totals: a few meter queries each); `off` turns it off.
    #[arg(long, env = "AUDIT_INTERVAL", default_value = shown(continuous_audit().interval), value_parser = interval_or_off)]
    pub(crate) audit_interval: Every,
    /// Length of the audited window, ending at the last interval boundary AUDIT_SETTLE before now.
    #[arg(long, env = "AUDIT_WINDOW", default_value = shown(continuous_audit().window), value_parser = duration)]
    pub(crate) audit_window: Duration,
    /// How long events may take to be stored before they count as missing.
    #[arg(long, env = AUDIT_SETTLE, default_value = shown(continuous_audit().settle), value_parser = duration)]
    pub(crate) audit_settle: Duration,
    /// Repair what each audit finds.
    #[arg(long, env = "AUDIT_REPAIR", default_value_t = continuous_audit().repair, action = clap::ArgAction::Set)]
    pub(crate) audit_repair: bool,
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use clap::CommandFactory;

    use super::Cli;
    use crate::cli::config::{KAFKA_OPT_PREFIX, LEGACY_COLLECTION_WINDOW};
    use crate::cli::logging::{LOG_FORMAT, LOG_LEVEL};

    const ENV_EXAMPLE: &str = include_str!("../../.env.example");
    const README: &str = include_str!("../../README.md");

    /// The variables the code reads besides the flags' (and every
    /// `KAFKA_OPT_*`).
    const READ_BESIDES_FLAGS: [&str; 3] = [LEGACY_COLLECTION_WINDOW, LOG_FORMAT, LOG_LEVEL];

    /// Every flag's variable, with the defaults of the flags that read it.
    fn flag_variables() -> BTreeMap<String, BTreeSet<Vec<String>>> {
        let cli = Cli::command();
        let mut variables: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
        for cmd in commands(&cli) {
            for arg in cmd.get_arguments() {
                let Some(name) = arg.get_env().and_then(|e| e.to_str()) else {
                    continue;
                };
                let defaults = arg
                    .get_default_values()
                    .iter()
                    .map(|d| d.to_string_lossy().into_owned())
                    .collect();
                variables
                    .entry(name.to_owned())
                    .or_default()
                    .insert(defaults);
            }
        }
        variables
    }

    /// The variables `.env.example` sets, commented out or not (`NAME=`).
    fn example_variables() -> BTreeSet<&'static str> {
        ENV_EXAMPLE.lines().filter_map(example_variable).collect()
    }

    /// The variable a line of `.env.example` sets, commented out or not.
    fn example_variable(line: &str) -> Option<&str> {
        let (name, _) = line.trim_start_matches('#').trim_start().split_once('=')?;
        let upper = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_';
        (!name.is_empty() && name.chars().all(upper)).then_some(name)
    }

    /// Every command under `cmd`, itself included.
    fn commands(cmd: &clap::Command) -> Vec<&clap::Command> {
        let mut all = vec![cmd];
        for sub in cmd.get_subcommands() {
            all.extend(commands(sub));
        }
        all
    }

    #[test]
    fn every_command_has_a_long_description_so_every_help_has_one_layout() {
        let cli = Cli::command();
        for cmd in commands(&cli) {
            assert!(
                cmd.get_long_about().is_some(),
                "`{}` has no second paragraph: its --help would use clap's compact layout",
                cmd.get_name()
            );
        }
    }

    #[test]
    fn every_flag_says_what_it_does() {
        let cli = Cli::command();
        for cmd in commands(&cli) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                assert!(
                    builtin || arg.get_help().is_some(),
                    "`{} --{}` has no description",
                    cmd.get_name(),
                    arg.get_id()
                );
            }
        }
    }

    #[test]
    fn env_example_sets_no_variable_the_code_does_not_read() {
        let flags = flag_variables();
        for name in example_variables() {
            assert!(
                flags.contains_key(name)
                    || READ_BESIDES_FLAGS.contains(&name)
                    || name.starts_with(KAFKA_OPT_PREFIX),
                "{name} is in .env.example, but nothing reads it"
            );
        }
    }

    #[test]
    fn every_variable_read_besides_the_flags_is_named_in_env_example() {
        let words: BTreeSet<&str> = ENV_EXAMPLE
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .collect();
        for name in READ_BESIDES_FLAGS {
            assert!(words.contains(name), "{name} is not in .env.example");
        }
        assert!(
            example_variables()
                .iter()
                .any(|name| name.starts_with(KAFKA_OPT_PREFIX)),
            "no {KAFKA_OPT_PREFIX}* example in .env.example"
        );
    }

    #[test]
    fn each_environment_variable_is_declared_once() {
        let source = include_str!("args.rs");
        let mut declared = BTreeSet::new();
        for (at, _) in source.match_indices("env = \"") {
            let name = source[at + 7..].split('"').next().unwrap_or_default();
            assert!(
                declared.insert(name),
                "{name} is declared twice: name it once, in a const"
            );
        }
        for (name, defaults) in flag_variables() {
            assert_eq!(
                defaults.len(),
                1,
                "the flags reading {name} have different defaults: {defaults:?}"
            );
        }
    }

    /// Each variable `.env.example` sets with the default its comment
    /// states (`Default: X`, or `Defaults: X and Y` for a block of two).
    fn example_defaults() -> Vec<(&'static str, &'static str)> {
        let mut found = Vec::new();
        for block in ENV_EXAMPLE.split("\n\n") {
            let stated: Vec<&str> = block
                .lines()
                .filter_map(|l| {
                    let (_, after) = l.split_once("Default: ").or(l.split_once("Defaults: "))?;
                    Some(after)
                })
                .flat_map(|after| after.split(" and "))
                .collect();
            found.extend(block.lines().filter_map(example_variable).zip(stated));
        }
        found
    }

    /// Each variable of README.md's configuration table with the default
    /// its row states (`` `A` / `B` | `x` / `y` `` for a row of several).
    fn readme_defaults() -> Vec<(&'static str, &'static str)> {
        let mut found = Vec::new();
        for row in README.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let [names, defaults, ..] = cells.as_slice() else {
                continue;
            };
            let names: Vec<&str> = names
                .trim_start_matches("| ")
                .split(" / ")
                .map(|n| n.trim_matches('`'))
                .collect();
            let defaults: Vec<&str> = defaults.split(" / ").collect();
            if names.len() == defaults.len() {
                found.extend(names.into_iter().zip(defaults));
            }
        }
        found
    }

    /// Whether `stated`, a default as a doc writes it, is what the code
    /// has (`code`: clap's default, empty when it has none). A stated
    /// default that describes rather than quotes is checked by what it
    /// says.
    fn stated_default_holds(name: &str, stated: &str, code: &[String]) -> bool {
        let stated = stated.trim();
        match name {
            "KAFKA_DLQ_TOPIC" => {
                return code.is_empty()
                    && ["<KAFKA_GATEWAY_TOPIC>.dlq", "`<topic>.dlq`"].contains(&stated)
            }
            "OPENMETER_INGEST_URL" => return code.is_empty() && stated.contains("derived"),
            "PRICE_ORACLE_URL" => {
                return stated.starts_with("Coinbase ETH-USD")
                    && matches!(code, [url] if url.contains("coinbase.com") && url.contains("ETH-USD"))
            }
            // Applied by `cli::config` after the legacy variable's turn.
            "BILLING_COLLECTION_WINDOW" => {
                return code.is_empty()
                    && super::duration(stated.trim_matches('`')).ok()
                        == Some(crate::billing::BillingPolicy::default().collection_window)
            }
            _ => {}
        }
        let value = match stated.strip_prefix('`') {
            Some(quoted) => quoted.split('`').next().unwrap_or_default(),
            None => stated.split_whitespace().next().unwrap_or_default(),
        };
        let value = match stated.split_once(" MiB") {
            Some((mib, _)) => mib
                .trim_matches('`')
                .parse::<u64>()
                .map_or_else(|_| value.to_owned(), |n| (n << 20).to_string()),
            None => value.to_owned(),
        };
        match code {
            [] => value == "none" || value == "–",
            [one] => match (super::duration(one), super::duration(&value)) {
                (Ok(a), Ok(b)) => a == b,
                _ => *one == value,
            },
            _ => false,
        }
    }

    /// `stated` defaults checked against the flags': how many were checked.
    fn check_stated_defaults(doc: &str, stated: Vec<(&str, &str)>) -> usize {
        let flags = flag_variables();
        let mut checked = 0;
        for (name, stated) in stated {
            let Some(defaults) = flags.get(name) else {
                continue;
            };
            let code: Vec<String> = defaults.iter().next().cloned().unwrap_or_default();
            assert!(
                stated_default_holds(name, stated, &code),
                "{name}: {doc} says the default is {stated:?}, the code {code:?}"
            );
            checked += 1;
        }
        checked
    }

    #[test]
    fn env_example_states_each_flag_variables_default_as_the_code_has_it() {
        let checked = check_stated_defaults(".env.example", example_defaults());
        assert!(checked > 40, "only {checked} stated defaults were found");
    }

    #[test]
    fn the_readmes_configuration_table_states_each_default_as_the_code_has_it() {
        let checked = check_stated_defaults("README.md", readme_defaults());
        assert!(checked > 40, "only {checked} stated defaults were found");
    }

    #[test]
    fn every_environment_variable_is_in_env_example_and_the_readme() {
        let example = example_variables();
        let cli = Cli::command();
        for cmd in commands(&cli) {
            for arg in cmd.get_arguments() {
                let Some(name) = arg.get_env().and_then(|e| e.to_str()) else {
                    continue;
                };
                assert!(example.contains(name), "{name} is not in .env.example");
                assert!(
                    README.contains(&format!("`{name}`")),
                    "{name} is not in README.md"
                );
            }
        }
    }
}
