//! Why the collector, or a part of it, could not be built.

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use crate::dlq::DlqError;
use crate::openmeter::ApiError;
use crate::price::OracleError;

/// Why the collector, or one of its parts, could not be built.
#[derive(Debug, Error)]
pub enum AppError {
    #[error("cannot start without an ETH/USD price (set ETH_USD_PRICE or fix PRICE_ORACLE_URL)")]
    Price(#[source] OracleError),
    #[error(transparent)]
    OpenMeter(#[from] ApiError),
    #[error(transparent)]
    DeadLetters(#[from] DlqError),
    #[error("connecting to Kafka")]
    Kafka(#[source] rdkafka::error::KafkaError),
    #[error("PROVISION_BIND={bind} is not a loopback address: set PROVISION_TOKEN so /ensure is not open to the network")]
    UnguardedApi { bind: IpAddr },
    #[error("binding the provisioning API to {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
