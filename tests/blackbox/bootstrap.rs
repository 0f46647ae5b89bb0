//! `ticketmeter bootstrap` against an in-process OpenMeter double.

use std::io::Write;
use std::path::Path;

use openmeter_double::{Double, DoubleConfig, PlanSeed, Route, RunningDouble};
use serde_json::json;
use ticketmeter::bootstrap::{
    bootstrap, check_catalog_against_collector, BootstrapError, BootstrapOptions, Catalog,
    CatalogError, Kind, Outcome, Report,
};
use ticketmeter::{
    AuthId, ClientConfig, CreateSubscription, CustomerById, Endpoint, Identity, OpenMeterClient,
    PlanKey,
};

use crate::support::double::PLAN;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// `bootstrap --catalog` on livepeer/clearinghouse's catalog, as it is.
mod upstream_catalog;

struct Env {
    double: Double,
    _running: RunningDouble,
    client: OpenMeterClient,
}

async fn env() -> Result<Env, Box<dyn std::error::Error>> {
    let double = Double::new(DoubleConfig::default());
    let running = double.spawn("127.0.0.1:0".parse()?).await?;
    let endpoint = Endpoint::parse(&running.base_url(), None)?;
    let client = OpenMeterClient::new(ClientConfig::new(endpoint, None))?;
    Ok(Env {
        double,
        _running: running,
        client,
    })
}

fn builtin() -> Catalog {
    let key: PlanKey = PLAN.parse().expect("valid plan key");
    Catalog::builtin(&key)
}

const APPLY: BootstrapOptions = BootstrapOptions {
    dry_run: false,
    publish_new_version: false,
};

async fn run(
    env: &Env,
    catalog: &Catalog,
    opts: BootstrapOptions,
) -> Result<Report, Box<dyn std::error::Error>> {
    Ok(bootstrap(&env.client, catalog, &opts).await?)
}

fn active_versions(double: &Double, key: &str) -> Vec<u32> {
    double
        .plans()
        .iter()
        .filter(|p| p.key == key && p.status == "active")
        .map(|p| p.version)
        .collect()
}

/// A catalog whose plan prices billable spend differently from `builtin()`.
/// Bootstraps `catalog` on an empty double, then again: the second run
/// writes nothing and reports every object as existing.
async fn assert_a_second_run_changes_nothing(catalog: &Catalog) -> TestResult {
    let env = env().await?;
    run(&env, catalog, APPLY).await?;
    env.double.reset_counters();

    let report = run(&env, catalog, APPLY).await?;

    assert_eq!(env.double.write_calls(), 0);
    for route in [
        Route::CreateMeter,
        Route::CreateFeature,
        Route::CreatePlan,
        Route::PublishPlan,
    ] {
        assert_eq!(env.double.calls(route), 0, "{route:?}");
    }
    assert!(
        report.lines.iter().all(|l| l.outcome == Outcome::Exists),
        "{report}"
    );
    assert!(report.to_string().contains("nothing to do"), "{report}");
    assert!(report.is_success(false));
    Ok(())
}

fn repriced() -> Catalog {
    let mut catalog = builtin();
    let card = &mut catalog.plan.phases[0].rate_cards[0];
    card.price =
        serde_json::from_value(json!({"type": "unit", "amount": "0.000002"})).expect("valid price");
    catalog
}

