//! Money, exactly: a fee in wei, the ETH/USD price, and amounts in USD
//! micros, never a float.

use std::fmt;
use std::str::FromStr;

use ethnum::U256;
use rust_decimal::Decimal;
use serde::{Serialize, Serializer};
use thiserror::Error;

/// Why a fee could not be parsed or converted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FeeError {
    #[error("computed_fee is missing")]
    Missing,
    #[error("computed_fee is not a non-negative integer")]
    NotAnInteger,
    #[error("computed_fee is out of range (more than 2^128 wei)")]
    OutOfRange,
}

/// A fee in wei: a non-negative integer below 2^128 (~3.4e38 wei).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeeWei(u128);

impl FeeWei {
    /// Parses the signer's `computed_fee`: ASCII digits only, no sign, no
    /// fraction, no exponent, no surrounding spaces.
    pub fn parse(raw: &str) -> Result<Self, FeeError> {
        if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FeeError::NotAnInteger);
        }
        raw.parse::<u128>()
            .map(Self)
            .map_err(|_| FeeError::OutOfRange)
    }

    pub fn new(wei: u128) -> Self {
        Self(wei)
    }

    pub fn get(self) -> u128 {
        self.0
    }

    /// `wei × price / 10^12` exactly (10^18 wei per ETH, 10^6 micros per
    /// USD): the quotient always terminates, the divisor being a power of
    /// ten. 256-bit integers, never a float; it cannot overflow (a fee is
    /// below 2^128, a price mantissa below 2^96).
    pub fn to_usd_micros(self, price: &EthUsdPrice) -> UsdMicros {
        let mantissa = U256::from(price.0.mantissa().unsigned_abs());
        UsdMicros::new(U256::from(self.0) * mantissa, 12 + price.0.scale())
    }
}

impl fmt::Display for FeeWei {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An exact amount in millionths of a US dollar: `atoms / 10^scale`, kept
/// normalised (no trailing zero in `atoms` while `scale > 0`), so equal
/// amounts are equal values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UsdMicros {
    atoms: U256,
    scale: u32,
}

/// The largest scale an amount is read with (a fee's is at most 12 + a
/// price's 28).
const MAX_SCALE: u32 = 80;

/// `atoms` / 10^`scale` with its trailing zeros dropped, in `T`'s own
/// arithmetic, widened back by `wide`.
fn trim<T>(mut atoms: T, mut scale: u32, wide: impl Fn(T) -> U256) -> (U256, u32)
where
    T: Copy + PartialEq + From<u8> + std::ops::Rem<Output = T> + std::ops::DivAssign,
{
    let (zero, ten) = (T::from(0), T::from(10));
    while scale > 0 && atoms % ten == zero {
        atoms /= ten;
        scale -= 1;
    }
    (wide(atoms), scale)
}

impl UsdMicros {
    pub const ZERO: Self = Self {
        atoms: U256::ZERO,
        scale: 0,
    };

    /// Trailing zeros dropped, so equal amounts compare equal. Amounts that
    /// fit in 64 or 128 bits (every real fee) are divided natively: a
    /// 256-bit division per digit was 2% of the collector's CPU, a 128-bit
    /// one still 2% of decode + map + serialise.
    fn new(atoms: U256, scale: u32) -> Self {
        let (atoms, scale) = match atoms.into_words() {
            (0, low) => match u64::try_from(low) {
                Ok(small) => trim(small, scale, U256::from),
                Err(_) => trim(low, scale, U256::from),
            },
            _ => trim(atoms, scale, |atoms| atoms),
        };
        Self { atoms, scale }
    }

    /// Rounded half-up to whole micros (the seed's per-ticket rounding).
    pub fn round_half_up(self) -> Self {
        let divisor = pow10(self.scale);
        let (quotient, remainder) = (self.atoms / divisor, self.atoms % divisor);
        let up = remainder > 0 && remainder * 2 >= divisor;
        Self::new(if up { quotient + 1 } else { quotient }, 0)
    }

