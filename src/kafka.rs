//! Kafka client settings every part that talks to the brokers shares: the
//! collector's consumer ([`crate::source::kafka`]), the DLQ producer, the
//! audit's reader and `check`. Each adds its own settings on top. Also
//! here: the probe that asks the brokers for a topic (`check`, `run`'s
//! start-up, `dlq replay`), and the relay of librdkafka's own logs and
//! errors, each kind said once in a while.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::config::{ClientConfig as RdConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use thiserror::Error;

use crate::secret::{ExposeSecret, Secret};

/// Kafka connection settings, named as the original's environment.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    pub sasl_mechanism: String,
    pub tls: bool,
    /// Pass-through librdkafka settings (from `KAFKA_OPT_*`).
    pub extra: Vec<(String, String)>,
    /// How often settled progress is stored and auto-committed.
    pub commit_interval: Duration,
    /// How long a partition with work may read nothing before it counts
    /// as stalled.
    pub stall_after: Duration,
}

impl Default for KafkaConfig {
    /// The original stack's: a local broker, go-livepeer's topic, the
    /// original consumer group (so offsets carry over), no SASL, no TLS.
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".to_owned(),
            topic: "livepeer-gateway-events".to_owned(),
            group: "openmeter-collector".to_owned(),
            sasl_username: None,
            sasl_password: None,
            sasl_mechanism: "PLAIN".to_owned(),
            tls: false,
            extra: Vec::new(),
            commit_interval: Duration::from_secs(1),
            stall_after: Duration::from_secs(60),
        }
    }
}

impl KafkaConfig {
    /// The dead-letter topic's default: `<topic>.dlq`.
    pub(crate) fn default_dlq_topic(&self) -> String {
        format!("{}.dlq", self.topic)
    }

    /// librdkafka settings shared by the consumer and the DLQ producer.
    pub fn client_config(&self) -> RdConfig {
        let mut c = RdConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        let protocol = match (self.sasl_username.is_some(), self.tls) {
            (true, true) => "SASL_SSL",
            (true, false) => "SASL_PLAINTEXT",
            (false, true) => "SSL",
            (false, false) => "PLAINTEXT",
        };
        c.set("security.protocol", protocol);
        if self.tls {
            // The vendored OpenSSL looks for CAs under its own build prefix;
            // probe the system's usual bundle locations instead.
            c.set("ssl.ca.location", "probe");
        }
        if let Some(user) = &self.sasl_username {
            c.set("sasl.mechanism", &self.sasl_mechanism);
            c.set("sasl.username", user);
            c.set(
                "sasl.password",
                self.sasl_password
                    .as_ref()
                    .map_or("", |p| p.expose_secret()),
            );
        }
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

/// How long a probe waits for the brokers' metadata.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a probe of the brokers failed.
#[derive(Debug, Clone, Error)]
pub(crate) enum ProbeError {
    #[error("cannot reach the Kafka brokers {brokers} (KAFKA_BROKERS): {reason}")]
    Unreachable { brokers: String, reason: String },
    #[error("topic {topic} ({variable}) does not exist on the Kafka brokers {brokers}")]
    NoTopic {
        topic: String,
        variable: &'static str,
        brokers: String,
    },
    #[error("topic {topic} ({variable}): {reason}")]
    Topic {
        topic: String,
        variable: &'static str,
        reason: String,
    },
    /// librdkafka refused the settings (a `KAFKA_OPT_*`, SASL, TLS).
    #[error("the Kafka settings are refused: {reason}")]
    Settings { reason: String },
}

impl KafkaConfig {
    /// Asks the brokers for `topic`'s metadata (no group join, nothing
    /// read): its partition count, or why not. `variable` names the setting
    /// the topic came from, for the message. Blocks up to [`PROBE_TIMEOUT`].
    pub(crate) fn probe(&self, topic: &str, variable: &'static str) -> Result<usize, ProbeError> {
        let unreachable = |e: KafkaError| ProbeError::Unreachable {
            brokers: self.brokers.clone(),
            reason: kafka_reason(&e),
        };
        let consumer: BaseConsumer<Quiet> = self
            .client_config()
            .create_with_context(self.quiet())
            .map_err(|e| ProbeError::Settings {
                reason: e.to_string(),
            })?;
        let metadata = consumer
            .fetch_metadata(Some(topic), PROBE_TIMEOUT)
            .map_err(unreachable)?;
        forget(BROKERS_KEY);
        let no_topic = || ProbeError::NoTopic {
            topic: topic.to_owned(),
            variable,
            brokers: self.brokers.clone(),
        };
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(no_topic());
        };
        match found.error().map(RDKafkaErrorCode::from) {
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Err(no_topic()),
            Some(code) => Err(ProbeError::Topic {
                topic: topic.to_owned(),
                variable,
                reason: code.to_string(),
            }),
            None if found.partitions().is_empty() => Err(no_topic()),
            None => Ok(found.partitions().len()),
        }
    }

    /// The context of a client whose librdkafka logs go through [`relay_log`].
    pub(crate) fn quiet(&self) -> Quiet {
        Quiet {
            brokers: self.brokers.clone(),
        }
    }
}

/// librdkafka's own words for an error, without rdkafka's wrapper
/// ("Meta data fetch error: …").
pub(crate) fn kafka_reason(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(code) => code.to_string(),
        None => e.to_string(),
    }
}

