//! RFC 3161 requests in, time-stamp tokens and rejections out. Pure protocol code: no
//! database, no clock reads, no async; the TSA in `mod.rs` decides *when* to call it.
//!
//! The token is a CMS SignedData written from DER prepared once per TSU (see
//! [`TokenSigner`]); the `cms` crate's types prepare it and read it back in tests. Its
//! `SignedDataBuilder` is not used: it sits behind the crate's `builder` feature,
//! which compiles the whole encryption stack (AES, key wrap, KDFs) for envelope
//! builders we do not use, and it re-encodes constant parts (the signer identifier,
//! ESSCertIDv2, certificates) on every token.

use std::sync::Arc;

use cms::{cert::CertificateChoices, content_info::CmsVersion, signed_data::CertificateSet};
use der::{
    Any, Decode, Encode, Reader, Tag, Tagged,
    asn1::{Int, ObjectIdentifier, OctetString, SetOfVec, Uint},
};
use eid_hsm::{KeySigner, SignatureScheme};
use sha2::{Digest, Sha256};
use spki::AlgorithmIdentifierOwned;
use time::OffsetDateTime;
use x509_cert::{
    Certificate,
    attr::Attribute,
    ext::{Extension, pkix::name::GeneralName},
};

use super::{
    TimeStampUnit,
    asn1::{
        Accuracy, FailureInfo, ID_CONTENT_TYPE, ID_CT_TST_INFO, ID_ETSI_TSTS_EU_QCOMPLIANCE,
        ID_MESSAGE_DIGEST, ID_PE_QC_STATEMENTS, ID_SHA1, ID_SHA256, ID_SHA384, ID_SHA512,
        ID_SIGNED_DATA, MessageImprint, PkiStatus, PkiStatusInfo, QcStatement, TimeStampReq,
        TimeStampResp,
    },
    gen_time::GenTime,
};
use crate::TsaError;

/// The largest request accepted, in octets. A SHA-512 request with a 64-bit nonce is
/// about 100 octets; 4 KiB leaves room for long nonces and a policy while refusing
/// bodies that only cost parsing.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// `id-kp-timeStamping` (RFC 3161 §2.3).
const ID_KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
/// `id-ce-extKeyUsage`.
const ID_CE_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");

/// The hashes accepted in message imprints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImprintHash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl ImprintHash {
    fn from_oid(oid: ObjectIdentifier) -> Option<Self> {
        match oid {
            ID_SHA256 => Some(Self::Sha256),
            ID_SHA384 => Some(Self::Sha384),
            ID_SHA512 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// The digest length in octets.
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// The name as stored.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }
}

/// A request the TSA will answer with a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedRequest {
    /// The imprint, exactly as received (it goes into the token unchanged).
    pub imprint: MessageImprint,
    /// Its hash.
    pub hash: ImprintHash,
    /// The nonce to echo.
    pub nonce: Option<Int>,
    /// Whether the TSU certificate is to be included.
    pub cert_req: bool,
}

