//! The certificate authority: the CA hierarchy, citizen certificate profiles, the
//! issuance pipeline, revocation, CRLs and OCSP.
//!
//! HTTP surface: CA certificates at the caIssuers URLs written into certificates
//! (`GET /ca/{role}.crt`), and the issuance API for the registration authority
//! (`POST /api/v1/certificates`, bearer token of a configured issuance client), OCSP
//! (`POST /ocsp/{issuer}` and RFC 5019 `GET /ocsp/{issuer}/{request}`) and CRLs
//! (`GET /crl/{issuer}.crl`, delta CRLs at `/crl/{issuer}-delta.crl`, the root's at
//! `/crl/root.crl`) at the URLs written into certificates.
#![forbid(unsafe_code)]

pub mod ceremony;
pub mod crl;
pub mod csr;
mod error;
pub mod extensions;
pub mod hierarchy;
mod http;
mod issue;
mod names;
pub mod ocsp;
mod profile;
mod publication;
pub mod reason;
mod responder;
mod revoke;
mod serial;

use axum::Router;
use eid_core::ServiceContext;

pub use error::CaError;
pub use hierarchy::{Authority, CaRole, Hierarchy};
pub use issue::{Holder, IssueRequest, IssuedCertificate, KeyEvidence};
pub use names::{NationalId, Organisation, PersonName};
pub use profile::Profile;
pub use publication::{CrlKind, PublishedCrl};
pub use responder::{CacheInfo, OcspAnswer};
pub use revoke::{CaRevoked, CertificateSummary, Rekeyed, StatusChange, StatusChanged};
pub use serial::CertificateSerial;

/// A time as stored and recorded: RFC 3339, UTC.
pub(crate) fn rfc3339(at: time::OffsetDateTime) -> Result<String, CaError> {
    at.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| CaError::encoding("time", e))
}

/// Parses a stored RFC 3339 time.
pub(crate) fn parse_rfc3339(text: &str) -> Result<time::OffsetDateTime, CaError> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| CaError::encoding("stored time", e))
}

/// The service's name in `eid serve ca`, logs and metrics.
pub const SERVICE: &str = "ca";

/// What the service is, as its index page says.
pub const DESCRIPTION: &str =
    "certificate authority: CA hierarchy, citizen certificates, revocation, CRL and OCSP";

/// The certificate authority: its hierarchy and what it needs to issue.
#[derive(Clone, Debug)]
pub struct CertificateAuthority {
    ctx: ServiceContext,
    /// Shared: the CA is cloned for every request it serves (axum's state), and a deep
    /// copy of every certificate was a quarter of a signed OCSP response's cost.
    hierarchy: std::sync::Arc<Hierarchy>,
    responder: std::sync::Arc<responder::ResponderState>,
    /// The CA roles this process signs nothing more as, and why: revoked, or replaced
    /// since it loaded them. Reloaded when another process changes revocation status
    /// (the revocation epoch).
    out_of_service: std::sync::Arc<std::sync::RwLock<std::collections::BTreeMap<CaRole, String>>>,
}

impl CertificateAuthority {
    /// Loads the hierarchy, creating what is missing (the embedded default's first run).
    pub async fn open(ctx: &ServiceContext) -> Result<Self, CaError> {
        let hierarchy = Hierarchy::ensure(ctx).await?;
        let ca = Self {
            responder: std::sync::Arc::new(responder::ResponderState::new(&hierarchy)?),
            hierarchy: std::sync::Arc::new(hierarchy),
            ctx: ctx.clone(),
            out_of_service: std::sync::Arc::default(),
        };
        ca.load_out_of_service().await?;
        Ok(ca)
    }

    /// The hierarchy.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// Where this configuration's CA service listens.
    pub fn config_listen(&self) -> std::net::SocketAddr {
        self.ctx.config.listen.ca
    }
}

/// The service's HTTP surface.
pub fn router(ca: &CertificateAuthority) -> Router {
    eid_core::http::service_router(SERVICE, DESCRIPTION, &ca.ctx, http::routes(ca))
}
