//! CAdES baseline structures (ETSI EN 319 122-1): the signed attributes a signer's
//! token signs, and the detached CMS SignedData assembled around its signature value.
//! Pure code: no database, no network, no clock reads.

use cms::{
    content_info::{CmsVersion, ContentInfo},
    signed_data::{EncapsulatedContentInfo, SignerInfo, SignerInfos},
};
use der::{
    Any, Decode, Encode, Sequence, Tag,
    asn1::{ObjectIdentifier, OctetString, SetOfVec, Uint},
};
use eid_hsm::SignatureScheme;
use sha2::{Digest, Sha256, Sha384, Sha512};
use spki::AlgorithmIdentifierOwned;
use time::OffsetDateTime;
use x509_cert::{Certificate, attr::Attributes, crl::CertificateList, time::Time};

use crate::{
    SignatureError,
    cms::{
        ID_AA_SIGNATURE_TIME_STAMP_TOKEN, ID_CONTENT_TYPE, ID_DATA, ID_MESSAGE_DIGEST,
        ID_SIGNING_TIME, RevocationInfoChoice, SignedData, attribute, certificate_set,
        signer_identifier, signing_certificate_v2,
    },
    tsa::asn1::{ID_SHA256, ID_SHA384, ID_SHA512},
};

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// A digest algorithm of the document and of the signed attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DigestAlgorithm {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl DigestAlgorithm {
    /// Parses the API's names (`sha256`, `SHA-256`, ...).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().replace('-', "").as_str() {
            "sha256" => Some(Self::Sha256),
            "sha384" => Some(Self::Sha384),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// The stored and displayed name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// The digest length in octets.
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(data).to_vec(),
            Self::Sha384 => Sha384::digest(data).to_vec(),
            Self::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Hashes the concatenation of `parts` (a PDF's ByteRange) without copying them.
    pub fn digest_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut hasher = D::new();
            for part in parts {
                hasher.update(part);
            }
            hasher.finalize().to_vec()
        }
        match self {
            Self::Sha256 => run::<Sha256>(parts),
            Self::Sha384 => run::<Sha384>(parts),
            Self::Sha512 => run::<Sha512>(parts),
        }
    }

    /// The `AlgorithmIdentifier` (RFC 5754 §2: parameters absent).
    pub fn algorithm_identifier(self) -> AlgorithmIdentifierOwned {
        AlgorithmIdentifierOwned {
            oid: match self {
                Self::Sha256 => ID_SHA256,
                Self::Sha384 => ID_SHA384,
                Self::Sha512 => ID_SHA512,
            },
            parameters: None,
        }
    }

    /// The digest a signature scheme applies to what it signs. CMS hashes the
    /// document and the signed attributes with the one `digestAlgorithm` of the
    /// SignerInfo (RFC 5652 §5.4), and verifiers such as OpenSSL use it for the
    /// signature too, so the document digest must be made with this algorithm.
    pub fn of_scheme(scheme: SignatureScheme) -> Option<Self> {
        match scheme {
            SignatureScheme::EcdsaSha256
            | SignatureScheme::RsaPkcs1Sha256
            | SignatureScheme::RsaPssSha256 => Some(Self::Sha256),
            SignatureScheme::EcdsaSha384 => Some(Self::Sha384),
            _ => None,
        }
    }
}

/// The signature scheme a certified key signs with: ECDSA with the hash that matches
/// the curve, or RSASSA-PKCS1-v1_5 with SHA-256 (what cards and SIMs offer).
pub fn scheme_for(certificate: &Certificate) -> Result<SignatureScheme, SignatureError> {
    let spki = certificate.tbs_certificate().subject_public_key_info();
    let algorithm = &spki.algorithm;
    if algorithm.oid == RSA_ENCRYPTION {
        return Ok(SignatureScheme::RsaPkcs1Sha256);
    }
    if algorithm.oid == ID_EC_PUBLIC_KEY {
        let curve = algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        return match curve {
            Some(SECP256R1) => Ok(SignatureScheme::EcdsaSha256),
            Some(SECP384R1) => Ok(SignatureScheme::EcdsaSha384),
            _ => Err(SignatureError::UnsupportedAlgorithm(
                "the certificate's key is on a curve other than P-256 or P-384".into(),
            )),
        };
    }
    Err(SignatureError::UnsupportedAlgorithm(format!(
        "the certificate's key type {} is not supported (EC P-256, P-384 or RSA)",
        algorithm.oid
    )))
}

fn encoding(what: &'static str) -> impl FnOnce(der::Error) -> SignatureError {
    move |source| SignatureError::Encoding { what, source }
}