#[tokio::test]
async fn fresh_double_gets_everything_created_and_the_plan_active() -> TestResult {
    let env = env().await?;
    let report = run(&env, &builtin(), APPLY).await?;

    assert!(
        report.lines.iter().all(|l| l.outcome == Outcome::Created),
        "{report}"
    );
    assert_eq!(report.lines.len(), 10, "{report}");
    let mut meters: Vec<String> = env.double.meters().into_iter().map(|m| m.key).collect();
    meters.sort();
    assert_eq!(
        meters,
        [
            "billable_secs",
            "billable_usd_micros",
            "fee_wei",
            "id_fingerprint",
            "network_fee_usd_micros",
            "network_fee_usd_micros_by_manifest",
            "signed_ticket_count"
        ]
    );

    let features = env.double.features();
    let billable_meter = env
        .double
        .meters()
        .into_iter()
        .find(|m| m.key == "billable_usd_micros");
    let billable_feature = features.iter().find(|f| f.key == "billable_spend");
    assert_eq!(
        billable_feature.and_then(|f| f.meter_id()),
        billable_meter.as_ref().map(|m| m.id.as_str())
    );

    assert_eq!(active_versions(&env.double, PLAN), [1]);
    let plan = env
        .double
        .plans()
        .into_iter()
        .find(|p| p.key == PLAN)
        .ok_or("no plan")?;
    let card = &plan.phases[0]["rate_cards"][0];
    assert_eq!(card["price"], json!({"type": "unit", "amount": "0.000001"}));
    assert_eq!(
        card["feature"]["id"],
        json!(billable_feature.map(|f| f.id.clone()))
    );
    assert!(report.is_success(false));
    Ok(())
}

#[tokio::test]
async fn second_run_writes_nothing_and_says_so() -> TestResult {
    assert_a_second_run_changes_nothing(&builtin()).await
}

#[tokio::test]
async fn dry_run_calls_no_write_endpoint() -> TestResult {
    let env = env().await?;
    let opts = BootstrapOptions {
        dry_run: true,
        ..APPLY
    };
    let report = run(&env, &builtin(), opts).await?;

    assert_eq!(env.double.write_calls(), 0);
    assert!(env.double.meters().is_empty() && env.double.plans().is_empty());
    assert!(
        report
            .lines
            .iter()
            .all(|l| l.outcome == Outcome::WouldCreate),
        "{report}"
    );
    assert_eq!(report.lines.len(), 10);
    Ok(())
}

#[tokio::test]
async fn existing_meter_with_another_aggregation_is_drift_left_unchanged_and_fails_the_run(
) -> TestResult {
    let env = env().await?;
    let seeded = env.double.seed_meter(json!({
        "name": "Billable", "key": "billable_usd_micros", "aggregation": "max",
        "event_type": "create_signed_ticket", "value_property": "$.billable_usd_micros",
        "dimensions": {"client_id": "$.client_id", "external_user_id": "$.external_user_id",
                       "model_id": "$.model_id", "pipeline": "$.pipeline"}
    }));

    let report = run(&env, &builtin(), APPLY).await?;

    let outcome = report
        .outcome(Kind::Meter, "billable_usd_micros")
        .ok_or("no line")?;
    let Outcome::Drift(what) = outcome else {
        return Err(format!("expected drift, got {outcome:?}").into());
    };
    assert!(
        what.contains("aggregation: catalog sum, existing max"),
        "{what}"
    );
    let meter = env
        .double
        .meters()
        .into_iter()
        .find(|m| m.id == seeded)
        .ok_or("meter gone")?;
    assert_eq!(meter.aggregation, "max");
    assert_eq!(
        env.double.meters().len(),
        7,
        "the other meters are still created"
    );
    assert!(
        report.drifted() && !report.is_success(false),
        "non-zero exit"
    );
    assert!(report.is_success(true), "--allow-drift accepts it");
    assert!(report
        .to_string()
        .contains("meter billable_usd_micros: DRIFT: aggregation"));
    Ok(())
}

#[tokio::test]
async fn plan_drift_without_publish_new_version_is_reported_and_left_alone() -> TestResult {
    let env = env().await?;
    run(&env, &builtin(), APPLY).await?;
    env.double.reset_counters();

    let report = run(&env, &repriced(), APPLY).await?;

    let outcome = report.outcome(Kind::Plan, PLAN).ok_or("no plan line")?;
    assert!(
        matches!(outcome, Outcome::Drift(what) if what.contains("price.amount: catalog 0.000002, existing 0.000001")),
        "{report}"
    );
    assert_eq!(env.double.write_calls(), 0);
    assert_eq!(active_versions(&env.double, PLAN), [1]);
    assert!(!report.is_success(false));
    Ok(())
}

