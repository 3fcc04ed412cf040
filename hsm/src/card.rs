//! Personalising citizens' ID cards and SIMs through PKCS#11: [`CardReader`] and
//! its vocabulary. The card model and the rules for callers are on [`CardReader`].

use std::{collections::BTreeMap, fmt, path::Path};

use secrecy::{ExposeSecret, SecretString};

use crate::{
    CITIZEN_AUTHENTICATION_LABEL, CITIZEN_SIGNING_LABEL, HsmError, KeyInfo, KeyLabel, KeyRole,
    KeySpec, KeyStore, PinKind, PinPolicy, Pkcs11Options, QscdEvidence, TokenClass, TokenSelector,
    pkcs11::card::{CardModule, CardSecret, TokenEntry},
};

/// A card's identifier (its document number, e.g. `EID-0001`): the label of its
/// tokens without the ` (PIN1)` / ` (PIN2)` suffix.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CardId(String);

impl CardId {
    /// Longest identifier: PKCS#11 token labels have 32 bytes, and ` (PIN1)` takes 7.
    pub const MAX_LEN: usize = 25;

    /// Checks and wraps an identifier: 1 to 25 characters from `A-Z a-z 0-9 . _ -`.
    pub fn new(id: impl Into<String>) -> Result<Self, HsmError> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(id))
        } else {
            Err(HsmError::InvalidCardId { id })
        }
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The label of the card's token for `kind` (PIN1 or PIN2).
    fn token_label(&self, kind: TokenKind) -> String {
        format!("{} ({})", self.0, kind.pin())
    }

    /// The card and token a token label names, if it follows the convention.
    fn from_token_label(label: &str) -> Option<(Self, TokenKind)> {
        [TokenKind::Pin1, TokenKind::Pin2]
            .into_iter()
            .find_map(|kind| {
                let id = label.strip_suffix(&format!(" ({})", kind.pin()))?;
                Some((Self::new(id).ok()?, kind))
            })
    }
}

impl fmt::Display for CardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardId({:?})", self.0)
    }
}

/// One of a card's two tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TokenKind {
    Pin1,
    Pin2,
}

impl TokenKind {
    fn pin(self) -> PinKind {
        match self {
            Self::Pin1 => PinKind::Pin1,
            Self::Pin2 => PinKind::Pin2,
        }
    }

    /// The token a user PIN belongs to; the PUK belongs to both.
    fn of(kind: PinKind) -> Option<Self> {
        match kind {
            PinKind::Pin1 => Some(Self::Pin1),
            PinKind::Pin2 => Some(Self::Pin2),
            PinKind::Puk => None,
        }
    }
}

/// Where a card is in its personalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CardState {
    /// As the manufacturer delivers it: no user PIN and no objects on either token.
    Blank,
    /// User PINs or keys are on it but it is not finished: the security officer PIN
    /// of at least one token is still the transport code. [`CardReader::reset`] with
    /// the transport code makes it blank again.
    Personalising,
    /// Both tokens finished: their security officer PIN is the citizen's PUK.
    Personalised,
}

impl fmt::Display for CardState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Blank => "blank",
            Self::Personalising => "personalising",
            Self::Personalised => "personalised",
        })
    }
}

/// One of a card's tokens, as it shows itself without a login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardToken {
    /// The token label, e.g. `EID-0001 (PIN1)`.
    pub label: String,
    /// The token's serial number.
    pub serial: String,
    /// The user PIN (PIN1 or PIN2) has been set.
    pub user_pin_initialised: bool,
    /// The user PIN is blocked (unblock it with the PUK).
    pub user_pin_locked: bool,
    /// The security officer PIN (transport code or PUK) is blocked.
    pub so_pin_locked: bool,
    /// Labels of the key pairs on the token (from their public objects).
    pub keys: Vec<String>,
    /// Labels of the certificates on the token.
    pub certificates: Vec<String>,
    /// Public objects of other kinds.
    pub other_objects: usize,
    /// [`CardReader::finish`] replaced this token's transport code with the PUK.
    pub finished: bool,
}

impl CardToken {
    fn is_blank(&self) -> bool {
        !self.user_pin_initialised
            && self.keys.is_empty()
            && self.certificates.is_empty()
            && self.other_objects == 0
            && !self.finished
    }

    /// What is on the token, for messages: `user PIN set, key citizen-signing, …`.
    fn contents(&self) -> String {
        let mut parts = Vec::new();
        if self.user_pin_initialised {
            parts.push("user PIN set".to_owned());
        }
        parts.extend(self.keys.iter().map(|k| format!("key {k}")));
        parts.extend(self.certificates.iter().map(|c| format!("certificate {c}")));
        if self.other_objects > 0 {
            parts.push(format!("{} other objects", self.other_objects));
        }
        if self.finished {
            parts.push("PUK set (finished)".to_owned());
        }
        if parts.is_empty() {
            parts.push("nothing".to_owned());
        }
        parts.join(", ")
    }
}

