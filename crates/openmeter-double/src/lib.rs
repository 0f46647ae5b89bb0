//! `openmeter-double`: a stateful, in-memory test double of the OpenMeter /
//! Kong Konnect "Metering & Billing" v3 API subset ticketmeter uses.
//!
//! Every response is shaped after `openmeter-v3-openapi.yaml` (snake_case,
//! required fields present, optional fields omitted rather than `null`), so
//! the double can sit behind Prism in a contract test. Every request body is
//! checked against that spec's own request schemas (embedded at build time),
//! as the real server's kin-openapi middleware checks it. On top of the API it
//! offers what tests need and a real server cannot give: typed snapshots of
//! the stored data, call counters, seeding shortcuts and fault injection
//! (failures, latency, dropped connections) per [`Route`], and a [`Network`]
//! between it and its clients (a round trip, a gateway's rate limit).
//!
//! Where the real server does more than its spec says, the double follows the
//! server (openmeterio/openmeter, cited at each rule): a subscription starts at
//! its creation and its status is computed at read time (`canceled` runs until
//! `active_to`); a customer has one subscription at a time; only a plan version
//! active now can be subscribed to; publish refuses rate cards invoicing could
//! not bill (a usage discount on a flat price among them); a plan is created
//! `credit_then_invoice` and read back without its labels; customer creates refuse keys overlapping another customer's id or
//! subjects; the meter query counts a customer's deduplicated events by whole
//! seconds, and [`Double::billable_total`] says what invoicing would bill of
//! them. [`Double::refuse_billing_setup`] injects the server's per-customer
//! "invalid billing setup" refusal.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use openmeter_double::{Double, DoubleConfig, Route};
//! let double = Double::new(DoubleConfig::default());
//! let running = double.spawn("127.0.0.1:0".parse().unwrap()).await?;
//! double.fail_next(Route::CreateCustomer, 1, 503);
//! println!("OPENMETER_URL={}", running.base_url());
//! # Ok(()) }
//! ```

mod cadence;
mod config;
mod double;
mod faults;
mod gate;
mod model;
mod network;
mod problem;
mod query;
mod route;
mod routes;
mod server;
mod state;
mod store;
mod validate;

/// The `[from, to)` billing period holding `t` of a subscription anchored
/// at `anchor` and billed every `cadence`, as the double's invoicing reads
/// it; `None` for a cadence it does not read. Public so that ticketmeter's
/// own reading can be held against it in a table test.
pub fn billing_period(
    cadence: &str,
    anchor: chrono::DateTime<chrono::Utc>,
    t: chrono::DateTime<chrono::Utc>,
) -> Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    cadence::Cadence::parse(cadence)?.period_at(anchor, t)
}

pub use config::DoubleConfig;
pub use double::running::RunningDouble;
pub use double::Double;
pub use model::{
    Customer, Delivery, Feature, Labels, Meter, Plan, PlanRef, PlanSeed, Subscription,
    SubscriptionItem, SubscriptionPhase, UsageAttribution,
};
pub use network::{Network, RateLimit, RetryAfterForm};
pub use problem::{InvalidParam, Problem};
pub use route::Route;
/// The exact decimal [`Double::billable_total`] and [`Double::metered_total`] answer in.
pub use rust_decimal::Decimal;
pub use server::serve;