#[tokio::test]
async fn plan_drift_with_publish_new_version_publishes_a_new_active_version() -> TestResult {
    let env = env().await?;
    run(&env, &builtin(), APPLY).await?;
    let opts = BootstrapOptions {
        publish_new_version: true,
        ..APPLY
    };

    let report = run(&env, &repriced(), opts).await?;

    assert_eq!(
        report.outcome(Kind::Plan, PLAN),
        Some(&Outcome::Published),
        "{report}"
    );
    assert_eq!(active_versions(&env.double, PLAN), [2]);
    let v2 = env
        .double
        .plans()
        .into_iter()
        .find(|p| p.version == 2)
        .ok_or("no v2")?;
    assert_eq!(
        v2.phases[0]["rate_cards"][0]["price"]["amount"],
        json!("0.000002")
    );
    assert!(report.is_success(false), "{report}");

    env.double.reset_counters();
    let again = run(&env, &repriced(), opts).await?;
    assert_eq!(env.double.write_calls(), 0, "{again}");
    assert_eq!(again.outcome(Kind::Plan, PLAN), Some(&Outcome::Exists));
    Ok(())
}

fn write_file(dir: &Path, name: &str, text: &str) -> std::io::Result<std::path::PathBuf> {
    let path = dir.join(name);
    std::fs::File::create(&path)?.write_all(text.as_bytes())?;
    Ok(path)
}

/// What a catalog file `name` holding `text` is refused with.
fn refused_file(name: &str, text: &str) -> Result<CatalogError, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let refused = Catalog::from_file(&write_file(dir.path(), name, text)?).err();
    Ok(refused.ok_or("accepted a catalog file that must be refused")?)
}

const CUSTOM: &str = r#"
meters:
  - key: pixels_total
    name: Pixels
    aggregation: sum
    event_type: create_signed_ticket
    value_property: $.pixels
    dimensions:
      pipeline: $.pipeline
features:
  - key: pixels
    name: Pixels
    meter: pixels_total
plan:
  key: pixels_ppu
  name: Pixels pay per use
  currency: EUR
  billing_cadence: P1W
  phases:
    - key: only
      name: Only
      rate_cards:
        - key: pixels
          name: Pixels
          feature: pixels
          price: { type: unit, amount: "0.01" }
"#;

#[tokio::test]
async fn custom_catalog_file_replaces_the_builtin_one() -> TestResult {
    let env = env().await?;
    let dir = tempfile::tempdir()?;
    let catalog = Catalog::from_file(&write_file(dir.path(), "mine.yaml", CUSTOM)?)?;

    let report = run(&env, &catalog, APPLY).await?;

    assert_eq!(report.lines.len(), 3, "{report}");
    let meters: Vec<String> = env.double.meters().into_iter().map(|m| m.key).collect();
    assert_eq!(meters, ["pixels_total"]);
    let plan = env.double.plans().into_iter().next().ok_or("no plan")?;
    assert_eq!(
        (plan.key.as_str(), plan.currency.as_str()),
        ("pixels_ppu", "EUR")
    );
    assert_eq!(
        (plan.billing_cadence.as_str(), plan.status.as_str()),
        ("P1W", "active")
    );
    Ok(())
}

#[tokio::test]
async fn json_catalog_file_is_read_like_yaml() -> TestResult {
    let dir = tempfile::tempdir()?;
    let yaml_catalog = Catalog::from_file(&write_file(dir.path(), "a.yaml", CUSTOM)?)?;
    let json = serde_json::to_string_pretty(&yaml_catalog)?;
    let json_catalog = Catalog::from_file(&write_file(dir.path(), "a.json", &json)?)?;
    assert_eq!(json_catalog, yaml_catalog);
    Ok(())
}

#[test]
fn example_catalog_file_is_the_builtin_catalog() -> TestResult {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/catalog.yaml");
    assert_eq!(Catalog::from_file(&path)?, builtin());
    Ok(())
}

#[test]
fn malformed_yaml_catalog_names_the_field_and_line() -> TestResult {
    let text = CUSTOM.replace("    aggregation: sum", "    agregation: sum");
    let err = refused_file("bad.yaml", &text)?;
    let CatalogError::Parse {
        line, ref message, ..
    } = err
    else {
        return Err(format!("expected a parse error, got {err}").into());
    };
    assert_eq!(line, Some(5), "{message}");
    let shown = err.to_string();
    assert!(
        shown.contains("agregation") && shown.contains("line 5"),
        "{shown}"
    );
    Ok(())
}

