//! Shared plumbing for every eid service: configuration, the database, the audit log,
//! the clock, and HTTP scaffolding (`/healthz`, `/metrics`, problem+json, graceful
//! serving).
#![forbid(unsafe_code)]

pub mod audit;
mod clock;
pub mod config;
mod db;
pub mod group_commit;
pub mod http;
pub mod instance;
mod logging;
pub mod web;

use std::sync::Arc;

pub use audit::{AuditError, AuditEvent, Outcome};
pub use clock::{Clock, FixedClock, SystemClock};
pub use config::{
    ApiClient, CadesConfig, CeremonyCertificate, CeremonyConfig, ClockTrustConfig, Config,
    ConfigError, DocumentType, EnrolmentConfig, IdpConfig, KeysConfig, Listeners, NtpServer,
    OsSyncCheck, ReaderConfig, SigningConfig, SimGatewayConfig, SoftSecretConfig, TsaConfig,
};
pub use db::{Backend, Database, DbError, WriteTurn, WriteTx};
pub use logging::init_logging;

/// Whether a service's CA-issued certificate may still be used, as the CA sees it.
/// Services holding one (the TSA's unit, the idp's TLS server certificate) ask before
/// every use, so a revoked certificate stops signing at once rather than at restart.
pub trait CertificateStanding: Send + Sync + std::fmt::Debug {
    /// Why the certificate may not be used now, if it may not. Called per use: cheap.
    fn withdrawn(&self) -> Option<String>;
}

/// What every service is given: configuration, the database, the key store and the
/// clock. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServiceContext {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The database pool.
    pub db: Database,
    /// The key store (soft store or PKCS#11 token).
    pub keys: eid_hsm::KeyStore,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}
