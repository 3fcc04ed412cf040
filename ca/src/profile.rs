//! The citizen certificate profiles (ETSI EN 319 412-2 and -5), and the lint that every
//! planned certificate passes before the CA key is used.

use std::collections::BTreeMap;

use der::{Decode, asn1::ObjectIdentifier};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::{
    certificate::{TbsCertificate, Version},
    ext::{
        Extension,
        pkix::{KeyUsage, KeyUsages},
    },
    name::Name,
};

use crate::{
    CaError, CaRole,
    extensions::{self, oid},
    hierarchy::{Authority, Planned},
    names::{NationalId, PersonName, citizen_subject},
};

/// A certificate profile for citizens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Profile {
    /// Authentication (EN 319 412-2 natural person, NCP+): digitalSignature, clientAuth.
    CitizenAuthentication,
    /// Qualified electronic signature (QCP-n-qscd): nonRepudiation, QC statements.
    CitizenSigning,
}

impl Profile {
    /// The stable name used by `eid ca issue --profile` and the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::CitizenAuthentication => "citizen-auth",
            Self::CitizenSigning => "citizen-sign",
        }
    }

    /// Parses [`Profile::name`].
    pub fn parse(name: &str) -> Result<Self, CaError> {
        match name {
            "citizen-auth" => Ok(Self::CitizenAuthentication),
            "citizen-sign" => Ok(Self::CitizenSigning),
            other => Err(CaError::BadRequest(format!(
                "unknown profile {other:?}: use citizen-auth or citizen-sign"
            ))),
        }
    }

    /// The CA that issues this profile.
    pub fn issuer(self) -> CaRole {
        match self {
            Self::CitizenAuthentication => CaRole::CitizenAuthenticationCa,
            Self::CitizenSigning => CaRole::CitizenSigningCa,
        }
    }

    fn key_usage(self) -> KeyUsages {
        match self {
            Self::CitizenAuthentication => KeyUsages::DigitalSignature,
            Self::CitizenSigning => KeyUsages::NonRepudiation,
        }
    }

    fn policy(self) -> ObjectIdentifier {
        match self {
            Self::CitizenAuthentication => oid::NCP_PLUS,
            Self::CitizenSigning => oid::QCP_N_QSCD,
        }
    }

    /// The extensions a certificate of this profile carries, and whether each is
    /// critical: what the lint holds every planned certificate to.
    fn expected_extensions(self) -> BTreeMap<ObjectIdentifier, bool> {
        let mut expected = BTreeMap::from([
            (ObjectIdentifier::new_unwrap("2.5.29.14"), false), // subjectKeyIdentifier
            (ObjectIdentifier::new_unwrap("2.5.29.35"), false), // authorityKeyIdentifier
            (ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.1"), false), // authorityInfoAccess
            (ObjectIdentifier::new_unwrap("2.5.29.31"), false), // cRLDistributionPoints
            (ObjectIdentifier::new_unwrap("2.5.29.46"), false), // freshestCRL
            (ObjectIdentifier::new_unwrap("2.5.29.15"), true),  // keyUsage
            (ObjectIdentifier::new_unwrap("2.5.29.32"), false), // certificatePolicies
        ]);
        match self {
            Self::CitizenAuthentication => {
                expected.insert(ObjectIdentifier::new_unwrap("2.5.29.37"), false); // extKeyUsage
            }
            Self::CitizenSigning => {
                expected.insert(oid::QC_STATEMENTS, false);
            }
        }
        expected
    }
}

/// What the profile needs to plan a certificate.
pub(crate) struct Subject<'a> {
    pub(crate) country: &'a str,
    pub(crate) national_id: &'a NationalId,
    pub(crate) name: &'a PersonName,
}

