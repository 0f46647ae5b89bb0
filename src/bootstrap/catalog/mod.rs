//! The catalog the bootstrap creates: meters, features and plans.
//!
//! It is plain data an operator may write as YAML or JSON, and upstream's
//! `catalog.json` (livepeer/clearinghouse `openmeter-collector/provision/
//! catalog.json`) is read as it is: `$` keys annotate ([`super::annotations`]),
//! `meter_key` and `feature_key` are the names it gives a feature's meter and
//! a rate card's feature, and `plans` lists plans chosen by `subscribe_role`
//! ([`super::plan_meta`]). Every string the
//! API constrains (keys, JSONPaths, amounts, durations) is a newtype checked
//! while parsing, so a bad value is reported with the parser's line and
//! column; cross-references, and what OpenMeter refuses when it publishes a
//! plan, are checked afterwards by [`Catalog::validate`], whose problems a
//! file's catalog reports at their lines too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use super::annotations::SkipAnnotations;
use super::cadence;
use super::lines::Lines;
use super::plan_meta::{self, SettlementMode, SubscribeRole};
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
    pub(super) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
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
    pub(super) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
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
pub(super) fn joined(problems: &[Problem]) -> String {
    let shown: Vec<String> = problems.iter().map(Problem::to_string).collect();
    shown.join("; ")
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
    |s| s.len() > 1 && cadence::Parts::parse(s).is_some(),
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
    /// The key of a meter in this catalog (`meter_key` upstream).
    #[serde(alias = "meter_key")]
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

    /// A price per unit of usage (OpenMeter's usage-based rate card), as
    /// opposed to a flat fee or nothing.
    pub fn is_usage(&self) -> bool {
        self.kind == PriceType::Unit
    }

    /// Whether anything is charged (OpenMeter reads `free` as no price).
    fn is_billable(&self) -> bool {
        self.kind != PriceType::Free
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

/// `BillingRateCardDiscounts`, the part a catalog may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discounts {
    /// Units of usage free in each billing period before the price applies
    /// (upstream's included allowance: "5000000" USD micros is $5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Numeric>,
}

/// A rate card; `feature` is a catalog feature key (sent as `{id}`), which
/// OpenMeter requires to equal the card's own key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateCardSpec {
    pub key: Key,
    pub name: String,
    /// `feature_key` upstream.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "feature_key"
    )]
    pub feature: Option<Key>,
    /// How often the card is billed; see [`Self::billing_cadence`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_cadence: Option<Duration>,
    pub price: Price,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discounts: Option<Discounts>,
}

impl RateCardSpec {
    /// The cadence sent to OpenMeter. A usage price is billed every period:
    /// the card's own cadence, else the plan's (OpenMeter creates a usage
    /// rate card without one but refuses to publish it). A flat or free
    /// price without one is charged once.
    pub fn billing_cadence<'a>(&'a self, plan: &'a PlanSpec) -> Option<&'a Duration> {
        match &self.billing_cadence {
            Some(own) => Some(own),
            None if self.price.is_usage() => Some(&plan.billing_cadence),
            None => None,
        }
    }

    /// The free units of its usage discount, if it has one.
    pub fn usage_discount(&self) -> Option<&Numeric> {
        self.discounts.as_ref().and_then(|d| d.usage.as_ref())
    }
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

/// A plan customers are subscribed to. `subscribe_role`,
/// `settlement_mode` and `metadata` are upstream's; what becomes of them
/// is in [`super::plan_meta`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    #[serde(deserialize_with = "plan_key")]
    pub key: PlanKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe_role: Option<SubscribeRole>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub currency: String,
    pub billing_cadence: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_mode: Option<SettlementMode>,
    /// Sent as the plan's `labels` (the v3 name, also accepted here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", alias = "labels")]
    pub metadata: BTreeMap<String, String>,
    pub phases: Vec<PhaseSpec>,
}

impl PlanSpec {
    /// The mode OpenMeter settles this plan's subscriptions with.
    pub fn effective_settlement_mode(&self) -> SettlementMode {
        self.settlement_mode
            .unwrap_or(SettlementMode::SERVER_DEFAULT)
    }
}

