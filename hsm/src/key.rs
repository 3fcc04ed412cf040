//! Key names, algorithms and public keys: the vocabulary shared by both backends.

use std::fmt;

use der::{Decode, Encode, asn1::ObjectIdentifier};
use signature::Verifier;
use spki::{AlgorithmIdentifierOwned, EncodePublicKey, SubjectPublicKeyInfoOwned};

use crate::HsmError;

/// The label a key is found by, on the soft store and on a token (`CKA_LABEL`).
///
/// 1 to 64 characters from `A-Z a-z 0-9 . _ -`, so a label is also a safe file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyLabel(String);

impl KeyLabel {
    /// Checks and wraps a label.
    pub fn new(label: impl Into<String>) -> Result<Self, HsmError> {
        let label = label.into();
        let valid = !label.is_empty()
            && label.len() <= 64
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && !label.starts_with('.');
        if valid {
            Ok(Self(label))
        } else {
            Err(HsmError::InvalidLabel { label })
        }
    }

    /// The label as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyLabel({:?})", self.0)
    }
}

/// The type and size of a key pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum KeySpec {
    /// ECDSA on NIST P-256 (secp256r1).
    EcP256,
    /// ECDSA on NIST P-384 (secp384r1).
    EcP384,
    /// RSA with a 3072-bit modulus and public exponent 65537.
    Rsa3072,
}

impl KeySpec {
    /// The signature scheme a key of this spec uses unless asked otherwise.
    pub fn default_scheme(self) -> SignatureScheme {
        match self {
            Self::EcP256 => SignatureScheme::EcdsaSha256,
            Self::EcP384 => SignatureScheme::EcdsaSha384,
            Self::Rsa3072 => SignatureScheme::RsaPssSha256,
        }
    }

    /// Whether a key of this spec can produce signatures in `scheme`.
    pub fn supports(self, scheme: SignatureScheme) -> bool {
        match self {
            Self::EcP256 | Self::EcP384 => matches!(
                scheme,
                SignatureScheme::EcdsaSha256 | SignatureScheme::EcdsaSha384
            ),
            Self::Rsa3072 => matches!(
                scheme,
                SignatureScheme::RsaPssSha256 | SignatureScheme::RsaPkcs1Sha256
            ),
        }
    }

    /// Parses the names used in config and on the command line.
    pub fn parse(name: &str) -> Result<Self, HsmError> {
        match name {
            "ec-p256" | "p256" | "P-256" => Ok(Self::EcP256),
            "ec-p384" | "p384" | "P-384" => Ok(Self::EcP384),
            "rsa-3072" | "rsa3072" => Ok(Self::Rsa3072),
            other => Err(HsmError::UnsupportedKey {
                detail: format!(
                    "unknown key spec `{other}` (expected ec-p256, ec-p384 or rsa-3072)"
                ),
            }),
        }
    }

    /// The stable name used in config, files and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcP256 => "ec-p256",
            Self::EcP384 => "ec-p384",
            Self::Rsa3072 => "rsa-3072",
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a signature is computed: hash plus padding or curve encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureScheme {
    /// ECDSA with SHA-256; signatures are DER `ECDSA-Sig-Value`.
    EcdsaSha256,
    /// ECDSA with SHA-384; signatures are DER `ECDSA-Sig-Value`.
    EcdsaSha384,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1Sha256,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt.
    RsaPssSha256,
}

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");

impl SignatureScheme {
    /// The scheme an X.509 signature algorithm OID names (certificates, CRLs, OCSP
    /// responses, CMS), if it is one the key layer knows.
    pub fn from_algorithm_oid(oid: &ObjectIdentifier) -> Option<Self> {
        match *oid {
            ECDSA_WITH_SHA256 => Some(Self::EcdsaSha256),
            ECDSA_WITH_SHA384 => Some(Self::EcdsaSha384),
            SHA256_WITH_RSA => Some(Self::RsaPkcs1Sha256),
            RSASSA_PSS => Some(Self::RsaPssSha256),
            _ => None,
        }
    }

    /// The X.509 `AlgorithmIdentifier` of signatures in this scheme.
    pub fn algorithm_identifier(self) -> Result<AlgorithmIdentifierOwned, HsmError> {
        Ok(match self {
            Self::EcdsaSha256 => AlgorithmIdentifierOwned {
                oid: ECDSA_WITH_SHA256,
                parameters: None,
            },
            Self::EcdsaSha384 => AlgorithmIdentifierOwned {
                oid: ECDSA_WITH_SHA384,
                parameters: None,
            },
            Self::RsaPkcs1Sha256 => AlgorithmIdentifierOwned {
                oid: SHA256_WITH_RSA,
                parameters: Some(der::asn1::Null.into()),
            },
            Self::RsaPssSha256 => {
                let params = rsa::pss::get_default_pss_signature_algo_id::<sha2::Sha256>()
                    .map_err(|e| HsmError::Encoding {
                        what: "RSA-PSS parameters",
                        detail: e.to_string(),
                    })?;
                AlgorithmIdentifierOwned {
                    oid: RSASSA_PSS,
                    parameters: params.parameters,
                }
            }
        })
    }