/// A card in the reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardInfo {
    /// The card's identifier.
    pub id: CardId,
    /// Smartcard or SIM, as the reader was opened.
    pub class: TokenClass,
    /// The PIN1 (authentication) token.
    pub pin1: CardToken,
    /// The PIN2 (signing) token.
    pub pin2: CardToken,
    /// Where the card is in its personalisation.
    pub state: CardState,
}

impl CardInfo {
    fn new(id: CardId, class: TokenClass, pin1: CardToken, pin2: CardToken) -> Self {
        let state = if pin1.is_blank() && pin2.is_blank() {
            CardState::Blank
        } else if pin1.finished && pin2.finished {
            CardState::Personalised
        } else {
            CardState::Personalising
        };
        Self {
            id,
            class,
            pin1,
            pin2,
            state,
        }
    }

    fn token(&self, kind: TokenKind) -> &CardToken {
        match kind {
            TokenKind::Pin1 => &self.pin1,
            TokenKind::Pin2 => &self.pin2,
        }
    }

    /// What is on the card's tokens, for messages.
    pub fn contents(&self) -> String {
        format!(
            "on '{}': {}; on '{}': {}",
            self.pin1.label,
            self.pin1.contents(),
            self.pin2.label,
            self.pin2.contents()
        )
    }

    fn state_error(&self, detail: impl Into<String>) -> HsmError {
        HsmError::CardState {
            card: self.id.to_string(),
            detail: detail.into(),
        }
    }
}

/// The citizen's secrets for a new card, chosen at the desk.
#[derive(Clone, Debug)]
pub struct CitizenPins {
    /// PIN1: unlocks the authentication key.
    pub pin1: SecretString,
    /// PIN2: authorises each signature.
    pub pin2: SecretString,
    /// PUK: unblocks PIN1 and PIN2; set by [`CardReader::finish`].
    pub puk: SecretString,
}

/// What personalisation put on the card, read back from it.
#[derive(Clone, Debug)]
pub struct PersonalisedCard {
    /// The card after personalisation ([`CardState::Personalising`] until `finish`).
    pub card: CardInfo,
    /// The authentication key pair on the PIN1 token, with its public key.
    pub authentication: KeyInfo,
    /// The signing key pair on the PIN2 token, with its public key.
    pub signing: KeyInfo,
    /// Where the authentication key lives, as the token reports it.
    pub authentication_evidence: QscdEvidence,
    /// Where the signing key lives, as the token reports it: a qualified signature
    /// creation device's key ([`QscdEvidence::is_qscd`]).
    pub signing_evidence: QscdEvidence,
}

use crate::pkcs11::token_administration as administering;

fn same_secret(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret() == b.expose_secret()
}

