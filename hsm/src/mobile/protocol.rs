//! The wire protocol of the operator's mobile signature gateway, modelled on MID REST
//! (SK ID Solutions' Mobile-ID REST API, itself shaped by ETSI TS 102 204): the relying
//! side starts a session with `POST /authentication` or `POST /signature`, then
//! long-polls `GET /{authentication,signature}/session/{id}?timeoutMs=`.
//!
//! The types here are shared by the client ([`super::MobileIdClient`]) and the SIM
//! gateway simulator, and [`StartRequest::validate`] holds the request rules both
//! sides apply.

use std::fmt;

use base64ct::{Base64, Encoding};
use serde::{Deserialize, Serialize};

use super::VerificationCode;

/// Authentication (PIN1, the authentication key) or signature (PIN2, the signing key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// `POST /authentication`: the SIM signs with its authentication key after PIN1.
    Authentication,
    /// `POST /signature`: the SIM signs with its signing key after PIN2.
    Signature,
}

impl Operation {
    /// The path segment: `authentication` or `signature`.
    pub fn path(self) -> &'static str {
        match self {
            Self::Authentication => "authentication",
            Self::Signature => "signature",
        }
    }

    /// How the phone's prompt ends: "Enter?" to log in, "Sign?" to sign.
    pub fn prompt(self) -> &'static str {
        match self {
            Self::Authentication => "Enter?",
            Self::Signature => "Sign?",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// The hash algorithm of the hash to be signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HashType {
    /// SHA-256 (32 bytes).
    #[serde(rename = "SHA256")]
    Sha256,
    /// SHA-384 (48 bytes).
    #[serde(rename = "SHA384")]
    Sha384,
    /// SHA-512 (64 bytes).
    #[serde(rename = "SHA512")]
    Sha512,
}

impl HashType {
    /// The hash's length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// The wire name: `SHA256`, `SHA384`, `SHA512`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "SHA256",
            Self::Sha384 => "SHA384",
            Self::Sha512 => "SHA512",
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

/// The language of the phone's dialogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Language {
    /// English.
    Eng,
    /// Estonian.
    Est,
    /// Russian.
    Rus,
    /// Lithuanian.
    Lit,
}

/// How `displayText` is encoded for the SIM: GSM 03.38 7-bit (40 characters, at most
/// 5 of them from the extension table) or UCS-2 (20 characters). Both fill the same
/// 40 bytes of the SIM's display message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum DisplayTextFormat {
    /// The GSM 7-bit default alphabet (the default).
    #[default]
    #[serde(rename = "GSM-7")]
    Gsm7,
    /// UCS-2: any character of the Basic Multilingual Plane.
    #[serde(rename = "UCS-2")]
    Ucs2,
}

impl DisplayTextFormat {
    /// The most characters a display text in this format may have.
    pub fn max_chars(self) -> usize {
        match self {
            Self::Gsm7 => 40,
            Self::Ucs2 => 20,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Gsm7 => "GSM-7",
            Self::Ucs2 => "UCS-2",
        }
    }
}

/// The GSM 03.38 default alphabet (basic table).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The GSM 03.38 extension table (each takes an escape plus the character).
const GSM7_EXTENSION: &str = "€[]^|{}\\~\u{c}";
/// At most this many extension characters (MID REST's rule).
const GSM7_MAX_EXTENSION: usize = 5;

/// Checks a display text against its format's rules; returns the text unchanged.
pub fn check_display_text(text: &str, format: DisplayTextFormat) -> Result<(), ProtocolError> {
    let chars = text.chars().count();
    if chars > format.max_chars() {
        return Err(ProtocolError::DisplayTextTooLong {
            format: format.name(),
            max: format.max_chars(),
            chars,
        });
    }
    match format {
        DisplayTextFormat::Gsm7 => {
            let mut extension = 0;
            for c in text.chars() {
                if GSM7_EXTENSION.contains(c) {
                    extension += 1;
                } else if !GSM7_BASIC.contains(c) {
                    return Err(ProtocolError::DisplayTextCharacter {
                        character: c,
                        format: format.name(),
                    });
                }
            }
            if extension > GSM7_MAX_EXTENSION {
                return Err(ProtocolError::DisplayTextTooLong {
                    format: "GSM-7 extension characters (€[]^|{}\\~)",
                    max: GSM7_MAX_EXTENSION,
                    chars: extension,
                });
            }
        }
        DisplayTextFormat::Ucs2 => {
            if let Some(c) = text.chars().find(|c| u32::from(*c) > 0xffff) {
                return Err(ProtocolError::DisplayTextCharacter {
                    character: c,
                    format: format.name(),
                });
            }
        }
    }
    Ok(())
}

