//! The catalog the bootstrap creates: meters, features and one plan.
//!
//! It is plain data an operator may write as YAML or JSON. Every string the
//! API constrains (keys, JSONPaths, amounts, durations) is a newtype checked
//! while parsing, so a bad value is reported with the parser's line and
//! column; cross-references are checked afterwards by [`Catalog::validate`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::decode::BILLABLE_TYPE;
use crate::domain::{is_resource_key, PlanKey};

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
    /// Well-formed, but inconsistent (e.g. a feature naming a missing meter).
    #[error("catalog {} is inconsistent: {}", path.display(), problems.join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// Declares a string newtype validated on deserialisation, so serde reports
/// a bad value at its position in the file.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

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
    |s| s.len() > 1 && pattern(&DURATION, DURATION_PATTERN).is_match(s),
    "an ISO 8601 duration like P1M"
);

static JSONPATH: OnceLock<Regex> = OnceLock::new();
static NUMERIC: OnceLock<Regex> = OnceLock::new();
static DURATION: OnceLock<Regex> = OnceLock::new();
const DURATION_PATTERN: &str = r"^P(?:\d+(?:\.\d+)?Y)?(?:\d+(?:\.\d+)?M)?(?:\d+(?:\.\d+)?W)?(?:\d+(?:\.\d+)?D)?(?:T(?:\d+(?:\.\d+)?H)?(?:\d+(?:\.\d+)?M)?(?:\d+(?:\.\d+)?S)?)?$";

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

    fn of_field(field: &str) -> Self {
        Self(format!("$.{field}"))
    }
}

/// `MeterAggregation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Sum,
    Count,
    UniqueCount,
    Avg,
    Min,
    Max,
    Latest,
}

impl Aggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sum => "sum",
            Self::Count => "count",
            Self::UniqueCount => "unique_count",
            Self::Avg => "avg",
            Self::Min => "min",
            Self::Max => "max",
            Self::Latest => "latest",
        }
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A meter to create. Meters are immutable in OpenMeter, so this is the
/// definition an existing meter is compared against, never pushed onto it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterSpec {
    pub key: Key,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub aggregation: Aggregation,
    pub event_type: String,
    /// Required for every aggregation but `count`, which ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_property: Option<JsonPath>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimensions: BTreeMap<DimensionName, JsonPath>,
}

/// A feature, tied to a catalog meter by the meter's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub key: Key,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The key of a meter in this catalog.
    pub meter: Key,
}

/// `BillingPrice`'s type, the ones a catalog may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceType {
    Free,
    Flat,
    Unit,
}

/// `BillingPrice`: `{type, amount}`. A plain struct rather than a tagged
/// enum, so a bad amount is reported at its own line (serde buffers tagged
/// enums and loses the position); [`Catalog::validate`] checks that
/// `amount` is present exactly when the type takes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[serde(rename = "type")]
    pub kind: PriceType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Numeric>,
}

impl Price {
    /// A unit price: `amount` per unit of the feature's meter.
    pub fn unit(amount: Numeric) -> Self {
        Self {
            kind: PriceType::Unit,
            amount: Some(amount),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.kind {
            PriceType::Free => "free",
            PriceType::Flat => "flat",
            PriceType::Unit => "unit",
        }
    }

    pub fn amount(&self) -> Option<&Numeric> {
        self.amount.as_ref()
    }

    /// Why the spec would reject this price, if it would.
    fn problem(&self) -> Option<&'static str> {
        match (self.kind, &self.amount) {
            (PriceType::Free, Some(_)) => Some("a free price takes no amount"),
            (PriceType::Flat | PriceType::Unit, None) => Some("required for this price type"),
            _ => None,
        }
    }
}

/// A rate card; `feature` is a catalog feature key (sent as `{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateCardSpec {
    pub key: Key,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<Key>,
    pub price: Price,
}

/// A plan phase; only the last may omit `duration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    pub key: Key,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    pub rate_cards: Vec<RateCardSpec>,
}

/// The plan customers are subscribed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    #[serde(deserialize_with = "plan_key")]
    pub key: PlanKey,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub currency: String,
    pub billing_cadence: Duration,
    pub phases: Vec<PhaseSpec>,
}

fn plan_key<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PlanKey, D::Error> {
    let raw = String::deserialize(deserializer)?;
    raw.parse().map_err(serde::de::Error::custom)
}

/// Everything `ticketmeter bootstrap` makes sure exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub meters: Vec<MeterSpec>,
    #[serde(default)]
    pub features: Vec<FeatureSpec>,
    pub plan: PlanSpec,
}

