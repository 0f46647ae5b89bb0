//! Audit benchmark: prints figures, asserts nothing.
//!
//! `cargo bench --bench audit` (options after `--`: `--events N`,
//! `--customers M`). N events over M customers are delivered by the real
//! binary (`replay`) to an in-process OpenMeter double, then the real binary
//! audits them (`audit --file`): throughput in signed events per second and
//! the audit's own peak RSS (VmHWM of its process, sampled every 20 ms).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use openmeter_double::{Double, DoubleConfig};
use ticketmeter::bootstrap::{bootstrap, BootstrapOptions, Catalog};
use ticketmeter::{
    AuthId, ClientConfig, Endpoint, EnsureConfig, Identity, OpenMeterClient, Provisioner,
};

fn option(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn auth_id(customer: usize) -> String {
    format!("client-{customer}:user-{customer}")
}

fn write_events(path: &Path, events: usize, customers: usize) {
    let time = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..events {
        let who = auth_id(i % customers);
        writeln!(
            out,
            r#"{{"id":"env-{i}","type":"create_signed_ticket","timestamp":"1788912000000","gateway":"","data":{{"session_id":"s-{i}","session_status":"continuing","pipeline":"live-video-to-video","request_id":"req-{i}","orch_address":"0xabababababababababababababababababababab","orch_url":"https://orch.example:8935","manifest_id":"m","pm_session_id":"pm","current_time":"{time}","current_time_unix":1788912000000,"previous_time":"{time}","previous_time_unix":1788912000000,"billable_secs":10.5,"pixels":0,"session_balance":"100","computed_fee":"1200000000000","cost":"1.0","sequence_number":{i},"num_tickets":1,"auth_id":"{who}"}}}}"#
        )
        .unwrap();
    }
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Runs the binary to completion; returns its wall time and peak RSS.
fn run(args: &[&str], env: &[(&str, String)], stdout: &Path) -> (Duration, u64) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ticketmeter"));
    cmd.args(args).env_clear().env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::from(std::fs::File::create(stdout).unwrap()))
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(peak_rss_kb(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    (started.elapsed(), peak)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events = option("--events", 100_000);
    let customers = option("--customers", 1_000);
    let double = Double::new(DoubleConfig::default());
    let running = double.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let endpoint = Endpoint::parse(&running.base_url(), None).unwrap();
    let client = OpenMeterClient::new(ClientConfig::new(endpoint, None)).unwrap();
    let plan = "clearinghouse_default_ppu".parse().unwrap();
    bootstrap(
        &client,
        &Catalog::builtin(&plan),
        &BootstrapOptions::default(),
    )
    .await
    .unwrap();
    let provisioner = Provisioner::new(client, plan, EnsureConfig::default());
    for c in 0..customers {
        let identity = Identity::from_auth_id(AuthId::parse("auth_id", &auth_id(c)).unwrap());
        provisioner.ensure(&identity).await.unwrap();
    }
    // Signed after every subscription began (they start in whole seconds).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    write_events(&file, events, customers);
    let env = vec![
        ("OPENMETER_URL", running.base_url()),
        ("ETH_USD_PRICE", "3500".to_owned()),
        (
            "DLQ_FILE",
            dir.path().join("dlq.jsonl").display().to_string(),
        ),
    ];
    let file_arg = file.display().to_string();
    let out = dir.path().join("out.json");
    let blocking = |args: Vec<&'static str>| {
        let (env, file_arg, out) = (env.clone(), file_arg.clone(), out.clone());
        tokio::task::spawn_blocking(move || {
            let mut all: Vec<&str> = args;
            all.push(&file_arg);
            run(&all, &env, &out)
        })
    };
    let (delivered_in, _) = blocking(vec!["replay"]).await.unwrap();
    println!("delivered {events} events over {customers} customers in {delivered_in:.1?}");
    let audit_args = vec![
        "audit", "--from", "1h", "--settle", "0s", "--format", "json", "--file",
    ];
    let (audited_in, peak_kb) = blocking(audit_args).await.unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap_or_default();
    let t = &report["totals"];
    println!(
        "audit: {events} events over {customers} customers in {:.2} s = {:.0} events/s, peak RSS {:.1} MB \
         (signed {}, stored {}, missing {}, unbillable {})",
        audited_in.as_secs_f64(),
        events as f64 / audited_in.as_secs_f64(),
        peak_kb as f64 / 1024.0,
        t["signed_events"],
        t["stored_events"],
        t["missing_events"],
        t["unbillable_events"]
    );
}
