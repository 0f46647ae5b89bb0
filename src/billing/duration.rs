//! The one reader of ISO 8601 durations (the spec's `ISO8601Duration`) in
//! this crate: the catalog's publish rules weigh them, billing steps through
//! periods by them. The OpenMeter double keeps its own reading on purpose
//! (a test oracle shares no code with what it checks); `billing`'s table
//! test holds the two against each other.

use std::str::FromStr;
use std::sync::OnceLock;

use regex::Regex;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

/// The spec's `ISO8601Duration` pattern, with a group per component.
const PATTERN: &str = r"^P(?:(\d+(?:\.\d+)?)Y)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$";

static REGEX: OnceLock<Regex> = OnceLock::new();

/// An ISO 8601 duration's components as written: years, months, weeks,
/// days, hours, minutes, seconds. Never normalised: a month is not a number
/// of days, and OpenMeter adds years before months
/// (`pkg/datetime/datetime.go`, `Add`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IsoDuration(pub(crate) [Decimal; 7]);

impl IsoDuration {
    /// The components of `s`, or `None` when it is not the spec's duration
    /// or a component is too large to compute with.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let regex = REGEX.get_or_init(|| Regex::new(PATTERN).expect("constant regex compiles"));
        let captures = regex.captures(s)?;
        let mut parts = [Decimal::ZERO; 7];
        for (part, group) in parts.iter_mut().zip(captures.iter().skip(1)) {
            if let Some(m) = group {
                *part = Decimal::from_str(m.as_str()).ok()?;
            }
        }
        Some(Self(parts))
    }

    /// The components when every one is a whole number that fits a `u32`.
    pub(crate) fn whole(&self) -> Option<[u32; 7]> {
        let mut out = [0; 7];
        for (o, part) in out.iter_mut().zip(self.0) {
            if !part.fract().is_zero() {
                return None;
            }
            *o = part.to_u32()?;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_read_in_order() {
        let parts = IsoDuration::parse("P1Y2M3W4DT5H6M7.5S").expect("parses");
        let expected = ["1", "2", "3", "4", "5", "6", "7.5"].map(|s| Decimal::from_str(s).unwrap());
        assert_eq!(parts, IsoDuration(expected));
        assert!(IsoDuration::parse("1M").is_none());
        assert!(IsoDuration::parse(&format!("P{}D", "9".repeat(40))).is_none());
    }

    #[test]
    fn whole_components_are_exact_integers() {
        assert_eq!(
            IsoDuration::parse("P1Y2MT3S").and_then(|d| d.whole()),
            Some([1, 2, 0, 0, 0, 0, 3])
        );
        assert_eq!(IsoDuration::parse("P1.5M").and_then(|d| d.whole()), None);
        assert_eq!(
            IsoDuration::parse("P1.0M").and_then(|d| d.whole()),
            Some([0, 1, 0, 0, 0, 0, 0])
        );
    }
}
