//! The strings the API constrains (keys, JSONPaths, dimension names,
//! amounts, durations), each a newtype checked while parsing, so a bad value
//! is reported with the parser's line and column. The built-in catalog
//! builds its constants unchecked (the tuple fields are the catalog's own);
//! a test checks them.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::domain::is_resource_key;

/// Declares a string newtype validated on deserialisation, so serde reports
/// a bad value at its position in the file.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(pub(super) String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                let check: fn(&str) -> bool = $check;
                if check(&value) {
                    Ok(Self(value))
                } else {
                    Err(format!("{value:?} is not {}", $what))
                }
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::try_from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_string!(
    /// OpenMeter's `ResourceKey`: `^[a-z0-9]+(?:_[a-z0-9]+)*$`, 1..=64.
    Key,
    is_resource_key,
    "a valid OpenMeter key (1-64 of a-z, 0-9 in words joined by single underscores)"
);

checked_string!(
    /// A JSONPath into the event's `data`, limited to the dotted form
    /// (`$.field` or `$.a.b`) that the collector check can reason about.
    JsonPath,
    |s| pattern(&JSONPATH, r"^\$(\.[A-Za-z_][A-Za-z0-9_]*)+$").is_match(s),
    "a JSONPath like $.field"
);

checked_string!(
    /// A meter dimension name: the spec allows alphanumerics and underscores.
    DimensionName,
    |s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
    "a dimension name (letters, digits and underscores)"
);

checked_string!(
    /// The spec's `Numeric`: an arbitrary-precision decimal as a string.
    Numeric,
    |s| pattern(&NUMERIC, r"^-?[0-9]+(\.[0-9]+)?$").is_match(s),
    "a decimal number written as a string, like \"0.000001\""
);

checked_string!(
    /// The spec's `ISO8601Duration`, e.g. `P1M`.
    Duration,
    |s| s.len() > 1 && crate::billing::IsoDuration::parse(s).is_some(),
    "an ISO 8601 duration like P1M"
);

static JSONPATH: OnceLock<Regex> = OnceLock::new();
static NUMERIC: OnceLock<Regex> = OnceLock::new();

/// Compiles a constant pattern once. The patterns are literals in this file
/// and covered by tests; a typo would panic on first use, never silently.
fn pattern(cell: &'static OnceLock<Regex>, re: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(re).expect("constant regex compiles"))
}

impl JsonPath {
    /// The single top-level field a `$.field` path reads, if it is that simple.
    pub fn top_level_field(&self) -> Option<&str> {
        self.0.strip_prefix("$.").filter(|f| !f.contains('.'))
    }

    pub(super) fn of_field(field: &str) -> Self {
        Self(format!("$.{field}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_patterns_accept_and_reject() {
        assert!("$.client_id".parse::<JsonPath>().is_ok());
        assert!("client_id".parse::<JsonPath>().is_err());
        assert!("0.000001".parse::<Numeric>().is_ok());
        assert!("1e-6".parse::<Numeric>().is_err());
        assert!("P1M".parse::<Duration>().is_ok());
        assert!("P".parse::<Duration>().is_err());
        assert!("monthly".parse::<Duration>().is_err());
    }
}