/// The dimensions every built-in meter groups by.
const DIMENSIONS: [&str; 4] = ["client_id", "external_user_id", "model_id", "pipeline"];

impl Catalog {
    /// The catalog ticketmeter needs to bill: the meters read the fields the
    /// collector sends, the plan (keyed `plan_key`) prices billable spend at
    /// one USD micro per unit.
    pub fn builtin(plan_key: &PlanKey) -> Catalog {
        Catalog {
            meters: vec![
                builtin_meter(
                    "network_fee_usd_micros",
                    "Network fee (USD micros)",
                    Aggregation::Sum,
                ),
                builtin_meter(
                    "billable_usd_micros",
                    "Billable amount (USD micros)",
                    Aggregation::Sum,
                ),
                builtin_meter("signed_ticket_count", "Signed tickets", Aggregation::Count),
            ],
            features: vec![
                builtin_feature("network_spend", "Network spend", "network_fee_usd_micros"),
                builtin_feature("billable_spend", "Billable spend", "billable_usd_micros"),
            ],
            plan: builtin_plan(plan_key),
        }
    }

    /// Reads a catalog: `.json` files with the JSON parser, anything else
    /// with the YAML parser (which reads JSON too), then [`Self::validate`]s it.
    pub fn from_file(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.to_owned(),
            source,
        })?;
        let catalog = if is_json(path) {
            Self::parse_json(&text)
        } else {
            Self::parse_yaml(&text)
        }
        .map_err(|(message, line, column)| CatalogError::Parse {
            path: path.to_owned(),
            message,
            line,
            column,
        })?;
        catalog
            .validate()
            .map_err(|problems| CatalogError::Invalid {
                path: path.to_owned(),
                problems,
            })?;
        Ok(catalog)
    }

    fn parse_json(text: &str) -> Result<Catalog, (String, Option<usize>, Option<usize>)> {
        serde_json::from_str(text).map_err(|e| (e.to_string(), Some(e.line()), Some(e.column())))
    }

    fn parse_yaml(text: &str) -> Result<Catalog, (String, Option<usize>, Option<usize>)> {
        serde_yaml::from_str(text).map_err(|e| {
            let location = e.location();
            (
                e.to_string(),
                location.as_ref().map(|l| l.line()),
                location.as_ref().map(|l| l.column()),
            )
        })
    }

    /// The plan's key (the one `OPENMETER_DEFAULT_PLAN_KEY` should name).
    pub fn plan_key(&self) -> &PlanKey {
        &self.plan.key
    }

    /// Checks what a parser cannot: unique keys, references that resolve,
    /// `value_property` present exactly when the aggregation uses it, and a
    /// plan the API will accept. Each problem names its field.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        self.validate_meters(&mut problems);
        self.validate_features(&mut problems);
        self.validate_plan(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn validate_meters(&self, problems: &mut Vec<String>) {
        duplicates("meters", self.meters.iter().map(|m| &m.key), problems);
        for (i, m) in self.meters.iter().enumerate() {
            let needs_value = m.aggregation != Aggregation::Count;
            match (&m.value_property, needs_value) {
                (None, true) => problems.push(format!(
                    "meters[{i}].value_property: required for aggregation {}",
                    m.aggregation
                )),
                (Some(_), false) => problems.push(format!(
                    "meters[{i}].value_property: a count meter ignores it; remove it"
                )),
                _ => {}
            }
            non_empty(&format!("meters[{i}].name"), &m.name, problems);
            non_empty(&format!("meters[{i}].event_type"), &m.event_type, problems);
        }
    }

    fn validate_features(&self, problems: &mut Vec<String>) {
        duplicates("features", self.features.iter().map(|f| &f.key), problems);
        let meters: BTreeSet<&Key> = self.meters.iter().map(|m| &m.key).collect();
        for (i, f) in self.features.iter().enumerate() {
            if !meters.contains(&f.meter) {
                problems.push(format!(
                    "features[{i}].meter: no meter {:?} in the catalog",
                    f.meter.as_str()
                ));
            }
            non_empty(&format!("features[{i}].name"), &f.name, problems);
        }
    }

    fn validate_plan(&self, problems: &mut Vec<String>) {
        let plan = &self.plan;
        non_empty("plan.name", &plan.name, problems);
        non_empty("plan.currency", &plan.currency, problems);
        if plan.phases.is_empty() {
            problems.push("plan.phases: at least one phase is required".into());
        }
        duplicates("plan.phases", plan.phases.iter().map(|p| &p.key), problems);
        let features: BTreeSet<&Key> = self.features.iter().map(|f| &f.key).collect();
        let last = plan.phases.len().saturating_sub(1);
        for (i, phase) in plan.phases.iter().enumerate() {
            let at = format!("plan.phases[{i}]");
            non_empty(&format!("{at}.name"), &phase.name, problems);
            if i < last && phase.duration.is_none() {
                problems.push(format!("{at}.duration: only the last phase may omit it"));
            }
            let cards = phase.rate_cards.iter().map(|c| &c.key);
            duplicates(&format!("{at}.rate_cards"), cards, problems);
            for (j, card) in phase.rate_cards.iter().enumerate() {
                let at = format!("{at}.rate_cards[{j}]");
                non_empty(&format!("{at}.name"), &card.name, problems);
                if let Some(problem) = card.price.problem() {
                    problems.push(format!("{at}.price.amount: {problem}"));
                }
                if let Some(feature) = card.feature.as_ref().filter(|f| !features.contains(f)) {
                    problems.push(format!(
                        "{at}.feature: no feature {:?} in the catalog",
                        feature.as_str()
                    ));
                }
            }
        }
    }
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

fn non_empty(field: &str, value: &str, problems: &mut Vec<String>) {
    if value.trim().is_empty() {
        problems.push(format!("{field}: must not be empty"));
    }
}

fn duplicates<'a>(field: &str, keys: impl Iterator<Item = &'a Key>, problems: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    for key in keys {
        if !seen.insert(key) {
            problems.push(format!("{field}: key {:?} appears twice", key.as_str()));
        }
    }
}

