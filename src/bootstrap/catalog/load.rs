//! Reading a catalog: as written (one `plan` or a `plans` list) and from a
//! file, whose problems are reported at their lines.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Catalog, CatalogError, FeatureSpec, MeterSpec, PlanSpec, Problem};
use crate::bootstrap::annotations::SkipAnnotations;
use crate::bootstrap::lines::Lines;
use crate::bootstrap::plan_meta;

/// A catalog as written: one `plan` or a `plans` list.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CatalogFile {
    meters: Vec<MeterSpec>,
    #[serde(default)]
    features: Vec<FeatureSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plan: Option<PlanSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plans: Option<Vec<PlanSpec>>,
}

/// A catalog is read as a [`CatalogFile`], then checked.
impl<'de> Deserialize<'de> for Catalog {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let file = CatalogFile::deserialize(deserializer)?;
        Catalog::try_from(file).map_err(serde::de::Error::custom)
    }
}

/// A catalog is written as a [`CatalogFile`].
impl Serialize for Catalog {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        CatalogFile::from(self.clone()).serialize(serializer)
    }
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

impl Catalog {
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
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::catalog::tests::{default_key, plan_json, problem_fields, with_plans};
    use crate::bootstrap::SubscribeRole;

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
}
