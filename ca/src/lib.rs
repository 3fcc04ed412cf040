//! The certificate authority: the CA hierarchy, citizen certificate profiles, the
//! issuance pipeline, revocation, CRLs and OCSP.
//!
//! HTTP surface: CA certificates at the caIssuers URLs written into certificates
//! (`GET /ca/{role}.crt`), and the issuance API for the registration authority.
#![forbid(unsafe_code)]

pub mod csr;
mod error;
pub mod extensions;
pub mod hierarchy;
mod issue;
mod names;
mod profile;
mod serial;

use axum::{
    Router,
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use eid_core::{ServiceContext, http::Problem};

pub use error::CaError;
pub use hierarchy::{Authority, CaRole, Hierarchy};
pub use issue::{IssueRequest, IssuedCertificate, KeyEvidence};
pub use names::{NationalId, PersonName};
pub use profile::Profile;
pub use serial::CertificateSerial;

/// The service's name in `eid serve ca`, logs and metrics.
pub const SERVICE: &str = "ca";

/// What the service is, as its index page says.
pub const DESCRIPTION: &str =
    "certificate authority: CA hierarchy, citizen certificates, revocation, CRL and OCSP";

/// The certificate authority: its hierarchy and what it needs to issue.
#[derive(Clone, Debug)]
pub struct CertificateAuthority {
    ctx: ServiceContext,
    hierarchy: Hierarchy,
}

impl CertificateAuthority {
    /// Loads the hierarchy, creating what is missing (the embedded default's first run).
    pub async fn open(ctx: &ServiceContext) -> Result<Self, CaError> {
        Ok(Self {
            hierarchy: Hierarchy::ensure(ctx).await?,
            ctx: ctx.clone(),
        })
    }

    /// The hierarchy.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }
}

async fn ca_certificate(
    State(ca): State<CertificateAuthority>,
    Path(file): Path<String>,
) -> Response {
    let role = file.strip_suffix(".crt").and_then(CaRole::parse);
    match role.and_then(|role| ca.hierarchy.get(role).ok()) {
        Some(authority) => (
            [
                (header::CONTENT_TYPE, "application/pkix-cert"),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            authority.der.clone(),
        )
            .into_response(),
        None => Problem::new(
            axum::http::StatusCode::NOT_FOUND,
            "not-found",
            format!("no CA certificate {file:?}; known: {}", role_list()),
        )
        .into_response(),
    }
}

fn role_list() -> String {
    CaRole::ALL
        .iter()
        .map(|r| format!("{}.crt", r.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The service's HTTP surface.
pub fn router(ca: &CertificateAuthority) -> Router {
    let routes = Router::new()
        .route("/ca/{file}", get(ca_certificate))
        .with_state(ca.clone());
    eid_core::http::service_router(SERVICE, DESCRIPTION, &ca.ctx, routes)
}