/// `POST /authentication` and `POST /signature`: the relying side starts a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartRequest {
    /// The relying party's identifier, agreed with the operator (8-4-4-4-12 hex).
    #[serde(rename = "relyingPartyUUID")]
    pub relying_party_uuid: String,
    /// The relying party's name, shown on the phone.
    pub relying_party_name: String,
    /// The citizen's phone number, `+` and the country code, e.g. `+18685550123`.
    pub phone_number: String,
    /// The citizen's national identity number.
    pub national_identity_number: String,
    /// The hash to be signed, base64.
    pub hash: String,
    /// The hash's algorithm.
    pub hash_type: HashType,
    /// The phone dialogue's language.
    pub language: Language,
    /// Shown on the phone with the relying party's name and the verification code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_text: Option<String>,
    /// How `display_text` is encoded (GSM-7 unless said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_text_format: Option<DisplayTextFormat>,
}

/// A [`StartRequest`] that passed [`StartRequest::validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedStart {
    /// The hash bytes.
    pub hash: Vec<u8>,
    /// The verification code of the hash.
    pub verification_code: VerificationCode,
}

fn is_relying_party_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The identifiers every request names: the relying party's UUID and name, the
/// citizen's phone number and national identity number.
fn check_parties(
    uuid: &str,
    name: &str,
    phone: &str,
    national_id: &str,
) -> Result<(), ProtocolError> {
    if !is_relying_party_uuid(uuid) {
        return Err(ProtocolError::RelyingPartyUuid);
    }
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ProtocolError::RelyingPartyName);
    }
    check_phone_number(phone)?;
    check_national_identity_number(national_id)
}

/// Checks a phone number: `+`, then 8 to 15 digits (E.164).
pub fn check_phone_number(phone: &str) -> Result<(), ProtocolError> {
    let digits = phone.strip_prefix('+').unwrap_or("");
    if (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(ProtocolError::PhoneNumber)
    }
}

/// Checks a national identity number: 1 to 20 letters and digits.
pub fn check_national_identity_number(id: &str) -> Result<(), ProtocolError> {
    if (1..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(ProtocolError::NationalIdentityNumber)
    }
}

impl StartRequest {
    /// Applies the protocol's rules: identifiers well-formed, the hash base64 and as
    /// long as its type says, the display text within its format's limits.
    pub fn validate(&self) -> Result<CheckedStart, ProtocolError> {
        check_parties(
            &self.relying_party_uuid,
            &self.relying_party_name,
            &self.phone_number,
            &self.national_identity_number,
        )?;
        let hash = Base64::decode_vec(&self.hash).map_err(|_| ProtocolError::HashNotBase64)?;
        if hash.len() != self.hash_type.digest_len() {
            return Err(ProtocolError::HashLength {
                hash_type: self.hash_type.name(),
                expected: self.hash_type.digest_len(),
                actual: hash.len(),
            });
        }
        if let Some(text) = &self.display_text {
            check_display_text(text, self.display_text_format.unwrap_or_default())?;
        }
        let verification_code = VerificationCode::of(&hash);
        Ok(CheckedStart {
            hash,
            verification_code,
        })
    }
}

/// `POST /certificate`: the relying side asks for the signing certificate of a
/// citizen's mobile ID (before a signature, to build what is to be signed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequest {
    /// The relying party's identifier.
    #[serde(rename = "relyingPartyUUID")]
    pub relying_party_uuid: String,
    /// The relying party's name.
    pub relying_party_name: String,
    /// The citizen's phone number.
    pub phone_number: String,
    /// The citizen's national identity number.
    pub national_identity_number: String,
}

