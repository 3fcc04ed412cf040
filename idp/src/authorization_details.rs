//! Rich authorization requests (RFC 9396) of the one type this provider knows:
//! `credential` (CSC API v2 8.4), a citizen's authorisation to sign given document
//! digests with one of their signing credentials at the remote signing service.
//!
//! A request carries at most one `credential` entry: one authorisation is one credential
//! and one use (its grant gets no refresh token). What is stored and echoed back (token
//! response, access token) is the validated entry only: the members named here, hashes
//! in standard padded base64; members this provider does not know are dropped.

use base64ct::{Base64, Base64Unpadded, Encoding};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::OAuthError;

/// The authorization details type of a signing authorisation.
pub const CREDENTIAL_TYPE: &str = "credential";

/// The most document digests one authorisation may carry.
pub const MAX_DOCUMENT_DIGESTS: usize = 100;
/// Longest `credentialID`, in characters.
const MAX_CREDENTIAL_ID_CHARS: usize = 128;
/// Longest document label, in characters.
const MAX_LABEL_CHARS: usize = 200;
/// The most `locations`, and the longest one.
const MAX_LOCATIONS: usize = 20;
const MAX_LOCATION_CHARS: usize = 2048;

/// A digest algorithm a signing authorisation may name (`hashAlgorithmOID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// SHA-256 (2.16.840.1.101.3.4.2.1).
    Sha256,
    /// SHA-384 (2.16.840.1.101.3.4.2.2).
    Sha384,
    /// SHA-512 (2.16.840.1.101.3.4.2.3).
    Sha512,
}

impl HashAlgorithm {
    /// The algorithm with this object identifier (dotted), if supported.
    pub fn from_oid(oid: &str) -> Option<Self> {
        match oid {
            "2.16.840.1.101.3.4.2.1" => Some(Self::Sha256),
            "2.16.840.1.101.3.4.2.2" => Some(Self::Sha384),
            "2.16.840.1.101.3.4.2.3" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// The algorithm's name (`SHA-256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "SHA-256",
            Self::Sha384 => "SHA-384",
            Self::Sha512 => "SHA-512",
        }
    }

    /// The length of its digests in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }
}

/// One document to be signed: its digest and, optionally, a label to show the citizen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentDigest {
    /// The digest, standard base64 with padding.
    pub hash: String,
    /// What the document is, as the client names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// A validated `credential` authorization detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialAuthorization {
    /// The signing credential at the remote signing service.
    #[serde(rename = "credentialID")]
    pub credential_id: String,
    /// The documents' digests.
    #[serde(rename = "documentDigests")]
    pub document_digests: Vec<DocumentDigest>,
    /// The digest algorithm's object identifier.
    #[serde(rename = "hashAlgorithmOID")]
    pub hash_algorithm_oid: String,
    /// Where the authorisation may be used (RFC 9396 2.2), when the client says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<String>,
}

impl CredentialAuthorization {
    /// The digest algorithm (validated when the detail was accepted).
    pub fn algorithm(&self) -> Option<HashAlgorithm> {
        HashAlgorithm::from_oid(&self.hash_algorithm_oid)
    }
}

/// One entry of `authorization_details`, tagged by its `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthorizationDetail {
    /// A signing authorisation (CSC API v2 8.4).
    Credential(CredentialAuthorization),
}

/// The signing authorisation among `details`, if any.
pub fn credential(details: &[AuthorizationDetail]) -> Option<&CredentialAuthorization> {
    details
        .iter()
        .map(|detail| match detail {
            AuthorizationDetail::Credential(credential) => credential,
        })
        .next()
}

/// The details as the JSON array echoed in token responses and access tokens.
pub fn to_json(details: &[AuthorizationDetail]) -> Value {
    serde_json::to_value(details).unwrap_or(Value::Null)
}

fn refuse(description: impl Into<String>) -> OAuthError {
    OAuthError::invalid_authorization_details(description)
}

