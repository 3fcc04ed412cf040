//! Test harness: the same test bodies run against the soft key store and a real
//! SoftHSM2 token (as rustls runs one test module per crypto provider).
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, when the module is initialised; it is set
//! once per test process to a config whose token directory is a fresh temporary
//! folder, and every test creates its own token with a unique label, so tests run in
//! parallel without sharing state.
#![allow(dead_code, clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

use eid_hsm::{
    KeyStore, Pkcs11Options, PublicKey, SecretString, SignatureScheme, SoftSecret,
    SoftStoreOptions, TokenClass, TokenSelector, initialize_token,
};
use tempfile::TempDir;

pub(crate) const USER_PIN: &str = "48213";
pub(crate) const SO_PIN: &str = "83910274";
pub(crate) const PASSPHRASE: &str = "correct horse battery staple";

/// The backend a test body runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Soft,
    SoftHsm,
}

impl Backend {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Soft => "soft store",
            Self::SoftHsm => "SoftHSM2",
        }
    }

    /// A fresh, empty store of this backend.
    pub(crate) fn open(self) -> TestStore {
        match self {
            Self::Soft => soft_store(),
            Self::SoftHsm => softhsm_store(TokenClass::Hsm, 2),
        }
    }
}

/// A store plus whatever must outlive it.
pub(crate) struct TestStore {
    pub(crate) backend: Backend,
    pub(crate) store: KeyStore,
    /// The soft store's folder, or the token's label.
    pub(crate) location: String,
    /// Keeps the soft store's folder alive.
    pub(crate) dir: Option<TempDir>,
}

pub(crate) fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

pub(crate) fn soft_options(dir: &Path, passphrase: &str) -> SoftStoreOptions {
    let mut options = SoftStoreOptions::new(
        dir.to_path_buf(),
        SoftSecret::Passphrase(secret(passphrase)),
        true,
    );
    options.argon2_memory_kib = 1024;
    options
}

pub(crate) fn soft_store() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::open_soft(soft_options(dir.path(), PASSPHRASE)).unwrap();
    TestStore {
        backend: Backend::Soft,
        store,
        location: dir.path().display().to_string(),
        dir: Some(dir),
    }
}

/// The PKCS#11 module under test.
pub(crate) fn module() -> PathBuf {
    eid_tests::softhsm::pkcs11_module()
}

/// Points SoftHSM2 at a private token directory, once per process.
pub(crate) fn softhsm_environment() {
    eid_tests::softhsm::softhsm_environment();
}

/// A unique token label for this process.
pub(crate) fn unique_label(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Initialises a new token and returns its label.
pub(crate) fn new_token() -> String {
    softhsm_environment();
    let label = unique_label("eid-test");
    initialize_token(&module(), &label, &secret(SO_PIN), &secret(USER_PIN)).unwrap();
    label
}

pub(crate) fn pkcs11_options(label: &str, class: TokenClass, sessions: usize) -> Pkcs11Options {
    Pkcs11Options {
        module: module(),
        token: TokenSelector::Label(label.to_owned()),
        pin: secret(USER_PIN),
        sessions,
        class,
    }
}

pub(crate) fn softhsm_store(class: TokenClass, sessions: usize) -> TestStore {
    let label = new_token();
    let store = KeyStore::open_pkcs11(pkcs11_options(&label, class, sessions)).unwrap();
    TestStore {
        backend: Backend::SoftHsm,
        store,
        location: label,
        dir: None,
    }
}

/// Verifies with the `openssl` command line tool, an implementation independent of
/// ours. Returns whether openssl accepted the signature.
pub(crate) fn openssl_verifies(
    public_key: &PublicKey,
    scheme: SignatureScheme,
    message: &[u8],
    signature: &[u8],
) -> bool {
    use spki::EncodePublicKey;
    let dir = tempfile::tempdir().unwrap();
    let pem = public_key
        .to_public_key_pem(der::pem::LineEnding::LF)
        .unwrap();
    std::fs::write(dir.path().join("pub.pem"), pem).unwrap();
    std::fs::write(dir.path().join("sig"), signature).unwrap();
    std::fs::write(dir.path().join("msg"), message).unwrap();
    let digest = match scheme {
        SignatureScheme::EcdsaSha384 => "-sha384",
        _ => "-sha256",
    };
    let mut command = Command::new("openssl");
    command.current_dir(dir.path()).args([
        "dgst",
        digest,
        "-verify",
        "pub.pem",
        "-signature",
        "sig",
    ]);
    if scheme == SignatureScheme::RsaPssSha256 {
        command.args([
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:32",
        ]);
    }
    let output = command.arg("msg").output().expect("openssl is installed");
    output.status.success() && String::from_utf8_lossy(&output.stdout).contains("Verified OK")
}

/// Runs `openssl verify -CAfile cert cert` on a self-signed certificate (PEM).
pub(crate) fn openssl_accepts_self_signed(pem: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cert.pem");
    std::fs::write(&path, pem).unwrap();
    let output = Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(&path)
        .arg(&path)
        .output()
        .expect("openssl is installed");
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Instantiates each listed test body once per backend: `soft::name` and
/// `softhsm::name`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod soft {
            $(
                #[test]
                fn $name() {
                    super::$name(super::common::Backend::Soft);
                }
            )*
        }
        mod softhsm {
            $(
                #[test]
                fn $name() {
                    super::$name(super::common::Backend::SoftHsm);
                }
            )*
        }
    };
}
