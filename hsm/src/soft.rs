//! The soft key store: private keys encrypted at rest in a folder, for development
//! and small pilots.
//!
//! Layout of the folder:
//! - `store.json`: format version, how the wrapping key is derived (Argon2id with its
//!   parameters and salt, or a key file), and a check value that tells a wrong secret
//!   from a damaged key file;
//! - `<label>.crt`: the key's certificate (DER), when one was stored;
//! - `<label>.key`: one key each: its PKCS#8 encoding sealed with XChaCha20-Poly1305,
//!   with the label, spec, role and public key bound in as associated data, so a file
//!   renamed or edited does not open.
//!
//! Decrypted keys are held in types that zeroize on drop.

use std::{
    collections::HashMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use p256::elliptic_curve::Generate;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{
    HsmError, KeyAttributes, KeyInfo, KeyLabel, KeyRole, KeySpec, PublicKey, SignatureScheme,
    TokenClass,
    store::{Backend, CertificateFields, SigningKey},
};

const STORE_FILE: &str = "store.json";
const FORMAT: &str = "eid-soft-keystore";
const CHECK_PLAINTEXT: &[u8] = b"eid soft key store check value v1";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// Where the soft store's wrapping key comes from.
pub enum SoftSecret {
    /// A passphrase, stretched with Argon2id (parameters stored in the store).
    Passphrase(SecretString),
    /// A file of 32 random bytes. With `create_if_missing`, the file is generated
    /// (mode 0600) when absent: the embedded development default.
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// Generate the file when it does not exist.
        create_if_missing: bool,
    },
}

impl std::fmt::Debug for SoftSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Passphrase(_) => f.write_str("Passphrase(<redacted>)"),
            Self::KeyFile {
                path,
                create_if_missing,
            } => f
                .debug_struct("KeyFile")
                .field("path", path)
                .field("create_if_missing", create_if_missing)
                .finish(),
        }
    }
}

/// How to open a soft key store.
#[derive(Debug)]
pub struct SoftStoreOptions {
    /// The store's folder.
    pub dir: PathBuf,
    /// The wrapping key's source.
    pub secret: SoftSecret,
    /// Create the store when the folder has none. When false, a missing store is an error.
    pub create: bool,
    /// Argon2id memory cost in KiB (default 64 MiB); lowered only by tests.
    pub argon2_memory_kib: u32,
}

impl SoftStoreOptions {
    /// Options with the default Argon2id cost.
    pub fn new(dir: PathBuf, secret: SoftSecret, create: bool) -> Self {
        Self {
            dir,
            secret,
            create,
            argon2_memory_kib: 64 * 1024,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    format: String,
    version: u32,
    kdf: Kdf,
    /// Nonce followed by the sealed check value.
    check: String,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "kebab-case", deny_unknown_fields)]
enum Kdf {
    Argon2id {
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
        salt: String,
    },
    KeyFile,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    label: String,
    id: String,
    spec: KeySpec,
    role: KeyRole,
    public_key: String,
    /// Nonce followed by the sealed PKCS#8 document.
    sealed: String,
}

impl KeyFile {
    fn associated_data(&self) -> Vec<u8> {
        format!(
            "eid-soft-key|v{}|{}|{}|{}|{:?}|{}",
            self.version, self.label, self.id, self.spec, self.role, self.public_key
        )
        .into_bytes()
    }
}

/// The soft key store backend.
pub(crate) struct SoftStore {
    dir: PathBuf,
    cipher: XChaCha20Poly1305,
    keys: RwLock<HashMap<KeyLabel, Arc<SoftKey>>>,
}

impl std::fmt::Debug for SoftStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftStore").field("dir", &self.dir).finish()
    }
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> HsmError {
    let path = path.to_path_buf();
    move |source| HsmError::Io {
        operation,
        path,
        source,
    }
}

fn random_bytes(len: usize) -> Result<Vec<u8>, HsmError> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(|e| HsmError::Crypto {
        operation: "reading the system random number generator",
        detail: e.to_string(),
    })?;
    Ok(bytes)
}

/// Writes a file atomically (temporary file, fsync, rename) with mode 0600.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), HsmError> {
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io_error("creating", &tmp))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_error("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_error("renaming into place", path))
}

