//! Keys on the token: generation, lookup, attributes read back, and signing.
//!
//! Where the role lives: PKCS#11 has no attribute for "what this key is for"
//! (`CKA_APPLICATION` belongs to data objects only), so generation also creates a
//! public data object with `CKA_APPLICATION = "eid-hsm key role"`, `CKA_LABEL` = the
//! key's label and `CKA_VALUE` = the role's name (`service`, `citizen-authentication`,
//! `citizen-signing`). A key without that object (made by vendor tools) is reported
//! as `citizen-signing` if it is always-authenticate, else as `service`.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
};

use cryptoki::{
    error::{Error as CryptokiError, RvError},
    mechanism::{
        Mechanism, MechanismType,
        rsa::{PkcsMgfType, PkcsPssParams},
    },
    object::{Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle},
    session::{Session, UserType},
    types::Ulong,
};
use secrecy::SecretString;

use super::{CallError, context_login, pool::SessionPool};
use crate::{
    HsmError, KeyAttributes, KeyInfo, KeyLabel, KeyRole, KeySpec, PublicKey, SignatureScheme,
    store::{CertificateFields, SigningKey},
    threads::SignThreads,
};

pub(super) const ROLE_APPLICATION: &[u8] = b"eid-hsm key role";
/// DER of OID prime256v1 (1.2.840.10045.3.1.7).
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of OID secp384r1 (1.3.132.0.34).
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER `DigestInfo` header for SHA-256 (RFC 8017 section 9.2, note 1).
const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const RSA_BITS: u64 = 3072;
/// Enough for any signature this crate makes (RSA-3072: 384 bytes, P-384: 96).
const SIGNATURE_CAPACITY: usize = 512;

pub(super) type HandleCache = Arc<Mutex<HashMap<KeyLabel, CachedKey>>>;

/// A private key found on the token: its handle and, once read, its description
/// (reading it searches the token twice more: the public key and the role record).
#[derive(Clone, Debug)]
pub(super) struct CachedKey {
    handle: ObjectHandle,
    info: Option<KeyInfo>,
}

/// The keys of one token: the pool, the private-key handle cache and the threads
/// that sign for async callers.
#[derive(Clone)]
pub(super) struct TokenKeys {
    pool: Arc<SessionPool>,
    handles: HandleCache,
    threads: Arc<SignThreads>,
}

fn role_name(role: KeyRole) -> &'static str {
    match role {
        KeyRole::Service => "service",
        KeyRole::CitizenAuthentication => "citizen-authentication",
        KeyRole::CitizenSigning => "citizen-signing",
    }
}

fn parse_role(name: &[u8]) -> Option<KeyRole> {
    match name {
        b"service" => Some(KeyRole::Service),
        b"citizen-authentication" => Some(KeyRole::CitizenAuthentication),
        b"citizen-signing" => Some(KeyRole::CitizenSigning),
        _ => None,
    }
}

fn random_id() -> Result<Vec<u8>, HsmError> {
    let mut id = vec![0u8; 16];
    getrandom::fill(&mut id).map_err(|e| HsmError::Crypto {
        operation: "reading the system random number generator",
        detail: e.to_string(),
    })?;
    Ok(id)
}

fn find_one(
    session: &Session,
    class: ObjectClass,
    label: &KeyLabel,
) -> Result<Option<ObjectHandle>, CallError> {
    let found = session.find_objects(&[
        Attribute::Class(class),
        Attribute::Label(label.as_str().as_bytes().to_vec()),
    ])?;
    if found.len() > 1 {
        tracing::warn!(%label, count = found.len(), "several objects share a label; using the first");
    }
    Ok(found.first().copied())
}

fn role_object(session: &Session, label: &KeyLabel) -> Result<Option<ObjectHandle>, CallError> {
    Ok(session
        .find_objects(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Application(ROLE_APPLICATION.to_vec()),
            Attribute::Label(label.as_str().as_bytes().to_vec()),
        ])?
        .first()
        .copied())
}

fn certificate_value(
    session: &Session,
    object: ObjectHandle,
) -> Result<Option<Vec<u8>>, CallError> {
    Ok(session
        .get_attributes(object, &[AttributeType::Value])?
        .into_iter()
        .find_map(|attribute| match attribute {
            Attribute::Value(value) => Some(value),
            _ => None,
        }))
}

