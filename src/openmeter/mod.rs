//! The OpenMeter (or Kong Konnect Metering & Billing) v3 API client.

mod client;
mod endpoint;
mod error;
pub(crate) mod model;

pub use client::config::ClientConfig;
pub(crate) use client::pages::{EventQuery, BULK_PAGE_SIZE};
pub use client::{OpenMeterClient, CLOUDEVENT_BATCH};
pub use endpoint::Endpoint;
pub(crate) use error::{classify, Call};
pub use error::{ApiError, ErrorClass};
