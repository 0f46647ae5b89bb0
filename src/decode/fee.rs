//! The fee: `computed_fee` as the signer wrote it, exactly.

use super::rejection::Rejection;
use super::scalar::Scalar;
use crate::domain::{FeeError, FeeWei};

/// A fee is an integer string; a JSON integer is accepted when exact.
/// Returns the fee and its text as written.
pub(super) fn fee(value: Option<Scalar>) -> Result<(FeeWei, String), Rejection> {
    match value {
        None => Err(FeeError::Missing.into()),
        Some(Scalar::Text(s)) => Ok((FeeWei::parse(&s)?, s.into_owned())),
        Some(Scalar::Number(digits)) => Ok((FeeWei::parse(digits)?, digits.to_owned())),
        Some(Scalar::Other) => Err(FeeError::NotAnInteger.into()),
    }
}
