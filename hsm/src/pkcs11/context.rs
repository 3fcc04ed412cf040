//! Loaded modules and the tokens in them.
//!
//! `C_Initialize` may run once per module and process (a second call fails with
//! `CKR_CRYPTOKI_ALREADY_INITIALIZED`), and `C_Finalize` would pull the module out from
//! under every other user in the process. So each module is loaded and initialised once,
//! kept in a process-wide registry keyed by its canonical path, and never finalised.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
};

use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    error::{Error as CryptokiError, RvError},
    session::UserType,
    slot::{Slot, TokenInfo},
};
use secrecy::SecretString;

use super::{CallError, TokenSelector, context_login, login_user};
use crate::HsmError;

/// Where each token label was last seen: a token is looked up by label many times
/// (a card's activation opens its two tokens a dozen times), and a full listing reads
/// every token of the module (SoftHSM2 opens and locks each token's files for it).
type SlotCache = Arc<Mutex<HashMap<String, Slot>>>;

fn registry() -> &'static Mutex<HashMap<PathBuf, (Pkcs11, SlotCache)>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, (Pkcs11, SlotCache)>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A loaded, initialised PKCS#11 module. Cheap to clone (`Pkcs11` is an `Arc`).
#[derive(Clone, Debug)]
pub(super) struct Module {
    context: Pkcs11,
    path: PathBuf,
    /// Shared by every user of the module in the process.
    slots: SlotCache,
}