#[test]
fn malformed_json_catalog_names_the_field_and_line() -> TestResult {
    let text =
        "{\n  \"meters\": [],\n  \"plan\": {\n    \"key\": \"p\",\n    \"colour\": \"red\"\n  }\n}";
    let err = refused_file("bad.json", text)?;
    let shown = err.to_string();
    assert!(
        shown.contains("colour") && shown.contains("line 5"),
        "{shown}"
    );
    Ok(())
}

#[test]
fn catalog_value_the_api_rejects_is_reported_at_its_line() -> TestResult {
    let text = CUSTOM.replace("amount: \"0.01\"", "amount: \"1e-2\"");
    let err = refused_file("bad.yaml", &text)?;
    let shown = err.to_string();
    assert!(
        shown.contains("1e-2") && shown.contains("line 26"),
        "{shown}"
    );
    Ok(())
}

#[test]
fn inconsistent_catalog_names_the_field() -> TestResult {
    let text = CUSTOM.replace("    meter: pixels_total", "    meter: pixel_total");
    let err = refused_file("bad.yaml", &text)?;
    assert!(err.to_string().contains("features[0].meter"), "{err}");
    Ok(())
}

#[test]
fn example_catalog_reads_only_fields_the_collector_sends() -> TestResult {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/catalog.yaml");
    let catalog = Catalog::from_file(&path)?;
    assert_eq!(check_catalog_against_collector(&catalog), Ok(()));
    Ok(())
}

#[tokio::test]
async fn failed_meter_fails_its_feature_but_not_the_rest() -> TestResult {
    let env = env().await?;
    env.double.fail_next(Route::CreateMeter, 1, 400);

    let report = run(&env, &builtin(), APPLY).await?;

    let meter = report.outcome(Kind::Meter, "network_fee_usd_micros");
    assert!(matches!(meter, Some(Outcome::Failed(_))), "{report}");
    let feature = report.outcome(Kind::Feature, "network_spend");
    assert!(
        matches!(feature, Some(Outcome::Failed(why)) if why.contains("network_fee_usd_micros")),
        "{report}"
    );
    assert_eq!(
        report.outcome(Kind::Plan, PLAN),
        Some(&Outcome::Created),
        "{report}"
    );
    assert!(report.failed() && !report.is_success(true));
    Ok(())
}

#[tokio::test]
async fn refused_token_stops_the_run() -> TestResult {
    let double = Double::new(DoubleConfig {
        token: Some("right".into()),
        ..DoubleConfig::default()
    });
    let running = double.spawn("127.0.0.1:0".parse()?).await?;
    let endpoint = Endpoint::parse(&running.base_url(), None)?;
    let client = OpenMeterClient::new(ClientConfig::new(endpoint, None))?;

    let err = bootstrap(&client, &builtin(), &APPLY)
        .await
        .err()
        .ok_or("ran without a token")?;

    assert!(matches!(err, BootstrapError::Aborted { .. }), "{err}");
    assert!(err.to_string().contains("OPENMETER_API_KEY"), "{err}");
    assert_eq!(double.write_calls(), 0);
    Ok(())
}

#[tokio::test]
async fn draft_left_by_a_failed_publish_is_published_on_the_next_run() -> TestResult {
    let env = env().await?;
    env.double.fail_next(Route::PublishPlan, 1, 400);
    let first = run(&env, &builtin(), APPLY).await?;
    assert!(
        matches!(first.outcome(Kind::Plan, PLAN), Some(Outcome::Failed(_))),
        "{first}"
    );
    env.double.reset_counters();

    let second = run(&env, &builtin(), APPLY).await?;

    assert_eq!(
        second.outcome(Kind::Plan, PLAN),
        Some(&Outcome::Published),
        "{second}"
    );
    assert_eq!(env.double.calls(Route::CreatePlan), 0);
    assert_eq!(active_versions(&env.double, PLAN), [1]);
    Ok(())
}

