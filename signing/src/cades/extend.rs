//! Extending signatures (augmentation): a detached CAdES signature to LT, its
//! validation data added to the CMS; the signatures of a signed PDF (ETSI EN 319 142-1
//! §5.4) to B-LT, one DSS revision with every signature's validation data as it
//! stands now (signer's chain, its OCSP response from our responder, the CAs' CRLs, the
//! TSUs' certificates and CRLs); to B-LTA, that and then a document time-stamp over the
//! whole file. Run again on a B-LTA file, it renews the archive: the last document
//! time-stamp's TSU data goes into the DSS and a new document time-stamp covers it.
//!
//! Only signatures that validate (TOTAL-PASSED, every one in a PDF) and carry a
//! signature time-stamp are extended: validation data added to a failing signature
//! would only dress it up, and B-B has no time the data could be judged at.

use der::Encode;
use eid_core::{AuditEvent, audit};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;

use super::{Level, Signatures, build::Additions, revocation};
use crate::{
    SignatureError,
    cms::{ID_AA_SIGNATURE_TIME_STAMP_TOKEN, SignedData},
    pades::{self, ValidationMaterial},
    validation::{self, Indication},
};

/// A PDF whose signatures were extended.
#[derive(Debug)]
pub struct Extended {
    /// The level reached.
    pub level: Level,
    /// The extended PDF: the input's bytes, then the new revisions.
    pub pdf: Vec<u8>,
    /// How many signatures it carries.
    pub signatures: usize,
    /// How many document time-stamps it carries now.
    pub document_time_stamps: usize,
}

fn not_extendable(why: String) -> SignatureError {
    SignatureError::NotExtendable(why)
}

/// The certificate of `signed_data`'s (first) signer, found among the certificates it
/// carries.
fn signer_certificate(signed_data: &SignedData) -> Option<Certificate> {
    let signer_info = signed_data.signer_infos.0.iter().next()?;
    signed_data
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|choice| match choice {
            cms::cert::CertificateChoices::Certificate(certificate) => Some(certificate),
            _ => None,
        })
        .find(|certificate| validation::identifies(&signer_info.sid, certificate))
        .cloned()
}

/// The signature time-stamp token of `signed_data`'s (first) signer, with the
/// signature value it covers.
fn signature_time_stamp(signed_data: &SignedData) -> Option<(der::Any, Vec<u8>)> {
    let signer_info = signed_data.signer_infos.0.iter().next()?;
    let token = signer_info
        .unsigned_attrs
        .iter()
        .flat_map(|attrs| attrs.iter())
        .find(|attribute| attribute.oid == ID_AA_SIGNATURE_TIME_STAMP_TOKEN)?
        .values
        .iter()
        .next()?
        .clone();
    Some((token, signer_info.signature.as_bytes().to_vec()))
}

/// The TSU certificate of a signature time-stamp token.
fn time_stamp_unit(token: &der::Any) -> Option<Certificate> {
    signer_certificate(&validation::parse_signed_data(&token.to_der().ok()?).ok()?)
}

/// Refuses a report unless every signature in it passed and is time-stamped.
fn check_extendable(report: &validation::ValidationReport) -> Result<(), SignatureError> {
    for (index, entry) in report.signatures.iter().enumerate() {
        let number = index + 1;
        if entry.indication != Indication::TotalPassed {
            return Err(not_extendable(format!(
                "signature {number} does not validate ({:?}, {:?}): {}",
                entry.indication,
                entry.sub_indication,
                entry.errors.join("; ")
            )));
        }
        if entry.timestamp.is_none() {
            return Err(not_extendable(format!(
                "signature {number} has no signature time-stamp (B-B): only a time-stamped \
                 signature (T and above) is extended"
            )));
        }
    }
    Ok(())
}

impl Signatures {
    /// The LT validation data of the signer of `signed_data` as it stands now (its
    /// chain, its OCSP response from our responder, the CAs' CRLs, its time-stamp
    /// unit's certificate and CRLs) into `material`; the signer's serial (hex).
    async fn signature_material(
        &self,
        signed_data: &SignedData,
        material: &mut Additions,
        now: time::OffsetDateTime,
    ) -> Result<String, SignatureError> {
        let certificate = signer_certificate(signed_data).ok_or_else(|| {
            not_extendable("a signature does not carry its signer's certificate".into())
        })?;
        let issuer = self.trust.issuer_of(&certificate).ok_or_else(|| {
            not_extendable("a signer's certificate is not from a CA this service trusts".into())
        })?;
        // When the signature time-stamp proves the signature existed: a revocation
        // after it leaves the signature standing, and the responder's answer is the
        // evidence of when (kept, as a good one is); revoked before it, suspended or
        // unknown, the signer is not extended.
        let (token, value) = signature_time_stamp(signed_data)
            .ok_or_else(|| not_extendable("a signature has no signature time-stamp".into()))?;
        let proven = match self.check_time_stamp(&token, &value) {
            Ok((report, at)) if report.valid => at,
            Ok((report, _)) => {
                return Err(not_extendable(format!(
                    "a signature time-stamp does not verify: {}",
                    report.problem.unwrap_or_default()
                )));
            }
            Err(why) => {
                return Err(not_extendable(format!(
                    "a signature time-stamp is unreadable: {why}"
                )));
            }
        };
        let (status, answer) = revocation::ask(
            self.responders(),
            &certificate,
            issuer,
            now,
            revocation::Freshness::Fresh,
        )
        .await?;
        if !revocation::revoked_after(&status, proven)
            && let Some(refusal) = revocation::refusal(&status)
        {
            return Err(refusal);
        }
        material.certificates.push(certificate.clone());
        material
            .certificates
            .extend(self.trust.chain_of(&certificate));
        self.add_signer_material(&certificate, &answer, material, now)
            .await?;
        let tsu = time_stamp_unit(&token).into_iter().collect::<Vec<_>>();
        self.add_time_stamp_material(&tsu, material, now).await?;
        Ok(hex::encode(
            certificate.tbs_certificate().serial_number().as_bytes(),
        ))
    }

