//! Validation of CAdES signatures (detached CMS over a document or its digest), with a
//! report in the terms of ETSI EN 319 102-1: an indication (TOTAL-PASSED,
//! INDETERMINATE, TOTAL-FAILED) with its sub-indication, the signer, the claimed
//! signing time, the signature time-stamp and the best-signature-time it proves, the
//! signer's certificate status at that time and where it came from, and the
//! signature's qualification.
//!
//! The checks, in the order EN 319 102-1's basic building blocks run them: format
//! (a CMS SignedData with one signer), identification of the signing certificate
//! (in the CMS, named by the SignerInfo and bound by signing-certificate-v2),
//! cryptographic verification (the message-digest attribute against the document,
//! the signature over the signed attributes), X.509 chain to a CA this service
//! trusts, the signature time-stamp (imprint over the signature value, the TSU's own
//! signature and chain), and revocation at the best-signature-time (an OCSP response
//! embedded in the signature (LT), else one in a PDF's DSS, else our responder now).
//! In a PDF, each document time-stamp (B-LTA) is reported on its own: its token
//! checked as a signature time-stamp is, over the bytes its ByteRange covers.

use cms::{
    cert::CertificateChoices,
    content_info::ContentInfo,
    signed_data::{SignerIdentifier, SignerInfo},
};
use der::{Decode, Encode, asn1::ObjectIdentifier};
use eid_ca::{
    CertificateSerial,
    ocsp::{
        asn1::{BasicOcspResponse, OcspResponse},
        client::{self, CheckedStatus},
    },
};
use eid_hsm::{PublicKey, SignatureScheme};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use x509_cert::{Certificate, attr::Attribute};

use crate::{
    SignatureError,
    cades::build::DigestAlgorithm,
    cms::{
        ID_AA_SIGNATURE_TIME_STAMP_TOKEN, ID_AA_SIGNING_CERTIFICATE_V2, ID_MESSAGE_DIGEST,
        ID_RI_OCSP_RESPONSE, ID_SIGNED_DATA, ID_SIGNING_TIME, RevocationInfoChoice, SignedData,
    },
    tsa::asn1::{ID_SHA256, ID_SHA384, ID_SHA512, SigningCertificateV2, TstInfo},
};

const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_QC_STATEMENTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.3");
const QC_COMPLIANCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.1862.1.1");
const QC_SSCD: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.1862.1.4");
const QC_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.1862.1.6");
const QC_TYPE_ESIGN: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.1862.1.6.1");
const QC_TYPE_ESEAL: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.1862.1.6.2");
const ID_KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
const ID_CE_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
/// certificateHold (RFC 5280 §5.3.1).
const CERTIFICATE_HOLD: u8 = 6;

/// EN 319 102-1 §5.1.2 main indications.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Indication {
    /// Every check passed.
    #[serde(rename = "TOTAL-PASSED")]
    TotalPassed,
    /// A check could not conclude (missing data, suspended certificate, ...).
    #[serde(rename = "INDETERMINATE")]
    Indeterminate,
    /// The signature is proven invalid.
    #[serde(rename = "TOTAL-FAILED")]
    TotalFailed,
}

/// EN 319 102-1 §5.1.3 sub-indications used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum SubIndication {
    /// Not a CMS SignedData, or not as this format wants.
    FormatFailure,
    /// The document does not match the message-digest attribute.
    HashFailure,
    /// The signature does not verify with the signer's key.
    SigCryptoFailure,
    /// The signing certificate is revoked and the signature was made after that.
    Revoked,
    /// The signing certificate is not in the signature or not bound to it.
    NoSigningCertificateFound,
    /// No chain to a trust anchor of this service.
    NoCertificateChainFound,
    /// The certificate is revoked and nothing proves the signature existed before.
    RevokedNoPoe,
    /// The certificate was not yet valid at the signing time.
    NotYetValid,
    /// The signing time is after the certificate's end and nothing proves otherwise.
    OutOfBoundsNoPoe,
    /// The certificate's status is not known yet (suspended, or no answer).
    TryLater,
    /// The signature's algorithm is not one this service validates.
    CryptoConstraintsFailureNoPoe,
    /// The signature does not meet the policy's constraints (here: a signature
    /// time-stamp that is present must verify).
    SigConstraintsFailure,
}

/// The signer, as the certificate names them.
#[derive(Clone, Debug, Serialize)]
pub struct Signer {
    /// The certificate's subject.
    pub subject: String,
    /// The certificate's serial number (hex).
    pub certificate_serial: String,
    /// The issuing CA.
    pub issuer: String,
}