/// The public token object holding `certificate` for the key with `id` and `label`.
fn certificate_template(
    id: Vec<u8>,
    label: Vec<u8>,
    certificate: &CertificateFields,
) -> [Attribute; 10] {
    [
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Id(id),
        Attribute::Label(label),
        Attribute::Subject(certificate.subject.clone()),
        Attribute::Issuer(certificate.issuer.clone()),
        Attribute::SerialNumber(certificate.serial_number.clone()),
        Attribute::Value(certificate.der.clone()),
    ]
}

/// Writes `certificate` for the key labelled `label` in `session`, a read-write
/// session that need not be logged in (the certificate and the public key are public
/// objects): the key's public key object gives the `CKA_ID` and must be the key the
/// certificate certifies (`spki`, DER). The same certificate already there is a
/// no-op; a different one is refused (replacing needs a logged-in key store).
pub(super) fn write_public_certificate(
    session: &Session,
    token: &str,
    label: &KeyLabel,
    certificate: &CertificateFields,
    spki: &[u8],
) -> Result<(), CallError> {
    let public = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Private(false),
            Attribute::Label(label.as_str().as_bytes().to_vec()),
        ])?
        .first()
        .copied()
        .ok_or_else(|| HsmError::KeyNotFound {
            label: label.to_string(),
            store: format!("token '{token}' (public objects)"),
        })?;
    let mut id = Vec::new();
    let mut params = None;
    let mut point = None;
    for attribute in session.get_attributes(
        public,
        &[
            AttributeType::Id,
            AttributeType::EcParams,
            AttributeType::EcPoint,
        ],
    )? {
        match attribute {
            Attribute::Id(value) => id = value,
            Attribute::EcParams(value) => params = Some(value),
            Attribute::EcPoint(value) => point = Some(value),
            _ => {}
        }
    }
    let point = point.ok_or_else(|| unsupported(label, "no CKA_EC_POINT"))?;
    let (_, key) = ec_public_key(label, params.as_deref(), &point)?;
    if key.to_der()? != spki {
        return Err(HsmError::CertificateMismatch {
            label: label.to_string(),
            store: format!("token '{token}'"),
        }
        .into());
    }
    let bytes = label.as_str().as_bytes().to_vec();
    let existing = session.find_objects(&[
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::Label(bytes.clone()),
    ])?;
    if let Some(object) = existing.first() {
        if certificate_value(session, *object)?.as_deref() == Some(certificate.der.as_slice()) {
            return Ok(());
        }
        return Err(HsmError::TokenPolicy {
            detail: format!(
                "token '{token}' already holds another certificate for {label}; replacing it needs the PIN"
            ),
        }
        .into());
    }
    session.create_object(&certificate_template(id, bytes, certificate))?;
    Ok(())
}

/// Destroys the certificate objects labelled `label` other than the one holding `der`.
fn destroy_other_certificates(
    session: &Session,
    label: &[u8],
    der: &[u8],
) -> Result<(), CallError> {
    for object in session.find_objects(&[
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::Label(label.to_vec()),
    ])? {
        if certificate_value(session, object)?.as_deref() != Some(der) {
            session.destroy_object(object)?;
        }
    }
    Ok(())
}

fn unsupported(label: &KeyLabel, detail: &str) -> CallError {
    CallError::Other(HsmError::UnsupportedKey {
        detail: format!("key `{label}` on the token: {detail}"),
    })
}

fn encoding(what: &'static str, e: impl fmt::Display) -> CallError {
    CallError::Other(HsmError::Encoding {
        what,
        detail: e.to_string(),
    })
}

/// An EC point as tokens return it: DER OCTET STRING around the SEC1 point (the
/// standard), or the bare point (some older tokens).
fn ec_point(value: &[u8], field_len: usize) -> Result<Vec<u8>, CallError> {
    if value.len() == 1 + 2 * field_len && value.first() == Some(&0x04) {
        return Ok(value.to_vec());
    }
    use der::Decode;
    der::asn1::OctetString::from_der(value)
        .map(|octets| octets.into_bytes().into_vec())
        .map_err(|e| encoding("CKA_EC_POINT", e))
}

