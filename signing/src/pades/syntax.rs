//! Writing PDF objects (ISO 32000-1 §7.3) for the incremental updates: the objects we
//! rewrite (catalog, page, AcroForm) come from lopdf's parse of the original and go
//! back out through here, next to the objects we make ourselves.
//!
//! Written by hand: lopdf's own writer serialises whole documents, not the few
//! objects an incremental update appends, and keeps its object writer private.

use lopdf::{Object, ObjectId};
use time::OffsetDateTime;

use crate::PdfError;

/// How deep arrays and dictionaries may nest in an object we rewrite: far beyond any
/// real catalog or page, and a bound on recursion for hostile input.
const MAX_DEPTH: usize = 64;

/// Writes `object` in PDF syntax.
pub(super) fn write_object(out: &mut Vec<u8>, object: &Object) -> Result<(), PdfError> {
    write_nested(out, object, 0)
}

fn write_nested(out: &mut Vec<u8>, object: &Object, depth: usize) -> Result<(), PdfError> {
    if depth > MAX_DEPTH {
        return Err(PdfError::Unsupported(format!(
            "objects nest deeper than {MAX_DEPTH} levels"
        )));
    }
    match object {
        Object::Null => out.extend_from_slice(b"null"),
        Object::Boolean(value) => out.extend_from_slice(if *value { b"true" } else { b"false" }),
        Object::Integer(value) => out.extend_from_slice(value.to_string().as_bytes()),
        // Rust's Display never uses an exponent, which PDF numbers cannot have. lopdf
        // reads reals as f32: a value with more than about seven significant digits in
        // a rewritten dictionary comes back rounded, which no page or form key needs.
        Object::Real(value) if value.is_finite() => {
            out.extend_from_slice(value.to_string().as_bytes());
        }
        Object::Real(_) => {
            return Err(PdfError::Malformed("a number is not finite".into()));
        }
        Object::Name(name) => write_name(out, name),
        Object::String(bytes, _) => write_string(out, bytes),
        Object::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b' ');
                }
                write_nested(out, item, depth + 1)?;
            }
            out.push(b']');
        }
        Object::Dictionary(dictionary) => {
            out.extend_from_slice(b"<<");
            for (key, value) in dictionary.iter() {
                write_name(out, key);
                out.push(b' ');
                write_nested(out, value, depth + 1)?;
            }
            out.extend_from_slice(b">>");
        }
        Object::Reference(id) => write_reference(out, *id),
        // Only dictionaries and arrays are rewritten; a stream where one is expected
        // (say, a page that is a stream) is not something to patch.
        Object::Stream(_) => {
            return Err(PdfError::Unsupported(
                "a stream stands where a dictionary or array belongs".into(),
            ));
        }
    }
    Ok(())
}

/// `n g R`.
pub(super) fn write_reference(out: &mut Vec<u8>, (number, generation): ObjectId) {
    out.extend_from_slice(format!("{number} {generation} R").as_bytes());
}

/// A name: regular characters as they are, everything else as `#xx` (§7.3.5).
pub(super) fn write_name(out: &mut Vec<u8>, name: &[u8]) {
    out.push(b'/');
    for &byte in name {
        let regular = (0x21..=0x7e).contains(&byte) && !b"()<>[]{}/%#".contains(&byte);
        if regular {
            out.push(byte);
        } else {
            out.extend_from_slice(format!("#{byte:02X}").as_bytes());
        }
    }
}

/// A string: literal when it is printable ASCII (readable in the file), hexadecimal
/// otherwise (§7.3.4).
pub(super) fn write_string(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        out.push(b'(');
        for &byte in bytes {
            if matches!(byte, b'(' | b')' | b'\\') {
                out.push(b'\\');
            }
            out.push(byte);
        }
        out.push(b')');
    } else {
        out.push(b'<');
        out.extend_from_slice(hex::encode_upper(bytes).as_bytes());
        out.push(b'>');
    }
}

/// A PDF date (§7.9.4) in UTC: `D:YYYYMMDDHHmmSSZ`, which PDF 1.7 and 2.0 both read.
pub(super) fn date(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "D:{:04}{:02}{:02}{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use lopdf::{Dictionary, StringFormat};

    use super::*;

    fn written(object: &Object) -> String {
        let mut out = Vec::new();
        write_object(&mut out, object).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn objects_round_trip_through_the_syntax() {
        let mut dictionary = Dictionary::new();
        dictionary.set("Type", Object::Name(b"Annot".to_vec()));
        dictionary.set(
            "T",
            Object::String(b"Sig (1)\\".to_vec(), StringFormat::Literal),
        );
        dictionary.set("Odd Name#", Object::Name(b"A/B".to_vec()));
        dictionary.set(
            "Rect",
            Object::Array(vec![0.into(), Object::Real(595.276), Object::Real(-0.5)]),
        );
        dictionary.set("P", Object::Reference((12, 0)));
        dictionary.set("Bin", Object::String(vec![0, 0xff], StringFormat::Literal));
        dictionary.set("N", Object::Null);
        dictionary.set("B", Object::Boolean(true));
        assert_eq!(
            written(&Object::Dictionary(dictionary)),
            "<</Type /Annot/T (Sig \\(1\\)\\\\)/Odd#20Name#23 /A#2FB/Rect [0 595.276 -0.5]\
             /P 12 0 R/Bin <00FF>/N null/B true>>"
        );
        assert_eq!(written(&Object::Real(0.000_001)), "0.000001");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut object = Object::Null;
        for _ in 0..100 {
            object = Object::Array(vec![object]);
        }
        let mut out = Vec::new();
        assert!(matches!(
            write_object(&mut out, &object),
            Err(PdfError::Unsupported(_))
        ));
    }

    #[test]
    fn dates_are_utc() {
        let at = time::macros::datetime!(2026-11-21 10:30:05 +02:00);
        assert_eq!(date(at), "D:20261121083005Z");
    }
}