/// Plans a citizen certificate: subject and every extension.
pub(crate) fn plan(
    profile: Profile,
    subject: &Subject<'_>,
    key: &SubjectPublicKeyInfoOwned,
    issuer: &Authority,
    public_url: &str,
    pds_url: &str,
) -> Result<Planned, CaError> {
    let issuer_tbs = issuer.certificate.tbs_certificate();
    let mut ext = vec![
        extensions::subject_key_identifier(key)?,
        extensions::authority_key_identifier(issuer_tbs.subject_public_key_info())?,
        extensions::authority_info_access(
            Some(&format!("{public_url}/ocsp/{}", issuer.role)),
            &format!("{public_url}/ca/{}.crt", issuer.role),
        )?,
        extensions::crl_distribution_point(&format!("{public_url}/crl/{}.crl", issuer.role))?,
        extensions::freshest_crl(&format!("{public_url}/crl/{}-delta.crl", issuer.role))?,
        extensions::key_usage(&[profile.key_usage()])?,
        extensions::certificate_policies(&[profile.policy()])?,
    ];
    match profile {
        Profile::CitizenAuthentication => {
            // Not critical: EN 319 412-2 §4.3.10 (pkilint flags a critical one).
            ext.push(extensions::extended_key_usage(&[oid::CLIENT_AUTH], false)?);
        }
        Profile::CitizenSigning => ext.push(extensions::qualified_signature_statements(pds_url)?),
    }
    Ok(Planned {
        subject: citizen_subject(subject.country, subject.national_id, subject.name)?,
        issuer: issuer_tbs.subject().clone(),
        extensions: ext,
    })
}

/// Checks a planned TBS certificate against the profile before the CA key signs it.
/// Every finding is a bug in eid, never the requester's fault: issuance stops.
pub(crate) fn lint(
    profile: Profile,
    tbs_der: &[u8],
    issuer: &Authority,
    key: &SubjectPublicKeyInfoOwned,
    subject: &Name,
) -> Result<(), CaError> {
    let finding = |finding: String| CaError::Lint {
        profile: profile.name(),
        finding,
    };
    let tbs =
        TbsCertificate::from_der(tbs_der).map_err(|e| finding(format!("does not parse: {e}")))?;
    let issuer_tbs = issuer.certificate.tbs_certificate();
    if tbs.version() != Version::V3 {
        return Err(finding("not a version 3 certificate".into()));
    }
    let serial = tbs.serial_number().as_bytes();
    if serial.is_empty() || serial.len() > 20 || serial[0] & 0x80 != 0 {
        return Err(finding(
            "serial number is not a positive integer of at most 20 octets".into(),
        ));
    }
    if tbs.issuer() != issuer_tbs.subject() {
        return Err(finding(
            "issuer name differs from the issuing CA's subject".into(),
        ));
    }
    if tbs.subject() != subject {
        return Err(finding("subject differs from the one planned".into()));
    }
    if tbs.subject_public_key_info() != key {
        return Err(finding("public key differs from the requested one".into()));
    }
    let not_before: std::time::SystemTime = tbs.validity().not_before.into();
    let not_after: std::time::SystemTime = tbs.validity().not_after.into();
    let issuer_after: std::time::SystemTime = issuer_tbs.validity().not_after.into();
    if not_before >= not_after || not_after > issuer_after {
        return Err(finding(
            "validity is empty or outlives the issuing CA".into(),
        ));
    }
    if tbs.signature().oid != issuer.signer.scheme().algorithm_identifier()?.oid {
        return Err(finding(
            "signature algorithm differs from the CA key's".into(),
        ));
    }
    let extensions: &[Extension] = tbs.extensions().map_or(&[], |e| e.as_slice());
    let mut found = BTreeMap::new();
    for extension in extensions {
        if found
            .insert(extension.extn_id, extension.critical)
            .is_some()
        {
            return Err(finding(format!(
                "extension {} appears twice",
                extension.extn_id
            )));
        }
    }
    let expected = profile.expected_extensions();
    if found != expected {
        return Err(finding(format!(
            "extensions (oid, critical) are {found:?}, the profile wants {expected:?}"
        )));
    }
    let key_usage = extensions
        .iter()
        .find(|e| e.extn_id == ObjectIdentifier::new_unwrap("2.5.29.15"))
        .map(|e| KeyUsage::from_der(e.extn_value.as_bytes()))
        .transpose()
        .map_err(|e| finding(format!("keyUsage does not parse: {e}")))?;
    if key_usage.map(|k| k.0) != Some(profile.key_usage().into()) {
        return Err(finding(format!(
            "keyUsage is not exactly {:?}",
            profile.key_usage()
        )));
    }
    Ok(())
}