/// Reads everything [`KeyInfo`] holds from the token.
fn read_info(
    session: &Session,
    label: &KeyLabel,
    private: ObjectHandle,
) -> Result<KeyInfo, CallError> {
    let mut key_type = None;
    let mut id = Vec::new();
    let mut attributes = KeyAttributes {
        sensitive: false,
        extractable: true,
        never_extractable: false,
        local: false,
        always_authenticate: false,
    };
    for attribute in session.get_attributes(
        private,
        &[
            AttributeType::KeyType,
            AttributeType::Id,
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::NeverExtractable,
            AttributeType::Local,
            AttributeType::AlwaysAuthenticate,
        ],
    )? {
        match attribute {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::Id(value) => id = value,
            Attribute::Sensitive(v) => attributes.sensitive = v,
            Attribute::Extractable(v) => attributes.extractable = v,
            Attribute::NeverExtractable(v) => attributes.never_extractable = v,
            Attribute::Local(v) => attributes.local = v,
            Attribute::AlwaysAuthenticate(v) => attributes.always_authenticate = v,
            _ => {}
        }
    }
    let public = find_one(session, ObjectClass::PUBLIC_KEY, label)?;
    let (spec, public_key) = match key_type {
        Some(KeyType::EC) => {
            let public =
                public.ok_or_else(|| unsupported(label, "EC key without a public key object"))?;
            let mut params = None;
            let mut point = None;
            for attribute in session
                .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])?
            {
                match attribute {
                    Attribute::EcParams(v) => params = Some(v),
                    Attribute::EcPoint(v) => point = Some(v),
                    _ => {}
                }
            }
            let point = point.ok_or_else(|| unsupported(label, "no CKA_EC_POINT"))?;
            ec_public_key(label, params.as_deref(), &point)?
        }
        Some(KeyType::RSA) => {
            // The modulus and exponent are public on the private key too.
            let object = public.unwrap_or(private);
            let mut modulus = None;
            let mut exponent = None;
            for attribute in session.get_attributes(
                object,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )? {
                match attribute {
                    Attribute::Modulus(v) => modulus = Some(v),
                    Attribute::PublicExponent(v) => exponent = Some(v),
                    _ => {}
                }
            }
            let (Some(modulus), Some(exponent)) = (modulus, exponent) else {
                return Err(unsupported(label, "RSA key without modulus or exponent"));
            };
            rsa_public_key(label, &modulus, &exponent)?
        }
        other => {
            return Err(unsupported(
                label,
                &format!("key type {other:?} (expected EC or RSA)"),
            ));
        }
    };
    let role = match role_object(session, label)? {
        Some(object) => session
            .get_attributes(object, &[AttributeType::Value])?
            .into_iter()
            .find_map(|attribute| match attribute {
                Attribute::Value(v) => parse_role(&v),
                _ => None,
            }),
        None => None,
    }
    .unwrap_or(if attributes.always_authenticate {
        KeyRole::CitizenSigning
    } else {
        KeyRole::Service
    });
    Ok(KeyInfo {
        label: label.clone(),
        id,
        spec,
        role,
        attributes,
        public_key,
    })
}

fn ec_public_key(
    label: &KeyLabel,
    params: Option<&[u8]>,
    value: &[u8],
) -> Result<(KeySpec, PublicKey), CallError> {
    use p256::pkcs8::EncodePublicKey;
    let spki = match params {
        Some(P256_PARAMS) => {
            let point = ec_point(value, 32)?;
            let key = p256::PublicKey::from_sec1_bytes(&point)
                .map_err(|e| encoding("P-256 public key", e))?;
            (KeySpec::EcP256, key.to_public_key_der())
        }
        Some(P384_PARAMS) => {
            let point = ec_point(value, 48)?;
            let key = p384::PublicKey::from_sec1_bytes(&point)
                .map_err(|e| encoding("P-384 public key", e))?;
            (KeySpec::EcP384, key.to_public_key_der())
        }
        _ => return Err(unsupported(label, "curve other than P-256 or P-384")),
    };
    let der = spki.1.map_err(|e| encoding("SubjectPublicKeyInfo", e))?;
    Ok((spki.0, PublicKey::from_der(der.as_bytes())?))
}

