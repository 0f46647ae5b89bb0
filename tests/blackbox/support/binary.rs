//! The real `ticketmeter` binary, run as a child process on random ports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::double::TOKEN;

/// The `ticketmeter` binary under test: cargo's, unless `TICKETMETER_BIN`
/// names a copy (engineers sharing one target directory overwrite each
/// other's `target/debug/ticketmeter` while a long test runs).
pub(crate) fn binary_path() -> PathBuf {
    std::env::var_os("TICKETMETER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ticketmeter")))
}

/// The real `ticketmeter` binary, running a subcommand; killed on drop.
/// Its stderr is drained as it comes, so a chatty child never blocks on a
/// full pipe.
pub(crate) struct Binary {
    pub child: Child,
    log: Arc<std::sync::Mutex<String>>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Binary {
    pub(crate) fn spawn(args: &[&str], env: &[(&str, String)]) -> Self {
        Self::spawn_in(None, args, env)
    }

    /// [`Self::spawn`], in the working directory `dir` when given (where
    /// the binary reads a `.env`); else in the test's.
    pub(crate) fn spawn_in(dir: Option<&Path>, args: &[&str], env: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(binary_path());
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd.env("RUST_LOG", "warn,ticketmeter=info");
        // Spilled dead letters go to a scratch directory, never the checkout
        // (a test that spills sets its own).
        cmd.env(
            "DLQ_SPILL_DIR",
            std::env::temp_dir().join(format!("ticketmeter-test-spill-{}", std::process::id())),
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let drain = child.stderr.take().map(|stderr| {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            })
        });
        Self { child, log, drain }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub(crate) fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        self.wait(within)
    }

    /// SIGKILL: the crash case.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the child wrote to stdout (its results and summaries), read to
    /// the end: call it once the child exited.
    pub(crate) fn stdout(&mut self) -> String {
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            use std::io::Read;
            let _ = stdout.read_to_string(&mut out);
        }
        out
    }

    /// What the child wrote to stderr so far (all of it once it exited).
    pub(crate) fn stderr(&mut self) -> String {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            if let Some(drain) = self.drain.take() {
                let _ = drain.join();
            }
        }
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment a collector needs, in the original's variable names.
pub(crate) fn collector_env(
    brokers: &str,
    topic: &str,
    openmeter_url: &str,
    api_port: u16,
) -> Vec<(&'static str, String)> {
    vec![
        ("KAFKA_BROKERS", brokers.to_owned()),
        ("KAFKA_GATEWAY_TOPIC", topic.to_owned()),
        ("OPENMETER_URL", openmeter_url.to_owned()),
        ("OPENMETER_API_KEY", TOKEN.to_owned()),
        ("ETH_USD_PRICE", "3500".to_owned()),
        ("PROVISION_PORT", api_port.to_string()),
        ("BATCH_LINGER", "50ms".to_owned()),
        ("KAFKA_COMMIT_INTERVAL", "200ms".to_owned()),
        (
            "KAFKA_OPT_TOPIC_METADATA_REFRESH_INTERVAL_MS",
            "1000".to_owned(),
        ),
    ]
}
