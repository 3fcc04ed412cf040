//! The enrolment desk. Its HTTP surface (the pre-registration API and page, the clerk desk) grows from here.
#![forbid(unsafe_code)]

use axum::Router;
use eid_core::ServiceContext;

/// The service's name in `eid serve enrolment`, logs and metrics.
pub const SERVICE: &str = "enrolment";

/// What the service is, as its index page says.
pub const DESCRIPTION: &str =
    "enrolment desk: pre-registration, identity proofing, card and SIM activation";

/// The service's HTTP surface.
pub fn router(ctx: &ServiceContext) -> Router {
    eid_core::http::service_router(SERVICE, DESCRIPTION, ctx, Router::new())
}