/// Parses and validates the `authorization_details` parameter (RFC 9396 2, 5). Any
/// fault is `invalid_authorization_details` naming what is wrong.
pub fn parse(text: &str) -> Result<Vec<AuthorizationDetail>, OAuthError> {
    let value: Value = serde_json::from_str(text).map_err(|_| {
        refuse("authorization_details is not JSON; it must be a JSON array of objects (RFC 9396 2)")
    })?;
    let Value::Array(entries) = value else {
        return Err(refuse(
            "authorization_details must be a JSON array of objects (RFC 9396 2)",
        ));
    };
    if entries.is_empty() {
        return Err(refuse("authorization_details must not be an empty array"));
    }
    let mut details = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let Value::Object(entry) = entry else {
            return Err(refuse(format!(
                "authorization_details[{index}] is not a JSON object"
            )));
        };
        let kind = match entry.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            _ => {
                return Err(refuse(format!(
                    "authorization_details[{index}] has no `type` string"
                )));
            }
        };
        if kind != CREDENTIAL_TYPE {
            return Err(refuse(format!(
                "authorization_details type `{}` is not supported; the only supported type is \
                 `{CREDENTIAL_TYPE}`",
                kind.chars().take(64).collect::<String>()
            )));
        }
        if !details.is_empty() {
            return Err(refuse(
                "only one `credential` authorization detail is accepted per request \
                 (one authorisation, one credential)",
            ));
        }
        details.push(AuthorizationDetail::Credential(credential_entry(
            index, entry,
        )?));
    }
    Ok(details)
}