fn rsa_public_key(
    label: &KeyLabel,
    modulus: &[u8],
    exponent: &[u8],
) -> Result<(KeySpec, PublicKey), CallError> {
    use rsa::{pkcs8::EncodePublicKey, traits::PublicKeyParts};
    let key = rsa::RsaPublicKey::new(
        rsa::BoxedUint::from_be_slice_vartime(modulus),
        rsa::BoxedUint::from_be_slice_vartime(exponent),
    )
    .map_err(|e| encoding("RSA public key", e))?;
    let bits = key.n().bits();
    if u64::from(bits) != RSA_BITS {
        return Err(unsupported(
            label,
            &format!("RSA-{bits} (only RSA-{RSA_BITS} is supported)"),
        ));
    }
    let der = key
        .to_public_key_der()
        .map_err(|e| encoding("SubjectPublicKeyInfo", e))?;
    Ok((KeySpec::Rsa3072, PublicKey::from_der(der.as_bytes())?))
}

impl TokenKeys {
    pub(super) fn new(
        pool: Arc<SessionPool>,
        handles: HandleCache,
        threads: Arc<SignThreads>,
    ) -> Self {
        Self {
            pool,
            handles,
            threads,
        }
    }

    fn hsm(&self, e: CallError) -> HsmError {
        e.into_hsm(self.pool.token().label())
    }

    fn store(&self) -> String {
        self.pool.token().description()
    }

