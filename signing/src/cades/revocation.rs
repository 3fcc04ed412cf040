//! The signer's certificate status from our own OCSP responder (the URL in the
//! certificate), with eid-ca's public OCSP client codec. Fails closed: no answer is
//! never "good".

use std::time::Duration;

use der::Decode;
use eid_ca::{
    CertificateSerial,
    ocsp::{
        asn1::{BasicOcspResponse, OcspResponse},
        client::{self, CheckedStatus},
    },
};
use time::OffsetDateTime;
use x509_cert::Certificate;

use super::trust::ocsp_url;
use crate::SignatureError;

/// certificateHold (RFC 5280 §5.3.1): a suspension, not a revocation.
const CERTIFICATE_HOLD: u8 = 6;
/// How long the responder may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest OCSP response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A good status, with the evidence.
#[derive(Clone, Debug)]
pub(super) struct GoodStatus {
    /// The DER `OCSPResponse` as the responder sent it.
    pub(super) response: Vec<u8>,
    /// The certificates in it (the delegated responder's).
    pub(super) responder_certificates: Vec<Certificate>,
}

/// Asks the responder named in `certificate` about it; `issuer` checks the answer.
pub(super) async fn check(
    http: &reqwest::Client,
    certificate: &Certificate,
    issuer: &Certificate,
    now: OffsetDateTime,
) -> Result<GoodStatus, SignatureError> {
    let unavailable = SignatureError::RevocationUnavailable;
    let url = ocsp_url(certificate).ok_or_else(|| {
        SignatureError::BadCertificate("the certificate names no OCSP responder".into())
    })?;
    let serial = CertificateSerial::from_certificate(certificate.tbs_certificate().serial_number());
    let id = client::cert_id(issuer, serial)
        .map_err(|e| SignatureError::Task(format!("OCSP CertID: {e}")))?;
    let request = client::build_request(&id)
        .map_err(|e| SignatureError::Task(format!("OCSP request: {e}")))?;
    let response = http
        .post(&url)
        .header("content-type", "application/ocsp-request")
        .body(request)
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| unavailable(format!("the OCSP responder {url} is unreachable: {e}")))?;
    if !response.status().is_success() {
        return Err(unavailable(format!(
            "the OCSP responder {url} answered HTTP {}",
            response.status()
        )));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| unavailable(format!("reading the OCSP response: {e}")))?;
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(unavailable("the OCSP response is too large".into()));
    }
    let status = client::check_response(&body, issuer, &id, now)
        .map_err(|e| unavailable(format!("the OCSP response is unusable: {e}")))?;
    match status {
        CheckedStatus::Good => Ok(GoodStatus {
            responder_certificates: responder_certificates(&body),
            response: body.to_vec(),
        }),
        CheckedStatus::Revoked {
            reason: Some(CERTIFICATE_HOLD),
            at,
        } => Err(SignatureError::CertificateSuspended(format!(
            "the signer's certificate is suspended (since {at})"
        ))),
        CheckedStatus::Revoked { at, .. } => Err(SignatureError::CertificateRevoked(format!(
            "the signer's certificate was revoked at {at}"
        ))),
        CheckedStatus::Unknown => Err(SignatureError::CertificateUnknown(
            "the OCSP responder does not know the signer's certificate".into(),
        )),
    }
}

/// The certificates a (checked) response carries.
fn responder_certificates(der: &[u8]) -> Vec<Certificate> {
    OcspResponse::from_der(der)
        .ok()
        .and_then(|r| r.response_bytes)
        .and_then(|bytes| BasicOcspResponse::from_der(bytes.response.as_bytes()).ok())
        .and_then(|basic| basic.certs)
        .unwrap_or_default()
}