#[tokio::test]
async fn report_prints_one_line_per_object() -> TestResult {
    let env = env().await?;
    let text = run(&env, &builtin(), APPLY).await?.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "meter network_fee_usd_micros: created");
    assert_eq!(lines[6], "meter id_fingerprint: created");
    assert_eq!(lines[7], "feature network_spend: created");
    assert_eq!(
        lines[9],
        "plan clearinghouse_default_ppu: created and published (version 1, active)"
    );
    assert_eq!(lines.len(), 11, "ten objects and a summary:\n{text}");
    Ok(())
}

#[tokio::test]
async fn bootstrap_on_an_empty_double_publishes_a_subscribable_plan() -> TestResult {
    let env = env().await?;

    let report = run(&env, &builtin(), APPLY).await?;

    assert!(report.is_success(false), "{report}");
    let key: PlanKey = PLAN.parse()?;
    let versions = env.client.plan_versions(&key).await?;
    let [plan] = versions.as_slice() else {
        return Err(format!("expected one version, got {versions:?}").into());
    };
    assert_eq!((plan.version, plan.status.as_str()), (1, "active"));
    assert_eq!(
        plan.phases[0]["rate_cards"][0]["billing_cadence"],
        json!("P1M"),
        "the usage rate card is billed at the plan's cadence"
    );
    let auth_id = AuthId::parse("auth_id", "acme:alice")?;
    let customer = env
        .client
        .create_customer(&Identity::from_auth_id(auth_id).customer_key())
        .await?;
    let subscription = env
        .client
        .create_subscription(&CreateSubscription {
            customer: CustomerById { id: &customer.id },
            plan: &plan.reference(),
        })
        .await?;
    assert!(
        subscription.is_current(chrono::Utc::now()),
        "{subscription:?}"
    );
    Ok(())
}

/// The built-in catalog with its rate card keyed `billable`, while its
/// feature is `billable_spend`: OpenMeter refuses such a plan.
fn key_mismatch() -> Result<Catalog, Box<dyn std::error::Error>> {
    let mut catalog = builtin();
    catalog.plan.phases[0].rate_cards[0].key = "billable".parse()?;
    Ok(catalog)
}

#[tokio::test]
async fn a_catalog_with_a_rate_card_feature_key_mismatch_is_refused_before_any_request(
) -> TestResult {
    let env = env().await?;

    let err = bootstrap(&env.client, &key_mismatch()?, &APPLY)
        .await
        .err()
        .ok_or("bootstrapped a plan OpenMeter refuses")?;

    assert!(matches!(err, BootstrapError::InvalidCatalog(_)), "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains("plan.phases[0].rate_cards[0].key") && shown.contains("billable_spend"),
        "{shown}"
    );
    assert_eq!(env.double.total_calls(), 0);
    Ok(())
}

#[tokio::test]
async fn a_catalog_with_a_usage_price_and_no_feature_is_refused_before_any_request() -> TestResult {
    let env = env().await?;
    let mut catalog = builtin();
    catalog.plan.phases[0].rate_cards[0].feature = None;

    let err = bootstrap(&env.client, &catalog, &APPLY)
        .await
        .err()
        .ok_or("bootstrapped a plan OpenMeter refuses")?;

    assert!(
        err.to_string()
            .contains("plan.phases[0].rate_cards[0].feature"),
        "{err}"
    );
    assert_eq!(env.double.total_calls(), 0);
    Ok(())
}

#[test]
fn a_rate_card_feature_key_mismatch_in_a_file_is_reported_at_its_line() -> TestResult {
    let text = CUSTOM.replace("        - key: pixels\n", "        - key: pixel_card\n");
    let err = refused_file("bad.yaml", &text)?;
    let shown = err.to_string();
    assert!(
        shown.contains("line 23: plan.phases[0].rate_cards[0].key"),
        "{shown}"
    );
    Ok(())
}

#[test]
fn a_usage_price_without_a_feature_in_a_file_is_reported_at_its_rate_card() -> TestResult {
    let text = CUSTOM.replace("          feature: pixels\n", "");
    let err = refused_file("bad.yaml", &text)?;
    let shown = err.to_string();
    assert!(
        shown.contains("line 23: plan.phases[0].rate_cards[0].feature"),
        "{shown}"
    );
    Ok(())
}