    fn cache(&self) -> Result<std::sync::MutexGuard<'_, HashMap<KeyLabel, CachedKey>>, HsmError> {
        self.handles.lock().map_err(|_| HsmError::Task {
            detail: "key handle cache lock poisoned by an earlier panic".into(),
        })
    }

    pub(super) fn generate(
        &self,
        label: &KeyLabel,
        spec: KeySpec,
        role: KeyRole,
    ) -> Result<KeyInfo, HsmError> {
        let id = random_id()?;
        let label_bytes = label.as_str().as_bytes().to_vec();
        let (mechanism, public_specific) = match spec {
            KeySpec::EcP256 => (
                Mechanism::EccKeyPairGen,
                vec![Attribute::EcParams(P256_PARAMS.to_vec())],
            ),
            KeySpec::EcP384 => (
                Mechanism::EccKeyPairGen,
                vec![Attribute::EcParams(P384_PARAMS.to_vec())],
            ),
            KeySpec::Rsa3072 => (
                Mechanism::RsaPkcsKeyPairGen,
                vec![
                    Attribute::ModulusBits(Ulong::from(RSA_BITS)),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                ],
            ),
        };
        let mut public_template = vec![
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Id(id.clone()),
            Attribute::Label(label_bytes.clone()),
        ];
        public_template.extend(public_specific);
        // Every usage flag is set explicitly: tokens default the unset ones differently.
        let mut private_template = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Id(id),
            Attribute::Label(label_bytes.clone()),
        ];
        if role == KeyRole::CitizenSigning {
            private_template.push(Attribute::AlwaysAuthenticate(true));
        }
        let role_template = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Application(ROLE_APPLICATION.to_vec()),
            Attribute::Label(label_bytes),
            Attribute::Value(role_name(role).as_bytes().to_vec()),
        ];
        let (private, info) = self
            .pool
            .with_session(|session| {
                if find_one(session, ObjectClass::PRIVATE_KEY, label)?.is_some()
                    || find_one(session, ObjectClass::PUBLIC_KEY, label)?.is_some()
                {
                    return Err(CallError::Other(HsmError::KeyExists {
                        label: label.to_string(),
                        store: self.store(),
                    }));
                }
                let (public, private) =
                    session.generate_key_pair(&mechanism, &public_template, &private_template)?;
                // Half-made keys are removed, so a retry does not meet KeyExists.
                let undo = |e: CallError| {
                    let _ = session.destroy_object(private);
                    let _ = session.destroy_object(public);
                    e
                };
                if let Some(stale) = role_object(session, label).map_err(undo)? {
                    // A role object left by a key deleted with other tools.
                    session.destroy_object(stale).map_err(|e| undo(e.into()))?;
                }
                session
                    .create_object(&role_template)
                    .map_err(|e| undo(e.into()))?;
                let info = read_info(session, label, private)?;
                Ok((private, info))
            })
            .map_err(|e| self.hsm(e))?;
        self.cache()?.insert(
            label.clone(),
            CachedKey {
                handle: private,
                info: Some(info.clone()),
            },
        );
        tracing::info!(%label, %spec, ?role, token = %self.pool.token().label(), "generated key on PKCS#11 token");
        Ok(info)
    }

    pub(super) fn find(&self, label: &KeyLabel) -> Result<Option<KeyInfo>, HsmError> {
        self.pool
            .with_session(
                |session| match find_one(session, ObjectClass::PRIVATE_KEY, label)? {
                    Some(private) => read_info(session, label, private).map(Some),
                    None => Ok(None),
                },
            )
            .map_err(|e| self.hsm(e))
    }

    pub(super) fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
        self.pool
            .with_session(|session| {
                let mut keys = Vec::new();
                for private in
                    session.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])?
                {
                    let label = session
                        .get_attributes(private, &[AttributeType::Label])?
                        .into_iter()
                        .find_map(|attribute| match attribute {
                            Attribute::Label(v) => String::from_utf8(v).ok(),
                            _ => None,
                        });
                    match label.map(KeyLabel::new) {
                        Some(Ok(label)) => keys.push(read_info(session, &label, private)?),
                        // Keys made by other tools with labels we cannot name are skipped.
                        other => {
                            tracing::debug!(?other, "skipping a private key without a usable label")
                        }
                    }
                }
                Ok(keys)
            })
            .map_err(|e| self.hsm(e))
    }

    /// Stores the key's X.509 certificate as a public token object with the key's
    /// `CKA_ID` and `CKA_LABEL`, as middleware (OpenSC, browsers, DigiDoc) pairs them.
    /// The same certificate again is a no-op; another one replaces it (the new
    /// object is created before the old one is destroyed, so a failure keeps the old).
    pub(super) fn store_certificate(
        &self,
        key: &KeyInfo,
        certificate: &CertificateFields,
    ) -> Result<(), HsmError> {
        let label = key.label.as_str().as_bytes().to_vec();
        let template = certificate_template(key.id.clone(), label.clone(), certificate);
        let _one_at_a_time = super::token_administration()?;
        self.pool
            .with_session(|session| {
                let existing = session.find_objects(&[
                    Attribute::Class(ObjectClass::CERTIFICATE),
                    Attribute::Label(label.clone()),
                ])?;
                for object in &existing {
                    if certificate_value(session, *object)?.as_deref()
                        == Some(certificate.der.as_slice())
                    {
                        return Ok(());
                    }
                }
                session.create_object(&template)?;
                if existing.is_empty() {
                    return Ok(());
                }
                // The earlier certificates are found again rather than destroyed by the
                // handles found above: SoftHSM2 renumbers a token's objects when another
                // session of the process reloads it from disk, so those may be stale.
                let mut tries = 0;
                loop {
                    tries += 1;
                    match destroy_other_certificates(session, &label, &certificate.der) {
                        Err(CallError::Token(
                            CryptokiError::Pkcs11(RvError::ObjectHandleInvalid, _)
                            | CryptokiError::InvalidValue,
                        )) if tries < 5 => continue,
                        done => return done,
                    }
                }
            })
            .map_err(|e| self.hsm(e))?;
        tracing::info!(label = %key.label, token = %self.pool.token().label(), "stored certificate on PKCS#11 token");
        Ok(())
    }

    /// Destroys every object labelled `label`: the private key first, then the public
    /// key, the certificate and the role record.
    pub(super) fn destroy(&self, label: &KeyLabel) -> Result<bool, HsmError> {
        self.cache()?.remove(label);
        let _one_at_a_time = super::token_administration()?;
        let destroyed = self
            .pool
            .with_session(|session| {
                let mut destroyed = false;
                for class in [
                    ObjectClass::PRIVATE_KEY,
                    ObjectClass::PUBLIC_KEY,
                    ObjectClass::CERTIFICATE,
                    ObjectClass::DATA,
                ] {
                    // Found again on a stale handle: SoftHSM2 renumbers a token's objects
                    // when another session of the process reloads it from disk.
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        let found = session.find_objects(&[
                            Attribute::Class(class),
                            Attribute::Label(label.as_str().as_bytes().to_vec()),
                        ])?;
                        let result = found
                            .iter()
                            .try_for_each(|object| session.destroy_object(*object));
                        match result {
                            Err(
                                CryptokiError::Pkcs11(RvError::ObjectHandleInvalid, _)
                                | CryptokiError::InvalidValue,
                            ) if tries < 5 => {}
                            Err(e) => return Err(CallError::Token(e)),
                            Ok(()) => {
                                destroyed |= !found.is_empty();
                                break;
                            }
                        }
                    }
                }
                Ok(destroyed)
            })
            .map_err(|e| self.hsm(e))?;
        self.cache()?.remove(label);
        Ok(destroyed)
    }

    /// The DER certificate stored with the key labelled `label`, if any.
    pub(super) fn certificate(&self, label: &KeyLabel) -> Result<Option<Vec<u8>>, HsmError> {
        self.pool
            .with_session(
                |session| match find_one(session, ObjectClass::CERTIFICATE, label)? {
                    Some(object) => certificate_value(session, object),
                    None => Ok(None),
                },
            )
            .map_err(|e| self.hsm(e))
    }

    /// The private key's handle, from the cache or found on the token.
    fn private_handle(&self, label: &KeyLabel) -> Result<ObjectHandle, CallError> {
        if let Some(cached) = self.cache()?.get(label) {
            return Ok(cached.handle);
        }
        let handle = self
            .pool
            .with_session(|session| find_one(session, ObjectClass::PRIVATE_KEY, label))?
            .ok_or_else(|| {
                CallError::Other(HsmError::KeyNotFound {
                    label: label.to_string(),
                    store: self.store(),
                })
            })?;
        self.cache()?
            .insert(label.clone(), CachedKey { handle, info: None });
        Ok(handle)
    }

    /// The description read when the key was last found, if its handle still names
    /// the same key: its `CKA_ID` is read back (one attribute, no search). SoftHSM2
    /// renumbers a token's objects when a session reloads it, so a handle alone proves
    /// nothing.
    fn cached_info(&self, label: &KeyLabel) -> Result<Option<KeyInfo>, HsmError> {
        let Some(CachedKey {
            handle,
            info: Some(info),
        }) = self.cache()?.get(label).cloned()
        else {
            return Ok(None);
        };
        let id = self.pool.with_session(|session| {
            Ok(session
                .get_attributes(handle, &[AttributeType::Id])?
                .into_iter()
                .find_map(|attribute| match attribute {
                    Attribute::Id(id) => Some(id),
                    _ => None,
                }))
        });
        match id {
            Ok(Some(id)) if id == info.id => Ok(Some(info)),
            // Stale, renumbered or unreadable: found again from the start.
            _ => {
                self.cache()?.remove(label);
                Ok(None)
            }
        }
    }

    pub(super) fn signing_key(&self, label: &KeyLabel) -> Result<TokenKey, HsmError> {
        if let Some(info) = self.cached_info(label)? {
            return Ok(TokenKey {
                keys: self.clone(),
                info,
            });
        }
        let attempt = || -> Result<(ObjectHandle, KeyInfo), CallError> {
            let handle = self.private_handle(label)?;
            self.pool
                .with_session(|session| read_info(session, label, handle))
                .map(|info| (handle, info))
        };
        let (handle, info) = match attempt() {
            Err(e) if e.is_stale_handle() => {
                self.cache()?.remove(label);
                attempt()
            }
            other => other,
        }
        .map_err(|e| self.hsm(e))?;
        self.cache()?.insert(
            label.clone(),
            CachedKey {
                handle,
                info: Some(info.clone()),
            },
        );
        Ok(TokenKey {
            keys: self.clone(),
            info,
        })
    }

    /// The raw private-key operation, retried once with a fresh handle if the cached
    /// one went stale.
    fn sign_raw(
        &self,
        label: &KeyLabel,
        mechanism: &Mechanism<'_>,
        data: &[u8],
        pin: Option<&SecretString>,
    ) -> Result<Vec<u8>, CallError> {
        let attempt = |handle: ObjectHandle| match pin {
            None => self
                .pool
                .with_session(|session| Ok(session.sign(mechanism, handle, data)?)),
            // Always-authenticate: init, context-specific login, then C_Sign, on one
            // session. A failure leaves the operation in an unknown state, so the
            // session is closed rather than reused.
            Some(pin) => self.pool.with_session_discard_on_error(|session| {
                session.sign_init(mechanism, handle)?;
                session.login(UserType::ContextSpecific, Some(pin))?;
                context_login::sign_initialised(
                    self.pool.token().module().path(),
                    session,
                    data,
                    SIGNATURE_CAPACITY,
                )
            }),
        };
        match attempt(self.private_handle(label)?) {
            Err(e) if e.is_stale_handle() => {
                tracing::debug!(%label, "cached key handle is stale; finding the key again");
                self.cache()?.remove(label);
                attempt(self.private_handle(label)?)
            }
            other => other,
        }
    }
}

