//! The black-box tests: one test binary (`cargo test --test blackbox`) that
//! drives ticketmeter from outside — its public library API, the real
//! `ticketmeter` binary, a real Kafka-protocol broker (tansu), the OpenMeter
//! double, Prism and Prometheus — with one module per capability. `support`
//! holds the harness, split by concern. README, "Where a new test goes",
//! says which module a new test belongs in.

mod support;

mod api;
mod audit;
mod billing;
mod bootstrap;
mod check;
mod contract;
mod deploy;
mod docs;
mod fixtures;
mod gaps;
mod kafka;
mod layout;
mod operator;
mod outage;
mod price;
mod prometheus;
mod provisioning;
mod upstream_conformance;
