//! The signing service. Its HTTP surface: RFC 3161 time-stamps at `POST /tsa` (token
//! profile ETSI EN 319 422) and CAdES and PAdES baseline B/T/LT signatures made in two
//! steps for keys on a card or SIM (`POST /api/v1/signatures/prepare`, then
//! `POST /api/v1/signatures/{id}/finalize`), validation reports, and remote signing
//! by the CSC API v2 under `/csc/v2/` ([`csc`]), and organisations' e-seals under
//! `/api/v1/seals` ([`seal`]).
#![forbid(unsafe_code)]

pub mod cades;
pub mod cms;
pub mod csc;
mod error;
mod http;
pub mod pades;
pub mod seal;
mod service_keys;
pub mod tsa;
pub mod validation;

use axum::Router;
use eid_core::ServiceContext;

pub use cades::Signatures;
pub use error::{PdfError, SignatureError, TsaError};
pub use tsa::{TimeStampAuthority, TimeStampUnit};

/// The service's name in `eid serve signing`, logs and metrics.
pub const SERVICE: &str = "signing";

/// What the service is, as its index page says.
pub const DESCRIPTION: &str =
    "signing service: RFC 3161 timestamps, CAdES/PAdES signatures, CSC API v2, validation";

/// The service's HTTP surface.
pub fn router(
    ctx: &ServiceContext,
    tsa: &TimeStampAuthority,
    signatures: &Signatures,
    csc: Option<&csc::Csc>,
    seals: Option<&seal::Seals>,
) -> Router {
    let mut routes = http::routes(tsa, signatures);
    if let Some(csc) = csc {
        routes = routes.merge(csc::http::routes(csc));
    }
    if let Some(seals) = seals {
        routes = routes.merge(http::seal_routes(seals));
    }
    eid_core::http::service_router(SERVICE, DESCRIPTION, ctx, routes)
}