/// A private key on the token, resolved for signing.
pub(super) struct TokenKey {
    keys: TokenKeys,
    info: KeyInfo,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey")
            .field("label", &self.info.label)
            .field("token", &self.keys.pool.token().label())
            .finish_non_exhaustive()
    }
}

impl SigningKey for TokenKey {
    fn info(&self) -> &KeyInfo {
        &self.info
    }

    fn sign_threads(&self) -> Option<&SignThreads> {
        Some(&self.keys.threads)
    }

    fn sign_digest(&self, digest: &[u8], pin: Option<&SecretString>) -> Result<Vec<u8>, HsmError> {
        let pin = if self.info.attributes.always_authenticate {
            Some(pin.ok_or_else(|| HsmError::PinRequired {
                label: self.info.label.to_string(),
            })?)
        } else {
            None
        };
        let (mechanism, data) = match self.info.spec {
            KeySpec::EcP256 | KeySpec::EcP384 => (Mechanism::Ecdsa, digest.to_vec()),
            KeySpec::Rsa3072 => {
                let prefix = crate::store::digest_info_prefix(digest.len()).ok_or_else(|| {
                    HsmError::UnsupportedKey {
                        detail: format!("no DigestInfo for a {}-byte digest", digest.len()),
                    }
                })?;
                (Mechanism::RsaPkcs, [prefix, digest].concat())
            }
        };
        let raw = self
            .keys
            .sign_raw(&self.info.label, &mechanism, &data, pin)
            .map_err(|e| self.keys.hsm(e))?;
        ecdsa_der(self.info.spec, raw)
    }