/// The enrolment desk's card reader: a PKCS#11 module whose tokens are citizens'
/// cards or SIMs. Personalises a blank card, and later unblocks, changes PINs or
/// wipes it.
///
/// # The card model
///
/// A card appears in the reader's PKCS#11 module the way OpenSC shows an Estonian ID
/// card: one token per PIN. Card `EID-0001` is two tokens, labelled
/// `EID-0001 (PIN1)` and `EID-0001 (PIN2)`:
/// - the PIN1 token holds the authentication key pair and its certificate;
/// - the PIN2 token holds the signing key pair (`CKA_ALWAYS_AUTHENTICATE`: PIN2 for
///   every signature) and its certificate;
/// - on each token the user PIN is that PIN and the security officer (SO) PIN is the
///   PUK, one PUK for both.
///
/// The manufacturer delivers a **blank** card: both tokens initialised with their
/// labels and the batch's *transport code* as SO PIN, no user PIN, no objects.
///
/// # States and the order of steps
///
/// | state | what is on the card |
/// |---|---|
/// | [`CardState::Blank`] | nothing: no user PIN, no objects |
/// | [`CardState::Personalising`] | user PINs or keys, SO PIN still the transport code |
/// | [`CardState::Personalised`] | both tokens finished: SO PIN is the citizen's PUK |
///
/// [`CardReader::personalise`] sets PIN1 and PIN2 (logged in as SO with the transport
/// code) and generates both key pairs on the card; the desk then signs its requests
/// with the keys ([`CardReader::store`]) and stores the certificates
/// ([`KeyStore::store_certificate`]); [`CardReader::finish`] replaces the transport
/// code with the PUK as the very last step. Until then a crash or a refusal anywhere
/// leaves a card that [`CardReader::reset`] wipes back to blank with the transport
/// code. `finish` marks each token as finished (a public data object the SO creates
/// right after changing the SO PIN) so the state can be read without any secret.
///
/// # Rules for callers
///
/// - Calls block (a card is slow): run them off the async executor.
/// - Tokens are looked up by label on every call (slot ids move after
///   `C_InitToken`), and card administration is serialised within the process.
/// - A [`KeyStore`] from [`CardReader::store`] keeps a logged-in session on its token,
///   and so do the [`KeySigner`](crate::KeySigner)s made from it. Drop them before
///   `finish`, `reset`, `unblock` or a PUK change: PKCS#11 refuses a security officer
///   login or `C_InitToken` while the user is logged in or sessions are open
///   ([`HsmError::CardInUse`]). One store per token at a time: PKCS#11 logs a process
///   in once per token, so a second store's PIN could not be checked.
/// - PINs are checked against [`PinPolicy::CITIZEN`] before the card is touched.
///   Secrets stay in [`SecretString`] and never reach logs or errors.
///
/// # Limits of SoftHSM2, the test stand-in for a card
///
/// - A module instance sees the tokens that existed when it was initialised plus the
///   ones this process creates: a blank card made by another process (for instance
///   `softhsm2-util`) after the reader was opened stays invisible until the module is
///   re-initialised, which this crate never does (`C_Finalize` would pull the module
///   from under every other user in the process). Create test cards in the same
///   process ([`initialize_blank_card`]) or before the first use of the module.
/// - SoftHSM never blocks a PIN: wrong PINs only set "count low", so retry limits and
///   [`HsmError::PinLocked`] / [`HsmError::SoPinLocked`] are not exercised by tests.
///   Real cards block after [`PinPolicy::tries`] wrong tries, and [`CardReader::unblock`]
///   is the real way back; each wrong transport code or PUK costs the card a try.
/// - SoftHSM keeps a token's PINs in memory per process: a PIN changed by another
///   process (pkcs11-tool, say) is not noticed by this one. Objects are re-read, PINs
///   are not.
/// - Its file backend has races between threads of one process (SoftHSM #573, #757):
///   token listing retries `CKR_GENERAL_ERROR`, and an object destroyed while a card
///   is being read is skipped. Other calls report such an error as it comes.
#[derive(Debug)]
pub struct CardReader {
    module: CardModule,
    class: TokenClass,
    policy: PinPolicy,
}

impl CardReader {
    /// Opens the reader's PKCS#11 module (loading and initialising it on first use in
    /// the process). `class` is what the cards are: [`TokenClass::Smartcard`] or
    /// [`TokenClass::Sim`].
    pub fn open(module: &Path, class: TokenClass) -> Result<Self, HsmError> {
        let policy = class.pin_policy().ok_or_else(|| HsmError::TokenPolicy {
            detail: format!("a card reader holds smartcards or SIMs, not {class} tokens"),
        })?;
        Ok(Self {
            module: CardModule::load(module)?,
            class,
            policy,
        })
    }

    /// Every card in the reader: the token pairs that follow the label convention.
    /// A token whose other half is missing, or whose label two tokens share, is left
    /// out (and logged); [`CardReader::card`] says what is wrong with it.
    pub fn cards(&self) -> Result<Vec<CardInfo>, HsmError> {
        self.cards_where(|_| true)
    }

    /// The blank cards in the reader, as [`CardReader::cards`] lists them. A card with
    /// a user PIN set on either token is passed over on its token information alone:
    /// reading every object of every token is what makes the full listing slow, and a
    /// desk only offers the blank ones.
    pub fn blank_cards(&self) -> Result<Vec<CardInfo>, HsmError> {
        Ok(self
            .cards_where(|tokens| tokens.iter().all(|t| !t.user_pin_initialised()))?
            .into_iter()
            .filter(|card| card.state == CardState::Blank)
            .collect())
    }

    /// The cards whose two tokens pass `candidate`, read in full.
    fn cards_where(
        &self,
        candidate: impl Fn(&[&TokenEntry; 2]) -> bool,
    ) -> Result<Vec<CardInfo>, HsmError> {
        let _one_at_a_time = administering()?;
        let mut halves: BTreeMap<CardId, Vec<(TokenKind, TokenEntry)>> = BTreeMap::new();
        for entry in self.module.tokens()? {
            if let Some((id, kind)) = CardId::from_token_label(entry.label()) {
                halves.entry(id).or_default().push((kind, entry));
            }
        }
        let mut cards = Vec::new();
        for (id, tokens) in halves {
            let pin1: Vec<&TokenEntry> = of_kind(&tokens, TokenKind::Pin1);
            let pin2: Vec<&TokenEntry> = of_kind(&tokens, TokenKind::Pin2);
            match (pin1.as_slice(), pin2.as_slice()) {
                ([pin1, ..], [pin2, ..]) if !candidate(&[pin1, pin2]) => {}
                ([pin1], [pin2]) => cards.push(self.info(id, pin1, pin2)?),
                _ => tracing::warn!(
                    card = %id,
                    pin1_tokens = pin1.len(),
                    pin2_tokens = pin2.len(),
                    "ignoring a card without exactly one PIN1 and one PIN2 token"
                ),
            }
        }
        Ok(cards)
    }

