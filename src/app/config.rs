//! The typed configuration the collector and the other commands are built
//! from. `cli` fills it from arguments and the environment; everything here
//! is already parsed and checked, so building never re-reads a setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::PlanKey;
use crate::ensure::EnsureConfig;
use crate::openmeter::ClientConfig;
use crate::pipeline::PipelineConfig;
use crate::price::PriceSource;
use crate::secret::Secret;
use crate::source::kafka::KafkaConfig;

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub pipeline: PipelineSettings,
    pub kafka: KafkaSettings,
    pub api: ApiSettings,
    /// The continuous audit; off unless `AUDIT_INTERVAL` is set.
    pub audit: Option<ContinuousAuditSettings>,
}

/// What every pipeline needs (`run`, `replay`, `dlq replay`).
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub openmeter: OpenMeterSettings,
    pub price: PriceSource,
    pub batch: PipelineConfig,
}

/// Where OpenMeter is, and how customers are ensured there. The client's
/// `attempts` is set by whoever builds it, from its role.
#[derive(Debug, Clone)]
pub struct OpenMeterSettings {
    pub client: ClientConfig,
    /// The plan every new customer is subscribed to.
    pub plan_key: PlanKey,
    pub ensure: EnsureConfig,
}

/// The brokers, the gateway topic and group (the DLQ producer shares their
/// connection settings), and where dead letters go.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub consumer: KafkaConfig,
    pub dlq_topic: String,
    /// Where dead letters the DLQ topic refuses are kept.
    pub spill_dir: PathBuf,
}

/// The provisioning API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Port 0 binds a free port (see `Application::api_addr`).
    pub addr: SocketAddr,
    /// When set, `/ensure` demands it; required off loopback.
    pub token: Option<Secret>,
}

/// The audit `run` repeats on its own.
#[derive(Debug, Clone, Copy)]
pub struct ContinuousAuditSettings {
    pub interval: Duration,
    /// Length of the audited window, ending `settle` before now.
    pub window: Duration,
    pub settle: Duration,
    /// OpenMeter's invoice collection interval.
    pub collection_window: Duration,
    pub repair: bool,
}
