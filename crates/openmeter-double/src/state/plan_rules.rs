//! What the server checks in a plan's rate cards: the critical issues refuse
//! a create, every issue refuses a publish.
//!
//! The v3 create ignores non-critical issues (`api/v3/handlers/plans/
//! create.go` sets `IgnoreNonCriticalIssues`; `plan/service.go`,
//! `CreatePlanInput.Validate`), publish validates the whole plan and refuses
//! on any issue (`plan/service/plan.go`, `PublishPlan`). The rules are in
//! `productcatalog/ratecard.go` with their words in `productcatalog/errors.go`;
//! a rate card's feature is resolved by id first
//! (`productcatalog/featureresolver/ratecard.go`). Rate cards priced `unit`,
//! `graduated` or `volume` are usage-based (`api/v3/handlers/plans/convert.go`).
//! A usage discount is refused on a flat or free price and when negative
//! (`productcatalog/ratecard.go`, `FlatFeeRateCard.Validate`;
//! `productcatalog/discount.go`, `UsageDiscountWithValidValue`).
//! Not modelled: billing cadences misaligned with the plan's (a warning,
//! `ValidatePlanHasAlignedBillingCadences`), percentage discounts, tax and
//! unit configs.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::Value;

use super::tables::State;
use super::usage::is_usage_price;
use crate::cadence::Cadence;
use crate::model::Plan;
use crate::problem::{ApiResult, InvalidParam, Problem};

/// `ErrRateCardKeyFeatureKeyMismatch` (critical).
const KEY_MISMATCH: &str = "rate card key must match feature key";
/// `ErrRateCardUsageBasedPriceWithNoFeature` (warning).
const USAGE_WITHOUT_FEATURE: &str = "usage-based price requires feature to be associated with";
/// `ErrBillingCadenceInvalidValue` (warning).
const BAD_CADENCE: &str = "billing cadence must be positive and 1 hour long duration at least";
/// `ErrUsageDiscountWithFlatPrice` (warning).
const DISCOUNT_ON_FLAT: &str = "usage discount is not supported for flat price";
/// `ErrUsageDiscountNegativeQuantity` (warning).
const NEGATIVE_DISCOUNT: &str = "usage must be greater than 0";

/// One finding on one rate card.
struct Issue {
    field: String,
    message: String,
    critical: bool,
}

fn text<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// A usage price needs a cadence of an hour or more; a flat price may have
/// none (a one-time fee) but not a shorter one.
fn cadence_ok(card: &Value, usage: bool) -> bool {
    match text(card, "/billing_cadence") {
        None => !usage,
        Some(c) => Cadence::parse(c).is_some_and(|c| c.at_least_an_hour()),
    }
}

impl State {
    fn card_issues(&self, plan_key: &str, phase: &Value, at: &str, card: &Value) -> Vec<Issue> {
        let mut issues = Vec::new();
        let mut issue = |field: &str, message: String, critical: bool| {
            issues.push(Issue {
                field: format!("{at}.{field}"),
                message,
                critical,
            })
        };
        let key = text(card, "/key").unwrap_or_default();
        let usage = text(card, "/price/type").is_some_and(is_usage_price);
        match text(card, "/feature/id") {
            Some(id) => match self.feature(id).filter(|f| f.deleted_at.is_none()) {
                None => issue(
                    "feature.id",
                    format!(
                        "failed to expand features for ratecards in plan phase [plan.key={plan_key} \
                         plan.phase.key={}]: feature not found [ratecard.key={key} feature.id={id}]: \
                         feature not found",
                        text(phase, "/key").unwrap_or_default()
                    ),
                    true,
                ),
                Some(f) if f.key != key => issue("key", KEY_MISMATCH.into(), true),
                Some(_) => {}
            },
            None if usage => issue("feature", USAGE_WITHOUT_FEATURE.into(), false),
            None => {}
        }
        if !cadence_ok(card, usage) {
            issue("billing_cadence", BAD_CADENCE.into(), false);
        }
        if let Some(free) = text(card, "/discounts/usage") {
            if !usage {
                issue("discounts.usage", DISCOUNT_ON_FLAT.into(), false);
            } else if Decimal::from_str(free).is_ok_and(|d| d.is_sign_negative()) {
                issue("discounts.usage", NEGATIVE_DISCOUNT.into(), false);
            }
        }
        issues
    }

    fn plan_issues(&self, plan_key: &str, phases: &[Value]) -> Vec<Issue> {
        let mut out = Vec::new();
        for (i, phase) in phases.iter().enumerate() {
            let cards = phase.get("rate_cards").and_then(Value::as_array);
            for (j, card) in cards.into_iter().flatten().enumerate() {
                let at = format!("phases[{i}].rate_cards[{j}]");
                out.extend(self.card_issues(plan_key, phase, &at, card));
            }
        }
        out
    }

    /// The critical issues a create refuses (400); warnings pass.
    pub(crate) fn validate_for_create(&self, plan_key: &str, phases: &[Value]) -> ApiResult<()> {
        let critical: Vec<Issue> = self
            .plan_issues(plan_key, phases)
            .into_iter()
            .filter(|i| i.critical)
            .collect();
        refuse("invalid resolved Plan: invalid plan: ", critical)
    }

    /// Every issue refuses a publish (400), warnings included.
    pub(crate) fn validate_for_publish(&self, plan: &Plan) -> ApiResult<()> {
        let prefix = format!(
            "invalid plan [id={} key={} version={}]: ",
            plan.id, plan.key, plan.version
        );
        refuse(&prefix, self.plan_issues(&plan.key, &plan.phases))
    }
}

/// Rewrites each rate card's `discounts.usage` as the server stores and
/// answers it: a decimal (`api/v3/handlers/plans/convert.go` reads it with
/// `decimal.NewFromString` and answers `Quantity.String()`, which drops
/// trailing zeros).
pub(crate) fn normalize_usage_discounts(phases: &mut [Value]) {
    let cards = phases
        .iter_mut()
        .filter_map(|p| p.get_mut("rate_cards").and_then(Value::as_array_mut))
        .flatten();
    for card in cards {
        let Some(usage) = card.pointer_mut("/discounts/usage") else {
            continue;
        };
        if let Some(d) = usage.as_str().and_then(|u| Decimal::from_str(u).ok()) {
            *usage = Value::String(d.normalize().to_string());
        }
    }
}

/// A 400 naming every issue (joined by newlines, as Go's `errors.Join`).
fn refuse(prefix: &str, issues: Vec<Issue>) -> ApiResult<()> {
    if issues.is_empty() {
        return Ok(());
    }
    let messages: Vec<&str> = issues.iter().map(|i| i.message.as_str()).collect();
    let detail = format!("{prefix}{}", messages.join("\n"));
    let params = issues
        .into_iter()
        .map(|i| InvalidParam::invalid(i.field, i.message))
        .collect();
    Err(Problem::bad_request(detail, params))
}
