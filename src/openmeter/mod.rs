//! The OpenMeter (or Kong Konnect Metering & Billing) v3 API client.

mod client;
mod endpoint;
mod error;
pub(crate) mod model;

pub use client::{ClientConfig, OpenMeterClient, CLOUDEVENT_BATCH};
pub(crate) use client::{EventQuery, BULK_PAGE_SIZE};
pub use endpoint::Endpoint;
pub(crate) use error::{classify, Call};
pub use error::{ApiError, ErrorClass};
