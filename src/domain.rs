//! Domain newtypes, each parsed once at the edge so the rest of the code
//! cannot hold an invalid one.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use ethnum::U256;
use rust_decimal::Decimal;
use serde::{Serialize, Serializer};
use thiserror::Error;

use crate::contract::SubjectRule;

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
    /// `<client>:owner:` with nothing after the prefix.
    #[error("empty owner id")]
    EmptyOwner,
    /// The input names no identity at all.
    #[error("missing identity")]
    Missing,
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
        split_inside(&self.0, ':')
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

/// The OpenMeter customer key (also its name and its one subject key): the
/// identity's billing subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CustomerKey(Box<str>);

impl CustomerKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key OpenMeter already holds, as read back from its customer list
    /// (the ensure cache's tests; the warm-up keys the cache by `&str`).
    #[cfg(test)]
    pub(crate) fn listed(key: &str) -> Self {
        Self(key.into())
    }
}

impl fmt::Display for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What kind of payer the billing subject is (`data.billing_subject_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// An app owner's shared wallet: `<client>:owner:<id>` bills `<id>`.
    OwnerWallet,
    /// An end user's own wallet: a payer `eu_…`.
    AppUserWallet,
    /// The whole `auth_id` (or the payer of `payer#actor`).
    LegacyCompound,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OwnerWallet => "owner_wallet",
            Self::AppUserWallet => "app_user_wallet",
            Self::LegacyCompound => "legacy_compound",
        }
    }
}

/// The wire prefix of an app owner's usage subject.
const OWNER_PREFIX: &str = "owner:";
/// The prefix of an end user's own wallet.
const END_USER_PREFIX: &str = "eu_";
/// The prefix of an end user's sandbox wallet (pymthouse #470,
/// `src/lib/openmeter/customer-key.ts`: `sbx_eu_{id}` beside `eu_{id}`, so
/// test-card grants never share the production customer); like pymthouse's
/// `isSandboxEndUserCustomerKey`, only with something after it.
const SANDBOX_END_USER_PREFIX: &str = "sbx_eu_";

/// What an input says about who it is for. Each kind of input names an
/// identity its own way, and upstream gave each its own precedence, which
/// [`Identity::resolve`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityClaim<'a> {
    /// A ticket's `data` (today's collectors, pymthouse `collector.yaml`):
    /// `auth_id`, in any form, else `client_id:usage_subject`. Blank fields
    /// are absent ([`IdentityClaim::event`]).
    Event {
        auth_id: Option<&'a str>,
        client_id: Option<&'a str>,
        usage_subject: Option<&'a str>,
    },
    /// A provisioning request (`POST /ensure`, the `ensure` command; the
    /// original sidecar's `parseIdentity`): `client_id` and
    /// `external_user_id`, each checked on its own, when both are given;
    /// else a `client_id:external_user_id` id in the field it names
    /// (`auth_id` or `subject`), which must be compound.
    Request {
        client_id: Option<&'a str>,
        external_user_id: Option<&'a str>,
        compound: Option<(&'static str, &'a str)>,
    },
}

impl<'a> IdentityClaim<'a> {
    /// A ticket's identity fields as read, each trimmed, a blank one absent.
    pub fn event(
        auth_id: Option<&'a str>,
        client_id: Option<&'a str>,
        usage_subject: Option<&'a str>,
    ) -> Self {
        let given = |v: Option<&'a str>| v.map(str::trim).filter(|s| !s.is_empty());
        Self::Event {
            auth_id: given(auth_id),
            client_id: given(client_id),
            usage_subject: given(usage_subject),
        }
    }

    /// The `auth_id` an event names, as text (what a dead letter that does
    /// not resolve is filed under); `None` when it names none. A request's
    /// is only known once its halves are checked.
    pub fn named(&self) -> Option<Cow<'a, str>> {
        match *self {
            Self::Event {
                auth_id: Some(auth),
                ..
            } => Some(Cow::Borrowed(auth)),
            Self::Event {
                client_id: Some(client),
                usage_subject: Some(user),
                ..
            } => Some(Cow::Owned(format!("{client}:{user}"))),
            _ => None,
        }
    }
}

