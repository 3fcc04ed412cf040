//! Mobile ID: the citizen's keys are on the SIM, reached through the mobile operator's
//! signature gateway (MSSP). This is the key layer's seam for that kind of token, as
//! [`KeyStore`](crate::KeyStore) is for the soft store and PKCS#11: the SIM's private
//! keys never leave it, and the relying side only ever sees a signature and a
//! certificate.
//!
//! - [`protocol`]: the gateway's wire format (MID REST's shape) and its request rules;
//! - [`VerificationCode`]: the 4-digit code shown on both screens;
//! - [`MobileIdClient`]: the relying side's client, TLS with the gateway's key pinned;
//! - [`MobileIdError`]: every way a session can fail, with a message for the citizen.
//!
//! The SIM gateway simulator (`eid serve sim-gateway`, crate `eid-sim-gateway`) serves
//! the same protocol from SoftHSM2 SIMs for development and tests.

mod client;
mod code;
mod error;
pub mod protocol;

pub use client::{
    GatewayPin, MobileIdClient, MobileIdClientOptions, MobileIdRequest, MobileIdSession,
    MobileIdSignature, POLL_MARGIN,
};
pub use code::VerificationCode;
pub use error::MobileIdError;
pub use protocol::{
    CertificateRequest, CertificateResponse, DisplayTextFormat, ErrorBody, HashType, Language,
    Operation, ResultCode, SessionStarted, SessionState, SessionStatus, SignatureValue,
    StartRequest,
};