    fn sign(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
        pin: Option<&SecretString>,
    ) -> Result<Vec<u8>, HsmError> {
        let spec = self.info.spec;
        if !spec.supports(scheme) {
            return Err(HsmError::UnsupportedKey {
                detail: format!(
                    "key `{}` is {spec}, which cannot sign {scheme}",
                    self.info.label
                ),
            });
        }
        // Only always-authenticate keys use the PIN; others ignore it, so one signer
        // configuration works for both.
        let pin = if self.info.attributes.always_authenticate {
            Some(pin.ok_or_else(|| HsmError::PinRequired {
                label: self.info.label.to_string(),
            })?)
        } else {
            None
        };
        // Hashing happens here: tokens (SoftHSM among them) often offer only the raw
        // mechanisms, and hashing on the host is as good and much faster.
        let digest = scheme.digest(message);
        let (mechanism, data) = match scheme {
            SignatureScheme::EcdsaSha256 | SignatureScheme::EcdsaSha384 => {
                (Mechanism::Ecdsa, digest)
            }
            SignatureScheme::RsaPkcs1Sha256 => {
                (Mechanism::RsaPkcs, [SHA256_DIGEST_INFO, &digest].concat())
            }
            SignatureScheme::RsaPssSha256 => (
                Mechanism::RsaPkcsPss(PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: Ulong::from(32u64),
                }),
                digest,
            ),
        };
        let raw = self
            .keys
            .sign_raw(&self.info.label, &mechanism, &data, pin)
            .map_err(|e| self.keys.hsm(e))?;
        ecdsa_der(spec, raw)
    }
}

/// ECDSA comes back from the token as r || s; X.509, CMS and mobile ID want DER
/// `ECDSA-Sig-Value`. RSA signatures pass through.
fn ecdsa_der(spec: KeySpec, raw: Vec<u8>) -> Result<Vec<u8>, HsmError> {
    let bad = |e: ecdsa::Error| HsmError::Encoding {
        what: "ECDSA signature from the token",
        detail: e.to_string(),
    };
    match spec {
        KeySpec::EcP256 => Ok(p256::ecdsa::Signature::from_slice(&raw)
            .map_err(bad)?
            .to_der()
            .as_bytes()
            .to_vec()),
        KeySpec::EcP384 => Ok(p384::ecdsa::Signature::from_slice(&raw)
            .map_err(bad)?
            .to_der()
            .as_bytes()
            .to_vec()),
        KeySpec::Rsa3072 => Ok(raw),
    }
}