/// The signed attributes of a baseline signature over a document whose digest is
/// `document_digest`: content-type id-data, message-digest, signing-certificate-v2
/// and, when `signing_time` is given, signing-time. CAdES (EN 319 122-1 §5.2.1) has
/// the signing-time; PAdES (EN 319 142-1 §5.3) must not, its time is the signature
/// dictionary's /M. Returns the DER of the `SET OF Attribute`: exactly what the
/// signer's key signs (RFC 5652 §5.4).
pub fn signed_attributes(
    certificate: &Certificate,
    document_digest: &[u8],
    signing_time: Option<OffsetDateTime>,
) -> Result<Vec<u8>, SignatureError> {
    let mut attributes = vec![
        attribute(
            ID_CONTENT_TYPE,
            Any::encode_from(&ID_DATA).map_err(encoding("content type"))?,
        )
        .map_err(encoding("content type"))?,
        attribute(
            ID_MESSAGE_DIGEST,
            Any::new(Tag::OctetString, document_digest).map_err(encoding("message digest"))?,
        )
        .map_err(encoding("message digest"))?,
        signing_certificate_v2(certificate).map_err(encoding("signing certificate"))?,
    ];
    if let Some(signing_time) = signing_time {
        let time = Time::try_from(std::time::SystemTime::from(signing_time))
            .map_err(encoding("signing time"))?;
        attributes.push(
            attribute(
                ID_SIGNING_TIME,
                Any::encode_from(&time).map_err(encoding("signing time"))?,
            )
            .map_err(encoding("signing time"))?,
        );
    }
    // SetOfVec sorts them into DER order.
    let attributes: Attributes =
        SetOfVec::try_from(attributes).map_err(encoding("signed attributes"))?;
    attributes.to_der().map_err(encoding("signed attributes"))
}

/// `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`.
#[derive(Sequence)]
struct EcdsaSigValue {
    r: Uint,
    s: Uint,
}

/// An ECDSA signature as DER `ECDSA-Sig-Value`. PKCS#11 tokens (`CKM_ECDSA`) return
/// the raw `r || s`; both are accepted and CMS gets the DER form.
pub fn ecdsa_signature_der(signature: &[u8], field_len: usize) -> Option<Vec<u8>> {
    if EcdsaSigValue::from_der(signature).is_ok() {
        return Some(signature.to_vec());
    }
    if signature.len() != 2 * field_len {
        return None;
    }
    let (r, s) = signature.split_at(field_len);
    EcdsaSigValue {
        r: Uint::new(r).ok()?,
        s: Uint::new(s).ok()?,
    }
    .to_der()
    .ok()
}

/// What the finished signature carries besides the signer's own.
#[derive(Debug, Default)]
pub struct Additions {
    /// The signature time-stamp token (CAdES-T), a `ContentInfo`.
    pub time_stamp: Option<ContentInfo>,
    /// Certificates beyond the signer's (its CA chain; for LT also the TSU's chain and
    /// the OCSP responders').
    pub certificates: Vec<Certificate>,
    /// OCSP responses (DER `OCSPResponse`), for LT.
    pub ocsp_responses: Vec<Vec<u8>>,
    /// CRLs (DER `CertificateList`) of the CA certificates, for LT.
    pub crls: Vec<Vec<u8>>,
}

/// The DER `ContentInfo` of a detached CAdES signature.
pub fn assemble(
    certificate: &Certificate,
    scheme: SignatureScheme,
    digest: DigestAlgorithm,
    signed_attributes_der: &[u8],
    signature_value: &[u8],
    additions: &Additions,
) -> Result<Vec<u8>, SignatureError> {
    let signed_attrs =
        Attributes::from_der(signed_attributes_der).map_err(encoding("signed attributes"))?;
    let unsigned_attrs = match &additions.time_stamp {
        Some(token) => Some(
            SetOfVec::try_from(vec![
                attribute(
                    ID_AA_SIGNATURE_TIME_STAMP_TOKEN,
                    Any::encode_from(token).map_err(encoding("signature time-stamp"))?,
                )
                .map_err(encoding("signature time-stamp"))?,
            ])
            .map_err(encoding("unsigned attributes"))?,
        ),
        None => None,
    };
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: signer_identifier(certificate),
        digest_alg: digest.algorithm_identifier(),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: scheme
            .algorithm_identifier()
            .map_err(|e| SignatureError::Task(format!("signature algorithm: {e}")))?,
        signature: OctetString::new(signature_value).map_err(encoding("signature value"))?,
        unsigned_attrs,
    };
    let mut certificates = vec![certificate.clone()];
    certificates.extend(additions.certificates.iter().cloned());
    let crls = if additions.ocsp_responses.is_empty() && additions.crls.is_empty() {
        None
    } else {
        Some(
            SetOfVec::try_from(revocation_choices(additions)?)
                .map_err(encoding("revocation values"))?,
        )
    };
    let signed_data = SignedData {
        // RFC 5652 §5.1: v5 once a RevocationInfoChoice of type other (the OCSP
        // responses) is present; otherwise v1 (id-data, X.509 certificates only,
        // a version 1 SignerInfo).
        version: if !additions.ocsp_responses.is_empty() {
            CmsVersion::V5
        } else {
            CmsVersion::V1
        },
        digest_algorithms: SetOfVec::try_from(vec![digest.algorithm_identifier()])
            .map_err(encoding("digest algorithms"))?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: None,
        },
        certificates: Some(certificate_set(&certificates).map_err(encoding("certificates"))?),
        crls,
        signer_infos: SignerInfos(
            SetOfVec::try_from(vec![signer_info]).map_err(encoding("signer infos"))?,
        ),
    };
    signed_data
        .to_content_info_der()
        .map_err(encoding("SignedData"))
}

