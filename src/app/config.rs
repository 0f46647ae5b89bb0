//! The typed configuration the collector and the other commands are built
//! from. `cli` fills it from arguments and the environment; everything here
//! is already parsed and checked, so building never re-reads a setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::dlq::DEFAULT_SPILL_DIR;
use crate::domain::PlanKey;
use crate::ensure::EnsureConfig;
use crate::kafka::KafkaConfig;
use crate::openmeter::ClientConfig;
use crate::pipeline::PipelineConfig;
use crate::price::PriceSource;
use crate::secret::Secret;

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) pipeline: PipelineSettings,
    pub(crate) kafka: KafkaSettings,
    pub(crate) api: ApiSettings,
    /// The continuous audit; on (hourly) unless `AUDIT_INTERVAL=off`.
    pub(crate) audit: Option<ContinuousAuditSettings>,
    /// Gaps in the signer's session chains, found while running.
    pub(crate) chain: crate::chain::tracker::ChainSettings,
}

/// What every pipeline needs (`run`, `replay`, `dlq replay`).
#[derive(Debug, Clone)]
pub(crate) struct PipelineSettings {
    pub(crate) openmeter: OpenMeterSettings,
    pub(crate) price: PriceSource,
    pub(crate) batch: PipelineConfig,
}

/// Where OpenMeter is, and how customers are ensured there. The client's
/// retry policy is set by whoever builds it, from its role (`app::Role`).
#[derive(Debug, Clone)]
pub(crate) struct OpenMeterSettings {
    pub(crate) client: ClientConfig,
    /// The plan every new customer is subscribed to.
    pub(crate) plan_key: PlanKey,
    /// The plan new app-owner customers get instead, when set.
    pub(crate) owner_plan_key: Option<PlanKey>,
    pub(crate) ensure: EnsureConfig,
}

/// The brokers, the gateway topic and group (the DLQ producer shares their
/// connection settings), and where dead letters go.
#[derive(Debug, Clone)]
pub(crate) struct KafkaSettings {
    pub(crate) consumer: KafkaConfig,
    pub(crate) dlq_topic: String,
    /// Where dead letters the DLQ topic refuses are kept.
    pub(crate) spill_dir: PathBuf,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        let consumer = KafkaConfig::default();
        Self {
            dlq_topic: consumer.default_dlq_topic(),
            consumer,
            spill_dir: PathBuf::from(DEFAULT_SPILL_DIR),
        }
    }
}

/// The provisioning API.
#[derive(Debug, Clone)]
pub(crate) struct ApiSettings {
    /// Port 0 binds a free port (see `Application::api_addr`).
    pub(crate) addr: SocketAddr,
    /// When set, `/ensure` demands it; required off loopback.
    pub(crate) token: Option<Secret>,
}

impl Default for ApiSettings {
    /// The original sidecar's: loopback, port 8091, no token.
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8091)),
            token: None,
        }
    }
}

/// The audit `run` repeats on its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContinuousAuditSettings {
    pub(crate) interval: Duration,
    /// Length of the audited window, ending `settle` before now.
    pub(crate) window: Duration,
    pub(crate) settle: Duration,
    pub(crate) repair: bool,
}

impl Default for ContinuousAuditSettings {
    /// Every closed hour, ten minutes after it closed, reporting only.
    fn default() -> Self {
        let hour = Duration::from_secs(3600);
        Self {
            interval: hour,
            window: hour,
            settle: Duration::from_secs(10 * 60),
            repair: false,
        }
    }
}
