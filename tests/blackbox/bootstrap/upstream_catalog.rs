//! `ticketmeter bootstrap --catalog` on upstream's catalog, as it is.
//!
//! `tests/fixtures/upstream-catalog.json` is livepeer/clearinghouse's
//! `openmeter-collector/provision/catalog.json` at commit
//! b60489365d93cb447504c6db35fd8503014f87e0 (last changed by ff1cdc9, "app-owner
//! vs M2M identity + exact-fractional fees"), copied unchanged: a `$comment`,
//! `meter_key` and `feature_key`, two `plans` chosen by `subscribe_role`,
//! plan-level `settlement_mode` and `metadata`, and a usage discount.

use std::path::{Path, PathBuf};

use openmeter_double::PlanSeed;
use serde_json::{json, Value};
use ticketmeter::bootstrap::{
    bootstrap, check_catalog_against_collector, BootstrapOptions, Catalog, CatalogError, Kind,
    Outcome, SubscribeRole,
};
use ticketmeter::PlanKey;

use super::{active_versions, assert_a_second_run_changes_nothing, env, run, TestResult, APPLY};

const OWNER_PLAN: &str = "clearinghouse_owner_starter";
const M2M_PLAN: &str = "clearinghouse_demo_starter";

const METERS: [&str; 6] = [
    "network_fee_usd_micros",
    "billable_usd_micros",
    "signed_ticket_count",
    "fee_wei",
    "billable_secs",
    "network_fee_usd_micros_by_manifest",
];

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upstream-catalog.json")
}

fn upstream() -> Result<Catalog, CatalogError> {
    Catalog::from_file(&fixture())
}

fn upstream_text() -> std::io::Result<String> {
    std::fs::read_to_string(fixture())
}

/// A variant of upstream's file, written beside the test as `name`.
fn variant(name: &str, text: &str) -> Result<(tempfile::TempDir, PathBuf), std::io::Error> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(name);
    std::fs::write(&path, text)?;
    Ok((dir, path))
}

/// The problems a variant of upstream's file is refused with, as shown.
fn refused(text: &str) -> Result<String, Box<dyn std::error::Error>> {
    let (_dir, path) = variant("catalog.json", text)?;
    match Catalog::from_file(&path) {
        Ok(_) => Err("accepted a catalog that must be refused".into()),
        Err(e @ CatalogError::Invalid { .. }) => Ok(e.to_string()),
        Err(e) => Err(format!("refused for another reason: {e}").into()),
    }
}

#[test]
fn the_upstream_catalog_file_is_read_as_it_is() -> TestResult {
    let catalog = upstream()?;

    let meters: Vec<&str> = catalog.meters.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(meters, METERS);
    let features: Vec<(&str, &str)> = catalog
        .features
        .iter()
        .map(|f| (f.key.as_str(), f.meter.as_str()))
        .collect();
    assert_eq!(
        features,
        [
            ("network_spend", "network_fee_usd_micros"),
            ("billable_spend", "billable_usd_micros")
        ]
    );
    let plans: Vec<&str> = catalog.plans().map(|p| p.key.as_str()).collect();
    assert_eq!(plans, [OWNER_PLAN, M2M_PLAN], "in the order written");
    let card = &catalog.plan.phases[0].rate_cards[0];
    assert_eq!(
        card.feature.as_ref().map(|f| f.as_str()),
        Some("network_spend")
    );
    assert_eq!(card.usage_discount().map(|u| u.as_str()), Some("5000000"));
    assert_eq!(check_catalog_against_collector(&catalog), Ok(()));
    Ok(())
}

#[test]
fn the_owner_role_chooses_the_owner_plan_and_the_default_plan_is_the_m2m_one() -> TestResult {
    let catalog = upstream()?;

    let owner: PlanKey = OWNER_PLAN.parse()?;
    let m2m: PlanKey = M2M_PLAN.parse()?;
    assert_eq!(catalog.plan_for(SubscribeRole::Owner), Some(&owner));
    assert_eq!(catalog.plan_for(SubscribeRole::M2m), Some(&m2m));
    assert_eq!(catalog.plan_key(), &m2m);
    Ok(())
}

#[test]
fn the_settlement_mode_openmeter_applies_anyway_is_a_notice_at_its_line() -> TestResult {
    let notices: Vec<String> = upstream()?
        .notices()
        .iter()
        .map(ToString::to_string)
        .collect();

    assert_eq!(notices.len(), 2, "{notices:#?}");
    assert!(
        notices[0].starts_with("line 111: plans[0].settlement_mode: not sent:"),
        "{notices:#?}"
    );
    assert!(
        notices[1].starts_with("line 145: plans[1].settlement_mode: not sent:"),
        "{notices:#?}"
    );
    assert!(notices[0].contains("credit_then_invoice"), "{notices:#?}");
    Ok(())
}

#[test]
fn the_upstream_catalog_written_as_yaml_reads_the_same() -> TestResult {
    let json: Value = serde_json::from_str(&upstream_text()?)?;
    let (_dir, path) = variant("catalog.yaml", &serde_yaml::to_string(&json)?)?;

    assert_eq!(Catalog::from_file(&path)?, upstream()?);
    Ok(())
}

