//! What is wrong with a catalog ([`CatalogError`], each [`Problem`]), and
//! what of it is not sent ([`Notice`]): each names its field and, for a
//! catalog read from a file, its line.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// Why a catalog file could not be used.
#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("cannot read catalog {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Syntax, unknown or missing fields, bad values: the message names the
    /// field and, as the parsers report it, the line and column.
    #[error("catalog {} is malformed: {message}", path.display())]
    Parse {
        path: PathBuf,
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    /// Well-formed, but inconsistent (e.g. a feature naming a missing meter)
    /// or refused by OpenMeter on publish; each problem has its line.
    #[error("catalog {} is inconsistent: {}", path.display(), joined(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// One reason a catalog cannot be used as written: the field, as a path
/// like `plan.phases[0].rate_cards[0].key`, what is wrong with it and, for
/// a catalog read from a file, the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
    pub line: Option<usize>,
}

impl Problem {
    pub(in crate::bootstrap) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            line: None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// What of a catalog is not sent to OpenMeter, because OpenMeter already
/// does what it says or it bills nothing: the field, why, and its line in
/// a catalog file. The bootstrap report prints each one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub field: String,
    pub message: String,
    pub line: Option<usize>,
}

impl Notice {
    pub(in crate::bootstrap) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            line: None,
        }
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Problems on one line of text, separated by `; `.
pub(in crate::bootstrap) fn joined(problems: &[Problem]) -> String {
    let shown: Vec<String> = problems.iter().map(Problem::to_string).collect();
    shown.join("; ")
}