fn plan_key<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PlanKey, D::Error> {
    let raw = String::deserialize(deserializer)?;
    raw.parse().map_err(serde::de::Error::custom)
}

/// Everything `ticketmeter bootstrap` makes sure exists.
///
/// A file writes one `plan`, or a `plans` list; `plan` is the default plan
/// either way (see [`Catalog::plan_key`]), and a list's other plans are
/// kept in the order written, so a problem names the field as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "CatalogFile", into = "CatalogFile")]
pub struct Catalog {
    pub meters: Vec<MeterSpec>,
    pub features: Vec<FeatureSpec>,
    /// The default plan: the single `plan`, or of `plans` the `m2m` one
    /// (else the first without a role, else the first).
    pub plan: PlanSpec,
    /// A `plans` list's other plans, in the order written.
    other_plans: Vec<PlanSpec>,
    /// Where `plan` stands in a `plans` list; `None` for a single `plan`.
    default_at: Option<usize>,
    /// Where each field is written, for a catalog read from a file.
    lines: Option<Arc<Lines>>,
}

/// The same meters, features and plans, however they were read.
impl PartialEq for Catalog {
    fn eq(&self, other: &Self) -> bool {
        self.meters == other.meters
            && self.features == other.features
            && self.plan == other.plan
            && self.other_plans == other.other_plans
            && self.default_at == other.default_at
    }
}

impl Eq for Catalog {}

/// A catalog as written: one `plan` or a `plans` list.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    meters: Vec<MeterSpec>,
    #[serde(default)]
    features: Vec<FeatureSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plan: Option<PlanSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plans: Option<Vec<PlanSpec>>,
}

impl TryFrom<CatalogFile> for Catalog {
    type Error = Problem;

    /// Exactly one of `plan` and `plans`, and a list is not empty.
    fn try_from(file: CatalogFile) -> Result<Self, Problem> {
        let (plans, default_at) = match (file.plan, file.plans) {
            (Some(_), Some(_)) => {
                return Err(Problem::new(
                    "plans",
                    "a catalog has one `plan` or a `plans` list, not both",
                ))
            }
            (None, None) => {
                return Err(Problem::new(
                    "plans",
                    "missing: a catalog needs a `plans` list or a single `plan`",
                ))
            }
            (None, Some(plans)) if plans.is_empty() => {
                return Err(Problem::new("plans", "at least one plan is required"))
            }
            (Some(plan), None) => (vec![plan], None),
            (None, Some(plans)) => {
                let at = plan_meta::default_index(&plans);
                (plans, Some(at))
            }
        };
        let mut others = plans;
        let plan = others.remove(default_at.unwrap_or(0));
        Ok(Catalog {
            meters: file.meters,
            features: file.features,
            plan,
            other_plans: others,
            default_at,
            lines: None,
        })
    }
}

impl From<Catalog> for CatalogFile {
    fn from(catalog: Catalog) -> Self {
        let single = catalog.default_at.is_none();
        let mut plans: Vec<PlanSpec> = catalog.plans().cloned().collect();
        CatalogFile {
            meters: catalog.meters,
            features: catalog.features,
            plan: single.then(|| plans.remove(0)),
            plans: (!single).then_some(plans),
        }
    }
}

/// The dimensions every built-in meter groups by.
const DIMENSIONS: [&str; 4] = ["client_id", "external_user_id", "model_id", "pipeline"];

/// The analytics meters' further dimension.
const MANIFEST: &str = "manifest_id";

