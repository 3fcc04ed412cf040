//! The relying side of OCSP: build a request for a certificate and check the answer
//! (signature by the issuer or by a responder it delegated to, the CertID, freshness).
//! Used by the idp at ID-card login and by the signing service for long-term
//! validation data.

use der::{Decode, Encode, asn1::ObjectIdentifier};
use eid_hsm::{PublicKey, SignatureScheme};
use time::OffsetDateTime;
use x509_cert::{
    Certificate,
    ext::pkix::{AuthorityInfoAccessSyntax, ExtendedKeyUsage, name::GeneralName},
};

use super::{
    CertIdHash, CertIdKey, CertificateSerial, ID_PKIX_OCSP_BASIC, IssuerHashes,
    asn1::{
        BasicOcspResponse, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
        TbsRequest, Version,
    },
};

const ID_KP_OCSP_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");
const EXTENDED_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
/// How far a responder's clock may be ahead of ours.
const CLOCK_SKEW_SECS: i64 = 300;

/// What an OCSP responder said about a certificate, once checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckedStatus {
    /// Not revoked.
    Good,
    /// Revoked (or on hold) since this time, with the RFC 5280 reason code if given.
    Revoked {
        /// When.
        at: OffsetDateTime,
        /// `CRLReason` value.
        reason: Option<u8>,
    },
    /// The responder does not know the certificate.
    Unknown,
}

/// Why an OCSP answer could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OcspClientError {
    /// The answer is not a DER OCSPResponse with a basic response.
    #[error("the OCSP response is malformed: {0}")]
    Malformed(String),
    /// The responder refused (malformedRequest, unauthorized, ...).
    #[error("the OCSP responder answered {0:?}")]
    Refused(OcspResponseStatus),
    /// The response is not signed by the issuer or a responder it authorised.
    #[error("the OCSP response is not signed by the issuer or a delegated responder: {0}")]
    Signature(String),
    /// The response is about another certificate.
    #[error("the OCSP response is about another certificate")]
    WrongCertificate,
    /// The response is too old or from the future.
    #[error("the OCSP response is not current: {0}")]
    Stale(String),
}

/// The CertID (SHA-1, as RFC 5019 clients send it) of `serial` issued by `issuer`.
pub fn cert_id(
    issuer: &Certificate,
    serial: CertificateSerial,
) -> Result<CertIdKey, OcspClientError> {
    let hashes =
        IssuerHashes::new(issuer).map_err(|e| OcspClientError::Malformed(e.to_string()))?;
    Ok(hashes.cert_id(CertIdHash::Sha1, serial))
}

/// An unsigned OCSP request (DER) for one certificate, without a nonce, so that a
/// responder may answer from its pre-produced cache (RFC 5019 2.1).
pub fn build_request(id: &CertIdKey) -> Result<Vec<u8>, OcspClientError> {
    request(id, None)
}

/// An unsigned OCSP request for one certificate with a random nonce (RFC 8954, 16
/// octets): a responder signs its answer when asked instead of handing out a
/// pre-produced one, so the answer's thisUpdate is the time of asking. For status that
/// must have been issued after a given moment, such as a signature's time-stamp
/// (EN 319 102-1 revocation freshness).
pub fn build_fresh_request(id: &CertIdKey) -> Result<Vec<u8>, OcspClientError> {
    let malformed = |e: &dyn std::fmt::Display| OcspClientError::Malformed(e.to_string());
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| malformed(&e))?;
    let value = der::asn1::OctetString::new(nonce.to_vec())
        .and_then(|octets| octets.to_der())
        .and_then(der::asn1::OctetString::new)
        .map_err(|e| malformed(&e))?;
    request(
        id,
        Some(vec![x509_cert::ext::Extension {
            extn_id: super::asn1::ID_PKIX_OCSP_NONCE,
            critical: false,
            extn_value: value,
        }]),
    )
}

