//! OCSP (RFC 6960) as RFC 5019's lightweight profile constrains it: parse a request,
//! sign a response, encode an error. Pure protocol functions: the HTTP handler and the
//! revocation store that decide *what* to answer live elsewhere.
//!
//! A responder answers with [`sign_response`] for one or more [`ResponseEntry`]s. Without
//! a nonce the result can be cached and served to every client asking about the same
//! certificate (RFC 5019 §2.2.1 pre-production); with a nonce it is signed on demand.

pub mod asn1;
pub mod client;

use std::time::Duration;

use der::{
    Decode, Encode, Reader,
    asn1::{BitString, GeneralizedTime, Null, ObjectIdentifier, OctetString, Uint},
    referenced::OwnedToRef,
};
use eid_hsm::{HsmError, KeySigner};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoRef};
use time::OffsetDateTime;
use x509_cert::{Certificate, ext::Extension};

use self::asn1::{
    BasicOcspResponse, CertId, CertStatus, ID_PKIX_OCSP_BASIC, ID_PKIX_OCSP_NONCE, OcspRequest,
    OcspResponse, OcspResponseStatus, ResponderId, ResponseBytes, ResponseData, RevokedInfo,
    SingleResponse, Version,
};
use crate::reason::ReasonCode;

/// The largest request body (POST) or decoded GET request accepted, in octets.
///
/// An RFC 5019 request names one certificate and carries at most a nonce: about 120
/// octets with SHA-1 CertIDs. 4 KiB leaves room for a few CertIDs and a small signed
/// request while refusing bodies that only cost parsing time.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// RFC 8954 §2.1: a nonce is 1 to 32 octets.
const MAX_NONCE_BYTES: usize = 32;

const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");

/// Why an OCSP request could not be answered, or a response could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OcspError {
    /// The request is larger than [`MAX_REQUEST_BYTES`].
    #[error("OCSP request is {size} octets, more than the {limit} accepted")]
    RequestTooLarge {
        /// The request's size (or a lower bound for an encoded GET path).
        size: usize,
        /// [`MAX_REQUEST_BYTES`].
        limit: usize,
    },
    /// The request is not a DER `OCSPRequest`.
    #[error("OCSP request is not a DER OCSPRequest: {0}")]
    MalformedRequest(der::Error),
    /// Octets follow the `OCSPRequest`.
    #[error("OCSP request has {count} octets after the OCSPRequest")]
    TrailingData {
        /// How many.
        count: usize,
    },
    /// The request's `requestList` is empty.
    #[error("OCSP request names no certificate (empty requestList)")]
    EmptyRequestList,
    /// A `CertID` uses a hash other than SHA-1 or SHA-256. Answered `malformedRequest`:
    /// RFC 6960 has no status for "unsupported algorithm" and `unauthorized` would mislead.
    #[error("OCSP CertID hash algorithm {oid} is not supported (SHA-1 or SHA-256)")]
    UnsupportedHashAlgorithm {
        /// The algorithm asked for.
        oid: ObjectIdentifier,
    },
    /// A `CertID` hash does not have its algorithm's length.
    #[error("OCSP CertID {field} is {len} octets, but {hash} gives {expected}")]
    CertIdHashLength {
        /// `issuerNameHash` or `issuerKeyHash`.
        field: &'static str,
        /// The algorithm named.
        hash: CertIdHash,
        /// The length found.
        len: usize,
        /// The algorithm's output length.
        expected: usize,
    },
    /// The nonce extension appears more than once.
    #[error("OCSP request carries the nonce extension more than once")]
    DuplicateNonce,
    /// A critical extension this responder does not understand (RFC 6960 §4.4: only
    /// unrecognised non-critical extensions may be ignored).
    #[error("OCSP request carries a critical extension {oid} this responder does not support")]
    UnsupportedCriticalExtension {
        /// The extension.
        oid: ObjectIdentifier,
    },
    /// The nonce is empty or longer than RFC 8954 allows.
    #[error("OCSP nonce is {len} octets; RFC 8954 allows 1 to 32")]
    NonceLength {
        /// The nonce's length.
        len: usize,
    },
    /// A GET request's path segment is not URL-encoded base64.
    #[error("OCSP GET path is not URL-encoded base64: {detail}")]
    GetEncoding {
        /// What is wrong with it.
        detail: String,
    },
    /// [`sign_response`] was given no entries.
    #[error("OCSP response needs at least one SingleResponse")]
    NoEntries,
    /// An entry's `nextUpdate` is not after its `thisUpdate`.
    #[error("OCSP response nextUpdate {next_update} is not after thisUpdate {this_update}")]
    UpdateOrder {
        /// The entry's `thisUpdate`.
        this_update: OffsetDateTime,
        /// The entry's `nextUpdate`.
        next_update: OffsetDateTime,
    },
    /// A time cannot be a GeneralizedTime (before 1970 or after 9999).
    #[error("OCSP {what} {time} cannot be encoded as a GeneralizedTime")]
    TimeOutOfRange {
        /// Which time.
        what: &'static str,
        /// Its value.
        time: OffsetDateTime,
    },
    /// The signer's key is not the responder certificate's key: the response would not verify.
    #[error("OCSP responder key `{label}` is not the key certified by the responder certificate")]
    ResponderKeyMismatch {
        /// The signer's key label.
        label: String,
    },
    /// Encoding part of a response failed.
    #[error("encoding OCSP {what} failed: {source}")]
    Encoding {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        source: der::Error,
    },
    /// The key layer could not sign the response.
    #[error("signing the OCSP response failed: {0}")]
    Signing(#[source] HsmError),
}

