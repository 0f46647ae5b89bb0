//! The double's in-memory data. Everything lives behind one `std::sync::Mutex`
//! (see `store.rs`), so each operation here is atomic: 50 concurrent creates of
//! one customer key see exactly one winner.

mod catalog;
mod customers;
mod event_store;
mod events;
mod meter_query;
mod plan_rules;
mod plans;
mod subscriptions;
mod tables;
mod usage;

pub(crate) use catalog::{NewFeature, NewMeter};
pub(crate) use customers::NewCustomer;
pub(crate) use event_store::StoredEvent;
pub(crate) use meter_query::MeterQueryBody;
pub(crate) use plans::{NewPlan, PlanSelector};
pub(crate) use subscriptions::{CancelTiming, NewSubscription};
pub(crate) use tables::State;
pub(crate) use usage::UsageRow;
