//! The ASN.1 of RFC 3161 (TSP) with RFC 5816's ESSCertIDv2, and the qcStatements
//! extension of ETSI EN 319 422.
//!
//! Written here with `der` derives because the `x509-tsp` crate exists only for the
//! previous `der` generation (0.7, with cms 0.2), whose types do not mix with x509-cert
//! 0.3 and cms 0.3. The RFC 3161 module is `IMPLICIT TAGS`; a tagged CHOICE (`tsa [0]
//! GeneralName`) is nevertheless explicit, as X.680 requires.

use der::{
    Enumerated, Sequence,
    asn1::{BitString, Int, ObjectIdentifier, OctetString, Uint},
};
use spki::AlgorithmIdentifierOwned;
use x509_cert::{
    ext::{Extensions, pkix::name::GeneralName},
    serial_number::SerialNumber,
};

use super::gen_time::GenTime;

pub use crate::cms::{
    ID_AA_SIGNING_CERTIFICATE_V2, ID_CONTENT_TYPE, ID_MESSAGE_DIGEST, ID_SIGNED_DATA,
};

/// `id-ct-TSTInfo` (RFC 3161 §2.4.2): the eContentType of a time-stamp token.
pub const ID_CT_TST_INFO: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
/// `id-pe-qcStatements` (RFC 3739): the extension that carries the statement.
pub const ID_PE_QC_STATEMENTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.3");
/// `id-etsi-tsts-EuQCompliance` (ETSI EN 319 422 Annex B): `esi4-qtstStatement-1`, the
/// TSA's claim that the token is a qualified electronic time-stamp.
pub const ID_ETSI_TSTS_EU_QCOMPLIANCE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("0.4.0.19422.1.1");
/// SHA-1, accepted by nothing here but recognised to answer `badAlg` precisely.
pub const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
/// SHA-256.
pub const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// SHA-384.
pub const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
/// SHA-512.
pub const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// `MessageImprint ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier, hashedMessage OCTET STRING }`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct MessageImprint {
    /// The hash the client used.
    pub hash_algorithm: AlgorithmIdentifierOwned,
    /// The hash of the data to be time-stamped.
    pub hashed_message: OctetString,
}

/// `TimeStampReq` (RFC 3161 §2.4.1).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct TimeStampReq {
    /// `version INTEGER { v1(1) }`.
    pub version: u8,
    /// What to time-stamp.
    pub message_imprint: MessageImprint,
    /// The policy the client wants, if any.
    #[asn1(optional = "true")]
    pub req_policy: Option<ObjectIdentifier>,
    /// Echoed in the token.
    #[asn1(optional = "true")]
    pub nonce: Option<Int>,
    /// Whether the TSA's certificate is to be included.
    #[asn1(default = "Default::default")]
    pub cert_req: bool,
    /// `[0] IMPLICIT Extensions OPTIONAL`.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub extensions: Option<Extensions>,
}

/// `PKIStatus ::= INTEGER` (RFC 3161 §2.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enumerated)]
#[asn1(type = "INTEGER")]
#[repr(u8)]
pub enum PkiStatus {
    /// A token is present.
    Granted = 0,
    /// A token is present, with modifications.
    GrantedWithMods = 1,
    /// Refused; failInfo says why.
    Rejection = 2,
    /// Not yet ready.
    Waiting = 3,
    /// A revocation is about to happen.
    RevocationWarning = 4,
    /// A revocation has happened.
    RevocationNotification = 5,
}

/// `PKIStatusInfo ::= SEQUENCE { status, statusString PKIFreeText OPTIONAL, failInfo OPTIONAL }`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct PkiStatusInfo {
    /// The status.
    pub status: PkiStatus,
    /// `PKIFreeText ::= SEQUENCE SIZE (1..MAX) OF UTF8String`.
    #[asn1(optional = "true")]
    pub status_string: Option<Vec<String>>,
    /// `PKIFailureInfo ::= BIT STRING`: see [`FailureInfo`].
    #[asn1(optional = "true")]
    pub fail_info: Option<BitString>,
}

/// `TimeStampResp ::= SEQUENCE { status PKIStatusInfo, timeStampToken TimeStampToken OPTIONAL }`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct TimeStampResp {
    /// Whether a token was issued.
    pub status: PkiStatusInfo,
    /// `TimeStampToken ::= ContentInfo` (signedData over a TSTInfo).
    #[asn1(optional = "true")]
    pub time_stamp_token: Option<cms::content_info::ContentInfo>,
}

/// `Accuracy ::= SEQUENCE { seconds INTEGER OPTIONAL, millis [0] INTEGER (1..999)
/// OPTIONAL, micros [1] INTEGER (1..999) OPTIONAL }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Sequence)]
pub struct Accuracy {
    /// Whole seconds.
    #[asn1(optional = "true")]
    pub seconds: Option<u32>,
    /// Milliseconds, 1 to 999.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub millis: Option<u16>,
    /// Microseconds, 1 to 999.
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub micros: Option<u16>,
}

/// `TSTInfo` (RFC 3161 §2.4.2): what the TSA signs.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct TstInfo {
    /// `version INTEGER { v1(1) }`.
    pub version: u8,
    /// The TSA policy under which the token was issued.
    pub policy: ObjectIdentifier,
    /// The request's imprint, unchanged.
    pub message_imprint: MessageImprint,
    /// Unique per token issued by this TSA.
    pub serial_number: Uint,
    /// When the token was made.
    pub gen_time: GenTime,
    /// How far genTime may be from UTC.
    #[asn1(optional = "true")]
    pub accuracy: Option<Accuracy>,
    /// `ordering BOOLEAN DEFAULT FALSE`: tokens are not ordered beyond their genTime.
    #[asn1(default = "Default::default")]
    pub ordering: bool,
    /// The request's nonce, unchanged.
    #[asn1(optional = "true")]
    pub nonce: Option<Int>,
    /// `tsa [0] GeneralName OPTIONAL` (explicit: GeneralName is a CHOICE).
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub tsa: Option<GeneralName>,
    /// `extensions [1] IMPLICIT Extensions OPTIONAL`.
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub extensions: Option<Extensions>,
}