fn key(s: &str) -> Key {
    Key(s.to_owned())
}

fn builtin_meter(k: &str, name: &str, aggregation: Aggregation) -> MeterSpec {
    MeterSpec {
        key: key(k),
        name: name.to_owned(),
        description: None,
        aggregation,
        event_type: BILLABLE_TYPE.to_owned(),
        value_property: (aggregation != Aggregation::Count).then(|| JsonPath::of_field(k)),
        dimensions: DIMENSIONS
            .iter()
            .map(|d| (DimensionName((*d).to_owned()), JsonPath::of_field(d)))
            .collect(),
    }
}

fn builtin_feature(k: &str, name: &str, meter: &str) -> FeatureSpec {
    FeatureSpec {
        key: key(k),
        name: name.to_owned(),
        description: None,
        meter: key(meter),
    }
}

fn builtin_plan(plan_key: &PlanKey) -> PlanSpec {
    PlanSpec {
        key: plan_key.clone(),
        name: "Clearinghouse pay per use".to_owned(),
        description: None,
        currency: "USD".to_owned(),
        billing_cadence: Duration("P1M".to_owned()),
        phases: vec![PhaseSpec {
            key: key("default"),
            name: "Default".to_owned(),
            duration: None,
            rate_cards: vec![RateCardSpec {
                key: key("billable_spend"),
                name: "Billable spend".to_owned(),
                feature: Some(key("billable_spend")),
                price: Price::unit(Numeric("0.000001".to_owned())),
            }],
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_key() -> PlanKey {
        "clearinghouse_default_ppu".parse().expect("valid key")
    }

    #[test]
    fn builtin_catalog_is_valid() {
        assert_eq!(Catalog::builtin(&default_key()).validate(), Ok(()));
    }

    #[test]
    fn builtin_catalog_round_trips_through_yaml() {
        let catalog = Catalog::builtin(&default_key());
        let yaml = serde_yaml::to_string(&catalog).expect("serialises");
        let back: Catalog = serde_yaml::from_str(&yaml).expect("parses");
        assert_eq!(back, catalog);
    }

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

    #[test]
    fn unknown_price_field_is_rejected() {
        let r: Result<Price, _> = serde_json::from_str(r#"{"type":"unit","amount":"1","x":1}"#);
        assert!(r.is_err());
    }

    #[test]
    fn unit_price_without_amount_is_inconsistent() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.plan.phases[0].rate_cards[0].price.amount = None;
        let problems = catalog.validate().expect_err("inconsistent");
        assert!(
            problems[0].ends_with("price.amount: required for this price type"),
            "{problems:?}"
        );
    }

    #[test]
    fn count_meter_with_value_property_is_inconsistent() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.meters[2].value_property = Some(JsonPath::of_field("pixels"));
        let problems = catalog.validate().expect_err("inconsistent");
        assert!(
            problems[0].starts_with("meters[2].value_property"),
            "{problems:?}"
        );
    }

    #[test]
    fn feature_naming_a_missing_meter_is_inconsistent() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.features[0].meter = key("nope");
        let problems = catalog.validate().expect_err("inconsistent");
        assert!(problems[0].starts_with("features[0].meter"), "{problems:?}");
    }
}
