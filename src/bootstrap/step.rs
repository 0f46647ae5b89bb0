//! What the steps share: the run's context, where each catalog object
//! stands for the steps that reference it, and how a step judges an error
//! or a comparison. Its own module so that `engine` (which orders the steps)
//! and `plan` (one step) both depend on it instead of on each other.

use std::collections::HashMap;

use super::catalog::Catalog;
use super::report::{Kind, Line, Outcome};
use crate::openmeter::{classify, ApiError, Call, ErrorClass, OpenMeterClient};

/// How a run may act.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootstrapOptions {
    /// Look only: report what would be created, call no write endpoint.
    pub dry_run: bool,
    /// Replace a drifted plan by creating and publishing a new version.
    pub publish_new_version: bool,
}

/// What one run works with.
pub(super) struct Ctx<'a> {
    pub client: &'a OpenMeterClient,
    pub catalog: &'a Catalog,
    pub opts: &'a BootstrapOptions,
}

/// Where a catalog object stands after its step, for the steps that
/// reference it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Resolved {
    /// It exists with this id.
    Id(String),
    /// Dry run: it would be created.
    Pending,
    /// Its step failed.
    Unavailable,
}

/// Catalog key → where that object stands.
pub(super) type Ids = HashMap<String, Resolved>;

impl Resolved {
    pub(super) fn id(&self) -> Option<&str> {
        match self {
            Self::Id(id) => Some(id),
            Self::Pending | Self::Unavailable => None,
        }
    }
}

/// A failure that concerns every call (a refused token, a wrong URL, or
/// OpenMeter still unavailable after the client's retries) fails every
/// later call the same way: stop instead of printing the same failure for
/// every object.
pub(super) fn fatal(e: &ApiError) -> bool {
    matches!(
        classify(Call::Catalog, e),
        ErrorClass::Configuration | ErrorClass::Transient
    )
}

/// `Exists` when nothing differs, else `Drift` listing the differences.
pub(super) fn compared(kind: Kind, key: &str, differences: Vec<String>) -> Line {
    if differences.is_empty() {
        Line::new(kind, key, Outcome::Exists)
    } else {
        Line::new(kind, key, Outcome::Drift(differences.join("; ")))
    }
}