impl Module {
    /// The module at `path`, loaded and initialised on first use in this process.
    pub(super) fn load(path: &Path) -> Result<Self, HsmError> {
        let load_error = |detail: String| HsmError::ModuleLoad {
            path: path.to_path_buf(),
            detail,
        };
        // Canonical, so `./x.so` and `/abs/x.so` share one context.
        let canonical = std::fs::canonicalize(path).map_err(|e| load_error(e.to_string()))?;
        let mut modules = registry()
            .lock()
            .map_err(|_| load_error("module registry lock poisoned by an earlier panic".into()))?;
        if let Some((context, slots)) = modules.get(&canonical) {
            return Ok(Self {
                context: context.clone(),
                path: canonical,
                slots: slots.clone(),
            });
        }
        let context = Pkcs11::new(&canonical).map_err(|e| match e {
            CryptokiError::LibraryLoading(e) => load_error(e.to_string()),
            other => load_error(other.to_string()),
        })?;
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            // Another component of this process initialised it first: the module's state
            // is process-wide, so sharing it is correct.
            Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => {
                return Err(load_error(format!(
                    "C_Initialize: {e} (for SoftHSM2, check SOFTHSM2_CONF and its tokendir)"
                )));
            }
        }
        let slots = SlotCache::default();
        modules.insert(canonical.clone(), (context.clone(), slots.clone()));
        Ok(Self {
            context,
            path: canonical,
            slots,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The initialised `cryptoki` context.
    pub(super) fn context(&self) -> &Pkcs11 {
        &self.context
    }

    pub(super) fn pkcs11_error(function: &str, e: CryptokiError) -> HsmError {
        HsmError::Pkcs11 {
            function: function.into(),
            detail: e.to_string(),
        }
    }

    /// Initialised tokens with their info.
    ///
    /// SoftHSM2's file backend can answer `CKR_GENERAL_ERROR` to `C_GetTokenInfo`
    /// while another thread or process rewrites that token's file (its known races, SoftHSM
    /// #573 and #757). The listing only reads, so it is tried a few times first.
    pub(super) fn tokens(&self) -> Result<Vec<(Slot, TokenInfo)>, HsmError> {
        // Up to about two seconds in all: another process rewriting its token's files
        // (a card being personalised) has taken more than a quarter of a second on a
        // busy disk.
        const ATTEMPTS: u32 = 16;
        let mut attempt = 1;
        loop {
            match self.list_tokens() {
                Err((_, CryptokiError::Pkcs11(RvError::GeneralError, _))) if attempt < ATTEMPTS => {
                    tracing::debug!(module = %self.path.display(), attempt, "token listing failed with CKR_GENERAL_ERROR; trying again");
                    let pause = (10 * u64::from(attempt)).min(200);
                    std::thread::sleep(std::time::Duration::from_millis(pause));
                    attempt += 1;
                }
                Err((function, e)) => return Err(Self::pkcs11_error(function, e)),
                Ok(tokens) => {
                    self.remember(&tokens);
                    return Ok(tokens);
                }
            }
        }
    }

    /// The slots with a token, and the initialised ones' information: one
    /// `C_GetTokenInfo` per slot (asking `C_GetSlotList` for initialised tokens only
    /// would read each token's information twice).
    fn list_tokens(&self) -> Result<Vec<(Slot, TokenInfo)>, (&'static str, CryptokiError)> {
        let slots = self
            .context
            .get_slots_with_token()
            .map_err(|e| ("C_GetSlotList", e))?;
        let mut tokens = Vec::with_capacity(slots.len());
        for slot in slots {
            match self.context.get_token_info(slot) {
                Ok(info) if info.token_initialized() => tokens.push((slot, info)),
                Ok(_) => {}
                // Taken out between the two calls: not there.
                Err(CryptokiError::Pkcs11(RvError::TokenNotPresent, _)) => {}
                Err(e) => return Err(("C_GetTokenInfo", e)),
            }
        }
        Ok(tokens)
    }

    /// Records where each label of a full listing is; a label two tokens share is
    /// never taken from the cache (a lookup must see both and refuse).
    fn remember(&self, tokens: &[(Slot, TokenInfo)]) {
        let mut seen: HashMap<String, Option<Slot>> = HashMap::new();
        for (slot, info) in tokens {
            seen.entry(info.label().trim_end().to_owned())
                .and_modify(|only| *only = None)
                .or_insert(Some(*slot));
        }
        if let Ok(mut cache) = self.slots.lock() {
            cache.clear();
            cache.extend(
                seen.into_iter()
                    .filter_map(|(label, slot)| slot.map(|slot| (label, slot))),
            );
        }
    }

    /// The token labelled `label` where the cache last saw it, if it is still there:
    /// initialised and labelled so (a card taken out, another put in its slot, or a
    /// token re-initialised under another label, is not).
    fn cached(&self, label: &str) -> Option<(Slot, TokenInfo)> {
        let label = label.trim_end();
        let slot = *self.slots.lock().ok()?.get(label)?;
        match self.context.get_token_info(slot) {
            Ok(info) if info.token_initialized() && info.label().trim_end() == label => {
                Some((slot, info))
            }
            _ => {
                if let Ok(mut cache) = self.slots.lock() {
                    cache.remove(label);
                }
                None
            }
        }
    }

    /// The slot holding the selected token, looked up afresh (slot ids change).
    pub(super) fn find_token(
        &self,
        selector: &TokenSelector,
    ) -> Result<(Slot, TokenInfo), HsmError> {
        if let TokenSelector::Label(label) = selector
            && let Some(found) = self.cached(label)
        {
            return Ok(found);
        }
        let tokens = self.tokens()?;
        let matches = |info: &TokenInfo| match selector {
            TokenSelector::Label(label) => info.label().trim_end() == label.trim_end(),
            TokenSelector::Serial(serial) => info.serial_number().trim_end() == serial.trim_end(),
        };
        let mut found: Vec<(Slot, TokenInfo)> = tokens
            .iter()
            .filter(|(_, info)| matches(info))
            .cloned()
            .collect();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(HsmError::TokenNotFound {
                selector: selector.to_string(),
                module: self.path.clone(),
                available: available(&tokens),
            }),
            n => Err(HsmError::Pkcs11 {
                function: "C_GetTokenInfo".into(),
                detail: format!(
                    "{n} tokens {selector} in {}; select the token by serial instead ({})",
                    self.path.display(),
                    available(&found)
                ),
            }),
        }
    }

    /// Finds the token and keeps what the pool needs to reach it again.
    pub(super) fn open_token(
        &self,
        selector: TokenSelector,
        pin: SecretString,
    ) -> Result<Token, HsmError> {
        let (slot, info) = self.find_token(&selector)?;
        Ok(Token {
            module: self.clone(),
            selector,
            pin,
            label: info.label().trim_end().to_owned(),
            serial: info.serial_number().trim_end().to_owned(),
            slot: Mutex::new(slot),
        })
    }

    /// See [`super::initialize_token`].
    pub(super) fn initialize_token(
        &self,
        label: &str,
        so_pin: &SecretString,
        user_pin: &SecretString,
    ) -> Result<String, HsmError> {
        let _one_at_a_time = initialising()?;
        self.refuse_existing(label)?;
        self.initialize_in_free_slot(label, so_pin, Some(user_pin))
    }

    /// Initialises one token per label, each with `so_pin` and no user PIN (as a card
    /// manufacturer delivers a blank card), after checking that none of the labels is
    /// taken. Returns the serial numbers, in the order of `labels`.
    pub(super) fn initialize_blank_tokens(
        &self,
        labels: &[&str],
        so_pin: &SecretString,
    ) -> Result<Vec<String>, HsmError> {
        let _one_at_a_time = initialising()?;
        for label in labels {
            self.refuse_existing(label)?;
        }
        labels
            .iter()
            .map(|label| self.initialize_in_free_slot(label, so_pin, None))
            .collect()
    }

    /// C_InitToken on an existing token wipes it, and two tokens with one label could
    /// not be told apart: refuse a label that is taken.
    fn refuse_existing(&self, label: &str) -> Result<(), HsmError> {
        if label.is_empty() || label.len() > 32 {
            return Err(HsmError::Pkcs11 {
                function: "C_InitToken".into(),
                detail: format!("token label {label:?} must have 1 to 32 bytes"),
            });
        }
        if self
            .tokens()?
            .iter()
            .any(|(_, info)| info.label().trim_end() == label)
        {
            return Err(HsmError::Pkcs11 {
                function: "C_InitToken".into(),
                detail: format!("a token labelled '{label}' already exists"),
            });
        }
        Ok(())
    }

    /// Initialises a token in the first free slot; the caller holds [`initialising`].
    fn initialize_in_free_slot(
        &self,
        label: &str,
        so_pin: &SecretString,
        user_pin: Option<&SecretString>,
    ) -> Result<String, HsmError> {
        let selector = TokenSelector::Label(label.to_owned());
        let free = self
            .context
            .get_slots_with_token()
            .map_err(|e| Self::pkcs11_error("C_GetSlotList", e))?
            .into_iter()
            .find(|slot| {
                self.context
                    .get_token_info(*slot)
                    .is_ok_and(|info| !info.token_initialized())
            })
            .ok_or_else(|| HsmError::Pkcs11 {
                function: "C_InitToken".into(),
                detail: format!("no free slot in {}", self.path.display()),
            })?;
        self.context
            .init_token(free, so_pin, label)
            .map_err(|e| CallError::from(e).into_hsm(label))?;
        // SoftHSM moves a freshly initialised token to a slot id derived from its
        // serial: look it up again.
        let (slot, info) = self.find_token(&selector)?;
        if let Some(user_pin) = user_pin {
            let session = self
                .context
                .open_rw_session(slot)
                .map_err(|e| Self::pkcs11_error("C_OpenSession", e))?;
            session
                .login(UserType::So, Some(so_pin))
                .map_err(|e| CallError::from(e).into_hsm(label))?;
            session
                .init_pin(user_pin)
                .map_err(|e| CallError::from(e).into_hsm(label))?;
            // Closing the session logs the SO out.
            session
                .close()
                .map_err(|e| Self::pkcs11_error("C_CloseSession", e))?;
        }
        tracing::info!(token = label, module = %self.path.display(), user_pin = user_pin.is_some(), "initialised PKCS#11 token");
        Ok(info.serial_number().trim_end().to_owned())
    }
}

/// Two initialisations at once would pick the same free slot, and the second
/// C_InitToken would wipe the first's token: one at a time per process.
fn initialising() -> Result<std::sync::MutexGuard<'static, ()>, HsmError> {
    static INITIALISING: Mutex<()> = Mutex::new(());
    INITIALISING.lock().map_err(|_| HsmError::Task {
        detail: "token initialisation lock poisoned by an earlier panic".into(),
    })
}