/// Decodes and checks a `TimeStampReq` against what this TSA offers (`policy`).
pub fn parse_request(der: &[u8], policy: ObjectIdentifier) -> Result<ParsedRequest, TsaError> {
    if der.len() > MAX_REQUEST_BYTES {
        return Err(TsaError::refused(
            FailureInfo::BadRequest,
            format!("request larger than {MAX_REQUEST_BYTES} octets"),
        ));
    }
    let bad_format = |_| TsaError::refused(FailureInfo::BadDataFormat, "not a DER TimeStampReq");
    let mut reader = der::SliceReader::new(der).map_err(bad_format)?;
    let request = TimeStampReq::decode(&mut reader).map_err(bad_format)?;
    if !reader.is_finished() {
        return Err(TsaError::refused(
            FailureInfo::BadDataFormat,
            "octets after the TimeStampReq",
        ));
    }
    if request.version != 1 {
        return Err(TsaError::refused(
            FailureInfo::BadRequest,
            "only TimeStampReq version 1 exists",
        ));
    }
    let algorithm = &request.message_imprint.hash_algorithm;
    if algorithm.oid == ID_SHA1 {
        return Err(TsaError::refused(
            FailureInfo::BadAlg,
            "SHA-1 imprints are not accepted; use SHA-256, SHA-384 or SHA-512",
        ));
    }
    let hash = ImprintHash::from_oid(algorithm.oid).ok_or_else(|| {
        TsaError::refused(
            FailureInfo::BadAlg,
            "unsupported hash algorithm; use SHA-256, SHA-384 or SHA-512",
        )
    })?;
    // RFC 5754: SHA-2 parameters are absent, or NULL from older encoders.
    if algorithm
        .parameters
        .as_ref()
        .is_some_and(|p| p.tag() != Tag::Null || !p.value().is_empty())
    {
        return Err(TsaError::refused(
            FailureInfo::BadAlg,
            "SHA-2 algorithm identifiers take no parameters",
        ));
    }
    let len = request.message_imprint.hashed_message.as_bytes().len();
    if len != hash.output_len() {
        return Err(TsaError::refused(
            FailureInfo::BadDataFormat,
            format!(
                "the imprint is {len} octets but {} gives {}",
                hash.name(),
                hash.output_len()
            ),
        ));
    }
    if let Some(asked) = request.req_policy
        && asked != policy
    {
        return Err(TsaError::refused(
            FailureInfo::UnacceptedPolicy,
            format!("this TSA issues under policy {policy} only"),
        ));
    }
    if request.extensions.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(TsaError::refused(
            FailureInfo::UnacceptedExtension,
            "this TSA supports no request extensions",
        ));
    }
    Ok(ParsedRequest {
        imprint: request.message_imprint,
        hash,
        nonce: request.nonce,
        cert_req: request.cert_req,
    })
}

/// What every token of one TSU shares, prepared once: the token is written from DER
/// prepared here and the few parts that differ per token (TSTInfo's imprint, serial,
/// genTime and nonce; the message digest; the signature). Building the `cms` crate's
/// structures for every token cloned and re-encoded the certificates and names each
/// time: a seventh of a loaded TSA's time, measured with perf.
#[derive(Clone, Debug)]
pub struct TokenSigner {
    signer: KeySigner,
    policy: ObjectIdentifier,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    prepared: Arc<Prepared>,
}

/// Constant DER of the token, in the order it is written.
#[derive(Debug)]
struct Prepared {
    /// TSTInfo's `version` and `policy`.
    tst_head: Vec<u8>,
    /// TSTInfo's `accuracy`, or nothing.
    tst_accuracy: Vec<u8>,
    /// TSTInfo's `[0] tsa` and `[1] extensions`, each or nothing.
    tst_tail: Vec<u8>,
    /// The signed attributes in DER's SET OF order; `None` is the message digest.
    signed_attributes: [Option<Vec<u8>>; 3],
    /// SignedData's `digestAlgorithms`.
    digest_algorithms: Vec<u8>,
    /// SignedData's `[0] certificates`: the TSU certificate and its chain.
    certificates: Vec<u8>,
    /// SignerInfo's `version`, `sid` and `digestAlgorithm`.
    signer_info_head: Vec<u8>,
    /// SignerInfo's `signatureAlgorithm`.
    signature_algorithm: Vec<u8>,
    /// The OIDs written with every token: id-messageDigest, id-ct-TSTInfo,
    /// id-signedData.
    message_digest_oid: Vec<u8>,
    tst_info_oid: Vec<u8>,
    signed_data_oid: Vec<u8>,
}

/// `SEQUENCE { INTEGER 0 }`: PKIStatusInfo granted.
const GRANTED: [u8; 5] = [0x30, 0x03, 0x02, 0x01, 0x00];
/// `INTEGER 3`: SignedData's version (eContentType is not id-data, RFC 5652 §5.1).
const SIGNED_DATA_V3: [u8; 3] = [0x02, 0x01, 0x03];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OCTET_STRING: u8 = 0x04;
/// `[0]` and `[1]`, constructed (EXPLICIT, or IMPLICIT over a SEQUENCE or SET).
const CONTEXT_0: u8 = 0xA0;
const CONTEXT_1: u8 = 0xA1;