fn request(
    id: &CertIdKey,
    extensions: Option<Vec<x509_cert::ext::Extension>>,
) -> Result<Vec<u8>, OcspClientError> {
    let malformed = |e: super::OcspError| OcspClientError::Malformed(e.to_string());
    let request = OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: id.to_asn1().map_err(malformed)?,
                single_request_extensions: None,
            }],
            request_extensions: extensions,
        },
        optional_signature: None,
    };
    request
        .to_der()
        .map_err(|e| OcspClientError::Malformed(e.to_string()))
}

fn scheme_of(oid: ObjectIdentifier) -> Option<SignatureScheme> {
    SignatureScheme::from_algorithm_oid(&oid)
}

const AUTHORITY_INFO_ACCESS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.1");
const ID_AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");

/// The OCSP responder URL in a certificate's authority information access, if any.
pub fn ocsp_url(certificate: &Certificate) -> Option<String> {
    certificate
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .filter(|ext| ext.extn_id == AUTHORITY_INFO_ACCESS)
        .filter_map(|ext| AuthorityInfoAccessSyntax::from_der(ext.extn_value.as_bytes()).ok())
        .flat_map(|aia| aia.0)
        .find_map(
            |ad| match (ad.access_method == ID_AD_OCSP, ad.access_location) {
                (true, GeneralName::UniformResourceIdentifier(uri)) => Some(uri.to_string()),
                _ => None,
            },
        )
}

fn public_key(cert: &Certificate) -> Result<PublicKey, OcspClientError> {
    Ok(PublicKey::new(
        cert.tbs_certificate().subject_public_key_info().clone(),
    ))
}

/// Verifies that `signed` (a certificate) was signed by `issuer_key`.
fn certificate_signed_by(signed: &Certificate, issuer_key: &PublicKey) -> Result<(), String> {
    let scheme = scheme_of(signed.signature_algorithm().oid)
        .ok_or_else(|| "unsupported certificate signature algorithm".to_owned())?;
    let tbs = signed
        .tbs_certificate()
        .to_der()
        .map_err(|e| e.to_string())?;
    issuer_key
        .verify(scheme, &tbs, signed.signature().raw_bytes())
        .map_err(|e| e.to_string())
}

fn authorised_for_ocsp(responder: &Certificate) -> bool {
    responder
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .filter(|ext| ext.extn_id == EXTENDED_KEY_USAGE)
        .filter_map(|ext| ExtendedKeyUsage::from_der(ext.extn_value.as_bytes()).ok())
        .any(|eku| eku.0.contains(&ID_KP_OCSP_SIGNING))
}

/// Checks an OCSP response about `id` from `issuer` at time `now`.
pub fn check_response(
    der: &[u8],
    issuer: &Certificate,
    id: &CertIdKey,
    now: OffsetDateTime,
) -> Result<CheckedStatus, OcspClientError> {
    check(der, issuer, id, now, None)
}

/// The responses whose signature was already verified, by the SHA-256 of the issuer
/// and the response, with the end of the signer's validity: a responder that hands out
/// pre-produced responses sends the same bytes again and again, and their signature
/// need not be checked twice. The status and freshness are checked every time.
#[derive(Debug, Default)]
pub struct VerifiedResponses {
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], OffsetDateTime>>,
}

/// Most responses remembered; the memory is cleared when it is full.
const MAX_VERIFIED: usize = 4096;

impl VerifiedResponses {
    /// [`check_response`], verifying the signature of a response only the first time.
    pub fn check_response(
        &self,
        der: &[u8],
        issuer: &Certificate,
        id: &CertIdKey,
        now: OffsetDateTime,
    ) -> Result<CheckedStatus, OcspClientError> {
        check(der, issuer, id, now, Some(self))
    }
}

