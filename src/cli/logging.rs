//! Logs go to stderr: `RUST_LOG` sets the level (default info, or warn for
//! commands whose output is the point), `LOG_FORMAT=json` makes them JSON.
//! Colours only on a terminal, so a log file or a collector's log shipper
//! gets plain text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The variable that picks the format (`json`, else text).
pub(super) const LOG_FORMAT: &str = "LOG_FORMAT";

/// The variable that sets the level: `RUST_LOG`.
pub(super) const LOG_LEVEL: &str = EnvFilter::DEFAULT_ENV;

/// Installs the process's logger; `quiet` logs only warnings unless
/// `RUST_LOG` says otherwise.
pub fn init_logging(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_env(LOG_LEVEL).unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if std::env::var(LOG_FORMAT).is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}