impl CertificateRequest {
    /// The same identifier rules as a session start.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        check_parties(
            &self.relying_party_uuid,
            &self.relying_party_name,
            &self.phone_number,
            &self.national_identity_number,
        )
    }
}

/// The answer to [`CertificateRequest`]: `OK` with the DER certificate in base64, or
/// `NOT_FOUND` (no active mobile ID for that phone and national identity number).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateResponse {
    /// `OK` or `NOT_FOUND`.
    pub result: String,
    /// The signing certificate, base64 DER, with `OK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
}

/// The answer to a started session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStarted {
    /// The session to poll.
    #[serde(rename = "sessionID")]
    pub session_id: String,
}

/// Where a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SessionState {
    /// Waiting for the phone.
    Running,
    /// Finished: `result` says how.
    Complete,
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResultCode {
    /// The SIM signed.
    Ok,
    /// The citizen did not answer in time.
    Timeout,
    /// No mobile ID for this phone number and national identity number.
    NotMidClient,
    /// The citizen cancelled on the phone.
    UserCancelled,
    /// The signature did not verify against the hash.
    SignatureHashMismatch,
    /// The phone is off or out of reach.
    PhoneAbsent,
    /// The message could not be delivered to the phone.
    DeliveryError,
    /// The SIM failed or refused (in the simulator: a blocked PIN).
    SimError,
}

impl ResultCode {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Timeout => "TIMEOUT",
            Self::NotMidClient => "NOT_MID_CLIENT",
            Self::UserCancelled => "USER_CANCELLED",
            Self::SignatureHashMismatch => "SIGNATURE_HASH_MISMATCH",
            Self::PhoneAbsent => "PHONE_ABSENT",
            Self::DeliveryError => "DELIVERY_ERROR",
            Self::SimError => "SIM_ERROR",
        }
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The signature in a completed session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureValue {
    /// The signature, base64: DER `ECDSA-Sig-Value` for EC keys, PKCS#1 v1.5 for RSA.
    pub value: String,
    /// E.g. `SHA256WithECEncryption`, `sha256WithRSAEncryption`.
    pub algorithm: String,
}

/// `GET …/session/{id}`: where the session is, and its result once complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    /// Running or complete.
    pub state: SessionState,
    /// How it ended, once complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultCode>,
    /// The signature, when the result is OK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureValue>,
    /// The certificate of the key that signed (DER, base64), when the result is OK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
}

/// The body of a 4xx or 5xx answer: for the developer, never for the citizen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What was wrong with the call.
    pub error: String,
}

/// The signature algorithm name a gateway reports for a key and hash.
pub fn signature_algorithm_name(ec: bool, hash_type: HashType) -> String {
    let bits = &hash_type.name()[3..];
    if ec {
        format!("SHA{bits}WithECEncryption")
    } else {
        format!("sha{bits}WithRSAEncryption")
    }
}

