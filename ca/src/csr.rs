//! Certificate requests: parsing, proof of possession, and the key policy.

use der::{
    Decode, Encode, Sequence,
    asn1::{ObjectIdentifier, UintRef},
};
use eid_hsm::{PublicKey, SignatureScheme};
use sha2::{Digest, Sha256};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::request::CertReq;

use crate::CaError;

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The most a CSR may weigh: a 4096-bit RSA request with attributes is under 2 KiB.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// A request whose signature verified with its own key (proof of possession) and
/// whose key passed the policy.
#[derive(Clone, Debug)]
pub struct VerifiedRequest {
    /// The key to certify.
    pub public_key: SubjectPublicKeyInfoOwned,
    /// A name for the key type, for records: `ec-p256`, `ec-p384`, `rsa-3072`...
    pub key_type: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo: how a key is recognised again.
    pub key_fingerprint: String,
}

#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

/// Reads a CSR given as PEM or DER.
pub fn decode(input: &[u8]) -> Result<CertReq, CaError> {
    if input.len() > MAX_CSR_BYTES {
        return Err(CaError::BadRequest(format!(
            "the certificate request has {} bytes; at most {MAX_CSR_BYTES} are accepted",
            input.len()
        )));
    }
    let der = if input.starts_with(b"-----BEGIN") {
        let (label, der) = der::pem::decode_vec(input).map_err(|e| {
            CaError::BadRequest(format!("the certificate request is not valid PEM: {e}"))
        })?;
        if label != "CERTIFICATE REQUEST" && label != "NEW CERTIFICATE REQUEST" {
            return Err(CaError::BadRequest(format!(
                "expected a PEM CERTIFICATE REQUEST, found {label}"
            )));
        }
        der
    } else {
        input.to_vec()
    };
    CertReq::from_der(&der).map_err(|e| {
        CaError::BadRequest(format!(
            "the certificate request is not a PKCS#10 request: {e}"
        ))
    })
}

/// Checks proof of possession and the key policy.
pub fn verify(request: &CertReq) -> Result<VerifiedRequest, CaError> {
    let spki = request.info.public_key.clone();
    let key_type = key_policy(&spki)?;
    let scheme = match request.algorithm.oid.to_string().as_str() {
        "1.2.840.10045.4.3.2" => SignatureScheme::EcdsaSha256,
        "1.2.840.10045.4.3.3" => SignatureScheme::EcdsaSha384,
        "1.2.840.113549.1.1.11" => SignatureScheme::RsaPkcs1Sha256,
        "1.2.840.113549.1.1.10" => SignatureScheme::RsaPssSha256,
        other => {
            return Err(CaError::Refused(format!(
                "the request is signed with algorithm {other}; use ECDSA with SHA-256 or SHA-384, \
                 or RSA (PKCS#1 v1.5 or PSS) with SHA-256"
            )));
        }
    };
    let info = request
        .info
        .to_der()
        .map_err(|e| CaError::encoding("certification request info", e))?;
    let spki_der = spki
        .to_der()
        .map_err(|e| CaError::encoding("public key", e))?;
    PublicKey::from_der(&spki_der)?
        .verify(scheme, &info, request.signature.raw_bytes())
        .map_err(|e| {
            CaError::BadRequest(format!(
                "the request's signature does not verify with its own key (no proof of possession): {e}"
            ))
        })?;
    Ok(VerifiedRequest {
        public_key: spki,
        key_type,
        key_fingerprint: hex::encode(Sha256::digest(&spki_der)),
    })
}

/// EC keys on P-256 or P-384; RSA keys of 3072 to 4096 bits with exponent 65537.
fn key_policy(spki: &SubjectPublicKeyInfoOwned) -> Result<String, CaError> {
    if spki.algorithm.oid == EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        return match curve {
            Some(c) if c == P256 => Ok("ec-p256".into()),
            Some(c) if c == P384 => Ok("ec-p384".into()),
            Some(c) => Err(CaError::Refused(format!(
                "EC keys must be on P-256 or P-384; this one is on curve {c}"
            ))),
            None => Err(CaError::Refused("the EC key names no curve".into())),
        };
    }
    if spki.algorithm.oid == RSA_ENCRYPTION {
        let key = RsaPublicKey::from_der(spki.subject_public_key.raw_bytes())
            .map_err(|e| CaError::BadRequest(format!("the RSA public key does not parse: {e}")))?;
        let modulus = key.modulus.as_bytes();
        let bits = match modulus.first() {
            Some(first) => modulus.len() * 8 - first.leading_zeros() as usize,
            None => 0,
        };
        if !(3072..=4096).contains(&bits) {
            return Err(CaError::Refused(format!(
                "RSA keys must have 3072 to 4096 bits; this one has {bits}"
            )));
        }
        if modulus.last().is_some_and(|b| b & 1 == 0) {
            return Err(CaError::Refused(
                "the RSA modulus is even: not a valid key".into(),
            ));
        }
        if key.public_exponent.as_bytes() != [0x01, 0x00, 0x01] {
            return Err(CaError::Refused(
                "RSA keys must use the public exponent 65537".into(),
            ));
        }
        return Ok(format!("rsa-{bits}"));
    }
    Err(CaError::Refused(format!(
        "unsupported key algorithm {}: use EC P-256/P-384 or RSA 3072-4096",
        spki.algorithm.oid
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use der::{Encode, asn1::BitString};
    use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

    use super::*;

    fn rsa_key(modulus: &[u8], exponent: &[u8]) -> SubjectPublicKeyInfoOwned {
        let key = RsaPublicKey {
            modulus: UintRef::new(modulus).unwrap(),
            public_exponent: UintRef::new(exponent).unwrap(),
        }
        .to_der()
        .unwrap();
        SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: Some(der::asn1::Null.into()),
            },
            subject_public_key: BitString::from_bytes(&key).unwrap(),
        }
    }

    #[test]
    fn rsa_policy_refuses_small_even_and_odd_exponent_keys_without_panicking() {
        let mut modulus = vec![0xc5u8; 384];
        modulus[383] = 0x01;
        assert_eq!(
            key_policy(&rsa_key(&modulus, &[1, 0, 1])).unwrap(),
            "rsa-3072"
        );
        assert!(key_policy(&rsa_key(&modulus[..256], &[1, 0, 1])).is_err());
        assert!(key_policy(&rsa_key(&modulus, &[3])).is_err());
        modulus[383] = 0x02;
        assert!(key_policy(&rsa_key(&modulus, &[1, 0, 1])).is_err());
        // A zero modulus encodes as one zero octet: refused, not a panic.
        assert!(key_policy(&rsa_key(&[0], &[1, 0, 1])).is_err());
    }

    #[test]
    fn garbage_and_oversized_requests_are_bad_requests() {
        assert!(matches!(decode(b"\x30\x00"), Err(CaError::BadRequest(_))));
        assert!(matches!(
            decode(&vec![0x30; MAX_CSR_BYTES + 1]),
            Err(CaError::BadRequest(_))
        ));
        assert!(matches!(
            decode(b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"),
            Err(CaError::BadRequest(_))
        ));
    }
}