impl SoftStore {
    pub(crate) fn open(options: SoftStoreOptions) -> Result<Self, HsmError> {
        let store_path = options.dir.join(STORE_FILE);
        if store_path.exists() {
            let text = fs::read_to_string(&store_path).map_err(io_error("reading", &store_path))?;
            let store: StoreFile =
                serde_json::from_str(&text).map_err(|e| HsmError::Corrupted {
                    path: store_path.clone(),
                    detail: e.to_string(),
                })?;
            if store.format != FORMAT || store.version != 1 {
                return Err(HsmError::Corrupted {
                    path: store_path,
                    detail: format!(
                        "format {} version {} is not {FORMAT} version 1",
                        store.format, store.version
                    ),
                });
            }
            let key = derive_key(&options.secret, &store.kdf, &store_path, false)?;
            let cipher = XChaCha20Poly1305::new_from_slice(key.as_slice()).map_err(|e| {
                HsmError::Crypto {
                    operation: "setting up the key-store cipher",
                    detail: e.to_string(),
                }
            })?;
            let sealed = hex::decode(&store.check).map_err(|e| HsmError::Corrupted {
                path: store_path.clone(),
                detail: format!("check value: {e}"),
            })?;
            match open_sealed(&cipher, &sealed, FORMAT.as_bytes()) {
                Ok(plain) if plain.as_slice() == CHECK_PLAINTEXT => {}
                _ => return Err(HsmError::WrongPassphrase { path: options.dir }),
            }
            return Ok(Self {
                dir: options.dir,
                cipher,
                keys: RwLock::new(HashMap::new()),
            });
        }
        if !options.create {
            return Err(HsmError::Io {
                operation: "opening soft key store",
                path: store_path,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no key store here (run `eid init` to create one)",
                ),
            });
        }
        Self::create(options)
    }

    fn create(options: SoftStoreOptions) -> Result<Self, HsmError> {
        fs::create_dir_all(&options.dir).map_err(io_error("creating", &options.dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&options.dir, fs::Permissions::from_mode(0o700))
                .map_err(io_error("restricting permissions of", &options.dir))?;
        }
        let kdf = match &options.secret {
            SoftSecret::Passphrase(_) => Kdf::Argon2id {
                memory_kib: options.argon2_memory_kib,
                iterations: 3,
                parallelism: 1,
                salt: hex::encode(random_bytes(16)?),
            },
            SoftSecret::KeyFile { .. } => Kdf::KeyFile,
        };
        let store_path = options.dir.join(STORE_FILE);
        let key = derive_key(&options.secret, &kdf, &store_path, true)?;
        let cipher =
            XChaCha20Poly1305::new_from_slice(key.as_slice()).map_err(|e| HsmError::Crypto {
                operation: "setting up the key-store cipher",
                detail: e.to_string(),
            })?;
        let check = seal(&cipher, CHECK_PLAINTEXT, FORMAT.as_bytes())?;
        let store = StoreFile {
            format: FORMAT.into(),
            version: 1,
            kdf,
            check: hex::encode(check),
        };
        let text = serde_json::to_string_pretty(&store).map_err(|e| HsmError::Encoding {
            what: "store.json",
            detail: e.to_string(),
        })?;
        write_private(&store_path, text.as_bytes())?;
        tracing::info!(dir = %options.dir.display(), "created soft key store");
        Ok(Self {
            dir: options.dir,
            cipher,
            keys: RwLock::new(HashMap::new()),
        })
    }

    fn key_path(&self, label: &KeyLabel) -> PathBuf {
        self.dir.join(format!("{label}.key"))
    }

    fn certificate_path(&self, label: &KeyLabel) -> PathBuf {
        self.dir.join(format!("{label}.crt"))
    }

    fn read_key_file(&self, path: &Path) -> Result<KeyFile, HsmError> {
        let text = fs::read_to_string(path).map_err(io_error("reading", path))?;
        serde_json::from_str(&text).map_err(|e| HsmError::Corrupted {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    }

    fn info_of(&self, file: &KeyFile, path: &Path) -> Result<KeyInfo, HsmError> {
        let corrupted = |detail: String| HsmError::Corrupted {
            path: path.to_path_buf(),
            detail,
        };
        Ok(KeyInfo {
            label: KeyLabel::new(&file.label)?,
            id: hex::decode(&file.id).map_err(|e| corrupted(format!("id: {e}")))?,
            spec: file.spec,
            role: file.role,
            attributes: SOFT_ATTRIBUTES,
            public_key: PublicKey::from_der(
                &hex::decode(&file.public_key)
                    .map_err(|e| corrupted(format!("public key: {e}")))?,
            )
            .map_err(|e| corrupted(e.to_string()))?,
        })
    }

    fn load(&self, label: &KeyLabel) -> Result<Option<Arc<SoftKey>>, HsmError> {
        if let Some(key) = self.keys.read().map_err(poisoned)?.get(label) {
            return Ok(Some(key.clone()));
        }
        let path = self.key_path(label);
        if !path.exists() {
            return Ok(None);
        }
        let file = self.read_key_file(&path)?;
        if file.label != label.as_str() {
            return Err(HsmError::Corrupted {
                path,
                detail: format!("file holds key `{}`", file.label),
            });
        }
        let info = self.info_of(&file, &path)?;
        let sealed = hex::decode(&file.sealed).map_err(|e| HsmError::Corrupted {
            path: path.clone(),
            detail: format!("sealed key: {e}"),
        })?;
        let pkcs8 = open_sealed(&self.cipher, &sealed, &file.associated_data()).map_err(|_| {
            HsmError::Corrupted {
                path: path.clone(),
                detail: "the sealed key does not open: the file was altered".into(),
            }
        })?;
        let material =
            KeyMaterial::from_pkcs8(file.spec, &pkcs8).map_err(|e| HsmError::Corrupted {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        if material.public_key()? != info.public_key {
            return Err(HsmError::Corrupted {
                path,
                detail: "public key does not match the private key".into(),
            });
        }
        let key = Arc::new(SoftKey::new(info, material));
        self.keys
            .write()
            .map_err(poisoned)?
            .insert(label.clone(), key.clone());
        Ok(Some(key))
    }
}

fn poisoned<T>(_: T) -> HsmError {
    HsmError::Task {
        detail: "key cache lock poisoned by an earlier panic".into(),
    }
}

const SOFT_ATTRIBUTES: KeyAttributes = KeyAttributes {
    sensitive: false,
    extractable: false,
    never_extractable: false,
    local: false,
    always_authenticate: false,
};

fn derive_key(
    secret: &SoftSecret,
    kdf: &Kdf,
    store_path: &Path,
    creating: bool,
) -> Result<Zeroizing<[u8; KEY_LEN]>, HsmError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    match (secret, kdf) {
        (
            SoftSecret::Passphrase(passphrase),
            Kdf::Argon2id {
                memory_kib,
                iterations,
                parallelism,
                salt,
            },
        ) => {
            let salt = hex::decode(salt).map_err(|e| HsmError::Corrupted {
                path: store_path.to_path_buf(),
                detail: format!("salt: {e}"),
            })?;
            let params = argon2::Params::new(*memory_kib, *iterations, *parallelism, Some(KEY_LEN))
                .map_err(|e| HsmError::Corrupted {
                    path: store_path.to_path_buf(),
                    detail: format!("Argon2id parameters: {e}"),
                })?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(passphrase.expose_secret().as_bytes(), &salt, key.as_mut())
                .map_err(|e| HsmError::Crypto {
                    operation: "deriving the key-store key with Argon2id",
                    detail: e.to_string(),
                })?;
        }
        (
            SoftSecret::KeyFile {
                path,
                create_if_missing,
            },
            Kdf::KeyFile,
        ) => {
            if !path.exists() && creating && *create_if_missing {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(io_error("creating", parent))?;
                }
                let fresh = Zeroizing::new(random_bytes(KEY_LEN)?);
                write_private(path, &fresh)?;
            }
            let bytes = Zeroizing::new(fs::read(path).map_err(io_error("reading key file", path))?);
            if bytes.len() != KEY_LEN {
                return Err(HsmError::Corrupted {
                    path: path.clone(),
                    detail: format!("a key file holds {KEY_LEN} bytes, this one {}", bytes.len()),
                });
            }
            key.copy_from_slice(&bytes);
        }
        (SoftSecret::Passphrase(_), Kdf::KeyFile) => {
            return Err(HsmError::Corrupted {
                path: store_path.to_path_buf(),
                detail: "this store is opened with a key file, but a passphrase was configured"
                    .into(),
            });
        }
        (SoftSecret::KeyFile { .. }, Kdf::Argon2id { .. }) => {
            return Err(HsmError::Corrupted {
                path: store_path.to_path_buf(),
                detail: "this store is opened with a passphrase, but a key file was configured"
                    .into(),
            });
        }
    }
    Ok(key)
}

fn seal(cipher: &XChaCha20Poly1305, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, HsmError> {
    let nonce = random_bytes(NONCE_LEN)?;
    let sealed = cipher
        .encrypt(
            &XNonce::try_from(nonce.as_slice()).map_err(|_| HsmError::Crypto {
                operation: "sealing a key",
                detail: "bad nonce length".into(),
            })?,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|e| HsmError::Crypto {
            operation: "sealing a key",
            detail: e.to_string(),
        })?;
    Ok([nonce, sealed].concat())
}

fn open_sealed(
    cipher: &XChaCha20Poly1305,
    sealed: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ()> {
    if sealed.len() < NONCE_LEN {
        return Err(());
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(
            &XNonce::try_from(nonce).map_err(|_| ())?,
            Payload { msg: body, aad },
        )
        .map(Zeroizing::new)
        .map_err(|_| ())
}

impl Backend for SoftStore {
    fn class(&self) -> TokenClass {
        TokenClass::Soft
    }

    fn description(&self) -> String {
        format!("soft key store at {}", self.dir.display())
    }

    fn generate(
        &self,
        label: &KeyLabel,
        spec: KeySpec,
        role: KeyRole,
    ) -> Result<KeyInfo, HsmError> {
        let path = self.key_path(label);
        if path.exists() {
            return Err(HsmError::KeyExists {
                label: label.to_string(),
                store: self.description(),
            });
        }
        let material = KeyMaterial::generate(spec)?;
        let public_key = material.public_key()?;
        let mut file = KeyFile {
            version: 1,
            label: label.to_string(),
            id: hex::encode(random_bytes(16)?),
            spec,
            role,
            public_key: hex::encode(public_key.to_der()?),
            sealed: String::new(),
        };
        let pkcs8 = material.to_pkcs8()?;
        file.sealed = hex::encode(seal(&self.cipher, &pkcs8, &file.associated_data())?);
        let text = serde_json::to_string_pretty(&file).map_err(|e| HsmError::Encoding {
            what: "key file",
            detail: e.to_string(),
        })?;
        write_private(&path, text.as_bytes())?;
        let info = self.info_of(&file, &path)?;
        self.keys.write().map_err(poisoned)?.insert(
            label.clone(),
            Arc::new(SoftKey::new(info.clone(), material)),
        );
        Ok(info)
    }

    fn find(&self, label: &KeyLabel) -> Result<Option<KeyInfo>, HsmError> {
        let path = self.key_path(label);
        if !path.exists() {
            return Ok(None);
        }
        let file = self.read_key_file(&path)?;
        self.info_of(&file, &path).map(Some)
    }

    fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
        let mut keys = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error("listing", &self.dir))? {
            let path = entry.map_err(io_error("listing", &self.dir))?.path();
            if path.extension().is_some_and(|e| e == "key") {
                let file = self.read_key_file(&path)?;
                keys.push(self.info_of(&file, &path)?);
            }
        }
        Ok(keys)
    }

    fn store_certificate(
        &self,
        key: &KeyInfo,
        certificate: &CertificateFields,
    ) -> Result<(), HsmError> {
        write_private(&self.certificate_path(&key.label), &certificate.der)
    }

    fn certificate(&self, label: &KeyLabel) -> Result<Option<Vec<u8>>, HsmError> {
        let path = self.certificate_path(label);
        match fs::read(&path) {
            Ok(der) => Ok(Some(der)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("reading", &path)(e)),
        }
    }

    fn destroy(&self, label: &KeyLabel) -> Result<bool, HsmError> {
        if let Some(key) = self.keys.write().map_err(poisoned)?.remove(label) {
            key.destroyed
                .store(true, std::sync::atomic::Ordering::Release);
        }
        let mut destroyed = false;
        // The key goes first: a certificate without its key is harmless, the reverse
        // would leave a usable key that no listing shows with a certificate.
        for path in [self.key_path(label), self.certificate_path(label)] {
            match fs::remove_file(&path) {
                Ok(()) => destroyed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("removing", &path)(e)),
            }
        }
        Ok(destroyed)
    }

    fn signing_key(&self, label: &KeyLabel) -> Result<Arc<dyn SigningKey>, HsmError> {
        match self.load(label)? {
            Some(key) => Ok(key),
            None => Err(HsmError::KeyNotFound {
                label: label.to_string(),
                store: self.description(),
            }),
        }
    }
}

/// A decrypted soft key. Each variant zeroizes its secret on drop.
enum KeyMaterial {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Rsa {
        key: rsa::RsaPrivateKey,
        // Built once: constructing either signer copies the key and its precomputation.
        pkcs1: rsa::pkcs1v15::SigningKey<sha2::Sha256>,
        pss: rsa::pss::SigningKey<sha2::Sha256>,
    },
}

fn generate_failed(e: getrandom::Error) -> HsmError {
    HsmError::Crypto {
        operation: "generating an EC key",
        detail: e.to_string(),
    }
}

fn rng() -> rand_core::UnwrapErr<getrandom::SysRng> {
    rand_core::UnwrapErr(getrandom::SysRng)
}

impl KeyMaterial {
    fn generate(spec: KeySpec) -> Result<Self, HsmError> {
        Ok(match spec {
            KeySpec::EcP256 => Self::P256(
                p256::ecdsa::SigningKey::try_generate_from_rng(&mut getrandom::SysRng)
                    .map_err(generate_failed)?,
            ),
            KeySpec::EcP384 => Self::P384(
                p384::ecdsa::SigningKey::try_generate_from_rng(&mut getrandom::SysRng)
                    .map_err(generate_failed)?,
            ),
            KeySpec::Rsa3072 => {
                Self::rsa(rsa::RsaPrivateKey::new(&mut rng(), 3072).map_err(|e| {
                    HsmError::Crypto {
                        operation: "generating an RSA-3072 key",
                        detail: e.to_string(),
                    }
                })?)
            }
        })
    }

    fn rsa(key: rsa::RsaPrivateKey) -> Self {
        Self::Rsa {
            pkcs1: rsa::pkcs1v15::SigningKey::new(key.clone()),
            pss: rsa::pss::SigningKey::new(key.clone()),
            key,
        }
    }

    fn from_pkcs8(spec: KeySpec, der: &[u8]) -> Result<Self, HsmError> {
        use p256::pkcs8::DecodePrivateKey;
        let bad = |e: String| HsmError::Encoding {
            what: "PKCS#8 private key",
            detail: e,
        };
        Ok(match spec {
            KeySpec::EcP256 => Self::P256(
                p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|e| bad(e.to_string()))?,
            ),
            KeySpec::EcP384 => Self::P384(
                p384::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|e| bad(e.to_string()))?,
            ),
            KeySpec::Rsa3072 => {
                Self::rsa(rsa::RsaPrivateKey::from_pkcs8_der(der).map_err(|e| bad(e.to_string()))?)
            }
        })
    }

    fn to_pkcs8(&self) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        use p256::pkcs8::EncodePrivateKey;
        let document = match self {
            Self::P256(key) => key.to_pkcs8_der(),
            Self::P384(key) => key.to_pkcs8_der(),
            Self::Rsa { key, .. } => key.to_pkcs8_der(),
        }
        .map_err(|e| HsmError::Encoding {
            what: "PKCS#8 private key",
            detail: e.to_string(),
        })?;
        Ok(Zeroizing::new(document.as_bytes().to_vec()))
    }

    fn public_key(&self) -> Result<PublicKey, HsmError> {
        use p256::pkcs8::EncodePublicKey;
        let document = match self {
            Self::P256(key) => key.verifying_key().to_public_key_der(),
            Self::P384(key) => key.verifying_key().to_public_key_der(),
            Self::Rsa { key, .. } => key.to_public_key().to_public_key_der(),
        }
        .map_err(|e| HsmError::Encoding {
            what: "public key",
            detail: e.to_string(),
        })?;
        PublicKey::from_der(document.as_bytes())
    }

    fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, HsmError> {
        use signature::hazmat::PrehashSigner;
        let failed = |e: signature::Error| HsmError::Crypto {
            operation: "signing a digest",
            detail: e.to_string(),
        };
        match self {
            Self::P256(key) => {
                let signature: p256::ecdsa::Signature = key.sign_prehash(digest).map_err(failed)?;
                Ok(signature.to_der().as_bytes().to_vec())
            }
            Self::P384(key) => {
                let signature: p384::ecdsa::Signature = key.sign_prehash(digest).map_err(failed)?;
                Ok(signature.to_der().as_bytes().to_vec())
            }
            Self::Rsa { .. } => Err(HsmError::UnsupportedKey {
                detail: "the soft store signs digests with ECDSA keys only".into(),
            }),
        }
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        use signature::{RandomizedSigner, hazmat::PrehashSigner};
        let failed = |e: signature::Error| HsmError::Crypto {
            operation: "signing",
            detail: e.to_string(),
        };
        match (self, scheme) {
            (Self::P256(key), SignatureScheme::EcdsaSha256 | SignatureScheme::EcdsaSha384) => {
                let signature: p256::ecdsa::Signature =
                    key.sign_prehash(&scheme.digest(message)).map_err(failed)?;
                Ok(signature.to_der().as_bytes().to_vec())
            }
            (Self::P384(key), SignatureScheme::EcdsaSha256 | SignatureScheme::EcdsaSha384) => {
                let signature: p384::ecdsa::Signature =
                    key.sign_prehash(&scheme.digest(message)).map_err(failed)?;
                Ok(signature.to_der().as_bytes().to_vec())
            }
            (Self::Rsa { pkcs1, .. }, SignatureScheme::RsaPkcs1Sha256) => {
                let signature = signature::Signer::try_sign(pkcs1, message).map_err(failed)?;
                Ok(Box::<[u8]>::from(signature).into_vec())
            }
            (Self::Rsa { pss, .. }, SignatureScheme::RsaPssSha256) => {
                let signature = pss.try_sign_with_rng(&mut rng(), message).map_err(failed)?;
                Ok(Box::<[u8]>::from(signature).into_vec())
            }
            (_, scheme) => Err(HsmError::UnsupportedKey {
                detail: format!("this key cannot sign {scheme}"),
            }),
        }
    }
}

