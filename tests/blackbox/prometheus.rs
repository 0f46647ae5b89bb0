//! The alert rules (`deploy/prometheus/alerts.yml`) and the Grafana
//! dashboard (`docs/grafana-dashboard.json`) against what the collector
//! exposes: promtool checks the rules and runs their unit tests, and a real
//! Prometheus (Debian's `prometheus`; `scripts/test.sh` installs it) scrapes
//! a running collector whose partition stalls. Each test prints the figure
//! it measured (`--nocapture`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openmeter_double::Route;
use rdkafka::producer::FutureRecord;
use regex::Regex;
use serde_json::{json, Value};

use crate::support;
use crate::support::binary::{collector_env, Binary};
use crate::support::broker::{Broker, Storage};
use crate::support::double::{OpenMeter, TOKEN};
use crate::support::{eventually, free_port};

const RULES: &str = "deploy/prometheus/alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/alerts_test.yml";
const DASHBOARD: &str = "docs/grafana-dashboard.json";
const WAIT: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(name: &str) -> Command {
    let mut cmd = Command::new(name);
    cmd.current_dir(repo());
    cmd
}

/// Runs a promtool subcommand; its output, which must say it succeeded.
fn promtool(args: &[&str]) -> String {
    let out = tool("promtool")
        .args(args)
        .output()
        .expect("promtool is installed (scripts/test.sh installs Debian's prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

fn rule_groups() -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join(RULES)).unwrap();
    let rules: Value = serde_yaml::from_str(&text).unwrap();
    rules["groups"].as_array().unwrap().clone()
}

/// (alert name, expression) of every rule.
fn alert_rules() -> Vec<(String, String)> {
    rule_groups()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_owned(),
                r["expr"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// (panel title, expression) of every dashboard query, with Grafana's
/// variables replaced as Grafana would: every instance, a 1m rate window.
fn panel_queries() -> Vec<(String, String)> {
    fn walk(panel: &Value, out: &mut Vec<(String, String)>) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let expr = expr
                    .replace("$instance", ".*")
                    .replace("$__rate_interval", "1m");
                out.push((panel["title"].as_str().unwrap_or("").to_owned(), expr));
            }
        }
        for inner in panel["panels"].as_array().into_iter().flatten() {
            walk(inner, out);
        }
    }
    let text = std::fs::read_to_string(repo().join(DASHBOARD)).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    walk(&dashboard, &mut out);
    out
}

/// The metric names an expression selects.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let name = Regex::new(r"\bticketmeter_[a-z0-9_]+\b").unwrap();
    let up = Regex::new(r"\bup\s*\{").unwrap();
    let mut names: BTreeSet<String> = name
        .find_iter(expr)
        .map(|m| m.as_str().to_owned())
        .collect();
    if up.is_match(expr) {
        names.insert("up".to_owned());
    }
    names
}

#[test]
fn the_alert_rules_pass_promtool_check_and_every_alert_has_a_firing_and_a_quiet_unit_test() {
    let checked = promtool(&["check", "rules", RULES]);
    let rules = alert_rules();
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "{checked}"
    );
    let tested = promtool(&["test", "rules", RULE_TESTS]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    let text = std::fs::read_to_string(repo().join(RULE_TESTS)).unwrap();
    let tests: Value = serde_yaml::from_str(&text).unwrap();
    let evals: Vec<&Value> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .collect();
    for (alert, _) in &rules {
        let fires = |firing: bool| {
            evals.iter().any(|e| {
                e["alertname"].as_str() == Some(alert.as_str())
                    && e["exp_alerts"]
                        .as_array()
                        .is_some_and(|a| a.is_empty() != firing)
            })
        };
        assert!(fires(true), "{alert}: no test where it fires");
        assert!(fires(false), "{alert}: no test where it stays quiet");
    }
    eprintln!(
        "FIGURE promtool: {} rules checked, {} unit-test evaluations passed",
        rules.len(),
        evals.len()
    );
}