/// The signature time-stamp.
#[derive(Clone, Debug, Serialize)]
pub struct TimeStampReport {
    /// genTime (RFC 3339).
    pub gen_time: String,
    /// The TSU's certificate subject.
    pub tsu: String,
    /// Whether it verified (imprint, TSU signature, chain, timeStamping usage).
    pub valid: bool,
    /// What failed, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The signer's certificate status at the best-signature-time.
#[derive(Clone, Debug, Serialize)]
pub struct CertificateStatus {
    /// `good`, `revoked`, `suspended` or `unknown`.
    pub status: &'static str,
    /// When it was revoked or suspended (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// `embedded-ocsp` (in the signature), `dss-ocsp` (in the PDF's document security
    /// store) or `online-ocsp` (asked now).
    pub source: &'static str,
}

/// One signature's report.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureReport {
    /// The main indication.
    pub indication: Indication,
    /// Why, unless TOTAL-PASSED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_indication: Option<SubIndication>,
    /// What was found wrong, in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// `CAdES-BASELINE-B`, `-T` or `-LT`, as far as the signature carries the parts
    /// (`PAdES-BASELINE-…` in a PDF, where `-LTA` means a valid document time-stamp
    /// covers the DSS added after the signature).
    pub format: &'static str,
    /// The signer, when the certificate was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<Signer>,
    /// The signing-time attribute (claimed by the signer, proves nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_signing_time: Option<String>,
    /// The earliest time the signature is proven to have existed: the time-stamp's
    /// genTime, else the validation time.
    pub best_signature_time: String,
    /// The signature time-stamp, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<TimeStampReport>,
    /// The signer's certificate status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_status: Option<CertificateStatus>,
    /// `QESig` (qualified certificate for e-signatures on a QSCD), `AdESig-QC`
    /// (qualified certificate, no QSCD), `AdESig`; for seals `QESeal`, `AdESeal-QC`,
    /// `AdESeal`; or `n/a` when the signature failed.
    pub qualification: &'static str,
    /// For a signature in a PDF: what of the file it covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdf: Option<PdfCoverage>,
}

/// What a PDF signature covers.
#[derive(Clone, Debug, Serialize)]
pub struct PdfCoverage {
    /// `/ByteRange`.
    pub byte_range: [usize; 4],
    /// Whether the signed bytes reach the end of the file; when not, revisions were
    /// added after the signature (a DSS, other signatures, or other changes: this
    /// report does not judge them).
    pub covers_whole_file: bool,
    /// Whether a document security store was added after the signature.
    pub dss_after: bool,
}

/// A PDF's document time-stamp (PAdES B-LTA): a token over the file as it was.
#[derive(Clone, Debug, Serialize)]
pub struct DocumentTimeStampReport {
    /// The token: genTime, TSU, whether it verified over the covered bytes.
    #[serde(flatten)]
    pub time_stamp: TimeStampReport,
    /// `/ByteRange`.
    pub byte_range: [usize; 4],
    /// Whether it covers the file to its end.
    pub covers_whole_file: bool,
}

/// The report of one validation request.
#[derive(Clone, Debug, Serialize)]
pub struct ValidationReport {
    /// The validation policy applied.
    pub policy: &'static str,
    /// When the validation ran (RFC 3339).
    pub validation_time: String,
    /// One entry per SignerInfo.
    pub signatures: Vec<SignatureReport>,
    /// A PDF's document time-stamps, in file order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub document_time_stamps: Vec<DocumentTimeStampReport>,
}

/// What the signature covers.
#[derive(Clone, Debug)]
pub enum Covered {
    /// The document itself.
    Document(Vec<u8>),
    /// Its digest, with the algorithm that made it.
    Digest(DigestAlgorithm, Vec<u8>),
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

/// A report under construction: the first failing check decides the indication.
struct Verdict {
    outcome: Option<(Indication, SubIndication)>,
    errors: Vec<String>,
}

impl Verdict {
    fn fail(&mut self, indication: Indication, sub: SubIndication, why: impl Into<String>) {
        self.errors.push(why.into());
        // TOTAL-FAILED outranks INDETERMINATE; the first of a rank stays.
        match self.outcome {
            None => self.outcome = Some((indication, sub)),
            Some((Indication::Indeterminate, _)) if indication == Indication::TotalFailed => {
                self.outcome = Some((indication, sub));
            }
            _ => {}
        }
    }
}

impl crate::Signatures {
    /// Validates a CAdES (detached CMS) signature over `covered`.
    pub async fn validate_cades(
        &self,
        signature: &[u8],
        covered: &Covered,
    ) -> Result<ValidationReport, SignatureError> {
        self.validate_cms(signature, covered, &[]).await
    }

    /// [`Self::validate_cades`], with OCSP responses a PDF's DSS holds (`archived`)
    /// as a source of the signer's status after those the CMS embeds.
    async fn validate_cms(
        &self,
        signature: &[u8],
        covered: &Covered,
        archived: &[Vec<u8>],
    ) -> Result<ValidationReport, SignatureError> {
        let now = self.context().clock.now();
        let signed_data = match parse_signed_data(signature) {
            Ok(signed_data) => signed_data,
            Err(why) => {
                return Ok(ValidationReport {
                    policy: POLICY,
                    validation_time: rfc3339(now),
                    signatures: vec![format_failure(now, why)],
                    document_time_stamps: Vec::new(),
                });
            }
        };
        let mut signatures = Vec::new();
        for signer_info in signed_data.signer_infos.0.iter() {
            signatures.push(
                self.validate_signer(&signed_data, signer_info, covered, archived, now)
                    .await,
            );
        }
        if signatures.is_empty() {
            signatures.push(format_failure(
                now,
                "the SignedData has no SignerInfo".into(),
            ));
        }
        Ok(ValidationReport {
            policy: POLICY,
            validation_time: rfc3339(now),
            signatures,
            document_time_stamps: Vec::new(),
        })
    }

