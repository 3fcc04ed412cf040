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

/// Why a CAdES signature could not be prepared or finished. Each variant is one
/// answer of the signature API (see `http.rs` for the status and problem type).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No or an unknown bearer token.
    #[error("{0}")]
    Unauthorised(String),
    /// The request is malformed (JSON, base64, digest length, missing fields).
    #[error("{0}")]
    BadRequest(String),
    /// A digest or key algorithm this service does not sign with.
    #[error("{0}")]
    UnsupportedAlgorithm(String),
    /// The signer's certificate is unreadable, not issued by a trusted signing CA, not
    /// valid now, or not for signatures.
    #[error("{0}")]
    BadCertificate(String),
    /// No pending signature with this id for this caller.
    #[error("no pending signature {0}")]
    UnknownSignature(String),
    /// The pending signature expired before it was finalised.
    #[error("the pending signature {0} has expired; prepare it again")]
    Expired(String),
    /// The pending signature was already finalised (or refused): each is single-use.
    #[error("the pending signature {0} was already used")]
    AlreadyUsed(String),
    /// The signature value does not verify with the certificate's key over the
    /// prepared signed attributes.
    #[error("{0}")]
    InvalidSignature(String),
    /// The signer's certificate is revoked.
    #[error("{0}")]
    CertificateRevoked(String),
    /// The signer's certificate is suspended (certificateHold).
    #[error("{0}")]
    CertificateSuspended(String),
    /// The OCSP responder does not know the signer's certificate.
    #[error("{0}")]
    CertificateUnknown(String),
    /// The certificate's status could not be learnt (responder down, bad answer).
    #[error("{0}")]
    RevocationUnavailable(String),
    /// The time-stamp authority did not issue a token.
    #[error("{0}")]
    TimeStampUnavailable(String),
    /// The request (or the document in it) is larger than the service accepts.
    #[error("{0}")]
    TooLarge(String),
    /// The PDF cannot be signed as given (PAdES).
    #[error(transparent)]
    Pdf(#[from] PdfError),
    /// Encoding part of the signature failed.
    #[error("encoding {what} failed: {source}")]
    Encoding {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        source: der::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Appending to the audit log failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// Mobile ID gave no signature: the citizen cancelled or did not answer, has no
    /// mobile ID, or the SIM refused (`code` is the gateway's result code).
    #[error("mobile ID: {message} ({code})")]
    MobileIdRefused {
        /// The gateway's result code (`USER_CANCELLED`, `TIMEOUT`, ...).
        code: String,
        /// What to tell the citizen.
        message: String,
    },
    /// The mobile operator's gateway cannot be used now, or is not configured.
    #[error("{0}")]
    MobileIdUnavailable(String),
    /// The access token is valid but lacks the scope the call needs (RFC 6750).
    #[error("{0}")]
    InsufficientScope(String),
    /// The caller may not use this seal.
    #[error("{0}")]
    Forbidden(String),
    /// No seal with this id.
    #[error("no seal {0}")]
    UnknownSeal(String),
    /// The seal was withdrawn: its certificate is revoked, its key destroyed.
    #[error("the seal {0} was withdrawn")]
    SealWithdrawn(String),
    /// A signed PDF whose signatures cannot be extended (one fails validation or has
    /// no signature time-stamp).
    #[error("{0}")]
    NotExtendable(String),
    /// The operation cannot be done here (a seal key needs an HSM, a CA to certify it).
    #[error("{0}")]
    Refused(String),
    /// A service or device the operation needs (the HSM, the CA, the identity
    /// provider's keys) did not answer.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else internal.
    #[error("signature task failed: {0}")]
    Task(String),
}

impl SignatureError {
    /// Whether the caller caused it (answered 4xx), rather than the service (5xx).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::Unauthorised(_)
                | Self::BadRequest(_)
                | Self::UnsupportedAlgorithm(_)
                | Self::BadCertificate(_)
                | Self::UnknownSignature(_)
                | Self::Expired(_)
                | Self::AlreadyUsed(_)
                | Self::InvalidSignature(_)
                | Self::CertificateRevoked(_)
                | Self::CertificateSuspended(_)
                | Self::CertificateUnknown(_)
                | Self::TooLarge(_)
                | Self::InsufficientScope(_)
                | Self::Forbidden(_)
                | Self::UnknownSeal(_)
                | Self::SealWithdrawn(_)
                | Self::Refused(_)
                | Self::NotExtendable(_)
        ) || matches!(self, Self::Pdf(pdf) if pdf.is_client_error())
    }
}

/// Why a PDF cannot be signed (PAdES): each variant is one problem the caller can act on,
/// except [`PdfError::NoRoom`], which is the service's own misjudgement.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PdfError {
    /// The input is not a PDF at all (no `%PDF-` header).
    #[error("the document is not a PDF: {0}")]
    NotPdf(String),
    /// The PDF is encrypted; signing it would need its password and a re-encryption
    /// this service does not do.
    #[error("the PDF is encrypted; remove the encryption before signing it")]
    Encrypted,
    /// The cross-reference data is damaged (offsets that do not point where they
    /// should, no `startxref`): an incremental update would build on sand.
    #[error("the PDF's cross-reference data is broken ({0}); repair the file before signing it")]
    BrokenXref(String),
    /// The PDF's structure is unreadable (no catalog, no pages, bad objects).
    #[error("the PDF is malformed: {0}")]
    Malformed(String),
    /// A certification signature (DocMDP, P=1) forbids any change, signatures included.
    #[error(
        "the PDF is certified with no changes permitted (DocMDP P=1); it cannot be signed again"
    )]
    ChangesForbidden,
    /// The PDF uses something this signer does not handle.
    #[error("the PDF cannot be signed here: {0}")]
    Unsupported(String),
    /// The visible signature asked for cannot be placed (no such page, a box off the
    /// page or too small).
    #[error("the visible signature cannot be placed: {0}")]
    BadAppearance(String),
    /// The document is over the size limit.
    #[error("the PDF has {size} octets; at most {limit} are accepted")]
    TooLarge {
        /// The document's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The finished CMS does not fit the space reserved for it in `/Contents`.
    #[error(
        "the signature ({needed} octets) does not fit the {reserved} octets reserved for it in the PDF"
    )]
    NoRoom {
        /// The CMS's size.
        needed: usize,
        /// The space reserved at prepare.
        reserved: usize,
    },
}

impl PdfError {
    /// Whether the caller's document caused it (a 4xx), rather than the service.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Self::NoRoom { .. })
    }
}