    /// The sum, exact; `None` past 2^256 atoms at the common scale.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        let scale = self.scale.max(other.scale);
        let a = self.atoms.checked_mul(pow10(scale - self.scale))?;
        let b = other.atoms.checked_mul(pow10(scale - other.scale))?;
        Some(Self::new(a.checked_add(b)?, scale))
    }

    /// `self − other`, as whether it is negative and its magnitude.
    pub fn difference(self, other: Self) -> (bool, Self) {
        let scale = self.scale.max(other.scale);
        let a = self.atoms.saturating_mul(pow10(scale - self.scale));
        let b = other.atoms.saturating_mul(pow10(scale - other.scale));
        if a >= b {
            (false, Self::new(a - b, scale))
        } else {
            (true, Self::new(b - a, scale))
        }
    }

    /// Rounded half-up to whole micros, saturating at `u64::MAX` (for
    /// counters and gauges).
    pub fn whole_u64(self) -> u64 {
        let whole = self.round_half_up().atoms;
        u64::try_from(whole).unwrap_or(u64::MAX)
    }
}

/// A whole number of micros (or of anything else an exact decimal counts).
impl From<u64> for UsdMicros {
    fn from(n: u64) -> Self {
        Self::new(U256::from(n), 0)
    }
}

fn pow10(exp: u32) -> U256 {
    U256::from(10u8).pow(exp)
}

/// A JSON number written exactly as `digits` (serde_json's
/// `arbitrary_precision` keeps the text; a float would round it); `None`
/// when `digits` is not a JSON number's text.
pub(crate) fn json_number(digits: &str) -> Option<serde_json::Number> {
    digits.parse().ok()
}

/// `digits` serialised as a JSON number ([`json_number`]), or as text if
/// they were ever not a number's.
pub(crate) fn serialize_digits<S: Serializer>(digits: &str, s: S) -> Result<S::Ok, S::Error> {
    match json_number(digits) {
        Some(number) => number.serialize(s),
        None => s.serialize_str(digits),
    }
}

impl fmt::Display for UsdMicros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scale == 0 {
            return write!(f, "{}", self.atoms);
        }
        // Every real fee's micros fit in 64 bits with a scale below 20:
        // written natively, without 256-bit division and formatting.
        if let (0, low) = self.atoms.into_words() {
            let small = u64::try_from(low).ok();
            if let Some((small, divisor)) = small.zip(10u64.checked_pow(self.scale)) {
                let width = self.scale as usize;
                return write!(f, "{}.{:0>width$}", small / divisor, small % divisor);
            }
        }
        let divisor = pow10(self.scale);
        let fraction = (self.atoms % divisor).to_string();
        let width = self.scale as usize;
        write!(f, "{}.{fraction:0>width$}", self.atoms / divisor)
    }
}

impl fmt::Debug for UsdMicros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UsdMicros({self})")
    }
}

/// Why a decimal amount could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not a non-negative decimal amount")]
pub struct AmountError(pub String);

impl FromStr for UsdMicros {
    type Err = AmountError;

