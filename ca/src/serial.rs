//! Certificate serial numbers: positive, at most 20 octets, with at least 64 bits from
//! a CSPRNG (CA/B Forum and RFC 5280 §4.1.2.2).

use std::fmt;

use x509_cert::serial_number::SerialNumber;

use crate::CaError;

/// A certificate's serial number, shown as lowercase hex without leading zero octets.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertificateSerial(Vec<u8>);

impl CertificateSerial {
    /// 127 random bits: 16 octets from the OS CSPRNG, the top bit cleared so the DER
    /// INTEGER is positive without a padding octet, the low bit of the first octet set
    /// so it is never shortened.
    pub fn random() -> Result<Self, CaError> {
        let mut bytes = vec![0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| CaError::Task(format!("random serial: {e}")))?;
        bytes[0] = (bytes[0] & 0x7f) | 0x01;
        Ok(Self(bytes))
    }

    /// Parses the hex form, as operators type it (`1a2b...`, `1A:2B:...` or `0x1a2b`).
    pub fn parse(text: &str) -> Result<Self, CaError> {
        let cleaned: String = text
            .trim()
            .trim_start_matches("0x")
            .chars()
            .filter(|c| *c != ':')
            .collect();
        let cleaned = if cleaned.len() % 2 == 1 {
            format!("0{cleaned}")
        } else {
            cleaned
        };
        let bytes = hex::decode(&cleaned)
            .map_err(|_| CaError::BadRequest(format!("serial {text:?} is not hexadecimal")))?;
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        let bytes = bytes[start..].to_vec();
        if bytes.is_empty() || bytes.len() > 20 {
            return Err(CaError::BadRequest(format!(
                "serial {text:?} must be 1 to 20 octets and not zero"
            )));
        }
        Ok(Self(bytes))
    }

    /// From big-endian magnitude octets (as a CertID carries them); leading zeros are
    /// dropped, zero stays `[0]`.
    pub fn from_be_bytes(bytes: &[u8]) -> Self {
        match bytes.iter().position(|&b| b != 0) {
            Some(start) => Self(bytes[start..].to_vec()),
            None => Self(vec![0]),
        }
    }

    /// From a certificate's serial number field. Serials are positive (RFC 5280
    /// §4.1.2.2), so the DER contents are the magnitude with at most one sign octet.
    pub fn from_certificate(serial: &SerialNumber) -> Self {
        Self::from_be_bytes(serial.as_bytes())
    }

    /// The magnitude, big-endian, without leading zeros.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lowercase hex, as stored and shown.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    pub(crate) fn to_x509(&self) -> Result<SerialNumber, CaError> {
        // DER INTEGER content: a leading zero keeps a set top bit positive.
        let content = if self.0.first().is_some_and(|b| b & 0x80 != 0) {
            [&[0u8][..], &self.0].concat()
        } else {
            self.0.clone()
        };
        SerialNumber::new(&content).map_err(|e| CaError::encoding("serial number", e))
    }
}

impl From<&SerialNumber> for CertificateSerial {
    fn from(serial: &SerialNumber) -> Self {
        Self::from_certificate(serial)
    }
}

impl fmt::Display for CertificateSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for CertificateSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificateSerial({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn random_serials_are_positive_long_and_distinct() {
        let a = CertificateSerial::random().unwrap();
        let b = CertificateSerial::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_bytes().len(), 16);
        assert!(a.as_bytes()[0] & 0x80 == 0 && a.as_bytes()[0] != 0);
        let x509 = a.to_x509().unwrap();
        assert_eq!(CertificateSerial::from_certificate(&x509), a);
    }

    #[test]
    fn operator_forms_parse_to_one_serial() {
        let plain = CertificateSerial::parse("1a2b3c").unwrap();
        assert_eq!(CertificateSerial::parse("1A:2B:3C").unwrap(), plain);
        assert_eq!(CertificateSerial::parse("0x001a2b3c").unwrap(), plain);
        assert_eq!(
            CertificateSerial::parse("a2b3c").unwrap().to_hex(),
            "0a2b3c"
        );
        assert!(CertificateSerial::parse("zz").is_err());
        assert!(CertificateSerial::parse("00").is_err());
        assert!(CertificateSerial::parse(&"ab".repeat(21)).is_err());
        // Top bit set: still positive on the wire.
        let high = CertificateSerial::parse("ff01").unwrap();
        assert_eq!(
            CertificateSerial::from_certificate(&high.to_x509().unwrap()),
            high
        );
    }
}
