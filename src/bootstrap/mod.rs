//! Bootstrap of the OpenMeter catalog (meters, features, plans).
//!
//! `ticketmeter bootstrap` makes sure what the collector bills against
//! exists: it creates what is missing, in dependency order, and never
//! changes or deletes what exists. Meters are immutable in OpenMeter, and a
//! plan version may have subscribers, so a difference is reported as drift
//! for an operator to decide on; only `--publish-new-version` replaces a
//! drifted plan, by publishing a new version.

mod annotations;
mod cadence;
mod catalog;
mod collector;
mod diff;
mod engine;
mod error;
mod lines;
mod plan;
mod plan_meta;
mod report;
mod step;
mod wire;

use crate::openmeter::OpenMeterClient;

pub use catalog::{Catalog, CatalogError, Notice, PlanSpec};
pub use catalog::{SettlementMode, SubscribeRole};
pub use collector::check_catalog_against_collector;
pub(crate) use collector::{catalog_to_create, owner_plan};
pub use error::BootstrapError;
pub use report::{Kind, Outcome, Report};
pub use step::BootstrapOptions;

/// Creates, in order, the meters, the features and the plans of `catalog`
/// that are missing, and publishes the plans. See the module docs. The
/// report starts with the catalog's notices: what of it is not sent.
pub async fn bootstrap(
    client: &OpenMeterClient,
    catalog: &Catalog,
    opts: &BootstrapOptions,
) -> Result<Report, BootstrapError> {
    catalog.validate().map_err(BootstrapError::InvalidCatalog)?;
    let mut report = Report {
        notices: catalog.notices(),
        ..Report::default()
    };
    let ctx = step::Ctx {
        client,
        catalog,
        opts,
    };
    match engine::run(&ctx, &mut report).await {
        Ok(()) => Ok(report),
        Err(source) => Err(BootstrapError::Aborted { source, report }),
    }
}
