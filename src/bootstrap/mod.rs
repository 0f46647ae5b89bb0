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
mod diff;
mod engine;
mod lines;
mod plan;
mod plan_meta;
mod report;
mod step;
mod wire;

use thiserror::Error;

use crate::decode::BILLABLE_TYPE;
use crate::map::DATA_FIELDS;
use crate::openmeter::{ApiError, OpenMeterClient};

pub use catalog::{Catalog, CatalogError, Notice, PlanSpec};
pub(crate) use catalog::{JsonPath, Problem};
pub use plan_meta::{SettlementMode, SubscribeRole};
pub use report::{Kind, Outcome, Report};

/// How a run may act.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootstrapOptions {
    /// Look only: report what would be created, call no write endpoint.
    pub dry_run: bool,
    /// Replace a drifted plan by creating and publishing a new version.
    pub publish_new_version: bool,
}

/// Why a run could not complete. Failures of single objects are not
/// errors: they are [`Outcome::Failed`] lines in the [`Report`].
#[derive(Debug, Error)]
pub enum BootstrapError {
    /// The catalog contradicts itself, or OpenMeter would refuse it
    /// (checked before any call).
    #[error("the catalog is inconsistent: {}", catalog::joined(.0))]
    InvalidCatalog(Vec<Problem>),
    /// A failure that concerns every call (the token, the URL, OpenMeter
    /// unreachable): no further call can succeed, so the run stops.
    /// `report` holds what was done before.
    #[error("bootstrap stopped: {source}")]
    Aborted { source: ApiError, report: Report },
}

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

/// Checks that every meter reads what the collector sends: its event type
/// is the billable one and each JSONPath names a `data` field the collector
/// fills in. A meter on a field nobody sends would silently meter zero.
pub fn check_catalog_against_collector(catalog: &Catalog) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for (i, meter) in catalog.meters.iter().enumerate() {
        let at = format!("meters[{i}] ({})", meter.key);
        if meter.event_type != BILLABLE_TYPE {
            problems.push(format!(
                "{at}.event_type: {:?} is not the type the collector sends ({BILLABLE_TYPE:?})",
                meter.event_type
            ));
        }
        if let Some(path) = &meter.value_property {
            check_path(&format!("{at}.value_property"), path, &mut problems);
        }
        for (name, path) in &meter.dimensions {
            check_path(&format!("{at}.dimensions.{name}"), path, &mut problems);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn check_path(field: &str, path: &JsonPath, problems: &mut Vec<String>) {
    let sent = path
        .top_level_field()
        .is_some_and(|f| DATA_FIELDS.contains(&f));
    if !sent {
        problems.push(format!(
            "{field}: {path} reads a field the collector never sends (it sends {})",
            DATA_FIELDS.join(", ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PlanKey;
    use catalog::DimensionName;

    fn builtin() -> Catalog {
        let key: PlanKey = "clearinghouse_default_ppu".parse().expect("valid key");
        Catalog::builtin(&key)
    }

    /// Keeps the built-in catalog in step with the collector: renaming a
    /// field in `map.rs` without the catalog (or back) fails here.
    #[test]
    fn builtin_catalog_reads_only_fields_the_collector_sends() {
        assert_eq!(check_catalog_against_collector(&builtin()), Ok(()));
    }

    #[test]
    fn a_meter_on_a_field_the_collector_never_sends_is_rejected() {
        let mut catalog = builtin();
        catalog.meters[0].value_property = "$.network_fee_usd".parse().ok();
        let problems = check_catalog_against_collector(&catalog).expect_err("rejected");
        assert!(problems[0].contains("value_property"), "{problems:?}");
    }

    #[test]
    fn a_dimension_on_a_field_the_collector_never_sends_is_rejected() {
        let mut catalog = builtin();
        let name: DimensionName = "region".parse().expect("valid name");
        let path: JsonPath = "$.region".parse().expect("valid path");
        catalog.meters[1].dimensions.insert(name, path);
        let problems = check_catalog_against_collector(&catalog).expect_err("rejected");
        assert!(problems[0].contains("dimensions.region"), "{problems:?}");
    }

    #[test]
    fn a_meter_on_another_event_type_is_rejected() {
        let mut catalog = builtin();
        catalog.meters[2].event_type = "create_new_payment".into();
        assert!(check_catalog_against_collector(&catalog).is_err());
    }
}