/// The context of every librdkafka client but the collector's consumer
/// (which adds its own callbacks): logs and errors relayed, each kind said
/// once in a while.
pub(crate) struct Quiet {
    brokers: String,
}

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        relay_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        relay_error(&self.brokers, &error, reason);
    }
}

impl ConsumerContext for Quiet {}

/// How often one kind of librdkafka complaint is said again while it goes
/// on: librdkafka retries a lost connection every few hundred
/// milliseconds and reports every failure (`AllBrokersDown`,
/// `BrokerTransportFailure`, its own `FAIL` log line), so relayed as they
/// come an unreachable broker is thousands of lines an hour saying one
/// thing. Each kind is said the first time, then at most this often, with
/// how many were held back.
pub(crate) const REPEAT_EVERY: Duration = Duration::from_secs(300);

/// The kind every "cannot reach the brokers" complaint shares, so the
/// consumer, the DLQ producer and a start-up probe say it once between
/// them.
const BROKERS_KEY: &str = "brokers";

struct Said {
    at: Instant,
    held_back: u64,
}

/// Process-wide, like the metrics: every client's complaints about the same
/// brokers are one story.
static SAID: LazyLock<Mutex<HashMap<String, Said>>> = LazyLock::new(Mutex::default);

/// `Some(held back since last said)` when `kind` is due to be said now.
fn due(kind: &str) -> Option<u64> {
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    match said.get_mut(kind) {
        Some(s) if s.at.elapsed() < REPEAT_EVERY => {
            s.held_back += 1;
            None
        }
        Some(s) => {
            let held = std::mem::take(&mut s.held_back);
            s.at = Instant::now();
            Some(held)
        }
        None => {
            said.insert(
                kind.to_owned(),
                Said {
                    at: Instant::now(),
                    held_back: 0,
                },
            );
            Some(0)
        }
    }
}

/// Forgets `kind`: the trouble is over, so its next occurrence is said at
/// once. Returns whether it had been said.
fn forget(kind: &str) -> bool {
    SAID.lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(kind)
        .is_some()
}

/// The brokers answer again (the consumer saw one up): the next outage is
/// logged at once. True when an outage had been logged.
pub(crate) fn brokers_reachable() -> bool {
    forget(BROKERS_KEY)
}

fn again(held: u64) -> String {
    if held == 0 {
        String::new()
    } else {
        format!(
            " ({held} more like it in the last {})",
            humantime::format_duration(REPEAT_EVERY)
        )
    }
}

