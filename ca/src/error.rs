//! Errors of the certificate authority.

/// What went wrong in the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The request is malformed or names something that does not exist.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request is well-formed but the profile or policy refuses it.
    #[error("refused: {0}")]
    Refused(String),
    /// The caller may not use this operation.
    #[error("not authorised: {0}")]
    Unauthorised(String),
    /// No such certificate.
    #[error("no certificate with serial {0}")]
    UnknownCertificate(String),
    /// The operation conflicts with the certificate's state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A planned certificate failed its pre-signing lint: a bug, the CA key was not used.
    #[error("lint before signing failed ({profile}): {finding}")]
    Lint {
        /// The profile.
        profile: &'static str,
        /// What is wrong with the TBS certificate.
        finding: String,
    },
    /// The signed certificate is not what was planned (or its signature does not verify).
    #[error("signed certificate does not match the plan: {0}")]
    Mismatch(String),
    /// A structure could not be encoded or decoded.
    #[error("cannot encode or decode {what}: {detail}")]
    Encoding {
        /// The structure.
        what: &'static str,
        /// The cause.
        detail: String,
    },
    /// The key layer failed.
    #[error("key layer: {0}")]
    Key(#[from] eid_hsm::HsmError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] eid_core::DbError),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] eid_core::AuditError),
    /// A background task failed.
    #[error("task failed: {0}")]
    Task(String),
}

impl CaError {
    pub(crate) fn encoding(what: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Encoding {
            what,
            detail: error.to_string(),
        }
    }

    pub(crate) fn query(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Db(eid_core::DbError::Query { operation, source })
    }
}
