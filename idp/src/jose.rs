//! JSON Web Signatures (RFC 7515, compact form) and JSON Web Keys (RFC 7517) for the
//! algorithms the provider uses: ES256 and PS256 (and RS256 for client assertions).
//!
//! Written here rather than taken from a JWT crate because signing must go through the
//! key layer (the private key stays in its token) and the crates that take a
//! `signature::Signer` do not yet share this workspace's RustCrypto generation.

use base64ct::{Base64UrlUnpadded, Encoding};
use eid_hsm::{KeySigner, PublicKey, SignatureScheme};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Base64url without padding, as JOSE writes it.
pub fn b64(data: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(data)
}

/// Decodes base64url without padding.
pub fn unb64(text: &str) -> Result<Vec<u8>, JoseError> {
    Base64UrlUnpadded::decode_vec(text).map_err(|_| JoseError::Malformed("not base64url"))
}

/// Why a JWS or JWK was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoseError {
    /// The structure is wrong.
    #[error("malformed JOSE object: {0}")]
    Malformed(&'static str),
    /// The `alg` is not one this use allows.
    #[error("algorithm `{0}` is not allowed here")]
    Algorithm(String),
    /// No key with a matching `kid` (or of the right type).
    #[error("no key matches the token's kid")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// Signing failed in the key layer.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A JWS algorithm (stored by its JOSE name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256.
    #[serde(rename = "ES256")]
    Es256,
    /// RSASSA-PSS with SHA-256.
    #[serde(rename = "PS256")]
    Ps256,
    /// RSASSA-PKCS1-v1_5 with SHA-256: client assertions, and ID tokens for relying
    /// parties registered for it (OpenID Connect's mandatory-to-implement algorithm).
    #[serde(rename = "RS256")]
    Rs256,
}

impl Algorithm {
    /// Parses an `alg` value.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Self::Es256),
            "PS256" => Some(Self::Ps256),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }

    /// The `alg` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Ps256 => "PS256",
            Self::Rs256 => "RS256",
        }
    }

    /// The key layer's scheme for this algorithm.
    pub fn scheme(self) -> SignatureScheme {
        match self {
            Self::Es256 => SignatureScheme::EcdsaSha256,
            Self::Ps256 => SignatureScheme::RsaPssSha256,
            Self::Rs256 => SignatureScheme::RsaPkcs1Sha256,
        }
    }
}

/// Signs `claims` as a compact JWS with `signer`, whose scheme must match `alg`.
pub async fn sign(
    signer: &KeySigner,
    alg: Algorithm,
    kid: &str,
    typ: &str,
    claims: &Value,
) -> Result<String, JoseError> {
    let header = serde_json::json!({ "alg": alg.name(), "kid": kid, "typ": typ });
    let mut input = b64(header.to_string().as_bytes());
    input.push('.');
    input.push_str(&b64(claims.to_string().as_bytes()));
    let signature = signer
        .sign_async(input.as_bytes().to_vec())
        .await
        .map_err(|e| JoseError::Signing(e.to_string()))?;
    let raw = match alg {
        // The key layer returns X.509's DER ECDSA-Sig-Value; JWS wants r || s (RFC 7518 3.4).
        Algorithm::Es256 => p256::ecdsa::Signature::from_der(signature.as_bytes())
            .map_err(|e| JoseError::Signing(e.to_string()))?
            .to_bytes()
            .to_vec(),
        Algorithm::Ps256 | Algorithm::Rs256 => signature.into_bytes(),
    };
    input.push('.');
    input.push_str(&b64(&raw));
    Ok(input)
}

