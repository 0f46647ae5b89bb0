//! The black-box tests' harness, one file per concern:
//!
//! - `binary`: the real `ticketmeter` binary as a child process, and the
//!   environment a collector needs;
//! - `broker`: a real Kafka-protocol broker (tansu) on a loopback port;
//! - `double`: the OpenMeter double, started and bootstrapped;
//! - `fixtures`: the shared fixture files and how their expectations compare;
//! - `pipeline`: ticketmeter's pipeline run in-process over JSON lines;
//! - `signer`: go-livepeer's remote signer's session chains, call by call.
//!
//! Here: what every concern uses (a free port, waiting for a condition,
//! reading a metric).

use std::net::TcpListener;
use std::time::{Duration, Instant};

pub(crate) mod binary;
pub(crate) mod broker;
pub(crate) mod double;
pub(crate) mod fixtures;
pub(crate) mod pipeline;
pub(crate) mod signer;

/// A free loopback port (racy in theory, fine on a test machine).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` until it holds or `timeout` passes.
pub(crate) async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// The value of a series in a Prometheus text exposition: a metric's
/// name, with its labels as rendered when it has any (no spaces in them).
pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
