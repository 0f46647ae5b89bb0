//! ticketmeter: bills Livepeer remote-signer usage through OpenMeter.
//!
//! The modules follow the data: [`source`] → [`decode`] → [`map`] →
//! [`ensure`] → [`deliver`] → [`commit`] / [`dlq`], wired by [`pipeline`];
//! plus the [`openmeter`] client, the HTTP [`api`] and the [`cli`].

pub mod domain;
pub mod ensure;
pub mod metrics;
pub mod openmeter;
pub mod retry;
pub mod secret;
