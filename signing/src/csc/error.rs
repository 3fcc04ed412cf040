//! The CSC API's errors, answered as the API defines them: an OAuth-style JSON object
//! `{"error": ..., "error_description": ...}` with the HTTP status.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::SignatureError;

/// Why a CSC request was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CscError {
    /// Malformed or inconsistent parameters, an unknown credential, a spent or
    /// expired SAD, hashes that were not authorised: 400 `invalid_request`.
    #[error("{0}")]
    InvalidRequest(String),
    /// No, an expired or a forged access token: 401 `invalid_token`.
    #[error("{0}")]
    InvalidToken(String),
    /// The token lacks the scope or authorisation the method needs: 403
    /// `insufficient_scope`.
    #[error("{0}")]
    InsufficientScope(String),
    /// The PIN is wrong (the credential is not yet locked): 400 `invalid_pin`.
    #[error("{message}")]
    InvalidPin {
        /// What to tell the caller, with the attempts left.
        message: String,
    },
    /// The credential is locked or its certificate is not usable: 403 `access_denied`.
    #[error("{0}")]
    AccessDenied(String),
    /// A hash or signature algorithm this service does not offer: 400
    /// `invalid_request` naming it.
    #[error("{0}")]
    UnsupportedAlgorithm(String),
    /// A service the API depends on (OCSP responder, TSA, the identity provider's
    /// keys, the CA) did not answer: 503 `temporarily_unavailable`.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: 500 `server_error`, details only in the log.
    #[error("{0}")]
    Internal(String),
}

impl CscError {
    /// The database failed while doing `what`.
    pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |e| Self::Internal(format!("{what}: {e}"))
    }

    /// The OAuth-style error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) | Self::UnsupportedAlgorithm(_) => "invalid_request",
            Self::InvalidToken(_) => "invalid_token",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::InvalidPin { .. } => "invalid_pin",
            Self::AccessDenied(_) => "access_denied",
            Self::Unavailable(_) => "temporarily_unavailable",
            Self::Internal(_) => "server_error",
        }
    }
}

impl From<SignatureError> for CscError {
    fn from(e: SignatureError) -> Self {
        match e {
            SignatureError::CertificateRevoked(m)
            | SignatureError::CertificateSuspended(m)
            | SignatureError::CertificateUnknown(m)
            | SignatureError::BadCertificate(m) => {
                Self::AccessDenied(format!("the credential's certificate cannot sign: {m}"))
            }
            SignatureError::RevocationUnavailable(m) | SignatureError::TimeStampUnavailable(m) => {
                Self::Unavailable(m)
            }
            SignatureError::BadRequest(m) => Self::InvalidRequest(m),
            SignatureError::UnsupportedAlgorithm(m) => Self::UnsupportedAlgorithm(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<eid_core::AuditError> for CscError {
    fn from(e: eid_core::AuditError) -> Self {
        Self::Internal(format!("audit log: {e}"))
    }
}

impl From<eid_core::DbError> for CscError {
    fn from(e: eid_core::DbError) -> Self {
        Self::Internal(format!("database: {e}"))
    }
}

impl IntoResponse for CscError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::InvalidRequest(_) | Self::UnsupportedAlgorithm(_) | Self::InvalidPin { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope(_) | Self::AccessDenied(_) => StatusCode::FORBIDDEN,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "CSC API failure");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let description = match &self {
            Self::Internal(_) => "the service failed; the operator's log has the details".into(),
            other => other.to_string(),
        };
        let mut response = (
            status,
            [(header::CACHE_CONTROL, "no-store")],
            Json(serde_json::json!({
                "error": self.code(),
                "error_description": description,
            })),
        )
            .into_response();
        // RFC 6750 §3: the challenge names the error for token problems.
        let challenge = match &self {
            Self::InvalidToken(_) => Some("Bearer error=\"invalid_token\""),
            Self::InsufficientScope(_) => Some("Bearer error=\"insufficient_scope\""),
            _ => None,
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
