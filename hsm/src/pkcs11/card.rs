//! The token-level steps of administering a citizen's card: what a token shows
//! without a login, security-officer sessions (transport code or PUK), user PIN
//! changes and re-initialisation. The card model, its states and the order of the
//! steps are in [`crate::card`]; this module only talks to one token at a time.

use std::path::Path;

use cryptoki::{
    error::{Error as CryptokiError, RvError},
    object::{Attribute, AttributeType, ObjectClass, ObjectHandle},
    session::{Session, SessionState, UserType},
    slot::{Slot, TokenInfo},
};
use secrecy::SecretString;

use super::{CallError, TokenSelector, context::Module, keys::ROLE_APPLICATION};
use crate::{HsmError, card::CardToken};

/// `CKA_APPLICATION` of the data object that marks a token as finished.
const CARD_APPLICATION: &[u8] = b"eid-hsm card";
/// `CKA_LABEL` of that object.
const FINISHED_LABEL: &[u8] = b"finished";

/// A secret a card's token takes, so that an error names the one it refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CardSecret {
    /// The user PIN: PIN1 or PIN2, by token.
    UserPin,
    /// The security officer PIN from the manufacturer until the card is finished.
    TransportCode,
    /// The security officer PIN once the card is finished.
    Puk,
}

/// The crate's error for a failed call on a card's token.
fn card_error(e: CryptokiError, token: &str, secret: CardSecret) -> HsmError {
    let token_name = token.to_owned();
    match e {
        CryptokiError::Pkcs11(RvError::PinIncorrect, _) => match secret {
            CardSecret::UserPin => HsmError::WrongPin { token: token_name },
            CardSecret::TransportCode => HsmError::WrongTransportCode { token: token_name },
            CardSecret::Puk => HsmError::WrongPuk { token: token_name },
        },
        CryptokiError::Pkcs11(RvError::PinLocked, _) => match secret {
            CardSecret::UserPin => HsmError::PinLocked { token: token_name },
            CardSecret::TransportCode | CardSecret::Puk => {
                HsmError::SoPinLocked { token: token_name }
            }
        },
        CryptokiError::Pkcs11(
            rv @ (RvError::SessionExists
            | RvError::SessionReadOnlyExists
            | RvError::UserAnotherAlreadyLoggedIn
            | RvError::UserAlreadyLoggedIn),
            function,
        ) => HsmError::CardInUse {
            token: token_name,
            detail: format!("C_{function:?}: {rv:?}"),
        },
        other => CallError::from(other).into_hsm(token),
    }
}

/// An initialised token of the reader's module, as listed (no session opened yet).
pub(crate) struct TokenEntry {
    slot: Slot,
    info: TokenInfo,
}

impl TokenEntry {
    /// Whether the token reports its user PIN set (from the token information alone,
    /// without a session): a token that has one is not blank.
    pub(crate) fn user_pin_initialised(&self) -> bool {
        self.info.user_pin_initialized()
    }

    /// The token's label, trailing blanks removed.
    pub(crate) fn label(&self) -> &str {
        self.info.label().trim_end()
    }
}

/// The module behind a card reader.
#[derive(Clone, Debug)]
pub(crate) struct CardModule {
    module: Module,
}

