//! The OpenID Connect identity provider. Its HTTP surface (discovery, authorize, token, userinfo, login and consent pages) grows from here.
#![forbid(unsafe_code)]

use axum::Router;
use eid_core::ServiceContext;

/// The service's name in `eid serve idp`, logs and metrics.
pub const SERVICE: &str = "idp";

/// What the service is, as its index page says.
pub const DESCRIPTION: &str =
    "OpenID Connect identity provider: ID card, mobile ID and passkey login";

/// The service's HTTP surface.
pub fn router(ctx: &ServiceContext) -> Router {
    eid_core::http::service_router(SERVICE, DESCRIPTION, ctx, Router::new())
}
