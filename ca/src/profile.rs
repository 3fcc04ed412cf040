//! The end-entity certificate profiles (ETSI EN 319 412-2, -3 and -5): citizens'
//! authentication and qualified signature certificates, organisations' qualified seal
//! certificates; and the lint that every planned certificate passes before the CA key
//! is used.

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
    issue::Holder,
    names::{citizen_subject, organisation_subject},
};

/// A certificate profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Profile {
    /// Authentication (EN 319 412-2 natural person, NCP+): digitalSignature, clientAuth.
    CitizenAuthentication,
    /// Qualified electronic signature (QCP-n-qscd): nonRepudiation, QC statements.
    CitizenSigning,
    /// An organisation's qualified electronic seal (EN 319 412-3 legal person,
    /// QCP-l-qscd): nonRepudiation, QC statements of type eseal.
    OrganisationSeal,
}

impl Profile {
    /// The stable name used by `eid ca issue --profile` and the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::CitizenAuthentication => "citizen-auth",
            Self::CitizenSigning => "citizen-sign",
            Self::OrganisationSeal => "org-seal",
        }
    }

    /// Parses [`Profile::name`].
    pub fn parse(name: &str) -> Result<Self, CaError> {
        match name {
            "citizen-auth" => Ok(Self::CitizenAuthentication),
            "citizen-sign" => Ok(Self::CitizenSigning),
            "org-seal" => Ok(Self::OrganisationSeal),
            other => Err(CaError::BadRequest(format!(
                "unknown profile {other:?}: use citizen-auth, citizen-sign or org-seal"
            ))),
        }
    }

    /// The CA that issues this profile.
    pub fn issuer(self) -> CaRole {
        match self {
            Self::CitizenAuthentication => CaRole::CitizenAuthenticationCa,
            Self::CitizenSigning => CaRole::CitizenSigningCa,
            Self::OrganisationSeal => CaRole::OrganisationSealCa,
        }
    }

    /// Whether the profile certifies only keys on a qualified signature creation
    /// device (the key layer's evidence must come with the request).
    pub fn needs_qscd(self) -> bool {
        matches!(self, Self::CitizenSigning | Self::OrganisationSeal)
    }

    /// Whether the profile is for an organisation (else for a citizen).
    pub fn for_organisation(self) -> bool {
        self == Self::OrganisationSeal
    }

    fn key_usage(self) -> KeyUsages {
        match self {
            Self::CitizenAuthentication => KeyUsages::DigitalSignature,
            Self::CitizenSigning | Self::OrganisationSeal => KeyUsages::NonRepudiation,
        }
    }

    fn policy(self) -> ObjectIdentifier {
        match self {
            Self::CitizenAuthentication => oid::NCP_PLUS,
            Self::CitizenSigning => oid::QCP_N_QSCD,
            Self::OrganisationSeal => oid::QCP_L_QSCD,
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
            Self::CitizenSigning | Self::OrganisationSeal => {
                expected.insert(oid::QC_STATEMENTS, false);
            }
        }
        expected
    }
}

/// Plans a certificate: subject and every extension.
pub(crate) fn plan(
    profile: Profile,
    country: &str,
    holder: &Holder,
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
        Profile::OrganisationSeal => ext.push(extensions::qualified_seal_statements(pds_url)?),
    }
    let subject = match (profile.for_organisation(), holder) {
        (false, Holder::Citizen { national_id, name }) => {
            citizen_subject(country, national_id, name)?
        }
        (true, Holder::Organisation(organisation)) => organisation_subject(country, organisation)?,
        _ => {
            return Err(CaError::BadRequest(format!(
                "the {} profile is for {}",
                profile.name(),
                if profile.for_organisation() {
                    "an organisation"
                } else {
                    "a citizen"
                }
            )));
        }
    };
    Ok(Planned {
        subject,
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