/// Who is billed for a ticket, and the dimensions that say who used it.
///
/// Built from an `auth_id` (`client_id:usage_subject`) by one of the
/// [`SubjectRule`]s; the billing subject is the CloudEvent `subject`, the
/// customer key and its usage-attribution subject at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    auth_id: AuthId,
    client_id: String,
    /// The payer: the bare owner id, the `eu_` wallet, or the usage subject.
    usage_subject: String,
    /// The actor of `payer#actor`, else the payer (a group-by dimension).
    external_user_id: String,
    /// The `eu_` wallet that pays, when one does.
    actor_end_user_id: String,
    kind: SubjectKind,
    billing_subject: CustomerKey,
}

/// Hashes what tells identities apart (`auth_id` and the billing subject;
/// the other fields follow from them under one rule) rather than all six
/// strings: batches hash every event's identity. Consistent with `Eq`,
/// which still compares every field.
impl std::hash::Hash for Identity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.auth_id.hash(state);
        self.billing_subject.hash(state);
    }
}

impl Identity {
    /// The seed's rule, which cannot fail: the whole `auth_id` is billed; a
    /// non-compound one has both halves equal to itself.
    pub fn from_auth_id(auth_id: AuthId) -> Self {
        let (client, user) = auth_id
            .split()
            .unwrap_or((auth_id.as_str(), auth_id.as_str()));
        Self {
            client_id: client.to_owned(),
            usage_subject: user.to_owned(),
            external_user_id: user.to_owned(),
            actor_end_user_id: String::new(),
            kind: SubjectKind::LegacyCompound,
            billing_subject: CustomerKey(auth_id.as_str().into()),
            auth_id,
        }
    }

    /// Resolves what `claim` names by `rule`: the one place the identity
    /// rules live, and the one precedence per kind of input
    /// ([`IdentityClaim`]). Decode, the audit, `/ensure` and the `ensure`
    /// command all come here.
    pub fn resolve(claim: IdentityClaim<'_>, rule: SubjectRule) -> Result<Self, IdentityError> {
        let auth_id = match claim {
            IdentityClaim::Event { .. } => {
                let named = claim.named().ok_or(IdentityError::Missing)?;
                AuthId::parse("auth_id", &named)?
            }
            IdentityClaim::Request {
                client_id: Some(client),
                external_user_id: Some(user),
                ..
            } => {
                let client = AuthId::parse("client_id", client)?;
                let user = AuthId::parse("external_user_id", user)?;
                AuthId::parse("client_id:external_user_id", &format!("{client}:{user}"))?
            }
            IdentityClaim::Request {
                compound: Some((field, raw)),
                ..
            } => {
                let auth_id = AuthId::parse(field, raw)?;
                if auth_id.split().is_none() {
                    return Err(IdentityError::NotCompound { field });
                }
                auth_id
            }
            IdentityClaim::Request { .. } => return Err(IdentityError::Missing),
        };
        Self::by_rule(auth_id, rule)
    }

    /// A parsed `auth_id` by `rule`.
    fn by_rule(auth_id: AuthId, rule: SubjectRule) -> Result<Self, IdentityError> {
        match rule {
            SubjectRule::AuthId => Ok(Self::from_auth_id(auth_id)),
            SubjectRule::Upstream => Self::upstream(auth_id),
        }
    }

    /// Today's collectors' rule (pymthouse `deploy/openmeter-collector/
    /// collector.yaml`, with clearinghouse's trimmed owner id and its
    /// "only a compound `auth_id` names an owner").
    fn upstream(auth_id: AuthId) -> Result<Self, IdentityError> {
        let compound = auth_id.split();
        let (client, usage) = compound.unwrap_or((auth_id.as_str(), auth_id.as_str()));
        let (payer, actor) = split_actor(usage);
        let owner = compound.and(payer.strip_prefix(OWNER_PREFIX));
        let (kind, subject, usage_subject) = match owner {
            Some(bare) => {
                let bare = bare.trim();
                if bare.is_empty() {
                    return Err(IdentityError::EmptyOwner);
                }
                (SubjectKind::OwnerWallet, bare, bare)
            }
            None if is_end_user_wallet(payer) => (SubjectKind::AppUserWallet, payer, payer),
            None if actor.is_some() => (SubjectKind::LegacyCompound, payer, payer),
            None => (SubjectKind::LegacyCompound, auth_id.as_str(), payer),
        };
        let actor_end_user_id = match kind {
            SubjectKind::AppUserWallet => payer,
            _ => "",
        };
        Ok(Self {
            client_id: client.to_owned(),
            usage_subject: usage_subject.to_owned(),
            external_user_id: actor.unwrap_or(usage_subject).to_owned(),
            actor_end_user_id: actor_end_user_id.to_owned(),
            kind,
            billing_subject: CustomerKey(subject.into()),
            auth_id,
        })
    }