/// A JWS taken apart, not yet verified.
#[derive(Debug)]
pub struct Parsed {
    /// The protected header.
    pub header: Map<String, Value>,
    /// The payload as JSON.
    pub claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

impl Parsed {
    /// Splits and decodes a compact JWS (JSON payload).
    pub fn new(token: &str) -> Result<Self, JoseError> {
        if token.len() > 16 * 1024 {
            return Err(JoseError::Malformed("token too long"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JoseError::Malformed("not three dot-separated parts"));
        };
        let decode_object = |part: &str| -> Result<Map<String, Value>, JoseError> {
            match serde_json::from_slice::<Value>(&unb64(part)?) {
                Ok(Value::Object(map)) => Ok(map),
                _ => Err(JoseError::Malformed("a part is not a JSON object")),
            }
        };
        Ok(Self {
            header: decode_object(header)?,
            claims: decode_object(payload)?,
            signing_input: format!("{header}.{payload}"),
            signature: unb64(signature)?,
        })
    }

    /// The header's `alg`, if one of `allowed`.
    pub fn algorithm(&self, allowed: &[Algorithm]) -> Result<Algorithm, JoseError> {
        let name = self.header.get("alg").and_then(Value::as_str).unwrap_or("");
        Algorithm::parse(name)
            .filter(|alg| allowed.contains(alg))
            .ok_or_else(|| JoseError::Algorithm(name.to_owned()))
    }

    /// The header's `kid`.
    pub fn kid(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str)
    }

    /// Verifies the signature with `key` under `alg`.
    pub fn verify(&self, alg: Algorithm, key: &PublicKey) -> Result<(), JoseError> {
        let signature = match alg {
            Algorithm::Es256 => p256::ecdsa::Signature::from_slice(&self.signature)
                .map_err(|_| JoseError::BadSignature)?
                .to_der()
                .as_bytes()
                .to_vec(),
            Algorithm::Ps256 | Algorithm::Rs256 => self.signature.clone(),
        };
        key.verify(alg.scheme(), self.signing_input.as_bytes(), &signature)
            .map_err(|_| JoseError::BadSignature)
    }
}

/// A public JSON Web Key of the kinds used here (EC P-256, RSA).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jwk {
    /// Key type: `EC` or `RSA`.
    pub kty: String,
    /// Key identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `sig` for signing keys.
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// The algorithm the key is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// EC curve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

impl Jwk {
    /// The JWK of a key-layer public key.
    pub fn from_public_key(key: &PublicKey, kid: &str, alg: Algorithm) -> Result<Self, JoseError> {
        let der = key
            .to_der()
            .map_err(|_| JoseError::Malformed("public key"))?;
        let mut jwk = Self {
            kty: String::new(),
            kid: Some(kid.to_owned()),
            key_use: Some("sig".into()),
            alg: Some(alg.name().into()),
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
        };
        match alg {
            Algorithm::Es256 => {
                use p256::pkcs8::DecodePublicKey;
                let point = p256::PublicKey::from_public_key_der(&der)
                    .map_err(|_| JoseError::Malformed("not a P-256 key"))?;
                use p256::elliptic_curve::sec1::ToSec1Point;
                let encoded = point.to_sec1_point(false);
                let (Some(x), Some(y)) = (encoded.x(), encoded.y()) else {
                    return Err(JoseError::Malformed("compressed point"));
                };
                jwk.kty = "EC".into();
                jwk.crv = Some("P-256".into());
                jwk.x = Some(b64(x));
                jwk.y = Some(b64(y));
            }
            Algorithm::Ps256 | Algorithm::Rs256 => {
                use rsa::{pkcs8::DecodePublicKey, traits::PublicKeyParts};
                let rsa = rsa::RsaPublicKey::from_public_key_der(&der)
                    .map_err(|_| JoseError::Malformed("not an RSA key"))?;
                jwk.kty = "RSA".into();
                jwk.n = Some(b64(&rsa.n().to_be_bytes_trimmed_vartime()));
                jwk.e = Some(b64(&rsa.e().to_be_bytes_trimmed_vartime()));
            }
        }
        Ok(jwk)
    }

