//! The docs show what the program does: every example in README.md and
//! docs/operations.md is run here and its output compared, and the README
//! Quickstart is run as written.
//!
//! A ```console block is a shell session: `$ command` lines, each followed
//! by what it prints on stdout. Its commands run in one `bash`, in a scratch
//! directory holding `examples/`, with the real binary on the `PATH` as
//! `ticketmeter`. In the expected output a line `…` stands for any lines
//! (none included) and `…` inside a line for any text; RFC 3339 times and
//! OpenMeter's ids (ULIDs) are compared by form, not by value. Port 8888 (the double's) is moved to a
//! free one, since tests run side by side.

use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde_json::Value;

use crate::support::binary::{binary_path, Binary};
use crate::support::broker::Broker;
use crate::support::double::{OpenMeter, PLAN, TOKEN};
use crate::support::free_port;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(doc: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(doc)).unwrap()
}

/// The fenced blocks of `text` in language `lang`: (first line number,
/// body without the fence's own indentation, as in a list item).
fn fenced(text: &str, lang: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            None if trimmed == format!("```{lang}") => {
                let indent = line[..line.len() - trimmed.len()].to_owned();
                open = Some((i + 2, indent, String::new()));
            }
            Some(_) if trimmed == "```" => {
                blocks.extend(open.take().map(|(line, _, body)| (line, body)));
            }
            Some((_, indent, body)) => {
                body.push_str(line.strip_prefix(indent.as_str()).unwrap_or(line));
                body.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// RFC 3339 times and ULIDs (OpenMeter's ids) become one token each, so a
/// doc can show real ones.
fn times(text: &str) -> String {
    let time = Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)").unwrap();
    let ulid = Regex::new(r"\b[0-7][0-9A-HJKMNP-TV-Z]{25}\b").unwrap();
    let text = time.replace_all(text, "<time>");
    ulid.replace_all(&text, "<ulid>").into_owned()
}

/// Whether `actual` (one line) matches `expected`, where `…` is any text.
fn line_matches(expected: &str, actual: &str) -> bool {
    let (expected, actual) = (expected.trim_end(), actual.trim_end());
    let parts: Vec<&str> = expected.split('…').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return expected == actual;
    };
    let Some(mut rest) = actual.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether the `actual` lines match the `expected` ones, where a line `…`
/// stands for any number of lines.
fn lines_match(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((e, rest)) if e.trim() == "…" => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((e, rest)) => actual
            .split_first()
            .is_some_and(|(a, more)| line_matches(e, a) && lines_match(rest, more)),
    }
}

/// A JSON value matches the doc's when every doc string (with `…`
/// wildcards) matches and the shapes agree.
fn json_matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(e), Value::String(a)) => line_matches(&times(e), &times(a)),
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, v)| a.get(k).is_some_and(|av| json_matches(v, av)))
        }
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(ev, av)| json_matches(ev, av))
        }
        (e, a) => e == a,
    }
}

/// A scratch directory with `examples/` and a `bin/ticketmeter`.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let examples = dir.path().join("work/examples");
        std::fs::create_dir_all(&examples).unwrap();
        for entry in std::fs::read_dir(Path::new(ROOT).join("examples")).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, examples.join(path.file_name().unwrap())).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::os::unix::fs::symlink(binary_path(), dir.path().join("bin/ticketmeter")).unwrap();
        Self { dir }
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// `bash -c script` in the work directory, with only `ticketmeter`,
    /// the system's tools and `env` in its environment.
    fn bash(&self, script: &str, env: &[(&str, String)]) -> tokio::process::Command {
        let mut bash = tokio::process::Command::new("bash");
        bash.args(["-c", script])
            .current_dir(self.work())
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/bin:/usr/bin:/bin",
                    self.dir.path().join("bin").display()
                ),
            )
            .env("HOME", self.work())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        bash
    }
}

/// A shell line without its trailing `# comment`.
fn without_comment(line: &str) -> &str {
    let comment = Regex::new(r"\s+#\s.*$").unwrap();
    comment
        .find(line)
        .map_or(line, |m| &line[..m.start()])
        .trim_end()
}

/// One `$ command` of a console block and the output the doc shows.
struct Step {
    command: String,
    expected: Vec<String>,
}

fn steps(block: &str, port: u16) -> Vec<Step> {
    let block = block.replace("8888", &port.to_string());
    let mut steps: Vec<Step> = Vec::new();
    for line in block.lines() {
        match (line.strip_prefix("$ "), steps.last_mut()) {
            (Some(command), _) => steps.push(Step {
                command: without_comment(command).to_owned(),
                expected: Vec::new(),
            }),
            (None, Some(step)) => step.expected.push(line.to_owned()),
            (None, None) => panic!("a console block starts with a `$ ` line:\n{block}"),
        }
    }
    steps
}

