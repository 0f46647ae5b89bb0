//! ticketmeter: bills Livepeer remote-signer usage through OpenMeter.
//!
//! The modules follow the data: `source` → `decode` → `map` → `ensure` →
//! `deliver` → `settle` (→ `commit` / `dlq`), wired by `pipeline`; plus
//! `billing` (when OpenMeter invoices an event), `health`, `kafka` (the
//! client settings everything that talks to the brokers shares), the `openmeter`
//! client, `audit`, `bootstrap`, the HTTP `api`, `app` (assembly) and the
//! `cli`.
//!
//! Every module but `bootstrap` (whose catalog, checks and report are the
//! `bootstrap` command's contract) is private, and everything in it
//! `pub(crate)` unless it is re-exported below, so the compiler finds dead
//! code. What is exported is what the binary, the benchmarks and the
//! black-box tests drive.

mod api;
mod app;
mod audit;
mod billing;
pub mod bootstrap;
mod chain;
mod cli;
mod clock;
mod commit;
mod concurrency;
mod contract;
mod decode;
mod deliver;
mod dlq;
mod domain;
mod encoding;
mod ensure;
mod health;
mod kafka;
mod link;
mod map;
mod metrics;
mod openmeter;
mod pipeline;
mod price;
mod retry;
mod secret;
mod settle;
mod source;

/// The binary's edge: the parsed command line, and running it.
pub use cli::{collector_config, error_text, init_logging, note, run, Cli};

/// Assembly: the collector from its configuration, run until a shutdown
/// its caller controls; and a pipeline from its parts.
pub use app::{pipeline, AppError, Application, Config, Stopped};
pub use billing::{BillingPolicy, EventTime};
pub use commit::OffsetTracker;
pub use contract::{Amounts, Contract, IdScheme, SubjectRule};
pub use deliver::InFlightBounds;
pub use dlq::DeadLetterSink;
pub use pipeline::{Pipeline, PipelineConfig};
pub use price::{PriceFeed, PriceSource};
pub use retry::{Backoff, RetryPolicy};
pub use settle::Tally;

/// The stages benchmarks time on their own.
pub use decode::{decode, Decoded, DEFAULT_MAX_BYTES};
pub use map::map;

/// Domain types, parsed once at the edge.
pub use domain::{AuthId, Identity, IdentityClaim, PlanKey, SubjectKind, UsdMicros};

/// OpenMeter: the client, its errors, and what ensure makes.
pub use ensure::{EnsureConfig, EnsureError, Provisioner, Warmed};
pub use openmeter::model::{CreateSubscription, CustomerById};
pub use openmeter::{
    ApiError, ClientConfig, Endpoint, ErrorClass, OpenMeterClient, CLOUDEVENT_BATCH,
};

/// Session chains: what the collector tracks per event, for the benchmark
/// that measures its cost.
pub use chain::record::Chained;
pub use chain::tracker::{ChainSettings, Seen, Tracker as ChainTracker};
pub use link::Link;

pub use metrics::metrics;
pub use secret::Secret;