fn check(
    der: &[u8],
    issuer: &Certificate,
    id: &CertIdKey,
    now: OffsetDateTime,
    memory: Option<&VerifiedResponses>,
) -> Result<CheckedStatus, OcspClientError> {
    let malformed = |e: der::Error| OcspClientError::Malformed(e.to_string());
    let response = OcspResponse::from_der(der).map_err(malformed)?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(OcspClientError::Refused(response.response_status));
    }
    let bytes = response
        .response_bytes
        .ok_or_else(|| OcspClientError::Malformed("no responseBytes".into()))?;
    if bytes.response_type != ID_PKIX_OCSP_BASIC {
        return Err(OcspClientError::Malformed(
            "not a basic OCSP response".into(),
        ));
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).map_err(malformed)?;

    let key = {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(issuer.to_der().map_err(malformed)?);
        hash.update(der);
        <[u8; 32]>::from(hash.finalize())
    };
    let remembered = memory
        .and_then(|m| m.verified.lock().ok()?.get(&key).copied())
        .is_some_and(|until| now <= until);
    if !remembered {
        let Some(until) = signed_until(&basic, issuer, now)? else {
            return Err(OcspClientError::Signature(
                "no issuer or authorised responder key verifies it".into(),
            ));
        };
        if let Some(mut verified) = memory.and_then(|m| m.verified.lock().ok()) {
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
            verified.insert(key, until);
        }
    }

    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|single| {
            single.cert_id.issuer_name_hash.as_bytes() == id.issuer_name_hash.as_slice()
                && single.cert_id.issuer_key_hash.as_bytes() == id.issuer_key_hash.as_slice()
                && CertificateSerial::from_be_bytes(single.cert_id.serial_number.as_bytes())
                    == id.serial
        })
        .ok_or(OcspClientError::WrongCertificate)?;
    let this_update = OffsetDateTime::from(single.this_update.to_system_time());
    if this_update > now + time::Duration::seconds(CLOCK_SKEW_SECS) {
        return Err(OcspClientError::Stale("thisUpdate is in the future".into()));
    }
    if let Some(next) = single.next_update {
        let next = OffsetDateTime::from(next.to_system_time());
        if next < now {
            return Err(OcspClientError::Stale("nextUpdate has passed".into()));
        }
    }
    Ok(match single.cert_status {
        CertStatus::Good(_) => CheckedStatus::Good,
        CertStatus::Revoked(info) => CheckedStatus::Revoked {
            at: OffsetDateTime::from(info.revocation_time.to_system_time()),
            reason: info.revocation_reason.map(|r| r as u8),
        },
        CertStatus::Unknown(_) => CheckedStatus::Unknown,
    })
}

/// Whether `basic` is signed by `issuer` or by a responder it delegated to that is
/// valid at `now`; the end of the signer's validity when it is.
fn signed_until(
    basic: &BasicOcspResponse,
    issuer: &Certificate,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, OcspClientError> {
    let malformed = |e: der::Error| OcspClientError::Malformed(e.to_string());
    // Who signed: the issuer itself, or a certificate in the response that the issuer
    // signed for OCSP signing (RFC 6960 4.2.2.2).
    let issuer_key = public_key(issuer)?;
    let scheme = scheme_of(basic.signature_algorithm.oid)
        .ok_or_else(|| OcspClientError::Signature("unsupported signature algorithm".into()))?;
    let tbs = basic.tbs_response_data.to_der().map_err(malformed)?;
    let signature = basic.signature.raw_bytes();
    if issuer_key.verify(scheme, &tbs, signature).is_ok() {
        let not_after = issuer
            .tbs_certificate()
            .validity()
            .not_after
            .to_system_time();
        return Ok(Some(OffsetDateTime::from(not_after)));
    }
    for responder in basic.certs.iter().flatten() {
        if responder.tbs_certificate().issuer() != issuer.tbs_certificate().subject() {
            continue;
        }
        if certificate_signed_by(responder, &issuer_key).is_err() || !authorised_for_ocsp(responder)
        {
            continue;
        }
        let validity = responder.tbs_certificate().validity();
        let not_after = OffsetDateTime::from(validity.not_after.to_system_time());
        let not_before = OffsetDateTime::from(validity.not_before.to_system_time());
        if now < not_before || now > not_after {
            continue;
        }
        if public_key(responder)?
            .verify(scheme, &tbs, signature)
            .is_ok()
        {
            return Ok(Some(not_after));
        }
    }
    Ok(None)
}
