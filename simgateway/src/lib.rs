//! The SIM gateway simulator: plays the mobile operator's signature gateway (MSSP) and
//! the citizens' phones, for development, tests and pilots. Never part of a production
//! deployment: `eid serve` starts it only when asked by name, and the production
//! profile refuses it.
//!
//! - Each simulated SIM is a PKCS#11 card of class sim (two SoftHSM2 tokens,
//!   `<id> (PIN1)` with the authentication key and `<id> (PIN2)` with the signing
//!   key, both generated on the token), registered with a phone number and a national
//!   identity number ([`SimGateway::add_sim`]).
//! - The relying side's API is the protocol of [`eid_hsm::mobile`], over TLS with the
//!   simulator's own key (self-signed certificate; relying parties pin the key).
//! - A page and a JSON API let a tester act as the phone: see the verification code
//!   and the prompt, confirm with PIN1 or PIN2, cancel, or let the session time out.
//! - PIN rules are the simulator's: three wrong PINs block that PIN (SoftHSM2 never
//!   blocks), the PUK unblocks; three wrong PUKs block the SIM for good. The counts
//!   are kept in the database.
#![forbid(unsafe_code)]

mod http;
mod phone;
mod registry;
mod tls;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use eid_core::ServiceContext;
use eid_hsm::{
    CardId, CardReader, TokenClass,
    mobile::{HashType, Operation, SessionState, SessionStatus, VerificationCode},
};

pub use http::{router, serve_tls};
pub use phone::{Confirmation, Fault, PendingPrompt};
pub use registry::{Sim, SimRegistry};
pub use tls::{GatewayTls, TLS_KEY_LABEL};

/// The service name in logs and metrics.
pub const SERVICE: &str = "sim-gateway";

/// Wrong tries before a PIN (or, for the PUK, the SIM) blocks.
pub const TRIES: i64 = 3;

/// How long a session can be polled, from its start (MID REST: 5 minutes).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(300);

/// What can go wrong in the simulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimGatewayError {
    /// The request is wrong (answered with 400 and this message).
    #[error("{0}")]
    BadRequest(String),
    /// No such SIM, session or phone (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the state (409): a taken phone number, a blocked PIN.
    #[error("{0}")]
    Conflict(String),
    /// The key layer failed.
    #[error("SIM: {0}")]
    Hsm(#[from] eid_hsm::HsmError),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] eid_core::DbError),
    /// The audit log failed.
    #[error("audit log: {0}")]
    Audit(#[from] eid_core::AuditError),
    /// Something else internal.
    #[error("{0}")]
    Internal(String),
}

/// The simulator's settings.
#[derive(Clone, Debug)]
pub struct SimGatewayOptions {
    /// The PKCS#11 module whose tokens are the SIMs.
    pub module: PathBuf,
    /// How long the phone waits for the citizen before the session ends in TIMEOUT
    /// (MID REST: about two minutes).
    pub answer_timeout: Duration,
}

/// One session, as the gateway keeps it (in memory: sessions live minutes).
#[derive(Debug)]
struct Session {
    operation: Operation,
    phone_number: String,
    card: Option<CardId>,
    relying_party_name: String,
    display_text: Option<String>,
    hash: Vec<u8>,
    hash_type: HashType,
    code: VerificationCode,
    started: tokio::time::Instant,
    status: SessionStatus,
    changed: tokio::sync::watch::Sender<()>,
    /// A tester made the gateway stop answering this session's polls.
    silent: bool,
}

#[derive(Debug)]
struct Inner {
    ctx: ServiceContext,
    options: SimGatewayOptions,
    reader: CardReader,
    registry: SimRegistry,
    sessions: Mutex<HashMap<String, Session>>,
    /// One SIM operation at a time: a card token takes one login per process.
    sim_turn: tokio::sync::Mutex<()>,
    csrf_secret: String,
}

/// The simulator: registry, sessions, and the simulated phones. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SimGateway {
    inner: Arc<Inner>,
}

fn random_hex(bytes: usize) -> Result<String, SimGatewayError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|e| SimGatewayError::Internal(e.to_string()))?;
    Ok(hex::encode(buffer))
}

/// Opens the card reader of the simulated SIMs.
pub fn open_reader(module: &Path) -> Result<CardReader, SimGatewayError> {
    Ok(CardReader::open(module, TokenClass::Sim)?)
}

impl SimGateway {
    /// Opens the simulator on the instance's database, with the SIMs in
    /// `options.module`.
    pub fn open(ctx: &ServiceContext, options: SimGatewayOptions) -> Result<Self, SimGatewayError> {
        let reader = open_reader(&options.module)?;
        Ok(Self {
            inner: Arc::new(Inner {
                ctx: ctx.clone(),
                registry: SimRegistry::new(ctx.clone()),
                reader,
                options,
                sessions: Mutex::new(HashMap::new()),
                sim_turn: tokio::sync::Mutex::new(()),
                csrf_secret: random_hex(32)?,
            }),
        })
    }

    /// The registry of SIMs.
    pub fn registry(&self) -> &SimRegistry {
        &self.inner.registry
    }

    /// Registers the card `card` (already in the module, with both key pairs) as the
    /// SIM of `phone_number` and `national_id`.
    pub async fn add_sim(
        &self,
        phone_number: &str,
        national_id: &str,
        card: &CardId,
        actor: &str,
    ) -> Result<Sim, SimGatewayError> {
        registry::check_card(&self.inner.reader, card)?;
        self.inner
            .registry
            .add(phone_number, national_id, card, actor)
            .await
    }

    fn sessions(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, HashMap<String, Session>>, SimGatewayError> {
        self.inner
            .sessions
            .lock()
            .map_err(|_| SimGatewayError::Internal("session table lock poisoned".into()))
    }

    /// Drops sessions older than their lifetime.
    fn expire(&self) -> Result<(), SimGatewayError> {
        let now = tokio::time::Instant::now();
        self.sessions()?
            .retain(|_, s| now.duration_since(s.started) < SESSION_LIFETIME);
        Ok(())
    }

    /// The status of a session, waiting up to `wait` for it to complete.
    pub async fn poll(
        &self,
        operation: Operation,
        id: &str,
        wait: Duration,
    ) -> Result<SessionStatus, SimGatewayError> {
        let not_found = || {
            SimGatewayError::NotFound(format!(
                "no {operation} session {id:?} (unknown, or expired {} s after it started)",
                SESSION_LIFETIME.as_secs()
            ))
        };
        let (mut changed, silent) = {
            let sessions = self.sessions()?;
            let session = sessions
                .get(id)
                .filter(|s| s.operation == operation)
                .filter(|s| s.started.elapsed() < SESSION_LIFETIME)
                .ok_or_else(not_found)?;
            if session.status.state == SessionState::Complete && !session.silent {
                return Ok(session.status.clone());
            }
            (session.changed.subscribe(), session.silent)
        };
        if silent {
            // A gateway that has stopped answering: the caller's timeout (the poll's
            // plus its margin) must end the wait, not this answer.
            tokio::time::sleep(wait + Duration::from_secs(10)).await;
        }
        let _ = tokio::time::timeout(wait, changed.changed()).await;
        let sessions = self.sessions()?;
        let session = sessions.get(id).ok_or_else(not_found)?;
        Ok(session.status.clone())
    }
}
