//! The provider's errors: domain failures ([`IdpError`]) and the OAuth 2.0 / OpenID
//! Connect errors sent to relying parties ([`OAuthError`]).

use eid_core::{AuditError, DbError};

/// A failure inside the provider.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdpError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
    /// The audit log could not be appended.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The key layer failed.
    #[error("key layer: {0}")]
    Keys(#[from] eid_hsm::HsmError),
    /// A signature could not be made.
    #[error(transparent)]
    Jose(#[from] crate::jose::JoseError),
    /// A value given by an operator (a client registration, a command argument) is wrong.
    #[error("{what}: {detail}")]
    Invalid {
        /// Which value.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// Something asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Stored data could not be read back.
    #[error("stored {what} is damaged: {detail}")]
    Stored {
        /// Which data.
        what: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// The TLS listener could not be set up.
    #[error("TLS: {0}")]
    Tls(String),
}

impl IdpError {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn stored(what: &'static str, detail: impl ToString) -> Self {
        Self::Stored {
            what,
            detail: detail.to_string(),
        }
    }
}

/// `sqlx` errors in a query, named by what the query was for.
pub(crate) fn query(operation: &'static str) -> impl FnOnce(sqlx::Error) -> IdpError {
    move |e| IdpError::Database(DbError::query(operation)(e))
}

/// An error as RFC 6749 (and the specs extending it) define them: a registered code,
/// a human-readable description, and the HTTP status it travels with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// The `error` code (`invalid_request`, `invalid_grant`, ...).
    pub code: &'static str,
    /// `error_description`: what exactly was wrong. Never internal detail.
    pub description: String,
    /// The HTTP status for direct responses (token, userinfo, PAR, ...).
    pub status: u16,
}

impl OAuthError {
    fn new(code: &'static str, description: impl Into<String>, status: u16) -> Self {
        Self {
            code,
            description: description.into(),
            status,
        }
    }

    /// `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description, 400)
    }
    /// `invalid_client` (401: the client failed to authenticate).
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new("invalid_client", description, 401)
    }
    /// `invalid_grant`.
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description, 400)
    }
    /// `unauthorized_client`.
    pub fn unauthorized_client(description: impl Into<String>) -> Self {
        Self::new("unauthorized_client", description, 400)
    }
    /// `unsupported_grant_type`.
    pub fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Self::new("unsupported_grant_type", description, 400)
    }
    /// `unsupported_response_type`.
    pub fn unsupported_response_type(description: impl Into<String>) -> Self {
        Self::new("unsupported_response_type", description, 400)
    }
    /// `invalid_scope`.
    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new("invalid_scope", description, 400)
    }
    /// `access_denied`.
    pub fn access_denied(description: impl Into<String>) -> Self {
        Self::new("access_denied", description, 403)
    }
    /// `login_required` (OpenID Connect Core 3.1.2.6).
    pub fn login_required(description: impl Into<String>) -> Self {
        Self::new("login_required", description, 400)
    }
    /// `consent_required`.
    pub fn consent_required(description: impl Into<String>) -> Self {
        Self::new("consent_required", description, 400)
    }
    /// `interaction_required`.
    pub fn interaction_required(description: impl Into<String>) -> Self {
        Self::new("interaction_required", description, 400)
    }
    /// `request_not_supported`.
    pub fn request_not_supported(description: impl Into<String>) -> Self {
        Self::new("request_not_supported", description, 400)
    }
    /// `request_uri_not_supported`.
    pub fn request_uri_not_supported(description: impl Into<String>) -> Self {
        Self::new("request_uri_not_supported", description, 400)
    }
    /// `invalid_request_uri`.
    pub fn invalid_request_uri(description: impl Into<String>) -> Self {
        Self::new("invalid_request_uri", description, 400)
    }
    /// `invalid_authorization_details` (RFC 9396 5).
    pub fn invalid_authorization_details(description: impl Into<String>) -> Self {
        Self::new("invalid_authorization_details", description, 400)
    }
    /// `invalid_token` (RFC 6750; 401).
    pub fn invalid_token(description: impl Into<String>) -> Self {
        Self::new("invalid_token", description, 401)
    }
    /// `insufficient_scope` (RFC 6750; 403).
    pub fn insufficient_scope(description: impl Into<String>) -> Self {
        Self::new("insufficient_scope", description, 403)
    }
    /// `invalid_dpop_proof` (RFC 9449).
    pub fn invalid_dpop_proof(description: impl Into<String>) -> Self {
        Self::new("invalid_dpop_proof", description, 400)
    }
    /// `authorization_pending` (CIBA: the citizen has not answered yet).
    pub fn authorization_pending(description: impl Into<String>) -> Self {
        Self::new("authorization_pending", description, 400)
    }
    /// `slow_down` (CIBA: polled faster than the interval).
    pub fn slow_down(description: impl Into<String>) -> Self {
        Self::new("slow_down", description, 400)
    }
    /// `expired_token` (CIBA: the request expired before the citizen answered).
    pub fn expired_token(description: impl Into<String>) -> Self {
        Self::new("expired_token", description, 400)
    }
    /// `access_denied` at the token endpoint (CIBA: the citizen or their SIM refused).
    pub fn access_denied_at_token(description: impl Into<String>) -> Self {
        Self::new("access_denied", description, 400)
    }
    /// `invalid_binding_message` (CIBA).
    pub fn invalid_binding_message(description: impl Into<String>) -> Self {
        Self::new("invalid_binding_message", description, 400)
    }
    /// `temporarily_unavailable` (503): a service the request needs is down.
    pub fn temporarily_unavailable(description: impl Into<String>) -> Self {
        Self::new("temporarily_unavailable", description, 503)
    }
    /// `server_error`: the detail went to the log, not to the client.
    pub fn server_error() -> Self {
        Self::new(
            "server_error",
            "the provider could not complete the request; it has been logged",
            500,
        )
    }
}

impl From<IdpError> for OAuthError {
    fn from(error: IdpError) -> Self {
        tracing::error!(%error, "request failed inside the provider");
        Self::server_error()
    }
}