fn credential_entry(
    index: usize,
    entry: &Map<String, Value>,
) -> Result<CredentialAuthorization, OAuthError> {
    let at = |member: &str| format!("authorization_details[{index}].{member}");
    let credential_id = match entry.get("credentialID") {
        Some(Value::String(id)) => id,
        Some(_) => return Err(refuse(format!("{} must be a string", at("credentialID")))),
        None => {
            return Err(refuse(format!(
                "{} is required (CSC API v2 8.4)",
                at("credentialID")
            )));
        }
    };
    if credential_id.is_empty()
        || credential_id.chars().count() > MAX_CREDENTIAL_ID_CHARS
        || credential_id.chars().any(char::is_control)
    {
        return Err(refuse(format!(
            "{} must be 1 to {MAX_CREDENTIAL_ID_CHARS} printable characters",
            at("credentialID")
        )));
    }
    let algorithm = match entry.get("hashAlgorithmOID") {
        Some(Value::String(oid)) => HashAlgorithm::from_oid(oid).ok_or_else(|| {
            refuse(format!(
                "{} `{}` is not supported; use 2.16.840.1.101.3.4.2.1 (SHA-256), \
                 2.16.840.1.101.3.4.2.2 (SHA-384) or 2.16.840.1.101.3.4.2.3 (SHA-512)",
                at("hashAlgorithmOID"),
                oid.chars().take(64).collect::<String>()
            ))
        })?,
        Some(_) => {
            return Err(refuse(format!(
                "{} must be a string (a dotted object identifier)",
                at("hashAlgorithmOID")
            )));
        }
        None => {
            return Err(refuse(format!(
                "{} is required (CSC API v2 8.4)",
                at("hashAlgorithmOID")
            )));
        }
    };
    let digests = match entry.get("documentDigests") {
        Some(Value::Array(digests)) if !digests.is_empty() => digests,
        Some(Value::Array(_)) => {
            return Err(refuse(format!(
                "{} must not be empty",
                at("documentDigests")
            )));
        }
        Some(_) => {
            return Err(refuse(format!(
                "{} must be an array of {{hash, label}} objects",
                at("documentDigests")
            )));
        }
        None => {
            return Err(refuse(format!(
                "{} is required (CSC API v2 8.4)",
                at("documentDigests")
            )));
        }
    };
    if digests.len() > MAX_DOCUMENT_DIGESTS {
        return Err(refuse(format!(
            "{} has {} entries; at most {MAX_DOCUMENT_DIGESTS} are accepted",
            at("documentDigests"),
            digests.len()
        )));
    }
    let mut document_digests = Vec::with_capacity(digests.len());
    for (n, digest) in digests.iter().enumerate() {
        let here = at(&format!("documentDigests[{n}]"));
        let Value::Object(digest) = digest else {
            return Err(refuse(format!("{here} must be an object")));
        };
        let Some(Value::String(hash)) = digest.get("hash") else {
            return Err(refuse(format!(
                "{here}.hash is required and must be a string"
            )));
        };
        let bytes = decode_base64(hash)
            .ok_or_else(|| refuse(format!("{here}.hash is not base64 (standard or url-safe)")))?;
        if bytes.len() != algorithm.digest_len() {
            return Err(refuse(format!(
                "{here}.hash is {} bytes long; a {} digest is {}",
                bytes.len(),
                algorithm.name(),
                algorithm.digest_len()
            )));
        }
        let label = match digest.get("label") {
            None | Some(Value::Null) => None,
            Some(Value::String(label))
                if label.chars().count() <= MAX_LABEL_CHARS
                    && !label.chars().any(char::is_control) =>
            {
                Some(label.clone())
            }
            Some(_) => {
                return Err(refuse(format!(
                    "{here}.label must be a string of at most {MAX_LABEL_CHARS} printable \
                     characters"
                )));
            }
        };
        document_digests.push(DocumentDigest {
            hash: Base64::encode_string(&bytes),
            label,
        });
    }
    let locations = match entry.get("locations") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) if list.len() <= MAX_LOCATIONS => list
            .iter()
            .map(|location| match location {
                Value::String(s) if !s.is_empty() && s.chars().count() <= MAX_LOCATION_CHARS => {
                    Ok(s.clone())
                }
                _ => Err(refuse(format!(
                    "{} must hold non-empty strings of at most {MAX_LOCATION_CHARS} characters",
                    at("locations")
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(refuse(format!(
                "{} must be an array of at most {MAX_LOCATIONS} strings",
                at("locations")
            )));
        }
    };
    Ok(CredentialAuthorization {
        credential_id: credential_id.clone(),
        document_digests,
        hash_algorithm_oid: match algorithm {
            HashAlgorithm::Sha256 => "2.16.840.1.101.3.4.2.1",
            HashAlgorithm::Sha384 => "2.16.840.1.101.3.4.2.2",
            HashAlgorithm::Sha512 => "2.16.840.1.101.3.4.2.3",
        }
        .to_owned(),
        locations,
    })
}

/// Standard or url-safe base64, padded or not (one alphabet, canonical encoding).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let unpadded = text.trim_end_matches('=');
    let padding = text.len() - unpadded.len();
    if padding > 2 || (padding > 0 && !text.len().is_multiple_of(4)) {
        return None;
    }
    let url_safe = unpadded.contains(['-', '_']);
    if url_safe && unpadded.contains(['+', '/']) {
        return None;
    }
    let standard = if url_safe {
        unpadded.replace('-', "+").replace('_', "/")
    } else {
        unpadded.to_owned()
    };
    Base64Unpadded::decode_vec(&standard).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SHA256: &str = "2.16.840.1.101.3.4.2.1";

    fn credential_of(details: &[AuthorizationDetail]) -> &CredentialAuthorization {
        credential(details).unwrap()
    }

    fn detail(extra: Value) -> String {
        let mut entry = serde_json::json!({
            "type": "credential",
            "credentialID": "cred-1",
            "hashAlgorithmOID": SHA256,
            "documentDigests": [{ "hash": Base64::encode_string(&[7u8; 32]), "label": "Deed" }],
        });
        if let (Value::Object(entry), Value::Object(extra)) = (&mut entry, extra) {
            entry.extend(extra);
        }
        Value::Array(vec![entry]).to_string()
    }

    #[test]
    fn a_credential_detail_is_normalised() {
        let url_safe = base64ct::Base64UrlUnpadded::encode_string(&[0xfb; 48]);
        let details = parse(&detail(serde_json::json!({
            "hashAlgorithmOID": "2.16.840.1.101.3.4.2.2",
            "documentDigests": [{ "hash": url_safe }, { "hash": Base64::encode_string(&[1; 48]) }],
            "locations": ["http://127.0.0.1:8082/csc/v2"],
            "unknown": { "kept": false },
        })))
        .unwrap();
        let credential = credential(&details).unwrap();
        assert_eq!(credential.credential_id, "cred-1");
        assert_eq!(credential.algorithm(), Some(HashAlgorithm::Sha384));
        assert_eq!(
            credential.document_digests[0].hash,
            Base64::encode_string(&[0xfb; 48])
        );
        // Unpadded url-safe SHA-256 comes back padded and standard.
        let sha256 = parse(&detail(serde_json::json!({
            "documentDigests": [{ "hash": base64ct::Base64UrlUnpadded::encode_string(&[0xff; 32]) }],
        })))
        .unwrap();
        let hash = &credential_of(&sha256).document_digests[0].hash;
        assert_eq!(hash, &Base64::encode_string(&[0xff; 32]));
        assert!(hash.ends_with('=') && hash.contains('/'), "{hash}");
        let echoed = to_json(&details);
        assert_eq!(echoed[0]["type"], "credential");
        assert_eq!(echoed[0]["credentialID"], "cred-1");
        assert!(echoed[0].get("unknown").is_none());
        assert!(echoed[0]["documentDigests"][0].get("label").is_none());
        // What is stored reads back the same.
        let back: Vec<AuthorizationDetail> = serde_json::from_value(echoed).unwrap();
        assert_eq!(back, details);
    }

    #[test]
    fn faults_are_named() {
        let two = {
            let one: Value = serde_json::from_str(&detail(Value::Null)).unwrap();
            Value::Array(vec![one[0].clone(), one[0].clone()]).to_string()
        };
        let cases = [
            ("not json".to_owned(), "not JSON"),
            ("{}".to_owned(), "must be a JSON array"),
            ("[]".to_owned(), "must not be an empty array"),
            ("[1]".to_owned(), "is not a JSON object"),
            (
                r#"[{"type":"payment"}]"#.to_owned(),
                "type `payment` is not supported",
            ),
            (r#"[{"kind":"credential"}]"#.to_owned(), "no `type` string"),
            (two, "only one `credential`"),
            (
                detail(serde_json::json!({ "credentialID": 7 })),
                "credentialID must be a string",
            ),
            (
                detail(serde_json::json!({ "credentialID": "" })),
                "1 to 128",
            ),
            (
                detail(serde_json::json!({ "hashAlgorithmOID": "1.2.840.113549.2.5" })),
                "`1.2.840.113549.2.5` is not supported",
            ),
            (
                detail(serde_json::json!({ "documentDigests": [] })),
                "documentDigests must not be empty",
            ),
            (
                detail(serde_json::json!({ "documentDigests": [{ "hash": "!!notbase64" }] })),
                "is not base64",
            ),
            (
                detail(serde_json::json!({
                    "documentDigests": [{ "hash": Base64::encode_string(&[1; 48]) }]
                })),
                "is 48 bytes long; a SHA-256 digest is 32",
            ),
            (
                detail(serde_json::json!({
                    "documentDigests": [{ "hash": Base64::encode_string(&[1; 32]), "label": 5 }]
                })),
                "label must be a string",
            ),
            (
                detail(serde_json::json!({ "locations": "here" })),
                "locations must be an array",
            ),
        ];
        for (text, says) in cases {
            let error = parse(&text).unwrap_err();
            assert_eq!(error.code, "invalid_authorization_details", "{text}");
            assert!(
                error.description.contains(says),
                "{text}: {}",
                error.description
            );
        }
        let missing: Value = serde_json::from_str(&detail(Value::Null)).unwrap();
        let mut entry = missing[0].clone();
        entry.as_object_mut().unwrap().remove("credentialID");
        let error = parse(&Value::Array(vec![entry]).to_string()).unwrap_err();
        assert!(error.description.contains("credentialID is required"));
    }

    #[test]
    fn base64_is_one_canonical_alphabet() {
        assert_eq!(decode_base64("AAEC").unwrap(), [0, 1, 2]);
        assert_eq!(decode_base64("-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(decode_base64("+/8=").unwrap(), [0xfb, 0xff]);
        assert!(decode_base64("+_8=").is_none());
        assert!(decode_base64("AAE==").is_none());
        assert!(decode_base64("A===").is_none());
    }
}