/// A start request the protocol refuses (answered with 400 and this message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// relyingPartyUUID is not 8-4-4-4-12 hexadecimal.
    #[error("relyingPartyUUID must be a UUID in 8-4-4-4-12 hexadecimal form")]
    RelyingPartyUuid,
    /// relyingPartyName is empty, too long or has control characters.
    #[error("relyingPartyName must be 1 to 100 printable characters")]
    RelyingPartyName,
    /// phoneNumber is not `+` and 8 to 15 digits.
    #[error("phoneNumber must be + and the country code and number, 8 to 15 digits")]
    PhoneNumber,
    /// nationalIdentityNumber is not 1 to 20 letters and digits.
    #[error("nationalIdentityNumber must be 1 to 20 letters and digits")]
    NationalIdentityNumber,
    /// hash is not base64.
    #[error("Hash must be Base64 encoded")]
    HashNotBase64,
    /// hash does not have the length of its type.
    #[error(
        "The length of the hash must match the type of hash: {hash_type} is {expected} bytes, the hash has {actual}"
    )]
    HashLength {
        /// The declared type.
        hash_type: &'static str,
        /// Its length.
        expected: usize,
        /// The hash's length.
        actual: usize,
    },
    /// displayText is longer than its format allows.
    #[error("displayText is too long: {format} allows at most {max} characters, this has {chars}")]
    DisplayTextTooLong {
        /// The format (or the part of it) whose limit was passed.
        format: &'static str,
        /// The limit.
        max: usize,
        /// The text's count.
        chars: usize,
    },
    /// displayText has a character its format cannot carry.
    #[error(
        "displayText has {character:?}, which {format} cannot carry (use displayTextFormat UCS-2, or leave it out)"
    )]
    DisplayTextCharacter {
        /// The character.
        character: char,
        /// The format.
        format: &'static str,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn request() -> StartRequest {
        StartRequest {
            relying_party_uuid: "00000000-0000-0000-0000-000000000000".into(),
            relying_party_name: "DEMO".into(),
            phone_number: "+18685550123".into(),
            national_identity_number: "38412319871".into(),
            hash: Base64::encode_string(&[7u8; 32]),
            hash_type: HashType::Sha256,
            language: Language::Eng,
            display_text: Some("This is display text.".into()),
            display_text_format: None,
        }
    }

    #[test]
    fn wire_names_follow_mid_rest() {
        let json = serde_json::to_value(request()).unwrap();
        for key in [
            "relyingPartyUUID",
            "relyingPartyName",
            "phoneNumber",
            "nationalIdentityNumber",
            "hash",
            "hashType",
            "language",
            "displayText",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
        assert_eq!(json["hashType"], "SHA256");
        assert_eq!(json["language"], "ENG");
        let status: SessionStatus = serde_json::from_str(
            r#"{"state":"COMPLETE","result":"NOT_MID_CLIENT","time":"2019-07-23T11:36:16"}"#,
        )
        .unwrap();
        assert_eq!(status.result, Some(ResultCode::NotMidClient));
        assert_eq!(
            serde_json::to_value(ResultCode::SignatureHashMismatch).unwrap(),
            "SIGNATURE_HASH_MISMATCH"
        );
        assert_eq!(
            signature_algorithm_name(true, HashType::Sha384),
            "SHA384WithECEncryption"
        );
    }

    #[test]
    fn requests_are_checked() {
        assert!(request().validate().is_ok());
        let mut r = request();
        r.hash_type = HashType::Sha512;
        assert!(matches!(
            r.validate(),
            Err(ProtocolError::HashLength {
                expected: 64,
                actual: 32,
                ..
            })
        ));
        let mut r = request();
        r.hash = "not base64!".into();
        assert_eq!(r.validate(), Err(ProtocolError::HashNotBase64));
        let mut r = request();
        r.phone_number = "5550123".into();
        assert_eq!(r.validate(), Err(ProtocolError::PhoneNumber));
        let mut r = request();
        r.relying_party_uuid = "de305d54-75b4-431b-adb2".into();
        assert_eq!(r.validate(), Err(ProtocolError::RelyingPartyUuid));
    }

    #[test]
    fn display_text_limits() {
        let gsm = DisplayTextFormat::Gsm7;
        let ucs = DisplayTextFormat::Ucs2;
        assert!(check_display_text(&"a".repeat(40), gsm).is_ok());
        assert!(matches!(
            check_display_text(&"a".repeat(41), gsm),
            Err(ProtocolError::DisplayTextTooLong {
                max: 40,
                chars: 41,
                ..
            })
        ));
        assert!(check_display_text("Pay €5 [ref]", gsm).is_ok());
        assert!(matches!(
            check_display_text("{[€]}|", gsm),
            Err(ProtocolError::DisplayTextTooLong {
                max: 5,
                chars: 6,
                ..
            })
        ));
        assert!(matches!(
            check_display_text("Žmogus", gsm),
            Err(ProtocolError::DisplayTextCharacter {
                character: 'Ž', ..
            })
        ));
        assert!(check_display_text("Žmogus ąčę Привет", ucs).is_ok());
        assert!(matches!(
            check_display_text(&"ж".repeat(21), ucs),
            Err(ProtocolError::DisplayTextTooLong {
                max: 20,
                chars: 21,
                ..
            })
        ));
        assert!(check_display_text("🙂", ucs).is_err());
    }
}
