//! What a catalog plan says beyond its prices: which customers it is for
//! (`subscribe_role`), how it settles (`settlement_mode`) and its
//! `metadata`. Upstream's `catalog.json` (livepeer/clearinghouse
//! `openmeter-collector/provision/catalog.json`) writes all three; the v3
//! `CreatePlanRequest` of the spec (openmeterio/openmeter `api/v3/
//! openapi.yaml` at 7e57a394) has only `labels` of them, and the server's
//! request validator refuses any undeclared field (`api/v3/server/
//! server.go`). What was decided, field by field:
//!
//! - `subscribe_role` (`owner`, `m2m`) is ours, never sent: it picks the
//!   plan a customer is subscribed to ([`super::Catalog::plan_for`]), as
//!   upstream's `bootstrap.sh` picks it (`plan_key_for_role`). At most one
//!   plan per role, else the choice would be ambiguous.
//! - `settlement_mode` is not in `CreatePlanRequest`. The v3 handler builds
//!   the plan without one (`api/v3/handlers/plans/convert.go`,
//!   `FromAPICreatePlanRequest`), and the plan service then sets
//!   `credit_then_invoice` ("Default settlement mode if not provided",
//!   `openmeter/productcatalog/plan/service/plan.go`, `CreatePlan`); the
//!   read-only `BillingPlan.settlement_mode` reports it. So
//!   `credit_then_invoice` is what OpenMeter does anyway: it is left out
//!   with a notice at its line. `credit_only` (usage settled against credits
//!   only, never invoiced) cannot be had through the v3 create and would be
//!   billed differently, so it is refused at its line. What an existing plan
//!   reports is compared like its prices (drift).
//! - `metadata` is the plan's labels: the server stores v3 `labels` as the
//!   plan's metadata (`api/v3/labels/convert.go`, `ToMetadata`), so it is
//!   sent as `labels`. An entry the server would refuse (`api/v3/labels/
//!   validate.go`: key and value 1-63 letters and digits with single `.`,
//!   `_` or `-` between them, no reserved key prefix) would fail the whole
//!   create, and labels bill nothing, so such an entry is left out with a
//!   notice. The v3 plan read returns no labels at that commit
//!   (`ToAPIBillingPlan` in `convert.go` sets none), so they are not
//!   compared.

use std::collections::BTreeMap;

use super::catalog::{Notice, PlanSpec, Problem, SettlementMode, SubscribeRole};

/// Where the default plan stands among `plans`: the `m2m` one, else the
/// first without a role, else the first. Upstream's `bootstrap.sh` falls
/// back to the first plan too.
pub(super) fn default_index(plans: &[PlanSpec]) -> usize {
    let with = |pred: &dyn Fn(&PlanSpec) -> bool| plans.iter().position(pred);
    with(&|p| p.subscribe_role == Some(SubscribeRole::M2m))
        .or_else(|| with(&|p| p.subscribe_role.is_none()))
        .unwrap_or(0)
}

/// The spec's `Labels.maxProperties`.
const MAX_LABELS: usize = 50;

/// Key prefixes the server refuses (`reservedPrefixMatcher` in
/// `api/v3/labels/validate.go`).
const RESERVED_PREFIXES: [&str; 8] = [
    "_",
    "kong",
    "konnect",
    "insomnia",
    "mesh",
    "kic",
    "kuma",
    "openmeter",
];

/// The server's label format (`keyValueFormat` in `api/v3/labels/
/// validate.go`, with the spec's 63-character limit): letters and digits,
/// with single `.`, `_` or `-` between them.
fn is_label_text(s: &str) -> bool {
    let separator = |c: char| matches!(c, '.' | '_' | '-');
    let starts_and_ends = s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    let no_double = !s
        .as_bytes()
        .windows(2)
        .any(|w| separator(w[0] as char) && separator(w[1] as char));
    s.len() <= 63
        && starts_and_ends
        && no_double
        && s.chars().all(|c| c.is_ascii_alphanumeric() || separator(c))
}