/// A Prometheus on a loopback port, scraping `targets` every second and
/// evaluating the alert rules every second; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(targets: &[u16]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [repo().join(RULES)],
            "scrape_configs": [{"job_name": "ticketmeter", "static_configs": [{"targets": targets}]}],
        });
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, serde_yaml::to_string(&config).unwrap()).unwrap();
        let port = free_port();
        let child = tool("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/test.sh installs Debian's prometheus)");
        let prometheus = Self {
            child,
            port,
            _dir: dir,
        };
        let ready = format!("http://127.0.0.1:{port}/-/ready");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reqwest::get(&ready)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "prometheus did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        prometheus
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let mut url = url::Url::parse(&format!("http://127.0.0.1:{}{path}", self.port)).unwrap();
        url.query_pairs_mut().extend_pairs(query);
        let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        body
    }

    /// An instant query's result vector, or the error Prometheus gave.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let body = self.api("/api/v1/query", &[("query", expr)]).await;
        if body["status"] == "success" {
            Ok(body["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        }
    }

    /// Every metric name Prometheus has samples of.
    async fn names(&self) -> BTreeSet<String> {
        let body = self.api("/api/v1/label/__name__/values", &[]).await;
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ticket(i: usize) -> String {
    json!({"id": format!("env-{i}"), "type": "create_signed_ticket", "timestamp": "1788912000000", "gateway": "",
           "data": {"request_id": format!("req-{i}"), "auth_id": format!("client-{}:user", i % 5),
                    "computed_fee": "1000000000000", "current_time": "2026-09-09T00:00:00Z", "pipeline": "live"}})
    .to_string()
}

/// Produces each payload to `partition`, one record per batch.
async fn produce_to(broker: &Broker, topic: &str, partition: i32, payloads: &[String]) {
    let producer = broker.producer();
    for (i, payload) in payloads.iter().enumerate() {
        let key = format!("k{i}");
        let record = FutureRecord::to(topic)
            .payload(payload.as_str())
            .key(&key)
            .partition(partition);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
}

/// The stall: 100 records in one batch on partition 0 of tansu's memory
/// storage; a first collector commits inside the batch and is killed, so
/// the second resumes mid-batch and the broker serves it nothing there.
/// Partition 1 gets the fixture events (deliveries, skips, dead letters,
/// spilled because the DLQ topic name is invalid) and keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scraping_a_collector_evaluates_every_rule_and_panel_and_fires_the_stall_and_dead_letter_alerts(
) {
    let topic = "scraped-events";
    let broker = Broker::start_with(Storage::Memory);
    broker.create_topic(topic, 2).await;
    let om = OpenMeter::bootstrapped(Some(TOKEN)).await;
    let spill = tempfile::tempdir().unwrap();
    let settings = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("DLQ_SPILL_DIR", spill.path().display().to_string()),
            ("KAFKA_DLQ_TOPIC", "not a valid topic name!".to_owned()),
            ("KAFKA_OPT_SESSION_TIMEOUT_MS", "6000".to_owned()),
        ];
        env.extend_from_slice(extra);
        env
    };
    let total = 100;
    broker
        .produce_one_batch(topic, &(0..total).map(ticket).collect::<Vec<_>>())
        .await;

    om.double
        .set_latency(Route::IngestEvents, Duration::from_millis(300));
    let mut env = collector_env(&broker.brokers(), topic, &om.url(), free_port());
    env.extend(settings(&[
        ("BATCH_MAX_EVENTS", "10".to_owned()),
        ("BATCH_MAX_IN_FLIGHT", "1".to_owned()),
    ]));
    let mut first = Binary::spawn(&["run"], &env);
    let mid_batch = || {
        broker
            .committed(topic, 2)
            .first()
            .is_some_and(|o| *o > 0 && *o < total as i64)
    };
    assert!(eventually(WAIT, mid_batch).await, "{}", first.stderr());
    first.kill();
    om.double.set_latency(Route::IngestEvents, Duration::ZERO);

    let port = free_port();
    let mut env = collector_env(&broker.brokers(), topic, &om.url(), port);
    env.extend(settings(&[("STALL_AFTER", "5s".to_owned())]));
    let mut collector = Binary::spawn(&["run"], &env);
    let prometheus = Prometheus::start(&[port]).await;
    let started = Instant::now();

    let fixtures: Vec<String> = support::fixtures::fixtures()
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    produce_to(&broker, topic, 1, &fixtures).await;

    // The stall alert: pending once the watchdog reports the partition
    // (STALL_AFTER after the assignment), firing a minute later.
    let firing = r#"ALERTS{alertname="TicketmeterPartitionStalled",alertstate="firing"}"#;
    let mut pending_at = None;
    let mut fired = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let pending = r#"ALERTS{alertname="TicketmeterPartitionStalled",alertstate="pending"}"#;
        if pending_at.is_none() && !prometheus.query(pending).await.unwrap().is_empty() {
            pending_at = Some(started.elapsed());
        }
        fired = prometheus.query(firing).await.unwrap();
        if !fired.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let fired_at = started.elapsed();
    assert_eq!(fired.len(), 1, "{fired:?}\n{}", collector.stderr());
    assert_eq!(fired[0]["metric"]["partition"], "0", "{fired:?}");
    eprintln!(
        "FIGURE TicketmeterPartitionStalled: pending {pending_at:?}, firing {fired_at:?} after the second collector started (STALL_AFTER 5 s, for: 1m, scrape and evaluation every 1 s)"
    );

    // The fixtures on partition 1 went through meanwhile.
    let expected = support::fixtures::fixtures()
        .iter()
        .filter(|(_, x)| x.get("dead_letter").is_some())
        .count();
    let spilled = || {
        std::fs::read_to_string(spill.path().join("dead-letters.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    assert!(
        eventually(WAIT, || spilled() == expected).await,
        "spilled {} of {expected}",
        spilled()
    );
    // Two more scrapes so the last counters are in.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let scraped = prometheus.names().await;
    let mut used = BTreeSet::new();
    for (_, expr) in alert_rules().iter().chain(panel_queries().iter()) {
        used.extend(metric_names(expr));
    }
    let missing: Vec<&String> = used.iter().filter(|n| !scraped.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "used by a rule or panel but not in the scrape: {missing:?}\nscraped: {scraped:?}"
    );
    assert_eq!(
        prometheus.query(r#"up{job="ticketmeter"}"#).await.unwrap()[0]["value"][1],
        "1"
    );

    // Every rule evaluated without error in Prometheus' own rule manager,
    // and every rule and panel query answers the query API.
    let groups = prometheus.api("/api/v1/rules", &[]).await;
    let evaluated: Vec<&Value> = groups["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(evaluated.len(), alert_rules().len());
    for rule in &evaluated {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    let mut with_data = 0;
    let queries: Vec<(String, String)> = alert_rules().into_iter().chain(panel_queries()).collect();
    for (name, expr) in &queries {
        match prometheus.query(expr).await {
            Ok(result) => with_data += usize::from(!result.is_empty()),
            Err(e) => panic!("{name}: {expr}: {e}"),
        }
    }
    // What fires: the stall, and the fixtures' dead letters (first letters
    // of each reason since start, spilled as the DLQ topic is invalid). The
    // rest of the collector is healthy, and its alerts quiet.
    let alerts = prometheus
        .query(r#"ALERTS{alertstate="firing"}"#)
        .await
        .unwrap();
    let names: BTreeSet<&str> = alerts
        .iter()
        .filter_map(|a| a["metric"]["alertname"].as_str())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "TicketmeterPartitionStalled",
            "TicketmeterDeadLetters",
            "TicketmeterDeadLettersSpilled"
        ]),
        "{alerts:?}"
    );
    let reasons: BTreeSet<&str> = alerts
        .iter()
        .filter(|a| a["metric"]["alertname"] == "TicketmeterDeadLetters")
        .filter_map(|a| a["metric"]["reason"].as_str())
        .collect();
    let lettered = prometheus
        .query("count by (reason) (ticketmeter_events_dead_lettered_total)")
        .await
        .unwrap();
    let lettered: BTreeSet<&str> = lettered
        .iter()
        .filter_map(|s| s["metric"]["reason"].as_str())
        .collect();
    assert!(!lettered.is_empty());
    assert_eq!(reasons, lettered, "one alert per reason dead-lettered");
    eprintln!(
        "FIGURE real Prometheus: {} metric names used by {} rules and {} panel queries all scraped; {} queries evaluated without error ({with_data} with data); rules firing at the end: {names:?}",
        used.len(),
        alert_rules().len(),
        panel_queries().len(),
        queries.len()
    );
    assert!(collector
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
}