#[tokio::test]
async fn a_refused_publish_names_openmeters_reason_and_reports_the_draft() -> TestResult {
    let env = env().await?;
    env.double.fail_next(Route::PublishPlan, 1, 400);

    let report = run(&env, &builtin(), APPLY).await?;

    let line = report
        .lines
        .iter()
        .find(|l| l.kind == Kind::Plan)
        .ok_or("no plan line")?;
    assert!(
        matches!(&line.outcome, Outcome::Failed(why)
            if why.contains("HTTP 400") && why.contains("fault injected by openmeter-double")),
        "{report}"
    );
    assert!(
        line.detail
            .as_deref()
            .is_some_and(|d| d.contains("draft version 1 exists unpublished")),
        "{report}"
    );
    assert!(!report.is_success(true), "a non-zero exit");
    let statuses: Vec<String> = env.double.plans().into_iter().map(|p| p.status).collect();
    assert_eq!(statuses, ["draft"]);
    Ok(())
}

#[tokio::test]
async fn a_published_usage_rate_card_without_billing_cadence_is_drift() -> TestResult {
    let env = env().await?;
    run(&env, &builtin(), APPLY).await?;
    let v1 = env.double.plans().into_iter().next().ok_or("no plan")?;
    let mut phases = v1.phases.clone();
    phases[0]["rate_cards"][0]
        .as_object_mut()
        .ok_or("no rate card")?
        .remove("billing_cadence");
    env.double.seed_plan(PlanSeed {
        phases: Some(phases),
        ..PlanSeed::new(PLAN, 2, "active")
    });
    env.double.reset_counters();

    let report = run(&env, &builtin(), APPLY).await?;

    let outcome = report.outcome(Kind::Plan, PLAN).ok_or("no plan line")?;
    assert!(
        matches!(outcome, Outcome::Drift(what)
            if what.contains("rate_cards.billable_spend.billing_cadence: catalog P1M, existing (none)")),
        "{report}"
    );
    assert_eq!(env.double.write_calls(), 0);
    Ok(())
}

#[tokio::test]
async fn a_rate_card_cadence_set_in_the_catalog_is_published_instead_of_the_plans() -> TestResult {
    let env = env().await?;
    run(&env, &builtin(), APPLY).await?;
    let mut daily = builtin();
    daily.plan.phases[0].rate_cards[0].billing_cadence = Some("P1D".parse()?);
    let opts = BootstrapOptions {
        publish_new_version: true,
        ..APPLY
    };

    let report = run(&env, &daily, opts).await?;

    assert_eq!(
        report.outcome(Kind::Plan, PLAN),
        Some(&Outcome::Published),
        "{report}"
    );
    let detail = &report.lines.last().ok_or("no lines")?.detail;
    assert!(
        detail
            .as_deref()
            .is_some_and(|d| d.contains("billing_cadence: catalog P1D, existing P1M")),
        "{report}"
    );
    let v2 = env
        .double
        .plans()
        .into_iter()
        .find(|p| p.version == 2)
        .ok_or("no v2")?;
    assert_eq!(
        v2.phases[0]["rate_cards"][0]["billing_cadence"],
        json!("P1D")
    );
    Ok(())
}

#[tokio::test]
async fn a_draft_that_differs_from_the_catalog_is_drift_that_says_to_delete_it() -> TestResult {
    let env = env().await?;
    env.double.seed_plan(PlanSeed::new(PLAN, 1, "draft"));
    let opts = BootstrapOptions {
        publish_new_version: true,
        ..APPLY
    };

    let report = run(&env, &builtin(), opts).await?;

    let line = report
        .lines
        .iter()
        .find(|l| l.kind == Kind::Plan)
        .ok_or("no plan line")?;
    assert!(matches!(line.outcome, Outcome::Drift(_)), "{report}");
    assert!(
        line.detail
            .as_deref()
            .is_some_and(|d| d.contains("delete that draft in OpenMeter")),
        "{report}"
    );
    assert_eq!(
        env.double.calls(Route::CreatePlan),
        0,
        "OpenMeter allows one draft per plan"
    );
    Ok(())
}