    /// The stable name used in logs and stored records.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaSha256 => "ecdsa-sha256",
            Self::EcdsaSha384 => "ecdsa-sha384",
            Self::RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
            Self::RsaPssSha256 => "rsa-pss-sha256",
        }
    }

    /// Parses [`SignatureScheme::name`].
    pub fn parse(name: &str) -> Result<Self, HsmError> {
        match name {
            "ecdsa-sha256" => Ok(Self::EcdsaSha256),
            "ecdsa-sha384" => Ok(Self::EcdsaSha384),
            "rsa-pkcs1-sha256" => Ok(Self::RsaPkcs1Sha256),
            "rsa-pss-sha256" => Ok(Self::RsaPssSha256),
            other => Err(HsmError::UnsupportedKey {
                detail: format!("unknown signature scheme `{other}`"),
            }),
        }
    }

    /// The digest this scheme applies to the message before the private-key operation.
    pub fn digest(self, message: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Self::EcdsaSha384 => sha2::Sha384::digest(message).to_vec(),
            Self::EcdsaSha256 | Self::RsaPkcs1Sha256 | Self::RsaPssSha256 => {
                sha2::Sha256::digest(message).to_vec()
            }
        }
    }
}

impl fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a key is for; decides the attributes it is generated with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum KeyRole {
    /// A service key (CA, OCSP, TSA, token signing, audit checkpoints).
    Service,
    /// A citizen's authentication key (PIN1 on a card or SIM).
    CitizenAuthentication,
    /// A citizen's signing key: needs the PIN for every signature (always-authenticate).
    CitizenSigning,
}

/// Security attributes of a stored private key, as the backend reports them.
///
/// On a PKCS#11 token these are read back from the token (`CKA_SENSITIVE`,
/// `CKA_EXTRACTABLE`, `CKA_NEVER_EXTRACTABLE`, `CKA_LOCAL`, `CKA_ALWAYS_AUTHENTICATE`);
/// the soft store reports what it can truthfully claim (not sensitive, never local).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyAttributes {
    /// The key value cannot be revealed in plaintext.
    pub sensitive: bool,
    /// The key can be wrapped and exported.
    pub extractable: bool,
    /// The key has never been extractable.
    pub never_extractable: bool,
    /// The key was generated on the token that holds it.
    pub local: bool,
    /// Every signature needs the user to authenticate again.
    pub always_authenticate: bool,
}

/// A key the store holds: its name, algorithm, where it lives and its public half.
#[derive(Clone, Debug)]
pub struct KeyInfo {
    /// The key's label.
    pub label: KeyLabel,
    /// The key's identifier (`CKA_ID` on a token; random bytes on the soft store).
    pub id: Vec<u8>,
    /// Type and size.
    pub spec: KeySpec,
    /// What the key was generated for.
    pub role: KeyRole,
    /// Security attributes reported by the backend.
    pub attributes: KeyAttributes,
    /// The public key.
    pub public_key: PublicKey,
}

/// A public key, as a `SubjectPublicKeyInfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(SubjectPublicKeyInfoOwned);

impl PublicKey {
    /// Wraps a parsed `SubjectPublicKeyInfo`.
    pub fn new(spki: SubjectPublicKeyInfoOwned) -> Self {
        Self(spki)
    }

    /// Parses a DER `SubjectPublicKeyInfo`.
    pub fn from_der(der: &[u8]) -> Result<Self, HsmError> {
        SubjectPublicKeyInfoOwned::from_der(der)
            .map(Self)
            .map_err(|e| HsmError::Encoding {
                what: "SubjectPublicKeyInfo",
                detail: e.to_string(),
            })
    }

    /// The `SubjectPublicKeyInfo`.
    pub fn spki(&self) -> &SubjectPublicKeyInfoOwned {
        &self.0
    }

    /// DER encoding of the `SubjectPublicKeyInfo`.
    pub fn to_der(&self) -> Result<Vec<u8>, HsmError> {
        self.0.to_der().map_err(|e| HsmError::Encoding {
            what: "SubjectPublicKeyInfo",
            detail: e.to_string(),
        })
    }