    /// The card `id`, or [`HsmError::NoCard`] when the reader holds no card at all,
    /// [`HsmError::CardNotFound`] when it holds others, [`HsmError::CardState`] when
    /// one of its tokens is missing or duplicated.
    pub fn card(&self, id: &CardId) -> Result<CardInfo, HsmError> {
        let _one_at_a_time = administering()?;
        self.find(id)
    }

    /// The certificate stored for key `label` on the card's token for `kind` (PIN1 or
    /// PIN2), read without a PIN; `None` if there is none.
    pub fn certificate(
        &self,
        id: &CardId,
        kind: PinKind,
        label: &KeyLabel,
    ) -> Result<Option<Vec<u8>>, HsmError> {
        let token_kind = TokenKind::of(kind).ok_or_else(|| HsmError::TokenPolicy {
            detail: "the PUK has no token; read the PIN1 or PIN2 token".into(),
        })?;
        let _one_at_a_time = administering()?;
        self.find(id)?;
        self.module
            .public_certificate(&id.token_label(token_kind), label.as_str())
    }

    /// Writes the certificate `der` of key `label` on the card's token for `kind`
    /// without a PIN (a certificate is a public object): for certificates issued after
    /// the card was finished, as when the CA could not be reached at activation. The
    /// certificate must certify the key on the token; the same certificate again is a
    /// no-op, another one is refused.
    pub fn write_certificate(
        &self,
        id: &CardId,
        kind: PinKind,
        label: &KeyLabel,
        der: &[u8],
    ) -> Result<(), HsmError> {
        let token_kind = TokenKind::of(kind).ok_or_else(|| HsmError::TokenPolicy {
            detail: "the PUK has no token; write to the PIN1 or PIN2 token".into(),
        })?;
        let _one_at_a_time = administering()?;
        self.find(id)?;
        self.module
            .write_public_certificate(&id.token_label(token_kind), label, der)?;
        tracing::info!(card = %id, %label, "wrote a certificate on the card without a PIN");
        Ok(())
    }

    fn info(&self, id: CardId, pin1: &TokenEntry, pin2: &TokenEntry) -> Result<CardInfo, HsmError> {
        Ok(CardInfo::new(
            id,
            self.class,
            self.module.status(pin1)?,
            self.module.status(pin2)?,
        ))
    }

    fn find(&self, id: &CardId) -> Result<CardInfo, HsmError> {
        // Both halves where they were last seen; else (or if either is missing or
        // doubled) a full listing, which also says what is wrong.
        if let (Ok(pin1), Ok(pin2)) = (
            self.module.token(&id.token_label(TokenKind::Pin1)),
            self.module.token(&id.token_label(TokenKind::Pin2)),
        ) {
            return self.info(id.clone(), &pin1, &pin2);
        }
        let tokens = self.module.tokens()?;
        let labelled = |kind: TokenKind| -> Vec<&TokenEntry> {
            let label = id.token_label(kind);
            tokens.iter().filter(|t| t.label() == label).collect()
        };
        let (pin1, pin2) = (labelled(TokenKind::Pin1), labelled(TokenKind::Pin2));
        let state_error = |detail: String| HsmError::CardState {
            card: id.to_string(),
            detail,
        };
        match (pin1.as_slice(), pin2.as_slice()) {
            ([pin1], [pin2]) => self.info(id.clone(), pin1, pin2),
            ([], []) => {
                let mut present: Vec<String> = tokens
                    .iter()
                    .filter_map(|t| CardId::from_token_label(t.label()))
                    .map(|(id, _)| id.to_string())
                    .collect();
                present.sort();
                present.dedup();
                if present.is_empty() {
                    Err(HsmError::NoCard {
                        module: self.module.path().to_path_buf(),
                    })
                } else {
                    Err(HsmError::CardNotFound {
                        card: id.to_string(),
                        present: present.join(", "),
                    })
                }
            }
            (pin1, pin2) if pin1.len() > 1 || pin2.len() > 1 => Err(state_error(format!(
                "{} tokens are labelled '{}' and {} '{}'; a card has one of each",
                pin1.len(),
                id.token_label(TokenKind::Pin1),
                pin2.len(),
                id.token_label(TokenKind::Pin2)
            ))),
            (pin1, _) => {
                let missing = if pin1.is_empty() {
                    TokenKind::Pin1
                } else {
                    TokenKind::Pin2
                };
                Err(state_error(format!(
                    "only half of the card is present: token '{}' is missing",
                    id.token_label(missing)
                )))
            }
        }
    }