impl CardModule {
    pub(crate) fn load(path: &Path) -> Result<Self, HsmError> {
        Ok(Self {
            module: Module::load(path)?,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        self.module.path()
    }

    /// Every initialised token, looked up afresh (slot ids change).
    pub(crate) fn tokens(&self) -> Result<Vec<TokenEntry>, HsmError> {
        Ok(self
            .module
            .tokens()?
            .into_iter()
            .map(|(slot, info)| TokenEntry { slot, info })
            .collect())
    }

    /// The one initialised token labelled `label` (looked up where it was last seen
    /// first).
    pub(crate) fn token(&self, label: &str) -> Result<TokenEntry, HsmError> {
        self.module
            .find_token(&TokenSelector::Label(label.to_owned()))
            .map(|(slot, info)| TokenEntry { slot, info })
    }

    fn slot(&self, label: &str) -> Result<Slot, HsmError> {
        self.module
            .find_token(&TokenSelector::Label(label.to_owned()))
            .map(|(slot, _)| slot)
    }

    /// What the token shows without a login: its PIN flags and its public objects.
    /// Private objects are left out even if this process is logged in to the token,
    /// so the answer does not depend on open key stores.
    pub(crate) fn status(&self, entry: &TokenEntry) -> Result<CardToken, HsmError> {
        let label = entry.label();
        let failed = |e: CryptokiError| CallError::from(e).into_hsm(label);
        let session = self
            .module
            .context()
            .open_ro_session(entry.slot)
            .map_err(failed)?;
        let mut token = CardToken {
            label: label.to_owned(),
            serial: entry.info.serial_number().trim_end().to_owned(),
            user_pin_initialised: entry.info.user_pin_initialized(),
            user_pin_locked: entry.info.user_pin_locked(),
            so_pin_locked: entry.info.so_pin_locked(),
            keys: Vec::new(),
            certificates: Vec::new(),
            other_objects: 0,
            finished: false,
        };
        for object in session
            .find_objects(&[Attribute::Private(false)])
            .map_err(failed)?
        {
            match classify(&session, object, &mut token) {
                // Destroyed since the search (a key store of this process replacing a
                // certificate, say): it is not there any more.
                // or renumbered while another session of the process reloaded the
                // token from disk (SoftHSM2), its attributes unreadable meanwhile.
                Err(
                    CryptokiError::Pkcs11(RvError::ObjectHandleInvalid, _)
                    | CryptokiError::InvalidValue,
                ) => {}
                other => other.map_err(failed)?,
            }
        }
        token.keys.sort();
        token.keys.dedup();
        token.certificates.sort();
        Ok(token)
    }

    /// A read-only session on token `label`, not logged in.
    fn read_only(&self, label: &str) -> Result<Session, HsmError> {
        self.module
            .context()
            .open_ro_session(self.slot(label)?)
            .map_err(|e| CallError::from(e).into_hsm(label))
    }

    /// The value of the public certificate object labelled `object` on token `label`,
    /// read without logging in (certificates on a card are public objects).
    pub(crate) fn public_certificate(
        &self,
        label: &str,
        object: &str,
    ) -> Result<Option<Vec<u8>>, HsmError> {
        let failed = |e: CryptokiError| CallError::from(e).into_hsm(label);
        let session = self.read_only(label)?;
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Private(false),
                Attribute::Label(object.as_bytes().to_vec()),
            ])
            .map_err(failed)?;
        let Some(handle) = found.first() else {
            return Ok(None);
        };
        Ok(session
            .get_attributes(*handle, &[AttributeType::Value])
            .map_err(failed)?
            .into_iter()
            .find_map(|attribute| match attribute {
                Attribute::Value(value) => Some(value),
                _ => None,
            }))
    }

    /// Writes the certificate `der` of key `object` on token `label` as a public
    /// object, in a read-write session without a login: how a card whose PINs are set
    /// (and not known to the desk any more) gets certificates issued later.
    pub(crate) fn write_public_certificate(
        &self,
        label: &str,
        object: &crate::KeyLabel,
        der: &[u8],
    ) -> Result<(), HsmError> {
        let (fields, spki) = crate::store::CertificateFields::parse(der)?;
        let session = self
            .module
            .context()
            .open_rw_session(self.slot(label)?)
            .map_err(|e| CallError::from(e).into_hsm(label))?;
        super::keys::write_public_certificate(&session, label, object, &fields, &spki)
            .map_err(|e| e.into_hsm(label))
    }

    /// Whether this process is logged in to the token (login state is per
    /// application and token, shared by all its sessions): a key store holds it.
    pub(crate) fn logged_in(&self, label: &str) -> Result<bool, HsmError> {
        let failed = |e: CryptokiError| CallError::from(e).into_hsm(label);
        let session = self.read_only(label)?;
        let state = session.get_session_info().map_err(failed)?.session_state();
        Ok(!matches!(
            state,
            SessionState::RoPublic | SessionState::RwPublic
        ))
    }

    /// Logs the security officer in on the token labelled `label`.
    pub(crate) fn so_session(
        &self,
        label: &str,
        pin: &SecretString,
        secret: CardSecret,
    ) -> Result<SoSession, HsmError> {
        let failed = |e| card_error(e, label, secret);
        let session = self
            .module
            .context()
            .open_rw_session(self.slot(label)?)
            .map_err(failed)?;
        session.login(UserType::So, Some(pin)).map_err(failed)?;
        Ok(SoSession {
            session,
            token: label.to_owned(),
        })
    }

