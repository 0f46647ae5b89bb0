//! The `ticketmeter` binary: loads `.env`, sets up logging, runs the command.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use ticketmeter::Cli;

fn main() -> ExitCode {
    // An operator's existing .env keeps working; the real environment wins.
    let _ = dotenvy::dotenv();
    drop_empty_variables();
    let cli = Cli::parse();
    init_logging(cli.quiet_by_default());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            ticketmeter::note(format!("error: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(ticketmeter::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            ticketmeter::note(format!("error: {}", ticketmeter::error_text(e.as_ref())));
            ExitCode::FAILURE
        }
    };
    // The command is done (and has committed, flushed and synced what it
    // must); a start-up probe still waiting on the brokers must not hold
    // the exit for its whole timeout.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// `ETH_USD_PRICE=` in a `.env` means "not set", as it did for the original
/// stack; clap would otherwise take the empty string as the value. Done
/// before any thread exists, so changing the environment is sound.
fn drop_empty_variables() {
    for (name, value) in std::env::vars_os() {
        if value.is_empty() {
            std::env::remove_var(name);
        }
    }
}

/// `RUST_LOG` sets the level (default info, or warn for `quiet`);
/// `LOG_FORMAT=json` for JSON. Colours only on a terminal, so a log file
/// or a collector's log shipper gets plain text.
fn init_logging(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}