    fn check_pin(&self, kind: PinKind, pin: &SecretString) -> Result<(), HsmError> {
        self.policy.check(kind, pin)
    }

    /// The PUK replaces the transport code: if they were equal, anyone who knows the
    /// batch's code could reset or unblock the citizen's card.
    fn check_puk(&self, puk: &SecretString, transport: &SecretString) -> Result<(), HsmError> {
        self.check_pin(PinKind::Puk, puk)?;
        if same_secret(puk, transport) {
            return Err(HsmError::PinPolicy {
                kind: PinKind::Puk,
                rule: "it must differ from the transport code".into(),
            });
        }
        Ok(())
    }

    /// Personalises a blank card: checks the PINs against the policy, logs in as
    /// security officer with the transport code on both tokens, sets PIN1 and PIN2,
    /// and generates the authentication key pair on the PIN1 token and the signing
    /// key pair (always-authenticate) on the PIN2 token, on the card: sensitive,
    /// never extractable, local. The keys are read back from the card and checked
    /// against that plan.
    ///
    /// The PUK is checked here but set only by [`CardReader::finish`], so a failure
    /// now or before `finish` leaves a card that [`CardReader::reset`] with the
    /// transport code wipes. A card that is not blank is refused, saying what is on it.
    pub fn personalise(
        &self,
        id: &CardId,
        transport: &SecretString,
        pins: &CitizenPins,
        spec: KeySpec,
    ) -> Result<PersonalisedCard, HsmError> {
        self.check_pin(PinKind::Pin1, &pins.pin1)?;
        self.check_pin(PinKind::Pin2, &pins.pin2)?;
        self.check_puk(&pins.puk, transport)?;
        let _one_at_a_time = administering()?;
        let card = self.find(id)?;
        if card.state != CardState::Blank {
            return Err(HsmError::CardNotBlank {
                card: id.to_string(),
                holds: card.contents(),
            });
        }
        // The transport code is tried on both tokens before either changes.
        let pin1_so =
            self.module
                .so_session(&card.pin1.label, transport, CardSecret::TransportCode)?;
        let pin2_so =
            self.module
                .so_session(&card.pin2.label, transport, CardSecret::TransportCode)?;
        pin1_so.init_user_pin(&pins.pin1)?;
        pin2_so.init_user_pin(&pins.pin2)?;
        drop((pin1_so, pin2_so));

        let (authentication, authentication_evidence) = self.generate(
            &card.pin1,
            &pins.pin1,
            CITIZEN_AUTHENTICATION_LABEL,
            spec,
            KeyRole::CitizenAuthentication,
        )?;
        let (signing, signing_evidence) = self.generate(
            &card.pin2,
            &pins.pin2,
            CITIZEN_SIGNING_LABEL,
            spec,
            KeyRole::CitizenSigning,
        )?;
        let card = self.find(id)?;
        tracing::info!(card = %id, class = %self.class, %spec, "personalised card (not yet finished)");
        Ok(PersonalisedCard {
            card,
            authentication,
            signing,
            authentication_evidence,
            signing_evidence,
        })
    }

    fn open_store(&self, token: &str, pin: &SecretString) -> Result<KeyStore, HsmError> {
        KeyStore::open_pkcs11(Pkcs11Options {
            module: self.module.path().to_path_buf(),
            token: TokenSelector::Label(token.to_owned()),
            pin: pin.clone(),
            // A card does one thing at a time.
            sessions: 1,
            class: self.class,
        })
    }

    /// Generates one key pair on `token` and checks what the card reports against
    /// the plan. The store (and its session) is closed on return.
    fn generate(
        &self,
        token: &CardToken,
        pin: &SecretString,
        label: &str,
        spec: KeySpec,
        role: KeyRole,
    ) -> Result<(KeyInfo, QscdEvidence), HsmError> {
        let store = self.open_store(&token.label, pin)?;
        let label = KeyLabel::new(label)?;
        let info = store.generate(&label, spec, role)?;
        let evidence = store.qscd_evidence(&label)?;
        let a = evidence.attributes;
        let as_planned = evidence.role == role
            && a.sensitive
            && !a.extractable
            && a.never_extractable
            && a.local
            && a.always_authenticate == (role == KeyRole::CitizenSigning)
            && (role != KeyRole::CitizenSigning || evidence.is_qscd());
        if !as_planned {
            return Err(HsmError::TokenPolicy {
                detail: format!(
                    "key `{label}` on token '{}' is not as generated: the token reports {:?} with {a:?}; reset the card",
                    token.label, evidence.role
                ),
            });
        }
        Ok((info, evidence))
    }

