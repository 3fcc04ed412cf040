//! Configuration: a TOML file plus environment overrides, parsed strictly into typed
//! structs. An unknown key, a bad value or an unreadable secret fails start-up with a
//! message that names it. Secrets are never written inline: config names the file or
//! environment variable that holds them.
//!
//! Precedence, lowest first: built-in defaults, the file, `EID_*` environment
//! variables, command-line flags.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use eid_hsm::{SecretString, TokenClass};
use secrecy::ExposeSecret;
use serde::Deserialize;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has an unknown key or a bad value.
    #[error("config file {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// A value (from the file or the environment) is not acceptable.
    #[error("config `{key}`: {message}")]
    Invalid {
        /// The key or environment variable.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A secret named in config could not be read.
    #[error("config `{key}`: cannot read the secret: {message}")]
    Secret {
        /// The key that names the secret.
        key: String,
        /// What went wrong (never the secret itself).
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Deployment profile. `production` refuses development conveniences and every
/// `danger_` option.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Embedded defaults allowed (soft key store with a generated key file, SQLite).
    #[default]
    Development,
    /// Keys behind a passphrase or on a PKCS#11 token; no `danger_` options.
    Production,
}

impl Profile {
    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// Where a secret comes from: a file or an environment variable, never inline.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRef {
    file: Option<PathBuf>,
    env: Option<String>,
}

// ---- The file's shape -------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    profile: Profile,
    data_dir: Option<PathBuf>,
    database: DatabaseSection,
    listen: ListenSection,
    keys: KeysSection,
    audit: AuditSection,
    log: LogSection,
    ca: CaSection,
    signing: SigningSection,
    idp: IdpSection,
    enrolment: EnrolmentSection,
    sim_gateway: SimGatewaySection,
    mobile_id: MobileIdSection,
    ceremony: Option<CeremonySection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MobileIdSection {
    gateway_url: Option<String>,
    gateway_pin: Option<String>,
    relying_party_uuid: Option<String>,
    relying_party_name: Option<String>,
    poll_secs: u64,
    max_attempts: u32,
}

impl Default for MobileIdSection {
    fn default() -> Self {
        Self {
            gateway_url: None,
            gateway_pin: None,
            relying_party_uuid: None,
            relying_party_name: None,
            poll_secs: 20,
            max_attempts: 5,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SimGatewaySection {
    module: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SigningSection {
    public_url: Option<String>,
    tsa: TsaSection,
    cades: CadesSection,
    csc: CscSection,
    api_client: Vec<IssuanceClientSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CscSection {
    audience: Option<String>,
    sad_ttl_secs: u64,
    pin_attempts: u32,
    max_signatures: u32,
}

impl Default for CscSection {
    fn default() -> Self {
        Self {
            audience: None,
            sad_ttl_secs: 300,
            pin_attempts: 3,
            max_signatures: 20,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CadesSection {
    pending_ttl_secs: u64,
}

impl Default for CadesSection {
    fn default() -> Self {
        Self {
            pending_ttl_secs: 300,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TsaSection {
    policy: String,
    accuracy_millis: u32,
    qualified: bool,
    include_tsa_name: bool,
    clock: ClockSection,
}

/// ETSI EN 319 421's best-practices time-stamp policy (`itu-t(0)
/// identified-organization(4) etsi(0) time-stamp-policy(2023) policy-identifiers(1)
/// best-practices-ts-policy(1)`), which the TSA follows.
pub const ETSI_BEST_PRACTICES_TS_POLICY: &str = "0.4.0.2023.1.1";

impl Default for TsaSection {
    fn default() -> Self {
        Self {
            policy: ETSI_BEST_PRACTICES_TS_POLICY.into(),
            accuracy_millis: 1000,
            qualified: false,
            include_tsa_name: true,
            clock: ClockSection::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ClockSection {
    os_sync: OsSyncCheck,
    ntp_servers: Vec<String>,
    max_drift_millis: u32,
    check_interval_secs: u64,
    ntp_timeout_millis: u64,
    danger_unchecked: bool,
}

impl Default for ClockSection {
    fn default() -> Self {
        Self {
            os_sync: OsSyncCheck::WhenReported,
            ntp_servers: Vec::new(),
            max_drift_millis: 500,
            check_interval_secs: 30,
            ntp_timeout_millis: 1000,
            danger_unchecked: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct IdpSection {
    issuer: Option<String>,
    card_listen: Option<SocketAddr>,
    card_url: Option<String>,
    acr_low: String,
    acr_substantial: String,
    acr_high: String,
    token_alg: String,
    code_ttl_secs: u64,
    access_token_ttl_secs: u64,
    id_token_ttl_secs: u64,
    refresh_token_ttl_secs: u64,
    session_ttl_secs: u64,
    interaction_ttl_secs: u64,
    key_publish_secs: u64,
    ocsp_cache_secs: u64,
    client_cache_secs: u64,
    admin_client: Vec<IssuanceClientSection>,
}

impl Default for IdpSection {
    fn default() -> Self {
        Self {
            issuer: None,
            card_listen: None,
            card_url: None,
            acr_low: "http://eidas.europa.eu/LoA/low".into(),
            acr_substantial: "http://eidas.europa.eu/LoA/substantial".into(),
            acr_high: "http://eidas.europa.eu/LoA/high".into(),
            token_alg: "ES256".into(),
            code_ttl_secs: 60,
            access_token_ttl_secs: 600,
            id_token_ttl_secs: 600,
            refresh_token_ttl_secs: 8 * 3600,
            session_ttl_secs: 30 * 60,
            interaction_ttl_secs: 10 * 60,
            key_publish_secs: 300,
            ocsp_cache_secs: 60,
            client_cache_secs: 2,
            admin_client: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct EnrolmentSection {
    public_url: Option<String>,
    card_listen: Option<SocketAddr>,
    card_url: Option<String>,
    session_ttl_secs: u64,
    link_ttl_secs: u64,
    applications_per_minute: u32,
    status_queries_per_minute: u32,
    document_type: Vec<DocumentTypeSection>,
    reader: Option<ReaderSection>,
    status_client: Vec<IssuanceClientSection>,
    operator_client: Vec<IssuanceClientSection>,
    ca: Option<DeskCaSection>,
    queue_retry_secs: u64,
}

/// `[enrolment.ca]`: the CA's registration-authority API, when the desk reaches the CA
/// over the network rather than in its own process.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeskCaSection {
    url: String,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    #[serde(default = "default_desk_ca_timeout")]
    timeout_secs: u64,
}

fn default_desk_ca_timeout() -> u64 {
    10
}

impl Default for EnrolmentSection {
    fn default() -> Self {
        Self {
            public_url: None,
            card_listen: None,
            card_url: None,
            session_ttl_secs: 8 * 3600,
            link_ttl_secs: 24 * 3600,
            applications_per_minute: 20,
            status_queries_per_minute: 600,
            document_type: Vec::new(),
            reader: None,
            status_client: Vec::new(),
            operator_client: Vec::new(),
            ca: None,
            queue_retry_secs: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentTypeSection {
    code: String,
    name: String,
    mrz: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReaderSection {
    module: PathBuf,
    #[serde(default = "default_reader_class")]
    class: String,
    #[serde(default = "default_citizen_key")]
    key: String,
    transport_code_file: Option<PathBuf>,
    transport_code_env: Option<String>,
}

fn default_reader_class() -> String {
    "smartcard".into()
}

fn default_citizen_key() -> String {
    "ec-p256".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CeremonySection {
    name: String,
    witnesses: Vec<String>,
    transcript: PathBuf,
    certificate: Vec<CeremonyCertificateSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CeremonyCertificateSection {
    role: String,
    key: String,
    common_name: String,
    validity_days: u32,
    #[serde(default)]
    policies: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CaSection {
    country: String,
    organization: String,
    public_url: Option<String>,
    pds_url: Option<String>,
    citizen_validity_days: u32,
    crl_next_update_hours: u32,
    delta_crl_next_update_hours: u32,
    crl_full_on_change: bool,
    ocsp_validity_hours: u32,
    issuance_client: Vec<IssuanceClientSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuanceClientSection {
    name: String,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
}

impl Default for CaSection {
    fn default() -> Self {
        Self {
            country: "TT".into(),
            organization: "eID Development Authority".into(),
            public_url: None,
            pds_url: None,
            citizen_validity_days: 5 * 365,
            crl_next_update_hours: 24,
            delta_crl_next_update_hours: 4,
            crl_full_on_change: true,
            ocsp_validity_hours: 24,
            issuance_client: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DatabaseSection {
    url: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    max_connections: u32,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: None,
            password_file: None,
            password_env: None,
            max_connections: 16,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ListenSection {
    idp: Option<SocketAddr>,
    ca: Option<SocketAddr>,
    signing: Option<SocketAddr>,
    enrolment: Option<SocketAddr>,
    sim_gateway: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct KeysSection {
    backend: KeyBackendName,
    soft: SoftSection,
    pkcs11: Option<Pkcs11Section>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum KeyBackendName {
    #[default]
    Soft,
    Pkcs11,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SoftSection {
    dir: Option<PathBuf>,
    passphrase_file: Option<PathBuf>,
    passphrase_env: Option<String>,
    key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pkcs11Section {
    module: PathBuf,
    token_label: Option<String>,
    token_serial: Option<String>,
    pin_file: Option<PathBuf>,
    pin_env: Option<String>,
    #[serde(default = "default_sessions")]
    sessions: usize,
    #[serde(default = "default_token_class")]
    class: TokenClass,
}

fn default_sessions() -> usize {
    4
}

fn default_token_class() -> TokenClass {
    TokenClass::Hsm
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AuditSection {
    checkpoint_interval_secs: u64,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            checkpoint_interval_secs: 300,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LogSection {
    format: LogFormat,
    level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

// ---- The validated result ---------------------------------------------------------

/// The default data folder.
pub const DEFAULT_DATA_DIR: &str = "./eid-data";

/// The OpenID Connect provider's settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct IdpConfig {
    /// The issuer identifier (`iss`): the provider's public base URL, no trailing slash.
    pub issuer: String,
    /// Where the ID-card (TLS client certificate) listener binds.
    pub card_listen: SocketAddr,
    /// The public base URL of the ID-card listener (https).
    pub card_url: String,
    /// `acr` values of the eIDAS levels low, substantial and high, in that order.
    pub acr: [String; 3],
    /// Signature algorithm of ID tokens and access tokens: `ES256` or `PS256`.
    pub token_alg: String,
    /// Lifetime of an authorization code.
    pub code_ttl_secs: u64,
    /// Lifetime of an access token.
    pub access_token_ttl_secs: u64,
    /// Lifetime of an ID token.
    pub id_token_ttl_secs: u64,
    /// Lifetime of a refresh token (each rotation starts a new one, within the grant's).
    pub refresh_token_ttl_secs: u64,
    /// Lifetime of a single-sign-on session.
    pub session_ttl_secs: u64,
    /// How long a login may take, from /authorize to the code.
    pub interaction_ttl_secs: u64,
    /// How long a new token-signing key is published before it signs.
    pub key_publish_secs: u64,
    /// How long an OCSP answer about a login certificate is reused.
    pub ocsp_cache_secs: u64,
    /// How long a relying party's registration is reused from memory. Changes made
    /// through this process's admin API apply at once; `eid rp` in another process
    /// reaches a running provider within this time.
    pub client_cache_secs: u64,
    /// Callers of the registry's admin API (`[[idp.admin_client]]`).
    pub admin_clients: Vec<ApiClient>,
}

/// Validated configuration, with secrets resolved.
#[derive(Debug)]
#[non_exhaustive]
pub struct Config {
    /// Deployment profile.
    pub profile: Profile,
    /// The data folder (SQLite database and soft key store by default).
    pub data_dir: PathBuf,
    /// Database connection.
    pub database: DatabaseConfig,
    /// Listening addresses.
    pub listen: Listeners,
    /// Where keys live.
    pub keys: KeysConfig,
    /// Audit log settings (there is no switch to turn it off).
    pub audit: AuditConfig,
    /// Logging.
    pub log: LogConfig,
    /// Certificate authority.
    pub ca: CaConfig,
    /// The signing service (its time-stamp authority, for now).
    pub signing: SigningConfig,
    /// The OpenID Connect provider (`[idp]`).
    pub idp: IdpConfig,
    /// The enrolment desk (`[enrolment]`).
    pub enrolment: EnrolmentConfig,
    /// The SIM gateway simulator (`[sim_gateway]`).
    pub sim_gateway: SimGatewayConfig,
    /// The mobile operator's signature gateway (`[mobile_id]`), when mobile ID is on.
    pub mobile_id: Option<MobileIdConfig>,
    /// A key ceremony to run (`eid ca ceremony`), when the file describes one.
    pub ceremony: Option<CeremonyConfig>,
}

/// The SIM gateway simulator's settings (`eid serve sim-gateway`: development, tests
/// and pilots; refused by the production profile).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimGatewayConfig {
    /// The PKCS#11 module whose tokens are the simulated SIMs (`module`, env
    /// `EID_SIM_GATEWAY_MODULE`); each SIM is a card of two tokens, `<id> (PIN1)` and
    /// `<id> (PIN2)`.
    pub module: Option<PathBuf>,
}

/// How the platform reaches the mobile operator's signature gateway (`[mobile_id]`):
/// mobile-ID login and CIBA on the idp. Off unless the gateway's URL and pin are set.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MobileIdConfig {
    /// The gateway's base URL (`gateway_url`, env `EID_MOBILE_ID_GATEWAY_URL`; https).
    pub gateway_url: String,
    /// The SHA-256 of the gateway's TLS key (`gateway_pin`, env
    /// `EID_MOBILE_ID_GATEWAY_PIN`, `sha256/<base64>`).
    pub gateway_pin: eid_hsm::mobile::GatewayPin,
    /// Our relying-party UUID, agreed with the operator (`relying_party_uuid`, env
    /// `EID_MOBILE_ID_RELYING_PARTY_UUID`; the nil UUID outside production).
    pub relying_party_uuid: String,
    /// Our name as the phone shows it (`relying_party_name`; default the CA's
    /// organization).
    pub relying_party_name: String,
    /// How long one long poll waits at the gateway (`poll_secs`, 1 to 60).
    pub poll_secs: u64,
    /// Mobile-ID requests one login may send to phones (`max_attempts`, 1 to 20): each
    /// one makes a citizen's phone ring, so a login page cannot be used to pester them.
    pub max_attempts: u32,
}

impl MobileIdConfig {
    /// The gateway client's options for these settings.
    pub fn client_options(&self) -> eid_hsm::mobile::MobileIdClientOptions {
        let mut options = eid_hsm::mobile::MobileIdClientOptions::new(
            self.gateway_url.clone(),
            self.gateway_pin,
            self.relying_party_uuid.clone(),
            self.relying_party_name.clone(),
        );
        options.poll_timeout = std::time::Duration::from_secs(self.poll_secs);
        options
    }
}

/// The enrolment desk's settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EnrolmentConfig {
    /// The desk's public base URL (its host name is the passkeys' relying-party id, so
    /// it must be a name, not an IP address).
    pub public_url: String,
    /// Where the desk's ID-card login listener (TLS asking for a client certificate)
    /// binds.
    pub card_listen: SocketAddr,
    /// The public base URL of that listener (https).
    pub card_url: String,
    /// How long a clerk's desk session lasts.
    pub session_ttl_secs: u64,
    /// How long a one-time link (a staff member's passkey enrolment, a workstation's
    /// registration) stays valid.
    pub link_ttl_secs: u64,
    /// Pre-registrations accepted per minute from one client address.
    pub applications_per_minute: u32,
    /// Identity-status queries one relying service may make per minute.
    pub status_queries_per_minute: u32,
    /// The identity documents a clerk may record (`[[enrolment.document_type]]`).
    pub document_types: Vec<DocumentType>,
    /// The desk's card or SIM reader, if it has one (`[enrolment.reader]`).
    pub reader: Option<ReaderConfig>,
    /// Relying services allowed to ask for an identity's status
    /// (`[[enrolment.status_client]]`), each with its bearer token.
    pub status_clients: Vec<ApiClient>,
    /// Mobile operators allowed to activate SIMs over the air
    /// (`[[enrolment.operator_client]]`), each with its bearer token.
    pub operator_clients: Vec<ApiClient>,
    /// The CA's registration-authority API over the network (`[enrolment.ca]`); `None`
    /// when the desk asks the CA in its own process.
    pub ca: Option<DeskCaConfig>,
    /// How often activations queued while the CA was unreachable are tried again.
    pub queue_retry_secs: u64,
}

/// How the desk reaches a CA that runs elsewhere: the base URL of its service and the
/// desk's bearer token as one of its `[[ca.issuance_client]]`s.
#[derive(Clone)]
#[non_exhaustive]
pub struct DeskCaConfig {
    /// Base URL of the CA service (`https://ca.example.gov.tt`).
    pub url: url::Url,
    /// The desk's bearer token.
    pub token: std::sync::Arc<SecretString>,
    /// How long one call may take before the CA counts as unreachable.
    pub timeout: std::time::Duration,
}

impl fmt::Debug for DeskCaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeskCaConfig")
            .field("url", &self.url.as_str())
            .field("token", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A kind of identity document the desk accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DocumentType {
    /// Stable code (`passport`, `national-id`, ...).
    pub code: String,
    /// What the clerk sees.
    pub name: String,
    /// The machine-readable zone it carries: `td1`, `td2`, `td3`, or none.
    pub mrz: Option<String>,
}

impl DocumentType {
    fn new(code: &str, name: &str, mrz: Option<&str>) -> Self {
        Self {
            code: code.into(),
            name: name.into(),
            mrz: mrz.map(str::to_owned),
        }
    }
}

/// The PKCS#11 module where cards (or SIMs) in the desk's reader appear.
#[derive(Clone)]
#[non_exhaustive]
pub struct ReaderConfig {
    /// Path of the PKCS#11 module.
    pub module: PathBuf,
    /// `smartcard` or `sim`.
    pub class: String,
    /// The key type generated on the card (`ec-p256`, `ec-p384`).
    pub key: String,
    /// The card batch's transport code (the blank card's SO PIN).
    pub transport_code: std::sync::Arc<SecretString>,
}

impl fmt::Debug for ReaderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReaderConfig")
            .field("module", &self.module)
            .field("class", &self.class)
            .field("key", &self.key)
            .field("transport_code", &"<redacted>")
            .finish()
    }
}

/// Signing service settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SigningConfig {
    /// The service's public base URL (origin, no path).
    pub public_url: String,
    /// The RFC 3161 time-stamp authority.
    pub tsa: TsaConfig,
    /// CAdES signatures (the two-step card/SIM flow).
    pub cades: CadesConfig,
    /// Remote signing through the CSC API v2.
    pub csc: CscConfig,
    /// The callers allowed to use the signature API, each with its bearer token
    /// (`[[signing.api_client]]`).
    pub api_clients: Vec<ApiClient>,
}

/// CAdES signature settings (`[signing.cades]`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CadesConfig {
    /// How long a prepared signature waits for its signature value.
    pub pending_ttl: std::time::Duration,
}

/// Remote signing by the CSC API v2 (`[signing.csc]`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CscConfig {
    /// The resource the API is: the `aud` of the access tokens the identity provider
    /// issues for the `service` and `credential` scopes (`{public_url}/csc/v2`).
    pub audience: String,
    /// The identity provider whose access tokens the API accepts (`idp.issuer`).
    pub issuer: String,
    /// How long signature activation data (SAD) stays usable.
    pub sad_ttl: std::time::Duration,
    /// Wrong PINs in a row before a credential locks (a supervisor at the desk unlocks).
    pub pin_attempts: u32,
    /// Most hashes one authorisation covers (`multisign`).
    pub max_signatures: u32,
}

/// A caller of a service API authenticated by a bearer token.
#[derive(Clone)]
#[non_exhaustive]
pub struct ApiClient {
    /// The caller's name, recorded as the actor of its audit events.
    pub name: String,
    /// Its bearer token.
    pub token: std::sync::Arc<SecretString>,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The time-stamp authority (RFC 3161, profile ETSI EN 319 422).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TsaConfig {
    /// The TSA policy OID (dotted) written into every token; a request naming another
    /// policy is refused with `unacceptedPolicy`.
    pub policy: String,
    /// The accuracy stated in every token (`TSTInfo.accuracy`).
    pub accuracy: std::time::Duration,
    /// Whether tokens are qualified electronic time-stamps (eIDAS art. 42): they then
    /// carry the `esi4-qtstStatement-1` statement of ETSI EN 319 422.
    pub qualified: bool,
    /// Whether tokens name the TSA (`TSTInfo.tsa`: the TSU certificate's subject).
    pub include_tsa_name: bool,
    /// When the clock is trusted enough to stamp.
    pub clock: ClockTrustConfig,
}

/// How the operating system's clock synchronisation status counts (ETSI EN 319 421:
/// the TSA stops issuing when its clock is out of its stated accuracy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum OsSyncCheck {
    /// Stamp only when the OS reports its clock synchronised.
    Required,
    /// Refuse when the OS reports its clock unsynchronised; stamp when it reports
    /// nothing (no systemd, a container).
    WhenReported,
    /// Do not ask the OS (the NTP drift check must then be configured in production).
    Ignored,
}

impl OsSyncCheck {
    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::WhenReported => "when-reported",
            Self::Ignored => "ignored",
        }
    }
}

/// An NTP server: a host name or address, and a UDP port (123 unless given).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NtpServer {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// UDP port.
    pub port: u16,
}

impl NtpServer {
    /// Parses `host`, `host:port` or `[ipv6]:port` (a bare IPv6 address is taken whole).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            let port = match after {
                "" => 123,
                _ => after.strip_prefix(':')?.parse().ok()?,
            };
            (host, port)
        } else {
            match text.split_once(':') {
                // More than one colon: a bare IPv6 address.
                Some((_, rest)) if rest.contains(':') => (text, 123),
                Some((host, port)) => (host, port.parse().ok()?),
                None => (text, 123),
            }
        };
        if host.is_empty() || host.contains(char::is_whitespace) || port == 0 {
            return None;
        }
        Some(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for NtpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The checks that decide whether the TSA's clock may be trusted.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClockTrustConfig {
    /// The OS synchronisation status check.
    pub os_sync: OsSyncCheck,
    /// NTP servers the clock is compared with (SNTP, RFC 4330).
    pub ntp_servers: Vec<NtpServer>,
    /// The largest difference from an NTP server that is still trusted.
    pub max_drift: std::time::Duration,
    /// How often the checks run.
    pub check_interval: std::time::Duration,
    /// How long to wait for an NTP answer.
    pub ntp_timeout: std::time::Duration,
    /// Trust the clock without any check (development only; refused in production).
    pub danger_unchecked: bool,
}

/// A key ceremony: which CA certificates to create, as the reviewed file says.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CeremonyConfig {
    /// What the ceremony is called, in the transcript and the audit log.
    pub name: String,
    /// Who witnessed it, recorded in the transcript and the audit log.
    pub witnesses: Vec<String>,
    /// Where the transcript is written.
    pub transcript: PathBuf,
    /// The certificates, issuers before what they issue.
    pub certificates: Vec<CeremonyCertificate>,
    /// SHA-256 of the ceremony file as reviewed.
    pub file_sha256: String,
}

/// One certificate of a ceremony.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CeremonyCertificate {
    /// The CA role (`root`, `citizen-auth-ca`, ...).
    pub role: String,
    /// Key spec (`ec-p256`, `ec-p384`, `rsa-3072`).
    pub key: String,
    /// The certificate's common name.
    pub common_name: String,
    /// Validity in days.
    pub validity_days: u32,
    /// Certificate policy OIDs (dotted); empty keeps the role's default.
    pub policies: Vec<String>,
}

/// Certificate authority settings.
#[derive(Debug)]
#[non_exhaustive]
pub struct CaConfig {
    /// ISO 3166-1 alpha-2 country of the authority and its citizens (`C=` and the
    /// `PNO<CC>-` semantics of citizen serial numbers).
    pub country: String,
    /// The authority's organisation name (`O=` of the CA certificates).
    pub organization: String,
    /// Base URL written into certificates for OCSP, CA certificates and CRLs.
    pub public_url: String,
    /// PKI disclosure statement URL (the QcPDS statement of qualified certificates).
    pub pds_url: String,
    /// Validity of citizen certificates.
    pub citizen_validity_days: u32,
    /// How long a full CRL is current (`nextUpdate - thisUpdate`).
    pub crl_next_update_hours: u32,
    /// How long a delta CRL is current; deltas are re-issued at half of it.
    pub delta_crl_next_update_hours: u32,
    /// Whether every status change re-issues the full CRL (besides the delta CRL).
    /// At national scale, with hundreds of thousands of entries, turn it off: full CRLs
    /// then follow their schedule and each change costs only a small delta CRL.
    pub crl_full_on_change: bool,
    /// How long an OCSP response is current.
    pub ocsp_validity_hours: u32,
    /// The registration-authority callers allowed to use the issuance API over HTTP,
    /// each with its bearer token.
    pub issuance_clients: Vec<IssuanceClient>,
}

/// A caller of the CA's issuance API.
#[non_exhaustive]
pub struct IssuanceClient {
    /// The caller's name, recorded as the actor of its audit events.
    pub name: String,
    /// Its bearer token.
    pub token: SecretString,
}

impl fmt::Debug for IssuanceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuanceClient")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Database connection settings.
#[non_exhaustive]
pub struct DatabaseConfig {
    /// The full URL, password included when one was configured.
    pub url: SecretString,
    /// The URL with any password removed, for logs.
    pub display_url: String,
    /// Connection pool size.
    pub max_connections: u32,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.display_url)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// The listening address of every service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Listeners {
    /// OpenID Connect provider.
    pub idp: SocketAddr,
    /// Certificate authority (OCSP, CRL, issuance API).
    pub ca: SocketAddr,
    /// Signing service (TSA, CSC API).
    pub signing: SocketAddr,
    /// Enrolment desk and pre-registration.
    pub enrolment: SocketAddr,
    /// The SIM gateway simulator (development, tests and pilots only; TLS).
    pub sim_gateway: SocketAddr,
}

impl Default for Listeners {
    fn default() -> Self {
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Self {
            idp: at(8080),
            ca: at(8081),
            signing: at(8082),
            enrolment: at(8083),
            sim_gateway: at(8084),
        }
    }
}

/// Where keys live, with the secrets to open them.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeysConfig {
    /// The soft key store.
    Soft {
        /// Its folder.
        dir: PathBuf,
        /// What opens it.
        secret: SoftSecretConfig,
    },
    /// A PKCS#11 token.
    Pkcs11 {
        /// The module.
        module: PathBuf,
        /// The token.
        token: eid_hsm::TokenSelector,
        /// The user PIN.
        pin: SecretString,
        /// Session pool size.
        sessions: usize,
        /// The device class.
        class: TokenClass,
    },
}

/// What opens the soft key store.
#[derive(Debug)]
#[non_exhaustive]
pub enum SoftSecretConfig {
    /// A passphrase (Argon2id).
    Passphrase(SecretString),
    /// A key file; `generated` when it is the development default inside the data folder.
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Whether eid may create it.
        generated: bool,
    },
}

/// Audit log settings.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct AuditConfig {
    /// Seconds between signed checkpoints of the audit chain while serving.
    pub checkpoint_interval_secs: u64,
}

/// Logging settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// A tracing filter directive, e.g. `info` or `eid_ca=debug,info`.
    pub level: String,
}

/// The environment a config is loaded in (injected so tests do not touch the process
/// environment).
pub trait Environment {
    /// The value of a variable, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// What the command line adds on top of file and environment.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--data`.
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Loads the config file (if any), applies environment and command-line
    /// overrides, validates, and resolves secrets.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Environment,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let parsed = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string().trim_end().replace('\n', "\n  "),
                })?
            }
            None => FileConfig::default(),
        };
        Self::resolve(parsed, file, env, overrides)
    }

    fn resolve(
        file: FileConfig,
        config_path: Option<&Path>,
        env: &dyn Environment,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        // Relative paths in a config file are relative to the file, so a config can
        // travel with its deployment folder.
        let base = config_path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let relative = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

        let data_dir = overrides
            .data_dir
            .clone()
            .or_else(|| env.var("EID_DATA").map(PathBuf::from))
            .or_else(|| file.data_dir.map(relative))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));

        let listen = resolve_listeners(&file.listen, env)?;
        let database = resolve_database(&file.database, env, &data_dir)?;
        let keys = resolve_keys(file.keys, env, &data_dir, &relative)?;

        let log_format = match env.var("EID_LOG_FORMAT").as_deref() {
            None => file.log.format,
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "EID_LOG_FORMAT",
                    format!("`{other}` is not `text` or `json`"),
                ));
            }
        };
        let log_level = env.var("EID_LOG").unwrap_or(file.log.level);
        if file.audit.checkpoint_interval_secs == 0 {
            return Err(invalid(
                "audit.checkpoint_interval_secs",
                "must be at least 1 second",
            ));
        }

        let ca = resolve_ca(file.ca, &listen, env, &relative)?;
        let idp = resolve_idp(file.idp, &listen, env, &relative)?;
        let signing_url = public_origin(
            "signing.public_url",
            env.var("EID_SIGNING_PUBLIC_URL")
                .or(file.signing.public_url)
                .unwrap_or_else(|| format!("http://{}", listen.signing)),
        )?;
        let signing = SigningConfig {
            csc: resolve_csc(file.signing.csc, &signing_url, &idp)?,
            public_url: signing_url,
            tsa: resolve_tsa(file.signing.tsa)?,
            cades: resolve_cades(file.signing.cades)?,
            api_clients: api_clients(
                "signing.api_client",
                file.signing.api_client,
                env,
                &relative,
            )?,
        };
        let enrolment = resolve_enrolment(file.enrolment, &listen, env, &relative)?;
        let sim_gateway = SimGatewayConfig {
            module: env
                .var("EID_SIM_GATEWAY_MODULE")
                .map(PathBuf::from)
                .or(file.sim_gateway.module)
                .map(&relative),
        };
        let mobile_id = resolve_mobile_id(file.mobile_id, file.profile, &ca, env)?;
        let ceremony = match file.ceremony {
            Some(section) => Some(resolve_ceremony(section, config_path, &relative)?),
            None => None,
        };
        let config = Self {
            mobile_id,
            ca,
            signing,
            idp,
            enrolment,
            sim_gateway,
            ceremony,
            profile: file.profile,
            data_dir,
            database,
            listen,
            keys,
            audit: AuditConfig {
                checkpoint_interval_secs: file.audit.checkpoint_interval_secs,
            },
            log: LogConfig {
                format: log_format,
                level: log_level,
            },
        };
        config.check_profile()?;
        Ok(config)
    }

    fn check_profile(&self) -> Result<(), ConfigError> {
        if self.profile != Profile::Production {
            return Ok(());
        }
        if !self.idp.issuer.starts_with("https://") {
            return Err(invalid(
                "idp.issuer",
                "the production profile needs an https:// issuer (OpenID Connect Discovery 3)",
            ));
        }
        if let KeysConfig::Soft {
            secret: SoftSecretConfig::KeyFile {
                generated: true, ..
            },
            ..
        } = &self.keys
        {
            return Err(invalid(
                "keys",
                "the production profile does not accept the development default (a key file \
                 generated inside the data folder): use keys.backend = \"pkcs11\", or \
                 keys.soft.passphrase_file / passphrase_env",
            ));
        }
        let clock = &self.signing.tsa.clock;
        if clock.danger_unchecked {
            return Err(invalid(
                "signing.tsa.clock.danger_unchecked",
                "the production profile refuses a TSA whose clock is not checked",
            ));
        }
        Ok(())
    }

    /// Whether the TSA may start with this configuration: production needs a real clock
    /// check (ETSI EN 319 421). Checked when the signing service starts rather than at
    /// load, so configs for other commands (a key ceremony) need no TSA section.
    pub fn check_tsa_clock_for_profile(&self) -> Result<(), ConfigError> {
        let clock = &self.signing.tsa.clock;
        if self.profile == Profile::Production
            && clock.ntp_servers.is_empty()
            && clock.os_sync != OsSyncCheck::Required
        {
            return Err(invalid(
                "signing.tsa.clock",
                "the production profile needs a clock check (ETSI EN 319 421): list \
                 ntp_servers, or set os_sync = \"required\"",
            ));
        }
        Ok(())
    }

    /// The effective configuration as TOML-like text without secrets, for `eid config check`.
    pub fn describe(&self) -> String {
        let keys = match &self.keys {
            KeysConfig::Soft { dir, secret } => format!(
                "backend = \"soft\"\ndir = {:?}\nsecret = {}",
                dir.display().to_string(),
                match secret {
                    SoftSecretConfig::Passphrase(_) => "\"passphrase (Argon2id)\"".to_owned(),
                    SoftSecretConfig::KeyFile { path, generated } => format!(
                        "\"key file {}{}\"",
                        path.display(),
                        if *generated { ", generated" } else { "" }
                    ),
                }
            ),
            KeysConfig::Pkcs11 {
                module,
                token,
                sessions,
                class,
                ..
            } => format!(
                "backend = \"pkcs11\"\nmodule = {:?}\ntoken = {:?}\nsessions = {sessions}\nclass = \"{class}\"\npin = \"<from config>\"",
                module.display().to_string(),
                match token {
                    eid_hsm::TokenSelector::Label(l) => format!("label {l}"),
                    eid_hsm::TokenSelector::Serial(s) => format!("serial {s}"),
                }
            ),
        };
        format!(
            "profile = \"{}\"\ndata_dir = {:?}\n\n[database]\nurl = {:?}\nmax_connections = {}\n\n[listen]\nidp = \"{}\"\nca = \"{}\"\nsigning = \"{}\"\nenrolment = \"{}\"\n\n[keys]\n{keys}\n\n[audit]\ncheckpoint_interval_secs = {}\n\n[log]\nformat = \"{}\"\nlevel = {:?}\n\n[signing.cades]\npending_ttl_secs = {}\n# [[signing.api_client]] names (tokens not shown): {:?}\n\n[signing]\npublic_url = {:?}\n\n[signing.csc]\naudience = {:?}\n# access tokens from {:?}\nsad_ttl_secs = {}\npin_attempts = {}\nmax_signatures = {}\n\n[signing.tsa]\npolicy = \"{}\"\naccuracy_millis = {}\nqualified = {}\ninclude_tsa_name = {}\n\n[signing.tsa.clock]\nos_sync = \"{}\"\nntp_servers = {:?}\nmax_drift_millis = {}\ncheck_interval_secs = {}\nntp_timeout_millis = {}\ndanger_unchecked = {}\n",
            self.profile.name(),
            self.data_dir.display().to_string(),
            self.database.display_url,
            self.database.max_connections,
            self.listen.idp,
            self.listen.ca,
            self.listen.signing,
            self.listen.enrolment,
            self.audit.checkpoint_interval_secs,
            self.log.format.name(),
            self.log.level,
            self.signing.cades.pending_ttl.as_secs(),
            self.signing
                .api_clients
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            self.signing.public_url,
            self.signing.csc.audience,
            self.signing.csc.issuer,
            self.signing.csc.sad_ttl.as_secs(),
            self.signing.csc.pin_attempts,
            self.signing.csc.max_signatures,
            self.signing.tsa.policy,
            self.signing.tsa.accuracy.as_millis(),
            self.signing.tsa.qualified,
            self.signing.tsa.include_tsa_name,
            self.signing.tsa.clock.os_sync.name(),
            self.signing
                .tsa
                .clock
                .ntp_servers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            self.signing.tsa.clock.max_drift.as_millis(),
            self.signing.tsa.clock.check_interval.as_secs(),
            self.signing.tsa.clock.ntp_timeout.as_millis(),
            self.signing.tsa.clock.danger_unchecked,
        ) + &match &self.mobile_id {
            Some(m) => format!(
                "\n[mobile_id]\ngateway_url = {:?}\ngateway_pin = \"{}\"\nrelying_party_uuid = {:?}\nrelying_party_name = {:?}\npoll_secs = {}\nmax_attempts = {}\n",
                m.gateway_url,
                m.gateway_pin,
                m.relying_party_uuid,
                m.relying_party_name,
                m.poll_secs,
                m.max_attempts,
            ),
            None => "\n# [mobile_id]: off (no gateway URL and pin)\n".to_owned(),
        }
    }
}

fn resolve_listeners(
    section: &ListenSection,
    env: &dyn Environment,
) -> Result<Listeners, ConfigError> {
    let defaults = Listeners::default();
    let pick = |name: &str, file: Option<SocketAddr>, default: SocketAddr| match env.var(name) {
        Some(value) => value.parse::<SocketAddr>().map_err(|e| {
            invalid(
                name,
                format!("`{value}` is not an address like 127.0.0.1:8080 ({e})"),
            )
        }),
        None => Ok(file.unwrap_or(default)),
    };
    let listeners = Listeners {
        idp: pick("EID_IDP_LISTEN", section.idp, defaults.idp)?,
        ca: pick("EID_CA_LISTEN", section.ca, defaults.ca)?,
        signing: pick("EID_SIGNING_LISTEN", section.signing, defaults.signing)?,
        enrolment: pick(
            "EID_ENROLMENT_LISTEN",
            section.enrolment,
            defaults.enrolment,
        )?,
        sim_gateway: pick(
            "EID_SIM_GATEWAY_LISTEN",
            section.sim_gateway,
            defaults.sim_gateway,
        )?,
    };
    let all = [
        ("idp", listeners.idp),
        ("ca", listeners.ca),
        ("signing", listeners.signing),
        ("enrolment", listeners.enrolment),
        ("sim_gateway", listeners.sim_gateway),
    ];
    for (i, (a, addr_a)) in all.iter().enumerate() {
        for (b, addr_b) in &all[i + 1..] {
            if addr_a == addr_b && addr_a.port() != 0 {
                return Err(invalid(
                    format!("listen.{b}"),
                    format!("{addr_b} is also the address of listen.{a}"),
                ));
            }
        }
    }
    Ok(listeners)
}

fn resolve_ceremony(
    section: CeremonySection,
    config_path: Option<&Path>,
    relative: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<CeremonyConfig, ConfigError> {
    if section.name.trim().is_empty() {
        return Err(invalid("ceremony.name", "must not be empty"));
    }
    if section.witnesses.len() < 2 {
        return Err(invalid(
            "ceremony.witnesses",
            "a key ceremony needs at least two named witnesses",
        ));
    }
    if section.certificate.is_empty() {
        return Err(invalid(
            "ceremony.certificate",
            "lists no certificate to create",
        ));
    }
    for certificate in &section.certificate {
        if certificate.validity_days == 0 {
            return Err(invalid(
                format!("ceremony.certificate `{}` validity_days", certificate.role),
                "must be at least 1",
            ));
        }
        if certificate.common_name.trim().is_empty() || certificate.common_name.len() > 64 {
            return Err(invalid(
                format!("ceremony.certificate `{}` common_name", certificate.role),
                "must have 1 to 64 characters",
            ));
        }
    }
    // The transcript records which file was run: its hash, as reviewed.
    let file_sha256 = match config_path {
        Some(path) => {
            use sha2::Digest;
            let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            hex::encode(sha2::Sha256::digest(bytes))
        }
        None => {
            return Err(invalid(
                "ceremony",
                "a ceremony runs only from a config file",
            ));
        }
    };
    Ok(CeremonyConfig {
        name: section.name,
        witnesses: section.witnesses,
        transcript: relative(section.transcript),
        certificates: section
            .certificate
            .into_iter()
            .map(|c| CeremonyCertificate {
                role: c.role,
                key: c.key,
                common_name: c.common_name,
                validity_days: c.validity_days,
                policies: c.policies,
            })
            .collect(),
        file_sha256,
    })
}

fn resolve_cades(section: CadesSection) -> Result<CadesConfig, ConfigError> {
    if !(10..=3600).contains(&section.pending_ttl_secs) {
        return Err(invalid(
            "signing.cades.pending_ttl_secs",
            "must be 10 to 3600 seconds",
        ));
    }
    Ok(CadesConfig {
        pending_ttl: std::time::Duration::from_secs(section.pending_ttl_secs),
    })
}

/// An http(s) origin without a path, trailing slash trimmed.
fn public_origin(key: &str, value: String) -> Result<String, ConfigError> {
    let value = value.trim_end_matches('/').to_owned();
    let url = url::Url::parse(&value)
        .map_err(|e| invalid(key, format!("`{value}` is not a URL ({e})")))?;
    if !matches!(url.scheme(), "https" | "http") || url.path() != "/" {
        return Err(invalid(
            key,
            "must be an https:// (or, for development, http://) origin without a path",
        ));
    }
    Ok(value)
}

fn resolve_csc(
    section: CscSection,
    public_url: &str,
    idp: &IdpConfig,
) -> Result<CscConfig, ConfigError> {
    if !(10..=3600).contains(&section.sad_ttl_secs) {
        return Err(invalid(
            "signing.csc.sad_ttl_secs",
            "must be 10 to 3600 seconds",
        ));
    }
    if !(1..=10).contains(&section.pin_attempts) {
        return Err(invalid("signing.csc.pin_attempts", "must be 1 to 10"));
    }
    if !(1..=1000).contains(&section.max_signatures) {
        return Err(invalid("signing.csc.max_signatures", "must be 1 to 1000"));
    }
    let audience = section
        .audience
        .unwrap_or_else(|| format!("{public_url}/csc/v2"));
    if url::Url::parse(&audience).is_err() {
        return Err(invalid(
            "signing.csc.audience",
            format!("`{audience}` is not a URL"),
        ));
    }
    Ok(CscConfig {
        audience,
        issuer: idp.issuer.clone(),
        sad_ttl: std::time::Duration::from_secs(section.sad_ttl_secs),
        pin_attempts: section.pin_attempts,
        max_signatures: section.max_signatures,
    })
}

/// `[mobile_id]`: on when both the gateway's URL and its pin are given, refused when
/// only one is (a half-configured gateway is a mistake, not a choice).
fn resolve_mobile_id(
    section: MobileIdSection,
    profile: Profile,
    ca: &CaConfig,
    env: &dyn Environment,
) -> Result<Option<MobileIdConfig>, ConfigError> {
    let url = env.var("EID_MOBILE_ID_GATEWAY_URL").or(section.gateway_url);
    let pin = env.var("EID_MOBILE_ID_GATEWAY_PIN").or(section.gateway_pin);
    let (url, pin) = match (url, pin) {
        (None, None) => return Ok(None),
        (Some(url), Some(pin)) => (url, pin),
        (Some(_), None) => {
            return Err(invalid(
                "mobile_id.gateway_pin",
                "the gateway's URL is set but not its key's pin (EID_MOBILE_ID_GATEWAY_PIN):                  the gateway is reached only with its key pinned",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "mobile_id.gateway_url",
                "the gateway's pin is set but not its URL (EID_MOBILE_ID_GATEWAY_URL)",
            ));
        }
    };
    let parsed = url::Url::parse(&url).map_err(|e| {
        invalid(
            "mobile_id.gateway_url",
            format!("`{url}` is not a URL ({e})"),
        )
    })?;
    if parsed.scheme() != "https" {
        return Err(invalid(
            "mobile_id.gateway_url",
            format!("`{url}` must be https (the gateway's key is pinned)"),
        ));
    }
    let gateway_pin = eid_hsm::mobile::GatewayPin::parse(&pin)
        .map_err(|e| invalid("mobile_id.gateway_pin", e.to_string()))?;
    let relying_party_uuid = match env
        .var("EID_MOBILE_ID_RELYING_PARTY_UUID")
        .or(section.relying_party_uuid)
    {
        Some(uuid) => uuid,
        None if profile == Profile::Production => {
            return Err(invalid(
                "mobile_id.relying_party_uuid",
                "the production profile needs the relying-party UUID agreed with the operator",
            ));
        }
        None => "00000000-0000-0000-0000-000000000000".into(),
    };
    if uuid_shape(&relying_party_uuid).is_none() {
        return Err(invalid(
            "mobile_id.relying_party_uuid",
            format!("`{relying_party_uuid}` is not a UUID (8-4-4-4-12 hexadecimal digits)"),
        ));
    }
    let relying_party_name = env
        .var("EID_MOBILE_ID_RELYING_PARTY_NAME")
        .or(section.relying_party_name)
        .unwrap_or_else(|| ca.organization.clone());
    if relying_party_name.trim().is_empty() || relying_party_name.chars().count() > 100 {
        return Err(invalid(
            "mobile_id.relying_party_name",
            "must be 1 to 100 characters",
        ));
    }
    if !(1..=60).contains(&section.poll_secs) {
        return Err(invalid("mobile_id.poll_secs", "must be 1 to 60 seconds"));
    }
    if !(1..=20).contains(&section.max_attempts) {
        return Err(invalid("mobile_id.max_attempts", "must be 1 to 20"));
    }
    Ok(Some(MobileIdConfig {
        gateway_url: url.trim_end_matches('/').to_owned(),
        gateway_pin,
        relying_party_uuid,
        relying_party_name,
        poll_secs: section.poll_secs,
        max_attempts: section.max_attempts,
    }))
}

fn uuid_shape(text: &str) -> Option<()> {
    let groups: Vec<&str> = text.split('-').collect();
    let lengths = [8, 4, 4, 4, 12];
    (groups.len() == 5
        && groups
            .iter()
            .zip(lengths)
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit())))
    .then_some(())
}

/// Callers named in `[[KEY]]` sections, each with a bearer token of at least 32
/// characters from a file or the environment; names unique.
fn resolve_bearer_clients(
    key: &str,
    sections: Vec<IssuanceClientSection>,
    env: &dyn Environment,
    relative: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<Vec<(String, SecretString)>, ConfigError> {
    let mut clients: Vec<(String, SecretString)> = Vec::new();
    for client in sections {
        let name = client.name;
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                format!("{key}.name"),
                format!("`{name}`: use 1-64 characters from A-Z a-z 0-9 - _"),
            ));
        }
        let token_key = format!("{key} `{name}` token_file/token_env");
        let token = read_secret(
            &token_key,
            &SecretRef {
                file: client.token_file.map(relative),
                env: client.token_env,
            },
            env,
        )?
        .ok_or_else(|| {
            invalid(
                &token_key,
                "the client's bearer token must come from a file or an environment variable",
            )
        })?;
        if token.expose_secret().len() < 32 {
            return Err(invalid(
                &token_key,
                "a bearer token needs at least 32 characters",
            ));
        }
        if clients.iter().any(|(other, _)| *other == name) {
            return Err(invalid(
                format!("{key}.name"),
                format!("`{name}` is listed twice"),
            ));
        }
        clients.push((name, token));
    }
    Ok(clients)
}

fn resolve_tsa(section: TsaSection) -> Result<TsaConfig, ConfigError> {
    const_oid::ObjectIdentifier::new(&section.policy).map_err(|e| {
        invalid(
            "signing.tsa.policy",
            format!("`{}` is not a dotted OID ({e})", section.policy),
        )
    })?;
    if !(1..=60_000).contains(&section.accuracy_millis) {
        return Err(invalid(
            "signing.tsa.accuracy_millis",
            "must be 1 to 60000 milliseconds",
        ));
    }
    let clock = section.clock;
    // A drift larger than the stated accuracy would make every token's accuracy false.
    if clock.max_drift_millis == 0 || clock.max_drift_millis > section.accuracy_millis {
        return Err(invalid(
            "signing.tsa.clock.max_drift_millis",
            format!(
                "must be at least 1 and at most signing.tsa.accuracy_millis ({})",
                section.accuracy_millis
            ),
        ));
    }
    if !(1..=3600).contains(&clock.check_interval_secs) {
        return Err(invalid(
            "signing.tsa.clock.check_interval_secs",
            "must be 1 to 3600 seconds",
        ));
    }
    if clock.ntp_timeout_millis == 0 || clock.ntp_timeout_millis > clock.check_interval_secs * 1000
    {
        return Err(invalid(
            "signing.tsa.clock.ntp_timeout_millis",
            "must be at least 1 and at most the check interval",
        ));
    }
    let ntp_servers = clock
        .ntp_servers
        .iter()
        .map(|server| {
            NtpServer::parse(server).ok_or_else(|| {
                invalid(
                    "signing.tsa.clock.ntp_servers",
                    format!("`{server}` is not `host`, `host:port` or `[ipv6]:port`"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TsaConfig {
        policy: section.policy,
        accuracy: std::time::Duration::from_millis(u64::from(section.accuracy_millis)),
        qualified: section.qualified,
        include_tsa_name: section.include_tsa_name,
        clock: ClockTrustConfig {
            os_sync: clock.os_sync,
            ntp_servers,
            max_drift: std::time::Duration::from_millis(u64::from(clock.max_drift_millis)),
            check_interval: std::time::Duration::from_secs(clock.check_interval_secs),
            ntp_timeout: std::time::Duration::from_millis(clock.ntp_timeout_millis),
            danger_unchecked: clock.danger_unchecked,
        },
    })
}

fn resolve_ca(
    section: CaSection,
    listen: &Listeners,
    env: &dyn Environment,
    relative: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<CaConfig, ConfigError> {
    if section.country.len() != 2 || !section.country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            "ca.country",
            format!(
                "`{}` is not an ISO 3166-1 alpha-2 code such as TT or EE",
                section.country
            ),
        ));
    }
    if section.organization.trim().is_empty() || section.organization.len() > 64 {
        return Err(invalid("ca.organization", "must have 1 to 64 characters"));
    }
    let public_url = section
        .public_url
        .unwrap_or_else(|| format!("http://{}", listen.ca))
        .trim_end_matches('/')
        .to_owned();
    // Relying parties fetch OCSP and CRLs over plain HTTP (RFC 5019, RFC 5280 4.2.1.13):
    // the responses are signed, and HTTPS would need revocation checking of its own.
    if !public_url.starts_with("http://") {
        return Err(invalid(
            "ca.public_url",
            "must be an http:// URL (OCSP and CRL fetchers expect plain HTTP)",
        ));
    }
    let pds_url = section.pds_url.unwrap_or_else(|| {
        format!(
            "https://{}/pds/en.pdf",
            public_url.trim_start_matches("http://")
        )
    });
    for (key, value) in [
        ("ca.citizen_validity_days", section.citizen_validity_days),
        ("ca.crl_next_update_hours", section.crl_next_update_hours),
        (
            "ca.delta_crl_next_update_hours",
            section.delta_crl_next_update_hours,
        ),
        ("ca.ocsp_validity_hours", section.ocsp_validity_hours),
    ] {
        if value == 0 {
            return Err(invalid(key, "must be at least 1"));
        }
    }
    let issuance_clients =
        resolve_bearer_clients("ca.issuance_client", section.issuance_client, env, relative)?
            .into_iter()
            .map(|(name, token)| IssuanceClient { name, token })
            .collect();
    Ok(CaConfig {
        country: section.country,
        organization: section.organization,
        public_url,
        pds_url,
        citizen_validity_days: section.citizen_validity_days,
        crl_next_update_hours: section.crl_next_update_hours,
        delta_crl_next_update_hours: section.delta_crl_next_update_hours,
        crl_full_on_change: section.crl_full_on_change,
        ocsp_validity_hours: section.ocsp_validity_hours,
        issuance_clients,
    })
}

/// An ID-card listener of `service` (`idp`, `enrolment`): its address (environment
/// `EID_<SERVICE>_CARD_LISTEN`, else the file's `card_listen`, else 127.0.0.1:`port`),
/// never the service's own `beside`, and its public https URL (`card_url`, else
/// https:// + the address).
fn card_listener(
    env: &dyn Environment,
    service: &str,
    (listen, url): (Option<SocketAddr>, Option<String>),
    port: u16,
    beside: SocketAddr,
) -> Result<(SocketAddr, String), ConfigError> {
    let variable = format!("EID_{}_CARD_LISTEN", service.to_ascii_uppercase());
    let address = match env.var(&variable) {
        Some(value) => value.parse::<SocketAddr>().map_err(|e| {
            invalid(
                variable.as_str(),
                format!("`{value}` is not an address like 127.0.0.1:{port} ({e})"),
            )
        })?,
        None => listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], port))),
    };
    if address == beside && address.port() != 0 {
        return Err(invalid(
            format!("{service}.card_listen"),
            format!("{address} is also the address of listen.{service}"),
        ));
    }
    let url = url
        .unwrap_or_else(|| format!("https://{address}"))
        .trim_end_matches('/')
        .to_owned();
    if !url.starts_with("https://") {
        return Err(invalid(
            format!("{service}.card_url"),
            "must be an https:// URL: the ID card is asked for in the TLS handshake",
        ));
    }
    Ok((address, url))
}

fn resolve_enrolment(
    section: EnrolmentSection,
    listen: &Listeners,
    env: &dyn Environment,
    relative: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<EnrolmentConfig, ConfigError> {
    let public_url = public_origin(
        "enrolment.public_url",
        env.var("EID_ENROLMENT_PUBLIC_URL")
            .or(section.public_url)
            .unwrap_or_else(|| {
                // Passkeys need a host name: a loopback listener is reached as localhost.
                let address = listen.enrolment;
                if address.ip().is_loopback() {
                    format!("http://localhost:{}", address.port())
                } else {
                    format!("http://{address}")
                }
            }),
    )?;
    for (key, value) in [
        ("enrolment.session_ttl_secs", section.session_ttl_secs),
        ("enrolment.link_ttl_secs", section.link_ttl_secs),
        (
            "enrolment.applications_per_minute",
            u64::from(section.applications_per_minute),
        ),
        (
            "enrolment.status_queries_per_minute",
            u64::from(section.status_queries_per_minute),
        ),
        ("enrolment.queue_retry_secs", section.queue_retry_secs),
    ] {
        if value == 0 {
            return Err(invalid(key, "must be at least 1"));
        }
    }
    let document_types = if section.document_type.is_empty() {
        vec![
            DocumentType::new("passport", "Passport", Some("td3")),
            DocumentType::new("national-id", "National identity card", Some("td1")),
            DocumentType::new("residence-permit", "Residence permit", Some("td1")),
            DocumentType::new("drivers-permit", "Driver's permit", None),
            DocumentType::new("birth-certificate", "Birth certificate", None),
        ]
    } else {
        let mut types: Vec<DocumentType> = Vec::new();
        for t in section.document_type {
            let key = "enrolment.document_type";
            if t.code.is_empty()
                || !t
                    .code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(invalid(
                    format!("{key}.code"),
                    format!("`{}`: use a-z, 0-9 and -", t.code),
                ));
            }
            if types.iter().any(|o| o.code == t.code) {
                return Err(invalid(
                    format!("{key}.code"),
                    format!("`{}` is listed twice", t.code),
                ));
            }
            if let Some(mrz) = &t.mrz
                && !matches!(mrz.as_str(), "td1" | "td2" | "td3")
            {
                return Err(invalid(
                    format!("{key}.mrz"),
                    format!("`{mrz}` is not td1, td2 or td3"),
                ));
            }
            types.push(DocumentType {
                code: t.code,
                name: t.name,
                mrz: t.mrz,
            });
        }
        types
    };
    let reader_module = env.var("EID_ENROLMENT_READER_MODULE").map(PathBuf::from);
    let reader = match (section.reader, reader_module) {
        (None, None) => None,
        (section, module) => {
            let section = section.unwrap_or(ReaderSection {
                module: PathBuf::new(),
                class: default_reader_class(),
                key: default_citizen_key(),
                transport_code_file: None,
                transport_code_env: Some("EID_ENROLMENT_TRANSPORT_CODE".into()),
            });
            let module = module.unwrap_or_else(|| relative(section.module));
            if !matches!(section.class.as_str(), "smartcard" | "sim") {
                return Err(invalid(
                    "enrolment.reader.class",
                    format!("`{}` is not smartcard or sim", section.class),
                ));
            }
            if !matches!(section.key.as_str(), "ec-p256" | "ec-p384") {
                return Err(invalid(
                    "enrolment.reader.key",
                    format!("`{}` is not ec-p256 or ec-p384", section.key),
                ));
            }
            let key = "enrolment.reader transport_code_file/transport_code_env";
            let transport_code = read_secret(
                key,
                &SecretRef {
                    file: section.transport_code_file.map(relative),
                    env: section.transport_code_env,
                },
                env,
            )?
            .ok_or_else(|| {
                invalid(
                    key,
                    "the card batch's transport code must come from a file or an environment variable",
                )
            })?;
            Some(ReaderConfig {
                module,
                class: section.class,
                key: section.key,
                transport_code: std::sync::Arc::new(transport_code),
            })
        }
    };
    let ca = match section.ca {
        None => None,
        Some(ca) => {
            let mut url = url::Url::parse(&ca.url).map_err(|e| {
                invalid(
                    "enrolment.ca.url",
                    format!("`{}` is not a URL ({e})", ca.url),
                )
            })?;
            if !matches!(url.scheme(), "https" | "http") || url.cannot_be_a_base() {
                return Err(invalid(
                    "enrolment.ca.url",
                    format!("`{url}` is not an http(s) base URL"),
                ));
            }
            if !url.path().ends_with('/') {
                // A base: the API's paths are joined below it.
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            if !(1..=300).contains(&ca.timeout_secs) {
                return Err(invalid(
                    "enrolment.ca.timeout_secs",
                    "must be 1 to 300 seconds",
                ));
            }
            let key = "enrolment.ca token_file/token_env";
            let token = read_secret(
                key,
                &SecretRef {
                    file: ca.token_file.map(relative),
                    env: ca.token_env,
                },
                env,
            )?
            .ok_or_else(|| {
                invalid(
                    key,
                    "the desk's bearer token for the CA must come from a file or an environment variable",
                )
            })?;
            Some(DeskCaConfig {
                url,
                token: std::sync::Arc::new(token),
                timeout: std::time::Duration::from_secs(ca.timeout_secs),
            })
        }
    };
    let (card_listen, card_url) = card_listener(
        env,
        "enrolment",
        (section.card_listen, section.card_url),
        8446,
        listen.enrolment,
    )?;
    Ok(EnrolmentConfig {
        public_url,
        card_listen,
        card_url,
        session_ttl_secs: section.session_ttl_secs,
        link_ttl_secs: section.link_ttl_secs,
        applications_per_minute: section.applications_per_minute,
        status_queries_per_minute: section.status_queries_per_minute,
        document_types,
        reader,
        status_clients: api_clients(
            "enrolment.status_client",
            section.status_client,
            env,
            relative,
        )?,
        operator_clients: api_clients(
            "enrolment.operator_client",
            section.operator_client,
            env,
            relative,
        )?,
        ca,
        queue_retry_secs: section.queue_retry_secs,
    })
}

/// `[[KEY]]` bearer callers, as the services hold them.
fn api_clients(
    key: &str,
    sections: Vec<IssuanceClientSection>,
    env: &dyn Environment,
    relative: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<Vec<ApiClient>, ConfigError> {
    Ok(resolve_bearer_clients(key, sections, env, relative)?
        .into_iter()
        .map(|(name, token)| ApiClient {
            name,
            token: std::sync::Arc::new(token),
        })
        .collect())
}

fn resolve_idp(
    section: IdpSection,
    listen: &Listeners,
    env: &dyn Environment,
    relative: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<IdpConfig, ConfigError> {
    let issuer = env
        .var("EID_IDP_ISSUER")
        .or(section.issuer)
        .unwrap_or_else(|| format!("http://{}", listen.idp))
        .trim_end_matches('/')
        .to_owned();
    let issuer_url = url::Url::parse(&issuer)
        .map_err(|e| invalid("idp.issuer", format!("`{issuer}` is not a URL ({e})")))?;
    if !matches!(issuer_url.scheme(), "https" | "http")
        || issuer_url.query().is_some()
        || issuer_url.fragment().is_some()
    {
        return Err(invalid(
            "idp.issuer",
            "must be an https:// (or, for development, http://) URL without query or fragment",
        ));
    }
    let (card_listen, card_url) = card_listener(
        env,
        "idp",
        (section.card_listen, section.card_url),
        8443,
        listen.idp,
    )?;
    let acr = [section.acr_low, section.acr_substantial, section.acr_high];
    for (key, value) in ["idp.acr_low", "idp.acr_substantial", "idp.acr_high"]
        .iter()
        .zip(&acr)
    {
        if value.trim().is_empty() || value.contains(' ') {
            return Err(invalid(*key, "must be a non-empty URI without spaces"));
        }
    }
    if acr[0] == acr[1] || acr[1] == acr[2] || acr[0] == acr[2] {
        return Err(invalid(
            "idp.acr_*",
            "the three levels need distinct values",
        ));
    }
    if !matches!(section.token_alg.as_str(), "ES256" | "PS256") {
        return Err(invalid(
            "idp.token_alg",
            format!("`{}` is not ES256 or PS256", section.token_alg),
        ));
    }
    for (key, value) in [
        ("idp.code_ttl_secs", section.code_ttl_secs),
        ("idp.access_token_ttl_secs", section.access_token_ttl_secs),
        ("idp.id_token_ttl_secs", section.id_token_ttl_secs),
        ("idp.refresh_token_ttl_secs", section.refresh_token_ttl_secs),
        ("idp.session_ttl_secs", section.session_ttl_secs),
        ("idp.interaction_ttl_secs", section.interaction_ttl_secs),
    ] {
        if value == 0 {
            return Err(invalid(key, "must be at least 1"));
        }
    }
    if section.code_ttl_secs > 600 {
        return Err(invalid(
            "idp.code_ttl_secs",
            "at most 600 (RFC 6749 4.1.2 recommends codes live at most 10 minutes)",
        ));
    }
    Ok(IdpConfig {
        issuer,
        card_listen,
        card_url,
        acr,
        token_alg: section.token_alg,
        code_ttl_secs: section.code_ttl_secs,
        access_token_ttl_secs: section.access_token_ttl_secs,
        id_token_ttl_secs: section.id_token_ttl_secs,
        refresh_token_ttl_secs: section.refresh_token_ttl_secs,
        session_ttl_secs: section.session_ttl_secs,
        interaction_ttl_secs: section.interaction_ttl_secs,
        key_publish_secs: section.key_publish_secs,
        ocsp_cache_secs: section.ocsp_cache_secs,
        client_cache_secs: section.client_cache_secs,
        admin_clients: api_clients("idp.admin_client", section.admin_client, env, relative)?,
    })
}

fn read_secret(
    key: &str,
    reference: &SecretRef,
    env: &dyn Environment,
) -> Result<Option<SecretString>, ConfigError> {
    match (&reference.file, &reference.env) {
        (Some(_), Some(_)) => Err(invalid(
            key,
            "give a file or an environment variable, not both",
        )),
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Secret {
                key: key.to_owned(),
                message: format!("{}: {e}", path.display()),
            })?;
            // A trailing newline is how editors and `echo` leave files; it is not part of the secret.
            let trimmed = text.trim_end_matches(['\n', '\r']);
            if trimmed.is_empty() {
                return Err(ConfigError::Secret {
                    key: key.to_owned(),
                    message: format!("{} is empty", path.display()),
                });
            }
            Ok(Some(SecretString::from(trimmed.to_owned())))
        }
        (None, Some(name)) => match env.var(name) {
            Some(value) if !value.is_empty() => Ok(Some(SecretString::from(value))),
            _ => Err(ConfigError::Secret {
                key: key.to_owned(),
                message: format!("environment variable {name} is not set"),
            }),
        },
        (None, None) => Ok(None),
    }
}

fn resolve_database(
    section: &DatabaseSection,
    env: &dyn Environment,
    data_dir: &Path,
) -> Result<DatabaseConfig, ConfigError> {
    if section.max_connections == 0 {
        return Err(invalid("database.max_connections", "must be at least 1"));
    }
    let (key, url) = match env.var("EID_DATABASE_URL") {
        Some(url) => ("EID_DATABASE_URL", url),
        None => match &section.url {
            Some(url) => ("database.url", url.clone()),
            None => (
                "database.url",
                format!(
                    "sqlite://{}?mode=rwc",
                    data_dir.join("eid.sqlite").display()
                ),
            ),
        },
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        invalid(
            key,
            "expected a URL like sqlite://FILE or postgres://HOST/DB",
        )
    })?;
    let password = read_secret(
        "database.password_file/password_env",
        &SecretRef {
            file: section.password_file.clone(),
            env: section.password_env.clone(),
        },
        env,
    )?;
    match scheme {
        "sqlite" => {
            if password.is_some() {
                return Err(invalid(
                    "database.password_file",
                    "SQLite takes no password",
                ));
            }
            Ok(DatabaseConfig {
                display_url: url.clone(),
                url: SecretString::from(url),
                max_connections: section.max_connections,
            })
        }
        "postgres" | "postgresql" => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let (userinfo, host) = match authority.rsplit_once('@') {
                Some((userinfo, host)) => (Some(userinfo), host),
                None => (None, authority),
            };
            let user = userinfo.map(|u| u.split_once(':').map_or(u, |(user, _)| user));
            let inline_password = userinfo.is_some_and(|u| u.contains(':'));
            if inline_password && key == "database.url" {
                return Err(invalid(
                    key,
                    "the URL holds a password; put it in a file named by database.password_file \
                     (or an environment variable named by database.password_env)",
                ));
            }
            if inline_password && password.is_some() {
                return Err(invalid(
                    key,
                    "the URL holds a password and a password secret is configured too",
                ));
            }
            let display_user = user.map(|u| format!("{u}@")).unwrap_or_default();
            let display_url = format!("{scheme}://{display_user}{host}/{path}");
            let full = match (&password, user) {
                (Some(password), Some(user)) => format!(
                    "{scheme}://{user}:{}@{host}/{path}",
                    percent_encode(password.expose_secret())
                ),
                (Some(_), None) => {
                    return Err(invalid(
                        key,
                        "a password is configured but the URL names no user",
                    ));
                }
                (None, _) => url,
            };
            Ok(DatabaseConfig {
                url: SecretString::from(full),
                display_url,
                max_connections: section.max_connections,
            })
        }
        other => Err(invalid(
            key,
            format!("unsupported database `{other}`: use sqlite:// or postgres://"),
        )),
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn resolve_keys(
    section: KeysSection,
    env: &dyn Environment,
    data_dir: &Path,
    relative: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<KeysConfig, ConfigError> {
    match section.backend {
        KeyBackendName::Soft => {
            if section.pkcs11.is_some() {
                return Err(invalid(
                    "keys.pkcs11",
                    "is set but keys.backend is \"soft\"; set keys.backend = \"pkcs11\" or remove the section",
                ));
            }
            let soft = section.soft;
            let dir = soft
                .dir
                .map(relative)
                .unwrap_or_else(|| data_dir.join("keys"));
            let passphrase = read_secret(
                "keys.soft.passphrase_file/passphrase_env",
                &SecretRef {
                    file: soft.passphrase_file.map(relative),
                    env: soft.passphrase_env,
                },
                env,
            )?;
            let secret = match (passphrase, soft.key_file) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "keys.soft.key_file",
                        "give a passphrase or a key file, not both",
                    ));
                }
                (Some(passphrase), None) => SoftSecretConfig::Passphrase(passphrase),
                (None, Some(path)) => SoftSecretConfig::KeyFile {
                    path: relative(path),
                    generated: false,
                },
                (None, None) => SoftSecretConfig::KeyFile {
                    path: data_dir.join("secrets").join("soft-store.key"),
                    generated: true,
                },
            };
            Ok(KeysConfig::Soft { dir, secret })
        }
        KeyBackendName::Pkcs11 => {
            let p = section.pkcs11.ok_or_else(|| {
                invalid(
                    "keys.pkcs11",
                    "keys.backend is \"pkcs11\" but the [keys.pkcs11] section is missing",
                )
            })?;
            let token = match (p.token_label, p.token_serial) {
                (Some(label), None) => eid_hsm::TokenSelector::Label(label),
                (None, Some(serial)) => eid_hsm::TokenSelector::Serial(serial),
                _ => {
                    return Err(invalid(
                        "keys.pkcs11.token_label",
                        "give exactly one of token_label and token_serial (slot numbers are not stable)",
                    ));
                }
            };
            let pin = read_secret(
                "keys.pkcs11.pin_file/pin_env",
                &SecretRef {
                    file: p.pin_file.map(relative),
                    env: p.pin_env,
                },
                env,
            )?
            .ok_or_else(|| {
                invalid(
                    "keys.pkcs11.pin_file",
                    "the token's PIN must come from pin_file or pin_env",
                )
            })?;
            if p.sessions == 0 {
                return Err(invalid("keys.pkcs11.sessions", "must be at least 1"));
            }
            Ok(KeysConfig::Pkcs11 {
                module: relative(p.module),
                token,
                pin,
                sessions: p.sessions,
                class: p.class,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct FakeEnv(HashMap<String, String>);

    impl Environment for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn env(pairs: &[(&str, &str)]) -> FakeEnv {
        FakeEnv(
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        )
    }

    fn load_text(text: &str, env: &FakeEnv) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eid.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), env, &Overrides::default())
    }

    #[test]
    fn embedded_defaults() {
        let config = Config::load(None, &FakeEnv::default(), &Overrides::default()).unwrap();
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(config.listen, Listeners::default());
        assert_eq!(
            config.database.display_url,
            "sqlite://./eid-data/eid.sqlite?mode=rwc"
        );
        assert!(matches!(
            config.keys,
            KeysConfig::Soft {
                secret: SoftSecretConfig::KeyFile {
                    generated: true,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn mobile_id_is_off_until_gateway_and_pin_are_both_given() {
        let config = Config::load(None, &FakeEnv::default(), &Overrides::default()).unwrap();
        assert!(config.mobile_id.is_none());
        let pin = "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let config = load_text(
            &format!("[mobile_id]\ngateway_url = \"https://mid.example:8443/\"\ngateway_pin = \"{pin}\"\n"),
            &FakeEnv::default(),
        )
        .unwrap();
        let mobile = config.mobile_id.unwrap();
        assert_eq!(mobile.gateway_url, "https://mid.example:8443");
        assert_eq!(mobile.gateway_pin.to_string(), pin);
        assert_eq!(
            mobile.relying_party_uuid,
            "00000000-0000-0000-0000-000000000000"
        );
        assert_eq!((mobile.poll_secs, mobile.max_attempts), (20, 5));
        for (text, named) in [
            (
                "[mobile_id]\ngateway_url = \"https://mid.example\"\n".to_owned(),
                "gateway_pin",
            ),
            (
                format!("[mobile_id]\ngateway_pin = \"{pin}\"\n"),
                "gateway_url",
            ),
            (
                format!(
                    "[mobile_id]\ngateway_url = \"http://mid.example\"\ngateway_pin = \"{pin}\"\n"
                ),
                "must be https",
            ),
            (
                "[mobile_id]\ngateway_url = \"https://mid.example\"\ngateway_pin = \"md5/x\"\n"
                    .to_owned(),
                "sha256/",
            ),
            (
                format!(
                    "[mobile_id]\ngateway_url = \"https://m\"\ngateway_pin = \"{pin}\"\nrelying_party_uuid = \"nope\"\n"
                ),
                "not a UUID",
            ),
            (
                format!(
                    "[mobile_id]\ngateway_url = \"https://m\"\ngateway_pin = \"{pin}\"\npoll_secs = 0\n"
                ),
                "poll_secs",
            ),
        ] {
            let err = load_text(&text, &FakeEnv::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{named}: {err}");
        }
        let env = env(&[
            ("EID_MOBILE_ID_GATEWAY_URL", "https://127.0.0.1:8084"),
            ("EID_MOBILE_ID_GATEWAY_PIN", pin),
        ]);
        let config = Config::load(None, &env, &Overrides::default()).unwrap();
        assert_eq!(
            config.mobile_id.unwrap().gateway_url,
            "https://127.0.0.1:8084"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_text(
            "[listen]\nidp = \"127.0.0.1:1\"\nidpp = 3\n",
            &FakeEnv::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("idpp"), "{err}");
        let err = load_text("colour = 1\n", &FakeEnv::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = load_text("[listen]\nca = \"nowhere\"\n", &FakeEnv::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca") && err.contains("nowhere"), "{err}");
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        let env = env(&[
            ("EID_CA_LISTEN", "127.0.0.1:9991"),
            ("EID_DATA", "/tmp/from-env"),
        ]);
        let config = load_text("[listen]\nca = \"127.0.0.1:7000\"\n", &env).unwrap();
        assert_eq!(config.listen.ca.port(), 9991);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/from-env"));
        let overrides = Overrides {
            data_dir: Some("/tmp/from-flag".into()),
        };
        let config = Config::load(None, &env, &overrides).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/tmp/from-flag"));
        let err = Config::load(None, &self::env(&[("EID_IDP_LISTEN", "x")]), &overrides)
            .unwrap_err()
            .to_string();
        assert!(err.contains("EID_IDP_LISTEN"), "{err}");
    }

    #[test]
    fn inline_database_password_is_refused_and_file_password_is_used() {
        let err = load_text(
            "[database]\nurl = \"postgres://eid:hunter2@db/eid\"\n",
            &FakeEnv::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("password_file"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db-pass"), "p@ss word\n").unwrap();
        std::fs::write(
            dir.path().join("eid.toml"),
            "[database]\nurl = \"postgres://eid@db:5432/eid\"\npassword_file = \"PATH\"\n"
                .replace("PATH", &dir.path().join("db-pass").display().to_string()),
        )
        .unwrap();
        let config = Config::load(
            Some(&dir.path().join("eid.toml")),
            &FakeEnv::default(),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            config.database.url.expose_secret(),
            "postgres://eid:p%40ss%20word@db:5432/eid"
        );
        assert_eq!(config.database.display_url, "postgres://eid@db:5432/eid");
        assert!(!format!("{config:?}").contains("word"));
    }

    #[test]
    fn pkcs11_needs_a_pin_source_and_one_token_selector() {
        let base = "[keys]\nbackend = \"pkcs11\"\n[keys.pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\n";
        let err = load_text(
            &format!("{base}token_label = \"eid\"\n"),
            &FakeEnv::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pin"), "{err}");
        let err = load_text(&format!("{base}pin_env = \"PIN\"\n"), &FakeEnv::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("token_label"), "{err}");
        let err = load_text(
            &format!("{base}token_label = \"eid\"\npin_env = \"EID_TEST_PIN\"\n"),
            &FakeEnv::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("EID_TEST_PIN is not set"), "{err}");
        let config = load_text(
            &format!("{base}token_label = \"eid\"\npin_env = \"EID_TEST_PIN\"\n"),
            &env(&[("EID_TEST_PIN", "1234")]),
        )
        .unwrap();
        assert!(matches!(
            config.keys,
            KeysConfig::Pkcs11 { sessions: 4, .. }
        ));
        assert!(!format!("{config:?}").contains("1234"));
    }

    #[test]
    fn production_refuses_the_generated_key_file() {
        let err = load_text("profile = \"production\"\n", &FakeEnv::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("production"), "{err}");
        let config = load_text(
            "profile = \"production\"\n[keys.soft]\npassphrase_env = \"P\"\n\
             [idp]\nissuer = \"https://login.example\"\n",
            &env(&[("P", "correct horse battery staple")]),
        )
        .unwrap();
        assert_eq!(config.profile, Profile::Production);
    }

    #[test]
    fn idp_settings_are_checked_and_named() {
        let config = load_text("", &FakeEnv::default()).unwrap();
        assert_eq!(config.idp.issuer, "http://127.0.0.1:8080");
        assert_eq!(config.idp.card_url, "https://127.0.0.1:8443");
        for (text, key) in [
            ("[idp]\ntoken_alg = \"HS256\"\n", "idp.token_alg"),
            ("[idp]\ncode_ttl_secs = 3600\n", "idp.code_ttl_secs"),
            ("[idp]\nissuer = \"https://x/?a=b\"\n", "idp.issuer"),
            ("[idp]\ncard_url = \"http://card\"\n", "idp.card_url"),
            (
                "[idp]\nacr_high = \"http://eidas.europa.eu/LoA/low\"\n",
                "idp.acr_*",
            ),
            ("[idp]\nsession_ttl_secs = 0\n", "idp.session_ttl_secs"),
            ("[idp]\nbogus = 1\n", "bogus"),
        ] {
            let err = load_text(text, &FakeEnv::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = load_text(
            "profile = \"production\"\n[keys.soft]\npassphrase_env = \"P\"\n",
            &env(&[("P", "correct horse battery staple")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("idp.issuer") && err.contains("https"), "{err}");
    }

    #[test]
    fn the_documented_production_example_loads() {
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/eid.example.toml"),
        )
        .unwrap();
        let secrets = tempfile::tempdir().unwrap();
        std::fs::write(secrets.path().join("eid-db-password"), "db-secret\n").unwrap();
        std::fs::write(secrets.path().join("eid-hsm-pin"), "918273\n").unwrap();
        std::fs::write(
            secrets.path().join("eid-ca-enrolment-token"),
            "a-registration-authority-token-of-some-length\n",
        )
        .unwrap();
        std::fs::write(
            secrets.path().join("eid-idp-admin-token"),
            "an-operator-tooling-token-of-some-length\n",
        )
        .unwrap();
        std::fs::write(secrets.path().join("eid-card-transport-code"), "55667788\n").unwrap();
        std::fs::write(
            secrets.path().join("eid-status-benefits-token"),
            "a-relying-service-status-token-of-some-length\n",
        )
        .unwrap();
        std::fs::write(
            secrets.path().join("eid-operator-token"),
            "a-mobile-operator-token-of-some-length\n",
        )
        .unwrap();
        let text = example.replace("/run/secrets", &secrets.path().display().to_string());
        let config = load_text(&text, &FakeEnv::default()).unwrap();
        assert_eq!(config.profile, Profile::Production);
        assert_eq!(config.idp.issuer, "https://login.eid.gov.tt");
        assert_eq!(config.idp.card_url, "https://card.login.eid.gov.tt");
        assert_eq!(config.idp.admin_clients[0].name, "operator-tooling");
        assert_eq!(config.enrolment.operator_clients[0].name, "tt-mobile");
        let mobile = config.mobile_id.as_ref().unwrap();
        assert_eq!(mobile.gateway_url, "https://mid.operator.tt");
        assert_eq!(config.enrolment.public_url, "https://desk.pos.eid.gov.tt");
        assert_eq!(config.enrolment.document_types.len(), 3);
        let reader = config.enrolment.reader.as_ref().unwrap();
        assert_eq!(reader.key, "ec-p384");
        assert_eq!(reader.transport_code.expose_secret(), "55667788");
        assert_eq!(config.enrolment.status_clients[0].name, "benefits-office");
        assert_eq!(
            config.database.display_url,
            "postgres://eid@db.internal:5432/eid"
        );
        assert_eq!(
            config.database.url.expose_secret(),
            "postgres://eid:db-secret@db.internal:5432/eid"
        );
        let KeysConfig::Pkcs11 {
            token,
            pin,
            sessions,
            class,
            ..
        } = &config.keys
        else {
            panic!("expected PKCS#11 keys, got {:?}", config.keys);
        };
        assert_eq!(token, &eid_hsm::TokenSelector::Label("eid-service".into()));
        assert_eq!(pin.expose_secret(), "918273");
        assert_eq!((*sessions, *class), (4, TokenClass::Hsm));
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.ca.public_url, "http://pki.eid.gov.tt");
        assert_eq!(config.ca.issuance_clients.len(), 1);
        assert_eq!(config.ca.issuance_clients[0].name, "enrolment");
        assert!(!format!("{:?}", config.ca).contains("registration-authority-token"));
        let tsa = &config.signing.tsa;
        assert!(tsa.qualified);
        assert_eq!(tsa.clock.os_sync, OsSyncCheck::Required);
        assert_eq!(tsa.clock.ntp_servers.len(), 2);
    }

    #[test]
    fn desk_ca_link_is_checked() {
        let config = load_text("", &FakeEnv::default()).unwrap();
        assert!(config.enrolment.ca.is_none());
        assert_eq!(config.enrolment.queue_retry_secs, 30);
        let config = load_text(
            "[enrolment]\nqueue_retry_secs = 5\n[enrolment.ca]\nurl = \"https://ca.example/ra\"\n\
             token_env = \"DESK_TOKEN\"\n",
            &env(&[("DESK_TOKEN", "a-desk-token")]),
        )
        .unwrap();
        let ca = config.enrolment.ca.as_ref().unwrap();
        assert_eq!(ca.url.as_str(), "https://ca.example/ra/");
        assert_eq!(ca.timeout, std::time::Duration::from_secs(10));
        assert_eq!(config.enrolment.queue_retry_secs, 5);
        assert!(!format!("{ca:?}").contains("a-desk-token"));
        for (text, key) in [
            (
                "[enrolment.ca]\nurl = \"ftp://ca\"\ntoken_env = \"DESK_TOKEN\"\n",
                "enrolment.ca.url",
            ),
            (
                "[enrolment.ca]\nurl = \"https://ca\"\n",
                "enrolment.ca token_file/token_env",
            ),
            (
                "[enrolment.ca]\nurl = \"https://ca\"\ntoken_env = \"DESK_TOKEN\"\ntimeout_secs = 0\n",
                "enrolment.ca.timeout_secs",
            ),
            (
                "[enrolment]\nqueue_retry_secs = 0\n",
                "enrolment.queue_retry_secs",
            ),
        ] {
            let err = load_text(text, &env(&[("DESK_TOKEN", "a-desk-token")]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn tsa_defaults_and_checks() {
        let config = Config::load(None, &FakeEnv::default(), &Overrides::default()).unwrap();
        let tsa = &config.signing.tsa;
        assert_eq!(tsa.policy, ETSI_BEST_PRACTICES_TS_POLICY);
        assert_eq!(tsa.accuracy, std::time::Duration::from_secs(1));
        assert!(!tsa.qualified && tsa.include_tsa_name);
        assert_eq!(tsa.clock.os_sync, OsSyncCheck::WhenReported);
        assert!(tsa.clock.ntp_servers.is_empty() && !tsa.clock.danger_unchecked);

        let err = load_text(
            "[signing.tsa]\npolicy = \"not.an.oid\"\n",
            &FakeEnv::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("signing.tsa.policy"), "{err}");
        let err = load_text(
            "[signing.tsa]\naccuracy_millis = 100\n[signing.tsa.clock]\nmax_drift_millis = 200\n",
            &FakeEnv::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("max_drift_millis"), "{err}");
        let err = load_text(
            "[signing.tsa.clock]\nntp_servers = [\"ntp.example:x\"]\n",
            &FakeEnv::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ntp_servers"), "{err}");
        let err = load_text(
            "[signing.tsa.clock]\nos_sync = \"maybe\"\n",
            &FakeEnv::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("maybe"), "{err}");
        let config = load_text(
            "[signing.tsa]\nqualified = true\n[signing.tsa.clock]\nntp_servers = [\"127.0.0.1:1123\", \"ntp.example\", \"[::1]:9\"]\n",
            &FakeEnv::default(),
        )
        .unwrap();
        let servers: Vec<String> = config
            .signing
            .tsa
            .clock
            .ntp_servers
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(servers, ["127.0.0.1:1123", "ntp.example:123", "[::1]:9"]);
        assert!(config.signing.tsa.qualified);
    }

    #[test]
    fn production_requires_a_clock_check_and_refuses_an_unchecked_clock() {
        let env = env(&[("P", "correct horse battery staple")]);
        // Production also needs an https issuer for the idp (checked since the idp
        // joined); the TSA's clock rules are what this test is about.
        let base = "profile = \"production\"\n[keys.soft]\npassphrase_env = \"P\"\n\
                    [idp]\nissuer = \"https://login.example\"\ncard_url = \"https://card.login.example\"\n";
        let err = load_text(base, &env)
            .unwrap()
            .check_tsa_clock_for_profile()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("signing.tsa.clock") && err.contains("ntp_servers"),
            "{err}"
        );
        let err = load_text(
            &format!(
                "{base}[signing.tsa.clock]\nos_sync = \"required\"\ndanger_unchecked = true\n"
            ),
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("danger_unchecked"), "{err}");
        for clock in ["os_sync = \"required\"", "ntp_servers = [\"ntp.internal\"]"] {
            load_text(&format!("{base}[signing.tsa.clock]\n{clock}\n"), &env)
                .unwrap()
                .check_tsa_clock_for_profile()
                .unwrap();
        }
    }

    #[test]
    fn identity_status_clients_need_long_tokens() {
        let env = env(&[
            ("STATUS_TOKEN", "a-benefits-office-token-of-enough-length"),
            ("SHORT", "short"),
        ]);
        let config = load_text(
            "[[enrolment.status_client]]\nname = \"benefits\"\ntoken_env = \"STATUS_TOKEN\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(config.enrolment.status_clients.len(), 1);
        assert_eq!(config.enrolment.status_clients[0].name, "benefits");
        assert!(!format!("{:?}", config.enrolment).contains("enough-length"));
        let err = load_text(
            "[[enrolment.status_client]]\nname = \"benefits\"\ntoken_env = \"SHORT\"\n",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("enrolment.status_client `benefits`"), "{err}");
        assert!(
            load_text("", &env)
                .unwrap()
                .enrolment
                .status_clients
                .is_empty(),
            "no relying service may ask unless configured"
        );
    }

    #[test]
    fn signature_api_clients_need_long_tokens_and_unique_names() {
        let env = env(&[
            ("RP_TOKEN", "a-signature-api-token-of-enough-length"),
            ("SHORT", "short"),
        ]);
        let config = load_text(
            "[signing.cades]\npending_ttl_secs = 120\n[[signing.api_client]]\nname = \"portal\"\ntoken_env = \"RP_TOKEN\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(config.signing.api_clients.len(), 1);
        assert_eq!(config.signing.api_clients[0].name, "portal");
        assert_eq!(config.signing.cades.pending_ttl.as_secs(), 120);
        assert!(!format!("{:?}", config.signing).contains("enough-length"));
        let err = load_text(
            "[[signing.api_client]]\nname = \"portal\"\ntoken_env = \"SHORT\"\n",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("signing.api_client `portal`"), "{err}");
        let twice = "[[signing.api_client]]\nname = \"portal\"\ntoken_env = \"RP_TOKEN\"\n";
        let err = load_text(&format!("{twice}{twice}"), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("listed twice"), "{err}");
        let err = load_text("[signing.cades]\npending_ttl_secs = 1\n", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("signing.cades.pending_ttl_secs"), "{err}");
    }

    #[test]
    fn csc_settings_default_to_the_signing_url_and_are_bounded() {
        let env = env(&[("EID_SIGNING_PUBLIC_URL", "https://sign.example/")]);
        let config = load_text("[signing.csc]\npin_attempts = 5\n", &env).unwrap();
        assert_eq!(config.signing.public_url, "https://sign.example");
        assert_eq!(config.signing.csc.audience, "https://sign.example/csc/v2");
        assert_eq!(config.signing.csc.issuer, config.idp.issuer);
        assert_eq!(config.signing.csc.pin_attempts, 5);
        for (text, key) in [
            (
                "[signing.csc]\nsad_ttl_secs = 5\n",
                "signing.csc.sad_ttl_secs",
            ),
            (
                "[signing.csc]\npin_attempts = 0\n",
                "signing.csc.pin_attempts",
            ),
            (
                "[signing.csc]\nmax_signatures = 5000\n",
                "signing.csc.max_signatures",
            ),
            (
                "[signing]\npublic_url = \"https://sign.example/path\"\n",
                "signing.public_url",
            ),
        ] {
            let err = load_text(text, &FakeEnv::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn duplicate_listeners_are_refused() {
        let err = load_text("[listen]\nca = \"127.0.0.1:8080\"\n", &FakeEnv::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("listen.ca") && err.contains("listen.idp"),
            "{err}"
        );
    }
}
