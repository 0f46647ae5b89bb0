//! What the commands print, and how: results and summaries on stdout,
//! diagnostics on stderr, each cause of an error once.
//!
//! A closed pipe (`ticketmeter replay --dry-run f | head -1`) ends the
//! process quietly with exit 0, as ripgrep does: the reader has what it
//! wanted, so there is nothing to report and no panic from `println!`.

use std::fmt::Display;
use std::io::{ErrorKind, Write};

/// `println!` that ends quietly on a closed pipe (see the module docs).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}

/// Writes `text` and a newline to stdout.
pub(crate) fn line(text: impl Display) {
    let mut out = std::io::stdout().lock();
    quiet_on_closed_pipe(writeln!(out, "{text}").and_then(|()| out.flush()));
}

/// Writes `text` to stdout as it is (it carries its own newlines).
pub(crate) fn text(text: impl Display) {
    let mut out = std::io::stdout().lock();
    quiet_on_closed_pipe(write!(out, "{text}").and_then(|()| out.flush()));
}

/// Writes `text` and a newline to stderr; a closed stderr is ignored.
pub fn note(text: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Exits quietly when stdout's reader went away; other write errors
/// (a full disk) are left to the caller's summary, which cannot be written
/// either, so they are ignored too.
fn quiet_on_closed_pipe(written: std::io::Result<()>) {
    if written.is_err_and(|e| e.kind() == ErrorKind::BrokenPipe) {
        std::process::exit(0);
    }
}

/// An error and its causes, each said once: a cause whose text its parent
/// already quoted is left out (`reading X: No such file or directory (os
/// error 2)`, not the same cause twice).
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[derive(Debug, thiserror::Error)]
    #[error("opening f: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("opening f")]
    struct Wrapping(#[source] std::io::Error);

    fn missing() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::NotFound)
    }

    #[test]
    fn a_cause_its_parent_quotes_is_said_once() {
        let text = error_text(&Quoting(missing()));
        assert_eq!(text.matches("not found").count(), 1, "{text}");
    }

    #[test]
    fn a_cause_its_parent_does_not_quote_is_appended() {
        assert_eq!(
            error_text(&Wrapping(missing())),
            "opening f: entity not found"
        );
    }
}
