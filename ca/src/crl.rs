//! Certificate revocation lists (RFC 5280 §5): full and delta CRLs, signed by an issuing
//! CA's key.
//!
//! The `TBSCertList` is assembled here rather than with x509-cert's `CrlBuilder`: that
//! builder copies the issuer certificate's own authorityKeyIdentifier (which names the
//! issuer's issuer) when there is one, and has no way to add a deltaCRLIndicator.

use std::time::Duration;

use der::{
    DateTime, Encode,
    asn1::{BitString, Uint},
    referenced::OwnedToRef,
};
use eid_hsm::{HsmError, KeySigner};
use time::OffsetDateTime;
use x509_cert::{
    Certificate,
    certificate::Version,
    crl::{CertificateList, RevokedCert, TbsCertList},
    ext::{
        Extension, ToExtension,
        pkix::{
            AuthorityKeyIdentifier, SubjectKeyIdentifier,
            crl::{BaseCrlNumber, CrlNumber, CrlReason},
        },
    },
    name::Name,
    serial_number::SerialNumber,
    time::Time,
};

use crate::reason::ReasonCode;

/// Why a CRL could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrlError {
    /// `nextUpdate` is not after `thisUpdate`.
    #[error("CRL nextUpdate {next_update} is not after thisUpdate {this_update}")]
    UpdateOrder {
        /// The CRL's `thisUpdate`.
        this_update: OffsetDateTime,
        /// The CRL's `nextUpdate`.
        next_update: OffsetDateTime,
    },
    /// A time cannot be encoded as an RFC 5280 `Time` (before 1970 or after 9999).
    #[error("CRL {what} {time} cannot be encoded as an RFC 5280 Time")]
    TimeOutOfRange {
        /// Which time.
        what: &'static str,
        /// Its value.
        time: OffsetDateTime,
    },
    /// A delta CRL's base is not an earlier CRL (RFC 5280 §5.2.4).
    #[error("delta CRL number {crl_number} must be greater than its base CRL number {base}")]
    DeltaBase {
        /// This CRL's number.
        crl_number: u64,
        /// The base CRL's number.
        base: u64,
    },
    /// A serial number is listed twice.
    #[error("CRL lists serial {serial} twice")]
    DuplicateSerial {
        /// The serial, in hex.
        serial: String,
    },
    /// `removeFromCRL` in a full CRL (RFC 5280 §5.3.1 allows it only in delta CRLs).
    #[error("CRL entry {serial} has reason removeFromCRL, which only a delta CRL may carry")]
    RemoveFromFullCrl {
        /// The serial, in hex.
        serial: String,
    },
    /// The signer's key is not the issuer certificate's key: the CRL would not verify.
    #[error("CRL signing key `{label}` is not the key certified by the issuer certificate")]
    IssuerKeyMismatch {
        /// The signer's key label.
        label: String,
    },
    /// Encoding part of the CRL failed.
    #[error("encoding CRL {what} failed: {source}")]
    Encoding {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        source: der::Error,
    },
    /// The key layer could not sign the CRL.
    #[error("signing the CRL failed: {0}")]
    Signing(#[source] HsmError),
}

/// One revoked certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The certificate's serial number.
    pub serial: SerialNumber,
    /// When it was revoked (`revocationDate`).
    pub revoked_at: OffsetDateTime,
    /// Why; `None` and `Unspecified` both leave the reasonCode extension out, as RFC 5280
    /// §5.3.1 advises for `unspecified`.
    pub reason: Option<ReasonCode>,
}

/// What the CRL is: a full CRL or a delta against a base CRL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrlScope {
    /// A complete CRL.
    Full,
    /// A delta CRL listing changes since the full CRL with this number (carried in a
    /// critical deltaCRLIndicator).
    DeltaOf(u64),
}

/// What to put in a CRL, apart from the issuer.
#[derive(Clone, Copy, Debug)]
pub struct CrlContent<'a> {
    /// The monotonically increasing cRLNumber.
    pub crl_number: u64,
    /// `thisUpdate`.
    pub this_update: OffsetDateTime,
    /// `nextUpdate` (RFC 5280 §5.1.2.5: conforming issuers always include it).
    pub next_update: OffsetDateTime,
    /// The revoked certificates; empty leaves `revokedCertificates` out entirely.
    pub entries: &'a [RevokedEntry],
    /// Full or delta.
    pub scope: CrlScope,
}