impl Catalog {
    /// The catalog ticketmeter needs to bill: upstream's meters (the three
    /// billing ones, and three analytics ones by manifest), all reading
    /// fields the collector sends; the plan (keyed `plan_key`) prices
    /// billable spend at one USD micro per unit.
    pub fn builtin(plan_key: &PlanKey) -> Catalog {
        let sum = Aggregation::Sum;
        Catalog {
            meters: vec![
                builtin_meter("network_fee_usd_micros", "Network fee (USD micros)", sum),
                builtin_meter("billable_usd_micros", "Billable amount (USD micros)", sum),
                builtin_meter("signed_ticket_count", "Signed tickets", Aggregation::Count),
                by_manifest(builtin_meter("fee_wei", "Fee (wei)", sum)),
                by_manifest(builtin_meter("billable_secs", "Billable seconds", sum)),
                by_manifest(MeterSpec {
                    key: key("network_fee_usd_micros_by_manifest"),
                    name: "Network fee by manifest (USD micros)".to_owned(),
                    ..builtin_meter("network_fee_usd_micros", "", sum)
                }),
            ],
            features: vec![
                builtin_feature("network_spend", "Network spend", "network_fee_usd_micros"),
                builtin_feature("billable_spend", "Billable spend", "billable_usd_micros"),
            ],
            plan: builtin_plan(plan_key),
            other_plans: Vec::new(),
            default_at: None,
            lines: None,
        }
    }

    /// Reads a catalog: `.json` files with the JSON parser, anything else
    /// with the YAML parser (which reads JSON too), then [`Self::validate`]s it.
    pub fn from_file(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file = if is_json(path) {
            parse_json(&text)
        } else {
            parse_yaml(&text)
        }
        .map_err(|(message, line, column)| CatalogError::Parse {
            path: path.to_owned(),
            message,
            line,
            column,
        })?;
        let lines = Arc::new(Lines::of(&text));
        let invalid = |mut problems: Vec<Problem>| {
            for problem in &mut problems {
                problem.line = lines.line(&problem.field);
            }
            CatalogError::Invalid {
                path: path.to_owned(),
                problems,
            }
        };
        let mut catalog = Catalog::try_from(file).map_err(|p| invalid(vec![p]))?;
        catalog.validate().map_err(invalid)?;
        catalog.lines = Some(lines);
        Ok(catalog)
    }

    /// The default plan's key: the plan every customer without a role of
    /// its own is subscribed to (the one `OPENMETER_DEFAULT_PLAN_KEY`
    /// should name).
    pub fn plan_key(&self) -> &PlanKey {
        &self.plan.key
    }

    /// The key of the plan written for `role`, if one is. A customer of a
    /// role no plan names gets the default plan ([`Self::plan_key`]).
    pub fn plan_for(&self, role: SubscribeRole) -> Option<&PlanKey> {
        self.plans()
            .find(|p| p.subscribe_role == Some(role))
            .map(|p| &p.key)
    }

    /// Every plan, in the order written.
    pub fn plans(&self) -> impl Iterator<Item = &PlanSpec> {
        self.plans_written().into_iter().map(|(_, p)| p)
    }