impl OcspError {
    /// The status to answer with (RFC 6960 §2.3): the request's faults are
    /// `malformedRequest`, the responder's own are `internalError`.
    pub fn response_status(&self) -> ErrorStatus {
        match self {
            Self::RequestTooLarge { .. }
            | Self::MalformedRequest(_)
            | Self::TrailingData { .. }
            | Self::EmptyRequestList
            | Self::UnsupportedHashAlgorithm { .. }
            | Self::CertIdHashLength { .. }
            | Self::DuplicateNonce
            | Self::UnsupportedCriticalExtension { .. }
            | Self::NonceLength { .. }
            | Self::GetEncoding { .. } => ErrorStatus::MalformedRequest,
            Self::NoEntries
            | Self::UpdateOrder { .. }
            | Self::TimeOutOfRange { .. }
            | Self::ResponderKeyMismatch { .. }
            | Self::Encoding { .. }
            | Self::Signing(_) => ErrorStatus::InternalError,
        }
    }
}

/// The unsuccessful `OCSPResponseStatus` values: an error response carries no
/// `responseBytes`, so `successful` has no place here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorStatus {
    /// `malformedRequest` (1): the request does not conform to the OCSP syntax.
    MalformedRequest,
    /// `internalError` (2): the responder reached an inconsistent state.
    InternalError,
    /// `tryLater` (3): the responder cannot answer now (e.g. revocation data unavailable).
    TryLater,
    /// `sigRequired` (5): the request must be signed.
    SigRequired,
    /// `unauthorized` (6): this responder does not answer for that issuer.
    Unauthorized,
}

impl ErrorStatus {
    fn to_asn1(self) -> OcspResponseStatus {
        match self {
            Self::MalformedRequest => OcspResponseStatus::MalformedRequest,
            Self::InternalError => OcspResponseStatus::InternalError,
            Self::TryLater => OcspResponseStatus::TryLater,
            Self::SigRequired => OcspResponseStatus::SigRequired,
            Self::Unauthorized => OcspResponseStatus::Unauthorized,
        }
    }
}

/// An unsigned `OCSPResponse` with only a status.
pub fn error_response(status: ErrorStatus) -> Vec<u8> {
    // SEQUENCE { ENUMERATED status }: built by hand because it is five fixed octets
    // and so cannot fail, unlike a general DER encoder call.
    vec![0x30, 0x03, 0x0A, 0x01, status.to_asn1() as u8]
}

/// The hash a `CertID` is computed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertIdHash {
    /// SHA-1: what RFC 5019 clients (and openssl by default) send.
    Sha1,
    /// SHA-256.
    Sha256,
}

impl CertIdHash {
    fn from_oid(oid: ObjectIdentifier) -> Option<Self> {
        match oid {
            ID_SHA1 => Some(Self::Sha1),
            ID_SHA256 => Some(Self::Sha256),
            _ => None,
        }
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            Self::Sha1 => ID_SHA1,
            Self::Sha256 => ID_SHA256,
        }
    }

    /// The digest length in octets.
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => Sha1::digest(data).to_vec(),
            Self::Sha256 => Sha256::digest(data).to_vec(),
        }
    }
}

