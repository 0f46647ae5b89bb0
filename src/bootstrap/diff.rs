//! What differs between the catalog and what OpenMeter holds. Each
//! difference is one human-readable phrase: `field: catalog X, existing Y`.
//! Server-set fields (ids, timestamps, status, names) are never compared.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::catalog::SettlementMode;
use super::catalog::{Aggregation, MeterSpec, PlanSpec, Price, RateCardSpec};
use super::wire::{Feature, Meter, PhaseRead, RateCardRead};
use crate::openmeter::model::Plan;

fn differs(field: &str, catalog: impl AsRef<str>, existing: impl AsRef<str>) -> String {
    format!(
        "{field}: catalog {}, existing {}",
        catalog.as_ref(),
        existing.as_ref()
    )
}

fn or_none(value: Option<&str>) -> &str {
    value.unwrap_or("(none)")
}

/// How `existing` departs from `spec`: aggregation, event type, value
/// property (not for `count`, which ignores it) and dimensions.
pub(super) fn meter(spec: &MeterSpec, existing: &Meter) -> Vec<String> {
    let mut out = Vec::new();
    if existing.aggregation != spec.aggregation.as_str() {
        out.push(differs(
            "aggregation",
            spec.aggregation.as_str(),
            &existing.aggregation,
        ));
    }
    if existing.event_type != spec.event_type {
        out.push(differs(
            "event_type",
            &spec.event_type,
            &existing.event_type,
        ));
    }
    let wanted = spec.value_property.as_ref().map(|p| p.as_str());
    if spec.aggregation != Aggregation::Count && existing.value_property.as_deref() != wanted {
        out.push(differs(
            "value_property",
            or_none(wanted),
            or_none(existing.value_property.as_deref()),
        ));
    }
    let wanted: BTreeMap<&str, &str> = spec
        .dimensions
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    out.extend(dimensions(&wanted, &existing.dimensions));
    out
}

fn dimensions(wanted: &BTreeMap<&str, &str>, existing: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, path) in wanted {
        let have = existing.get(*name).map(String::as_str);
        if have != Some(*path) {
            out.push(differs(&format!("dimensions.{name}"), path, or_none(have)));
        }
    }
    for (name, path) in existing {
        if !wanted.contains_key(name.as_str()) {
            out.push(differs(&format!("dimensions.{name}"), "(none)", path));
        }
    }
    out
}

/// How a feature departs from the catalog: only its meter matters.
/// `meter_id` is `None` when the catalog meter does not exist (yet).
pub(super) fn feature(meter_key: &str, meter_id: Option<&str>, existing: &Feature) -> Vec<String> {
    let have = existing.meter.as_ref().map(|m| m.id.as_str());
    if have.is_some() && have == meter_id {
        return Vec::new();
    }
    let catalog = match meter_id {
        Some(id) => format!("{meter_key} ({id})"),
        None => format!("{meter_key} (not created yet)"),
    };
    vec![differs("meter", catalog, or_none(have))]
}

/// How a plan version departs from the catalog: currency, billing cadence,
/// settlement mode, and per phase its key, duration and rate cards (key,
/// feature, billing cadence, price, discounts). Labels are not compared:
/// the v3 plan read does not return them (see `plan_meta`).
/// `feature_id` maps a catalog feature key to the id it has (if any).
pub(super) fn plan(
    spec: &PlanSpec,
    existing: &Plan,
    feature_id: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    if !existing.currency.eq_ignore_ascii_case(&spec.currency) {
        out.push(differs("currency", &spec.currency, &existing.currency));
    }
    if existing.billing_cadence != spec.billing_cadence.as_str() {
        out.push(differs(
            "billing_cadence",
            spec.billing_cadence.as_str(),
            &existing.billing_cadence,
        ));
    }
    out.extend(settlement_mode(spec, existing));
    let phases: Vec<PhaseRead> = match serde_json::from_value(existing.phases.clone()) {
        Ok(phases) => phases,
        Err(e) => {
            out.push(format!("phases: unreadable ({e})"));
            return out;
        }
    };
    if phases.len() != spec.phases.len() {
        out.push(differs(
            "phases",
            count(spec.phases.len()),
            count(phases.len()),
        ));
        return out;
    }
    for (i, (want, have)) in spec.phases.iter().zip(&phases).enumerate() {
        let at = format!("phases[{i}]");
        if have.key != want.key.as_str() {
            out.push(differs(&format!("{at}.key"), want.key.as_str(), &have.key));
        }
        let duration = want.duration.as_ref().map(|d| d.as_str());
        if have.duration.as_deref() != duration {
            out.push(differs(
                &format!("{at}.duration"),
                or_none(duration),
                or_none(have.duration.as_deref()),
            ));
        }
        out.extend(rate_cards(
            &at,
            spec,
            &want.rate_cards,
            &have.rate_cards,
            feature_id,
        ));
    }
    out
}

/// The mode the catalog means (OpenMeter's default when it names none)
/// against the one the plan reports (the spec's default when absent).
fn settlement_mode(spec: &PlanSpec, existing: &Plan) -> Option<String> {
    let want = spec.effective_settlement_mode().as_str();
    let have = existing
        .settlement_mode
        .as_deref()
        .unwrap_or(SettlementMode::SERVER_DEFAULT.as_str());
    (want != have).then(|| differs("settlement_mode", want, have))
}

fn count(n: usize) -> String {
    format!("{n} phase(s)")
}