    /// Opens one of the card's tokens as a [`KeyStore`], logged in with its PIN
    /// (`kind` is PIN1 or PIN2): the authentication key and its certificate are on
    /// the PIN1 token, the signing key (which needs PIN2 again for every signature,
    /// [`KeySigner::with_pin`](crate::KeySigner::with_pin)) on the PIN2 token.
    ///
    /// The store keeps a logged-in session on the token: drop it (and its signers)
    /// before [`CardReader::finish`], [`CardReader::reset`] or [`CardReader::unblock`].
    /// While it is open a second store of the same token is refused
    /// ([`HsmError::CardInUse`]): PKCS#11 logs in once per process and token, so the
    /// second PIN could not be checked.
    pub fn store(
        &self,
        id: &CardId,
        kind: PinKind,
        pin: &SecretString,
    ) -> Result<KeyStore, HsmError> {
        let token_kind = TokenKind::of(kind).ok_or_else(|| HsmError::TokenPolicy {
            detail: "the PUK opens no key store; open the PIN1 or PIN2 token".into(),
        })?;
        let _one_at_a_time = administering()?;
        let card = self.find(id)?;
        let token = card.token(token_kind);
        if !token.user_pin_initialised {
            return Err(card.state_error(format!(
                "{kind} is not set on '{}' (the card is {}): personalise it first",
                token.label, card.state
            )));
        }
        if self.module.logged_in(&token.label)? {
            return Err(HsmError::CardInUse {
                token: token.label.clone(),
                detail: "a key store of this process is logged in to it".into(),
            });
        }
        self.open_store(&token.label, pin)
    }

    /// Finishes a personalised card: on both tokens, logs in as security officer
    /// with the transport code and changes the SO PIN to the citizen's PUK, then marks
    /// the token finished. The card must hold both key pairs (see
    /// [`CardReader::personalise`]); the PUK must meet the policy and differ from the
    /// transport code. A token already finished (by an interrupted earlier call) is
    /// left as it is.
    pub fn finish(
        &self,
        id: &CardId,
        transport: &SecretString,
        puk: &SecretString,
    ) -> Result<CardInfo, HsmError> {
        self.check_puk(puk, transport)?;
        let _one_at_a_time = administering()?;
        let card = self.find(id)?;
        match card.state {
            CardState::Blank => {
                return Err(card.state_error("the card is blank: personalise it before finishing"));
            }
            CardState::Personalised => {
                return Err(card.state_error("the card is already personalised (finished)"));
            }
            CardState::Personalising => {}
        }
        for (token, key) in [
            (&card.pin1, CITIZEN_AUTHENTICATION_LABEL),
            (&card.pin2, CITIZEN_SIGNING_LABEL),
        ] {
            if !token.user_pin_initialised || !token.keys.iter().any(|k| k == key) {
                return Err(card.state_error(format!(
                    "personalisation is incomplete: '{}' holds {}, not the user PIN and key {key}; reset the card and personalise it again",
                    token.label,
                    token.contents()
                )));
            }
        }
        // The transport code is tried on every token before any changes.
        let sessions = [&card.pin1, &card.pin2]
            .into_iter()
            .filter(|token| !token.finished)
            .map(|token| {
                self.module
                    .so_session(&token.label, transport, CardSecret::TransportCode)
            })
            .collect::<Result<Vec<_>, _>>()?;
        for session in &sessions {
            session.change_so_pin(transport, puk, CardSecret::TransportCode)?;
            session.mark_finished()?;
        }
        drop(sessions);
        tracing::info!(card = %id, "finished card: transport code replaced by the PUK");
        self.find(id)
    }