fn available(tokens: &[(Slot, TokenInfo)]) -> String {
    if tokens.is_empty() {
        return "none".into();
    }
    tokens
        .iter()
        .map(|(_, info)| {
            format!(
                "'{}' (serial {})",
                info.label().trim_end(),
                info.serial_number().trim_end()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One token, as the pool reaches it: by selector, with the slot id cached and
/// refreshed when sessions are lost.
pub(super) struct Token {
    module: Module,
    selector: TokenSelector,
    pin: SecretString,
    label: String,
    serial: String,
    slot: Mutex<Slot>,
}

impl Token {
    pub(super) fn label(&self) -> &str {
        &self.label
    }

    pub(super) fn module(&self) -> &Module {
        &self.module
    }

    pub(super) fn description(&self) -> String {
        format!(
            "PKCS#11 token '{}' (serial {}) via {}",
            self.label,
            self.serial,
            self.module.path.display()
        )
    }

    fn slot(&self) -> Result<Slot, HsmError> {
        self.slot.lock().map(|slot| *slot).map_err(|_| poisoned())
    }

    /// Looks the token's slot up again by label or serial.
    pub(super) fn refresh_slot(&self) -> Result<(), HsmError> {
        let (slot, _) = self.module.find_token(&self.selector)?;
        *self.slot.lock().map_err(|_| poisoned())? = slot;
        Ok(())
    }

    /// Opens a R/W session and logs the user in. A session that cannot be opened on
    /// the cached slot is retried once on a freshly looked-up slot.
    pub(super) fn open_session(&self) -> Result<cryptoki::session::Session, CallError> {
        let session = match self.module.context.open_rw_session(self.slot()?) {
            Ok(session) => session,
            Err(first) => {
                tracing::debug!(token = %self.label, error = %first, "opening a session failed; looking the token up again");
                self.refresh_slot()?;
                self.module.context.open_rw_session(self.slot()?)?
            }
        };
        login_user(&session, &self.pin)?;
        Ok(session)
    }

    pub(super) fn danger_close_all_sessions(&self) -> Result<(), HsmError> {
        context_login::close_all_sessions(&self.module.path, self.slot()?)
            .map_err(|e| e.into_hsm(&self.label))
    }
}

fn poisoned() -> HsmError {
    HsmError::Task {
        detail: "token slot lock poisoned by an earlier panic".into(),
    }
}
