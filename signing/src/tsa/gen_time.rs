//! `genTime` with milliseconds. RFC 3161 lets a GeneralizedTime carry fractions of a
//! second (`YYYYMMDDhhmmss[.s...]Z`, trailing zeros dropped, as DER wants); `der`'s own
//! GeneralizedTime has whole seconds only, which would add up to a second of error to
//! a token whose stated accuracy may be finer.

use der::{
    DecodeValue, EncodeValue, FixedTag, Header, Length, Reader, Tag, Writer, asn1::GeneralizedTime,
};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset, macros::format_description};

/// A GeneralizedTime in UTC with up to millisecond precision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenTime {
    /// The DER value octets, e.g. `20261121104243.25Z`.
    text: String,
}

impl GenTime {
    /// `at`, truncated to the millisecond. `None` outside the years 0000 to 9999.
    pub fn from_time(at: OffsetDateTime) -> Option<Self> {
        let at = at.to_offset(UtcOffset::UTC);
        if !(0..=9999).contains(&at.year()) {
            return None;
        }
        let whole = at
            .format(format_description!(
                "[year][month][day][hour][minute][second]"
            ))
            .ok()?;
        let millis = at.millisecond();
        let text = if millis == 0 {
            format!("{whole}Z")
        } else {
            let fraction = format!("{millis:03}");
            format!("{whole}.{}Z", fraction.trim_end_matches('0'))
        };
        Some(Self { text })
    }

    /// The time it names.
    pub fn to_time(&self) -> Option<OffsetDateTime> {
        let body = self.text.strip_suffix('Z')?;
        let (whole, fraction) = match body.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (body, None),
        };
        let base = PrimitiveDateTime::parse(
            whole,
            format_description!("[year][month][day][hour][minute][second]"),
        )
        .ok()?
        .assume_utc();
        let nanos = match fraction {
            None => 0,
            Some(digits)
                if !digits.is_empty()
                    && digits.len() <= 9
                    && digits.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let value: u32 = digits.parse().ok()?;
                value * 10u32.pow(9 - digits.len() as u32)
            }
            Some(_) => return None,
        };
        base.replace_nanosecond(nanos).ok()
    }

    /// The text as encoded.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FixedTag for GenTime {
    const TAG: Tag = GeneralizedTime::TAG;
}

impl EncodeValue for GenTime {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(self.text.len())
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(self.text.as_bytes())
    }
}

impl<'a> DecodeValue<'a> for GenTime {
    type Error = der::Error;

    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        let bytes = reader.read_vec(header.length())?;
        let text = String::from_utf8(bytes).map_err(|_| Self::TAG.value_error())?;
        let parsed = Self { text };
        if parsed.to_time().is_none() {
            return Err(Self::TAG.value_error().into());
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use der::{Decode, Encode};
    use time::macros::datetime;

    use super::*;

    #[test]
    fn milliseconds_without_trailing_zeros() {
        let cases = [
            (datetime!(2026-11-21 10:42:43 UTC), "20261121104243Z"),
            (datetime!(2026-11-21 10:42:43.250 UTC), "20261121104243.25Z"),
            (
                datetime!(2026-11-21 10:42:43.007 UTC),
                "20261121104243.007Z",
            ),
            (
                datetime!(2026-11-21 10:42:43.9999 UTC),
                "20261121104243.999Z",
            ),
        ];
        for (at, text) in cases {
            let gen_time = GenTime::from_time(at).unwrap();
            assert_eq!(gen_time.as_str(), text);
            let der = gen_time.to_der().unwrap();
            assert_eq!(der[0], 0x18);
            let back = GenTime::from_der(&der).unwrap();
            assert_eq!(back, gen_time);
            assert_eq!(
                back.to_time().unwrap().unix_timestamp_nanos() / 1_000_000,
                at.unix_timestamp_nanos() / 1_000_000
            );
        }
        assert!(GenTime::from_der(&[0x18, 0x03, b'a', b'b', b'Z']).is_err());
    }
}