    /// Validates every signature of a PDF (PAdES): each CMS over its ByteRange, as
    /// [`Self::validate_cades`] does, with the PAdES baseline level (LT when a DSS
    /// follows a time-stamped signature, LTA when a valid document time-stamp covers
    /// that DSS) and what of the file it covers; each document time-stamp's token
    /// verified over the bytes it covers.
    pub async fn validate_pades(&self, pdf: &[u8]) -> Result<ValidationReport, SignatureError> {
        let now = self.context().clock.now();
        let found = crate::pades::embedded::signatures(pdf)?;
        if found.is_empty() {
            return Err(SignatureError::BadRequest(
                "the PDF carries no signature (no signed /ByteRange)".into(),
            ));
        }
        // The DSS's OCSP responses vouch for a signer when the CMS carries none, so an
        // LT signature validates with our responder gone. A DSS lopdf cannot read
        // leaves the CMS and the responder as sources (the signatures are still found
        // and judged from the file's bytes). Reading the PDF's objects is CPU work: off
        // the executor.
        let copy = pdf.to_vec();
        let archived = tokio::task::spawn_blocking(move || {
            crate::pades::dss::ocsp_responses(&copy).unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        let mut signatures = Vec::new();
        let mut document_time_stamps = Vec::new();
        for embedded in found {
            if is_time_stamp_token(&embedded.cms) {
                let checked = der::Any::from_der(&embedded.cms)
                    .map_err(|e| e.to_string())
                    .and_then(|token| self.check_time_stamp(&token, &embedded.signed_bytes));
                let time_stamp = match checked {
                    Ok((report, _)) => report,
                    Err(why) => TimeStampReport {
                        gen_time: String::new(),
                        tsu: String::new(),
                        valid: false,
                        problem: Some(why),
                    },
                };
                document_time_stamps.push(DocumentTimeStampReport {
                    time_stamp,
                    byte_range: embedded.byte_range,
                    covers_whole_file: embedded.covers_whole_file,
                });
                continue;
            }
            let report = self
                .validate_cms(
                    &embedded.cms,
                    &Covered::Document(embedded.signed_bytes),
                    &archived,
                )
                .await?;
            for mut entry in report.signatures {
                entry.format = match (entry.format, embedded.dss_after) {
                    ("CAdES-BASELINE-B", _) => "PAdES-BASELINE-B",
                    ("CAdES-BASELINE-T", false) => "PAdES-BASELINE-T",
                    ("CAdES-BASELINE-T" | "CAdES-BASELINE-LT", _) => "PAdES-BASELINE-LT",
                    (other, _) => other,
                };
                entry.pdf = Some(PdfCoverage {
                    byte_range: embedded.byte_range,
                    covers_whole_file: embedded.covers_whole_file,
                    dss_after: embedded.dss_after,
                });
                signatures.push(entry);
            }
        }
        // LTA: a valid document time-stamp after the signature whose bytes take in the
        // DSS added after it.
        for entry in &mut signatures {
            let Some(coverage) = entry.pdf.as_ref() else {
                continue;
            };
            let signed_end = coverage.byte_range[2] + coverage.byte_range[3];
            let dss_stamped = document_time_stamps.iter().any(|stamp| {
                let end = stamp.byte_range[2] + stamp.byte_range[3];
                stamp.time_stamp.valid
                    && end > signed_end
                    && pdf[signed_end..end].windows(4).any(|w| w == b"/DSS")
            });
            if entry.format == "PAdES-BASELINE-LT" && dss_stamped {
                entry.format = "PAdES-BASELINE-LTA";
            }
        }
        Ok(ValidationReport {
            policy: POLICY,
            validation_time: rfc3339(now),
            signatures,
            document_time_stamps,
        })
    }

    async fn validate_signer(
        &self,
        signed_data: &SignedData,
        signer_info: &SignerInfo,
        covered: &Covered,
        archived: &[Vec<u8>],
        now: OffsetDateTime,
    ) -> SignatureReport {
        let mut verdict = Verdict {
            outcome: None,
            errors: Vec::new(),
        };
        let certificates: Vec<Certificate> = signed_data
            .certificates
            .iter()
            .flat_map(|set| set.0.iter())
            .filter_map(|choice| match choice {
                CertificateChoices::Certificate(certificate) => Some(certificate.clone()),
                _ => None,
            })
            .collect();
        let attributes: Vec<Attribute> = signer_info
            .signed_attrs
            .iter()
            .flat_map(|attrs| attrs.iter().cloned())
            .collect();
        let claimed_signing_time = attribute_value(&attributes, ID_SIGNING_TIME)
            .and_then(|any| x509_cert::time::Time::from_der(&any).ok())
            .map(|time| rfc3339(OffsetDateTime::from(time.to_system_time())));

        // Identification of the signing certificate.
        let certificate = certificates
            .iter()
            .find(|certificate| identifies(&signer_info.sid, certificate))
            .cloned();
        let Some(certificate) = certificate else {
            verdict.fail(
                Indication::Indeterminate,
                SubIndication::NoSigningCertificateFound,
                "the signature does not carry the certificate its SignerInfo names",
            );
            return finish(verdict, "CAdES-BASELINE-B", None, claimed_signing_time, now);
        };
        let signer = Signer {
            subject: certificate.tbs_certificate().subject().to_string(),
            certificate_serial: CertificateSerial::from_certificate(
                certificate.tbs_certificate().serial_number(),
            )
            .to_hex(),
            issuer: certificate.tbs_certificate().issuer().to_string(),
        };
        if let Err(why) = check_signing_certificate_v2(&attributes, &certificate) {
            verdict.fail(
                Indication::Indeterminate,
                SubIndication::NoSigningCertificateFound,
                why,
            );
        }

        // Cryptographic verification.
        let digest_algorithm = digest_of(&signer_info.digest_alg.oid);
        match (
            digest_algorithm,
            attribute_value(&attributes, ID_MESSAGE_DIGEST),
        ) {
            (None, _) => verdict.fail(
                Indication::Indeterminate,
                SubIndication::CryptoConstraintsFailureNoPoe,
                format!(
                    "digest algorithm {} is not one this service validates",
                    signer_info.digest_alg.oid
                ),
            ),
            (Some(_), None) => verdict.fail(
                Indication::TotalFailed,
                SubIndication::FormatFailure,
                "the signed attributes carry no message-digest",
            ),
            (Some(algorithm), Some(value)) => {
                let claimed = der::asn1::OctetString::from_der(&value)
                    .map(|octets| octets.as_bytes().to_vec())
                    .unwrap_or_default();
                let actual = match covered {
                    Covered::Document(document) => Some(algorithm.digest(document)),
                    Covered::Digest(given, digest) if *given == algorithm => Some(digest.clone()),
                    Covered::Digest(given, _) => {
                        verdict.fail(
                            Indication::Indeterminate,
                            SubIndication::FormatFailure,
                            format!(
                                "the signature digests with {}, the request gives a {} digest: send the document",
                                algorithm.name(),
                                given.name()
                            ),
                        );
                        None
                    }
                };
                if actual.is_some_and(|actual| actual != claimed) {
                    verdict.fail(
                        Indication::TotalFailed,
                        SubIndication::HashFailure,
                        "the document does not match the signature's message-digest",
                    );
                }
            }
        }
        let signed = signer_info
            .signed_attrs
            .as_ref()
            .and_then(|attrs| attrs.to_der().ok());
        let scheme = SignatureScheme::from_algorithm_oid(&signer_info.signature_algorithm.oid)
            .or_else(|| {
                // ecPublicKey as the signature algorithm: the digest decides.
                crate::cades::build::scheme_for(&certificate).ok()
            });
        match (signed, scheme) {
            (None, _) => verdict.fail(
                Indication::TotalFailed,
                SubIndication::FormatFailure,
                "the SignerInfo has no signed attributes (CAdES requires them)",
            ),
            (Some(_), None) => verdict.fail(
                Indication::Indeterminate,
                SubIndication::CryptoConstraintsFailureNoPoe,
                format!(
                    "signature algorithm {} is not one this service validates",
                    signer_info.signature_algorithm.oid
                ),
            ),
            (Some(signed), Some(scheme)) => {
                let key = PublicKey::new(
                    certificate
                        .tbs_certificate()
                        .subject_public_key_info()
                        .clone(),
                );
                if key
                    .verify(scheme, &signed, signer_info.signature.as_bytes())
                    .is_err()
                {
                    verdict.fail(
                        Indication::TotalFailed,
                        SubIndication::SigCryptoFailure,
                        "the signature value does not verify with the signer's key",
                    );
                }
            }
        }

        // The signature time-stamp proves when the signature existed.
        let timestamp = signer_info
            .unsigned_attrs
            .iter()
            .flat_map(|attrs| attrs.iter())
            .find(|attribute| attribute.oid == ID_AA_SIGNATURE_TIME_STAMP_TOKEN)
            .and_then(|attribute| attribute.values.iter().next())
            .map(|token| self.check_time_stamp(token, signer_info.signature.as_bytes()));
        let best_signature_time = match &timestamp {
            Some(Ok((report, at))) if report.valid => *at,
            _ => now,
        };
        if let Some(Ok((report, _))) = &timestamp
            && !report.valid
        {
            verdict.fail(
                Indication::Indeterminate,
                SubIndication::SigConstraintsFailure,
                format!(
                    "the signature time-stamp does not verify: {}",
                    report.problem.clone().unwrap_or_default()
                ),
            );
        }
        if let Some(Err(why)) = &timestamp {
            verdict.fail(
                Indication::Indeterminate,
                SubIndication::FormatFailure,
                format!("the signature time-stamp is unreadable: {why}"),
            );
        }
        let timestamp = timestamp.and_then(Result::ok).map(|(report, _)| report);

        // The chain, at the best-signature-time.
        let issuer = self.trust.issuer_of(&certificate).cloned();
        let anchored = issuer.is_some() && {
            let chain = self.trust.chain_of(&certificate);
            chain.last().is_some_and(|top| {
                top.tbs_certificate().issuer() == top.tbs_certificate().subject()
            })
        };
        if !anchored {
            verdict.fail(
                Indication::Indeterminate,
                SubIndication::NoCertificateChainFound,
                "the signer's certificate does not chain to a CA this service trusts",
            );
        }
        let validity = certificate.tbs_certificate().validity();
        let not_before = OffsetDateTime::from(validity.not_before.to_system_time());
        let not_after = OffsetDateTime::from(validity.not_after.to_system_time());
        if best_signature_time < not_before {
            verdict.fail(
                Indication::TotalFailed,
                SubIndication::NotYetValid,
                format!(
                    "the certificate was not valid before {}",
                    rfc3339(not_before)
                ),
            );
        } else if best_signature_time > not_after {
            verdict.fail(
                Indication::Indeterminate,
                SubIndication::OutOfBoundsNoPoe,
                format!(
                    "the certificate expired at {} and nothing proves the signature existed before",
                    rfc3339(not_after)
                ),
            );
        }

        // Revocation: the embedded OCSP response (LT), else one in the PDF's DSS, else
        // our responder now.
        let embedded: Vec<Vec<u8>> = signed_data
            .crls
            .iter()
            .flat_map(|set| set.iter())
            .filter_map(|choice| match choice {
                RevocationInfoChoice::Other(other)
                    if other.other_rev_info_format == ID_RI_OCSP_RESPONSE =>
                {
                    other.other_rev_info.to_der().ok()
                }
                _ => None,
            })
            .collect();
        let mut certificate_status = None;
        if let Some(issuer) = &issuer {
            certificate_status = self
                .status_of(
                    &certificate,
                    issuer,
                    (&embedded, archived),
                    timestamp
                        .as_ref()
                        .is_some_and(|report| report.valid)
                        .then_some(best_signature_time),
                    now,
                )
                .await
                .map_err(|why| {
                    verdict.fail(Indication::Indeterminate, SubIndication::TryLater, why)
                })
                .ok();
        }
        if let Some((status, since)) = certificate_status
            .as_ref()
            .map(|s| (s.status, s.since_time))
        {
            match (status, since) {
                ("suspended", _) => verdict.fail(
                    Indication::Indeterminate,
                    SubIndication::TryLater,
                    "the signer's certificate is suspended",
                ),
                ("revoked", Some(at)) if at <= best_signature_time && timestamp.is_some() => {
                    verdict.fail(
                        Indication::TotalFailed,
                        SubIndication::Revoked,
                        format!(
                            "the signer's certificate was revoked at {}, before the time-stamp proves the signature existed",
                            rfc3339(at)
                        ),
                    );
                }
                ("revoked", Some(at)) if at > best_signature_time => {}
                ("revoked", _) => verdict.fail(
                    Indication::Indeterminate,
                    SubIndication::RevokedNoPoe,
                    "the signer's certificate is revoked and nothing proves the signature existed before",
                ),
                ("unknown", _) => verdict.fail(
                    Indication::Indeterminate,
                    SubIndication::TryLater,
                    "the OCSP responder does not know the signer's certificate",
                ),
                _ => {}
            }
        }

        let format = if !embedded.is_empty() && timestamp.is_some() {
            "CAdES-BASELINE-LT"
        } else if timestamp.is_some() {
            "CAdES-BASELINE-T"
        } else {
            "CAdES-BASELINE-B"
        };
        let mut report = finish(
            verdict,
            format,
            Some(signer),
            claimed_signing_time,
            best_signature_time,
        );
        report.timestamp = timestamp;
        report.certificate_status = certificate_status.map(|status| CertificateStatus {
            status: status.status,
            since: status.since_time.map(rfc3339),
            source: status.source,
        });
        if report.indication == Indication::TotalPassed {
            report.qualification = qualification(&certificate);
        }
        report
    }

    /// Verifies a signature time-stamp token over `signature_value`; returns what it
    /// says and its genTime.
    pub(crate) fn check_time_stamp(
        &self,
        token: &der::Any,
        signature_value: &[u8],
    ) -> Result<(TimeStampReport, OffsetDateTime), String> {
        let der = token.to_der().map_err(|e| e.to_string())?;
        let signed_data = parse_signed_data(&der)?;
        let content = signed_data
            .encap_content_info
            .econtent
            .as_ref()
            .filter(|_| signed_data.encap_content_info.econtent_type == ID_CT_TST_INFO)
            .ok_or("the token carries no TSTInfo")?;
        let tst_der =
            der::asn1::OctetString::from_der(&content.to_der().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        let tst = TstInfo::from_der(tst_der.as_bytes()).map_err(|e| e.to_string())?;
        let gen_time = tst.gen_time.to_time().ok_or("genTime is out of range")?;
        let signer_info = signed_data
            .signer_infos
            .0
            .iter()
            .next()
            .ok_or("the token has no SignerInfo")?;
        let tsu = signed_data
            .certificates
            .iter()
            .flat_map(|set| set.0.iter())
            .filter_map(|choice| match choice {
                CertificateChoices::Certificate(certificate) => Some(certificate),
                _ => None,
            })
            .find(|certificate| identifies(&signer_info.sid, certificate))
            .ok_or("the token does not carry the TSU's certificate")?;
        let mut report = TimeStampReport {
            gen_time: rfc3339(gen_time),
            tsu: tsu.tbs_certificate().subject().to_string(),
            valid: false,
            problem: None,
        };
        let problem = (|| -> Result<(), String> {
            let imprint = digest_of(&tst.message_imprint.hash_algorithm.oid)
                .ok_or("the imprint's hash algorithm is not supported")?
                .digest(signature_value);
            if imprint != tst.message_imprint.hashed_message.as_bytes() {
                return Err("its message imprint is not the hash of this signature value".into());
            }
            let attributes: Vec<Attribute> = signer_info
                .signed_attrs
                .iter()
                .flat_map(|attrs| attrs.iter().cloned())
                .collect();
            let digest = digest_of(&signer_info.digest_alg.oid)
                .ok_or("the token's digest algorithm is not supported")?;
            let claimed = attribute_value(&attributes, ID_MESSAGE_DIGEST)
                .and_then(|any| der::asn1::OctetString::from_der(&any).ok())
                .ok_or("the token's signed attributes carry no message-digest")?;
            if digest.digest(tst_der.as_bytes()) != claimed.as_bytes() {
                return Err("its message-digest does not match its TSTInfo".into());
            }
            let signed = signer_info
                .signed_attrs
                .as_ref()
                .ok_or("the token has no signed attributes")?
                .to_der()
                .map_err(|e| e.to_string())?;
            let scheme = SignatureScheme::from_algorithm_oid(&signer_info.signature_algorithm.oid)
                .or_else(|| crate::cades::build::scheme_for(tsu).ok())
                .ok_or("the token's signature algorithm is not supported")?;
            PublicKey::new(tsu.tbs_certificate().subject_public_key_info().clone())
                .verify(scheme, &signed, signer_info.signature.as_bytes())
                .map_err(|_| "the TSU's signature does not verify".to_owned())?;
            if !time_stamping(tsu) {
                return Err("the TSU certificate is not for time-stamping".into());
            }
            let chain = self.trust.chain_of(tsu);
            let anchored = chain.last().is_some_and(|top| {
                top.tbs_certificate().issuer() == top.tbs_certificate().subject()
            });
            if !anchored {
                return Err(
                    "the TSU certificate does not chain to a CA this service trusts".into(),
                );
            }
            let validity = tsu.tbs_certificate().validity();
            let from = OffsetDateTime::from(validity.not_before.to_system_time());
            let to = OffsetDateTime::from(validity.not_after.to_system_time());
            if gen_time < from || gen_time > to {
                return Err("genTime is outside the TSU certificate's validity".into());
            }
            Ok(())
        })();
        match problem {
            Ok(()) => report.valid = true,
            Err(why) => report.problem = Some(why),
        }
        Ok((report, gen_time))
    }

    /// The signer's status: from an OCSP response the signature carries (`embedded`)
    /// or the PDF's DSS keeps (`archived`), else from the responder now. When a
    /// time-stamp proves the signature existed at `proven`, only a response issued then
    /// or later counts (EN 319 102-1 revocation freshness, with a maximum freshness of
    /// zero): a "good" issued before says nothing of a revocation between it and the
    /// signature. A revocation for good counts whenever it was reported. Compared in
    /// whole seconds, as responses give their time.
    async fn status_of(
        &self,
        certificate: &Certificate,
        issuer: &Certificate,
        (embedded, archived): (&[Vec<u8>], &[Vec<u8>]),
        proven: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<Status, String> {
        let serial =
            CertificateSerial::from_certificate(certificate.tbs_certificate().serial_number());
        let id = client::cert_id(issuer, serial).map_err(|e| e.to_string())?;
        let proven = proven.map(|at| at.replace_nanosecond(0).unwrap_or(at));
        let fresh = |at: OffsetDateTime| proven.is_none_or(|proven| at >= proven);
        let sourced = embedded
            .iter()
            .map(|r| (r, "embedded-ocsp"))
            .chain(archived.iter().map(|r| (r, "dss-ocsp")));
        let mut stale = None;
        for (response, source) in sourced {
            // An archived answer is judged at its own thisUpdate: it proves the status
            // then, however old it is now.
            let Some(at) = this_update(response) else {
                continue;
            };
            if let Ok(status) = client::check_response(response, issuer, &id, at) {
                // A revocation (not a hold) stays true whenever it was reported: only
                // other answers must be fresh.
                let revoked_for_good = matches!(status, CheckedStatus::Revoked { reason, .. }
                    if reason != Some(CERTIFICATE_HOLD));
                if !fresh(at) && !revoked_for_good {
                    stale = Some((source, at));
                    continue;
                }
                return Ok(Status::from_checked(status, source));
            }
        }
        let stale_note = stale
            .map(|(source, at)| {
                format!(
                    " (the {source} response was issued at {}, before the time-stamp)",
                    rfc3339(at)
                )
            })
            .unwrap_or_default();
        let url = client::ocsp_url(certificate).ok_or_else(|| {
            format!(
                "the certificate names no OCSP responder and the signature carries no status issued after its time-stamp{stale_note}"
            )
        })?;
        // With a nonce: answered when asked, so issued after the time-stamp.
        let request = client::build_fresh_request(&id).map_err(|e| e.to_string())?;
        let body = self
            .http
            .post(&url)
            .header("content-type", "application/ocsp-request")
            .body(request)
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("the OCSP responder {url} is unreachable{stale_note}: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("reading the OCSP response: {e}"))?;
        let status = client::check_response(&body, issuer, &id, now)
            .map_err(|e| format!("the OCSP response is unusable: {e}"))?;
        if let Some(at) = this_update(&body).filter(|at| !fresh(*at)) {
            return Err(format!(
                "the OCSP responder's answer was issued at {}, before the signature's time-stamp",
                rfc3339(at)
            ));
        }
        Ok(Status::from_checked(status, "online-ocsp"))
    }
}

/// The policy this service validates against.
const POLICY: &str = "eid: EN 319 102-1 basic validation with time and LT data; trust anchors are this authority's CAs";

struct Status {
    status: &'static str,
    since_time: Option<OffsetDateTime>,
    source: &'static str,
}

impl Status {
    fn from_checked(status: CheckedStatus, source: &'static str) -> Self {
        let (status, since_time) = match status {
            CheckedStatus::Good => ("good", None),
            CheckedStatus::Revoked {
                at,
                reason: Some(CERTIFICATE_HOLD),
            } => ("suspended", Some(at)),
            CheckedStatus::Revoked { at, .. } => ("revoked", Some(at)),
            CheckedStatus::Unknown => ("unknown", None),
        };
        Self {
            status,
            since_time,
            source,
        }
    }
}

fn this_update(response: &[u8]) -> Option<OffsetDateTime> {
    let response = OcspResponse::from_der(response).ok()?;
    let basic = BasicOcspResponse::from_der(response.response_bytes?.response.as_bytes()).ok()?;
    let single = basic.tbs_response_data.responses.first()?;
    Some(OffsetDateTime::from(single.this_update.to_system_time()))
}

fn format_failure(now: OffsetDateTime, why: String) -> SignatureReport {
    let mut verdict = Verdict {
        outcome: None,
        errors: Vec::new(),
    };
    verdict.fail(Indication::TotalFailed, SubIndication::FormatFailure, why);
    finish(verdict, "unknown", None, None, now)
}

fn finish(
    verdict: Verdict,
    format: &'static str,
    signer: Option<Signer>,
    claimed_signing_time: Option<String>,
    best_signature_time: OffsetDateTime,
) -> SignatureReport {
    let (indication, sub_indication) = match verdict.outcome {
        Some((indication, sub)) => (indication, Some(sub)),
        None => (Indication::TotalPassed, None),
    };
    SignatureReport {
        indication,
        sub_indication,
        errors: verdict.errors,
        format,
        signer,
        claimed_signing_time,
        best_signature_time: rfc3339(best_signature_time),
        timestamp: None,
        certificate_status: None,
        qualification: "n/a",
        pdf: None,
    }
}

/// Whether `cms` is a time-stamp token (a SignedData over a TSTInfo): what a document
/// time-stamp's /Contents holds.
pub(crate) fn is_time_stamp_token(cms: &[u8]) -> bool {
    parse_signed_data(cms)
        .is_ok_and(|signed_data| signed_data.encap_content_info.econtent_type == ID_CT_TST_INFO)
}

pub(crate) fn parse_signed_data(der: &[u8]) -> Result<SignedData, String> {
    let content_info =
        ContentInfo::from_der(der).map_err(|e| format!("not a CMS ContentInfo: {e}"))?;
    if content_info.content_type != ID_SIGNED_DATA {
        return Err(format!(
            "the CMS content is {}, not SignedData",
            content_info.content_type
        ));
    }
    let inner = content_info
        .content
        .to_der()
        .map_err(|e| format!("re-encoding the content: {e}"))?;
    SignedData::from_der(&inner).map_err(|e| format!("not a CMS SignedData: {e}"))
}

pub(crate) fn identifies(sid: &SignerIdentifier, certificate: &Certificate) -> bool {
    let tbs = certificate.tbs_certificate();
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(named) => {
            &named.issuer == tbs.issuer() && &named.serial_number == tbs.serial_number()
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            eid_ca::extensions::key_identifier(&tbs.subject_public_key_info().clone())
                == ski.0.as_bytes()
        }
    }
}

fn attribute_value(attributes: &[Attribute], oid: ObjectIdentifier) -> Option<Vec<u8>> {
    attributes
        .iter()
        .find(|attribute| attribute.oid == oid)
        .and_then(|attribute| attribute.values.iter().next())
        .and_then(|value| value.to_der().ok())
}

fn digest_of(oid: &ObjectIdentifier) -> Option<DigestAlgorithm> {
    match *oid {
        ID_SHA256 => Some(DigestAlgorithm::Sha256),
        ID_SHA384 => Some(DigestAlgorithm::Sha384),
        ID_SHA512 => Some(DigestAlgorithm::Sha512),
        _ => None,
    }
}

/// signing-certificate-v2 must name this certificate first (EN 319 122-1 §5.2.2.3).
fn check_signing_certificate_v2(
    attributes: &[Attribute],
    certificate: &Certificate,
) -> Result<(), String> {
    let value = attribute_value(attributes, ID_AA_SIGNING_CERTIFICATE_V2)
        .ok_or("the signed attributes carry no signing-certificate-v2")?;
    let ess = SigningCertificateV2::from_der(&value)
        .map_err(|e| format!("signing-certificate-v2 is malformed: {e}"))?;
    let first = ess
        .certs
        .first()
        .ok_or("signing-certificate-v2 names no certificate")?;
    let algorithm = match &first.hash_algorithm {
        None => DigestAlgorithm::Sha256,
        Some(identifier) => {
            digest_of(&identifier.oid).ok_or("signing-certificate-v2 uses an unsupported hash")?
        }
    };
    let der = certificate.to_der().map_err(|e| e.to_string())?;
    if algorithm.digest(&der) != first.cert_hash.as_bytes() {
        return Err("signing-certificate-v2 names another certificate than the signer's".into());
    }
    Ok(())
}

fn time_stamping(certificate: &Certificate) -> bool {
    certificate
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .find(|extension| extension.extn_id == ID_CE_EXT_KEY_USAGE)
        .and_then(|extension| {
            x509_cert::ext::pkix::ExtendedKeyUsage::from_der(extension.extn_value.as_bytes()).ok()
        })
        .is_some_and(|usage| usage.0.contains(&ID_KP_TIME_STAMPING))
}

/// `QCStatement ::= SEQUENCE { statementId, statementInfo ANY OPTIONAL }` (RFC 3739).
#[derive(Clone, Debug, der::Sequence)]
struct QcStatement {
    statement_id: ObjectIdentifier,
    #[asn1(optional = "true")]
    statement_info: Option<der::Any>,
}

/// EN 319 412-5 statements of the signer's certificate: a qualified certificate for
/// electronic signatures (or seals) whose key is on a QSCD makes a qualified signature
/// (or seal). The type is the QcType statement's; a certificate of neither is taken as
/// a signature's.
fn qualification(certificate: &Certificate) -> &'static str {
    let statements: Vec<QcStatement> = certificate
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .find(|extension| extension.extn_id == ID_QC_STATEMENTS)
        .and_then(|extension| Vec::<QcStatement>::from_der(extension.extn_value.as_bytes()).ok())
        .unwrap_or_default();
    let has = |oid| statements.iter().any(|s| s.statement_id == oid);
    let types = statements
        .iter()
        .find(|s| s.statement_id == QC_TYPE)
        .and_then(|s| s.statement_info.as_ref())
        .and_then(|info| Vec::<ObjectIdentifier>::from_der(&info.to_der().ok()?).ok())
        .unwrap_or_default();
    let seal = types.contains(&QC_TYPE_ESEAL) && !types.contains(&QC_TYPE_ESIGN);
    let qualified = has(QC_COMPLIANCE) && (seal || types.contains(&QC_TYPE_ESIGN));
    match (seal, qualified, has(QC_SSCD)) {
        (false, true, true) => "QESig",
        (false, true, false) => "AdESig-QC",
        (false, false, _) => "AdESig",
        (true, true, true) => "QESeal",
        (true, true, false) => "AdESeal-QC",
        (true, false, _) => "AdESeal",
    }
}

/// A short fingerprint of the validated signature for logs and audit (never the data).
pub(crate) fn fingerprint(signature: &[u8]) -> String {
    hex::encode(&Sha256::digest(signature)[..8])
}