    /// Wipes a card back to blank (`C_InitToken` on both tokens): to clean up after a
    /// failed activation, or to reuse a card. A token that is not finished takes the
    /// transport code; a finished one takes the PUK, after which its SO PIN is set
    /// back to the transport code. If an unfinished token refuses the transport code
    /// and a PUK is given, the PUK is tried too: a `finish` interrupted between
    /// changing a token's SO PIN and marking it leaves such a token (on a real card
    /// that costs a second SO try, so it is only done then). The secrets are tried
    /// on both tokens before either is wiped.
    pub fn reset(
        &self,
        id: &CardId,
        transport: &SecretString,
        puk: Option<&SecretString>,
    ) -> Result<CardInfo, HsmError> {
        let _one_at_a_time = administering()?;
        let card = self.find(id)?;
        let finished_needs_puk = [&card.pin1, &card.pin2]
            .into_iter()
            .find(|token| token.finished && puk.is_none());
        if let Some(token) = finished_needs_puk {
            return Err(card.state_error(format!(
                "'{}' is finished (its security officer PIN is the citizen's PUK): resetting it needs the PUK",
                token.label
            )));
        }
        // Which security officer PIN each token takes, tried (by logging in) on both
        // before either is wiped.
        let mut plan = Vec::new();
        for token in [&card.pin1, &card.pin2] {
            let so_pin = match (token.finished, puk) {
                (true, Some(puk)) => {
                    self.module.so_session(&token.label, puk, CardSecret::Puk)?;
                    (puk, CardSecret::Puk)
                }
                (_, puk) => self.unfinished_so_pin(&token.label, transport, puk)?,
            };
            plan.push((token, so_pin));
        }
        for (token, (so_pin, secret)) in plan {
            self.module.reinitialize(&token.label, so_pin, secret)?;
            if secret == CardSecret::Puk {
                // Wiped first, then the transport code back: a crash in between leaves
                // an empty token that the PUK still resets.
                self.module
                    .so_session(&token.label, so_pin, secret)?
                    .change_so_pin(so_pin, transport, secret)?;
            }
        }
        tracing::info!(card = %id, "reset card to blank");
        self.find(id)
    }

