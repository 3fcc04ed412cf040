//! The ASN.1 of RFC 6960 (OCSP), section 4 and appendix B.2 (the 2008-syntax module).
//!
//! Written here with `der` derives because the `x509-ocsp` crate only exists for the
//! previous x509-cert generation (0.2), whose `der` types do not mix with x509-cert 0.3.
//! Tagging follows the RFC module exactly: `EXPLICIT` unless it says `IMPLICIT`.

use der::{
    Choice, Enumerated, Sequence,
    asn1::{BitString, GeneralizedTime, Null, ObjectIdentifier, OctetString, Uint},
};
use spki::AlgorithmIdentifierOwned;
use x509_cert::{
    Certificate,
    ext::{Extensions, pkix::crl::CrlReason, pkix::name::GeneralName},
    name::Name,
};

/// `id-pkix-ocsp-basic`: the only response type RFC 5019 responders produce.
pub const ID_PKIX_OCSP_BASIC: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");

/// `id-pkix-ocsp-nonce` (RFC 6960 §4.4.1, RFC 8954).
pub const ID_PKIX_OCSP_NONCE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");

/// `Version ::= INTEGER { v1(0) }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Enumerated)]
#[asn1(type = "INTEGER")]
#[repr(u8)]
pub enum Version {
    /// The only version RFC 6960 defines.
    #[default]
    V1 = 0,
}

/// `OCSPRequest ::= SEQUENCE { tbsRequest, optionalSignature [0] EXPLICIT Signature OPTIONAL }`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct OcspRequest {
    /// The request proper.
    pub tbs_request: TbsRequest,
    /// A requestor signature; RFC 5019 clients do not sign.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub optional_signature: Option<Signature>,
}

/// `TBSRequest`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct TbsRequest {
    /// `[0] EXPLICIT Version DEFAULT v1`.
    #[asn1(
        context_specific = "0",
        tag_mode = "EXPLICIT",
        default = "Default::default"
    )]
    pub version: Version,
    /// `[1] EXPLICIT GeneralName OPTIONAL`.
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub requestor_name: Option<GeneralName>,
    /// `SEQUENCE OF Request`.
    pub request_list: Vec<Request>,
    /// `[2] EXPLICIT Extensions OPTIONAL` (the nonce lives here).
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    pub request_extensions: Option<Extensions>,
}

/// `Signature` of a signed request.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct Signature {
    /// `signatureAlgorithm`.
    pub signature_algorithm: AlgorithmIdentifierOwned,
    /// `signature BIT STRING`.
    pub signature: BitString,
    /// `certs [0] EXPLICIT SEQUENCE OF Certificate OPTIONAL`.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub certs: Option<Vec<Certificate>>,
}

/// `Request ::= SEQUENCE { reqCert CertID, singleRequestExtensions [0] EXPLICIT Extensions OPTIONAL }`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct Request {
    /// The certificate asked about.
    pub req_cert: CertId,
    /// Per-certificate extensions (none are acted on).
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub single_request_extensions: Option<Extensions>,
}

/// `CertID`. The serial is decoded as an unsigned INTEGER: RFC 5280 serials are positive.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct CertId {
    /// The hash used for the two issuer hashes.
    pub hash_algorithm: AlgorithmIdentifierOwned,
    /// Hash of the issuer's DN (DER of the issuer certificate's subject).
    pub issuer_name_hash: OctetString,
    /// Hash of the issuer's public key (subjectPublicKey BIT STRING contents).
    pub issuer_key_hash: OctetString,
    /// `serialNumber CertificateSerialNumber`.
    pub serial_number: Uint,
}

/// `OCSPResponse ::= SEQUENCE { responseStatus, responseBytes [0] EXPLICIT ResponseBytes OPTIONAL }`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct OcspResponse {
    /// Whether the request was processed.
    pub response_status: OcspResponseStatus,
    /// Present only when the status is `successful`.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub response_bytes: Option<ResponseBytes>,
}

/// `OCSPResponseStatus ::= ENUMERATED` (value 4 is not used).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Enumerated)]
#[repr(u8)]
pub enum OcspResponseStatus {
    /// Response has valid confirmations.
    Successful = 0,
    /// Illegal confirmation request.
    MalformedRequest = 1,
    /// Internal error in issuer.
    InternalError = 2,
    /// Try again later.
    TryLater = 3,
    /// Must sign the request.
    SigRequired = 5,
    /// Request unauthorized.
    Unauthorized = 6,
}

/// `ResponseBytes ::= SEQUENCE { responseType OBJECT IDENTIFIER, response OCTET STRING }`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct ResponseBytes {
    /// `id-pkix-ocsp-basic` here.
    pub response_type: ObjectIdentifier,
    /// The DER of a [`BasicOcspResponse`].
    pub response: OctetString,
}

/// `BasicOCSPResponse`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct BasicOcspResponse {
    /// The signed part.
    pub tbs_response_data: ResponseData,
    /// The responder's signature algorithm.
    pub signature_algorithm: AlgorithmIdentifierOwned,
    /// The signature over the DER of `tbs_response_data`.
    pub signature: BitString,
    /// `certs [0] EXPLICIT SEQUENCE OF Certificate OPTIONAL`: the delegated responder's certificate.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub certs: Option<Vec<Certificate>>,
}

/// `ResponseData`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct ResponseData {
    /// `[0] EXPLICIT Version DEFAULT v1`.
    #[asn1(
        context_specific = "0",
        tag_mode = "EXPLICIT",
        default = "Default::default"
    )]
    pub version: Version,
    /// Who signed.
    pub responder_id: ResponderId,
    /// When the response was signed.
    pub produced_at: GeneralizedTime,
    /// One answer per certificate asked about.
    pub responses: Vec<SingleResponse>,
    /// `[1] EXPLICIT Extensions OPTIONAL` (the echoed nonce).
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub response_extensions: Option<Extensions>,
}