    /// A request naming a compound id in `field` (`auth_id` or `subject`).
    pub fn from_compound(
        field: &'static str,
        raw: &str,
        rule: SubjectRule,
    ) -> Result<Self, IdentityError> {
        let claim = IdentityClaim::Request {
            client_id: None,
            external_user_id: None,
            compound: Some((field, raw)),
        };
        Self::resolve(claim, rule)
    }

    /// A request naming both halves (`client_id` and the usage subject,
    /// `external_user_id` in the sidecar's API); the `auth_id` is
    /// `client:subject`.
    pub fn from_parts(
        client_id: &str,
        usage_subject: &str,
        rule: SubjectRule,
    ) -> Result<Self, IdentityError> {
        let claim = IdentityClaim::Request {
            client_id: Some(client_id),
            external_user_id: Some(usage_subject),
            compound: None,
        };
        Self::resolve(claim, rule)
    }

    pub fn auth_id(&self) -> &AuthId {
        &self.auth_id
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn usage_subject(&self) -> &str {
        &self.usage_subject
    }

    pub fn external_user_id(&self) -> &str {
        &self.external_user_id
    }

    pub fn actor_end_user_id(&self) -> &str {
        &self.actor_end_user_id
    }

    pub fn kind(&self) -> SubjectKind {
        self.kind
    }

    /// `data.usage_subject_type`: owners are always `app_owner`; otherwise
    /// the event's own type when it gives one (`oidc_user`, …).
    pub fn usage_subject_type<'a>(&self, given: Option<&'a str>) -> &'a str {
        match (self.kind, given) {
            (SubjectKind::OwnerWallet, _) => "app_owner",
            (_, Some(given)) if !given.trim().is_empty() => given.trim(),
            _ => "external_user_id",
        }
    }

    pub fn customer_key(&self) -> CustomerKey {
        self.billing_subject.clone()
    }

    /// The customer key, borrowed (cache lookups on the hot path).
    pub fn billing_key(&self) -> &CustomerKey {
        &self.billing_subject
    }
}

/// A payer that is an end user's own wallet: `eu_…`, or its sandbox twin
/// `sbx_eu_…`.
fn is_end_user_wallet(payer: &str) -> bool {
    payer.starts_with(END_USER_PREFIX)
        || payer
            .strip_prefix(SANDBOX_END_USER_PREFIX)
            .is_some_and(|id| !id.is_empty())
}

/// Splits a usage subject at its first `#` when it is neither first nor
/// last: the payer, and the actor who used the payer's credit.
fn split_actor(usage: &str) -> (&str, Option<&str>) {
    match split_inside(usage, '#') {
        Some((payer, actor)) => (payer, Some(actor)),
        None => (usage, None),
    }
}