    /// The security officer PIN of a token not marked finished: the transport code,
    /// or, if it refuses that, the PUK when one is given (a `finish` interrupted
    /// between changing the SO PIN and marking the token).
    fn unfinished_so_pin<'a>(
        &self,
        token: &str,
        transport: &'a SecretString,
        puk: Option<&'a SecretString>,
    ) -> Result<(&'a SecretString, CardSecret), HsmError> {
        match self
            .module
            .so_session(token, transport, CardSecret::TransportCode)
        {
            Ok(_) => Ok((transport, CardSecret::TransportCode)),
            Err(refused @ HsmError::WrongTransportCode { .. }) => {
                let Some(puk) = puk.filter(|puk| !same_secret(puk, transport)) else {
                    return Err(refused);
                };
                match self.module.so_session(token, puk, CardSecret::Puk) {
                    Ok(_) => Ok((puk, CardSecret::Puk)),
                    // The transport code was the one expected here.
                    Err(HsmError::WrongPuk { .. }) => Err(refused),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Unblocks (or resets a forgotten) PIN1 or PIN2: logs in as security officer
    /// with the PUK and sets `new_pin` (`C_InitPIN`). Before [`CardReader::finish`]
    /// the security officer PIN is still the transport code, and that is what `puk`
    /// must be then. `new_pin` is checked against the policy first.
    pub fn unblock(
        &self,
        id: &CardId,
        kind: PinKind,
        puk: &SecretString,
        new_pin: &SecretString,
    ) -> Result<(), HsmError> {
        let token_kind = TokenKind::of(kind).ok_or_else(|| HsmError::TokenPolicy {
            detail: "only PIN1 and PIN2 are unblocked, with the PUK".into(),
        })?;
        self.check_pin(kind, new_pin)?;
        let _one_at_a_time = administering()?;
        let card = self.find(id)?;
        let token = card.token(token_kind);
        if !token.user_pin_initialised {
            return Err(card.state_error(format!(
                "{kind} is not set on '{}' (the card is {}): there is nothing to unblock",
                token.label, card.state
            )));
        }
        let secret = if token.finished {
            CardSecret::Puk
        } else {
            CardSecret::TransportCode
        };
        self.module
            .so_session(&token.label, puk, secret)?
            .init_user_pin(new_pin)?;
        tracing::info!(card = %id, pin = %kind, "unblocked PIN with the PUK");
        Ok(())
    }

    /// Changes PIN1, PIN2 or the PUK, knowing the current one. `new` is checked
    /// against the policy first. PIN1 and PIN2 change as the user (`C_SetPIN`); the
    /// PUK changes on both tokens as the security officer, and only on a personalised
    /// card (before that the security officer PIN is the transport code).
    pub fn change_pin(
        &self,
        id: &CardId,
        kind: PinKind,
        old: &SecretString,
        new: &SecretString,
    ) -> Result<(), HsmError> {
        self.check_pin(kind, new)?;
        let _one_at_a_time = administering()?;
        let card = self.find(id)?;
        match TokenKind::of(kind) {
            Some(token_kind) => {
                let token = card.token(token_kind);
                if !token.user_pin_initialised {
                    return Err(card.state_error(format!(
                        "{kind} is not set on '{}' (the card is {}): personalise it first",
                        token.label, card.state
                    )));
                }
                self.module.change_user_pin(&token.label, old, new)?;
            }
            None => {
                if card.state != CardState::Personalised {
                    return Err(card.state_error(format!(
                        "the card is {}: its PUK is set by finishing it",
                        card.state
                    )));
                }
                let sessions = [&card.pin1, &card.pin2]
                    .into_iter()
                    .map(|token| self.module.so_session(&token.label, old, CardSecret::Puk))
                    .collect::<Result<Vec<_>, _>>()?;
                for session in &sessions {
                    session.change_so_pin(old, new, CardSecret::Puk)?;
                }
            }
        }
        tracing::info!(card = %id, pin = %kind, "changed PIN");
        Ok(())
    }
}

fn of_kind(tokens: &[(TokenKind, TokenEntry)], kind: TokenKind) -> Vec<&TokenEntry> {
    tokens
        .iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, entry)| entry)
        .collect()
}

/// **Test and development support, not for production**: makes a blank card `id` in
/// the module at `module`, as a manufacturer delivers one: two tokens,
/// `<id> (PIN1)` and `<id> (PIN2)`, in free slots, initialised with `transport` as
/// security officer PIN, no user PIN and no objects. Refuses if either label is
/// taken. On SoftHSM2, do this in the process that uses the card, or before the
/// module is first loaded (see [`CardReader`]).
pub fn initialize_blank_card(
    module: &Path,
    id: &CardId,
    transport: &SecretString,
) -> Result<(), HsmError> {
    let _one_at_a_time = administering()?;
    let pin1 = id.token_label(TokenKind::Pin1);
    let pin2 = id.token_label(TokenKind::Pin2);
    CardModule::load(module)?.initialize_blank(&[&pin1, &pin2], transport)?;
    tracing::info!(card = %id, "initialised blank card");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_ids_fit_token_labels() {
        assert!(CardId::new("EID-0001").is_ok());
        assert!(CardId::new("A".repeat(CardId::MAX_LEN)).is_ok());
        assert!(CardId::new("A".repeat(CardId::MAX_LEN + 1)).is_err());
        for bad in ["", "EID 0001", "EID(1)", "ÄID-1"] {
            assert!(
                matches!(CardId::new(bad), Err(HsmError::InvalidCardId { .. })),
                "{bad:?}"
            );
        }
        let id = CardId::new("EID-0001").unwrap_or_else(|e| panic!("{e}"));
        let label = id.token_label(TokenKind::Pin2);
        assert_eq!(label, "EID-0001 (PIN2)");
        assert!(label.len() <= 32);
        assert_eq!(
            CardId::from_token_label(&label),
            Some((id.clone(), TokenKind::Pin2))
        );
        assert_eq!(
            CardId::from_token_label("EID-0001 (PIN1)"),
            Some((id, TokenKind::Pin1))
        );
        for other in ["EID-0001", "EID-0001 (PUK)", " (PIN1)", "HSM token"] {
            assert_eq!(CardId::from_token_label(other), None, "{other:?}");
        }
    }

    fn token(label: &str) -> CardToken {
        CardToken {
            label: label.into(),
            serial: "1".into(),
            user_pin_initialised: false,
            user_pin_locked: false,
            so_pin_locked: false,
            keys: Vec::new(),
            certificates: Vec::new(),
            other_objects: 0,
            finished: false,
        }
    }

    #[test]
    fn state_follows_what_the_tokens_show() {
        let id = CardId::new("EID-1").unwrap_or_else(|e| panic!("{e}"));
        let state = |pin1: &CardToken, pin2: &CardToken| {
            CardInfo::new(
                id.clone(),
                TokenClass::Smartcard,
                pin1.clone(),
                pin2.clone(),
            )
            .state
        };
        let blank = token("EID-1 (PIN1)");
        assert_eq!(state(&blank, &blank), CardState::Blank);
        let mut with_pin = blank.clone();
        with_pin.user_pin_initialised = true;
        assert_eq!(state(&with_pin, &blank), CardState::Personalising);
        let mut with_object = blank.clone();
        with_object.other_objects = 1;
        assert_eq!(state(&blank, &with_object), CardState::Personalising);
        let mut finished = with_pin.clone();
        finished.finished = true;
        assert_eq!(state(&finished, &with_pin), CardState::Personalising);
        assert_eq!(state(&finished, &finished), CardState::Personalised);
        assert_eq!(
            finished.contents(),
            "user PIN set, PUK set (finished)",
            "contents name what is there"
        );
        assert_eq!(blank.contents(), "nothing");
    }
}