/// `ResponderID ::= CHOICE { byName [1] Name, byKey [2] KeyHash }` (explicit tags).
#[derive(Clone, Debug, PartialEq, Eq, Choice)]
pub enum ResponderId {
    /// The responder certificate's subject.
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", constructed = "true")]
    ByName(Name),
    /// `KeyHash ::= OCTET STRING`: SHA-1 of the responder's subjectPublicKey contents.
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", constructed = "true")]
    ByKey(OctetString),
}

/// `SingleResponse`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SingleResponse {
    /// The certificate answered about, as the request named it.
    pub cert_id: CertId,
    /// Good, revoked or unknown.
    pub cert_status: CertStatus,
    /// When the status was known to be correct.
    pub this_update: GeneralizedTime,
    /// `[0] EXPLICIT GeneralizedTime OPTIONAL`: when newer information will be available.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub next_update: Option<GeneralizedTime>,
    /// `[1] EXPLICIT Extensions OPTIONAL`.
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub single_extensions: Option<Extensions>,
}

/// `CertStatus ::= CHOICE { good [0] IMPLICIT NULL, revoked [1] IMPLICIT RevokedInfo, unknown [2] IMPLICIT UnknownInfo }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Choice)]
pub enum CertStatus {
    /// Not revoked.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    Good(Null),
    /// Revoked (or on hold).
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
    Revoked(RevokedInfo),
    /// The responder does not know the certificate.
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT")]
    Unknown(Null),
}

/// `RevokedInfo ::= SEQUENCE { revocationTime GeneralizedTime, revocationReason [0] EXPLICIT CRLReason OPTIONAL }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Sequence)]
pub struct RevokedInfo {
    /// When the certificate was revoked.
    pub revocation_time: GeneralizedTime,
    /// Why.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub revocation_reason: Option<CrlReason>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use der::{Decode, Encode};

    use super::*;

    fn cert_id() -> CertId {
        CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: ObjectIdentifier::new_unwrap("1.3.14.3.2.26"),
                parameters: Some(Null.into()),
            },
            issuer_name_hash: OctetString::new([1u8; 20]).unwrap(),
            issuer_key_hash: OctetString::new([2u8; 20]).unwrap(),
            serial_number: Uint::new(&[0x80, 1, 2]).unwrap(),
        }
    }

    fn time(seconds: u64) -> GeneralizedTime {
        GeneralizedTime::from_unix_duration(Duration::from_secs(seconds)).unwrap()
    }

    #[test]
    fn request_round_trips_and_default_version_is_omitted() {
        let request = OcspRequest {
            tbs_request: TbsRequest {
                version: Version::V1,
                requestor_name: None,
                request_list: vec![Request {
                    req_cert: cert_id(),
                    single_request_extensions: None,
                }],
                request_extensions: None,
            },
            optional_signature: None,
        };
        let der = request.to_der().unwrap();
        // SEQUENCE { SEQUENCE { SEQUENCE OF ... } }: no [0] version, as DER requires for a DEFAULT.
        assert_eq!(der[2], 0x30);
        assert_eq!(der[4], 0x30);
        assert_eq!(OcspRequest::from_der(&der).unwrap(), request);
    }

    #[test]
    fn response_round_trips_with_every_status() {
        let statuses = [
            CertStatus::Good(Null),
            CertStatus::Revoked(RevokedInfo {
                revocation_time: time(1_700_000_000),
                revocation_reason: Some(CrlReason::KeyCompromise),
            }),
            CertStatus::Revoked(RevokedInfo {
                revocation_time: time(1_700_000_000),
                revocation_reason: None,
            }),
            CertStatus::Unknown(Null),
        ];
        let data = ResponseData {
            version: Version::V1,
            responder_id: ResponderId::ByKey(OctetString::new([3u8; 20]).unwrap()),
            produced_at: time(1_700_000_100),
            responses: statuses
                .iter()
                .map(|status| SingleResponse {
                    cert_id: cert_id(),
                    cert_status: *status,
                    this_update: time(1_700_000_000),
                    next_update: Some(time(1_700_086_400)),
                    single_extensions: None,
                })
                .collect(),
            response_extensions: None,
        };
        let der = data.to_der().unwrap();
        assert_eq!(ResponseData::from_der(&der).unwrap(), data);
        // good is [0] IMPLICIT NULL: 0x80 0x00 right after the CertID.
        let single = data.responses[0].to_der().unwrap();
        let cert_id_len = cert_id().to_der().unwrap().len();
        assert_eq!(&single[2 + cert_id_len..4 + cert_id_len], &[0x80, 0x00]);
        // revoked is [1] IMPLICIT SEQUENCE: constructed context tag 0xA1.
        let revoked = data.responses[1].to_der().unwrap();
        assert_eq!(revoked[2 + cert_id_len], 0xA1);

        let response = OcspResponse {
            response_status: OcspResponseStatus::Successful,
            response_bytes: Some(ResponseBytes {
                response_type: ID_PKIX_OCSP_BASIC,
                response: OctetString::new(der).unwrap(),
            }),
        };
        let der = response.to_der().unwrap();
        assert_eq!(OcspResponse::from_der(&der).unwrap(), response);
    }

    #[test]
    fn error_status_encodes_as_a_bare_enumerated() {
        let response = OcspResponse {
            response_status: OcspResponseStatus::Unauthorized,
            response_bytes: None,
        };
        assert_eq!(response.to_der().unwrap(), [0x30, 0x03, 0x0A, 0x01, 0x06]);
    }
}
