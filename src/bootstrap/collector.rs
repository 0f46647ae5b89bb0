//! The catalog as the commands use it: checked against what the collector
//! sends before `bootstrap` creates it, and read by the others for the plan
//! app owners are subscribed to.

use std::path::Path;

use thiserror::Error;

use super::catalog::{Catalog, CatalogError, JsonPath, SubscribeRole};
use crate::decode::BILLABLE_TYPE;
use crate::domain::PlanKey;
use crate::map::DATA_FIELDS;

/// Why `bootstrap` does not take a catalog.
#[derive(Debug, Error)]
pub(crate) enum CatalogRefused {
    #[error(transparent)]
    Unreadable(#[from] CatalogError),
    /// A meter reads what the collector never sends.
    #[error("the catalog does not match what the collector sends:\n  {}", .0.join("\n  "))]
    NotWhatTheCollectorSends(Vec<String>),
}

/// The catalog `bootstrap` creates: `file`, else the built-in one with
/// `default_plan`; refused when a meter reads what the collector never
/// sends. A catalog whose default plan is not `default_plan` is named in a
/// warning.
pub(crate) fn catalog_to_create(
    file: Option<&Path>,
    default_plan: &PlanKey,
) -> Result<Catalog, CatalogRefused> {
    let catalog = match file {
        Some(path) => Catalog::from_file(path)?,
        None => Catalog::builtin(default_plan),
    };
    check_catalog_against_collector(&catalog).map_err(CatalogRefused::NotWhatTheCollectorSends)?;
    if catalog.plan_key() != default_plan {
        tracing::warn!(
            catalog = %catalog.plan_key(),
            configured = %default_plan,
            "the catalog's default plan is not OPENMETER_DEFAULT_PLAN_KEY: new customers will not be subscribed to it"
        );
    }
    Ok(catalog)
}

/// The `subscribe_role: owner` plan of the catalog in `file`, for the
/// commands that ensure customers; a catalog whose default plan is not
/// `default_plan` is named in a warning.
pub(crate) fn owner_plan(
    file: &Path,
    default_plan: &PlanKey,
) -> Result<Option<PlanKey>, CatalogError> {
    let catalog = Catalog::from_file(file)?;
    if catalog.plan_key() != default_plan {
        tracing::warn!(
            catalog = %catalog.plan_key(),
            configured = %default_plan,
            "the catalog's default plan is not OPENMETER_DEFAULT_PLAN_KEY: new customers other than app owners get OPENMETER_DEFAULT_PLAN_KEY"
        );
    }
    Ok(catalog.plan_for(SubscribeRole::Owner).cloned())
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
    use crate::bootstrap::catalog::DimensionName;

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
