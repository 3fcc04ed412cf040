//! The key store: one API over the soft store and PKCS#11 tokens.

use std::{fmt, sync::Arc};

use secrecy::SecretString;

use crate::{
    HsmError, KeyInfo, KeyLabel, KeyRole, KeySigner, KeySpec, Pkcs11Options, QscdEvidence,
    SignatureScheme, SoftStoreOptions, TokenClass, threads::SignThreads,
};

/// What a backend does; implemented by the soft store and the PKCS#11 token.
pub(crate) trait Backend: Send + Sync + fmt::Debug {
    /// The class of device this backend is.
    fn class(&self) -> TokenClass;
    /// Where the keys live, for logs and error messages (never secrets).
    fn description(&self) -> String;
    /// Generates a key pair; fails with [`HsmError::KeyExists`] if the label is taken.
    fn generate(&self, label: &KeyLabel, spec: KeySpec, role: KeyRole)
    -> Result<KeyInfo, HsmError>;
    /// Looks a key up by label.
    fn find(&self, label: &KeyLabel) -> Result<Option<KeyInfo>, HsmError>;
    /// Every key in the store.
    fn list(&self) -> Result<Vec<KeyInfo>, HsmError>;
    /// A handle that signs with the key, resolved once so signing does no lookup.
    fn signing_key(&self, label: &KeyLabel) -> Result<Arc<dyn SigningKey>, HsmError>;
    /// Stores `certificate` with `key`, replacing an earlier one; the caller has
    /// checked that it certifies the key.
    fn store_certificate(
        &self,
        key: &KeyInfo,
        certificate: &CertificateFields,
    ) -> Result<(), HsmError>;
    /// The DER certificate stored with the key, if any.
    fn certificate(&self, label: &KeyLabel) -> Result<Option<Vec<u8>>, HsmError>;
    /// Destroys the key pair labelled `label` and what is stored with it; `false` if
    /// there was nothing by that label.
    fn destroy(&self, label: &KeyLabel) -> Result<bool, HsmError>;
    /// Test hook: closes every session of the token behind the backend's back.
    fn danger_close_all_sessions(&self) -> Result<(), HsmError> {
        Err(HsmError::UnsupportedKey {
            detail: format!("{} has no sessions to close", self.description()),
        })
    }
}

/// A resolved private key that can sign.
pub(crate) trait SigningKey: Send + Sync + fmt::Debug {
    /// The key's description.
    fn info(&self) -> &KeyInfo;
    /// Signs `message` in `scheme` (ECDSA results DER-encoded). `pin` is the
    /// context-specific PIN for always-authenticate keys.
    fn sign(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
        pin: Option<&SecretString>,
    ) -> Result<Vec<u8>, HsmError>;
    /// Whether a signature in `scheme` is quick, in-process arithmetic (tens to a few
    /// hundred microseconds) that may run on the async executor rather than be handed
    /// to the blocking pool. Token operations never are.
    fn signs_quickly(&self, _scheme: SignatureScheme) -> bool {
        false
    }
    /// The threads that run this key's signatures for async callers, if its store
    /// has its own (a PKCS#11 token: one per session); none: the blocking pool.
    fn sign_threads(&self) -> Option<&SignThreads> {
        None
    }
    /// Signs a digest computed elsewhere (`digest` is the hash itself, 32, 48 or 64
    /// bytes of SHA-256, SHA-384 or SHA-512): what a mobile-ID SIM does with the hash
    /// the relying party sends. ECDSA results DER-encoded; RSA is PKCS#1 v1.5 with the
    /// DigestInfo of the hash the length names.
    fn sign_digest(&self, digest: &[u8], pin: Option<&SecretString>) -> Result<Vec<u8>, HsmError>;
}

/// The PKCS#1 v1.5 `DigestInfo` prefix for a digest of this length (SHA-256, SHA-384,
/// SHA-512): fixed DER from RFC 8017, section 9.2, note 1.
pub(crate) fn digest_info_prefix(digest_len: usize) -> Option<&'static [u8]> {
    const SHA256: &[u8] = &[
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    const SHA384: &[u8] = &[
        0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        0x05, 0x00, 0x04, 0x30,
    ];
    const SHA512: &[u8] = &[
        0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
        0x05, 0x00, 0x04, 0x40,
    ];
    match digest_len {
        32 => Some(SHA256),
        48 => Some(SHA384),
        64 => Some(SHA512),
        _ => None,
    }
}

