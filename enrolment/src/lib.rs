//! The enrolment desk: online pre-registration, the service-centre desk where clerks
//! verify a citizen's identity in person (two identity documents, checked field by
//! field, exceptions approved by a supervisor who authenticates at that moment), and
//! the activation of the citizen's ID card or SIM: PINs set, key pairs generated on the
//! token, certificates issued by the CA and written back, the record sealed.
//!
//! - [`national_id`]: 13-digit numbers with a Verhoeff check digit;
//! - [`mrz`]: ICAO 9303 machine-readable zones, every check digit;
//! - [`names`]: comparing names across case, diacritics, spacing and transliteration;
//! - `applications`: pre-registration and search;
//! - `staff`: centres, desk workstations, staff, passkeys and desk sessions;
//! - `case`: consent, documents, photo, exceptions and decisions;
//! - `activation`: the crash-safe activation of a card or SIM;
//! - `remote`: remote signing credentials on the signing service's HSM, created,
//!   unlocked and withdrawn at the desk;
//! - `lifecycle`: suspension and resumption, PIN unblocking, card replacement and
//!   deactivation of an active identity, and its status for relying services;
//! - `record`: the sealed enrolment record and the receipt;
//! - `pages` and `http`: the desk's pages and the JSON API.
#![forbid(unsafe_code)]

mod activation;
mod applications;
mod card_login;
mod case;
mod error;
mod http;
mod lifecycle;
pub mod mrz;
pub mod names;
pub mod national_id;
mod ota;
mod pages;
mod queue;
mod record;
mod remote;
mod staff;

use std::{future::Future, pin::Pin, sync::Arc};

use axum::Router;
use eid_core::ServiceContext;

pub use activation::{ActivationOutcome, CardPins};
pub use applications::{Application, ApplicationStatus, NewApplication};
pub use card_login::{StaffCard, StaffCards};
pub use case::{Case, Decision, Document, DocumentInput, Exception};
pub use error::EnrolmentError;
pub use lifecycle::{IdentityStatus, UnblockPins};
pub use ota::{OtaOutcome, OtaRequest};
pub use queue::QueueRun;
pub use record::RecordCheck;
pub use remote::RemotePins;
pub use staff::{Role, StaffLink};

/// The service's name in `eid serve enrolment`, logs and metrics.
pub const SERVICE: &str = "enrolment";

/// What the service is, as its index page says.
pub const DESCRIPTION: &str =
    "enrolment desk: pre-registration, identity proofing, card and SIM activation";

/// What a port call returns: a boxed future (the ports are object-safe traits).
pub type PortFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PortError>> + Send + 'a>>;

/// A port call that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// The other service refused the request, saying why (a policy, a bad request).
    #[error("{0}")]
    Refused(String),
    /// The other service could not be reached or failed; the desk may retry later.
    #[error("{0}")]
    Unavailable(String),
}

/// Which certificate the CA is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateKind {
    /// The citizen's authentication certificate (logging in).
    Authentication,
    /// The citizen's qualified signature certificate.
    QualifiedSignature,
}

/// What the desk asks the CA to certify.
#[derive(Clone, Debug)]
pub struct CertificateRequest {
    /// Which certificate.
    pub kind: CertificateKind,
    /// PKCS#10, DER, signed by the key on the token (proof of possession).
    pub csr: Vec<u8>,
    /// The citizen's national identity number.
    pub national_id: String,
    /// Given name(s).
    pub given_name: String,
    /// Surname.
    pub surname: String,
    /// The key layer's evidence that the key sits on a signature creation device, with
    /// the key it describes (the CA requires it for the qualified certificate).
    pub key_evidence: Option<(eid_hsm::PublicKey, eid_hsm::QscdEvidence)>,
    /// The audit actor (`staff:ID@desk:ID`).
    pub requested_by: String,
}

/// A certificate the CA issued.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    /// Serial number, hex.
    pub serial: String,
    /// DER.
    pub der: Vec<u8>,
}

/// A certificate of a citizen, as the CA knows it.
#[derive(Clone, Debug)]
pub struct KnownCertificate {
    /// Serial number, hex.
    pub serial: String,
    /// `active`, `suspended`, `revoked`, ...
    pub status: String,
}

/// The desk's way to the certificate authority. The registration authority is the only
/// caller the CA's issuance accepts; the desk never touches CA keys.
pub trait CertificateIssuer: Send + Sync + std::fmt::Debug {
    /// Issues a certificate.
    fn issue(&self, request: CertificateRequest) -> PortFuture<'_, IssuedCertificate>;
    /// Every certificate issued to the citizen.
    fn certificates_of<'a>(&'a self, national_id: &'a str)
    -> PortFuture<'a, Vec<KnownCertificate>>;
    /// Revokes (`reason` an RFC 5280 reason name), suspends (`certificateHold`) or
    /// resumes (`resume`) a certificate.
    fn change_status<'a>(
        &'a self,
        serial: &'a str,
        change: &'a str,
        actor: &'a str,
    ) -> PortFuture<'a, ()>;
}

/// A citizen's remote signing credential, as the signing service knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteCredential {
    /// Its id in the CSC API.
    pub credential_id: String,
    /// Its certificate's serial, hex.
    pub serial: String,
    /// `active`, `locked` (wrong PINs) or `disabled` (withdrawn).
    pub status: String,
}

/// What the desk asks the signing service for: a credential for a citizen whose
/// identity it verified.
pub struct RemoteCredentialRequest {
    /// The id the desk chose and recorded before asking.
    pub credential_id: String,
    /// The citizen's national identity number.
    pub national_id: String,
    /// Given name(s).
    pub given_name: String,
    /// Surname.
    pub surname: String,
    /// The signing PIN the citizen chose.
    pub pin: secrecy::SecretString,
    /// The audit actor (`staff:ID@desk:ID`).
    pub requested_by: String,
}