/// `IssuerSerial ::= SEQUENCE { issuer GeneralNames, serialNumber CertificateSerialNumber }`
/// (RFC 5035).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct IssuerSerial {
    /// The issuer as a directoryName.
    pub issuer: Vec<GeneralName>,
    /// The certificate's serial number.
    pub serial_number: SerialNumber,
}

/// `ESSCertIDv2 ::= SEQUENCE { hashAlgorithm DEFAULT id-sha256, certHash, issuerSerial
/// OPTIONAL }` (RFC 5035). With SHA-256 the algorithm is left out, as DER wants for a
/// DEFAULT value.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct EssCertIdV2 {
    /// Absent for SHA-256.
    #[asn1(optional = "true")]
    pub hash_algorithm: Option<AlgorithmIdentifierOwned>,
    /// Hash of the whole DER certificate.
    pub cert_hash: OctetString,
    /// Which certificate, by issuer and serial.
    #[asn1(optional = "true")]
    pub issuer_serial: Option<IssuerSerial>,
}

/// `SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2, policies ... OPTIONAL }`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SigningCertificateV2 {
    /// The signer's certificate first.
    pub certs: Vec<EssCertIdV2>,
}

/// `QCStatement ::= SEQUENCE { statementId OBJECT IDENTIFIER, statementInfo ANY OPTIONAL }`
/// (RFC 3739); `esi4-qtstStatement-1` has no statementInfo.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct QcStatement {
    /// The statement.
    pub statement_id: ObjectIdentifier,
}

/// The failure reasons of `PKIFailureInfo` (RFC 3161 §2.4.2) that this TSA reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureInfo {
    /// `badAlg (0)`: unrecognized or unsupported algorithm identifier.
    BadAlg,
    /// `badRequest (2)`: transaction not permitted or supported.
    BadRequest,
    /// `badDataFormat (5)`: the data submitted has the wrong format.
    BadDataFormat,
    /// `timeNotAvailable (14)`: the TSA's time source is not available.
    TimeNotAvailable,
    /// `unacceptedPolicy (15)`: the requested TSA policy is not supported.
    UnacceptedPolicy,
    /// `unacceptedExtension (16)`: the requested extension is not supported.
    UnacceptedExtension,
    /// `systemFailure (25)`: the request cannot be handled due to system failure.
    SystemFailure,
}

impl FailureInfo {
    /// The bit's number.
    pub fn bit(self) -> usize {
        match self {
            Self::BadAlg => 0,
            Self::BadRequest => 2,
            Self::BadDataFormat => 5,
            Self::TimeNotAvailable => 14,
            Self::UnacceptedPolicy => 15,
            Self::UnacceptedExtension => 16,
            Self::SystemFailure => 25,
        }
    }

    /// The name RFC 3161 gives it.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadAlg => "badAlg",
            Self::BadRequest => "badRequest",
            Self::BadDataFormat => "badDataFormat",
            Self::TimeNotAvailable => "timeNotAvailable",
            Self::UnacceptedPolicy => "unacceptedPolicy",
            Self::UnacceptedExtension => "unacceptedExtension",
            Self::SystemFailure => "systemFailure",
        }
    }

    /// The DER BIT STRING with only this bit set: a named-bit list drops trailing zero
    /// bits (X.690 §11.2.2), so it ends at this bit.
    pub fn to_bit_string(self) -> der::Result<BitString> {
        let bit = self.bit();
        let mut bytes = vec![0u8; bit / 8 + 1];
        bytes[bit / 8] = 0x80 >> (bit % 8);
        // invariant: bit % 8 < 8, so the unused-bit count is 0..=7.
        BitString::new((7 - bit % 8) as u8, bytes)
    }

    /// Every reason, to read a failInfo back.
    pub const ALL: [Self; 7] = [
        Self::BadAlg,
        Self::BadRequest,
        Self::BadDataFormat,
        Self::TimeNotAvailable,
        Self::UnacceptedPolicy,
        Self::UnacceptedExtension,
        Self::SystemFailure,
    ];

    /// The reasons whose bits are set in `bits`.
    pub fn from_bit_string(bits: &BitString) -> Vec<Self> {
        let bytes = bits.raw_bytes();
        Self::ALL
            .into_iter()
            .filter(|reason| {
                let bit = reason.bit();
                bytes
                    .get(bit / 8)
                    .is_some_and(|byte| byte & (0x80 >> (bit % 8)) != 0)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use der::Encode;

    use super::*;

    #[test]
    fn failure_bits_are_minimal_named_bit_strings() {
        // badAlg: one octet 0x80, 7 unused bits.
        assert_eq!(
            FailureInfo::BadAlg
                .to_bit_string()
                .unwrap()
                .to_der()
                .unwrap(),
            [0x03, 0x02, 0x07, 0x80]
        );
        // timeNotAvailable (14): two octets, the second 0x02, 1 unused bit.
        assert_eq!(
            FailureInfo::TimeNotAvailable
                .to_bit_string()
                .unwrap()
                .to_der()
                .unwrap(),
            [0x03, 0x03, 0x01, 0x00, 0x02]
        );
        for reason in FailureInfo::ALL {
            let bits = reason.to_bit_string().unwrap();
            assert_eq!(FailureInfo::from_bit_string(&bits), [reason]);
        }
    }
}
