//! `ticketmeter check`: ✓ when everything `run` needs is in place, ✗ and a
//! non-zero exit otherwise.

use std::time::Duration;

use openmeter_double::Route;
use ticketmeter::bootstrap::{bootstrap, BootstrapOptions, Catalog};

use crate::support::binary::{collector_env, Binary};
use crate::support::broker::Broker;
use crate::support::double::{OpenMeter, PLAN, TOKEN};
use crate::support::free_port;

fn run_check(broker: &Broker, om: &OpenMeter) -> (bool, String) {
    let env = collector_env(&broker.brokers(), "check-events", &om.url(), free_port());
    let mut binary = Binary::spawn(&["check"], &env);
    let status = binary
        .wait(Duration::from_secs(60))
        .expect("check finishes");
    let mut stdout = String::new();
    if let Some(mut out) = binary.child.stdout.take() {
        use std::io::Read;
        let _ = out.read_to_string(&mut stdout);
    }
    (status.success(), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_when_broker_topic_token_plan_and_meters_are_in_place() {
    let broker = Broker::start();
    broker.create_topic("check-events", 1).await;
    let om = OpenMeter::bootstrapped(Some(TOKEN)).await;
    let (ok, out) = run_check(&broker, &om);
    assert!(ok, "{out}");
    assert!(!out.contains('✗'), "{out}");
    assert_eq!(
        out.matches('✓').count(),
        10,
        "broker, price, plan and the seven meters: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_and_names_what_is_missing_on_an_empty_openmeter() {
    let broker = Broker::start();
    broker.create_topic("check-events", 1).await;
    let om = OpenMeter::start(Some(TOKEN)).await;
    let (ok, out) = run_check(&broker, &om);
    assert!(!ok, "{out}");
    assert!(
        out.contains("✗ meter network_fee_usd_micros: missing"),
        "{out}"
    );
    assert!(out.contains("clearinghouse_default_ppu"), "{out}");
    assert_eq!(om.double.write_calls(), 0, "check writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_when_the_default_plan_exists_only_as_a_draft() {
    let broker = Broker::start();
    broker.create_topic("check-events", 1).await;
    let om = OpenMeter::start(Some(TOKEN)).await;
    om.double.fail_next(Route::PublishPlan, 1, 400);
    let catalog = Catalog::builtin(&PLAN.parse().expect("valid plan key"));
    let report = bootstrap(
        &om.client(Some(TOKEN)),
        &catalog,
        &BootstrapOptions::default(),
    )
    .await
    .expect("bootstrap runs");
    assert!(report.failed(), "the publish was refused:\n{report}");

    let (ok, out) = run_check(&broker, &om);

    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "✗ OpenMeter token and default plan {PLAN}: exists only as unpublished draft version 1"
        )),
        "{out}"
    );
    assert!(
        out.contains("run `ticketmeter bootstrap` to publish it"),
        "{out}"
    );
}
