//! The catalog ticketmeter needs to bill, built in so `bootstrap`, `check`
//! and the demo work without a catalog file.

use std::collections::BTreeMap;

use super::{
    Aggregation, Catalog, DimensionName, Duration, FeatureSpec, JsonPath, Key, MeterSpec, Numeric,
    PhaseSpec, PlanSpec, Price, RateCardSpec,
};
use crate::decode::BILLABLE_TYPE;
use crate::domain::PlanKey;

/// The dimensions every built-in meter groups by.
const DIMENSIONS: [&str; 4] = ["client_id", "external_user_id", "model_id", "pipeline"];

/// The analytics meters' further dimension.
const MANIFEST: &str = "manifest_id";

impl Catalog {
    /// The catalog ticketmeter needs to bill: upstream's meters (the three
    /// billing ones, and three analytics ones by manifest), all reading
    /// fields the collector sends, and `id_fingerprint`, the sum the
    /// audit's totals check tickets by (`map::id_fingerprint`; upstream's
    /// catalog has no such meter); the plan (keyed `plan_key`) prices
    /// billable spend at one USD micro per unit.
    pub fn builtin(plan_key: &PlanKey) -> Catalog {
        let sum = Aggregation::Sum;
        Catalog {
            meters: vec![
                builtin_meter("network_fee_usd_micros", "Network fee (USD micros)", sum),
                builtin_meter("billable_usd_micros", "Billable amount (USD micros)", sum),
                builtin_meter("signed_ticket_count", "Signed tickets", Aggregation::Count),
                by_manifest(builtin_meter("fee_wei", "Fee (wei)", sum)),
                by_manifest(builtin_meter("billable_secs", "Billable seconds", sum)),
                by_manifest(MeterSpec {
                    key: key("network_fee_usd_micros_by_manifest"),
                    name: "Network fee by manifest (USD micros)".to_owned(),
                    ..builtin_meter("network_fee_usd_micros", "", sum)
                }),
                builtin_meter("id_fingerprint", "Ticket id fingerprints (audit)", sum),
            ],
            features: vec![
                builtin_feature("network_spend", "Network spend", "network_fee_usd_micros"),
                builtin_feature("billable_spend", "Billable spend", "billable_usd_micros"),
            ],
            plan: builtin_plan(plan_key),
            other_plans: Vec::new(),
            default_at: None,
            lines: None,
        }
    }
}

/// A key of the built-in catalog (checked by its tests, not at run time).
pub(super) fn key(s: &str) -> Key {
    Key(s.to_owned())
}

fn builtin_meter(k: &str, name: &str, aggregation: Aggregation) -> MeterSpec {
    MeterSpec {
        key: key(k),
        name: name.to_owned(),
        description: None,
        aggregation,
        event_type: BILLABLE_TYPE.to_owned(),
        value_property: (aggregation != Aggregation::Count).then(|| JsonPath::of_field(k)),
        dimensions: DIMENSIONS
            .iter()
            .map(|d| (DimensionName((*d).to_owned()), JsonPath::of_field(d)))
            .collect(),
    }
}

/// `meter` grouped by manifest too, as upstream's analytics meters are.
fn by_manifest(mut meter: MeterSpec) -> MeterSpec {
    meter.dimensions.insert(
        DimensionName(MANIFEST.to_owned()),
        JsonPath::of_field(MANIFEST),
    );
    meter
}

fn builtin_feature(k: &str, name: &str, meter: &str) -> FeatureSpec {
    FeatureSpec {
        key: key(k),
        name: name.to_owned(),
        description: None,
        meter: key(meter),
    }
}

pub(super) fn builtin_plan(plan_key: &PlanKey) -> PlanSpec {
    PlanSpec {
        key: plan_key.clone(),
        subscribe_role: None,
        name: "Clearinghouse pay per use".to_owned(),
        description: None,
        currency: "USD".to_owned(),
        billing_cadence: Duration("P1M".to_owned()),
        settlement_mode: None,
        metadata: BTreeMap::new(),
        phases: vec![PhaseSpec {
            key: key("default"),
            name: "Default".to_owned(),
            duration: None,
            rate_cards: vec![RateCardSpec {
                key: key("billable_spend"),
                name: "Billable spend".to_owned(),
                feature: Some(key("billable_spend")),
                billing_cadence: None,
                price: Price::unit(Numeric("0.000001".to_owned())),
                discounts: None,
            }],
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::catalog::tests::default_key;

    #[test]
    fn builtin_catalog_is_valid() {
        assert_eq!(Catalog::builtin(&default_key()).validate(), Ok(()));
    }

    #[test]
    fn builtin_catalog_round_trips_through_yaml() {
        let catalog = Catalog::builtin(&default_key());
        let yaml = serde_yaml::to_string(&catalog).expect("serialises");
        let back: Catalog = serde_yaml::from_str(&yaml).expect("parses");
        assert_eq!(back, catalog);
    }
}
