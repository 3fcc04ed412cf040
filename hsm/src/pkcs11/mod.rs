//! PKCS#11 tokens through `cryptoki`.
//!
//! - [`context`]: one initialised `Pkcs11` per module and process, and token lookup
//!   by label or serial;
//! - [`pool`]: a bounded pool of logged-in R/W sessions that recovers from lost
//!   sessions (token reset, `C_CloseAllSessions`, logout) by reopening and retrying once;
//! - [`keys`]: key generation with explicit templates, attributes read back from the
//!   token, and signing (hashing in software, the raw private-key operation on the token);
//! - [`context_login`]: the one raw `C_Sign` call that always-authenticate keys need;
//! - [`card`]: the token-level steps of personalising a citizen's card (security
//!   officer sessions, PIN changes, re-initialisation, what a token shows unlogged).

pub(crate) mod card;
mod context;
mod context_login;
mod keys;
mod pool;

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use cryptoki::{
    error::{Error as CryptokiError, RvError},
    session::UserType,
};
use secrecy::SecretString;

use crate::{
    HsmError, KeyInfo, KeyLabel, KeyRole, KeySpec, TokenClass,
    store::{Backend, CertificateFields, SigningKey},
    threads::SignThreads,
};

/// Which token to use: by label or by serial number, never by slot number (slot
/// numbers change when tokens are added or a module reloads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSelector {
    /// `CKA_LABEL` of the token (`CK_TOKEN_INFO.label`, trailing blanks ignored).
    Label(String),
    /// `CK_TOKEN_INFO.serialNumber`.
    Serial(String),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(label) => write!(f, "labelled '{label}'"),
            Self::Serial(serial) => write!(f, "with serial '{serial}'"),
        }
    }
}

/// How to open a PKCS#11 token.
#[derive(Debug)]
pub struct Pkcs11Options {
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// The token.
    pub token: TokenSelector,
    /// The user PIN, used to log in.
    pub pin: SecretString,
    /// Sessions in the pool (concurrent signing operations).
    pub sessions: usize,
    /// What kind of device the token is.
    pub class: TokenClass,
}

/// Initialises a token in the first free slot of `module` with a label, an SO PIN
/// and a user PIN (for tests, development and pilots; a real HSM is initialised with
/// its vendor's tools). Returns the token's serial number.
pub fn initialize_token(
    module: &Path,
    label: &str,
    so_pin: &SecretString,
    user_pin: &SecretString,
) -> Result<String, HsmError> {
    let _one_at_a_time = token_administration()?;
    let module = context::Module::load(module)?;
    module.initialize_token(label, so_pin, user_pin)
}

/// Token administration is serialised within the process: listing a card opens
/// sessions on its tokens, and `C_InitToken`, a security officer login or writing a
/// certificate object on another thread fails while SoftHSM2 reloads its tokens from
/// disk for them (object handles renumbered, `CKR_GENERAL_ERROR`).
pub(crate) fn token_administration() -> Result<std::sync::MutexGuard<'static, ()>, HsmError> {
    static ADMINISTERING: Mutex<()> = Mutex::new(());
    ADMINISTERING.lock().map_err(|_| HsmError::Task {
        detail: "token administration lock poisoned by an earlier panic".into(),
    })
}

/// A failed call on the token, kept as cryptoki's error until the caller has decided
/// whether it is worth a recovery (lost session, stale object handle).
#[derive(Debug)]
pub(crate) enum CallError {
    /// The token (or cryptoki) returned an error.
    Token(CryptokiError),
    /// Anything else, already in the crate's terms.
    Other(HsmError),
}

impl From<CryptokiError> for CallError {
    fn from(e: CryptokiError) -> Self {
        Self::Token(e)
    }
}

impl From<HsmError> for CallError {
    fn from(e: HsmError) -> Self {
        Self::Other(e)
    }
}

impl CallError {
    fn return_value(&self) -> Option<RvError> {
        match self {
            Self::Token(CryptokiError::Pkcs11(rv, _)) => Some(*rv),
            _ => None,
        }
    }

    /// The session is gone or no longer logged in: open a new one and retry.
    fn is_session_lost(&self) -> bool {
        matches!(
            self.return_value(),
            Some(
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::UserNotLoggedIn
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::DeviceError
            )
        )
    }

