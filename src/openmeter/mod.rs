//! The OpenMeter (or Kong Konnect Metering & Billing) v3 API client.

mod client;
mod endpoint;
mod error;
pub mod model;

pub use client::{ClientConfig, OpenMeterClient, CLOUDEVENT_BATCH};
pub use client::{EventPage, EventQuery, EVENT_PAGE_SIZE};
pub use endpoint::{Endpoint, EndpointError};
pub use error::{classify, is_transient_status, ApiError, Call, ErrorClass, Problem};