impl std::fmt::Display for CertIdHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sha1 => "SHA-1",
            Self::Sha256 => "SHA-256",
        })
    }
}

pub use crate::CertificateSerial;

/// A `CertID`, decoded: which certificate of which issuer a request asks about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CertIdKey {
    /// The hash both issuer hashes use.
    pub hash: CertIdHash,
    /// Hash of the DER of the issuer's subject name.
    pub issuer_name_hash: Vec<u8>,
    /// Hash of the issuer's subjectPublicKey contents.
    pub issuer_key_hash: Vec<u8>,
    /// The certificate's serial number.
    pub serial: CertificateSerial,
}

impl CertIdKey {
    fn from_asn1(cert_id: &CertId) -> Result<Self, OcspError> {
        let oid = cert_id.hash_algorithm.oid;
        let hash = CertIdHash::from_oid(oid).ok_or(OcspError::UnsupportedHashAlgorithm { oid })?;
        let check = |field: &'static str, value: &OctetString| {
            let len = value.as_bytes().len();
            if len == hash.output_len() {
                Ok(value.as_bytes().to_vec())
            } else {
                Err(OcspError::CertIdHashLength {
                    field,
                    hash,
                    len,
                    expected: hash.output_len(),
                })
            }
        };
        Ok(Self {
            hash,
            issuer_name_hash: check("issuerNameHash", &cert_id.issuer_name_hash)?,
            issuer_key_hash: check("issuerKeyHash", &cert_id.issuer_key_hash)?,
            serial: CertificateSerial::from_be_bytes(cert_id.serial_number.as_bytes()),
        })
    }

    fn to_asn1(&self) -> Result<CertId, OcspError> {
        let encoding = |source| OcspError::Encoding {
            what: "CertID",
            source,
        };
        Ok(CertId {
            // Parameters NULL, as openssl and most clients send them; matching clients
            // compare the algorithm OID and the hashes (RFC 6960 §4.1.1).
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: self.hash.oid(),
                parameters: Some(Null.into()),
            },
            issuer_name_hash: OctetString::new(self.issuer_name_hash.as_slice())
                .map_err(encoding)?,
            issuer_key_hash: OctetString::new(self.issuer_key_hash.as_slice()).map_err(encoding)?,
            serial_number: Uint::new(self.serial.as_bytes()).map_err(encoding)?,
        })
    }
}

/// The CertID hashes of one issuer, in both supported algorithms, to recognise which
/// requests are for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerHashes {
    sha1_name: Vec<u8>,
    sha1_key: Vec<u8>,
    sha256_name: Vec<u8>,
    sha256_key: Vec<u8>,
}

impl IssuerHashes {
    /// Hashes `issuer`'s subject name (DER) and subjectPublicKey (the BIT STRING's
    /// contents, without tag, length or unused-bits octet), per RFC 6960 §4.1.1.
    pub fn new(issuer: &Certificate) -> Result<Self, OcspError> {
        let name = issuer
            .tbs_certificate()
            .subject()
            .to_der()
            .map_err(|source| OcspError::Encoding {
                what: "issuer name for CertID",
                source,
            })?;
        let key = subject_public_key_bytes(
            issuer
                .tbs_certificate()
                .subject_public_key_info()
                .owned_to_ref(),
        );
        Ok(Self {
            sha1_name: CertIdHash::Sha1.digest(&name),
            sha1_key: CertIdHash::Sha1.digest(key),
            sha256_name: CertIdHash::Sha256.digest(&name),
            sha256_key: CertIdHash::Sha256.digest(key),
        })
    }

    /// Whether `id` names a certificate of this issuer.
    pub fn matches(&self, id: &CertIdKey) -> bool {
        let (name, key) = self.hashes(id.hash);
        id.issuer_name_hash == name && id.issuer_key_hash == key
    }

    /// The CertID of this issuer's certificate `serial`, e.g. to pre-produce responses.
    pub fn cert_id(&self, hash: CertIdHash, serial: CertificateSerial) -> CertIdKey {
        let (name, key) = self.hashes(hash);
        CertIdKey {
            hash,
            issuer_name_hash: name.to_vec(),
            issuer_key_hash: key.to_vec(),
            serial,
        }
    }