/// A certificate as a token stores it: the DER, and the fields PKCS#11 keeps beside
/// it (`CKA_SUBJECT`, `CKA_ISSUER`, `CKA_SERIAL_NUMBER`, each DER-encoded).
#[derive(Debug)]
pub(crate) struct CertificateFields {
    pub(crate) der: Vec<u8>,
    pub(crate) subject: Vec<u8>,
    pub(crate) issuer: Vec<u8>,
    pub(crate) serial_number: Vec<u8>,
}

impl CertificateFields {
    pub(crate) fn parse(der: &[u8]) -> Result<(Self, Vec<u8>), HsmError> {
        use der::{Decode, Encode};
        let encoding = |e: der::Error| HsmError::Encoding {
            what: "X.509 certificate",
            detail: e.to_string(),
        };
        let certificate = x509_cert::Certificate::from_der(der).map_err(encoding)?;
        let tbs = certificate.tbs_certificate();
        let fields = Self {
            der: der.to_vec(),
            subject: tbs.subject().to_der().map_err(encoding)?,
            issuer: tbs.issuer().to_der().map_err(encoding)?,
            serial_number: tbs.serial_number().to_der().map_err(encoding)?,
        };
        let public_key = tbs.subject_public_key_info().to_der().map_err(encoding)?;
        Ok((fields, public_key))
    }
}

/// Label of a citizen token's authentication key.
pub const CITIZEN_AUTHENTICATION_LABEL: &str = "citizen-authentication";
/// Label of a citizen token's signing key.
pub const CITIZEN_SIGNING_LABEL: &str = "citizen-signing";

/// The two key pairs on a citizen's card or SIM.
#[derive(Clone, Debug)]
pub struct CitizenKeyPairs {
    /// For logging in (PIN1).
    pub authentication: KeyInfo,
    /// For qualified signatures (PIN2 for every signature).
    pub signing: KeyInfo,
}

/// A store of private keys: the soft key store or a PKCS#11 token.
///
/// Cheap to clone; clones share the open store (and, for PKCS#11, the session pool).
/// Opening, generating and listing block: call them from a blocking context.
#[derive(Clone, Debug)]
pub struct KeyStore {
    backend: Arc<dyn Backend>,
}

impl KeyStore {
    /// Opens (or, if the options allow, creates) a soft key store.
    pub fn open_soft(options: SoftStoreOptions) -> Result<Self, HsmError> {
        Ok(Self {
            backend: Arc::new(crate::soft::SoftStore::open(options)?),
        })
    }

    /// Opens the PKCS#11 token the options select and logs in.
    pub fn open_pkcs11(options: Pkcs11Options) -> Result<Self, HsmError> {
        Ok(Self {
            backend: Arc::new(crate::pkcs11::Pkcs11Store::open(options)?),
        })
    }

    /// The class of device behind this store.
    pub fn class(&self) -> TokenClass {
        self.backend.class()
    }

    /// Where the keys live, for logs (never secrets).
    pub fn description(&self) -> String {
        self.backend.description()
    }

    /// Generates a key pair inside the store. Never overwrites an existing key.
    pub fn generate(
        &self,
        label: &KeyLabel,
        spec: KeySpec,
        role: KeyRole,
    ) -> Result<KeyInfo, HsmError> {
        if role != KeyRole::Service && !self.class().is_citizen_token() {
            tracing::debug!(%label, class = %self.class(), "citizen key role on a non-citizen store");
        }
        self.backend.generate(label, spec, role)
    }

    /// Returns the key with this label, generating it first if it does not exist.
    /// An existing key with another spec is an error, not silently reused.
    pub fn ensure(
        &self,
        label: &KeyLabel,
        spec: KeySpec,
        role: KeyRole,
    ) -> Result<KeyInfo, HsmError> {
        match self.backend.find(label)? {
            Some(info) if info.spec == spec => Ok(info),
            Some(info) => Err(HsmError::UnsupportedKey {
                detail: format!(
                    "key `{label}` exists as {} but {spec} was asked for",
                    info.spec
                ),
            }),
            None => self.backend.generate(label, spec, role),
        }
    }

    /// Looks a key up by label.
    pub fn find(&self, label: &KeyLabel) -> Result<Option<KeyInfo>, HsmError> {
        self.backend.find(label)
    }

    /// Looks a key up by its identifier (`CKA_ID` on a token).
    pub fn find_by_id(&self, id: &[u8]) -> Result<Option<KeyInfo>, HsmError> {
        Ok(self.backend.list()?.into_iter().find(|key| key.id == id))
    }