    /// Plain (`1166.6666666655`) or scientific (`3.5e-9`) notation, as
    /// OpenMeter may hand a stored number back.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AmountError(s.to_owned());
        let (mantissa, exponent) = match s.find(['e', 'E']) {
            Some(i) => (&s[..i], s[i + 1..].parse::<i64>().map_err(|_| bad())?),
            None => (s, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits = format!("{int}{frac}");
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let atoms = U256::from_str_radix(&digits, 10).map_err(|_| bad())?;
        let scale = i64::try_from(frac.len()).map_err(|_| bad())? - exponent;
        if scale < 0 {
            let shift = u32::try_from(-scale).map_err(|_| bad())?;
            let atoms = atoms.checked_mul(U256::from(10u8).checked_pow(shift).ok_or_else(bad)?);
            return Ok(Self::new(atoms.ok_or_else(bad)?, 0));
        }
        match u32::try_from(scale) {
            Ok(scale) if scale <= MAX_SCALE => Ok(Self::new(atoms, scale)),
            _ => Err(bad()),
        }
    }
}

/// A JSON number with exactly its decimal digits (which `Display` always
/// writes as a JSON number's text; were it not, the exact text as a string,
/// never a rounded or zeroed amount).
impl Serialize for UsdMicros {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_digits(&self.to_string(), s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PriceError {
    #[error("ETH/USD price {0:?} is not a decimal number")]
    NotANumber(String),
    #[error("ETH/USD price must be greater than zero, got {0}")]
    NotPositive(Decimal),
}

/// The ETH/USD rate used for a conversion: an exact decimal, strictly positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthUsdPrice(Decimal);

impl EthUsdPrice {
    pub fn new(value: Decimal) -> Result<Self, PriceError> {
        if value > Decimal::ZERO {
            Ok(Self(value.normalize()))
        } else {
            Err(PriceError::NotPositive(value))
        }
    }

    pub fn value(&self) -> Decimal {
        self.0
    }

    /// `wei × price / 10^12` exactly; `None` past 2^256 (never for one
    /// fee below 2^128: a price mantissa is below 2^96).
    pub fn micros_of(&self, wei: U256) -> Option<UsdMicros> {
        let mantissa = U256::from(self.0.mantissa().unsigned_abs());
        let atoms = wei.checked_mul(mantissa)?;
        Some(UsdMicros::new(atoms, 12 + self.0.scale()))
    }
}

impl FromStr for EthUsdPrice {
    type Err = PriceError;

    /// Accepts plain (`3500`, `3500.25`) and scientific (`3.5e3`) notation.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let value = Decimal::from_str_exact(s)
            .or_else(|_| Decimal::from_scientific(s))
            .map_err(|_| PriceError::NotANumber(s.to_owned()))?;
        Self::new(value)
    }
}

impl fmt::Display for EthUsdPrice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for EthUsdPrice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(s: &str) -> EthUsdPrice {
        s.parse().unwrap()
    }

    fn micros(wei: &str, p: &str) -> String {
        FeeWei::parse(wei)
            .unwrap()
            .to_usd_micros(&price(p))
            .to_string()
    }

    fn rounded(wei: &str, p: &str) -> String {
        FeeWei::parse(wei)
            .unwrap()
            .to_usd_micros(&price(p))
            .round_half_up()
            .to_string()
    }

    #[test]
    fn fee_must_be_plain_digits() {
        for bad in ["", "-1", "1.0", "1e3", " 1", "0x10", "not-a-number"] {
            assert_eq!(FeeWei::parse(bad), Err(FeeError::NotAnInteger), "{bad}");
        }
    }

    #[test]
    fn fee_above_u128_is_out_of_range() {
        assert_eq!(FeeWei::parse(&"9".repeat(40)), Err(FeeError::OutOfRange));
    }

    #[test]
    fn fee_conversion_is_the_exact_decimal_quotient() {
        assert_eq!(micros("1200000000000", "3500"), "4200");
        assert_eq!(micros("333333333333", "3500"), "1166.6666666655");
        assert_eq!(micros("1", "3500"), "0.0000000035");
        assert_eq!(
            micros("123456789012345678901234", "3500"),
            "432098761543209.876154319"
        );
        assert_eq!(micros("0", "3500"), "0");
    }

    #[test]
    fn rounded_fee_conversion_matches_the_seed_fixtures() {
        assert_eq!(rounded("1200000000000", "3500"), "4200");
        assert_eq!(rounded("333333333333", "3500"), "1167");
        assert_eq!(rounded("1", "3500"), "0");
        assert_eq!(
            rounded("123456789012345678901234", "3500"),
            "432098761543210"
        );
    }

    #[test]
    fn rounded_fee_conversion_rounds_half_up() {
        // 10^12 wei at 0.5 USD/ETH is exactly 0.5 micros.
        assert_eq!(rounded("1000000000000", "0.5"), "1");
        assert_eq!(rounded("999999999999", "0.5"), "0");
    }

    #[test]
    fn fee_conversion_handles_10_pow_30_wei_with_fractional_price() {
        let wei = format!("1{}", "0".repeat(30));
        assert_eq!(micros(&wei, "3500.123456789"), "3500123456789000000000");
    }

    #[test]
    fn fee_conversion_of_the_largest_fee_does_not_overflow() {
        let max = u128::MAX.to_string();
        let price = "79228162514264337593543950335";
        assert!(!micros(&max, price).is_empty());
    }

