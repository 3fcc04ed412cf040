//! X.509 extensions the profiles use, including the ETSI EN 319 412-5 QC statements,
//! which x509-cert has no types for (so they are defined here with der's derives).

use const_oid::AssociatedOid;
use der::{
    Any, Encode, Sequence,
    asn1::{Ia5String, Null, ObjectIdentifier, OctetString, PrintableString},
};
use sha1::{Digest, Sha1};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::ext::{
    Extension,
    pkix::{
        AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints, CertificatePolicies,
        CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
        SubjectKeyIdentifier,
        certpolicy::PolicyInformation,
        crl::{FreshestCrl, dp::DistributionPoint},
        name::{DistributionPointName, GeneralName},
    },
};

use crate::CaError;

/// Object identifiers of the profiles.
pub mod oid {
    use der::asn1::ObjectIdentifier;

    /// id-kp-clientAuth.
    pub const CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
    /// id-kp-serverAuth.
    pub const SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
    /// id-kp-OCSPSigning.
    pub const OCSP_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");
    /// id-kp-timeStamping.
    pub const TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
    /// id-pkix-ocsp-nocheck.
    pub const OCSP_NOCHECK: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.5");
    /// id-ad-ocsp.
    pub const AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
    /// id-ad-caIssuers.
    pub const AD_CA_ISSUERS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.2");
    /// anyPolicy.
    pub const ANY_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.32.0");
    /// ETSI EN 319 411-1 NCP+ (normalised policy, key on a secure device).
    pub const NCP_PLUS: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.2042.1.2");
    /// ETSI EN 319 411-2 QCP-n-qscd (qualified, natural person, key on a QSCD).
    pub const QCP_N_QSCD: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.194112.1.2");
    /// ETSI EN 319 411-2 QCP-l-qscd (qualified, legal person, key on a QSCD).
    pub const QCP_L_QSCD: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.194112.1.3");
    /// qcStatements extension (RFC 3739).
    pub const QC_STATEMENTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.3");
    /// id-qcs-pkixQCSyntax-v2 (RFC 3739), carrying the ETSI semantics identifier.
    pub const QCS_PKIX_SYNTAX_V2: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.11.2");
    /// id-etsi-qcs-semanticsId-Natural (EN 319 412-1).
    pub const SEMANTICS_NATURAL: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("0.4.0.194121.1.1");
    /// esi4-qcStatement-1: QcCompliance.
    pub const QC_COMPLIANCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.1862.1.1");
    /// esi4-qcStatement-4: QcSSCD.
    pub const QC_SSCD: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.1862.1.4");
    /// esi4-qcStatement-5: QcPDS.
    pub const QC_PDS: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.1862.1.5");
    /// esi4-qcStatement-6: QcType.
    pub const QC_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.1862.1.6");
    /// id-etsi-qct-esign.
    pub const QCT_ESIGN: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.1862.1.6.1");
    /// QcType id-etsi-qct-eseal: for electronic seals.
    pub const QCT_ESEAL: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.1862.1.6.2");
    /// id-etsi-qcs-semanticsId-Legal (EN 319 412-1).
    pub const SEMANTICS_LEGAL: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.194121.1.2");
}

fn extension<T: Encode + AssociatedOid>(value: &T, critical: bool) -> Result<Extension, CaError> {
    raw_extension(T::OID, value, critical)
}

fn raw_extension(
    oid: ObjectIdentifier,
    value: &impl Encode,
    critical: bool,
) -> Result<Extension, CaError> {
    let der = value
        .to_der()
        .map_err(|e| CaError::encoding("extension", e))?;
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(der).map_err(|e| CaError::encoding("extension", e))?,
    })
}

/// The key identifier of a public key: SHA-1 of the subjectPublicKey bits (RFC 5280
/// §4.2.1.2, method 1).
pub fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    Sha1::digest(spki.subject_public_key.raw_bytes()).to_vec()
}

pub(crate) fn basic_constraints(ca: bool, path_len: Option<u8>) -> Result<Extension, CaError> {
    extension(
        &BasicConstraints {
            ca,
            path_len_constraint: path_len,
        },
        true,
    )
}

pub(crate) fn key_usage(usages: &[KeyUsages]) -> Result<Extension, CaError> {
    let flags = usages
        .iter()
        .fold(flagset::FlagSet::default(), |set, u| set | *u);
    extension(&KeyUsage(flags), true)
}

pub(crate) fn extended_key_usage(
    purposes: &[ObjectIdentifier],
    critical: bool,
) -> Result<Extension, CaError> {
    extension(&ExtendedKeyUsage(purposes.to_vec()), critical)
}

pub(crate) fn subject_key_identifier(
    spki: &SubjectPublicKeyInfoOwned,
) -> Result<Extension, CaError> {
    let id = OctetString::new(key_identifier(spki)).map_err(|e| CaError::encoding("SKI", e))?;
    extension(&SubjectKeyIdentifier(id), false)
}

pub(crate) fn authority_key_identifier(
    issuer: &SubjectPublicKeyInfoOwned,
) -> Result<Extension, CaError> {
    let id = OctetString::new(key_identifier(issuer)).map_err(|e| CaError::encoding("AKI", e))?;
    extension(
        &AuthorityKeyIdentifier {
            key_identifier: Some(id),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        },
        false,
    )
}

