//! [`KeySigner`]: a private key in the store, usable by x509-cert, cms and JWT code.

use std::{fmt, sync::Arc};

use der::asn1::BitString;
use secrecy::SecretString;
use spki::{AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, SignatureBitStringEncoding};

use crate::{HsmError, KeyInfo, PublicKey, SignatureScheme, store::SigningKey};

/// A signature as it goes on the wire: DER `ECDSA-Sig-Value` for ECDSA, the raw
/// octets for RSA.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature(Vec<u8>);

impl Signature {
    /// The signature octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Takes the octets.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl AsRef<[u8]> for Signature {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({} bytes)", self.0.len())
    }
}

impl SignatureBitStringEncoding for Signature {
    fn to_bitstring(&self) -> der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

/// Signs with one key of a [`KeyStore`](crate::KeyStore) in one scheme.
///
/// Cheap to clone and shareable across threads. [`signature::Signer::try_sign`] and
/// [`KeySigner::sign`] block while the token works; async code calls
/// [`KeySigner::sign_async`].
#[derive(Clone)]
pub struct KeySigner {
    key: Arc<dyn SigningKey>,
    scheme: SignatureScheme,
    algorithm: AlgorithmIdentifierOwned,
    pin: Option<Arc<SecretString>>,
}

impl fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySigner")
            .field("label", &self.key.info().label)
            .field("scheme", &self.scheme)
            .field("pin", &self.pin.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl KeySigner {
    pub(crate) fn new(key: Arc<dyn SigningKey>, scheme: SignatureScheme) -> Result<Self, HsmError> {
        Ok(Self {
            key,
            scheme,
            algorithm: scheme.algorithm_identifier()?,
            pin: None,
        })
    }

    /// The same signer, carrying the PIN that an always-authenticate key (a citizen's
    /// signing key) needs for every signature. The PIN is zeroized when the last clone
    /// is dropped.
    pub fn with_pin(mut self, pin: SecretString) -> Self {
        self.pin = Some(Arc::new(pin));
        self
    }

    /// The key being used.
    pub fn info(&self) -> &KeyInfo {
        self.key.info()
    }

    /// The signature scheme.
    pub fn scheme(&self) -> SignatureScheme {
        self.scheme
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.key.info().public_key
    }

    /// Signs `message` (hashing it as the scheme says). Blocks.
    pub fn sign(&self, message: &[u8]) -> Result<Signature, HsmError> {
        self.key
            .sign(self.scheme, message, self.pin.as_deref())
            .map(Signature)
    }

    /// Signs a digest computed elsewhere: a SHA-256, SHA-384 or SHA-512 hash (32, 48 or
    /// 64 bytes), as a mobile-ID SIM signs the hash a relying party sends. The scheme's
    /// own hash is not applied; ECDSA comes back DER-encoded, RSA as PKCS#1 v1.5 over
    /// the hash's DigestInfo. Blocks.
    pub fn sign_digest(&self, digest: &[u8]) -> Result<Signature, HsmError> {
        if !matches!(digest.len(), 32 | 48 | 64) {
            return Err(HsmError::UnsupportedKey {
                detail: format!(
                    "a digest to sign has 32, 48 or 64 bytes (SHA-256, SHA-384, SHA-512), not {}",
                    digest.len()
                ),
            });
        }
        self.key
            .sign_digest(digest, self.pin.as_deref())
            .map(Signature)
    }

    /// A PKCS#10 certification request (DER) for this key with `subject` (an RFC 4514
    /// string such as `CN=eID card key`), signed by the key itself: the proof of
    /// possession the CA asks for. Blocks while the token signs.
    pub fn certification_request(&self, subject: &str) -> Result<Vec<u8>, HsmError> {
        use der::Encode;
        use x509_cert::builder::{Builder, RequestBuilder};
        let failed = |operation: &'static str| {
            move |e: &dyn fmt::Display| HsmError::Crypto {
                operation,
                detail: e.to_string(),
            }
        };
        let name: x509_cert::name::Name = subject
            .parse()
            .map_err(|e: der::Error| failed("naming a certification request")(&e))?;
        RequestBuilder::new(name)
            .map_err(|e| failed("building a certification request")(&e))?
            .build::<_, Signature>(self)
            .map_err(|e| failed("signing a certification request")(&e))?
            .to_der()
            .map_err(|e| failed("encoding a certification request")(&e))
    }

    /// Whether a signature is quick, in-process arithmetic (software ECDSA) that async
    /// code may compute in place rather than hand to the blocking pool.
    pub fn signs_quickly(&self) -> bool {
        self.key.signs_quickly(self.scheme)
    }

    /// Signs without holding up the async executor (see [`Self::run_signing`]).
    pub async fn sign_async(&self, message: Vec<u8>) -> Result<Signature, HsmError> {
        let signer = self.clone();
        self.run_signing(move || signer.sign(&message)).await?
    }

    /// Runs `work`, blocking code that signs with this key (building a token around
    /// the signature, say), where this key's signatures belong without holding up the
    /// async executor: in place for software ECDSA, quicker than any hand-off to
    /// another thread; on the token's own signing threads for a PKCS#11 key (one per
    /// session, so waiting jobs queue instead of waking threads that would only wait
    /// for a session); on the blocking pool otherwise.
    pub async fn run_signing<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HsmError> {
        if self.key.signs_quickly(self.scheme) {
            return Ok(work());
        }
        match self.key.sign_threads() {
            Some(threads) => threads.run(work).await,
            None => tokio::task::spawn_blocking(work)
                .await
                .map_err(|e| HsmError::Task {
                    detail: e.to_string(),
                }),
        }
    }
}

impl signature::Signer<Signature> for KeySigner {
    fn try_sign(&self, message: &[u8]) -> Result<Signature, signature::Error> {
        Ok(self.sign(message)?)
    }
}

impl signature::Keypair for KeySigner {
    type VerifyingKey = PublicKey;

    fn verifying_key(&self) -> PublicKey {
        self.public_key().clone()
    }
}

impl DynSignatureAlgorithmIdentifier for KeySigner {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(self.algorithm.clone())
    }
}