/// Splits `text` at the first `separator` when it is neither the first nor
/// the last character: upstream's one rule for `client:subject`,
/// `payer#actor` and `base:model`; `None` otherwise.
pub(crate) fn split_inside(text: &str, separator: char) -> Option<(&str, &str)> {
    let (before, after) = text.split_once(separator)?;
    (!before.is_empty() && !after.is_empty()).then_some((before, after))
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

impl UsdMicros {
    pub const ZERO: Self = Self {
        atoms: U256::ZERO,
        scale: 0,
    };

    /// Trailing zeros dropped, so equal amounts compare equal. Amounts that
    /// fit in 128 bits (every real fee) are divided natively: a 256-bit
    /// division per digit was 2% of the collector's CPU.
    fn new(atoms: U256, mut scale: u32) -> Self {
        let (high, mut low) = atoms.into_words();
        if high == 0 {
            while scale > 0 && low % 10 == 0 {
                low /= 10;
                scale -= 1;
            }
            return Self {
                atoms: U256::from(low),
                scale,
            };
        }
        let (mut atoms, ten) = (atoms, U256::from(10u8));
        while scale > 0 && atoms % ten == 0 {
            atoms /= ten;
            scale -= 1;
        }
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

impl fmt::Display for UsdMicros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scale == 0 {
            return write!(f, "{}", self.atoms);
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
        let digits = self.to_string();
        match json_number(&digits) {
            Some(number) => number.serialize(s),
            None => s.serialize_str(&digits),
        }
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

    fn upstream(auth_id: &str) -> Result<Identity, IdentityError> {
        Identity::resolve(
            IdentityClaim::event(Some(auth_id), None, None),
            SubjectRule::Upstream,
        )
    }

    /// (billing subject, client_id, usage_subject, external_user_id, kind)
    fn parts(id: &Identity) -> (String, &str, &str, &str, &'static str) {
        (
            id.customer_key().to_string(),
            id.client_id(),
            id.usage_subject(),
            id.external_user_id(),
            id.kind().as_str(),
        )
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
            for rule in [SubjectRule::Upstream, SubjectRule::AuthId] {
                assert!(Identity::from_compound("auth_id", raw, rule).is_err());
            }
        }
    }

    #[test]
    fn identity_from_parts_joins_with_colon() {
        let id = Identity::from_parts(" c ", "u", SubjectRule::Upstream).unwrap();
        assert_eq!(id.customer_key().as_str(), "c:u");
        assert_eq!(id.client_id(), "c");
    }

    #[test]
    fn an_owner_usage_subject_bills_the_bare_trimmed_owner() {
        for raw in ["app_abc:owner:2e51", "app_abc:owner: 2e51 "] {
            let id = upstream(raw).unwrap();
            assert_eq!(
                parts(&id),
                ("2e51".into(), "app_abc", "2e51", "2e51", "owner_wallet"),
                "{raw}"
            );
            assert_eq!(id.usage_subject_type(Some("oidc_user")), "app_owner");
            assert_eq!(id.auth_id().as_str(), raw.trim());
        }
    }

    #[test]
    fn an_empty_owner_id_is_refused() {
        for raw in ["app_x:owner:", "app_x:owner:   ", "app_x:owner: #actor"] {
            assert_eq!(
                upstream(raw).unwrap_err(),
                IdentityError::EmptyOwner,
                "{raw}"
            );
            assert_eq!(IdentityError::EmptyOwner.to_string(), "empty owner id");
        }
    }

    #[test]
    fn payer_hash_actor_bills_the_payer_and_keeps_the_actor_as_a_dimension() {
        assert_eq!(
            parts(&upstream("app_abc:owner:U1#actor-7").unwrap()),
            ("U1".into(), "app_abc", "U1", "actor-7", "owner_wallet")
        );
        let wallet = upstream("app_abc:eu_123#actor-9").unwrap();
        assert_eq!(
            parts(&wallet),
            (
                "eu_123".into(),
                "app_abc",
                "eu_123",
                "actor-9",
                "app_user_wallet"
            )
        );
        assert_eq!(wallet.actor_end_user_id(), "eu_123");
        assert_eq!(wallet.usage_subject_type(None), "external_user_id");
        assert_eq!(
            parts(&upstream("acme:bob#ci-runner").unwrap()),
            ("bob".into(), "acme", "bob", "ci-runner", "legacy_compound")
        );
    }

    #[test]
    fn a_sandbox_end_user_wallet_bills_as_the_wallet_it_is() {
        let wallet = upstream("app_abc:sbx_eu_123#actor-9").unwrap();
        assert_eq!(
            parts(&wallet),
            (
                "sbx_eu_123".into(),
                "app_abc",
                "sbx_eu_123",
                "actor-9",
                "app_user_wallet"
            )
        );
        assert_eq!(wallet.actor_end_user_id(), "sbx_eu_123");
        assert_eq!(
            parts(&upstream("app_abc:sbx_eu_7").unwrap()),
            (
                "sbx_eu_7".into(),
                "app_abc",
                "sbx_eu_7",
                "sbx_eu_7",
                "app_user_wallet"
            )
        );
    }

    #[test]
    fn a_bare_sandbox_prefix_is_no_wallet() {
        let id = upstream("app_abc:sbx_eu_").unwrap();
        assert_eq!(id.customer_key().as_str(), "app_abc:sbx_eu_");
        assert_eq!(id.kind(), SubjectKind::LegacyCompound);
    }

    #[test]
    fn an_end_user_wallet_without_actor_bills_itself() {
        assert_eq!(
            parts(&upstream("app_abc:eu_42").unwrap()),
            (
                "eu_42".into(),
                "app_abc",
                "eu_42",
                "eu_42",
                "app_user_wallet"
            )
        );
    }

    #[test]
    fn a_hash_first_or_last_is_part_of_the_subject() {
        for raw in ["acme:#x", "acme:bob#"] {
            let id = upstream(raw).unwrap();
            assert_eq!(id.customer_key().as_str(), raw, "{raw}");
        }
    }

    #[test]
    fn any_other_auth_id_bills_as_the_whole_compound() {
        assert_eq!(
            parts(&upstream("acme:user:with:colons").unwrap()),
            (
                "acme:user:with:colons".into(),
                "acme",
                "user:with:colons",
                "user:with:colons",
                "legacy_compound"
            )
        );
        assert_eq!(
            parts(&upstream("session_1").unwrap()),
            (
                "session_1".into(),
                "session_1",
                "session_1",
                "session_1",
                "legacy_compound"
            )
        );
    }

    #[test]
    fn only_a_compound_auth_id_names_an_owner() {
        let id = upstream("owner:").unwrap();
        assert_eq!(id.customer_key().as_str(), "owner:");
    }

    #[test]
    fn the_auth_id_rule_always_bills_the_whole_auth_id() {
        for raw in ["app_abc:owner:U1", "app_abc:eu_1#a", "app_x:owner:"] {
            let claim = IdentityClaim::event(Some(raw), None, None);
            let id = Identity::resolve(claim, SubjectRule::AuthId).unwrap();
            assert_eq!(id.customer_key().as_str(), raw);
            assert_eq!(id.kind(), SubjectKind::LegacyCompound);
        }
    }

    #[test]
    fn the_event_subject_type_is_kept_for_non_owners() {
        let id = upstream("acme:alice").unwrap();
        assert_eq!(id.usage_subject_type(Some(" oidc_user ")), "oidc_user");
        assert_eq!(id.usage_subject_type(Some("")), "external_user_id");
        assert_eq!(id.usage_subject_type(None), "external_user_id");
    }

    fn request<'a>(
        client_id: Option<&'a str>,
        external_user_id: Option<&'a str>,
        auth_id: Option<&'a str>,
    ) -> IdentityClaim<'a> {
        IdentityClaim::Request {
            client_id,
            external_user_id,
            compound: auth_id.map(|a| ("auth_id", a)),
        }
    }

    fn key_of(claim: IdentityClaim) -> Result<String, IdentityError> {
        Identity::resolve(claim, SubjectRule::Upstream).map(|id| id.customer_key().to_string())
    }

    #[test]
    fn an_event_is_billed_by_its_auth_id_before_its_halves() {
        let claim = IdentityClaim::event(Some("a:b"), Some("c"), Some("d"));
        assert_eq!(key_of(claim), Ok("a:b".into()));
    }

    #[test]
    fn an_event_without_auth_id_is_billed_by_its_joined_halves() {
        let claim = IdentityClaim::event(Some("  "), Some(" app "), Some("owner:U2"));
        assert_eq!(claim.named().as_deref(), Some("app:owner:U2"));
        assert_eq!(key_of(claim), Ok("U2".into()));
    }

    #[test]
    fn an_event_with_one_half_names_no_identity() {
        let claim = IdentityClaim::event(None, Some("app"), Some(" "));
        assert_eq!(claim.named(), None);
        assert_eq!(key_of(claim), Err(IdentityError::Missing));
    }

    #[test]
    fn a_request_is_ensured_by_its_halves_before_its_compound_id() {
        let claim = request(Some("c"), Some("d"), Some("a:b"));
        assert_eq!(key_of(claim), Ok("c:d".into()));
    }

    #[test]
    fn a_request_with_one_half_is_ensured_by_its_compound_id() {
        assert_eq!(
            key_of(request(Some("c"), None, Some("a:b"))),
            Ok("a:b".into())
        );
    }

    #[test]
    fn a_request_checks_each_half_under_its_own_name() {
        assert_eq!(
            key_of(request(Some(" "), Some("u"), None)),
            Err(IdentityError::Empty { field: "client_id" })
        );
    }

    #[test]
    fn a_request_compound_id_must_be_compound() {
        assert_eq!(
            key_of(request(None, None, Some("session_1"))),
            Err(IdentityError::NotCompound { field: "auth_id" })
        );
    }

    #[test]
    fn a_request_naming_nothing_is_a_missing_identity() {
        assert_eq!(
            key_of(request(None, Some("u"), None)),
            Err(IdentityError::Missing)
        );
    }

    #[test]
    fn a_separator_splits_only_between_two_non_empty_parts() {
        assert_eq!(split_inside("a:b:c", ':'), Some(("a", "b:c")));
        for text in [":a", "a:", ":", "a"] {
            assert_eq!(split_inside(text, ':'), None, "{text}");
        }
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