impl std::fmt::Debug for RemoteCredentialRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCredentialRequest")
            .field("credential_id", &self.credential_id)
            .field("national_id", &self.national_id)
            .finish_non_exhaustive()
    }
}

/// The desk's way to the signing service's remote signing credentials (CSC API): the
/// key is generated on the service's HSM and certified by the CA there; the desk
/// never sees it.
pub trait RemoteSigning: Send + Sync + std::fmt::Debug {
    /// Why no credential can be created now (no HSM behind the service), if so.
    fn creation_refusal(&self) -> Option<String>;
    /// A fresh credential id, in the signing service's form.
    fn new_credential_id(&self) -> Result<String, PortError>;
    /// Creates the credential.
    fn create(&self, request: RemoteCredentialRequest) -> PortFuture<'_, RemoteCredential>;
    /// Every credential of the citizen, withdrawn ones too.
    fn credentials_of<'a>(&'a self, national_id: &'a str) -> PortFuture<'a, Vec<RemoteCredential>>;
    /// Unlocks a credential locked by wrong PINs.
    fn unlock<'a>(&'a self, credential_id: &'a str, actor: &'a str) -> PortFuture<'a, ()>;
    /// Withdraws a credential for good (disabled, certificate revoked for `reason`,
    /// key destroyed); also finishes a creation or withdrawal cut short.
    fn withdraw<'a>(
        &'a self,
        credential_id: &'a str,
        reason: &'a str,
        actor: &'a str,
    ) -> PortFuture<'a, ()>;
}

/// The enrolment service: what its handlers share. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Enrolment {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ctx: ServiceContext,
    webauthn: Option<webauthn_rs::Webauthn>,
    issuer: Option<Arc<dyn CertificateIssuer>>,
    remote: Option<Arc<dyn RemoteSigning>>,
    reader: Option<Arc<activation::Reader>>,
    limiter: applications::RateLimiter,
    status_limiter: applications::RateLimiter<String>,
    staff_cards: std::sync::OnceLock<Arc<dyn StaffCards>>,
}

impl Enrolment {
    /// Opens the service and, if configured, the desk's card reader. Without an issuer
    /// the desk verifies identities but cannot activate tokens (activation then says
    /// the CA is unreachable); without `remote`, it offers no remote signing
    /// credentials.
    pub async fn open(
        ctx: &ServiceContext,
        issuer: Option<Arc<dyn CertificateIssuer>>,
        remote: Option<Arc<dyn RemoteSigning>>,
    ) -> Result<Self, EnrolmentError> {
        let config = &ctx.config.enrolment;
        let webauthn = staff::relying_party(&config.public_url);
        if webauthn.is_none() {
            tracing::warn!(
                url = %config.public_url,
                "the enrolment desk's public URL has no host name: staff cannot log in with passkeys"
            );
        }
        let reader = match config.reader.clone() {
            Some(reader) => Some(Arc::new(
                tokio::task::spawn_blocking(move || activation::Reader::open(&reader))
                    .await
                    .map_err(|e| {
                        EnrolmentError::internal("opening the card reader")(e.to_string())
                    })??,
            )),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                ctx: ctx.clone(),
                webauthn,
                issuer,
                remote,
                reader,
                limiter: applications::RateLimiter::new(config.applications_per_minute),
                status_limiter: applications::RateLimiter::new(config.status_queries_per_minute),
                staff_cards: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The shared service context.
    pub fn ctx(&self) -> &ServiceContext {
        &self.inner.ctx
    }

    fn webauthn(&self) -> Option<&webauthn_rs::Webauthn> {
        self.inner.webauthn.as_ref()
    }

    fn issuer(&self) -> Result<&Arc<dyn CertificateIssuer>, EnrolmentError> {
        self.inner.issuer.as_ref().ok_or_else(|| {
            EnrolmentError::Unavailable(
                "the certificate authority is not reachable from this desk".into(),
            )
        })
    }

    fn remote(&self) -> Result<&Arc<dyn RemoteSigning>, EnrolmentError> {
        self.inner.remote.as_ref().ok_or_else(|| {
            EnrolmentError::Unavailable(
                "the signing service's remote credentials are not reachable from this desk".into(),
            )
        })
    }

    fn secure_cookies(&self) -> bool {
        self.ctx()
            .config
            .enrolment
            .public_url
            .starts_with("https://")
    }
}

/// The service's HTTP surface.
pub fn router(enrolment: &Enrolment) -> Router {
    eid_core::http::service_router(
        SERVICE,
        DESCRIPTION,
        enrolment.ctx(),
        http::routes(enrolment),
    )
}

/// The HTTP surface of the desk's ID-card listener (serve it with
/// `eid_core::http::serve_client_certificates`).
pub fn card_router(enrolment: &Enrolment) -> Router {
    eid_core::http::service_router(
        "enrolment-card",
        "Desk staff login with their ID card (TLS client certificate)",
        enrolment.ctx(),
        http::card_routes(enrolment),
    )
}

/// A fresh 256-bit token in base64url (cookies, links, ceremony ids).
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS generator failing is not something a request can cause or recover from.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    <base64ct::Base64UrlUnpadded as base64ct::Encoding>::encode_string(&bytes)
}

/// The SHA-256 of a secret token, hex: what the database keeps instead of the token.
pub(crate) fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// A short random identifier with a prefix (`app-…`, `doc-…`).
pub(crate) fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    format!(
        "{prefix}-{}",
        <base64ct::Base64UrlUnpadded as base64ct::Encoding>::encode_string(&bytes)
    )
}
