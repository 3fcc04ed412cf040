//! Which certificates the service signs for, and their chains: the CA certificates it
//! is given at start (by the `eid` binary, from the CA hierarchy), never fetched.

use der::{Decode, Encode, asn1::ObjectIdentifier};
use eid_hsm::{PublicKey, SignatureScheme};
use time::OffsetDateTime;
use x509_cert::{
    Certificate,
    ext::pkix::{KeyUsage, KeyUsages},
};

use crate::SignatureError;

const ID_CE_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");

/// The CA certificates the service knows.
#[derive(Clone, Debug)]
pub struct TrustedCas {
    /// CAs whose certificates may sign documents here (the citizen qualified
    /// signature CA).
    pub signer_issuers: Vec<Certificate>,
    /// Every CA certificate up to and including the trust anchor(s), to build chains
    /// (the signer's and the TSU's) for long-term validation data.
    pub known: Vec<Certificate>,
}

fn scheme_of(oid: ObjectIdentifier) -> Option<SignatureScheme> {
    SignatureScheme::from_algorithm_oid(&oid)
}

/// Whether `issuer`'s key signed `certificate`.
fn signed_by(certificate: &Certificate, issuer: &Certificate) -> bool {
    let Some(scheme) = scheme_of(certificate.signature_algorithm().oid) else {
        return false;
    };
    let Ok(tbs) = certificate.tbs_certificate().to_der() else {
        return false;
    };
    let key = PublicKey::new(issuer.tbs_certificate().subject_public_key_info().clone());
    key.verify(scheme, &tbs, certificate.signature().raw_bytes())
        .is_ok()
}

fn validity(certificate: &Certificate) -> (OffsetDateTime, OffsetDateTime) {
    let validity = certificate.tbs_certificate().validity();
    (
        OffsetDateTime::from(validity.not_before.to_system_time()),
        OffsetDateTime::from(validity.not_after.to_system_time()),
    )
}

impl TrustedCas {
    /// Checks that `certificate` may sign here at `now`: issued (and signed) by one of
    /// the signer CAs, valid now, and certified for signatures (key usage
    /// nonRepudiation or digitalSignature). Returns its issuer.
    pub fn check_signer(
        &self,
        certificate: &Certificate,
        now: OffsetDateTime,
    ) -> Result<&Certificate, SignatureError> {
        let tbs = certificate.tbs_certificate();
        let issuer = self
            .signer_issuers
            .iter()
            .find(|ca| ca.tbs_certificate().subject() == tbs.issuer() && signed_by(certificate, ca))
            .ok_or_else(|| {
                SignatureError::BadCertificate(
                    "the certificate is not issued by a signature CA this service trusts".into(),
                )
            })?;
        let (not_before, not_after) = validity(certificate);
        if now < not_before || now > not_after {
            return Err(SignatureError::BadCertificate(format!(
                "the certificate is not valid now (valid {not_before} to {not_after})"
            )));
        }
        let usage = tbs
            .extensions()
            .into_iter()
            .flatten()
            .find(|e| e.extn_id == ID_CE_KEY_USAGE)
            .and_then(|e| KeyUsage::from_der(e.extn_value.as_bytes()).ok());
        let fit = usage.is_some_and(|usage| {
            usage.0.contains(KeyUsages::NonRepudiation)
                || usage.0.contains(KeyUsages::DigitalSignature)
        });
        if !fit {
            return Err(SignatureError::BadCertificate(
                "the certificate's key usage allows no signatures".into(),
            ));
        }
        Ok(issuer)
    }

    /// The known CA certificates above `certificate`, nearest first, up to a
    /// self-signed one (or as far as known).
    pub fn chain_of(&self, certificate: &Certificate) -> Vec<Certificate> {
        let mut chain: Vec<Certificate> = Vec::new();
        let mut current = certificate.clone();
        // At most as many steps as known certificates: a loop cannot go on forever.
        for _ in 0..self.known.len() {
            let tbs = current.tbs_certificate();
            if tbs.issuer() == tbs.subject() {
                break;
            }
            let Some(issuer) = self.known.iter().find(|ca| {
                ca.tbs_certificate().subject() == tbs.issuer() && signed_by(&current, ca)
            }) else {
                break;
            };
            chain.push(issuer.clone());
            current = issuer.clone();
        }
        chain
    }

    /// The issuer of `certificate` among the known CAs.
    pub fn issuer_of(&self, certificate: &Certificate) -> Option<&Certificate> {
        let tbs = certificate.tbs_certificate();
        self.known
            .iter()
            .find(|ca| ca.tbs_certificate().subject() == tbs.issuer() && signed_by(certificate, ca))
    }
}

pub use eid_ca::ocsp::client::ocsp_url;

/// The first http:// CRL distribution point of `certificate`.
pub fn crl_url(certificate: &Certificate) -> Option<String> {
    use x509_cert::ext::pkix::{
        CrlDistributionPoints,
        name::{DistributionPointName, GeneralName},
    };
    const ID_CE_CRL_DISTRIBUTION_POINTS: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("2.5.29.31");
    let extension = certificate
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .find(|e| e.extn_id == ID_CE_CRL_DISTRIBUTION_POINTS)?;
    let points = CrlDistributionPoints::from_der(extension.extn_value.as_bytes()).ok()?;
    points
        .0
        .into_iter()
        .filter_map(|point| match point.distribution_point? {
            DistributionPointName::FullName(names) => Some(names),
            DistributionPointName::NameRelativeToCRLIssuer(_) => None,
        })
        .flatten()
        .find_map(|name| match name {
            GeneralName::UniformResourceIdentifier(uri) if uri.as_str().starts_with("http://") => {
                Some(uri.as_str().to_owned())
            }
            _ => None,
        })
}
