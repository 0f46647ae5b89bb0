//! Who is billed for a ticket or a provisioning request: the identity
//! rules, and the one precedence per kind of input.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use serde::Serialize;

use super::auth_id::{AuthId, IdentityError};
use super::split::split_inside;
use crate::contract::SubjectRule;

/// The OpenMeter customer key (also its name and its one subject key): the
/// identity's billing subject.
/// Shared: the identity, its event's `subject` and the ensure round hold one
/// copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerKey(Arc<str>);

impl Serialize for CustomerKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

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
/// customer key and its usage-attribution subject at once. Shared: a clone
/// is a reference count, so the event's `data`, its batch and the ensure
/// round hold the one identity decode built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity(Arc<Parts>);

/// An identity's parts. All but the billing subject are stretches of the
/// `auth_id`, kept as where they lie in it rather than as copies.
#[derive(Debug, PartialEq, Eq)]
struct Parts {
    auth_id: AuthId,
    client_id: Range<usize>,
    /// The payer: the bare owner id, the `eu_` wallet, or the usage subject.
    usage_subject: Range<usize>,
    /// The actor of `payer#actor`, else the payer (a group-by dimension).
    external_user_id: Range<usize>,
    /// The `eu_` wallet that pays, when one does (else empty).
    actor_end_user_id: Range<usize>,
    kind: SubjectKind,
    billing_subject: CustomerKey,
}

impl Parts {
    fn part(&self, span: &Range<usize>) -> &str {
        self.auth_id.as_str().get(span.clone()).unwrap_or_default()
    }
}

/// Where `part`, a slice of `whole` or empty, lies in `whole`.
fn span(whole: &str, part: &str) -> Range<usize> {
    if part.is_empty() {
        return 0..0;
    }
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    debug_assert!(
        start + part.len() <= whole.len(),
        "{part:?} is not in {whole:?}"
    );
    start..start + part.len()
}

/// Hashes what tells identities apart (`auth_id` and the billing subject;
/// the other parts follow from them under one rule) rather than every
/// part: batches hash every event's identity. Consistent with `Eq`, which
/// still compares every part.
impl std::hash::Hash for Identity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.auth_id.hash(state);
        self.0.billing_subject.hash(state);
    }
}

impl Identity {
    /// A test's identity: `raw` billed whole, by the seed's rule.
    #[cfg(test)]
    pub(crate) fn of_auth_id(raw: &str) -> Self {
        Self::from_auth_id(AuthId::parse("auth_id", raw).expect("a valid auth_id"))
    }

    /// The seed's rule, which cannot fail: the whole `auth_id` is billed; a
    /// non-compound one has both halves equal to itself.
    pub fn from_auth_id(auth_id: AuthId) -> Self {
        let (client, user) = auth_id
            .split()
            .unwrap_or((auth_id.as_str(), auth_id.as_str()));
        let spans = [client, user, user, ""].map(|part| span(auth_id.as_str(), part));
        let subject = CustomerKey(auth_id.as_str().into());
        Self::of(auth_id, spans, SubjectKind::LegacyCompound, subject)
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
        let parts = [
            client,
            usage_subject,
            actor.unwrap_or(usage_subject),
            actor_end_user_id,
        ];
        let spans = parts.map(|part| span(auth_id.as_str(), part));
        let subject = CustomerKey(subject.into());
        Ok(Self::of(auth_id, spans, kind, subject))
    }

    /// An identity of `auth_id` whose `client_id`, `usage_subject`,
    /// `external_user_id` and `actor_end_user_id` lie at `spans` in it.
    fn of(
        auth_id: AuthId,
        [client_id, usage_subject, external_user_id, actor_end_user_id]: [Range<usize>; 4],
        kind: SubjectKind,
        billing_subject: CustomerKey,
    ) -> Self {
        Self(Arc::new(Parts {
            auth_id,
            client_id,
            usage_subject,
            external_user_id,
            actor_end_user_id,
            kind,
            billing_subject,
        }))
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
        &self.0.auth_id
    }

    pub fn client_id(&self) -> &str {
        self.0.part(&self.0.client_id)
    }

    pub fn usage_subject(&self) -> &str {
        self.0.part(&self.0.usage_subject)
    }

    pub fn external_user_id(&self) -> &str {
        self.0.part(&self.0.external_user_id)
    }

    pub fn actor_end_user_id(&self) -> &str {
        self.0.part(&self.0.actor_end_user_id)
    }

    pub fn kind(&self) -> SubjectKind {
        self.0.kind
    }

    /// `data.usage_subject_type`: owners are always `app_owner`; otherwise
    /// the event's own type when it gives one (`oidc_user`, …).
    pub fn usage_subject_type<'a>(&self, given: Option<&'a str>) -> &'a str {
        match (self.0.kind, given) {
            (SubjectKind::OwnerWallet, _) => "app_owner",
            (_, Some(given)) if !given.trim().is_empty() => given.trim(),
            _ => "external_user_id",
        }
    }

    pub fn customer_key(&self) -> CustomerKey {
        self.0.billing_subject.clone()
    }

    /// The customer key, borrowed (cache lookups on the hot path).
    pub fn billing_key(&self) -> &CustomerKey {
        &self.0.billing_subject
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
