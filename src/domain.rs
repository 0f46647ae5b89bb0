//! Domain newtypes, each parsed once at the edge so the rest of the code
//! cannot hold an invalid one.

use std::fmt;
use std::str::FromStr;

use ethnum::U256;
use rust_decimal::Decimal;
use serde::{Serialize, Serializer};
use thiserror::Error;

/// OpenMeter's limit on customer keys (`ExternalResourceKey`, maxLength 256).
pub(crate) const MAX_KEY_CHARS: usize = 256;

/// Why an identity could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentityError {
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} is longer than {MAX_KEY_CHARS} characters")]
    TooLong { field: &'static str },
    #[error("{field} contains control characters")]
    ControlCharacters { field: &'static str },
    #[error("{field} contains the invisible formatting character U+{code_point:04X} (a bidirectional control, zero-width or similar), so it would not display as the bytes billed")]
    InvisibleCharacters {
        field: &'static str,
        code_point: u32,
    },
    #[error("{field} is not of the form client_id:external_user_id")]
    NotCompound { field: &'static str },
}

/// The signer's `auth_id`: trimmed, non-empty, at most 256 characters, no
/// control characters and no invisible format characters (Unicode `Cf`,
/// line and paragraph separators). It is the customer key, name and subject
/// all at once, so what OpenMeter displays must be exactly what is billed:
/// a U+202E would show a customer under another name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuthId(String);

impl AuthId {
    /// Parses an `auth_id` as read from an event or a request field.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, IdentityError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(IdentityError::Empty { field });
        }
        if trimmed.chars().count() > MAX_KEY_CHARS {
            return Err(IdentityError::TooLong { field });
        }
        if trimmed.chars().any(char::is_control) {
            return Err(IdentityError::ControlCharacters { field });
        }
        if let Some(c) = trimmed.chars().find(|c| is_invisible(*c)) {
            return Err(IdentityError::InvisibleCharacters {
                field,
                code_point: c.into(),
            });
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Splits at the first colon when it is neither the first nor the last
    /// character (the original's rule); `None` when the id is not compound.
    fn split(&self) -> Option<(&str, &str)> {
        let idx = self.0.find(':')?;
        (idx > 0 && idx < self.0.len() - 1).then(|| (&self.0[..idx], &self.0[idx + 1..]))
    }
}

impl fmt::Display for AuthId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Format characters (bidi overrides and isolates, zero-width space and
/// joiners, BOM, soft hyphen…) and line/paragraph separators: they change
/// how a key renders without being seen.
fn is_invisible(c: char) -> bool {
    use unicode_general_category::{get_general_category, GeneralCategory as G};
    matches!(
        get_general_category(c),
        G::Format | G::LineSeparator | G::ParagraphSeparator
    )
}

/// The OpenMeter customer key (also its name and its one subject key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CustomerKey(Box<str>);

impl CustomerKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who is billed: the whole `auth_id` plus its two halves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    auth_id: AuthId,
    client_id: String,
    external_user_id: String,
}

impl Identity {
    /// The collector's rule: a non-compound `auth_id` bills as itself.
    pub fn from_auth_id(auth_id: AuthId) -> Self {
        let (client, user) = auth_id
            .split()
            .unwrap_or((auth_id.as_str(), auth_id.as_str()));
        Self {
            client_id: client.to_owned(),
            external_user_id: user.to_owned(),
            auth_id,
        }
    }

    /// The `/ensure` rule: an `auth_id` must be compound there.
    pub fn from_compound(field: &'static str, raw: &str) -> Result<Self, IdentityError> {
        let auth_id = AuthId::parse(field, raw)?;
        if auth_id.split().is_none() {
            return Err(IdentityError::NotCompound { field });
        }
        Ok(Self::from_auth_id(auth_id))
    }

    /// Builds the identity from its two halves; the key is `client:user`.
    pub fn from_parts(client_id: &str, external_user_id: &str) -> Result<Self, IdentityError> {
        let client = AuthId::parse("client_id", client_id)?;
        let user = AuthId::parse("external_user_id", external_user_id)?;
        let auth_id = AuthId::parse("client_id:external_user_id", &format!("{client}:{user}"))?;
        Ok(Self {
            auth_id,
            client_id: client.0,
            external_user_id: user.0,
        })
    }

    pub fn auth_id(&self) -> &AuthId {
        &self.auth_id
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn external_user_id(&self) -> &str {
        &self.external_user_id
    }

    pub fn customer_key(&self) -> CustomerKey {
        CustomerKey(self.auth_id.0.as_str().into())
    }
}

/// The plan new customers are subscribed to unless `OPENMETER_DEFAULT_PLAN_KEY`
/// names another; the built-in catalog defines it.
pub(crate) const DEFAULT_PLAN_KEY: &str = "clearinghouse_default_ppu";

/// A plan key as OpenMeter's `ResourceKey` allows: `^[a-z0-9]+(?:_[a-z0-9]+)*$`, 1..=64.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PlanKey(String);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not a valid OpenMeter key: use 1-64 of a-z, 0-9 in words joined by single underscores")]
pub struct ResourceKeyError(pub String);

impl FromStr for PlanKey {
    type Err = ResourceKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if is_resource_key(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ResourceKeyError(s.to_owned()))
        }
    }
}

impl PlanKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PlanKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks OpenMeter's `ResourceKey` pattern without a regex on the hot path.
pub(crate) fn is_resource_key(s: &str) -> bool {
    let word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (1..=64).contains(&s.len()) && s.split('_').all(word)
}

/// Why a fee could not be parsed or converted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FeeError {
    #[error("computed_fee is missing")]
    Missing,
    #[error("computed_fee is not a non-negative integer")]
    NotAnInteger,
    #[error("computed_fee is out of range (more than 2^128 wei)")]
    OutOfRange,
    #[error("network fee in USD micros is out of range")]
    UsdOutOfRange,
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

    /// `round_half_up(wei × price / 10^12)`: 10^18 wei per ETH, 10^6 micros
    /// per USD. Exact in 256-bit integers; never a float.
    pub fn to_usd_micros(self, price: &EthUsdPrice) -> Result<UsdMicros, FeeError> {
        let mantissa = U256::from(price.0.mantissa().unsigned_abs());
        let divisor = U256::from(10u8).pow(12 + price.0.scale());
        let product = U256::from(self.0)
            .checked_mul(mantissa)
            .ok_or(FeeError::UsdOutOfRange)?;
        let (quotient, remainder) = (product / divisor, product % divisor);
        let rounded = if remainder * 2 >= divisor {
            quotient + 1
        } else {
            quotient
        };
        u128::try_from(rounded)
            .map(UsdMicros)
            .map_err(|_| FeeError::UsdOutOfRange)
    }
}