    fn hashes(&self, hash: CertIdHash) -> (&[u8], &[u8]) {
        match hash {
            CertIdHash::Sha1 => (&self.sha1_name, &self.sha1_key),
            CertIdHash::Sha256 => (&self.sha256_name, &self.sha256_key),
        }
    }
}

fn subject_public_key_bytes<'a>(spki: SubjectPublicKeyInfoRef<'a>) -> &'a [u8] {
    spki.subject_public_key.raw_bytes()
}

/// A decoded request: the certificates asked about and the nonce to echo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedRequest {
    /// One CertID per `Request` in the `requestList`, in order (never empty).
    pub certs: Vec<CertIdKey>,
    /// The nonce extension's `extnValue` exactly as received, to hand unchanged to
    /// [`sign_response`]. RFC 8954 wraps the nonce in an OCTET STRING inside the
    /// extension's OCTET STRING (openssl 3 sends that); older clients send it bare.
    pub nonce: Option<Vec<u8>>,
}

/// The request extensions this responder acts on: the nonce (echoed), and acceptable
/// response types (it answers only with the basic type, which RFC 6960 §4.2.1 makes
/// mandatory to accept).
const UNDERSTOOD: [ObjectIdentifier; 2] = [
    ID_PKIX_OCSP_NONCE,
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.4"),
];

/// Decodes an RFC 6960 `OCSPRequest` (a POST body, or a GET path after
/// [`parse_get_path`]). A request signature, if any, is not checked: RFC 5019
/// responders do not require one (and answer anyone). A critical extension it does
/// not understand makes the request malformed; others are ignored.
pub fn parse_request(der: &[u8]) -> Result<ParsedRequest, OcspError> {
    if der.len() > MAX_REQUEST_BYTES {
        return Err(OcspError::RequestTooLarge {
            size: der.len(),
            limit: MAX_REQUEST_BYTES,
        });
    }
    let mut reader = der::SliceReader::new(der).map_err(OcspError::MalformedRequest)?;
    let request = OcspRequest::decode(&mut reader).map_err(OcspError::MalformedRequest)?;
    if !reader.is_finished() {
        let consumed = usize::try_from(reader.position()).unwrap_or(der.len());
        return Err(OcspError::TrailingData {
            count: der.len().saturating_sub(consumed),
        });
    }

    let tbs = request.tbs_request;
    if tbs.request_list.is_empty() {
        return Err(OcspError::EmptyRequestList);
    }
    let certs = tbs
        .request_list
        .iter()
        .map(|request| CertIdKey::from_asn1(&request.req_cert))
        .collect::<Result<Vec<_>, _>>()?;

    let per_certificate = tbs
        .request_list
        .iter()
        .flat_map(|request| request.single_request_extensions.iter().flatten());
    if let Some(unknown) = tbs
        .request_extensions
        .iter()
        .flatten()
        .chain(per_certificate)
        .find(|extension| extension.critical && !UNDERSTOOD.contains(&extension.extn_id))
    {
        return Err(OcspError::UnsupportedCriticalExtension {
            oid: unknown.extn_id,
        });
    }
    let mut nonces = tbs
        .request_extensions
        .iter()
        .flatten()
        .filter(|extension| extension.extn_id == ID_PKIX_OCSP_NONCE);
    let nonce = nonces.next();
    if nonces.next().is_some() {
        return Err(OcspError::DuplicateNonce);
    }
    let nonce = nonce
        .map(|extension| {
            let value = extension.extn_value.as_bytes();
            let len = nonce_len(value);
            if (1..=MAX_NONCE_BYTES).contains(&len) {
                Ok(value.to_vec())
            } else {
                Err(OcspError::NonceLength { len })
            }
        })
        .transpose()?;

    Ok(ParsedRequest { certs, nonce })
}

/// The length of the nonce proper: the inner OCTET STRING's when the value is one
/// (RFC 8954), else the whole value's (the bare form).
fn nonce_len(value: &[u8]) -> usize {
    match OctetString::from_der(value) {
        Ok(inner) => inner.as_bytes().len(),
        Err(_) => value.len(),
    }
}