/// Upstream's six meters, as upstream writes them, then the audit's
/// `id_fingerprint`, which upstream's catalog lacks.
#[test]
fn the_builtin_catalog_has_upstreams_meters_and_the_fingerprint_meter() -> TestResult {
    let key: PlanKey = "clearinghouse_default_ppu".parse()?;
    let builtin = Catalog::builtin(&key);
    let upstream = upstream()?;

    assert_eq!(builtin.meters.len(), upstream.meters.len() + 1);
    let last = builtin.meters.last().map(|m| {
        let value = serde_json::to_value(m).unwrap_or_default();
        (value["key"].clone(), value["aggregation"].clone())
    });
    assert_eq!(last, Some((json!("id_fingerprint"), json!("sum"))));
    for (ours, theirs) in builtin.meters.iter().zip(&upstream.meters) {
        assert_eq!(
            (
                &ours.key,
                ours.aggregation,
                &ours.event_type,
                &ours.value_property,
                &ours.dimensions
            ),
            (
                &theirs.key,
                theirs.aggregation,
                &theirs.event_type,
                &theirs.value_property,
                &theirs.dimensions
            )
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_upstream_catalog_bootstraps_and_publishes_both_plans_on_an_empty_double() -> TestResult
{
    let env = env().await?;

    let report = run(&env, &upstream()?, APPLY).await?;

    assert!(report.is_success(false), "{report}");
    assert!(
        report.lines.iter().all(|l| l.outcome == Outcome::Created),
        "{report}"
    );
    assert_eq!(
        report.lines.len(),
        10,
        "6 meters, 2 features, 2 plans:\n{report}"
    );
    let mut meters: Vec<String> = env.double.meters().into_iter().map(|m| m.key).collect();
    meters.sort();
    let mut expected = METERS.to_vec();
    expected.sort();
    assert_eq!(meters, expected);
    assert_eq!(env.double.features().len(), 2);
    let network_spend = env
        .double
        .features()
        .into_iter()
        .find(|f| f.key == "network_spend")
        .ok_or("no network_spend")?;
    for key in [OWNER_PLAN, M2M_PLAN] {
        assert_eq!(active_versions(&env.double, key), [1], "{key}");
        let plan = env
            .double
            .plans()
            .into_iter()
            .find(|p| p.key == key)
            .ok_or("no plan")?;
        assert_eq!(plan.settlement_mode, "credit_then_invoice");
        let card = &plan.phases[0]["rate_cards"][0];
        assert_eq!(card["key"], "network_spend");
        assert_eq!(card["feature"]["id"], json!(network_spend.id));
        assert_eq!(card["billing_cadence"], "P1M");
        assert_eq!(card["price"], json!({"type": "unit", "amount": "0.000001"}));
        assert_eq!(card["discounts"], json!({"usage": "5000000"}));
        let labels = plan.labels.unwrap_or_default();
        assert_eq!(
            labels.get("meter_slug").map(String::as_str),
            Some("network_fee_usd_micros")
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_report_prints_the_notices_before_the_objects() -> TestResult {
    let env = env().await?;

    let text = run(&env, &upstream()?, APPLY).await?.to_string();

    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("notice: line 111: plans[0].settlement_mode: not sent"),
        "{text}"
    );
    assert!(lines[1].starts_with("notice: line 145:"), "{text}");
    assert_eq!(lines[2], "meter network_fee_usd_micros: created", "{text}");
    assert_eq!(
        lines[10],
        "plan clearinghouse_owner_starter: created and published (version 1, active)"
    );
    Ok(())
}

#[tokio::test]
async fn a_second_run_of_the_upstream_catalog_changes_nothing() -> TestResult {
    assert_a_second_run_changes_nothing(&upstream()?).await
}

#[tokio::test]
async fn a_dry_run_of_the_upstream_catalog_writes_nothing_and_lists_everything() -> TestResult {
    let env = env().await?;
    let opts = BootstrapOptions {
        dry_run: true,
        ..APPLY
    };

    let report = run(&env, &upstream()?, opts).await?;

    assert_eq!(env.double.write_calls(), 0);
    assert!(env.double.meters().is_empty() && env.double.plans().is_empty());
    assert_eq!(report.lines.len(), 10, "{report}");
    assert!(
        report
            .lines
            .iter()
            .all(|l| l.outcome == Outcome::WouldCreate),
        "{report}"
    );
    for key in [OWNER_PLAN, M2M_PLAN] {
        assert_eq!(report.outcome(Kind::Plan, key), Some(&Outcome::WouldCreate));
    }
    Ok(())
}

#[tokio::test]
async fn a_published_plan_without_the_usage_discount_is_drift() -> TestResult {
    let env = env().await?;
    let text = upstream_text()?.replace(
        ",\n              \"discounts\": {\n                \"usage\": \"5000000\"\n              }",
        "",
    );
    let (_dir, path) = variant("no-discount.json", &text)?;
    run(&env, &Catalog::from_file(&path)?, APPLY).await?;
    env.double.reset_counters();

    let report = run(&env, &upstream()?, APPLY).await?;

    let difference = "rate_cards.network_spend.discounts.usage: catalog 5000000, existing (none)";
    for key in [OWNER_PLAN, M2M_PLAN] {
        let outcome = report.outcome(Kind::Plan, key).ok_or("no plan line")?;
        assert!(
            matches!(outcome, Outcome::Drift(what) if what.contains(difference)),
            "{report}"
        );
    }
    assert_eq!(env.double.write_calls(), 0);
    Ok(())
}

#[tokio::test]
async fn a_published_plan_that_settles_on_credits_only_is_drift() -> TestResult {
    let env = env().await?;
    let catalog = upstream()?;
    run(&env, &catalog, APPLY).await?;
    let v1 = env
        .double
        .plans()
        .into_iter()
        .find(|p| p.key == OWNER_PLAN)
        .ok_or("no plan")?;
    env.double.seed_plan(PlanSeed {
        phases: Some(v1.phases.clone()),
        settlement_mode: "credit_only".into(),
        ..PlanSeed::new(OWNER_PLAN, 2, "active")
    });

    let report = run(&env, &catalog, APPLY).await?;

    let outcome = report
        .outcome(Kind::Plan, OWNER_PLAN)
        .ok_or("no plan line")?;
    assert!(
        matches!(outcome, Outcome::Drift(what)
            if what.contains("settlement_mode: catalog credit_then_invoice, existing credit_only")),
        "{report}"
    );
    assert_eq!(report.outcome(Kind::Plan, M2M_PLAN), Some(&Outcome::Exists));
    Ok(())
}

#[test]
fn a_plan_role_used_twice_is_refused_at_its_line() -> TestResult {
    let text = upstream_text()?.replace(
        "\"subscribe_role\": \"m2m\"",
        "\"subscribe_role\": \"owner\"",
    );

    let shown = refused(&text)?;

    assert!(
        shown.contains(
            "line 140: plans[1].subscribe_role: owner is already the role of plan \
             clearinghouse_owner_starter"
        ),
        "{shown}"
    );
    Ok(())
}

#[test]
fn plan_and_plans_together_are_refused() -> TestResult {
    let mut json: Value = serde_json::from_str(&upstream_text()?)?;
    let first = json["plans"][0].clone();
    json["plan"] = first;

    let shown = refused(&serde_json::to_string_pretty(&json)?)?;

    assert!(
        shown.contains("plans: a catalog has one `plan` or a `plans` list, not both"),
        "{shown}"
    );
    assert!(shown.contains("line "), "at the line of `plans`: {shown}");
    Ok(())
}

#[test]
fn a_credit_only_settlement_mode_is_refused_at_its_line() -> TestResult {
    let text = upstream_text()?.replacen("credit_then_invoice\",", "credit_only\",", 1);

    let shown = refused(&text)?;

    assert!(
        shown.contains("line 111: plans[0].settlement_mode: credit_only cannot be set"),
        "{shown}"
    );
    Ok(())
}

#[test]
fn an_unknown_plan_field_is_still_refused_at_its_line() -> TestResult {
    let text = upstream_text()?.replacen("\"currency\": \"USD\"", "\"curency\": \"USD\"", 1);
    let (_dir, path) = variant("catalog.json", &text)?;

    let err = Catalog::from_file(&path)
        .err()
        .ok_or("accepted an unknown field")?;

    let CatalogError::Parse { line, .. } = err else {
        return Err(format!("expected a parse error, got {err}").into());
    };
    assert_eq!(line, Some(109), "{err}");
    Ok(())
}

/// `ticketmeter ensure` with the catalog that was bootstrapped
/// (`CATALOG_FILE`): an app owner gets the `subscribe_role: owner` plan,
/// everyone else `OPENMETER_DEFAULT_PLAN_KEY` (upstream's m2m plan here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_upstream_catalog_an_owner_is_subscribed_to_the_owner_plan() -> TestResult {
    let env = env().await?;
    bootstrap(&env.client, &upstream()?, &BootstrapOptions::default()).await?;
    let ensure = |auth_id: &str| -> Result<Value, Box<dyn std::error::Error>> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ticketmeter"))
            .args(["ensure", "--auth-id", auth_id])
            .env_clear()
            .env("OPENMETER_URL", env._running.base_url())
            .env("OPENMETER_DEFAULT_PLAN_KEY", M2M_PLAN)
            .env("CATALOG_FILE", fixture())
            .output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let owner = ensure("app_abc:owner:U1#actor-7")?;
    assert_eq!(owner["customerKey"], "U1");
    assert_eq!(owner["planKey"], OWNER_PLAN);
    let user = ensure("app_abc:alice")?;
    assert_eq!(user["customerKey"], "app_abc:alice");
    assert_eq!(user["planKey"], M2M_PLAN);
    Ok(())
}
