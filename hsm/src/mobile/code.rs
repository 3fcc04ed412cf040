//! The verification code shown on both screens (the relying party's and the phone's).

use std::fmt;

/// The 4-digit verification code of a hash: the first 6 bits of the hash followed by
/// the last 7 bits, read as a 13-bit number (0 to 8191) and shown with 4 digits.
///
/// MID REST documents the rule with the example hash
/// `2f665f6a6999e0ef0752e00ec9f453adf59d8cb6` → `1462`: `0x2f` gives `001011`, the
/// last byte `0xb6` gives `0110110`. SK's Java client takes the 7 bits from byte
/// `len/2 - 1`, which is the last byte only when `len` counts hex characters; on raw
/// bytes it reads the middle of the hash (1490 for the example, not 1462). The RIA
/// DigiDoc apps and the published example take the last byte, and so does this.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerificationCode(u16);

impl VerificationCode {
    /// The code of `hash` (the hash bytes, not base64). An empty hash gives 0000.
    pub fn of(hash: &[u8]) -> Self {
        let (Some(first), Some(last)) = (hash.first(), hash.last()) else {
            return Self(0);
        };
        Self((u16::from(first & 0xfc) << 5) | u16::from(last & 0x7f))
    }

    /// The code as a number, 0 to 8191.
    pub fn value(self) -> u16 {
        self.0
    }
}

impl fmt::Display for VerificationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

impl fmt::Debug for VerificationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerificationCode({self})")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn matches_the_published_example() {
        let hash = hex::decode("2f665f6a6999e0ef0752e00ec9f453adf59d8cb6").unwrap();
        assert_eq!(VerificationCode::of(&hash).to_string(), "1462");
        // The other reading (SK's Java client on raw bytes: byte len/2 - 1) differs,
        // so the test tells the two apart.
        let middle = (u16::from(hash[0] & 0xfc) << 5) | u16::from(hash[hash.len() / 2 - 1] & 0x7f);
        assert_eq!(middle, 1490);
    }

    #[test]
    fn always_four_digits_within_13_bits() {
        assert_eq!(VerificationCode::of(&[0x00; 32]).to_string(), "0000");
        assert_eq!(VerificationCode::of(&[0x03, 0x80]).to_string(), "0000");
        assert_eq!(VerificationCode::of(&[0x04, 0x01]).to_string(), "0129");
        assert_eq!(VerificationCode::of(&[0xff; 64]).value(), 8191);
        assert_eq!(VerificationCode::of(&[]).to_string(), "0000");
    }
}