/// Decodes the last path segment of an RFC 5019 §5 GET request: the base64 of the DER
/// request, URL-encoded. Percent escapes are decoded first (so both `%2B%2F%3D` and raw
/// `+`/`/`/`=` work, and a segment the router already decoded passes unchanged); then
/// standard base64, with or without padding. The DER is then for [`parse_request`].
pub fn parse_get_path(path_segment: &str) -> Result<Vec<u8>, OcspError> {
    // Every request octet takes at most 4/3 base64 characters, each at most 3 URL
    // characters: refuse longer segments before decoding anything.
    let limit = (MAX_REQUEST_BYTES.div_ceil(3) * 4) * 3;
    if path_segment.len() > limit {
        return Err(OcspError::RequestTooLarge {
            size: path_segment.len() / 4,
            limit: MAX_REQUEST_BYTES,
        });
    }
    let base64 = percent_decode(path_segment.as_bytes())?;
    let der = base64_decode(&base64)?;
    if der.len() > MAX_REQUEST_BYTES {
        return Err(OcspError::RequestTooLarge {
            size: der.len(),
            limit: MAX_REQUEST_BYTES,
        });
    }
    Ok(der)
}

fn get_error(detail: impl Into<String>) -> OcspError {
    OcspError::GetEncoding {
        detail: detail.into(),
    }
}

fn percent_decode(input: &[u8]) -> Result<Vec<u8>, OcspError> {
    let mut out = Vec::with_capacity(input.len());
    let mut rest = input;
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let (hex, tail) = tail
                .split_at_checked(2)
                .ok_or_else(|| get_error("truncated percent escape"))?;
            let mut byte = [0u8; 1];
            hex::decode_to_slice(hex, &mut byte)
                .map_err(|_| get_error("percent escape is not two hex digits"))?;
            out.push(byte[0]);
            rest = tail;
        } else {
            out.push(first);
            rest = tail;
        }
    }
    Ok(out)
}

fn base64_decode(input: &[u8]) -> Result<Vec<u8>, OcspError> {
    let data = input
        .strip_suffix(b"==")
        .or_else(|| input.strip_suffix(b"="));
    let data = data.unwrap_or(input);
    if data.len() % 4 == 1 {
        return Err(get_error("base64 length is impossible"));
    }
    if input.len() != data.len() && !input.len().is_multiple_of(4) {
        return Err(get_error("base64 padding does not complete a quantum"));
    }
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 2);
    let mut accumulator: u32 = 0;
    let mut bits = 0u32;
    for &c in data {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => {
                return Err(get_error(format!(
                    "character {:?} is not base64",
                    char::from(c)
                )));
            }
        };
        // Only the last 14 bits are ever read; masking keeps the shift from growing.
        accumulator = ((accumulator << 6) | u32::from(value)) & 0x3FFF;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((accumulator >> bits) & 0xFF) as u8);
        }
    }
    // Leftover bits must be zero padding bits (canonical base64).
    if accumulator & ((1 << bits) - 1) != 0 {
        return Err(get_error("base64 has non-zero trailing bits"));
    }
    Ok(out)
}

/// A certificate's revocation status, as the responder's store knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Issued by this issuer and not revoked.
    Good,
    /// Revoked (or on hold, with [`ReasonCode::CertificateHold`]).
    Revoked {
        /// When.
        at: OffsetDateTime,
        /// Why; `None` or `Unspecified` leave `revocationReason` out, as RFC 5280 §5.3.1
        /// advises for `unspecified`.
        reason: Option<ReasonCode>,
    },
    /// Not a certificate this responder knows.
    Unknown,
}

/// One `SingleResponse` to sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseEntry {
    /// The CertID as the request named it (or as [`IssuerHashes::cert_id`] builds it).
    pub cert_id: CertIdKey,
    /// The status.
    pub status: Status,
    /// When the status was known correct.
    pub this_update: OffsetDateTime,
    /// When newer information will be available; RFC 5019 §2.2.4 asks for it.
    pub next_update: Option<OffsetDateTime>,
}

