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

/// A responder's answer about one certificate, as evidence: good, or (from [`ask`])
/// whatever it says.
#[derive(Clone, Debug)]
pub(crate) struct OcspAnswer {
    /// The DER `OCSPResponse` as the responder sent it.
    pub(crate) response: Vec<u8>,
    /// The certificates in it (the delegated responder's).
    pub(crate) responder_certificates: Vec<Certificate>,
}

/// Our own OCSP responder served by this very process, asked directly instead of over
/// HTTP (the `eid` binary connects it only when the CA's responder runs in the same
/// process, so its answers are the ones the CA's listener gives).
pub trait LocalResponder: Send + Sync + std::fmt::Debug {
    /// The DER `OCSPResponse` to a DER `OCSPRequest`.
    fn respond<'a>(
        &'a self,
        request: &'a [u8],
    ) -> std::pin::Pin<Box<dyn Future<Output = Vec<u8>> + Send + 'a>>;
}

/// Where OCSP answers come from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Responders<'a> {
    pub(crate) http: &'a reqwest::Client,
    pub(crate) local: Option<&'a dyn LocalResponder>,
    pub(crate) verified: &'a client::VerifiedResponses,
}

/// Which answer a caller needs from the responder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Any current answer, a pre-produced one included: the status now.
    Current,
    /// One signed when asked (the request carries a nonce), so its thisUpdate follows
    /// everything done before the call, such as a signature's time-stamp: validation
    /// data for LT, which EN 319 102-1 accepts only when issued after the time the
    /// signature is proven to exist.
    Fresh,
}

/// Asks the responder named in `certificate` about it; `issuer` checks the answer.
/// Only a good status passes: suspended, revoked and unknown are refusals.
pub(crate) async fn check(
    responders: Responders<'_>,
    certificate: &Certificate,
    issuer: &Certificate,
    now: OffsetDateTime,
    freshness: Freshness,
) -> Result<OcspAnswer, SignatureError> {
    let (status, answer) = ask(responders, certificate, issuer, now, freshness).await?;
    match refusal(&status) {
        None => Ok(answer),
        Some(refusal) => Err(refusal),
    }
}

/// Whether `status` is a revocation (not a suspension) that took effect after `time`:
/// a signature proven to exist at `time` stands, and the answer proves when.
pub(crate) fn revoked_after(status: &CheckedStatus, time: OffsetDateTime) -> bool {
    matches!(status, CheckedStatus::Revoked { at, reason } if *reason != Some(CERTIFICATE_HOLD) && *at > time)
}

/// The refusal a status that is not good stands for.
pub(crate) fn refusal(status: &CheckedStatus) -> Option<SignatureError> {
    match status {
        CheckedStatus::Good => None,
        CheckedStatus::Revoked {
            reason: Some(CERTIFICATE_HOLD),
            at,
        } => Some(SignatureError::CertificateSuspended(format!(
            "the signer's certificate is suspended (since {at})"
        ))),
        CheckedStatus::Revoked { at, .. } => Some(SignatureError::CertificateRevoked(format!(
            "the signer's certificate was revoked at {at}"
        ))),
        CheckedStatus::Unknown => Some(SignatureError::CertificateUnknown(
            "the OCSP responder does not know the signer's certificate".into(),
        )),
    }
}

/// Asks the responder named in `certificate` about it; `issuer` checks the answer
/// (signature, freshness): the status and the response, whatever the status.
pub(crate) async fn ask(
    responders: Responders<'_>,
    certificate: &Certificate,
    issuer: &Certificate,
    now: OffsetDateTime,
    freshness: Freshness,
) -> Result<(CheckedStatus, OcspAnswer), SignatureError> {
    let unavailable = SignatureError::RevocationUnavailable;
    let url = ocsp_url(certificate).ok_or_else(|| {
        SignatureError::BadCertificate("the certificate names no OCSP responder".into())
    })?;
    let serial = CertificateSerial::from_certificate(certificate.tbs_certificate().serial_number());
    let id = client::cert_id(issuer, serial)
        .map_err(|e| SignatureError::Task(format!("OCSP CertID: {e}")))?;
    let request = match freshness {
        Freshness::Current => client::build_request(&id),
        Freshness::Fresh => client::build_fresh_request(&id),
    }
    .map_err(|e| SignatureError::Task(format!("OCSP request: {e}")))?;
    let body = match responders.local {
        Some(local) => local.respond(&request).await,
        None => {
            let response = responders
                .http
                .post(&url)
                .header("content-type", "application/ocsp-request")
                .body(request)
                .timeout(TIMEOUT)
                .send()
                .await
                .map_err(|e| {
                    unavailable(format!("the OCSP responder {url} is unreachable: {e}"))
                })?;
            if !response.status().is_success() {
                return Err(unavailable(format!(
                    "the OCSP responder {url} answered HTTP {}",
                    response.status()
                )));
            }
            response
                .bytes()
                .await
                .map_err(|e| unavailable(format!("reading the OCSP response: {e}")))?
                .to_vec()
        }
    };
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(unavailable("the OCSP response is too large".into()));
    }
    let status = responders
        .verified
        .check_response(&body, issuer, &id, now)
        .map_err(|e| unavailable(format!("the OCSP response is unusable: {e}")))?;
    Ok((
        status,
        OcspAnswer {
            responder_certificates: responder_certificates(&body),
            response: body.to_vec(),
        },
    ))
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