/// Builds and signs a v2 CRL for `issuer_cert` with `signer` (the issuer's key), as DER.
///
/// Extensions: authorityKeyIdentifier (the issuer's subjectKeyIdentifier), cRLNumber,
/// and for a delta CRL a critical deltaCRLIndicator.
pub fn build_crl(
    issuer_cert: &Certificate,
    signer: &KeySigner,
    content: &CrlContent<'_>,
) -> Result<Vec<u8>, CrlError> {
    let tbs_certificate = issuer_cert.tbs_certificate();
    if signer.public_key().spki() != tbs_certificate.subject_public_key_info() {
        return Err(CrlError::IssuerKeyMismatch {
            label: signer.info().label.to_string(),
        });
    }
    if content.next_update <= content.this_update {
        return Err(CrlError::UpdateOrder {
            this_update: content.this_update,
            next_update: content.next_update,
        });
    }
    let encoding = |what| move |source| CrlError::Encoding { what, source };
    let issuer = tbs_certificate.subject().clone();

    let revoked = revoked_certificates(&issuer, content)?;
    let mut extensions = vec![
        authority_key_identifier(issuer_cert)?
            .to_extension(&issuer, &[])
            .map_err(encoding("authorityKeyIdentifier"))?,
        CrlNumber::try_from(content.crl_number)
            .and_then(|number| number.to_extension(&issuer, &[]))
            .map_err(encoding("cRLNumber"))?,
    ];
    if let CrlScope::DeltaOf(base) = content.scope {
        if base >= content.crl_number {
            return Err(CrlError::DeltaBase {
                crl_number: content.crl_number,
                base,
            });
        }
        extensions.push(
            Uint::try_from(base)
                .and_then(|number| BaseCrlNumber(number).to_extension(&issuer, &[]))
                .map_err(encoding("deltaCRLIndicator"))?,
        );
    }

    let signature_algorithm = signer
        .scheme()
        .algorithm_identifier()
        .map_err(CrlError::Signing)?;
    let tbs = TbsCertList {
        version: Version::V2,
        signature: signature_algorithm.clone(),
        issuer,
        this_update: rfc5280_time("thisUpdate", content.this_update)?,
        next_update: Some(rfc5280_time("nextUpdate", content.next_update)?),
        // An empty SEQUENCE OF is not allowed here: no entries means no field.
        revoked_certificates: (!revoked.is_empty()).then_some(revoked),
        crl_extensions: Some(extensions),
    };
    let tbs_der = tbs.to_der().map_err(encoding("TBSCertList"))?;
    let signature = signer.sign(&tbs_der).map_err(CrlError::Signing)?;
    CertificateList {
        tbs_cert_list: tbs,
        signature_algorithm,
        signature: BitString::from_bytes(signature.as_bytes()).map_err(encoding("signature"))?,
    }
    .to_der()
    .map_err(encoding("CertificateList"))
}

fn revoked_certificates(
    issuer: &Name,
    content: &CrlContent<'_>,
) -> Result<Vec<RevokedCert>, CrlError> {
    let mut seen = std::collections::HashSet::new();
    content
        .entries
        .iter()
        .map(|entry| {
            let serial = hex::encode_upper(entry.serial.as_bytes());
            if !seen.insert(entry.serial.as_bytes()) {
                return Err(CrlError::DuplicateSerial { serial });
            }
            if entry.reason == Some(ReasonCode::RemoveFromCrl) && content.scope == CrlScope::Full {
                return Err(CrlError::RemoveFromFullCrl { serial });
            }
            let reason = entry
                .reason
                .filter(|reason| *reason != ReasonCode::Unspecified)
                .map(|reason| {
                    CrlReason::from(reason)
                        .to_extension(issuer, &[])
                        .map_err(|source| CrlError::Encoding {
                            what: "reasonCode",
                            source,
                        })
                })
                .transpose()?;
            Ok(RevokedCert {
                serial_number: entry.serial.clone(),
                revocation_date: rfc5280_time("revocationDate", entry.revoked_at)?,
                crl_entry_extensions: reason.map(|extension: Extension| vec![extension]),
            })
        })
        .collect()
}

/// The issuer's subjectKeyIdentifier, or (for an issuer certificate without one) the
/// RFC 5280 §4.2.1.2 method-1 SHA-1 of its key, which is what conforming CAs put there.
fn authority_key_identifier(issuer_cert: &Certificate) -> Result<AuthorityKeyIdentifier, CrlError> {
    let tbs = issuer_cert.tbs_certificate();
    let ski = match tbs.get_extension::<SubjectKeyIdentifier>() {
        Ok(Some((_, ski))) => ski,
        Ok(None) => SubjectKeyIdentifier::try_from(tbs.subject_public_key_info().owned_to_ref())
            .map_err(|source| CrlError::Encoding {
                what: "key identifier of the issuer's public key",
                source,
            })?,
        Err(source) => {
            return Err(CrlError::Encoding {
                what: "issuer subjectKeyIdentifier",
                source,
            });
        }
    };
    Ok(AuthorityKeyIdentifier {
        key_identifier: Some(ski.0),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    })
}

/// UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §5.1.2.4), whole seconds.
fn rfc5280_time(what: &'static str, time: OffsetDateTime) -> Result<Time, CrlError> {
    u64::try_from(time.unix_timestamp())
        .ok()
        .and_then(|seconds| DateTime::from_unix_duration(Duration::from_secs(seconds)).ok())
        .map(Time::from)
        .ok_or(CrlError::TimeOutOfRange { what, time })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use time::macros::datetime;

    use super::*;

    #[test]
    fn utc_time_through_2049_generalized_time_from_2050() {
        let last_utc = rfc5280_time("t", datetime!(2049-12-31 23:59:59 UTC)).unwrap();
        assert!(matches!(last_utc, Time::UtcTime(_)), "{last_utc:?}");
        let first_generalized = rfc5280_time("t", datetime!(2050-01-01 00:00:00 UTC)).unwrap();
        assert!(
            matches!(first_generalized, Time::GeneralTime(_)),
            "{first_generalized:?}"
        );
        // A non-UTC offset names the same instant.
        let offset = rfc5280_time("t", datetime!(2030-01-01 02:00:00 +02:00)).unwrap();
        assert_eq!(
            offset,
            rfc5280_time("t", datetime!(2030-01-01 00:00:00 UTC)).unwrap()
        );
        assert!(matches!(
            rfc5280_time("t", datetime!(1969-12-31 23:59:59 UTC)),
            Err(CrlError::TimeOutOfRange { .. })
        ));
    }
}