    /// The key as a key-layer public key (for verification).
    pub fn public_key(&self) -> Result<PublicKey, JoseError> {
        let der = match self.kty.as_str() {
            "EC" => {
                if self.crv.as_deref() != Some("P-256") {
                    return Err(JoseError::Malformed("EC keys must be on P-256"));
                }
                let coordinate = |c: &Option<String>| -> Result<Vec<u8>, JoseError> {
                    let bytes = unb64(c.as_deref().ok_or(JoseError::Malformed("x or y"))?)?;
                    (bytes.len() == 32)
                        .then_some(bytes)
                        .ok_or(JoseError::Malformed("coordinate length"))
                };
                let mut sec1 = vec![4u8];
                sec1.extend(coordinate(&self.x)?);
                sec1.extend(coordinate(&self.y)?);
                use p256::pkcs8::EncodePublicKey;
                p256::PublicKey::from_sec1_bytes(&sec1)
                    .map_err(|_| JoseError::Malformed("not a point on P-256"))?
                    .to_public_key_der()
                    .map_err(|_| JoseError::Malformed("EC key"))?
                    .as_bytes()
                    .to_vec()
            }
            "RSA" => {
                use rsa::pkcs8::EncodePublicKey;
                let part = |p: &Option<String>| -> Result<rsa::BoxedUint, JoseError> {
                    let bytes = unb64(p.as_deref().ok_or(JoseError::Malformed("n or e"))?)?;
                    let bits = u32::try_from(bytes.len() * 8)
                        .map_err(|_| JoseError::Malformed("RSA parameter size"))?;
                    rsa::BoxedUint::from_be_slice(&bytes, bits)
                        .map_err(|_| JoseError::Malformed("RSA parameter"))
                };
                let key = rsa::RsaPublicKey::new(part(&self.n)?, part(&self.e)?)
                    .map_err(|_| JoseError::Malformed("RSA key (at least 2048 bits)"))?;
                key.to_public_key_der()
                    .map_err(|_| JoseError::Malformed("RSA key"))?
                    .as_bytes()
                    .to_vec()
            }
            _ => return Err(JoseError::Malformed("key type is not EC or RSA")),
        };
        PublicKey::from_der(&der).map_err(|_| JoseError::Malformed("public key"))
    }

    /// The RFC 7638 thumbprint (SHA-256, base64url).
    pub fn thumbprint(&self) -> Result<String, JoseError> {
        // Required members only, in lexicographic order, no whitespace.
        let canonical = match self.kty.as_str() {
            "EC" => serde_json::json!({
                "crv": self.crv, "kty": "EC", "x": self.x, "y": self.y
            }),
            "RSA" => serde_json::json!({ "e": self.e, "kty": "RSA", "n": self.n }),
            _ => return Err(JoseError::Malformed("key type is not EC or RSA")),
        };
        Ok(b64(&Sha256::digest(canonical.to_string().as_bytes())))
    }
}

/// Finds the key for a JWS among `keys`: by `kid` when the token names one, else the
/// only key that suits the algorithm.
pub fn select_key<'k>(
    keys: &'k [Jwk],
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<&'k Jwk, JoseError> {
    let kty = match alg {
        Algorithm::Es256 => "EC",
        Algorithm::Ps256 | Algorithm::Rs256 => "RSA",
    };
    let mut candidates = keys
        .iter()
        .filter(|k| k.kty == kty && k.key_use.as_deref().is_none_or(|u| u == "sig"))
        .filter(|k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)));
    match (candidates.next(), candidates.next()) {
        (Some(key), None) => Ok(key),
        _ => Err(JoseError::UnknownKey),
    }
}

/// `at_hash` (OpenID Connect Core 3.1.3.6): the left half of SHA-256 of the token.
pub fn half_hash(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    b64(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 section 3.1.
        let jwk = Jwk {
            kty: "RSA".into(),
            kid: None,
            key_use: None,
            alg: None,
            crv: None,
            x: None,
            y: None,
            n: Some("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into()),
            e: Some("AQAB".into()),
        };
        assert_eq!(
            jwk.thumbprint().expect("thumbprint"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn garbage_tokens_are_malformed() {
        for token in ["", "a.b", "a.b.c.d", "!!.e30.e30", "e30.bm90anNvbg.e30"] {
            assert!(Parsed::new(token).is_err(), "{token}");
        }
    }
}