/// Why the server would refuse `key: value` as a label, if it would.
fn label_refusal(key: &str, value: &str) -> Option<String> {
    const FORMAT: &str = "1-63 letters and digits with single '.', '_' or '-' between them";
    if !is_label_text(key) {
        Some(format!("OpenMeter refuses the label key {key:?}: {FORMAT}"))
    } else if let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| key.starts_with(*p)) {
        Some(format!(
            "OpenMeter refuses a label key starting with the reserved {prefix:?}"
        ))
    } else if !is_label_text(value) {
        Some(format!(
            "OpenMeter refuses the label value {value:?}: {FORMAT}"
        ))
    } else {
        None
    }
}

/// The labels sent for `plan`: its metadata entries OpenMeter accepts.
pub(super) fn labels(plan: &PlanSpec) -> BTreeMap<&str, &str> {
    plan.metadata
        .iter()
        .filter(|(k, v)| label_refusal(k, v).is_none())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// What of the plan written at `at` is not sent, and why (see the module
/// docs); lines are filled in by the caller.
pub(super) fn notices(at: &str, plan: &PlanSpec) -> Vec<Notice> {
    let mut out = Vec::new();
    if plan.settlement_mode == Some(SettlementMode::SERVER_DEFAULT) {
        out.push(Notice::new(
            format!("{at}.settlement_mode"),
            format!(
                "not sent: the v3 API takes no settlement mode when creating a plan, and \
                 OpenMeter gives every plan created without one {}, so it is what OpenMeter \
                 bills with",
                SettlementMode::SERVER_DEFAULT
            ),
        ));
    }
    for (key, value) in &plan.metadata {
        if let Some(why) = label_refusal(key, value) {
            out.push(Notice::new(
                format!("{at}.metadata.{key}"),
                format!("not sent as a label: {why}; labels bill nothing"),
            ));
        }
    }
    out
}

/// What of the plan written at `at` OpenMeter would bill differently from
/// the catalog, or refuse outright.
pub(super) fn problems(at: &str, plan: &PlanSpec, problems: &mut Vec<Problem>) {
    if let Some(mode @ SettlementMode::CreditOnly) = plan.settlement_mode {
        problems.push(Problem::new(
            format!("{at}.settlement_mode"),
            format!(
                "{mode} cannot be set through the v3 API, and the {} OpenMeter applies \
                 instead would invoice what {mode} settles against credits only",
                SettlementMode::SERVER_DEFAULT
            ),
        ));
    }
    if labels(plan).len() > MAX_LABELS {
        problems.push(Problem::new(
            format!("{at}.metadata"),
            format!("OpenMeter takes at most {MAX_LABELS} labels on a plan"),
        ));
    }
}

/// Each role names one plan: a second plan with a role already taken is
/// refused where its role is written.
pub(super) fn role_problems(plans: &[(String, &PlanSpec)], problems: &mut Vec<Problem>) {
    let mut taken: BTreeMap<SubscribeRole, &PlanSpec> = BTreeMap::new();
    for (at, plan) in plans {
        let Some(role) = plan.subscribe_role else {
            continue;
        };
        match taken.get(&role) {
            Some(first) => problems.push(Problem::new(
                format!("{at}.subscribe_role"),
                format!(
                    "{role} is already the role of plan {}: a role names one plan",
                    first.key
                ),
            )),
            None => {
                taken.insert(role, plan);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_text_follows_the_servers_format() {
        for good in ["plan_kind", "owner_starter", "a", "a.b-c_d", "A1"] {
            assert!(is_label_text(good), "{good}");
        }
        for bad in ["", "_a", "a_", "a__b", "a b", "é", &"a".repeat(64)] {
            assert!(!is_label_text(bad), "{bad}");
        }
    }

    #[test]
    fn a_reserved_key_prefix_is_refused() {
        assert!(label_refusal("kong_zone", "x").is_some());
        assert!(label_refusal("openmeter_x", "x").is_some());
        assert_eq!(label_refusal("plan_kind", "owner_starter"), None);
    }

    #[test]
    fn roles_are_read_as_upstream_writes_them() {
        let role: SubscribeRole = serde_json::from_str("\"m2m\"").expect("m2m");
        assert_eq!(role, SubscribeRole::M2m);
        assert!(serde_json::from_str::<SubscribeRole>("\"admin\"").is_err());
        let mode: SettlementMode = serde_json::from_str("\"credit_then_invoice\"").expect("a mode");
        assert_eq!(mode, SettlementMode::SERVER_DEFAULT);
    }
}
