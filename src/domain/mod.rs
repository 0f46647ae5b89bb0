//! Domain newtypes, each parsed once at the edge so the rest of the code
//! cannot hold an invalid one: the identity (`auth_id`, who is billed),
//! money (fee, price, USD micros) and OpenMeter's keys, a file each.

mod auth_id;
mod identity;
mod keys;
mod money;
mod split;

pub use auth_id::AuthId;
pub(crate) use auth_id::IdentityError;
pub(crate) use identity::CustomerKey;
pub use identity::{Identity, IdentityClaim, SubjectKind};
pub use keys::PlanKey;
pub use money::UsdMicros;
pub(crate) use money::{EthUsdPrice, FeeError, FeeWei, PriceError};

pub(crate) use keys::{is_resource_key, DEFAULT_PLAN_KEY};
pub(crate) use money::{json_number, serialize_digits};
pub(crate) use split::split_inside;