/// Signs a successful `BasicOCSPResponse` for `entries`, as a DER `OCSPResponse`.
///
/// The responder is named byKey (SHA-1 of its subjectPublicKey, RFC 5019 §2.2.3) and its
/// certificate goes in `certs` so clients can check the delegation. `nonce` is the
/// [`ParsedRequest::nonce`] to echo, copied into the response extension byte for byte.
pub fn sign_response(
    responder: &KeySigner,
    responder_cert: &Certificate,
    entries: &[ResponseEntry],
    nonce: Option<&[u8]>,
    produced_at: OffsetDateTime,
) -> Result<Vec<u8>, OcspError> {
    if entries.is_empty() {
        return Err(OcspError::NoEntries);
    }
    let certified_key = responder_cert.tbs_certificate().subject_public_key_info();
    if responder.public_key().spki() != certified_key {
        return Err(OcspError::ResponderKeyMismatch {
            label: responder.info().label.to_string(),
        });
    }
    let encoding = |what| move |source| OcspError::Encoding { what, source };

    let key_hash = Sha1::digest(subject_public_key_bytes(certified_key.owned_to_ref()));
    let responses = entries
        .iter()
        .map(single_response)
        .collect::<Result<Vec<_>, _>>()?;
    let response_extensions = nonce
        .map(|nonce| {
            Ok::<_, OcspError>(vec![Extension {
                extn_id: ID_PKIX_OCSP_NONCE,
                critical: false,
                extn_value: OctetString::new(nonce).map_err(encoding("nonce extension"))?,
            }])
        })
        .transpose()?;
    let data = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByKey(
            OctetString::new(key_hash.as_slice()).map_err(encoding("ResponderID"))?,
        ),
        produced_at: generalized_time("producedAt", produced_at)?,
        responses,
        response_extensions,
    };
    let tbs = data.to_der().map_err(encoding("ResponseData"))?;
    let signature = responder.sign(&tbs).map_err(OcspError::Signing)?;
    let signature_algorithm = responder
        .scheme()
        .algorithm_identifier()
        .map_err(OcspError::Signing)?;

    let basic = BasicOcspResponse {
        tbs_response_data: data,
        signature_algorithm,
        signature: BitString::from_bytes(signature.as_bytes())
            .map_err(encoding("response signature"))?,
        certs: Some(vec![responder_cert.clone()]),
    };
    let response = OcspResponse {
        response_status: OcspResponseStatus::Successful,
        response_bytes: Some(ResponseBytes {
            response_type: ID_PKIX_OCSP_BASIC,
            response: OctetString::new(basic.to_der().map_err(encoding("BasicOCSPResponse"))?)
                .map_err(encoding("responseBytes"))?,
        }),
    };
    response.to_der().map_err(encoding("OCSPResponse"))
}

fn single_response(entry: &ResponseEntry) -> Result<SingleResponse, OcspError> {
    if let Some(next_update) = entry.next_update
        && next_update <= entry.this_update
    {
        return Err(OcspError::UpdateOrder {
            this_update: entry.this_update,
            next_update,
        });
    }
    let cert_status = match entry.status {
        Status::Good => CertStatus::Good(Null),
        Status::Unknown => CertStatus::Unknown(Null),
        Status::Revoked { at, reason } => CertStatus::Revoked(RevokedInfo {
            revocation_time: generalized_time("revocationTime", at)?,
            revocation_reason: reason
                .filter(|reason| *reason != ReasonCode::Unspecified)
                .map(Into::into),
        }),
    };
    Ok(SingleResponse {
        cert_id: entry.cert_id.to_asn1()?,
        cert_status,
        this_update: generalized_time("thisUpdate", entry.this_update)?,
        next_update: entry
            .next_update
            .map(|time| generalized_time("nextUpdate", time))
            .transpose()?,
        single_extensions: None,
    })
}