    /// Extends a detached CAdES signature over `covered` to LT for `client`: its
    /// signer's and TSU's validation data added to the CMS (outside what the signature
    /// covers).
    pub async fn extend_cades(
        &self,
        client: &str,
        signature: &[u8],
        covered: &validation::Covered,
        level: Level,
    ) -> Result<Vec<u8>, SignatureError> {
        if level != Level::Lt {
            return Err(SignatureError::BadRequest(format!(
                "a CAdES signature is extended to LT, not {} (LTA is for PDFs)",
                level.name()
            )));
        }
        let now = self.ctx.clock.now();
        let report = self.validate_cades(signature, covered).await?;
        check_extendable(&report)?;
        let signed_data = validation::parse_signed_data(signature)
            .map_err(|why| not_extendable(format!("the signature: {why}")))?;
        if signed_data.signer_infos.0.len() != 1 {
            return Err(not_extendable(
                "only a signature with one signer is extended".into(),
            ));
        }
        let mut additions = Additions::default();
        let signer = self
            .signature_material(&signed_data, &mut additions, now)
            .await?;
        let extended = super::build::add_validation_data(signature, &additions)?;
        let event = AuditEvent::new(
            format!("service:{client}"),
            "signature.extend",
            "signature",
            validation::fingerprint(signature),
        )
        .details(serde_json::json!({
            "format": "cades",
            "level": level.name(),
            "signer_serials": [signer],
            "signature_sha256": hex::encode(Sha256::digest(signature)),
            "extended_signature_sha256": hex::encode(Sha256::digest(&extended)),
        }));
        audit::record(&self.ctx.db, self.ctx.clock.as_ref(), &event).await?;
        Ok(extended)
    }

    /// Extends every signature of `pdf` to `level` (LT or LTA) for `client`.
    pub async fn extend_pdf(
        &self,
        client: &str,
        pdf: Vec<u8>,
        level: Level,
    ) -> Result<Extended, SignatureError> {
        if !level.long_term() {
            return Err(SignatureError::BadRequest(format!(
                "a PDF's signatures are extended to LT or LTA, not {}",
                level.name()
            )));
        }
        pades::check_size(&pdf)?;
        let now = self.ctx.clock.now();
        let report = self.validate_pades(&pdf).await?;
        if report.signatures.is_empty() {
            return Err(not_extendable(
                "the PDF carries document time-stamps but no signature".into(),
            ));
        }
        check_extendable(&report)?;

        let found = pades::embedded::signatures(&pdf)?;
        let mut materials: Vec<(Vec<u8>, ValidationMaterial)> = Vec::new();
        let mut signers = Vec::new();
        for embedded in &found {
            let signed_data = validation::parse_signed_data(&embedded.cms)
                .map_err(|why| not_extendable(format!("a signature's CMS: {why}")))?;
            let mut material = Additions::default();
            if validation::is_time_stamp_token(&embedded.cms) {
                // An earlier document time-stamp: its TSU's data, for the renewal.
                let tsu = signer_certificate(&signed_data)
                    .into_iter()
                    .collect::<Vec<_>>();
                self.add_time_stamp_material(&tsu, &mut material, now)
                    .await?;
            } else {
                signers.push(
                    self.signature_material(&signed_data, &mut material, now)
                        .await?,
                );
            }
            let certificates = material
                .certificates
                .iter()
                .map(Encode::to_der)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| SignatureError::Encoding {
                    what: "validation data",
                    source,
                })?;
            materials.push((
                embedded.contents.clone(),
                ValidationMaterial {
                    certificates,
                    ocsp_responses: material.ocsp_responses,
                    crls: material.crls,
                },
            ));
        }

        let input_sha256 = hex::encode(Sha256::digest(&pdf));
        let with_dss = tokio::task::spawn_blocking(move || {
            let entries: Vec<(&[u8], &ValidationMaterial)> = materials
                .iter()
                .map(|(contents, material)| (contents.as_slice(), material))
                .collect();
            pades::dss::add_all(&pdf, &entries)
        })
        .await
        .map_err(|e| SignatureError::Task(format!("adding the DSS: {e}")))??;
        let (pdf, added_stamps) = if level == Level::Lta {
            (self.add_document_time_stamp(with_dss).await?, 1)
        } else {
            (with_dss, 0)
        };
        let extended = Extended {
            level,
            signatures: signers.len(),
            document_time_stamps: report.document_time_stamps.len() + added_stamps,
            pdf,
        };
        let event = AuditEvent::new(
            format!("service:{client}"),
            "signature.extend",
            "document",
            &input_sha256,
        )
        .details(serde_json::json!({
            "format": "pades",
            "level": level.name(),
            "signer_serials": signers,
            "document_time_stamps": extended.document_time_stamps,
            "pdf_sha256": input_sha256,
            "extended_pdf_sha256": hex::encode(Sha256::digest(&extended.pdf)),
        }));
        audit::record(&self.ctx.db, self.ctx.clock.as_ref(), &event).await?;
        Ok(extended)
    }
}