    /// Generates a citizen token's two key pairs, as ID cards and mobile-ID SIMs carry
    /// them: an authentication key (used after PIN1) and a signing key that needs PIN2
    /// for every signature (always-authenticate). Only a smartcard or SIM store may hold
    /// them; anywhere else they could not be a qualified signature creation device.
    pub fn generate_citizen_key_pairs(&self, spec: KeySpec) -> Result<CitizenKeyPairs, HsmError> {
        if !self.class().is_citizen_token() {
            return Err(HsmError::TokenPolicy {
                detail: format!(
                    "citizen key pairs are generated on a smartcard or SIM, not on a {} store ({})",
                    self.class(),
                    self.description()
                ),
            });
        }
        let authentication = self.generate(
            &KeyLabel::new(CITIZEN_AUTHENTICATION_LABEL)?,
            spec,
            KeyRole::CitizenAuthentication,
        )?;
        let signing = self.generate(
            &KeyLabel::new(CITIZEN_SIGNING_LABEL)?,
            spec,
            KeyRole::CitizenSigning,
        )?;
        Ok(CitizenKeyPairs {
            authentication,
            signing,
        })
    }

    /// Every key in the store, sorted by label.
    pub fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
        let mut keys = self.backend.list()?;
        keys.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(keys)
    }

    /// A signer for the key, in `scheme` (or the key's default scheme).
    pub fn signer(
        &self,
        label: &KeyLabel,
        scheme: Option<SignatureScheme>,
    ) -> Result<KeySigner, HsmError> {
        let key = self.backend.signing_key(label)?;
        let spec = key.info().spec;
        let scheme = scheme.unwrap_or_else(|| spec.default_scheme());
        if !spec.supports(scheme) {
            return Err(HsmError::UnsupportedKey {
                detail: format!("key `{label}` is {spec}, which cannot sign {scheme}"),
            });
        }
        KeySigner::new(key, scheme)
    }

    /// Stores the X.509 certificate (DER) of the key labelled `label`: on a PKCS#11
    /// token as a public certificate object (`CKO_CERTIFICATE`, `CKC_X_509`) with the
    /// key's `CKA_ID` and `CKA_LABEL`, where middleware and other tools find it; on the
    /// soft store as `<label>.crt`. The certificate must certify this key (its public
    /// key is compared). Storing the same certificate again does nothing; another
    /// certificate replaces the earlier one (renewal).
    pub fn store_certificate(&self, label: &KeyLabel, der: &[u8]) -> Result<(), HsmError> {
        let key = self
            .backend
            .find(label)?
            .ok_or_else(|| HsmError::KeyNotFound {
                label: label.to_string(),
                store: self.description(),
            })?;
        let (fields, public_key) = CertificateFields::parse(der)?;
        if public_key != key.public_key.to_der()? {
            return Err(HsmError::CertificateMismatch {
                label: label.to_string(),
                store: self.description(),
            });
        }
        self.backend.store_certificate(&key, &fields)
    }

    /// The DER certificate stored with the key labelled `label`, if any.
    pub fn certificate(&self, label: &KeyLabel) -> Result<Option<Vec<u8>>, HsmError> {
        self.backend.certificate(label)
    }

    /// Destroys the key pair labelled `label` with its certificate: for a key that must
    /// never sign again (a withdrawn remote-signing credential, a key whose
    /// certification failed). Returns `false` when no key had that label. There is no
    /// undo: a backup of the token is the only way back.
    pub fn destroy(&self, label: &KeyLabel) -> Result<bool, HsmError> {
        let destroyed = self.backend.destroy(label)?;
        if destroyed {
            tracing::info!(%label, store = %self.description(), "destroyed a key");
        }
        Ok(destroyed)
    }

    /// Test hook, not for production: closes every PKCS#11 session on the token behind
    /// the session pool's back (as a token reset would), so tests can check that the
    /// pool recovers. Fails on the soft store.
    #[doc(hidden)]
    pub fn danger_close_all_sessions_for_tests(&self) -> Result<(), HsmError> {
        self.backend.danger_close_all_sessions()
    }

    /// What the store can prove about where the key lives, for the CA's question
    /// "is this key on a qualified signature creation device?".
    pub fn qscd_evidence(&self, label: &KeyLabel) -> Result<QscdEvidence, HsmError> {
        let info = self
            .backend
            .find(label)?
            .ok_or_else(|| HsmError::KeyNotFound {
                label: label.to_string(),
                store: self.description(),
            })?;
        Ok(QscdEvidence {
            token_class: self.class(),
            role: info.role,
            attributes: info.attributes,
        })
    }
}