/// How far a CRL's thisUpdate may be ahead of our clock.
const CLOCK_SKEW_SECS: i64 = 300;

/// The largest CRL read (an authority revocation list is small; this bounds a hostile
/// or broken server).
const MAX_CRL_BYTES: usize = 4 * 1024 * 1024;

/// CRLs of CA certificates (the root's authority revocation list), for long-term
/// validation data, fetched from the distribution point in the certificate and kept
/// until half of their validity has passed.
#[derive(Debug, Default)]
pub(super) struct CrlCache {
    cached: std::sync::Mutex<std::collections::HashMap<String, CachedCrl>>,
}

#[derive(Clone, Debug)]
struct CachedCrl {
    der: Vec<u8>,
    refresh_after: OffsetDateTime,
}

impl CrlCache {
    /// The current CRL covering `certificate` (a CA or TSU certificate), checked: from
    /// `issuer`, signed by its key, current at `now`, and not listing `certificate`.
    /// `None` when the certificate names no distribution point.
    pub(super) async fn covering(
        &self,
        http: &reqwest::Client,
        certificate: &Certificate,
        issuer: &Certificate,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<u8>>, SignatureError> {
        let Some(url) = super::trust::crl_url(certificate) else {
            return Ok(None);
        };
        let cached = self
            .cached
            .lock()
            .ok()
            .and_then(|cached| cached.get(&url).cloned())
            .filter(|cached| now < cached.refresh_after);
        let der = match cached {
            Some(cached) => cached.der,
            None => fetch_crl(http, &url).await?,
        };
        let refresh_after = check_crl(&der, certificate, issuer, now)
            .map_err(|e| SignatureError::RevocationUnavailable(format!("the CRL at {url} {e}")))?;
        if let Ok(mut cached) = self.cached.lock() {
            cached.insert(
                url,
                CachedCrl {
                    der: der.clone(),
                    refresh_after,
                },
            );
        }
        Ok(Some(der))
    }
}

async fn fetch_crl(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, SignatureError> {
    let unavailable = SignatureError::RevocationUnavailable;
    let response = http
        .get(url)
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| unavailable(format!("the CRL at {url} is unreachable: {e}")))?;
    if !response.status().is_success() {
        return Err(unavailable(format!(
            "the CRL at {url} answered HTTP {}",
            response.status()
        )));
    }
    if response
        .content_length()
        .is_some_and(|length| length > MAX_CRL_BYTES as u64)
    {
        return Err(unavailable(format!("the CRL at {url} is too large")));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| unavailable(format!("reading the CRL at {url}: {e}")))?;
    if body.len() > MAX_CRL_BYTES {
        return Err(unavailable(format!("the CRL at {url} is too large")));
    }
    Ok(body.to_vec())
}

/// Checks a CRL for `certificate`; returns when to fetch it again (half-way through
/// its validity).
fn check_crl(
    der: &[u8],
    certificate: &Certificate,
    issuer: &Certificate,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, String> {
    use der::Encode;
    let crl = x509_cert::crl::CertificateList::from_der(der)
        .map_err(|e| format!("does not parse: {e}"))?;
    let tbs = &crl.tbs_cert_list;
    let issuer_tbs = issuer.tbs_certificate();
    if &tbs.issuer != issuer_tbs.subject() {
        return Err(format!(
            "is issued by {}, not by the certificate's issuer {}",
            tbs.issuer,
            issuer_tbs.subject()
        ));
    }
    let scheme = eid_hsm::SignatureScheme::from_algorithm_oid(&crl.signature_algorithm.oid)
        .ok_or_else(|| format!("uses an unknown algorithm {}", crl.signature_algorithm.oid))?;
    let signed = tbs.to_der().map_err(|e| format!("does not encode: {e}"))?;
    eid_hsm::PublicKey::new(issuer_tbs.subject_public_key_info().clone())
        .verify(scheme, &signed, crl.signature.raw_bytes())
        .map_err(|_| "has a signature that does not verify with the issuer's key".to_owned())?;
    let this_update = OffsetDateTime::from(tbs.this_update.to_system_time());
    let next_update = tbs
        .next_update
        .map(|t| OffsetDateTime::from(t.to_system_time()))
        .ok_or("has no nextUpdate")?;
    // A CRL published a moment ago (the first fetch makes the CA publish it) may
    // carry a thisUpdate after the `now` this signature started with; other clocks
    // drift: the same allowance as for OCSP answers.
    let skew = time::Duration::seconds(CLOCK_SKEW_SECS);
    if now + skew < this_update || now >= next_update {
        return Err(format!(
            "is not current (thisUpdate {this_update}, nextUpdate {next_update})"
        ));
    }
    let serial = certificate.tbs_certificate().serial_number();
    if tbs
        .revoked_certificates
        .iter()
        .flatten()
        .any(|entry| &entry.serial_number == serial)
    {
        return Err(format!(
            "lists {} as revoked",
            certificate.tbs_certificate().subject()
        ));
    }
    Ok(this_update + (next_update - this_update) / 2)
}
