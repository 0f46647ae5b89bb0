//! Kafka client settings every part that talks to the brokers shares: the
//! collector's consumer ([`crate::source::kafka`]), the DLQ producer, the
//! audit's reader and `check`. Each adds its own settings on top.

use std::time::Duration;

use bytes::Bytes;
use rdkafka::config::ClientConfig as RdConfig;
use rdkafka::message::{BorrowedMessage, Headers, Message};

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

impl KafkaConfig {
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
    fn no_credentials_and_no_tls_is_plaintext() {
        let c = config(None, false).client_config();
        assert_eq!(c.get("security.protocol"), Some("PLAINTEXT"));
        assert_eq!(c.get("sasl.username"), None);
    }
}
