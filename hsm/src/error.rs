//! Errors of the key layer. Messages say what failed and where; they never carry a PIN,
//! a passphrase or key material.

use std::path::PathBuf;

/// What went wrong in the key layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// A key label is empty, too long, or has characters outside `A-Z a-z 0-9 . _ -`.
    #[error("invalid key label {label:?}: use 1-64 characters from A-Z a-z 0-9 . _ -")]
    InvalidLabel {
        /// The rejected label.
        label: String,
    },
    /// No key with this label is in the store.
    #[error("no key labelled `{label}` in {store}")]
    KeyNotFound {
        /// The label asked for.
        label: String,
        /// The store searched.
        store: String,
    },
    /// A key with this label already exists; generation never overwrites.
    #[error("a key labelled `{label}` already exists in {store}")]
    KeyExists {
        /// The label asked for.
        label: String,
        /// The store holding it.
        store: String,
    },
    /// The key type, size, curve or scheme is not supported, or does not fit the key.
    #[error("unsupported key: {detail}")]
    UnsupportedKey {
        /// What is unsupported.
        detail: String,
    },
    /// Reading or writing a file of the soft key store failed.
    #[error("{operation} {}: {source}", path.display())]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A soft key store file is damaged or not a key store file.
    #[error("soft key store file {} is corrupted: {detail}", path.display())]
    Corrupted {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The passphrase or key file does not open the soft key store.
    #[error(
        "the passphrase or key file does not open the soft key store at {} (wrong secret, or the store was created with another one)",
        path.display()
    )]
    WrongPassphrase {
        /// The key store folder.
        path: PathBuf,
    },
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {}: {detail}", path.display())]
    ModuleLoad {
        /// The module path from config.
        path: PathBuf,
        /// The loader's or module's message.
        detail: String,
    },
    /// No initialised token matches the configured label or serial.
    #[error("no PKCS#11 token {selector} in module {}; tokens present: {available}", module.display())]
    TokenNotFound {
        /// The label or serial searched for.
        selector: String,
        /// The module searched.
        module: PathBuf,
        /// Labels and serials of the tokens that are present.
        available: String,
    },
    /// The token refused the PIN.
    #[error("the token {token} refused the PIN (CKR_PIN_INCORRECT)")]
    WrongPin {
        /// The token's label.
        token: String,
    },
    /// The token's PIN is blocked.
    #[error("the PIN of token {token} is locked (CKR_PIN_LOCKED); unblock it with the PUK")]
    PinLocked {
        /// The token's label.
        token: String,
    },
    /// The key needs the PIN for every signature and none was given.
    #[error(
        "key `{label}` needs its PIN for every signature (always-authenticate); none was given"
    )]
    PinRequired {
        /// The key's label.
        label: String,
    },
    /// A citizen token refused the transport code: the security officer PIN a card
    /// has from its manufacturer until personalisation is finished.
    #[error(
        "the token {token} refused the transport code (CKR_PIN_INCORRECT): not this batch's code, or the card was finished with a PUK"
    )]
    WrongTransportCode {
        /// The token's label.
        token: String,
    },
    /// A citizen token refused the PUK (its security officer PIN once personalised).
    #[error("the token {token} refused the PUK (CKR_PIN_INCORRECT)")]
    WrongPuk {
        /// The token's label.
        token: String,
    },
    /// The security officer PIN (transport code or PUK) is blocked.
    #[error(
        "the PUK or transport code of token {token} is blocked (CKR_PIN_LOCKED): the card can no longer be unblocked or reset and must be replaced"
    )]
    SoPinLocked {
        /// The token's label.
        token: String,
    },
    /// A card identifier (document number) that cannot name a card's tokens.
    #[error(
        "invalid card identifier {id:?}: use 1-25 characters from A-Z a-z 0-9 . _ - (the token labels add \" (PIN1)\" within PKCS#11's 32 bytes)"
    )]
    InvalidCardId {
        /// The rejected identifier.
        id: String,
    },
    /// The reader holds no citizen card at all.
    #[error("no card in the reader ({})", module.display())]
    NoCard {
        /// The reader's PKCS#11 module.
        module: PathBuf,
    },
    /// The reader holds cards, but not this one.
    #[error("card {card} is not in the reader; cards present: {present}")]
    CardNotFound {
        /// The card asked for.
        card: String,
        /// The cards that are present.
        present: String,
    },
    /// Personalisation needs a blank card, and this one is not.
    #[error("card {card} is not blank: it holds {holds}")]
    CardNotBlank {
        /// The card.
        card: String,
        /// What is on it (objects and PINs visible without logging in).
        holds: String,
    },
    /// The card is not in the state the operation needs (not yet personalised,
    /// already finished, tokens missing or ambiguous).
    #[error("card {card}: {detail}")]
    CardState {
        /// The card.
        card: String,
        /// What is wrong.
        detail: String,
    },
    /// A token of the card has open sessions or a logged-in user in this process, so
    /// it cannot be re-initialised or administered.
    #[error(
        "token {token} is in use in this process ({detail}): drop the card's key stores before administering it"
    )]
    CardInUse {
        /// The token's label.
        token: String,
        /// The token's return value.
        detail: String,
    },
    /// A certificate does not belong to the key it is stored with.
    #[error("the certificate's public key is not the public key of `{label}` in {store}")]
    CertificateMismatch {
        /// The key's label.
        label: String,
        /// The store.
        store: String,
    },
    /// A PIN does not meet the token class's rules.
    #[error("{kind} does not meet the policy: {rule}")]
    PinPolicy {
        /// Which PIN.
        kind: crate::PinKind,
        /// The rule it breaks.
        rule: String,
    },
    /// The operation is not allowed on this class of token.
    #[error("token policy: {detail}")]
    TokenPolicy {
        /// What the policy forbids.
        detail: String,
    },
    /// A PKCS#11 call failed.
    #[error("PKCS#11 {function} failed: {detail}")]
    Pkcs11 {
        /// The PKCS#11 function or operation that failed.
        function: String,
        /// The return value or cause.
        detail: String,
    },
    /// A software signing or key-generation operation failed.
    #[error("{operation} failed: {detail}")]
    Crypto {
        /// The operation.
        operation: &'static str,
        /// The cause.
        detail: String,
    },
    /// A structure could not be DER-encoded or decoded.
    #[error("cannot encode or decode {what}: {detail}")]
    Encoding {
        /// The structure.
        what: &'static str,
        /// The cause.
        detail: String,
    },
    /// A signature did not verify.
    #[error("signature does not verify: {detail}")]
    BadSignature {
        /// The cause.
        detail: String,
    },
    /// A blocking key operation could not be scheduled or panicked.
    #[error("key operation did not complete: {detail}")]
    Task {
        /// The cause.
        detail: String,
    },
}

impl From<HsmError> for signature::Error {
    fn from(e: HsmError) -> Self {
        Self::from_source(e)
    }
}
