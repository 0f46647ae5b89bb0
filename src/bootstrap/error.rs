//! Why a bootstrap could not run, or stopped.

use thiserror::Error;

use super::catalog::{joined, Problem};
use super::report::Report;
use crate::openmeter::ApiError;

/// Why a run could not complete. Failures of single objects are not
/// errors: they are [`Outcome::Failed`] lines in the [`Report`].
#[derive(Debug, Error)]
pub enum BootstrapError {
    /// The catalog contradicts itself, or OpenMeter would refuse it
    /// (checked before any call).
    #[error("the catalog is inconsistent: {}", joined(.0))]
    InvalidCatalog(Vec<Problem>),
    /// A failure that concerns every call (the token, the URL, OpenMeter
    /// unreachable): no further call can succeed, so the run stops.
    /// `report` holds what was done before.
    #[error("bootstrap stopped: {source}")]
    Aborted { source: ApiError, report: Report },
}