    /// Every plan with the field it is written as (`plan`, `plans[1]`), in
    /// the order written.
    pub(super) fn plans_written(&self) -> Vec<(String, &PlanSpec)> {
        let Some(at) = self.default_at else {
            return vec![("plan".to_owned(), &self.plan)];
        };
        let mut plans: Vec<&PlanSpec> = self.other_plans.iter().collect();
        plans.insert(at.min(plans.len()), &self.plan);
        plans
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("plans[{i}]"), p))
            .collect()
    }

    /// What of the catalog is not sent to OpenMeter, and why, each at its
    /// line when read from a file (see [`super::plan_meta`]).
    pub fn notices(&self) -> Vec<Notice> {
        let mut notices: Vec<Notice> = self
            .plans_written()
            .iter()
            .flat_map(|(at, plan)| plan_meta::notices(at, plan))
            .collect();
        if let Some(lines) = &self.lines {
            for notice in &mut notices {
                notice.line = lines.line(&notice.field);
            }
        }
        notices
    }

    /// Checks what a parser cannot: unique keys, references that resolve,
    /// `value_property` present exactly when the aggregation uses it, and
    /// plans OpenMeter will create and publish and bill as written. Each
    /// problem names its field.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        self.validate_meters(&mut problems);
        self.validate_features(&mut problems);
        self.validate_plans(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn validate_meters(&self, problems: &mut Vec<Problem>) {
        duplicates("meters", self.meters.iter().map(|m| &m.key), problems);
        for (i, m) in self.meters.iter().enumerate() {
            let field = format!("meters[{i}].value_property");
            let needs_value = m.aggregation != Aggregation::Count;
            match (&m.value_property, needs_value) {
                (None, true) => problems.push(Problem::new(
                    field,
                    format!("required for aggregation {}", m.aggregation),
                )),
                (Some(_), false) => {
                    problems.push(Problem::new(field, "a count meter ignores it; remove it"))
                }
                _ => {}
            }
            non_empty(&format!("meters[{i}].name"), &m.name, problems);
            non_empty(&format!("meters[{i}].event_type"), &m.event_type, problems);
        }
    }

    fn validate_features(&self, problems: &mut Vec<Problem>) {
        duplicates("features", self.features.iter().map(|f| &f.key), problems);
        let meters: BTreeSet<&Key> = self.meters.iter().map(|m| &m.key).collect();
        for (i, f) in self.features.iter().enumerate() {
            if !meters.contains(&f.meter) {
                problems.push(Problem::new(
                    format!("features[{i}].meter"),
                    format!("no meter {:?} in the catalog", f.meter.as_str()),
                ));
            }
            non_empty(&format!("features[{i}].name"), &f.name, problems);
        }
    }

    /// Each plan, then what spans plans: a key or a role used twice.
    fn validate_plans(&self, problems: &mut Vec<Problem>) {
        let plans = self.plans_written();
        let mut seen = BTreeSet::new();
        for (at, plan) in &plans {
            if !seen.insert(plan.key.as_str()) {
                problems.push(Problem::new(
                    format!("{at}.key"),
                    format!("{:?} appears twice", plan.key.as_str()),
                ));
            }
            self.validate_plan(at, plan, problems);
        }
        plan_meta::role_problems(&plans, problems);
    }

    fn validate_plan(&self, at: &str, plan: &PlanSpec, problems: &mut Vec<Problem>) {
        non_empty(&format!("{at}.name"), &plan.name, problems);
        non_empty(&format!("{at}.currency"), &plan.currency, problems);
        if !PLAN_CADENCES.contains(&plan.billing_cadence.as_str()) {
            problems.push(Problem::new(
                format!("{at}.billing_cadence"),
                format!(
                    "OpenMeter accepts only {} for a plan",
                    PLAN_CADENCES.join(", ")
                ),
            ));
        }
        plan_meta::problems(at, plan, problems);
        if plan.phases.is_empty() {
            problems.push(Problem::new(
                format!("{at}.phases"),
                "at least one phase is required",
            ));
        }
        let phases = format!("{at}.phases");
        duplicates(&phases, plan.phases.iter().map(|p| &p.key), problems);
        let last = plan.phases.len().saturating_sub(1);
        for (i, phase) in plan.phases.iter().enumerate() {
            let at = format!("{phases}[{i}]");
            non_empty(&format!("{at}.name"), &phase.name, problems);
            match (&phase.duration, i < last) {
                (None, true) => problems.push(Problem::new(
                    format!("{at}.duration"),
                    "only the last phase may omit it",
                )),
                (Some(_), false) => problems.push(Problem::new(
                    format!("{at}.duration"),
                    "the last phase lasts as long as the subscription: OpenMeter refuses to \
                     publish a plan whose last phase has a duration",
                )),
                _ => {}
            }
            let at = format!("{at}.rate_cards");
            duplicates(&at, phase.rate_cards.iter().map(|c| &c.key), problems);
            for (j, card) in phase.rate_cards.iter().enumerate() {
                self.validate_rate_card(&format!("{at}[{j}]"), plan, card, problems);
            }
        }
    }

    /// The spec's rules, then what OpenMeter checks on create and publish
    /// (`productcatalog/ratecard.go`, `plan/service/plan.go`): a card's key
    /// equals its feature's, a usage price has a feature, and a cadence is
    /// an hour or more and fits the plan's.
    fn validate_rate_card(
        &self,
        at: &str,
        plan: &PlanSpec,
        card: &RateCardSpec,
        problems: &mut Vec<Problem>,
    ) {
        non_empty(&format!("{at}.name"), &card.name, problems);
        if let Some(problem) = card.price.problem() {
            problems.push(Problem::new(format!("{at}.price.amount"), problem));
        }
        match &card.feature {
            Some(feature) if !self.features.iter().any(|f| &f.key == feature) => {
                problems.push(Problem::new(
                    format!("{at}.feature"),
                    format!("no feature {:?} in the catalog", feature.as_str()),
                ));
            }
            Some(feature) if feature != &card.key => problems.push(Problem::new(
                format!("{at}.key"),
                format!(
                    "{:?} is not its feature's key {:?}: OpenMeter requires a rate card's key \
                     to equal its feature's key",
                    card.key.as_str(),
                    feature.as_str()
                ),
            )),
            None if card.price.is_usage() => problems.push(Problem::new(
                format!("{at}.feature"),
                "a usage price needs a feature to meter: OpenMeter refuses to publish a \
                 usage-priced rate card without one",
            )),
            _ => {}
        }
        if let Some(cadence) = &card.billing_cadence {
            let field = format!("{at}.billing_cadence");
            validate_card_cadence(&field, plan, card, cadence, problems);
        }
        if let Some(usage) = card.usage_discount() {
            validate_usage_discount(&format!("{at}.discounts.usage"), card, usage, problems);
        }
    }
}