    /// A cached object handle no longer names the object: find it again and retry.
    fn is_stale_handle(&self) -> bool {
        matches!(
            self.return_value(),
            Some(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid)
        )
    }

    /// The crate's error, with `token` (a label) named where the user must act.
    fn into_hsm(self, token: &str) -> HsmError {
        match self {
            Self::Other(e) => e,
            Self::Token(CryptokiError::Pkcs11(RvError::PinIncorrect, _)) => HsmError::WrongPin {
                token: token.to_owned(),
            },
            Self::Token(CryptokiError::Pkcs11(RvError::PinLocked, _)) => HsmError::PinLocked {
                token: token.to_owned(),
            },
            Self::Token(CryptokiError::Pkcs11(rv, function)) => HsmError::Pkcs11 {
                function: function_name(function),
                detail: format!("{rv:?} (token '{token}')"),
            },
            Self::Token(e) => HsmError::Pkcs11 {
                function: "cryptoki".into(),
                detail: format!("{e} (token '{token}')"),
            },
        }
    }
}

/// `Function::SignInit` → `C_SignInit`, the name the PKCS#11 specification uses.
fn function_name(function: cryptoki::context::Function) -> String {
    format!("C_{function:?}")
}

/// Logs `session` in as the user; a session of an application that is already logged
/// in (login state is per token, not per session) is fine.
fn login_user(session: &cryptoki::session::Session, pin: &SecretString) -> Result<(), CallError> {
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The PKCS#11 token backend.
pub(crate) struct Pkcs11Store {
    pool: Arc<pool::SessionPool>,
    class: TokenClass,
    /// Private-key handles (and what was read of the key) by label, so signing does
    /// not search the token.
    handles: keys::HandleCache,
    /// One thread per session, signing for async callers.
    threads: Arc<SignThreads>,
}

impl fmt::Debug for Pkcs11Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Store")
            .field("token", &self.pool.token().description())
            .field("class", &self.class)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Store {
    pub(crate) fn open(options: Pkcs11Options) -> Result<Self, HsmError> {
        let module = context::Module::load(&options.module)?;
        let token = module.open_token(options.token, options.pin)?;
        let pool = pool::SessionPool::new(token, options.sessions.max(1));
        // Open and log in one session now, so a wrong PIN fails at start-up, not at
        // the first signature.
        pool.with_session(|_| Ok(()))
            .map_err(|e| e.into_hsm(pool.token().label()))?;
        tracing::info!(token = %pool.token().description(), sessions = options.sessions.max(1), "opened PKCS#11 token");
        let threads = SignThreads::start("eid-pkcs11-sign", options.sessions)?;
        Ok(Self {
            pool: Arc::new(pool),
            class: options.class,
            handles: Arc::new(Mutex::new(HashMap::new())),
            threads: Arc::new(threads),
        })
    }

    fn keys(&self) -> keys::TokenKeys {
        keys::TokenKeys::new(
            self.pool.clone(),
            self.handles.clone(),
            self.threads.clone(),
        )
    }
}

impl Backend for Pkcs11Store {
    fn class(&self) -> TokenClass {
        self.class
    }

    fn description(&self) -> String {
        self.pool.token().description()
    }

    fn generate(
        &self,
        label: &KeyLabel,
        spec: KeySpec,
        role: KeyRole,
    ) -> Result<KeyInfo, HsmError> {
        self.keys().generate(label, spec, role)
    }

    fn find(&self, label: &KeyLabel) -> Result<Option<KeyInfo>, HsmError> {
        self.keys().find(label)
    }

    fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
        self.keys().list()
    }

    fn signing_key(&self, label: &KeyLabel) -> Result<Arc<dyn SigningKey>, HsmError> {
        Ok(Arc::new(self.keys().signing_key(label)?))
    }

    fn store_certificate(
        &self,
        key: &KeyInfo,
        certificate: &CertificateFields,
    ) -> Result<(), HsmError> {
        self.keys().store_certificate(key, certificate)
    }

    fn certificate(&self, label: &KeyLabel) -> Result<Option<Vec<u8>>, HsmError> {
        self.keys().certificate(label)
    }

    fn destroy(&self, label: &KeyLabel) -> Result<bool, HsmError> {
        self.keys().destroy(label)
    }

    fn danger_close_all_sessions(&self) -> Result<(), HsmError> {
        self.pool.token().danger_close_all_sessions()
    }
}