/// `additions`' OCSP responses (RFC 5940 `otherRevInfo`) and CRLs as
/// RevocationInfoChoices.
fn revocation_choices(additions: &Additions) -> Result<Vec<RevocationInfoChoice>, SignatureError> {
    let mut choices = additions
        .ocsp_responses
        .iter()
        .map(|der| RevocationInfoChoice::ocsp_response(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(encoding("OCSP response"))?;
    for der in &additions.crls {
        choices.push(RevocationInfoChoice::Crl(
            CertificateList::from_der(der).map_err(encoding("CRL"))?,
        ));
    }
    Ok(choices)
}

/// `cades` with `additions`' certificates, OCSP responses and CRLs added to its
/// SignedData (its `certificates` and `crls`, outside what the signature covers; each
/// item once), the signer infos untouched: how a CAdES-T signature becomes LT.
pub fn add_validation_data(cades: &[u8], additions: &Additions) -> Result<Vec<u8>, SignatureError> {
    let info = ContentInfo::from_der(cades).map_err(encoding("ContentInfo"))?;
    let mut signed_data: SignedData = info.content.decode_as().map_err(encoding("SignedData"))?;
    let mut certificates: Vec<Certificate> = signed_data
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|choice| match choice {
            cms::cert::CertificateChoices::Certificate(certificate) => Some(certificate.clone()),
            _ => None,
        })
        .collect();
    certificates.extend(additions.certificates.iter().cloned());
    signed_data.certificates =
        Some(certificate_set(&certificates).map_err(encoding("certificates"))?);
    let mut choices: Vec<RevocationInfoChoice> = signed_data
        .crls
        .iter()
        .flat_map(|set| set.iter().cloned())
        .collect();
    for choice in revocation_choices(additions)? {
        if !choices.contains(&choice) {
            choices.push(choice);
        }
    }
    let other = choices
        .iter()
        .any(|choice| matches!(choice, RevocationInfoChoice::Other(_)));
    if !choices.is_empty() {
        signed_data.crls =
            Some(SetOfVec::try_from(choices).map_err(encoding("revocation values"))?);
    }
    // RFC 5652 §5.1: v5 once a RevocationInfoChoice of type other is present.
    if other {
        signed_data.version = CmsVersion::V5;
    }
    signed_data
        .to_content_info_der()
        .map_err(encoding("SignedData"))
}

/// The signature value of the (only) signer of a CAdES signature, to time-stamp it.
pub fn signature_value(cades: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let info = ContentInfo::from_der(cades).map_err(encoding("ContentInfo"))?;
    let signed_data: SignedData = info.content.decode_as().map_err(encoding("SignedData"))?;
    signed_data
        .signer_infos
        .0
        .iter()
        .next()
        .map(|signer| signer.signature.as_bytes().to_vec())
        .ok_or_else(|| SignatureError::Task("the signature has no signer".into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn raw_ecdsa_signatures_become_der() {
        let raw = [[0x01u8; 32], [0x80u8; 32]].concat();
        let der = ecdsa_signature_der(&raw, 32).unwrap();
        let parsed = EcdsaSigValue::from_der(&der).unwrap();
        assert_eq!(parsed.r.as_bytes(), &[0x01u8; 32]);
        assert_eq!(parsed.s.as_bytes(), &[0x80u8; 32]);
        // Already DER: unchanged.
        assert_eq!(ecdsa_signature_der(&der, 32).unwrap(), der);
        assert!(ecdsa_signature_der(b"short", 32).is_none());
    }

    #[test]
    fn digest_names() {
        assert_eq!(
            DigestAlgorithm::parse("SHA-256"),
            Some(DigestAlgorithm::Sha256)
        );
        assert_eq!(
            DigestAlgorithm::parse("sha384"),
            Some(DigestAlgorithm::Sha384)
        );
        assert_eq!(DigestAlgorithm::parse("md5"), None);
    }
}