/// The script running `steps`, step `i`'s stdout and stderr in `out.i` and
/// `err.i`. A step ending in `&` runs in the background, and the next waits
/// (up to 10 s) for its first line, as a person would.
fn script(steps: &[Step]) -> String {
    let mut script = String::from("trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT\n");
    for (i, step) in steps.iter().enumerate() {
        match step.command.strip_suffix('&') {
            Some(background) => script.push_str(&format!(
                "{{ {background} & }} > out.{i} 2> err.{i}\n\
                 for _ in $(seq 100); do [ -s out.{i} ] && break; sleep 0.1; done\n"
            )),
            None => script.push_str(&format!("{{ {} ; }} > out.{i} 2> err.{i}\n", step.command)),
        }
    }
    script
}

/// Runs a console block and returns what differs from the doc, if anything.
async fn run_console_block(doc: &str, line: usize, block: &str) -> Option<String> {
    let scratch = Scratch::new();
    let steps = steps(block, free_port());
    let ran = scratch.bash(&script(&steps), &[]).output().await.unwrap();
    let mut differences = String::new();
    for (i, step) in steps.iter().enumerate() {
        let read = |name: &str| {
            std::fs::read_to_string(scratch.work().join(format!("{name}.{i}"))).unwrap_or_default()
        };
        let (out, err) = (times(&read("out")), read("err"));
        let actual: Vec<&str> = out.lines().collect();
        let expected: Vec<String> = step.expected.iter().map(|e| times(e)).collect();
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        if !lines_match(&expected, &actual) {
            differences.push_str(&format!(
                "{doc}:{line}: `$ {}` printed:\n{out}--- the doc shows:\n{}\n--- stderr:\n{err}\n",
                step.command,
                expected.join("\n")
            ));
        }
    }
    if !ran.status.success() && differences.is_empty() {
        differences = format!("{doc}:{line}: the session failed: {ran:?}");
    }
    (!differences.is_empty()).then_some(differences)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_example_prints_what_the_doc_shows() {
    let mut failures = Vec::new();
    let mut examples = 0;
    for doc in ["README.md", "docs/operations.md"] {
        for (line, block) in fenced(&read(doc), "console") {
            examples += 1;
            failures.extend(run_console_block(doc, line, &block).await);
        }
    }
    assert!(
        examples >= 2,
        "the README's audit examples are console blocks"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The doc's JSON block that follows `marker`.
fn json_after(doc: &str, marker: &str) -> Value {
    let text = read(doc);
    let from = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {doc}"));
    let (_, block) = fenced(&text[from..], "json")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("a JSON block after {marker:?} in {doc}"));
    serde_json::from_str(&block).unwrap_or_else(|e| panic!("{doc}: {e}:\n{block}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_ensure_answer_is_what_ensure_answers() {
    let om = OpenMeter::bootstrapped(None).await;
    let port = free_port();
    let env = [
        ("OPENMETER_URL", om.url()),
        ("PROVISION_PORT", port.to_string()),
    ];
    let _serve = Binary::spawn(&["serve"], &env);
    let url = format!("http://127.0.0.1:{port}/ensure");
    let http = reqwest::Client::new();
    let mut answer = Value::Null;
    for _ in 0..200 {
        let sent = http
            .post(&url)
            .body(r#"{"client_id": "acme", "external_user_id": "alice"}"#)
            .send()
            .await;
        if let Ok(response) = sent {
            answer = response.json().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shown = json_after(
        "README.md",
        "`POST /ensure` — compatible with the Go sidecar.",
    );
    assert!(
        json_matches(&shown, &answer),
        "README shows {shown}\nensure answered {answer}"
    );
    assert_eq!(answer["planKey"], PLAN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ready_example_in_operations_is_what_run_answers() {
    let om = OpenMeter::bootstrapped(Some(TOKEN)).await;
    let port = free_port();
    let env = crate::support::binary::collector_env(
        &format!("127.0.0.1:{}", free_port()),
        "livepeer-gateway-events",
        &om.url(),
        port,
    );
    let mut env: Vec<(&str, String)> = env
        .into_iter()
        .filter(|(k, _)| *k != "OPENMETER_API_KEY")
        .collect();
    env.push(("OPENMETER_API_KEY", "kpat_revoked".to_owned()));
    let _collector = Binary::spawn(&["run"], &env);
    let shown = json_after(
        "docs/operations.md",
        "When billing cannot progress, `problems` says why",
    );
    let url = format!("http://127.0.0.1:{port}/ready");
    let mut answer = Value::Null;
    for _ in 0..300 {
        if let Ok(response) = reqwest::get(&url).await {
            answer = response.json().await.unwrap_or(Value::Null);
            if json_matches(&shown, &answer) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        json_matches(&shown, &answer),
        "docs/operations.md shows {shown}\n/ready answered {answer}"
    );
}

/// How many events the double at `events` (its list URL) holds (one page).
async fn stored_events(events: &str) -> usize {
    let listed = reqwest::Client::new()
        .get(events)
        .query(&[("page[size]", "100")])
        .send()
        .await;
    match listed {
        Ok(response) => response
            .json::<Value>()
            .await
            .ok()
            .and_then(|body| body["data"].as_array().map(Vec::len))
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// The README Quickstart's shell lines, in order.
fn quickstart() -> Vec<String> {
    let readme = read("README.md");
    let start = readme.find("## Quickstart").expect("a Quickstart");
    let end = start
        + readme[start..]
            .find("For a real deployment")
            .expect("its end");
    fenced(&readme[start..end], "sh")
        .into_iter()
        .flat_map(|(_, block)| {
            block
                .lines()
                .map(without_comment)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_runs_as_written() {
    let lines = quickstart();
    assert!(
        lines.iter().position(|l| l == "ticketmeter bootstrap")
            < lines.iter().position(|l| l == "ticketmeter check"),
        "bootstrap comes before check: {lines:?}"
    );
    let broker = Broker::start();
    broker.create_topic("livepeer-gateway-events", 1).await;
    let (double_port, api_port) = (free_port(), free_port());
    // Each line runs as written; `ticketmeter run` runs until the test
    // has seen it bill, then gets SIGTERM.
    let mut script = String::from("set -e\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n");
    for line in &lines {
        let line = line
            .replace("8888", &double_port.to_string())
            .replace("localhost:9092", &broker.brokers());
        if line == "ticketmeter run" {
            script.push_str(
                "ticketmeter run 2> run.log & RUN=$!\n\
                 while [ ! -e stop ]; do sleep 0.2; done\n\
                 kill -TERM $RUN\nwait $RUN\necho \"run exited $?\"\n",
            );
        } else {
            script.push_str(&format!("echo \"\\$ {line}\"\n{line}\n"));
        }
    }
    let scratch = Scratch::new();
    let env = [
        ("DOUBLE_PORT", double_port.to_string()),
        ("PROVISION_PORT", api_port.to_string()),
    ];
    let session = scratch
        .bash(&script, &env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let ready_url = format!("http://127.0.0.1:{api_port}/ready");
    let ready = async {
        for _ in 0..900 {
            if reqwest::get(&ready_url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let was_ready = ready.await;
    let sample =
        std::fs::read_to_string(Path::new(ROOT).join("examples/sample-events.jsonl")).unwrap();
    let payloads: Vec<String> = sample.lines().map(str::to_owned).collect();
    broker
        .produce("livepeer-gateway-events", &payloads, 1)
        .await;
    let events = format!("http://127.0.0.1:{double_port}/api/v3/openmeter/events");
    let mut stored = 0;
    for _ in 0..900 {
        stored = stored_events(&events).await;
        if stored >= 21 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(scratch.work().join("stop"), "").unwrap();
    let output = session.wait_with_output().await.unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);

    assert!(output.status.success(), "{said}\n{log}");
    assert!(
        was_ready,
        "/ready answered 200 under `ticketmeter run`:\n{said}\n{log}"
    );
    assert!(said.contains("run exited 0"), "{said}\n{log}");
    assert_eq!(stored, 21, "{said}\n{log}");
    let check = said
        .split("$ ticketmeter check\n")
        .nth(1)
        .unwrap_or_default();
    let items: Vec<&str> = check
        .lines()
        .take_while(|l| l.starts_with('✓') || l.starts_with('✗'))
        .collect();
    assert_eq!(
        items.len(),
        10,
        "price, plan, seven meters, broker:\n{said}"
    );
    assert!(items.iter().all(|l| l.starts_with('✓')), "{said}");
}

/// Each section README.md and ARCHITECTURE.md name in another document
/// (`` `docs/operations.md`, "Sizing" ``) is a heading of that document
/// (which may go on after the name, `: …` or ` (…)`).
#[test]
fn every_section_the_docs_point_at_is_a_heading_there() {
    let mut missing = Vec::new();
    for from in ["README.md", "ARCHITECTURE.md"] {
        let text = read(from);
        for to in ["docs/operations.md", "BENCHMARKS.md", "README.md"] {
            let headings: Vec<String> = read(to)
                .lines()
                .filter_map(|l| l.strip_prefix('#'))
                .map(|h| h.trim_start_matches('#').trim().to_owned())
                .collect();
            for (at, _) in text.match_indices(&format!("{to}`")) {
                let after = &text[at + to.len() + 1..];
                let Some(section) = after
                    .trim_start_matches([',', ' ', '('])
                    .strip_prefix('"')
                    .and_then(|rest| rest.split('"').next())
                else {
                    continue;
                };
                // A heading may go on after its name: "Audit: a month …".
                let named = |h: &String| {
                    h == section
                        || h.strip_prefix(section)
                            .is_some_and(|rest| rest.starts_with(": ") || rest.starts_with(" ("))
                };
                if !headings.iter().any(named) {
                    missing.push(format!("{from} → {to} \"{section}\""));
                }
            }
        }
    }
    assert_eq!(missing, Vec::<String>::new());
}
