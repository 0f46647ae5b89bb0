//! The OpenMeter double on a loopback port, with the default catalog
//! bootstrapped through ticketmeter's own `bootstrap`.

use std::time::Duration;

use openmeter_double::{Double, DoubleConfig, RunningDouble};
use ticketmeter::bootstrap::{bootstrap, BootstrapOptions, Catalog};
use ticketmeter::{
    decode, ClientConfig, Contract, Decoded, Endpoint, EnsureConfig, OpenMeterClient, Provisioner,
    DEFAULT_MAX_BYTES,
};

/// The default plan: the one the built-in catalog bootstraps.
pub(crate) const PLAN: &str = "clearinghouse_default_ppu";
/// The OpenMeter API token the tests give the double and the collector.
pub(crate) const TOKEN: &str = "test-token-s3cr3t";

/// A started OpenMeter double with the default catalog bootstrapped.
pub(crate) struct OpenMeter {
    pub double: Double,
    pub running: RunningDouble,
}

impl OpenMeter {
    pub(crate) async fn start(token: Option<&str>) -> Self {
        let double = Double::new(DoubleConfig {
            token: token.map(str::to_owned),
            ..Default::default()
        });
        let running = double.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
        Self { double, running }
    }

    pub(crate) async fn bootstrapped(token: Option<&str>) -> Self {
        let om = Self::start(token).await;
        let client = om.client(token);
        let catalog = Catalog::builtin(&PLAN.parse().unwrap());
        bootstrap(&client, &catalog, &BootstrapOptions::default())
            .await
            .unwrap();
        om.double.reset_counters();
        om
    }

    pub(crate) fn url(&self) -> String {
        self.running.base_url()
    }

    pub(crate) fn client(&self, token: Option<&str>) -> OpenMeterClient {
        let endpoint = Endpoint::parse(&self.url(), None).unwrap();
        let mut config = ClientConfig::new(endpoint, token.map(ticketmeter::Secret::from));
        config.retry.backoff.base = Duration::from_millis(10);
        config.retry.backoff.max = Duration::from_millis(200);
        OpenMeterClient::new(config).unwrap()
    }

    /// Creates, through ticketmeter's provisioner, the customer of every
    /// payload with a valid identity (by the default rules).
    pub(crate) async fn ensure_customers_of(&self, token: Option<&str>, payloads: &[String]) {
        let provisioner = Provisioner::new(
            self.client(token),
            PLAN.parse().unwrap(),
            EnsureConfig::default(),
        );
        for payload in payloads {
            let Ok(Decoded::Ticket(ticket)) =
                decode(payload.as_bytes(), DEFAULT_MAX_BYTES, &Contract::default())
            else {
                continue;
            };
            provisioner.ensure(&ticket.identity).await.unwrap();
        }
    }
}
