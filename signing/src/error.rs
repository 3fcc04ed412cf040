//! The signing service's errors.

use eid_core::{AuditError, ConfigError, DbError};
use eid_hsm::HsmError;

use crate::tsa::FailureInfo;

/// Why the time-stamp authority could not start or could not issue a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TsaError {
    /// The request is refused; answered as a `rejection` with this reason.
    #[error("{} ({})", detail, reason.name())]
    Refused {
        /// The PKIFailureInfo bit.
        reason: FailureInfo,
        /// A short human explanation (sent as statusString: never internal detail).
        detail: String,
    },
    /// The TSU certificate is unfit to sign tokens, or its key is not the certified one.
    #[error("time-stamping unit: {0}")]
    Unit(String),
    /// The configuration does not allow the TSA to start.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Encoding part of a token or response failed.
    #[error("encoding {what} failed: {source}")]
    Encoding {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        source: der::Error,
    },
    /// The key layer could not sign.
    #[error("signing the time-stamp token failed: {0}")]
    Signing(#[from] HsmError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Appending to the audit log failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The serial number drawn is already in use (retried with a new one).
    #[error("time-stamp serial number already issued")]
    DuplicateSerial,
    /// A background task failed.
    #[error("time-stamp task failed: {0}")]
    Task(String),
}

impl TsaError {
    /// A refusal with `reason`.
    pub(crate) fn refused(reason: FailureInfo, detail: impl Into<String>) -> Self {
        Self::Refused {
            reason,
            detail: detail.into(),
        }
    }

    /// Wraps an encoder error with what was being encoded.
    pub(crate) fn encoding(what: &'static str) -> impl FnOnce(der::Error) -> Self {
        move |source| Self::Encoding { what, source }
    }
}
