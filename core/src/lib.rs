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
pub use db::{Backend, Database, DbError, WriteTx};
pub use logging::init_logging;

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
