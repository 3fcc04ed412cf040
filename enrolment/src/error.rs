//! What can go wrong at the desk, in terms a clerk (or an API caller) can act on.

/// An enrolment operation that did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrolmentError {
    /// The input is wrong; the message says which field and why.
    #[error("{0}")]
    Invalid(String),
    /// The application is not in a state that allows this step (a double submission,
    /// a step out of order).
    #[error("{0}")]
    Conflict(String),
    /// No such application, staff member or desk.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (role, own case, unregistered desk).
    #[error("{0}")]
    Forbidden(String),
    /// Too many pre-registrations from one address.
    #[error("too many applications from this address; try again in a minute")]
    RateLimited,
    /// Another service, or the card reader, cannot be used right now.
    #[error("{0}")]
    Unavailable(String),
    /// The card or SIM refused or failed (wrong token, not blank, no card).
    #[error("{0}")]
    Token(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] eid_core::DbError),
    /// Writing the audit log failed.
    #[error(transparent)]
    Audit(#[from] eid_core::audit::AuditError),
    /// Something inside the service failed; the detail goes to the log only.
    #[error("{operation}: {detail}")]
    Internal {
        /// What was being done.
        operation: &'static str,
        /// What failed.
        detail: String,
    },
}

impl EnrolmentError {
    /// Whether the failure is the service's, not the caller's (logged, 5xx).
    pub fn is_internal(&self) -> bool {
        matches!(self, Self::Db(_) | Self::Audit(_) | Self::Internal { .. })
    }

    pub(crate) fn internal(operation: &'static str) -> impl FnOnce(String) -> Self {
        move |detail| Self::Internal { operation, detail }
    }
}

/// Wraps a query error with what was being done.
pub(crate) fn query(operation: &'static str) -> impl FnOnce(sqlx::Error) -> EnrolmentError {
    move |e| EnrolmentError::Db(eid_core::DbError::query(operation)(e))
}

impl From<eid_hsm::HsmError> for EnrolmentError {
    fn from(e: eid_hsm::HsmError) -> Self {
        match e {
            eid_hsm::HsmError::PinPolicy { .. } => Self::Invalid(e.to_string()),
            other => Self::Token(other.to_string()),
        }
    }
}
