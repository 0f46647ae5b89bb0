//! A moment on both clocks (monotonic, for elapsed time; UTC, for what is
//! reported and compared with event times), read once for a run of work:
//! read per record or per lookup, the clocks were a visible share of the
//! collector's CPU.

use std::time::Instant;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Moment {
    pub(crate) at: Instant,
    pub(crate) utc: DateTime<Utc>,
}

impl Moment {
    pub(crate) fn now() -> Self {
        Self {
            at: Instant::now(),
            utc: Utc::now(),
        }
    }
}
