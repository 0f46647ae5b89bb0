//! The ticket's identity, by the one entry point in `domain`, and the
//! wording of a ticket that names none.

use super::envelope::TicketData;
use super::rejection::Rejection;
use crate::contract::SubjectRule;
use crate::domain::{Identity, IdentityClaim, IdentityError};

/// The ticket's identity ([`IdentityClaim::Event`]), resolved by `rule`.
pub(super) fn identity(data: &TicketData, rule: SubjectRule) -> Result<Identity, Rejection> {
    let claim = IdentityClaim::event(
        data.auth_id.as_deref(),
        data.client_id.as_deref(),
        data.usage_subject.as_deref(),
    );
    Identity::resolve(claim, rule).map_err(|e| match e {
        IdentityError::Missing => missing_identity(rule, data.auth_id.is_some()),
        IdentityError::EmptyOwner => Rejection::EmptyOwner,
        e => Rejection::Identity(e),
    })
}

/// Today's wording, or the seed's under its subject rule.
fn missing_identity(rule: SubjectRule, auth_id_given: bool) -> Rejection {
    match (rule, auth_id_given) {
        (SubjectRule::Upstream, _) => Rejection::NoIdentity,
        (SubjectRule::AuthId, true) => Rejection::EmptyAuthId,
        (SubjectRule::AuthId, false) => Rejection::NoAuthId,
    }
}
