//! What a parser cannot check: unique keys, references that resolve, and
//! what OpenMeter would refuse when it creates and publishes a plan (each
//! such rule names the OpenMeter source that has it).

use std::collections::BTreeSet;

use super::{Aggregation, Catalog, Duration, Key, Numeric, PlanSpec, Problem, RateCardSpec};
use crate::bootstrap::plan_meta;

impl Catalog {
    /// Checks what a parser cannot: unique keys, references that resolve,
    /// `value_property` present exactly when the aggregation uses it, and
    /// plans OpenMeter will create and publish and bill as written. Each
    /// problem names its field.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        self.validate_meters(&mut problems);
        self.validate_features(&mut problems);
        self.validate_plans(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn validate_meters(&self, problems: &mut Vec<Problem>) {
        duplicates("meters", self.meters.iter().map(|m| &m.key), problems);
        for (i, m) in self.meters.iter().enumerate() {
            let field = format!("meters[{i}].value_property");
            let needs_value = m.aggregation != Aggregation::Count;
            match (&m.value_property, needs_value) {
                (None, true) => problems.push(Problem::new(
                    field,
                    format!("required for aggregation {}", m.aggregation),
                )),
                (Some(_), false) => {
                    problems.push(Problem::new(field, "a count meter ignores it; remove it"))
                }
                _ => {}
            }
            non_empty(&format!("meters[{i}].name"), &m.name, problems);
            non_empty(&format!("meters[{i}].event_type"), &m.event_type, problems);
        }
    }

    fn validate_features(&self, problems: &mut Vec<Problem>) {
        duplicates("features", self.features.iter().map(|f| &f.key), problems);
        let meters: BTreeSet<&Key> = self.meters.iter().map(|m| &m.key).collect();
        for (i, f) in self.features.iter().enumerate() {
            if !meters.contains(&f.meter) {
                problems.push(Problem::new(
                    format!("features[{i}].meter"),
                    format!("no meter {:?} in the catalog", f.meter.as_str()),
                ));
            }
            non_empty(&format!("features[{i}].name"), &f.name, problems);
        }
    }

    /// Each plan, then what spans plans: a key or a role used twice.
    fn validate_plans(&self, problems: &mut Vec<Problem>) {
        let plans = self.plans_written();
        let mut seen = BTreeSet::new();
        for (at, plan) in &plans {
            if !seen.insert(plan.key.as_str()) {
                problems.push(Problem::new(
                    format!("{at}.key"),
                    format!("{:?} appears twice", plan.key.as_str()),
                ));
            }
            self.validate_plan(at, plan, problems);
        }
        plan_meta::role_problems(&plans, problems);
    }

    fn validate_plan(&self, at: &str, plan: &PlanSpec, problems: &mut Vec<Problem>) {
        non_empty(&format!("{at}.name"), &plan.name, problems);
        non_empty(&format!("{at}.currency"), &plan.currency, problems);
        if !PLAN_CADENCES.contains(&plan.billing_cadence.as_str()) {
            problems.push(Problem::new(
                format!("{at}.billing_cadence"),
                format!(
                    "OpenMeter accepts only {} for a plan",
                    PLAN_CADENCES.join(", ")
                ),
            ));
        }
        plan_meta::problems(at, plan, problems);
        if plan.phases.is_empty() {
            problems.push(Problem::new(
                format!("{at}.phases"),
                "at least one phase is required",
            ));
        }
        let phases = format!("{at}.phases");
        duplicates(&phases, plan.phases.iter().map(|p| &p.key), problems);
        let last = plan.phases.len().saturating_sub(1);
        for (i, phase) in plan.phases.iter().enumerate() {
            let at = format!("{phases}[{i}]");
            non_empty(&format!("{at}.name"), &phase.name, problems);
            match (&phase.duration, i < last) {
                (None, true) => problems.push(Problem::new(
                    format!("{at}.duration"),
                    "only the last phase may omit it",
                )),
                (Some(_), false) => problems.push(Problem::new(
                    format!("{at}.duration"),
                    "the last phase lasts as long as the subscription: OpenMeter refuses to \
                     publish a plan whose last phase has a duration",
                )),
                _ => {}
            }
            let at = format!("{at}.rate_cards");
            duplicates(&at, phase.rate_cards.iter().map(|c| &c.key), problems);
            for (j, card) in phase.rate_cards.iter().enumerate() {
                self.validate_rate_card(&format!("{at}[{j}]"), plan, card, problems);
            }
        }
    }

    /// The spec's rules, then what OpenMeter checks on create and publish
    /// (`productcatalog/ratecard.go`, `plan/service/plan.go`): a card's key
    /// equals its feature's, a usage price has a feature, and a cadence is
    /// an hour or more and fits the plan's.
    fn validate_rate_card(
        &self,
        at: &str,
        plan: &PlanSpec,
        card: &RateCardSpec,
        problems: &mut Vec<Problem>,
    ) {
        non_empty(&format!("{at}.name"), &card.name, problems);
        if let Some(problem) = card.price.problem() {
            problems.push(Problem::new(format!("{at}.price.amount"), problem));
        }
        match &card.feature {
            Some(feature) if !self.features.iter().any(|f| &f.key == feature) => {
                problems.push(Problem::new(
                    format!("{at}.feature"),
                    format!("no feature {:?} in the catalog", feature.as_str()),
                ));
            }
            Some(feature) if feature != &card.key => problems.push(Problem::new(
                format!("{at}.key"),
                format!(
                    "{:?} is not its feature's key {:?}: OpenMeter requires a rate card's key \
                     to equal its feature's key",
                    card.key.as_str(),
                    feature.as_str()
                ),
            )),
            None if card.price.is_usage() => problems.push(Problem::new(
                format!("{at}.feature"),
                "a usage price needs a feature to meter: OpenMeter refuses to publish a \
                 usage-priced rate card without one",
            )),
            _ => {}
        }
        if let Some(cadence) = &card.billing_cadence {
            let field = format!("{at}.billing_cadence");
            validate_card_cadence(&field, plan, card, cadence, problems);
        }
        if let Some(usage) = card.usage_discount() {
            validate_usage_discount(&format!("{at}.discounts.usage"), card, usage, problems);
        }
    }
}

fn validate_card_cadence(
    field: &str,
    plan: &PlanSpec,
    card: &RateCardSpec,
    cadence: &Duration,
    problems: &mut Vec<Problem>,
) {
    let plan = &plan.billing_cadence;
    if !cadence.at_least_an_hour() {
        problems.push(Problem::new(
            field,
            format!("{cadence} is shorter than an hour: OpenMeter refuses to publish it"),
        ));
    } else if card.price.is_billable() && !cadence.aligns_with(plan) {
        problems.push(Problem::new(
            field,
            format!(
                "{cadence} and the plan's {plan} do not divide one into the other in every \
                 month: OpenMeter refuses to publish it"
            ),
        ));
    }
}

/// What OpenMeter refuses to publish of a usage discount
/// (`productcatalog/discount.go`, `UsageDiscount.ValidateForPrice`, and
/// `productcatalog/ratecard.go`): free units of a price that is not per
/// unit of usage, or a negative number of them.
fn validate_usage_discount(
    field: &str,
    card: &RateCardSpec,
    usage: &Numeric,
    problems: &mut Vec<Problem>,
) {
    if !card.price.is_usage() {
        problems.push(Problem::new(
            field,
            format!(
                "free units need a price per unit of usage, not {}: OpenMeter refuses to \
                 publish a usage discount on a flat price",
                card.price.kind()
            ),
        ));
    } else if usage.as_str().starts_with('-') {
        problems.push(Problem::new(
            field,
            "a number of free units is not negative: OpenMeter refuses to publish it",
        ));
    }
}

/// The plan cadences OpenMeter accepts (`ErrPlanBillingCadenceAllowedValues`
/// in openmeterio/openmeter `productcatalog/errors.go`).
const PLAN_CADENCES: [&str; 8] = ["P1W", "P2W", "P4W", "P1M", "P3M", "P6M", "P12M", "P1Y"];

fn non_empty(field: &str, value: &str, problems: &mut Vec<Problem>) {
    if value.trim().is_empty() {
        problems.push(Problem::new(field, "must not be empty"));
    }
}

/// Reports each repeated key at its second occurrence.
fn duplicates<'a>(field: &str, keys: impl Iterator<Item = &'a Key>, problems: &mut Vec<Problem>) {
    let mut seen = BTreeSet::new();
    for (i, key) in keys.enumerate() {
        if !seen.insert(key) {
            problems.push(Problem::new(
                format!("{field}[{i}].key"),
                format!("{:?} appears twice", key.as_str()),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::bootstrap::catalog::builtin::key;
    use crate::bootstrap::catalog::model::{Discounts, PriceType};
    use crate::bootstrap::catalog::tests::{
        card, default_key, plan_json, problem_fields, with_plans,
    };
    use crate::bootstrap::catalog::JsonPath;
    use crate::bootstrap::SettlementMode;

    #[test]
    fn unit_price_without_amount_is_inconsistent() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.plan.phases[0].rate_cards[0].price.amount = None;
        let problems = catalog.validate().expect_err("inconsistent");
        assert!(
            problems[0]
                .to_string()
                .ends_with("price.amount: required for this price type"),
            "{problems:?}"
        );
    }

    #[test]
    fn count_meter_with_value_property_is_inconsistent() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.meters[2].value_property = Some(JsonPath::of_field("pixels"));
        let problems = catalog.validate().expect_err("inconsistent");
        assert_eq!(problems[0].field, "meters[2].value_property");
    }

    #[test]
    fn feature_naming_a_missing_meter_is_inconsistent() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.features[0].meter = key("nope");
        let problems = catalog.validate().expect_err("inconsistent");
        assert_eq!(problems[0].field, "features[0].meter");
    }

    #[test]
    fn a_rate_card_key_other_than_its_features_key_is_refused() {
        let mut catalog = Catalog::builtin(&default_key());
        card(&mut catalog).key = key("billable");
        let problems = catalog.validate().expect_err("refused");
        assert_eq!(problems[0].field, "plan.phases[0].rate_cards[0].key");
        assert!(
            problems[0].message.contains("\"billable_spend\""),
            "{problems:?}"
        );
    }

    #[test]
    fn a_usage_price_without_a_feature_is_refused() {
        let mut catalog = Catalog::builtin(&default_key());
        card(&mut catalog).feature = None;
        assert_eq!(
            problem_fields(&catalog),
            ["plan.phases[0].rate_cards[0].feature"]
        );
    }

    #[test]
    fn a_flat_price_needs_no_feature() {
        let mut catalog = Catalog::builtin(&default_key());
        let flat = card(&mut catalog);
        flat.feature = None;
        flat.price.kind = PriceType::Flat;
        assert_eq!(catalog.validate(), Ok(()));
    }

    #[test]
    fn a_rate_card_cadence_under_an_hour_is_refused() {
        let mut catalog = Catalog::builtin(&default_key());
        card(&mut catalog).billing_cadence = "PT0S".parse().ok();
        assert_eq!(
            problem_fields(&catalog),
            ["plan.phases[0].rate_cards[0].billing_cadence"]
        );
    }

    #[test]
    fn a_rate_card_cadence_that_does_not_fit_the_plans_is_refused() {
        let mut catalog = Catalog::builtin(&default_key());
        card(&mut catalog).billing_cadence = "P1W".parse().ok();
        let problems = catalog.validate().expect_err("refused");
        assert!(problems[0].message.contains("P1W"), "{problems:?}");
    }

    #[test]
    fn a_plan_cadence_openmeter_does_not_offer_is_refused() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.plan.billing_cadence = "P1D".parse().expect("valid duration");
        assert_eq!(problem_fields(&catalog), ["plan.billing_cadence"]);
    }

    #[test]
    fn a_last_phase_with_a_duration_is_refused() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.plan.phases[0].duration = "P1M".parse().ok();
        assert_eq!(problem_fields(&catalog), ["plan.phases[0].duration"]);
    }

    #[test]
    fn a_plan_key_listed_twice_is_reported_where_it_repeats() {
        let catalog = with_plans(serde_json::json!([
            plan_json("same", Some("owner")),
            plan_json("same", None),
        ]))
        .expect("reads");
        assert_eq!(problem_fields(&catalog), ["plans[1].key"]);
    }

    #[test]
    fn a_role_named_by_two_plans_is_reported_at_the_second() {
        let catalog = with_plans(serde_json::json!([
            plan_json("a", Some("m2m")),
            plan_json("b", Some("m2m")),
        ]))
        .expect("reads");
        assert_eq!(problem_fields(&catalog), ["plans[1].subscribe_role"]);
    }

    #[test]
    fn a_credit_only_plan_is_refused_and_credit_then_invoice_is_a_notice() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.plan.settlement_mode = Some(SettlementMode::CreditOnly);
        assert_eq!(problem_fields(&catalog), ["plan.settlement_mode"]);

        catalog.plan.settlement_mode = Some(SettlementMode::CreditThenInvoice);
        assert_eq!(catalog.validate(), Ok(()));
        let notices = catalog.notices();
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert_eq!(notices[0].field, "plan.settlement_mode");
    }

    #[test]
    fn metadata_openmeter_refuses_as_a_label_is_a_notice_and_not_sent() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.plan.metadata = BTreeMap::from([
            ("plan_kind".to_owned(), "owner_starter".to_owned()),
            ("kong_zone".to_owned(), "eu".to_owned()),
        ]);
        assert_eq!(catalog.validate(), Ok(()));
        let sent: Vec<&str> = plan_meta::labels(&catalog.plan).into_keys().collect();
        assert_eq!(sent, ["plan_kind"]);
        let notices = catalog.notices();
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert_eq!(notices[0].field, "plan.metadata.kong_zone");
    }

    #[test]
    fn a_usage_discount_on_a_flat_price_is_refused() {
        let mut catalog = Catalog::builtin(&default_key());
        let flat = card(&mut catalog);
        flat.price.kind = PriceType::Flat;
        flat.discounts = Some(Discounts {
            usage: "10".parse().ok(),
        });
        assert_eq!(
            problem_fields(&catalog),
            ["plan.phases[0].rate_cards[0].discounts.usage"]
        );
    }

    #[test]
    fn a_negative_usage_discount_is_refused() {
        let mut catalog = Catalog::builtin(&default_key());
        card(&mut catalog).discounts = Some(Discounts {
            usage: "-1".parse().ok(),
        });
        assert_eq!(
            problem_fields(&catalog),
            ["plan.phases[0].rate_cards[0].discounts.usage"]
        );
    }

    #[test]
    fn a_repeated_key_is_reported_where_it_repeats() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.meters[2].key = key("billable_usd_micros");
        assert!(
            problem_fields(&catalog).contains(&"meters[2].key".to_owned()),
            "{:?}",
            catalog.validate()
        );
    }
}