impl fmt::Display for FeeWei {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An amount in millionths of a US dollar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UsdMicros(u128);

impl UsdMicros {
    pub fn get(self) -> u128 {
        self.0
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

    fn micros(wei: &str, p: &str) -> u128 {
        FeeWei::parse(wei)
            .unwrap()
            .to_usd_micros(&price(p))
            .unwrap()
            .get()
    }

    #[test]
    fn auth_id_is_trimmed() {
        assert_eq!(AuthId::parse("auth_id", "  a:b ").unwrap().as_str(), "a:b");
    }

    #[test]
    fn blank_auth_id_is_rejected() {
        assert_eq!(
            AuthId::parse("auth_id", "  "),
            Err(IdentityError::Empty { field: "auth_id" })
        );
    }

    #[test]
    fn auth_id_longer_than_256_chars_is_rejected() {
        let long = "x".repeat(257);
        assert!(matches!(
            AuthId::parse("auth_id", &long),
            Err(IdentityError::TooLong { .. })
        ));
        assert!(AuthId::parse("auth_id", &"é".repeat(256)).is_ok());
    }

    #[test]
    fn auth_id_with_control_characters_is_rejected() {
        assert!(matches!(
            AuthId::parse("auth_id", "a\u{0}b"),
            Err(IdentityError::ControlCharacters { .. })
        ));
    }

    #[test]
    fn auth_id_with_bidi_controls_or_invisible_format_characters_is_rejected() {
        for (raw, code_point) in [
            ("acme:\u{202E}ecilA", 0x202E),
            ("acme:al\u{200B}ice", 0x200B),
            ("\u{2066}acme:alice\u{2069}", 0x2066),
            ("acme:\u{FEFF}alice", 0xFEFF),
            ("acme:ali\u{00AD}ce", 0xAD),
            ("acme:a\u{2028}b", 0x2028),
        ] {
            assert_eq!(
                AuthId::parse("auth_id", raw),
                Err(IdentityError::InvisibleCharacters {
                    field: "auth_id",
                    code_point
                }),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn auth_id_with_visible_non_ascii_characters_is_accepted() {
        for raw in [
            "acme:zoë",
            "客户:用户",
            "acme:ali ce",
            "acme:👩",
            "عميل:مستخدم",
        ] {
            assert!(AuthId::parse("auth_id", raw).is_ok(), "{raw:?}");
        }
    }

    #[test]
    fn compound_auth_id_splits_at_first_colon() {
        let id = Identity::from_auth_id(AuthId::parse("auth_id", "acme:user:with:colons").unwrap());
        assert_eq!(
            (id.client_id(), id.external_user_id()),
            ("acme", "user:with:colons")
        );
        assert_eq!(id.customer_key().as_str(), "acme:user:with:colons");
    }

    #[test]
    fn colon_at_either_end_is_not_compound() {
        for raw in [":user", "client:", "plain"] {
            let id = Identity::from_auth_id(AuthId::parse("auth_id", raw).unwrap());
            assert_eq!((id.client_id(), id.external_user_id()), (raw, raw));
            assert!(Identity::from_compound("auth_id", raw).is_err());
        }
    }

    #[test]
    fn identity_from_parts_joins_with_colon() {
        let id = Identity::from_parts(" c ", "u").unwrap();
        assert_eq!(id.customer_key().as_str(), "c:u");
        assert_eq!(id.client_id(), "c");
    }

    #[test]
    fn plan_key_follows_resource_key_pattern() {
        assert!("clearinghouse_default_ppu".parse::<PlanKey>().is_ok());
        for bad in ["", "Upper", "a__b", "_a", "a_", "a-b", &"a".repeat(65)] {
            assert!(bad.parse::<PlanKey>().is_err(), "{bad}");
        }
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
    fn fee_conversion_matches_fixtures() {
        assert_eq!(micros("1200000000000", "3500"), 4200);
        assert_eq!(micros("333333333333", "3500"), 1167);
        assert_eq!(micros("1", "3500"), 0);
        assert_eq!(micros("123456789012345678901234", "3500"), 432098761543210);
    }

    #[test]
    fn fee_conversion_rounds_half_up() {
        // 10^12 wei at 0.5 USD/ETH is exactly 0.5 micros.
        assert_eq!(micros("1000000000000", "0.5"), 1);
        assert_eq!(micros("999999999999", "0.5"), 0);
    }

    #[test]
    fn fee_conversion_handles_10_pow_30_wei_with_fractional_price() {
        let wei = format!("1{}", "0".repeat(30));
        assert_eq!(
            micros(&wei, "3500.123456789"),
            3_500_123_456_789_000_000_000
        );
    }

    #[test]
    fn price_must_be_positive() {
        assert!("0".parse::<EthUsdPrice>().is_err());
        assert!("-1".parse::<EthUsdPrice>().is_err());
        assert!("abc".parse::<EthUsdPrice>().is_err());
        assert_eq!(price("3.5e3").to_string(), "3500");
    }
}