pub(crate) fn certificate_policies(policies: &[ObjectIdentifier]) -> Result<Extension, CaError> {
    extension(
        &CertificatePolicies(
            policies
                .iter()
                .map(|oid| PolicyInformation {
                    policy_identifier: *oid,
                    policy_qualifiers: None,
                })
                .collect(),
        ),
        false,
    )
}

fn uri(url: &str) -> Result<GeneralName, CaError> {
    Ok(GeneralName::UniformResourceIdentifier(
        Ia5String::new(url).map_err(|e| CaError::encoding("URL", e))?,
    ))
}

/// Authority information access: where the issuer's OCSP responder and certificate are.
pub(crate) fn authority_info_access(
    ocsp_url: Option<&str>,
    ca_issuers_url: &str,
) -> Result<Extension, CaError> {
    let mut access = Vec::new();
    if let Some(url) = ocsp_url {
        access.push(x509_cert::ext::pkix::AccessDescription {
            access_method: oid::AD_OCSP,
            access_location: uri(url)?,
        });
    }
    access.push(x509_cert::ext::pkix::AccessDescription {
        access_method: oid::AD_CA_ISSUERS,
        access_location: uri(ca_issuers_url)?,
    });
    extension(&AuthorityInfoAccessSyntax(access), false)
}

pub(crate) fn crl_distribution_point(url: &str) -> Result<Extension, CaError> {
    extension(
        &CrlDistributionPoints(vec![distribution_point(url)?]),
        false,
    )
}

/// freshestCRL (RFC 5280 §4.2.1.15): where the delta CRLs are; never critical.
pub(crate) fn freshest_crl(url: &str) -> Result<Extension, CaError> {
    extension(&FreshestCrl(vec![distribution_point(url)?]), false)
}

fn distribution_point(url: &str) -> Result<DistributionPoint, CaError> {
    Ok(DistributionPoint {
        distribution_point: Some(DistributionPointName::FullName(vec![uri(url)?])),
        reasons: None,
        crl_issuer: None,
    })
}

pub(crate) fn subject_alt_name(names: Vec<GeneralName>) -> Result<Extension, CaError> {
    extension(&SubjectAltName(names), false)
}

pub(crate) fn ocsp_nocheck() -> Result<Extension, CaError> {
    raw_extension(oid::OCSP_NOCHECK, &Null, false)
}

/// QCStatement (RFC 3739).
#[derive(Clone, Debug, Sequence)]
struct QcStatement {
    statement_id: ObjectIdentifier,
    statement_info: Option<Any>,
}

/// SemanticsInformation (RFC 3739), with the ETSI identifier only.
#[derive(Clone, Debug, Sequence)]
struct SemanticsInformation {
    semantics_identifier: Option<ObjectIdentifier>,
}

/// PdsLocation (EN 319 412-5).
#[derive(Clone, Debug, Sequence)]
struct PdsLocation {
    url: Ia5String,
    language: PrintableString,
}

/// The QC statements of a qualified certificate for electronic signatures by a natural
/// person on a QSCD: QcCompliance, QcSSCD, QcType esign, QcPDS and the natural-person
/// semantics identifier.
pub(crate) fn qualified_signature_statements(pds_url: &str) -> Result<Extension, CaError> {
    qualified_statements(pds_url, oid::SEMANTICS_NATURAL, oid::QCT_ESIGN)
}

/// The QC statements of a qualified electronic seal certificate (EN 319 412-5): as a
/// signature's, but of type eseal, with the legal-person semantics identifier.
pub(crate) fn qualified_seal_statements(pds_url: &str) -> Result<Extension, CaError> {
    qualified_statements(pds_url, oid::SEMANTICS_LEGAL, oid::QCT_ESEAL)
}

fn qualified_statements(
    pds_url: &str,
    semantics: ObjectIdentifier,
    qc_type: ObjectIdentifier,
) -> Result<Extension, CaError> {
    let statements = vec![
        QcStatement {
            statement_id: oid::QCS_PKIX_SYNTAX_V2,
            statement_info: Some(to_any(&SemanticsInformation {
                semantics_identifier: Some(semantics),
            })?),
        },
        QcStatement {
            statement_id: oid::QC_COMPLIANCE,
            statement_info: None,
        },
        QcStatement {
            statement_id: oid::QC_SSCD,
            statement_info: None,
        },
        QcStatement {
            statement_id: oid::QC_TYPE,
            statement_info: Some(to_any(&vec![qc_type])?),
        },
        QcStatement {
            statement_id: oid::QC_PDS,
            statement_info: Some(to_any(&vec![PdsLocation {
                url: Ia5String::new(pds_url).map_err(|e| CaError::encoding("PDS URL", e))?,
                language: PrintableString::new("en")
                    .map_err(|e| CaError::encoding("PDS language", e))?,
            }])?),
        },
    ];
    raw_extension(oid::QC_STATEMENTS, &statements, false)
}

/// Encodes a value as `Any`, for statement infos of different types.
fn to_any(value: &impl Encode) -> Result<Any, CaError> {
    let der = value
        .to_der()
        .map_err(|e| CaError::encoding("QC statement", e))?;
    der::Decode::from_der(&der).map_err(|e| CaError::encoding("QC statement", e))
}
