//! The OpenMeter double's black-box tests: one test binary (`cargo test -p
//! openmeter-double --test blackbox`) that drives the double over HTTP on a
//! loopback socket, as ticketmeter does, and checks its answers against the
//! real v3 spec. One module per part of the API; `support` holds the
//! harness.

mod support;

mod billing_setup;
mod catalog;
mod customer_conflicts;
mod customers;
mod events;
mod faults;
mod plan_rules;
mod plans_and_subscriptions;
mod spec_check;
mod subscription_lifecycle;
mod subscription_timing;
mod throughput;
mod usage;
