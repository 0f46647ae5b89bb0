//! The fee: `computed_fee` as the signer wrote it, exactly.

use super::rejection::Rejection;
use super::scalar::Scalar;
use crate::domain::{FeeError, FeeWei};

/// A fee is an integer string; a JSON integer is accepted when exact.
/// Returns the fee and its text as written when that is not the fee's own
/// digits (`"000120"`): the seed sent the text, and every other ticket's
/// text is rebuilt from the fee, so it is not copied per ticket.
pub(super) fn fee(value: Option<Scalar>) -> Result<(FeeWei, Option<String>), Rejection> {
    let text = match value {
        None => return Err(FeeError::Missing.into()),
        Some(Scalar::Text(s)) => s,
        Some(Scalar::Number(digits)) => digits.into(),
        Some(Scalar::Other) => return Err(FeeError::NotAnInteger.into()),
    };
    let fee = FeeWei::parse(&text)?;
    Ok((fee, (!is_canonical(&text)).then(|| text.into_owned())))
}

/// A parsed fee's text (all digits) without a leading zero, or `0` alone:
/// what `FeeWei` displays.
fn is_canonical(text: &str) -> bool {
    text == "0" || !text.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fee_written_as_its_own_digits_keeps_no_text() {
        let (fee, text) = fee(Some(Scalar::Text("120".into()))).unwrap();
        assert_eq!((fee.get(), text), (120, None));
    }

    #[test]
    fn a_fee_with_leading_zeros_keeps_its_text() {
        let (fee, text) = fee(Some(Scalar::Text("000120".into()))).unwrap();
        assert_eq!((fee.get(), text.as_deref()), (120, Some("000120")));
    }

    #[test]
    fn a_zero_fee_is_its_own_digits() {
        assert_eq!(fee(Some(Scalar::Number("0"))).unwrap().1, None);
    }
}
