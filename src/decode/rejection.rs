//! Why a record cannot be billed, and the dead-letter class of each reason.

use thiserror::Error;

use super::depth::MAX_DEPTH;
use crate::dlq::DeadLetterKind;
use crate::domain::{FeeError, IdentityError};

/// Why a record cannot be billed. Every one is dead-lettered with this text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    #[error("empty payload")]
    Empty,
    #[error("payload of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("envelope has no type")]
    NoType,
    #[error("data is not a JSON object")]
    DataNotObject,
    #[error("malformed create_signed_ticket data: {0}")]
    MalformedData(String),
    /// Neither `auth_id` nor `client_id` + `usage_subject` (today's rule).
    #[error("missing identity")]
    NoIdentity,
    /// The seed's wording, kept under `BILLING_SUBJECT=auth_id`.
    #[error("missing identity (auth_id missing)")]
    NoAuthId,
    #[error("missing identity (auth_id empty)")]
    EmptyAuthId,
    #[error("identity: empty owner id")]
    EmptyOwner,
    #[error("invalid identity: {0}")]
    Identity(IdentityError),
    #[error("{0}")]
    Fee(#[from] FeeError),
}

impl Rejection {
    /// The class its dead letter is filed under.
    pub fn kind(&self) -> DeadLetterKind {
        match self {
            Self::Empty
            | Self::TooLarge { .. }
            | Self::TooDeep
            | Self::Malformed(_)
            | Self::NoType => DeadLetterKind::Malformed,
            Self::DataNotObject | Self::MalformedData(_) => DeadLetterKind::InvalidData,
            Self::NoIdentity
            | Self::NoAuthId
            | Self::EmptyAuthId
            | Self::EmptyOwner
            | Self::Identity(_) => DeadLetterKind::Identity,
            Self::Fee(_) => DeadLetterKind::Fee,
        }
    }
}