    #[test]
    fn amounts_parse_plain_and_scientific_notation_exactly() {
        let parse = |s: &str| s.parse::<UsdMicros>().map(|m| m.to_string());
        assert_eq!(parse("1166.6666666655"), Ok("1166.6666666655".into()));
        assert_eq!(parse("3.5e-9"), Ok("0.0000000035".into()));
        assert_eq!(parse("4.2E3"), Ok("4200".into()));
        assert_eq!(parse("4200.000"), Ok("4200".into()));
        for bad in ["", ".", "-1", "1.2.3", "abc", "1e"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amounts_add_exactly_across_scales() {
        let a: UsdMicros = "0.0000000035".parse().unwrap();
        let b: UsdMicros = "1166.6666666655".parse().unwrap();
        assert_eq!(a.checked_add(b).unwrap().to_string(), "1166.666666669");
        assert_eq!(
            b.difference("1167".parse().unwrap()),
            (true, "0.3333333345".parse().unwrap())
        );
    }

    #[test]
    fn amounts_serialise_as_json_numbers_with_their_exact_digits() {
        let m: UsdMicros = "432098761543209.876154319".parse().unwrap();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            "432098761543209.876154319"
        );
    }

    /// The decimal reference: `fee × mantissa` in u128, the point placed
    /// `12 + scale` digits from the right by string handling.
    fn reference(fee: u64, mantissa: u32, scale: u32) -> String {
        let digits = (u128::from(fee) * u128::from(mantissa)).to_string();
        let point = (12 + scale) as usize;
        let padded = format!("{digits:0>width$}", width = point + 1);
        let (int, frac) = padded.split_at(padded.len() - point);
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            int.to_owned()
        } else {
            format!("{int}.{frac}")
        }
    }

    fn price_of(mantissa: u32, scale: u32) -> EthUsdPrice {
        EthUsdPrice::new(Decimal::new(i64::from(mantissa), scale)).unwrap()
    }

    proptest::proptest! {
        #[test]
        fn fee_conversion_equals_the_decimal_reference(
            fee in 0u64..,
            mantissa in 1u32..,
            scale in 0u32..=6,
        ) {
            let exact = FeeWei::new(fee.into()).to_usd_micros(&price_of(mantissa, scale));
            proptest::prop_assert_eq!(exact.to_string(), reference(fee, mantissa, scale));
        }

        #[test]
        fn rounding_is_half_up_of_the_exact_quotient(
            fee in 0u64..,
            mantissa in 1u32..,
            scale in 0u32..=6,
        ) {
            let product = u128::from(fee) * u128::from(mantissa);
            let divisor = 10u128.pow(12 + scale);
            let expected = (product + divisor / 2) / divisor;
            let rounded = FeeWei::new(fee.into())
                .to_usd_micros(&price_of(mantissa, scale))
                .round_half_up();
            proptest::prop_assert_eq!(rounded.to_string(), expected.to_string());
        }

        #[test]
        fn the_sum_of_exact_tickets_is_the_exact_fee_of_their_sum(
            fees in proptest::collection::vec(0u64.., 1..50),
            mantissa in 1u32..,
            scale in 0u32..=6,
        ) {
            let price = price_of(mantissa, scale);
            let sum = fees.iter().fold(UsdMicros::ZERO, |sum, fee| {
                sum.checked_add(FeeWei::new((*fee).into()).to_usd_micros(&price)).unwrap()
            });
            let wei: u128 = fees.iter().map(|f| u128::from(*f)).sum();
            proptest::prop_assert_eq!(Some(sum), price.micros_of(U256::from(wei)));
        }

        #[test]
        fn an_exact_amount_reads_back_from_its_text(
            fee in 0u64..,
            mantissa in 1u32..,
            scale in 0u32..=6,
        ) {
            let exact = FeeWei::new(fee.into()).to_usd_micros(&price_of(mantissa, scale));
            proptest::prop_assert_eq!(exact.to_string().parse::<UsdMicros>(), Ok(exact));
        }
    }

    #[test]
    fn price_must_be_positive() {
        assert!("0".parse::<EthUsdPrice>().is_err());
        assert!("-1".parse::<EthUsdPrice>().is_err());
        assert!("abc".parse::<EthUsdPrice>().is_err());
        assert_eq!(price("3.5e3").to_string(), "3500");
    }
}