fn validate_card_cadence(
    field: &str,
    plan: &PlanSpec,
    card: &RateCardSpec,
    cadence: &Duration,
    problems: &mut Vec<Problem>,
) {
    let plan = &plan.billing_cadence;
    if !cadence.at_least_an_hour() {
        problems.push(Problem::new(
            field,
            format!("{cadence} is shorter than an hour: OpenMeter refuses to publish it"),
        ));
    } else if card.price.is_billable() && !cadence.aligns_with(plan) {
        problems.push(Problem::new(
            field,
            format!(
                "{cadence} and the plan's {plan} do not divide one into the other in every \
                 month: OpenMeter refuses to publish it"
            ),
        ));
    }
}

/// What OpenMeter refuses to publish of a usage discount
/// (`productcatalog/discount.go`, `UsageDiscount.ValidateForPrice`, and
/// `productcatalog/ratecard.go`): free units of a price that is not per
/// unit of usage, or a negative number of them.
fn validate_usage_discount(
    field: &str,
    card: &RateCardSpec,
    usage: &Numeric,
    problems: &mut Vec<Problem>,
) {
    if !card.price.is_usage() {
        problems.push(Problem::new(
            field,
            format!(
                "free units need a price per unit of usage, not {}: OpenMeter refuses to \
                 publish a usage discount on a flat price",
                card.price.kind()
            ),
        ));
    } else if usage.as_str().starts_with('-') {
        problems.push(Problem::new(
            field,
            "a number of free units is not negative: OpenMeter refuses to publish it",
        ));
    }
}

/// The plan cadences OpenMeter accepts (`ErrPlanBillingCadenceAllowedValues`
/// in openmeterio/openmeter `productcatalog/errors.go`).
const PLAN_CADENCES: [&str; 8] = ["P1W", "P2W", "P4W", "P1M", "P3M", "P6M", "P12M", "P1Y"];

/// A parse failure: the parser's message, line and column.
type ParseFailure = (String, Option<usize>, Option<usize>);

fn parse_json(text: &str) -> Result<CatalogFile, ParseFailure> {
    let at = |e: serde_json::Error| (e.to_string(), Some(e.line()), Some(e.column()));
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let file = CatalogFile::deserialize(SkipAnnotations(&mut deserializer)).map_err(at)?;
    deserializer.end().map_err(at)?;
    Ok(file)
}