fn rate_cards(
    at: &str,
    plan: &PlanSpec,
    wanted: &[RateCardSpec],
    existing: &[RateCardRead],
    feature_id: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    let by_key: BTreeMap<&str, &RateCardRead> =
        existing.iter().map(|c| (c.key.as_str(), c)).collect();
    for want in wanted {
        let at = format!("{at}.rate_cards.{}", want.key);
        match by_key.get(want.key.as_str()) {
            None => out.push(differs(&at, "present", "(none)")),
            Some(have) => out.extend(rate_card(&at, plan, want, have, feature_id)),
        }
    }
    for have in existing {
        if !wanted.iter().any(|w| w.key.as_str() == have.key) {
            let at = format!("{at}.rate_cards.{}", have.key);
            out.push(differs(&at, "(none)", "present"));
        }
    }
    out
}

fn rate_card(
    at: &str,
    plan: &PlanSpec,
    want: &RateCardSpec,
    have: &RateCardRead,
    feature_id: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    let have_feature = have.feature.as_ref().map(|f| f.id.as_str());
    if let Some(key) = &want.feature {
        let id = feature_id(key.as_str());
        if id.is_none() || have_feature != id.as_deref() {
            let catalog = format!("{key} ({})", id.as_deref().unwrap_or("not created yet"));
            out.push(differs(
                &format!("{at}.feature"),
                catalog,
                or_none(have_feature),
            ));
        }
    } else if let Some(id) = have_feature {
        out.push(differs(&format!("{at}.feature"), "(none)", id));
    }
    let cadence = want.billing_cadence(plan).map(|c| c.as_str());
    if have.billing_cadence.as_deref() != cadence {
        out.push(differs(
            &format!("{at}.billing_cadence"),
            or_none(cadence),
            or_none(have.billing_cadence.as_deref()),
        ));
    }
    out.extend(price(at, &want.price, have));
    out.extend(discounts(at, want, have));
    out
}

/// Free units compare as decimals, none being zero; a percentage discount
/// (which a catalog never sets) is a difference.
fn discounts(at: &str, want: &RateCardSpec, have: &RateCardRead) -> Vec<String> {
    let mut out = Vec::new();
    let want_usage = want.usage_discount().map(|u| u.as_str());
    let have_usage = have.discounts.as_ref().and_then(|d| d.usage.as_deref());
    if !same_amount(
        Some(want_usage.unwrap_or("0")),
        Some(have_usage.unwrap_or("0")),
    ) {
        out.push(differs(
            &format!("{at}.discounts.usage"),
            or_none(want_usage),
            or_none(have_usage),
        ));
    }
    if let Some(percentage) = have.discounts.as_ref().and_then(|d| d.percentage.as_ref()) {
        out.push(differs(
            &format!("{at}.discounts.percentage"),
            "(none)",
            percentage.to_string(),
        ));
    }
    out
}

fn price(at: &str, want: &Price, have: &RateCardRead) -> Vec<String> {
    let kind = have.price.as_ref().map(|p| p.kind.as_str());
    if kind != Some(want.kind()) {
        return vec![differs(
            &format!("{at}.price.type"),
            want.kind(),
            or_none(kind),
        )];
    }
    let have_amount = have.price.as_ref().and_then(|p| p.amount.as_deref());
    let want_amount = want.amount().map(|a| a.as_str());
    if same_amount(want_amount, have_amount) {
        Vec::new()
    } else {
        vec![differs(
            &format!("{at}.price.amount"),
            or_none(want_amount),
            or_none(have_amount),
        )]
    }
}

/// Amounts compare as decimals, so `"1.0"` and `"1"` are the same price.
fn same_amount(want: Option<&str>, have: Option<&str>) -> bool {
    match (want, have) {
        (Some(w), Some(h)) => match (w.parse::<Decimal>(), h.parse::<Decimal>()) {
            (Ok(w), Ok(h)) => w == h,
            _ => w == h,
        },
        (w, h) => w == h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_compare_as_decimals() {
        assert!(same_amount(Some("1.0"), Some("1")));
        assert!(same_amount(Some("0.000001"), Some("0.0000010")));
        assert!(!same_amount(Some("0.000001"), Some("0.00001")));
        assert!(!same_amount(Some("1"), None));
    }

    #[test]
    fn no_usage_discount_is_the_same_as_zero_free_units() {
        let mut card: RateCardSpec = serde_json::from_value(serde_json::json!({
            "key": "k", "name": "K", "price": {"type": "unit", "amount": "1"}
        }))
        .expect("a rate card");
        let read = |discounts: serde_json::Value| -> RateCardRead {
            serde_json::from_value(serde_json::json!({"key": "k", "discounts": discounts}))
                .expect("a rate card read")
        };
        assert!(discounts("c", &card, &read(serde_json::json!({"usage": "0"}))).is_empty());
        card.discounts = serde_json::from_value(serde_json::json!({"usage": "5000000"})).ok();
        assert!(discounts("c", &card, &read(serde_json::json!({"usage": "5000000.0"}))).is_empty());
        assert_eq!(
            discounts("c", &card, &read(serde_json::json!({}))),
            ["c.discounts.usage: catalog 5000000, existing (none)"]
        );
    }

    #[test]
    fn extra_and_missing_dimensions_are_both_reported() {
        let wanted = BTreeMap::from([("a", "$.a")]);
        let existing = BTreeMap::from([("b".to_owned(), "$.b".to_owned())]);
        let out = dimensions(&wanted, &existing);
        assert_eq!(out.len(), 2, "{out:?}");
    }
}
