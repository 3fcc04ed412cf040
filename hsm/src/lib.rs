//! The key layer: the only code in eid that touches private keys.
//!
//! Two backends sit behind one API:
//! - the **soft key store** (embedded default for development and pilots): keys
//!   encrypted at rest with XChaCha20-Poly1305 under a key derived by Argon2id from a
//!   passphrase, or read from a key file, and zeroized in memory;
//! - **PKCS#11 tokens** (HSMs, smartcards, SIMs) through `cryptoki`, with a session
//!   pool, recovery from lost sessions, and keys generated on the token as sensitive,
//!   non-extractable and local.
//!
//! Callers get a [`KeySigner`], which implements the `signature` crate's
//! [`Signer`](signature::Signer) and [`Keypair`](signature::Keypair) and spki's
//! [`DynSignatureAlgorithmIdentifier`](spki::DynSignatureAlgorithmIdentifier), so the
//! x509-cert and cms builders take it unchanged. Signing blocks (a token is a device):
//! from async code use [`KeySigner::sign_async`].
//!
//! [`mobile`] reaches keys on citizens' SIMs through the mobile operator's gateway
//! (mobile ID): its protocol, verification code and pinned-TLS client.
//!
//! [`CardReader`] personalises citizens' ID cards and SIMs at the enrolment desk:
//! PINs set, both key pairs generated on the card, certificates stored, the
//! transport code replaced by the PUK; and later unblocks, changes PINs or wipes.
#![deny(unsafe_code)]

mod card;
mod error;
mod key;
pub mod mobile;
mod pkcs11;
mod policy;
mod signer;
mod soft;
mod store;
mod threads;

pub use card::{
    CardId, CardInfo, CardReader, CardState, CardToken, CitizenPins, PersonalisedCard,
    initialize_blank_card,
};
pub use error::HsmError;
pub use key::{KeyAttributes, KeyInfo, KeyLabel, KeyRole, KeySpec, PublicKey, SignatureScheme};
pub use pkcs11::{Pkcs11Options, TokenSelector, initialize_token};
pub use policy::{PinKind, PinPolicy, QscdEvidence, TokenClass};
pub use secrecy::SecretString;
pub use signer::{KeySigner, Signature};
pub use soft::{SoftSecret, SoftStoreOptions};
pub use store::{CITIZEN_AUTHENTICATION_LABEL, CITIZEN_SIGNING_LABEL, CitizenKeyPairs, KeyStore};