fn parse_yaml(text: &str) -> Result<CatalogFile, ParseFailure> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    CatalogFile::deserialize(SkipAnnotations(deserializer)).map_err(|e| {
        let location = e.location();
        (
            e.to_string(),
            location.as_ref().map(|l| l.line()),
            location.as_ref().map(|l| l.column()),
        )
    })
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

fn non_empty(field: &str, value: &str, problems: &mut Vec<Problem>) {
    if value.trim().is_empty() {
        problems.push(Problem::new(field, "must not be empty"));
    }
}

/// Reports each repeated key at its second occurrence.
fn duplicates<'a>(field: &str, keys: impl Iterator<Item = &'a Key>, problems: &mut Vec<Problem>) {
    let mut seen = BTreeSet::new();
    for (i, key) in keys.enumerate() {
        if !seen.insert(key) {
            problems.push(Problem::new(
                format!("{field}[{i}].key"),
                format!("{:?} appears twice", key.as_str()),
            ));
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

/// `meter` grouped by manifest too, as upstream's analytics meters are.
fn by_manifest(mut meter: MeterSpec) -> MeterSpec {
    meter.dimensions.insert(
        DimensionName(MANIFEST.to_owned()),
        JsonPath::of_field(MANIFEST),
    );
    meter
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
        subscribe_role: None,
        name: "Clearinghouse pay per use".to_owned(),
        description: None,
        currency: "USD".to_owned(),
        billing_cadence: Duration("P1M".to_owned()),
        settlement_mode: None,
        metadata: BTreeMap::new(),
        phases: vec![PhaseSpec {
            key: key("default"),
            name: "Default".to_owned(),
            duration: None,
            rate_cards: vec![RateCardSpec {
                key: key("billable_spend"),
                name: "Billable spend".to_owned(),
                feature: Some(key("billable_spend")),
                billing_cadence: None,
                price: Price::unit(Numeric("0.000001".to_owned())),
                discounts: None,
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
            problems[0]
                .to_string()
                .ends_with("price.amount: required for this price type"),
            "{problems:?}"
        );
    }

    #[test]
    fn count_meter_with_value_property_is_inconsistent() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.meters[2].value_property = Some(JsonPath::of_field("pixels"));
        let problems = catalog.validate().expect_err("inconsistent");
        assert_eq!(problems[0].field, "meters[2].value_property");
    }

    #[test]
    fn feature_naming_a_missing_meter_is_inconsistent() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.features[0].meter = key("nope");
        let problems = catalog.validate().expect_err("inconsistent");
        assert_eq!(problems[0].field, "features[0].meter");
    }

    fn card(catalog: &mut Catalog) -> &mut RateCardSpec {
        &mut catalog.plan.phases[0].rate_cards[0]
    }

    fn problem_fields(catalog: &Catalog) -> Vec<String> {
        match catalog.validate() {
            Ok(()) => Vec::new(),
            Err(problems) => problems.into_iter().map(|p| p.field).collect(),
        }
    }

    #[test]
    fn a_rate_card_key_other_than_its_features_key_is_refused() {
        let mut catalog = Catalog::builtin(&default_key());
        card(&mut catalog).key = key("billable");
        let problems = catalog.validate().expect_err("refused");
        assert_eq!(problems[0].field, "plan.phases[0].rate_cards[0].key");
        assert!(
            problems[0].message.contains("\"billable_spend\""),
            "{problems:?}"
        );
    }

    #[test]
    fn a_usage_price_without_a_feature_is_refused() {
        let mut catalog = Catalog::builtin(&default_key());
        card(&mut catalog).feature = None;
        assert_eq!(
            problem_fields(&catalog),
            ["plan.phases[0].rate_cards[0].feature"]
        );
    }

    #[test]
    fn a_flat_price_needs_no_feature() {
        let mut catalog = Catalog::builtin(&default_key());
        let flat = card(&mut catalog);
        flat.feature = None;
        flat.price.kind = PriceType::Flat;
        assert_eq!(catalog.validate(), Ok(()));
    }

    #[test]
    fn a_usage_rate_card_is_billed_at_the_plans_cadence_unless_it_has_its_own() {
        let mut catalog = Catalog::builtin(&default_key());
        let plan = catalog.plan.clone();
        let usage = &plan.phases[0].rate_cards[0];
        assert_eq!(
            usage.billing_cadence(&plan).map(Duration::as_str),
            Some("P1M")
        );

        card(&mut catalog).billing_cadence = "P1D".parse().ok();
        let plan = catalog.plan.clone();
        let own = &plan.phases[0].rate_cards[0];
        assert_eq!(
            own.billing_cadence(&plan).map(Duration::as_str),
            Some("P1D")
        );
    }

    #[test]
    fn a_flat_rate_card_without_a_cadence_is_charged_once() {
        let mut catalog = Catalog::builtin(&default_key());
        card(&mut catalog).price.kind = PriceType::Flat;
        let plan = &catalog.plan;
        assert_eq!(plan.phases[0].rate_cards[0].billing_cadence(plan), None);
    }

    #[test]
    fn a_rate_card_cadence_under_an_hour_is_refused() {
        let mut catalog = Catalog::builtin(&default_key());
        card(&mut catalog).billing_cadence = "PT0S".parse().ok();
        assert_eq!(
            problem_fields(&catalog),
            ["plan.phases[0].rate_cards[0].billing_cadence"]
        );
    }

    #[test]
    fn a_rate_card_cadence_that_does_not_fit_the_plans_is_refused() {
        let mut catalog = Catalog::builtin(&default_key());
        card(&mut catalog).billing_cadence = "P1W".parse().ok();
        let problems = catalog.validate().expect_err("refused");
        assert!(problems[0].message.contains("P1W"), "{problems:?}");
    }

    #[test]
    fn a_plan_cadence_openmeter_does_not_offer_is_refused() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.plan.billing_cadence = "P1D".parse().expect("valid duration");
        assert_eq!(problem_fields(&catalog), ["plan.billing_cadence"]);
    }

    #[test]
    fn a_last_phase_with_a_duration_is_refused() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.plan.phases[0].duration = "P1M".parse().ok();
        assert_eq!(problem_fields(&catalog), ["plan.phases[0].duration"]);
    }

    /// A catalog of the built-in meters and features with `plans` as given.
    fn with_plans(plans: serde_json::Value) -> Result<Catalog, serde_json::Error> {
        let builtin = serde_json::to_value(Catalog::builtin(&default_key()))?;
        serde_json::from_value(serde_json::json!({
            "meters": builtin["meters"], "features": builtin["features"], "plans": plans
        }))
    }

    /// The built-in plan as JSON, keyed `key`, with `role` if any.
    fn plan_json(key: &str, role: Option<&str>) -> serde_json::Value {
        let mut plan = serde_json::to_value(builtin_plan(&key.parse().expect("valid key")))
            .expect("serialises");
        if let Some(role) = role {
            plan["subscribe_role"] = role.into();
        }
        plan
    }

    #[test]
    fn the_default_plan_of_a_list_is_its_m2m_plan() {
        let catalog = with_plans(serde_json::json!([
            plan_json("owner_plan", Some("owner")),
            plan_json("other", None),
            plan_json("m2m_plan", Some("m2m")),
        ]))
        .expect("reads");
        assert_eq!(catalog.plan_key().as_str(), "m2m_plan");
        let keys: Vec<&str> = catalog.plans().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["owner_plan", "other", "m2m_plan"]);
        assert_eq!(problem_fields(&catalog), Vec::<String>::new());
    }

    #[test]
    fn without_an_m2m_plan_the_default_is_the_first_plan_without_a_role() {
        let catalog = with_plans(serde_json::json!([
            plan_json("owner_plan", Some("owner")),
            plan_json("general", None),
        ]))
        .expect("reads");
        assert_eq!(catalog.plan_key().as_str(), "general");
        assert_eq!(catalog.plan_for(SubscribeRole::M2m), None);
    }

    #[test]
    fn a_plans_list_is_written_back_as_a_list_in_its_order() {
        let catalog = with_plans(serde_json::json!([
            plan_json("owner_plan", Some("owner")),
            plan_json("m2m_plan", Some("m2m")),
        ]))
        .expect("reads");
        let written = serde_json::to_value(&catalog).expect("serialises");
        assert_eq!(written["plans"][0]["key"], "owner_plan");
        assert!(written.get("plan").is_none());
        let back: Catalog = serde_json::from_value(written).expect("reads back");
        assert_eq!(back, catalog);
    }

    #[test]
    fn a_single_plan_and_a_plans_list_together_are_refused() {
        let mut both = serde_json::to_value(Catalog::builtin(&default_key())).expect("json");
        both["plans"] = serde_json::json!([plan_json("other", None)]);
        let err = serde_json::from_value::<Catalog>(both).expect_err("refused");
        assert!(err.to_string().contains("not both"), "{err}");
    }

    #[test]
    fn an_empty_plans_list_is_refused() {
        let err = with_plans(serde_json::json!([])).expect_err("refused");
        assert!(err.to_string().contains("at least one plan"), "{err}");
    }

    #[test]
    fn a_plan_key_listed_twice_is_reported_where_it_repeats() {
        let catalog = with_plans(serde_json::json!([
            plan_json("same", Some("owner")),
            plan_json("same", None),
        ]))
        .expect("reads");
        assert_eq!(problem_fields(&catalog), ["plans[1].key"]);
    }

    #[test]
    fn a_role_named_by_two_plans_is_reported_at_the_second() {
        let catalog = with_plans(serde_json::json!([
            plan_json("a", Some("m2m")),
            plan_json("b", Some("m2m")),
        ]))
        .expect("reads");
        assert_eq!(problem_fields(&catalog), ["plans[1].subscribe_role"]);
    }

    #[test]
    fn a_credit_only_plan_is_refused_and_credit_then_invoice_is_a_notice() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.plan.settlement_mode = Some(SettlementMode::CreditOnly);
        assert_eq!(problem_fields(&catalog), ["plan.settlement_mode"]);

        catalog.plan.settlement_mode = Some(SettlementMode::CreditThenInvoice);
        assert_eq!(catalog.validate(), Ok(()));
        let notices = catalog.notices();
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert_eq!(notices[0].field, "plan.settlement_mode");
    }

    #[test]
    fn metadata_openmeter_refuses_as_a_label_is_a_notice_and_not_sent() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.plan.metadata = BTreeMap::from([
            ("plan_kind".to_owned(), "owner_starter".to_owned()),
            ("kong_zone".to_owned(), "eu".to_owned()),
        ]);
        assert_eq!(catalog.validate(), Ok(()));
        let sent: Vec<&str> = plan_meta::labels(&catalog.plan).into_keys().collect();
        assert_eq!(sent, ["plan_kind"]);
        let notices = catalog.notices();
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert_eq!(notices[0].field, "plan.metadata.kong_zone");
    }

    #[test]
    fn a_usage_discount_on_a_flat_price_is_refused() {
        let mut catalog = Catalog::builtin(&default_key());
        let flat = card(&mut catalog);
        flat.price.kind = PriceType::Flat;
        flat.discounts = Some(Discounts {
            usage: "10".parse().ok(),
        });
        assert_eq!(
            problem_fields(&catalog),
            ["plan.phases[0].rate_cards[0].discounts.usage"]
        );
    }

    #[test]
    fn a_negative_usage_discount_is_refused() {
        let mut catalog = Catalog::builtin(&default_key());
        card(&mut catalog).discounts = Some(Discounts {
            usage: "-1".parse().ok(),
        });
        assert_eq!(
            problem_fields(&catalog),
            ["plan.phases[0].rate_cards[0].discounts.usage"]
        );
    }

    #[test]
    fn a_repeated_key_is_reported_where_it_repeats() {
        let mut catalog = Catalog::builtin(&default_key());
        catalog.meters[2].key = key("billable_usd_micros");
        assert!(
            problem_fields(&catalog).contains(&"meters[2].key".to_owned()),
            "{:?}",
            catalog.validate()
        );
    }
}
