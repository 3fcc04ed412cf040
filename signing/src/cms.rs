//! CMS (RFC 5652) pieces shared by time-stamp tokens and CAdES signatures: attributes,
//! the signing-certificate-v2 attribute, the signer identifier, and a `SignedData`
//! whose `crls` can carry OCSP responses.
//!
//! Built from the `cms` crate's types rather than its `SignedDataBuilder` (see
//! `tsa/token.rs` for why). `SignedData` is declared here again because the `cms`
//! crate's `OtherRevocationInfoFormat` types its `otherRevInfoFormat` as an
//! AlgorithmIdentifier (a SEQUENCE), where RFC 5652 §10.2.1 has a bare OBJECT
//! IDENTIFIER: an OCSP response (RFC 5940) encoded with it would not be read by
//! anyone else.

use std::cmp::Ordering;

use cms::{
    cert::{CertificateChoices, IssuerAndSerialNumber},
    content_info::{CmsVersion, ContentInfo},
    signed_data::{
        CertificateSet, DigestAlgorithmIdentifiers, EncapsulatedContentInfo, SignerIdentifier,
        SignerInfos,
    },
};
use der::{
    Any, Choice, Decode, DerOrd, Encode, Sequence, ValueOrd,
    asn1::{ObjectIdentifier, OctetString, SetOfVec},
};
use sha2::{Digest, Sha256};
use x509_cert::{Certificate, attr::Attribute, crl::CertificateList, ext::pkix::name::GeneralName};

use crate::tsa::asn1::{EssCertIdV2, IssuerSerial, SigningCertificateV2};

/// `id-contentType` (RFC 5652 §11.1).
pub const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
/// `id-messageDigest` (RFC 5652 §11.2).
pub const ID_MESSAGE_DIGEST: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
/// `id-signingTime` (RFC 5652 §11.3).
pub const ID_SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
/// `id-data` (RFC 5652 §4): the content type of a detached document.
pub const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// `id-signedData` (RFC 5652 §5.1).
pub const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// `id-aa-signingCertificateV2` (RFC 5035).
pub const ID_AA_SIGNING_CERTIFICATE_V2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
/// `id-aa-signatureTimeStampToken` (RFC 3161 Appendix A): the CAdES-T attribute.
pub const ID_AA_SIGNATURE_TIME_STAMP_TOKEN: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.14");
/// `id-ri-ocsp-response` (RFC 5940 §3): an OCSPResponse in `RevocationInfoChoices`.
pub const ID_RI_OCSP_RESPONSE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.16.2");

/// An attribute with one value.
pub fn attribute(oid: ObjectIdentifier, value: Any) -> der::Result<Attribute> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value])?,
    })
}

/// The signing-certificate-v2 attribute (RFC 5035) naming `certificate`: the SHA-256
/// of its DER (so the hash algorithm is left out, as DER wants for the DEFAULT), with
/// its issuer and serial number.
pub fn signing_certificate_v2(certificate: &Certificate) -> der::Result<Attribute> {
    let tbs = certificate.tbs_certificate();
    let ess = SigningCertificateV2 {
        certs: vec![EssCertIdV2 {
            hash_algorithm: None,
            cert_hash: OctetString::new(Sha256::digest(certificate.to_der()?).as_slice())?,
            issuer_serial: Some(IssuerSerial {
                issuer: vec![GeneralName::DirectoryName(tbs.issuer().clone())],
                serial_number: tbs.serial_number().clone(),
            }),
        }],
    };
    attribute(ID_AA_SIGNING_CERTIFICATE_V2, Any::encode_from(&ess)?)
}

/// The signer, by its certificate's issuer and serial number (a version 1 SignerInfo).
pub fn signer_identifier(certificate: &Certificate) -> SignerIdentifier {
    let tbs = certificate.tbs_certificate();
    SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: tbs.issuer().clone(),
        serial_number: tbs.serial_number().clone(),
    })
}

/// `OtherRevocationInfoFormat ::= SEQUENCE { otherRevInfoFormat OBJECT IDENTIFIER,
/// otherRevInfo ANY DEFINED BY otherRevInfoFormat }` (RFC 5652 §10.2.1).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct OtherRevocationInfoFormat {
    /// What `other_rev_info` is, e.g. [`ID_RI_OCSP_RESPONSE`].
    pub other_rev_info_format: ObjectIdentifier,
    /// The revocation information itself.
    pub other_rev_info: Any,
}

/// `RevocationInfoChoice ::= CHOICE { crl CertificateList, other [1] IMPLICIT
/// OtherRevocationInfoFormat }`.
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
#[allow(clippy::large_enum_variant)]
pub enum RevocationInfoChoice {
    /// A CRL.
    Crl(CertificateList),
    /// Another format, such as an OCSP response.
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
    Other(OtherRevocationInfoFormat),
}

impl RevocationInfoChoice {
    /// An OCSP response (DER `OCSPResponse`), as RFC 5940 carries it.
    pub fn ocsp_response(der: &[u8]) -> der::Result<Self> {
        Ok(Self::Other(OtherRevocationInfoFormat {
            other_rev_info_format: ID_RI_OCSP_RESPONSE,
            other_rev_info: Any::from_der(der)?,
        }))
    }
}

// A SET OF is sorted by encoding (X.690 §11.6); a CHOICE compares as its DER.
impl ValueOrd for RevocationInfoChoice {
    fn value_cmp(&self, other: &Self) -> der::Result<Ordering> {
        self.to_der()?.der_cmp(&other.to_der()?)
    }
}

/// `SignedData` (RFC 5652 §5.1), with [`RevocationInfoChoice`] in `crls`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SignedData {
    /// The syntax version.
    pub version: CmsVersion,
    /// Every digest algorithm the signers used.
    pub digest_algorithms: DigestAlgorithmIdentifiers,
    /// The content (absent for a detached signature) and its type.
    pub encap_content_info: EncapsulatedContentInfo,
    /// `certificates [0] IMPLICIT CertificateSet OPTIONAL`.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub certificates: Option<CertificateSet>,
    /// `crls [1] IMPLICIT RevocationInfoChoices OPTIONAL`.
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub crls: Option<SetOfVec<RevocationInfoChoice>>,
    /// The signatures.
    pub signer_infos: SignerInfos,
}

impl SignedData {
    /// The `ContentInfo` wrapping this SignedData, DER.
    pub fn to_content_info_der(&self) -> der::Result<Vec<u8>> {
        ContentInfo {
            content_type: ID_SIGNED_DATA,
            content: Any::encode_from(self)?,
        }
        .to_der()
    }
}

/// A certificate set of `certificates`, duplicates dropped.
pub fn certificate_set(certificates: &[Certificate]) -> der::Result<CertificateSet> {
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut set = Vec::new();
    for certificate in certificates {
        let der = certificate.to_der()?;
        if !seen.contains(&der) {
            seen.push(der);
            set.push(CertificateChoices::Certificate(certificate.clone()));
        }
    }
    Ok(CertificateSet(SetOfVec::try_from(set)?))
}
