//! The `ticketmeter` binary: loads `.env`, sets up logging, runs the command.

use std::process::ExitCode;

use clap::Parser;

use ticketmeter::Cli;

/// jemalloc, not glibc's malloc, for the whole process (unprefixed, so
/// librdkafka's allocations too): a batch's events are allocated together
/// and freed together, more at once than glibc's per-thread cache holds,
/// so most went through glibc's bins. What it bought: BENCHMARKS.md, "Hot
/// path, part 7".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // An operator's existing .env keeps working; the real environment wins.
    let _ = dotenvy::dotenv();
    drop_empty_variables();
    let cli = Cli::parse();
    ticketmeter::init_logging(cli.quiet_by_default());
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
#[allow(clippy::disallowed_methods)]
fn drop_empty_variables() {
    for (name, value) in std::env::vars_os() {
        if value.is_empty() {
            std::env::remove_var(name);
        }
    }
}