/// Whole seconds, as RFC 5280 §4.1.2.5.2 wants GeneralizedTime (no fractions).
fn generalized_time(
    what: &'static str,
    time: OffsetDateTime,
) -> Result<GeneralizedTime, OcspError> {
    u64::try_from(time.unix_timestamp())
        .ok()
        .and_then(|seconds| GeneralizedTime::from_unix_duration(Duration::from_secs(seconds)).ok())
        .ok_or(OcspError::TimeOutOfRange { what, time })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn error_response_matches_the_der_encoder() {
        for status in [
            ErrorStatus::MalformedRequest,
            ErrorStatus::InternalError,
            ErrorStatus::TryLater,
            ErrorStatus::SigRequired,
            ErrorStatus::Unauthorized,
        ] {
            let expected = OcspResponse {
                response_status: status.to_asn1(),
                response_bytes: None,
            }
            .to_der()
            .unwrap();
            assert_eq!(error_response(status), expected);
        }
    }

    #[test]
    fn serial_drops_leading_zeros_but_keeps_zero() {
        assert_eq!(
            CertificateSerial::from_be_bytes(&[0, 0, 0x80]).as_bytes(),
            [0x80]
        );
        assert_eq!(CertificateSerial::from_be_bytes(&[0, 0]).as_bytes(), [0]);
        assert_eq!(CertificateSerial::from_be_bytes(&[]).as_bytes(), [0]);
        assert_eq!(
            CertificateSerial::from_be_bytes(&[1, 0]).to_string(),
            "0100"
        );
    }

    #[test]
    fn get_path_accepts_escaped_and_raw_base64() {
        // 0xFB 0xFF 0xBF encodes to "+/+/" in base64.
        let raw = [0xFBu8, 0xFF, 0xBF, 0x01];
        assert_eq!(parse_get_path("+/+/AQ==").unwrap(), raw);
        assert_eq!(parse_get_path("%2B%2F%2b%2fAQ%3D%3D").unwrap(), raw);
        assert_eq!(parse_get_path("+/+/AQ").unwrap(), raw);
        assert!(parse_get_path("+/+/AR==").is_err(), "non-zero padding bits");
        assert!(parse_get_path("%2").is_err());
        assert!(parse_get_path("%zz").is_err());
        assert!(parse_get_path("ab*d").is_err());
        assert!(parse_get_path("A").is_err());
        let huge = "A".repeat(MAX_REQUEST_BYTES * 2);
        assert!(matches!(
            parse_get_path(&huge),
            Err(OcspError::RequestTooLarge { .. })
        ));
    }

    #[test]
    fn request_faults_map_to_malformed_request() {
        for input in [&b""[..], b"\x30\x00", b"garbage", b"\x30\x03\x30\x01\x30"] {
            let error = parse_request(input).unwrap_err();
            assert_eq!(
                error.response_status(),
                ErrorStatus::MalformedRequest,
                "{error}"
            );
        }
    }

    #[test]
    fn unknown_critical_extensions_are_refused_and_others_ignored() {
        use der::asn1::{Null, OctetString, Uint};
        use spki::AlgorithmIdentifierOwned;
        use x509_cert::ext::Extension;
        let extension = |critical| Extension {
            extn_id: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.1"),
            critical,
            extn_value: OctetString::new([0x05, 0x00]).unwrap(),
        };
        let request = |global: Option<Extension>, single: Option<Extension>| {
            OcspRequest {
                tbs_request: asn1::TbsRequest {
                    version: Version::V1,
                    requestor_name: None,
                    request_list: vec![asn1::Request {
                        req_cert: CertId {
                            hash_algorithm: AlgorithmIdentifierOwned {
                                oid: ObjectIdentifier::new_unwrap("1.3.14.3.2.26"),
                                parameters: Some(Null.into()),
                            },
                            issuer_name_hash: OctetString::new([1u8; 20]).unwrap(),
                            issuer_key_hash: OctetString::new([2u8; 20]).unwrap(),
                            serial_number: Uint::new(&[1, 2]).unwrap(),
                        },
                        single_request_extensions: single.map(|e| vec![e]),
                    }],
                    request_extensions: global.map(|e| vec![e]),
                },
                optional_signature: None,
            }
            .to_der()
            .unwrap()
        };
        for der in [
            request(Some(extension(true)), None),
            request(None, Some(extension(true))),
        ] {
            let error = parse_request(&der).unwrap_err();
            assert!(
                matches!(error, OcspError::UnsupportedCriticalExtension { .. }),
                "{error}"
            );
            assert_eq!(error.response_status(), ErrorStatus::MalformedRequest);
        }
        let parsed = parse_request(&request(Some(extension(false)), Some(extension(false))));
        assert_eq!(parsed.unwrap().certs.len(), 1);
    }

    #[test]
    fn nonce_length_counts_the_inner_octet_string() {
        assert_eq!(nonce_len(&[0x04, 0x02, 0xAA, 0xBB]), 2);
        assert_eq!(nonce_len(&[0xAA, 0xBB, 0xCC]), 3);
    }
}
