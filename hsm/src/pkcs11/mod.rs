//! PKCS#11 tokens through `cryptoki`.

use std::path::PathBuf;

use secrecy::SecretString;

use crate::{
    HsmError, KeyInfo, KeyLabel, KeyRole, KeySpec, TokenClass,
    store::{Backend, SigningKey},
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
    module: &std::path::Path,
    label: &str,
    so_pin: &SecretString,
    user_pin: &SecretString,
) -> Result<String, HsmError> {
    let _ = (module, label, so_pin, user_pin);
    Err(HsmError::Pkcs11 {
        function: "C_InitToken".into(),
        detail: "not built yet".into(),
    })
}

#[derive(Debug)]
pub(crate) struct Pkcs11Store {}

impl Pkcs11Store {
    pub(crate) fn open(options: Pkcs11Options) -> Result<Self, HsmError> {
        Err(HsmError::ModuleLoad {
            path: options.module,
            detail: "not built yet".into(),
        })
    }
}

impl Backend for Pkcs11Store {
    fn class(&self) -> TokenClass {
        TokenClass::Hsm
    }
    fn description(&self) -> String {
        String::new()
    }
    fn generate(&self, _: &KeyLabel, _: KeySpec, _: KeyRole) -> Result<KeyInfo, HsmError> {
        unreachable!()
    }
    fn find(&self, _: &KeyLabel) -> Result<Option<KeyInfo>, HsmError> {
        unreachable!()
    }
    fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
        unreachable!()
    }
    fn signing_key(&self, _: &KeyLabel) -> Result<std::sync::Arc<dyn SigningKey>, HsmError> {
        unreachable!()
    }
}
