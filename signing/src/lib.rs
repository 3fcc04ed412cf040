//! The signing service. Its HTTP surface (RFC 3161 at POST /tsa, the CSC API v2 under /csc/v2/, document signing and validation) grows from here.
#![forbid(unsafe_code)]

use axum::Router;
use eid_core::ServiceContext;

/// The service's name in `eid serve signing`, logs and metrics.
pub const SERVICE: &str = "signing";

/// What the service is, as its index page says.
pub const DESCRIPTION: &str =
    "signing service: RFC 3161 timestamps, CAdES/PAdES signatures, CSC API v2, validation";

/// The service's HTTP surface.
pub fn router(ctx: &ServiceContext) -> Router {
    eid_core::http::service_router(SERVICE, DESCRIPTION, ctx, Router::new())
}