/// Says that a probe found the brokers unreachable, as one with the
/// librdkafka errors about the same brokers (once every [`REPEAT_EVERY`]).
pub(crate) fn say_unreachable(e: &ProbeError) {
    if due(BROKERS_KEY).is_some() {
        tracing::error!("{e}; retrying until they answer");
    }
}

/// Whether librdkafka's error means the brokers cannot be reached.
pub(crate) fn is_unreachable(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(C::AllBrokersDown | C::BrokerTransportFailure | C::Resolve | C::BrokerNotAvailable)
    )
}

/// Relays a librdkafka error callback, each kind at most once every
/// [`REPEAT_EVERY`]; returns whether it says the brokers are unreachable.
pub(crate) fn relay_error(brokers: &str, error: &KafkaError, reason: &str) -> bool {
    if is_unreachable(error) {
        if let Some(held) = due(BROKERS_KEY) {
            let again = again(held);
            tracing::error!(
                brokers,
                reason,
                "cannot reach the Kafka brokers (KAFKA_BROKERS); librdkafka keeps retrying{again}"
            );
        }
        return true;
    }
    let kind = format!("error:{}", kafka_reason(error));
    if let Some(held) = due(&kind) {
        let again = again(held);
        tracing::error!(error = %kafka_reason(error), reason, "Kafka client error{again}");
    }
    false
}

/// Relays a librdkafka log line at its level, each facility at most once
/// every [`REPEAT_EVERY`]; debug lines pass as they are.
pub(crate) fn relay_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    use RDKafkaLogLevel as L;
    // FAIL (a broker connection failed) comes with an error callback that
    // `relay_error` says once for all brokers.
    if matches!(level, L::Debug) || fac == "FAIL" {
        tracing::debug!(target: "librdkafka", fac, "{message}");
        return;
    }
    let Some(held) = due(&format!("log:{fac}")) else {
        return;
    };
    let again = again(held);
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
            tracing::warn!(target: "librdkafka", fac, "{message}{again}");
        }
        L::Notice | L::Info | L::Debug => {
            tracing::info!(target: "librdkafka", fac, "{message}{again}")
        }
    }
}

/// A message's headers, copied out of librdkafka's buffer.
pub(crate) fn owned_headers(m: &BorrowedMessage<'_>) -> Vec<(String, Bytes)> {
    m.headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        Bytes::copy_from_slice(h.value.unwrap_or_default()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn config(user: Option<&str>, tls: bool) -> KafkaConfig {
        KafkaConfig {
            brokers: "b:9092".into(),
            topic: "t".into(),
            group: "g".into(),
            sasl_username: user.map(str::to_owned),
            sasl_password: Some(Secret::from("pw")),
            sasl_mechanism: "PLAIN".into(),
            tls,
            extra: vec![("session.timeout.ms".into(), "6000".into())],
            commit_interval: Duration::from_secs(1),
            stall_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn sasl_over_tls_is_sasl_ssl_with_probed_cas() {
        let c = config(Some("user"), true).client_config();
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("sasl.username"), Some("user"));
        assert_eq!(c.get("ssl.ca.location"), Some("probe"));
    }

    #[test]
    fn a_complaint_is_said_the_first_time_then_held_back_until_it_is_over() {
        let kind = "test:a_complaint_is_said_the_first_time";
        assert_eq!(due(kind), Some(0));
        assert_eq!(due(kind), None);
        assert_eq!(due(kind), None);
        assert!(forget(kind));
        assert_eq!(due(kind), Some(0), "a new occurrence is said at once");
    }

    #[test]
    fn no_credentials_and_no_tls_is_plaintext() {
        let c = config(None, false).client_config();
        assert_eq!(c.get("security.protocol"), Some("PLAINTEXT"));
        assert_eq!(c.get("sasl.username"), None);
    }
}