/// A DER TLV of `tag` (one octet) around the concatenation of `parts`.
fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let length: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(length + 6);
    out.push(tag);
    if length < 0x80 {
        out.push(length as u8);
    } else {
        let octets = length.to_be_bytes();
        let skip = octets.iter().take_while(|o| **o == 0).count();
        out.push(0x80 | (octets.len() - skip) as u8);
        out.extend_from_slice(&octets[skip..]);
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// `der` with its (one-octet) tag replaced: IMPLICIT tagging of an encoded value.
fn retagged(mut der: Vec<u8>, tag: u8) -> Vec<u8> {
    if let Some(first) = der.first_mut() {
        *first = tag;
    }
    der
}

/// The messageDigest attribute over `digest`; `oid` is id-messageDigest's DER.
fn message_digest_attribute(oid: &[u8], digest: &[u8]) -> Vec<u8> {
    tlv(
        SEQUENCE,
        &[oid, &tlv(SET, &[&tlv(OCTET_STRING, &[digest])])],
    )
}

fn sha256_algorithm() -> AlgorithmIdentifierOwned {
    // RFC 5754 §2: parameters absent.
    AlgorithmIdentifierOwned {
        oid: ID_SHA256,
        parameters: None,
    }
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, TsaError> {
    crate::cms::attribute(oid, value).map_err(TsaError::encoding("attribute"))
}

/// Checks that `certificate` may sign time-stamps (RFC 3161 §2.3): an extended key
/// usage extension, critical, with id-kp-timeStamping as its only purpose.
fn check_time_stamping_certificate(certificate: &Certificate) -> Result<(), TsaError> {
    let extension = certificate
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .find(|e| e.extn_id == ID_CE_EXT_KEY_USAGE)
        .ok_or_else(|| TsaError::Unit("the certificate has no extended key usage".into()))?;
    if !extension.critical {
        return Err(TsaError::Unit(
            "the extended key usage must be critical (RFC 3161 §2.3)".into(),
        ));
    }
    let purposes = Vec::<ObjectIdentifier>::from_der(extension.extn_value.as_bytes())
        .map_err(TsaError::encoding("extended key usage"))?;
    if purposes != [ID_KP_TIME_STAMPING] {
        return Err(TsaError::Unit(
            "the extended key usage must be id-kp-timeStamping only (RFC 3161 §2.3)".into(),
        ));
    }
    Ok(())
}

impl TokenSigner {
    /// The TSU's signer (where a token's signature runs: [`KeySigner::run_signing`]).
    pub fn signer(&self) -> &KeySigner {
        &self.signer
    }

    /// Prepares the TSU's constant parts, refusing a certificate unfit for time-stamping
    /// or a key that is not the certified one.
    pub fn new(
        unit: &TimeStampUnit,
        policy: ObjectIdentifier,
        accuracy: std::time::Duration,
        qualified: bool,
        include_tsa_name: bool,
    ) -> Result<Self, TsaError> {
        let certificate = &unit.certificate;
        let tbs = certificate.tbs_certificate();
        if unit.signer.public_key().spki() != tbs.subject_public_key_info() {
            return Err(TsaError::Unit(format!(
                "the key `{}` is not the key of the TSU certificate",
                unit.signer.info().label
            )));
        }
        check_time_stamping_certificate(certificate)?;
        let encoding = TsaError::encoding;

        let mut tst_head = 1u8.to_der().map_err(encoding("version"))?;
        tst_head.extend(policy.to_der().map_err(encoding("policy"))?);
        let millis = u64::try_from(accuracy.as_millis()).unwrap_or(u64::MAX);
        let tst_accuracy = if millis > 0 {
            Accuracy {
                seconds: u32::try_from(millis / 1000).ok().filter(|s| *s > 0),
                millis: u16::try_from(millis % 1000).ok().filter(|m| *m > 0),
                micros: None,
            }
            .to_der()
            .map_err(encoding("accuracy"))?
        } else {
            Vec::new()
        };
        let mut tst_tail = Vec::new();
        if include_tsa_name {
            // `tsa [0] GeneralName`: explicit, GeneralName being a CHOICE.
            let name = GeneralName::DirectoryName(tbs.subject().clone())
                .to_der()
                .map_err(encoding("TSA name"))?;
            tst_tail.extend(tlv(CONTEXT_0, &[&name]));
        }
        if qualified {
            let statements = vec![QcStatement {
                statement_id: ID_ETSI_TSTS_EU_QCOMPLIANCE,
            }];
            let extensions = vec![Extension {
                extn_id: ID_PE_QC_STATEMENTS,
                critical: false,
                extn_value: OctetString::new(
                    statements.to_der().map_err(encoding("qcStatements"))?,
                )
                .map_err(encoding("qcStatements"))?,
            }];
            // `extensions [1] IMPLICIT Extensions` (a SEQUENCE OF).
            tst_tail.extend(retagged(
                extensions.to_der().map_err(encoding("extensions"))?,
                CONTEXT_1,
            ));
        }

        // ESSCertIDv2 (RFC 5816): SHA-256 of the certificate, with issuer and serial.
        let signing_certificate = crate::cms::signing_certificate_v2(certificate)
            .and_then(|a| a.to_der())
            .map_err(encoding("SigningCertificateV2"))?;
        let content_type = attribute(
            ID_CONTENT_TYPE,
            Any::encode_from(&ID_CT_TST_INFO).map_err(encoding("content type"))?,
        )?
        .to_der()
        .map_err(encoding("content type"))?;
        let message_digest_oid = ID_MESSAGE_DIGEST
            .to_der()
            .map_err(encoding("message digest"))?;
        let signed_attributes =
            attribute_order(&message_digest_oid, content_type, signing_certificate)?;

        let mut certificates = vec![CertificateChoices::Certificate(certificate.clone())];
        certificates.extend(
            unit.chain
                .iter()
                .cloned()
                .map(CertificateChoices::Certificate),
        );
        let certificates = retagged(
            CertificateSet(SetOfVec::try_from(certificates).map_err(encoding("certificates"))?)
                .to_der()
                .map_err(encoding("certificates"))?,
            CONTEXT_0,
        );
        let mut signer_info_head = CmsVersion::V1.to_der().map_err(encoding("version"))?;
        signer_info_head.extend(
            crate::cms::signer_identifier(certificate)
                .to_der()
                .map_err(encoding("signer identifier"))?,
        );
        signer_info_head.extend(
            sha256_algorithm()
                .to_der()
                .map_err(encoding("digest algorithm"))?,
        );
        let validity = tbs.validity();
        Ok(Self {
            signer: unit.signer.clone(),
            policy,
            not_before: OffsetDateTime::from(std::time::SystemTime::from(validity.not_before)),
            not_after: OffsetDateTime::from(std::time::SystemTime::from(validity.not_after)),
            prepared: Arc::new(Prepared {
                tst_head,
                tst_accuracy,
                tst_tail,
                signed_attributes,
                digest_algorithms: SetOfVec::try_from(vec![sha256_algorithm()])
                    .and_then(|set| set.to_der())
                    .map_err(encoding("digest algorithms"))?,
                certificates,
                signer_info_head,
                signature_algorithm: unit
                    .signer
                    .scheme()
                    .algorithm_identifier()?
                    .to_der()
                    .map_err(encoding("signature algorithm"))?,
                message_digest_oid,
                tst_info_oid: ID_CT_TST_INFO.to_der().map_err(encoding("eContentType"))?,
                signed_data_oid: ID_SIGNED_DATA.to_der().map_err(encoding("contentType"))?,
            }),
        })
    }

    /// The policy tokens are issued under.
    pub fn policy(&self) -> ObjectIdentifier {
        self.policy
    }

    /// Signs a token for `request` with `serial` (big-endian magnitude) at `gen_time`,
    /// and returns the granted `TimeStampResp`. Blocks while the key layer signs.
    pub fn sign(
        &self,
        request: &ParsedRequest,
        serial: &[u8],
        gen_time: OffsetDateTime,
    ) -> Result<Vec<u8>, TsaError> {
        if gen_time < self.not_before || gen_time > self.not_after {
            return Err(TsaError::Unit(format!(
                "the TSU certificate is not valid at {gen_time}"
            )));
        }
        let encoding = TsaError::encoding;
        let prepared = &self.prepared;
        let imprint = request.imprint.to_der().map_err(encoding("imprint"))?;
        let serial = Uint::new(serial)
            .and_then(|s| s.to_der())
            .map_err(encoding("serial number"))?;
        let gen_time = GenTime::from_time(gen_time)
            .ok_or_else(|| TsaError::Unit(format!("genTime {gen_time} out of range")))?
            .to_der()
            .map_err(encoding("genTime"))?;
        let nonce = match &request.nonce {
            Some(nonce) => nonce.to_der().map_err(encoding("nonce"))?,
            None => Vec::new(),
        };
        // `ordering` is FALSE, the DEFAULT, so it is left out.
        let tst_der = tlv(
            SEQUENCE,
            &[
                &prepared.tst_head,
                &imprint,
                &serial,
                &gen_time,
                &prepared.tst_accuracy,
                &nonce,
                &prepared.tst_tail,
            ],
        );
        let digest =
            message_digest_attribute(&prepared.message_digest_oid, &Sha256::digest(&tst_der));
        let attributes: Vec<&[u8]> = prepared
            .signed_attributes
            .iter()
            .map(|a| a.as_deref().unwrap_or(&digest))
            .collect();
        // RFC 5652 §5.4: the signature covers the DER of the SET OF; the SignerInfo
        // carries the same content under [0] IMPLICIT.
        let to_sign = tlv(SET, &attributes);
        let signature = self.signer.sign(&to_sign)?;
        // An RSA signature from a faulty CRT step leaks the key: check it before
        // release (ECDSA has no such failure mode).
        if matches!(
            self.signer.scheme(),
            SignatureScheme::RsaPkcs1Sha256 | SignatureScheme::RsaPssSha256
        ) {
            self.signer.public_key().verify(
                self.signer.scheme(),
                &to_sign,
                signature.as_bytes(),
            )?;
        }
        let signer_info = tlv(
            SEQUENCE,
            &[
                &prepared.signer_info_head,
                &retagged(to_sign, CONTEXT_0),
                &prepared.signature_algorithm,
                &tlv(OCTET_STRING, &[signature.as_bytes()]),
            ],
        );
        let encapsulated = tlv(
            SEQUENCE,
            &[
                &prepared.tst_info_oid,
                &tlv(CONTEXT_0, &[&tlv(OCTET_STRING, &[&tst_der])]),
            ],
        );
        let certificates: &[u8] = if request.cert_req {
            &prepared.certificates
        } else {
            &[]
        };
        let signed_data = tlv(
            SEQUENCE,
            &[
                &SIGNED_DATA_V3,
                &prepared.digest_algorithms,
                &encapsulated,
                certificates,
                &tlv(SET, &[&signer_info]),
            ],
        );
        let token = tlv(
            SEQUENCE,
            &[&prepared.signed_data_oid, &tlv(CONTEXT_0, &[&signed_data])],
        );
        Ok(tlv(SEQUENCE, &[&GRANTED, &token]))
    }
}

/// The three signed attributes in the order DER's SET OF wants (by their encodings),
/// the message digest as `None`. Its place does not depend on the digest's value (the
/// attributes differ before it: in length or OID); checked here with the lowest and
/// the highest digest.
fn attribute_order(
    message_digest_oid: &[u8],
    content_type: Vec<u8>,
    signing_certificate: Vec<u8>,
) -> Result<[Option<Vec<u8>>; 3], TsaError> {
    let order = |fill: u8| -> Result<Vec<Option<Vec<u8>>>, TsaError> {
        let digest = message_digest_attribute(message_digest_oid, &[fill; 32]);
        let mut all = vec![
            (content_type.clone(), Some(content_type.clone())),
            (digest, None),
            (
                signing_certificate.clone(),
                Some(signing_certificate.clone()),
            ),
        ];
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all.into_iter().map(|(_, a)| a).collect())
    };
    let low = order(0x00)?;
    if low != order(0xFF)? {
        return Err(TsaError::Unit(
            "the signed attributes' order depends on the digest".into(),
        ));
    }
    let mut attributes = low.into_iter();
    Ok([
        attributes.next().flatten(),
        attributes.next().flatten(),
        attributes.next().flatten(),
    ])
}

/// `TimeStampResp` for a refused request with only `systemFailure`: fixed octets, used
/// when even encoding a rejection fails.
const SYSTEM_FAILURE_RESPONSE: [u8; 14] = [
    0x30, 0x0C, 0x30, 0x0A, 0x02, 0x01, 0x02, 0x03, 0x05, 0x06, 0x00, 0x00, 0x00, 0x40,
];

/// A `rejection` with one failure reason and a short text.
pub fn rejection(reason: FailureInfo, text: &str) -> Vec<u8> {
    let encoded = reason.to_bit_string().and_then(|bits| {
        TimeStampResp {
            status: PkiStatusInfo {
                status: PkiStatus::Rejection,
                status_string: Some(vec![text.to_owned()]),
                fail_info: Some(bits),
            },
            time_stamp_token: None,
        }
        .to_der()
    });
    encoded.unwrap_or_else(|_| SYSTEM_FAILURE_RESPONSE.to_vec())
}

/// Reads a response's status and failure reasons (for tests and diagnostics).
pub fn response_status(der: &[u8]) -> Result<(PkiStatus, Vec<FailureInfo>), der::Error> {
    let response = TimeStampResp::from_der(der)?;
    let reasons = response
        .status
        .fail_info
        .as_ref()
        .map(FailureInfo::from_bit_string)
        .unwrap_or_default();
    Ok((response.status.status, reasons))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_fixed_system_failure_matches_the_encoder() {
        let encoded = TimeStampResp {
            status: PkiStatusInfo {
                status: PkiStatus::Rejection,
                status_string: None,
                fail_info: Some(FailureInfo::SystemFailure.to_bit_string().unwrap()),
            },
            time_stamp_token: None,
        }
        .to_der()
        .unwrap();
        assert_eq!(encoded, SYSTEM_FAILURE_RESPONSE);
    }

    fn request(oid: ObjectIdentifier, len: usize) -> Vec<u8> {
        TimeStampReq {
            version: 1,
            message_imprint: MessageImprint {
                hash_algorithm: AlgorithmIdentifierOwned {
                    oid,
                    parameters: None,
                },
                hashed_message: OctetString::new(vec![7u8; len]).unwrap(),
            },
            req_policy: None,
            nonce: None,
            cert_req: true,
            extensions: None,
        }
        .to_der()
        .unwrap()
    }

    fn reason(result: Result<ParsedRequest, TsaError>) -> FailureInfo {
        match result {
            Err(TsaError::Refused { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn requests_are_checked() {
        let policy = ObjectIdentifier::new_unwrap("1.2.3.4");
        let parsed = parse_request(&request(ID_SHA384, 48), policy).unwrap();
        assert_eq!(parsed.hash, ImprintHash::Sha384);
        assert!(parsed.cert_req);
        assert_eq!(
            reason(parse_request(&request(ID_SHA1, 20), policy)),
            FailureInfo::BadAlg
        );
        assert_eq!(
            reason(parse_request(
                &request(ObjectIdentifier::new_unwrap("1.2.840.113549.2.5"), 16),
                policy
            )),
            FailureInfo::BadAlg
        );
        assert_eq!(
            reason(parse_request(&request(ID_SHA256, 31), policy)),
            FailureInfo::BadDataFormat
        );
        assert_eq!(
            reason(parse_request(b"garbage", policy)),
            FailureInfo::BadDataFormat
        );
        let mut trailing = request(ID_SHA256, 32);
        trailing.push(0);
        assert_eq!(
            reason(parse_request(&trailing, policy)),
            FailureInfo::BadDataFormat
        );
        assert_eq!(
            reason(parse_request(&vec![0x30; MAX_REQUEST_BYTES + 1], policy)),
            FailureInfo::BadRequest
        );
    }

    #[test]
    fn rejections_carry_their_reason() {
        for reason in FailureInfo::ALL {
            let der = rejection(reason, "why");
            assert_eq!(
                response_status(&der).unwrap(),
                (PkiStatus::Rejection, vec![reason])
            );
        }
    }
}
