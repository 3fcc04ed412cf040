//! Token classes and their policy: where a key lives decides what it may be used for.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::{HsmError, KeyAttributes, KeyRole};

/// The kind of device a key store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TokenClass {
    /// The soft key store: keys encrypted in files. Never a signature creation device.
    Soft,
    /// A hardware security module holding service keys (and remote-signing keys).
    Hsm,
    /// A citizen's smartcard (ID card): PIN1, PIN2, PUK; two key pairs.
    Smartcard,
    /// A citizen's SIM (mobile ID): PIN1, PIN2, PUK; two key pairs.
    Sim,
}

impl TokenClass {
    /// The stable name used in config and records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Soft => "soft",
            Self::Hsm => "hsm",
            Self::Smartcard => "smartcard",
            Self::Sim => "sim",
        }
    }

    /// Whether keys on this class belong to a citizen (PIN rules, two key pairs).
    pub fn is_citizen_token(self) -> bool {
        matches!(self, Self::Smartcard | Self::Sim)
    }

    /// The PIN rules of this class, if it has citizen PINs.
    pub fn pin_policy(self) -> Option<PinPolicy> {
        self.is_citizen_token().then_some(PinPolicy::CITIZEN)
    }
}

impl fmt::Display for TokenClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which of a citizen token's secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PinKind {
    /// PIN1: unlocks the authentication key.
    Pin1,
    /// PIN2: authorises each signature with the signing key.
    Pin2,
    /// PUK: unblocks PIN1 and PIN2.
    Puk,
}

impl fmt::Display for PinKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pin1 => "PIN1",
            Self::Pin2 => "PIN2",
            Self::Puk => "PUK",
        })
    }
}

/// Length and content rules for a citizen token's PINs (as on Estonian ID cards:
/// PIN1 4-12 digits, PIN2 5-12, PUK 8-12, three tries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinPolicy {
    /// Shortest PIN1.
    pub pin1_min: usize,
    /// Shortest PIN2.
    pub pin2_min: usize,
    /// Shortest PUK.
    pub puk_min: usize,
    /// Longest of any of them.
    pub max: usize,
    /// Wrong tries before a PIN blocks.
    pub tries: u8,
}

impl PinPolicy {
    /// The citizen-token rules.
    pub const CITIZEN: Self = Self {
        pin1_min: 4,
        pin2_min: 5,
        puk_min: 8,
        max: 12,
        tries: 3,
    };

    /// Checks a PIN against the rules for its kind: digits only, length in range,
    /// not one repeated digit, not a straight ascending or descending run.
    pub fn check(&self, kind: PinKind, pin: &SecretString) -> Result<(), HsmError> {
        let pin = pin.expose_secret();
        let min = match kind {
            PinKind::Pin1 => self.pin1_min,
            PinKind::Pin2 => self.pin2_min,
            PinKind::Puk => self.puk_min,
        };
        let fail = |rule: String| Err(HsmError::PinPolicy { kind, rule });
        if !pin.bytes().all(|b| b.is_ascii_digit()) {
            return fail("only digits are allowed".into());
        }
        if pin.len() < min || pin.len() > self.max {
            return fail(format!("it must have {min} to {} digits", self.max));
        }
        let bytes = pin.as_bytes();
        if bytes
            .first()
            .is_some_and(|first| bytes.iter().all(|b| b == first))
        {
            return fail("it must not be one digit repeated".into());
        }
        let steps: Vec<i16> = bytes
            .windows(2)
            .map(|w| i16::from(w[1]) - i16::from(w[0]))
            .collect();
        if steps.iter().all(|&s| s == 1) || steps.iter().all(|&s| s == -1) {
            return fail("it must not be a run of consecutive digits".into());
        }
        Ok(())
    }
}

/// Evidence, read from the key store, of whether a key sits on a qualified signature
/// creation device (QSCD).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QscdEvidence {
    /// The class of the store holding the key.
    pub token_class: TokenClass,
    /// What the key was generated for.
    pub role: KeyRole,
    /// The key's attributes as the token reports them.
    pub attributes: KeyAttributes,
}

impl QscdEvidence {
    /// True only for a key generated on a citizen card or SIM (or an HSM, for remote
    /// qualified signing) that is sensitive, never extractable and local, and — for a
    /// citizen signing key — needs the PIN for every signature.
    pub fn is_qscd(&self) -> bool {
        let hardware = matches!(
            self.token_class,
            TokenClass::Hsm | TokenClass::Smartcard | TokenClass::Sim
        );
        let attributes = self.attributes.sensitive
            && !self.attributes.extractable
            && self.attributes.never_extractable
            && self.attributes.local;
        let sole_control = match self.token_class {
            TokenClass::Smartcard | TokenClass::Sim => {
                self.role == KeyRole::CitizenSigning && self.attributes.always_authenticate
            }
            _ => true,
        };
        hardware && attributes && sole_control
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn citizen_pin_rules() {
        let policy = PinPolicy::CITIZEN;
        assert!(policy.check(PinKind::Pin1, &secret("4821")).is_ok());
        assert!(policy.check(PinKind::Pin2, &secret("4821")).is_err());
        assert!(policy.check(PinKind::Pin2, &secret("48213")).is_ok());
        assert!(policy.check(PinKind::Puk, &secret("1234567")).is_err());
        assert!(policy.check(PinKind::Puk, &secret("83910274")).is_ok());
        assert!(policy.check(PinKind::Pin1, &secret("1111")).is_err());
        assert!(policy.check(PinKind::Pin1, &secret("1234")).is_err());
        assert!(policy.check(PinKind::Pin1, &secret("9876")).is_err());
        assert!(policy.check(PinKind::Pin1, &secret("12a4")).is_err());
        assert!(
            policy
                .check(PinKind::Pin1, &secret("1234567890123"))
                .is_err()
        );
    }

    #[test]
    fn soft_keys_are_never_qscd() {
        let attributes = KeyAttributes {
            sensitive: true,
            extractable: false,
            never_extractable: true,
            local: true,
            always_authenticate: true,
        };
        let mut evidence = QscdEvidence {
            token_class: TokenClass::Soft,
            role: KeyRole::CitizenSigning,
            attributes,
        };
        assert!(!evidence.is_qscd());
        evidence.token_class = TokenClass::Smartcard;
        assert!(evidence.is_qscd());
        evidence.attributes.always_authenticate = false;
        assert!(!evidence.is_qscd());
        evidence.attributes.always_authenticate = true;
        evidence.attributes.local = false;
        assert!(!evidence.is_qscd());
    }
}