struct SoftKey {
    info: KeyInfo,
    material: KeyMaterial,
    /// Set when the key is destroyed: signers resolved before must not go on signing.
    destroyed: std::sync::atomic::AtomicBool,
}

impl SoftKey {
    fn new(info: KeyInfo, material: KeyMaterial) -> Self {
        Self {
            info,
            material,
            destroyed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn usable(&self) -> Result<&KeyMaterial, HsmError> {
        if self.destroyed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(HsmError::KeyNotFound {
                label: self.info.label.to_string(),
                store: "the soft key store (the key was destroyed)".into(),
            });
        }
        Ok(&self.material)
    }
}

impl std::fmt::Debug for SoftKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftKey")
            .field("label", &self.info.label)
            .finish_non_exhaustive()
    }
}

impl SigningKey for SoftKey {
    fn info(&self) -> &KeyInfo {
        &self.info
    }

    fn sign(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
        _pin: Option<&SecretString>,
    ) -> Result<Vec<u8>, HsmError> {
        self.usable()?.sign(scheme, message)
    }

    fn sign_digest(&self, digest: &[u8], _pin: Option<&SecretString>) -> Result<Vec<u8>, HsmError> {
        self.usable()?.sign_digest(digest)
    }

    fn signs_quickly(&self, scheme: SignatureScheme) -> bool {
        // ECDSA in software; RSA-3072 takes milliseconds and goes to the blocking pool.
        matches!(
            scheme,
            SignatureScheme::EcdsaSha256 | SignatureScheme::EcdsaSha384
        )
    }
}
