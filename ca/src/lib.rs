//! The certificate authority. Its HTTP surface (OCSP, CRL and CA-certificate publication, and the issuance API reachable only by the registration authority) grows from here.
#![forbid(unsafe_code)]

pub mod crl;
pub mod ocsp;
pub mod reason;

use axum::Router;
use eid_core::ServiceContext;

/// The service's name in `eid serve ca`, logs and metrics.
pub const SERVICE: &str = "ca";

/// What the service is, as its index page says.
pub const DESCRIPTION: &str =
    "certificate authority: CA hierarchy, citizen certificates, revocation, CRL and OCSP";

/// The service's HTTP surface.
pub fn router(ctx: &ServiceContext) -> Router {
    eid_core::http::service_router(SERVICE, DESCRIPTION, ctx, Router::new())
}
