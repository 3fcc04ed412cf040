//! Revocation reasons (RFC 5280 §5.3.1 `CRLReason`), shared by CRLs and OCSP.

use std::fmt;

use x509_cert::ext::pkix::crl::CrlReason;

/// Why a certificate was revoked. Value 7 is unused in RFC 5280, so it has no variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    /// `unspecified` (0): RFC 5280 advises leaving the reason out rather than using it.
    Unspecified,
    /// `keyCompromise` (1).
    KeyCompromise,
    /// `cACompromise` (2).
    CaCompromise,
    /// `affiliationChanged` (3).
    AffiliationChanged,
    /// `superseded` (4).
    Superseded,
    /// `cessationOfOperation` (5).
    CessationOfOperation,
    /// `certificateHold` (6): the only reversible one.
    CertificateHold,
    /// `removeFromCRL` (8): only in delta CRLs, for a certificate taken off hold.
    RemoveFromCrl,
    /// `privilegeWithdrawn` (9).
    PrivilegeWithdrawn,
    /// `aACompromise` (10).
    AaCompromise,
}

/// A reason name that RFC 5280 does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an RFC 5280 CRLReason name (expected e.g. `keyCompromise`)")]
pub struct UnknownReason(pub String);

impl ReasonCode {
    /// Every reason, in code order.
    pub const ALL: [Self; 10] = [
        Self::Unspecified,
        Self::KeyCompromise,
        Self::CaCompromise,
        Self::AffiliationChanged,
        Self::Superseded,
        Self::CessationOfOperation,
        Self::CertificateHold,
        Self::RemoveFromCrl,
        Self::PrivilegeWithdrawn,
        Self::AaCompromise,
    ];

    /// The RFC 5280 ASN.1 name (`keyCompromise`, `cACompromise`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "keyCompromise",
            Self::CaCompromise => "cACompromise",
            Self::AffiliationChanged => "affiliationChanged",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessationOfOperation",
            Self::CertificateHold => "certificateHold",
            Self::RemoveFromCrl => "removeFromCRL",
            Self::PrivilegeWithdrawn => "privilegeWithdrawn",
            Self::AaCompromise => "aACompromise",
        }
    }

    /// Parses [`ReasonCode::name`]; exact, case-sensitive, as RFC 5280 spells them.
    pub fn parse(name: &str) -> Result<Self, UnknownReason> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.name() == name)
            .ok_or_else(|| UnknownReason(name.to_owned()))
    }

    /// The ENUMERATED value.
    pub fn code(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::CaCompromise => 2,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
            Self::CertificateHold => 6,
            Self::RemoveFromCrl => 8,
            Self::PrivilegeWithdrawn => 9,
            Self::AaCompromise => 10,
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<ReasonCode> for CrlReason {
    fn from(reason: ReasonCode) -> Self {
        match reason {
            ReasonCode::Unspecified => Self::Unspecified,
            ReasonCode::KeyCompromise => Self::KeyCompromise,
            ReasonCode::CaCompromise => Self::CaCompromise,
            ReasonCode::AffiliationChanged => Self::AffiliationChanged,
            ReasonCode::Superseded => Self::Superseded,
            ReasonCode::CessationOfOperation => Self::CessationOfOperation,
            ReasonCode::CertificateHold => Self::CertificateHold,
            ReasonCode::RemoveFromCrl => Self::RemoveFromCRL,
            ReasonCode::PrivilegeWithdrawn => Self::PrivilegeWithdrawn,
            ReasonCode::AaCompromise => Self::AaCompromise,
        }
    }
}

impl From<CrlReason> for ReasonCode {
    fn from(reason: CrlReason) -> Self {
        match reason {
            CrlReason::Unspecified => Self::Unspecified,
            CrlReason::KeyCompromise => Self::KeyCompromise,
            CrlReason::CaCompromise => Self::CaCompromise,
            CrlReason::AffiliationChanged => Self::AffiliationChanged,
            CrlReason::Superseded => Self::Superseded,
            CrlReason::CessationOfOperation => Self::CessationOfOperation,
            CrlReason::CertificateHold => Self::CertificateHold,
            CrlReason::RemoveFromCRL => Self::RemoveFromCrl,
            CrlReason::PrivilegeWithdrawn => Self::PrivilegeWithdrawn,
            CrlReason::AaCompromise => Self::AaCompromise,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_codes_match_the_asn1_enumeration() {
        for reason in ReasonCode::ALL {
            assert_eq!(ReasonCode::parse(reason.name()), Ok(reason));
            assert_eq!(CrlReason::from(reason) as u32, u32::from(reason.code()));
            assert_eq!(ReasonCode::from(CrlReason::from(reason)), reason);
        }
        assert!(ReasonCode::parse("KeyCompromise").is_err());
        assert_eq!(
            ReasonCode::parse("cACompromise"),
            Ok(ReasonCode::CaCompromise)
        );
    }
}