    /// Verifies `signature` over `message` in software.
    pub fn verify(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), HsmError> {
        let bad = |detail: String| HsmError::BadSignature { detail };
        match scheme {
            SignatureScheme::EcdsaSha256 | SignatureScheme::EcdsaSha384 => {
                self.verify_ecdsa(scheme, message, signature)
            }
            SignatureScheme::RsaPkcs1Sha256 => {
                use rsa::pkcs8::DecodePublicKey;
                let der = self.to_der()?;
                let key = rsa::RsaPublicKey::from_public_key_der(&der)
                    .map_err(|e| bad(format!("not an RSA key: {e}")))?;
                let key = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key);
                let sig = rsa::pkcs1v15::Signature::try_from(signature)
                    .map_err(|e| bad(e.to_string()))?;
                key.verify(message, &sig).map_err(|e| bad(e.to_string()))
            }
            SignatureScheme::RsaPssSha256 => {
                use rsa::pkcs8::DecodePublicKey;
                let der = self.to_der()?;
                let key = rsa::RsaPublicKey::from_public_key_der(&der)
                    .map_err(|e| bad(format!("not an RSA key: {e}")))?;
                let key = rsa::pss::VerifyingKey::<sha2::Sha256>::new(key);
                let sig =
                    rsa::pss::Signature::try_from(signature).map_err(|e| bad(e.to_string()))?;
                key.verify(message, &sig).map_err(|e| bad(e.to_string()))
            }
        }
    }

    /// Verifies an ECDSA signature (DER `ECDSA-Sig-Value`) over a digest the signer was
    /// given as is (a SIM signing a hash through the mobile gateway; PKCS#11
    /// `CKM_ECDSA`). P-256 and P-384 keys; a digest shorter than half the curve's size
    /// is refused.
    pub fn verify_ecdsa_digest(&self, digest: &[u8], signature: &[u8]) -> Result<(), HsmError> {
        use p256::pkcs8::DecodePublicKey;
        use signature::hazmat::PrehashVerifier;
        let bad = |detail: String| HsmError::BadSignature { detail };
        let der = self.to_der()?;
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(&der) {
            let sig =
                p256::ecdsa::Signature::from_der(signature).map_err(|e| bad(e.to_string()))?;
            return key
                .verify_prehash(digest, &sig)
                .map_err(|_| bad("the ECDSA signature does not verify".into()));
        }
        if let Ok(key) = p384::ecdsa::VerifyingKey::from_public_key_der(&der) {
            let sig =
                p384::ecdsa::Signature::from_der(signature).map_err(|e| bad(e.to_string()))?;
            return key
                .verify_prehash(digest, &sig)
                .map_err(|_| bad("the ECDSA signature does not verify".into()));
        }
        Err(bad("not a P-256 or P-384 public key".into()))
    }

    /// ring's verifier for an uncompressed P-256 point, whose assembly is about three
    /// times faster than the portable arithmetic; `None` for anything else (P-384, where
    /// ring has no assembly, and compressed points), which the portable code verifies.
    fn ring_ecdsa(
        &self,
        scheme: SignatureScheme,
    ) -> Option<&'static ring::signature::EcdsaVerificationAlgorithm> {
        use ring::signature as rs;
        if self.0.algorithm.oid != EC_PUBLIC_KEY {
            return None;
        }
        let curve = self
            .0
            .algorithm
            .parameters
            .as_ref()?
            .decode_as::<ObjectIdentifier>()
            .ok()?;
        let point = self.0.subject_public_key.as_bytes()?;
        match (curve, point.len(), point.first(), scheme) {
            (SECP256R1, 65, Some(4), SignatureScheme::EcdsaSha256) => {
                Some(&rs::ECDSA_P256_SHA256_ASN1)
            }
            (SECP256R1, 65, Some(4), SignatureScheme::EcdsaSha384) => {
                Some(&rs::ECDSA_P256_SHA384_ASN1)
            }
            _ => None,
        }
    }

    fn verify_ecdsa(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), HsmError> {
        use p256::pkcs8::DecodePublicKey;
        use signature::hazmat::PrehashVerifier;
        let bad = |detail: String| HsmError::BadSignature { detail };
        if let Some(algorithm) = self.ring_ecdsa(scheme) {
            let point = self.0.subject_public_key.raw_bytes();
            return ring::signature::UnparsedPublicKey::new(algorithm, point)
                .verify(message, signature)
                .map_err(|_| bad("the ECDSA signature does not verify".into()));
        }
        let der = self.to_der()?;
        let digest = scheme.digest(message);
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(&der) {
            let sig =
                p256::ecdsa::Signature::from_der(signature).map_err(|e| bad(e.to_string()))?;
            return key
                .verify_prehash(&digest, &sig)
                .map_err(|e| bad(e.to_string()));
        }
        if let Ok(key) = p384::ecdsa::VerifyingKey::from_public_key_der(&der) {
            let sig =
                p384::ecdsa::Signature::from_der(signature).map_err(|e| bad(e.to_string()))?;
            return key
                .verify_prehash(&digest, &sig)
                .map_err(|e| bad(e.to_string()));
        }
        Err(bad("not a P-256 or P-384 public key".into()))
    }
}

impl EncodePublicKey for PublicKey {
    fn to_public_key_der(&self) -> spki::Result<der::Document> {
        Ok(der::Document::encode_msg(&self.0)?)
    }
}
