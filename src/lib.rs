//! ticketmeter: bills Livepeer remote-signer usage through OpenMeter.
//!
//! The modules follow the data: [`source`] → [`decode`] → [`map`] →
//! [`ensure`] → [`deliver`] → [`settle`] (→ [`commit`] / [`dlq`]), wired by
//! [`pipeline`];
//! plus [`billing`] (when OpenMeter invoices an event), [`health`], the
//! [`openmeter`] client, [`audit`], the HTTP [`api`], [`app`] (assembly)
//! and the [`cli`].

pub mod api;
pub mod app;
pub mod audit;
pub mod billing;
pub mod bootstrap;
pub mod cli;
pub mod commit;
pub mod decode;
pub mod deliver;
pub mod dlq;
pub mod domain;
pub mod ensure;
pub mod health;
pub mod map;
pub mod metrics;
pub mod openmeter;
pub mod pipeline;
pub mod price;
pub mod retry;
pub mod secret;
pub mod settle;
pub mod source;