    /// `C_SetPIN` of the user PIN, logged in with the old one.
    pub(crate) fn change_user_pin(
        &self,
        label: &str,
        old: &SecretString,
        new: &SecretString,
    ) -> Result<(), HsmError> {
        let failed = |e| card_error(e, label, CardSecret::UserPin);
        let session = self
            .module
            .context()
            .open_rw_session(self.slot(label)?)
            .map_err(failed)?;
        match session.login(UserType::User, Some(old)) {
            // Logged in already through a key store: C_SetPIN still checks `old`.
            Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(failed(e)),
        }
        session.set_pin(old, new).map_err(failed)
    }

    /// `C_InitToken` on the existing token labelled `label`, keeping the label: every
    /// object and the user PIN are wiped, `so_pin` stays the security officer PIN.
    pub(crate) fn reinitialize(
        &self,
        label: &str,
        so_pin: &SecretString,
        secret: CardSecret,
    ) -> Result<(), HsmError> {
        self.module
            .context()
            .init_token(self.slot(label)?, so_pin, label)
            .map_err(|e| card_error(e, label, secret))?;
        tracing::info!(token = label, "re-initialised card token");
        Ok(())
    }

    /// Initialises blank tokens: see [`Module::initialize_blank_tokens`].
    pub(crate) fn initialize_blank(
        &self,
        labels: &[&str],
        transport: &SecretString,
    ) -> Result<Vec<String>, HsmError> {
        self.module.initialize_blank_tokens(labels, transport)
    }
}

/// Sorts one public object into the token's description.
fn classify(
    session: &Session,
    object: ObjectHandle,
    token: &mut CardToken,
) -> Result<(), CryptokiError> {
    let mut class = None;
    let mut label = String::new();
    for attribute in
        session.get_attributes(object, &[AttributeType::Class, AttributeType::Label])?
    {
        match attribute {
            Attribute::Class(c) => class = Some(c),
            Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
            _ => {}
        }
    }
    match class {
        Some(ObjectClass::DATA) => {
            let application = session
                .get_attributes(object, &[AttributeType::Application])?
                .into_iter()
                .find_map(|attribute| match attribute {
                    Attribute::Application(a) => Some(a),
                    _ => None,
                })
                .unwrap_or_default();
            if application == ROLE_APPLICATION {
                token.keys.push(label);
            } else if application == CARD_APPLICATION && label.as_bytes() == FINISHED_LABEL {
                token.finished = true;
            } else {
                token.other_objects += 1;
            }
        }
        Some(ObjectClass::PUBLIC_KEY) => token.keys.push(label),
        Some(ObjectClass::CERTIFICATE) => token.certificates.push(label),
        _ => token.other_objects += 1,
    }
    Ok(())
}

/// A R/W session with the security officer logged in; logs out when dropped.
pub(crate) struct SoSession {
    session: Session,
    token: String,
}

impl SoSession {
    /// `C_InitPIN`: sets (or, on a blocked card, resets) the user PIN.
    pub(crate) fn init_user_pin(&self, pin: &SecretString) -> Result<(), HsmError> {
        self.session
            .init_pin(pin)
            .map_err(|e| card_error(e, &self.token, CardSecret::UserPin))
    }

    /// `C_SetPIN` logged in as the security officer: changes the SO PIN.
    pub(crate) fn change_so_pin(
        &self,
        old: &SecretString,
        new: &SecretString,
        old_secret: CardSecret,
    ) -> Result<(), HsmError> {
        self.session
            .set_pin(old, new)
            .map_err(|e| card_error(e, &self.token, old_secret))
    }

    /// Leaves the mark that the token's SO PIN is the PUK: a public data object the
    /// security officer creates right after changing the PIN. Only `C_InitToken`
    /// removes it (it is neither modifiable nor destroyable).
    pub(crate) fn mark_finished(&self) -> Result<(), HsmError> {
        self.session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Modifiable(false),
                Attribute::Destroyable(false),
                Attribute::Application(CARD_APPLICATION.to_vec()),
                Attribute::Label(FINISHED_LABEL.to_vec()),
                Attribute::Value(b"the security officer PIN is the citizen's PUK".to_vec()),
            ])
            .map(drop)
            .map_err(|e| CallError::from(e).into_hsm(&self.token))
    }
}

impl Drop for SoSession {
    fn drop(&mut self) {
        // Closing the last session would log out too; logging out explicitly also
        // covers a token that has other sessions open in this process.
        if let Err(e) = self.session.logout() {
            tracing::debug!(token = %self.token, error = %e, "security officer logout failed");
        }
    }
}
