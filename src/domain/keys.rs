//! OpenMeter's resource keys: the plan key and its pattern.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use thiserror::Error;

/// The plan new customers are subscribed to unless `OPENMETER_DEFAULT_PLAN_KEY`
/// names another; the built-in catalog defines it.
pub(crate) const DEFAULT_PLAN_KEY: &str = "clearinghouse_default_ppu";

/// A plan key as OpenMeter's `ResourceKey` allows: `^[a-z0-9]+(?:_[a-z0-9]+)*$`, 1..=64.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PlanKey(String);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not a valid OpenMeter key: use 1-64 of a-z, 0-9 in words joined by single underscores")]
pub struct ResourceKeyError(pub String);

impl FromStr for PlanKey {
    type Err = ResourceKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if is_resource_key(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ResourceKeyError(s.to_owned()))
        }
    }
}

impl PlanKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PlanKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks OpenMeter's `ResourceKey` pattern without a regex on the hot path.
pub(crate) fn is_resource_key(s: &str) -> bool {
    let word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (1..=64).contains(&s.len()) && s.split('_').all(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_key_follows_resource_key_pattern() {
        assert!("clearinghouse_default_ppu".parse::<PlanKey>().is_ok());
        for bad in ["", "Upper", "a__b", "_a", "a_", "a-b", &"a".repeat(65)] {
            assert!(bad.parse::<PlanKey>().is_err(), "{bad}");
        }
    }
}
