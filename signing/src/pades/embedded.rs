//! The signatures inside a PDF, found for validation: every `/ByteRange` with its
//! `/Contents`, read from the file's bytes (a signature dictionary is never inside an
//! object stream: its byte range must point into the file itself).

use crate::PdfError;

/// One signature of a PDF.
#[derive(Debug)]
pub struct EmbeddedSignature {
    /// `/ByteRange` as written: `[0, a, b, c]`.
    pub byte_range: [usize; 4],
    /// The CMS in `/Contents`, without the padding.
    pub cms: Vec<u8>,
    /// The `/Contents` string's octets, padding included (what a DSS /VRI key hashes).
    pub contents: Vec<u8>,
    /// What the signature covers: the file's bytes outside `/Contents`, up to `b + c`.
    pub signed_bytes: Vec<u8>,
    /// Whether the byte range reaches the end of the file (nothing was added since).
    pub covers_whole_file: bool,
    /// Whether a document security store (`/DSS`) was added after this signature.
    pub dss_after: bool,
}

/// A ByteRange that is not one a signature can have.
fn malformed(why: &str) -> PdfError {
    PdfError::Malformed(format!("a signature's /ByteRange {why}"))
}

fn numbers(text: &[u8]) -> Option<Vec<usize>> {
    text.split(|b| b.is_ascii_whitespace())
        .filter(|part| !part.is_empty())
        .map(|part| std::str::from_utf8(part).ok()?.parse::<usize>().ok())
        .collect()
}

/// The length of the DER value at the start of `bytes` (header included).
fn der_len(bytes: &[u8]) -> Option<usize> {
    use der::{Decode, Reader};
    let mut reader = der::SliceReader::new(bytes).ok()?;
    let header = der::Header::decode(&mut reader).ok()?;
    let header_len = usize::try_from(u32::from(reader.position())).ok()?;
    let body = usize::try_from(u32::from(header.length())).ok()?;
    header_len.checked_add(body)
}

/// Every signature of `pdf`, in file order. Blank placeholders are skipped.
pub fn signatures(pdf: &[u8]) -> Result<Vec<EmbeddedSignature>, PdfError> {
    if !pdf.starts_with(b"%PDF-") {
        return Err(PdfError::NotPdf(
            "the document does not start with %PDF-".into(),
        ));
    }
    let key = b"/ByteRange";
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = pdf[from..].windows(key.len()).position(|w| w == key) {
        let at = from + offset + key.len();
        from = at;
        let rest = &pdf[at..];
        let open = rest
            .iter()
            .take(16)
            .position(|b| *b == b'[')
            .ok_or_else(|| malformed("is not an array"))?;
        let close = rest[open..]
            .iter()
            .take(128)
            .position(|b| *b == b']')
            .ok_or_else(|| malformed("is not closed"))?;
        let values = numbers(&rest[open + 1..open + close])
            .ok_or_else(|| malformed("holds something other than numbers"))?;
        let [zero, start, end, tail] = values[..] else {
            return Err(malformed("does not have four numbers"));
        };
        let last = end
            .checked_add(tail)
            .ok_or_else(|| malformed("overflows"))?;
        if zero != 0 || start + 2 > end || last > pdf.len() {
            return Err(malformed(&format!(
                "[{zero} {start} {end} {tail}] does not fit a file of {} octets",
                pdf.len()
            )));
        }
        let gap = &pdf[start..end];
        if gap.first() != Some(&b'<') || gap.last() != Some(&b'>') {
            return Err(malformed("does not leave out exactly the /Contents string"));
        }
        let hex_text: Vec<u8> = gap[1..gap.len() - 1]
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        if hex_text.iter().all(|b| *b == b'0') {
            continue; // a placeholder not yet signed
        }
        let contents = hex::decode(&hex_text)
            .map_err(|_| PdfError::Malformed("a signature's /Contents is not hex".into()))?;
        let cms_len = der_len(&contents)
            .filter(|len| *len <= contents.len())
            .ok_or_else(|| PdfError::Malformed("a signature's /Contents is not DER".into()))?;
        let mut signed_bytes = Vec::with_capacity(start + tail);
        signed_bytes.extend_from_slice(&pdf[..start]);
        signed_bytes.extend_from_slice(&pdf[end..last]);
        found.push(EmbeddedSignature {
            byte_range: [zero, start, end, tail],
            cms: contents[..cms_len].to_vec(),
            contents,
            signed_bytes,
            covers_whole_file: last == pdf.len(),
            dss_after: pdf[last..].windows(4).any(|w| w == b"/DSS"),
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A file with one signature dictionary whose /Contents holds `contents` (hex
    /// text) and whose ByteRange is computed, then `after` appended.
    fn file(contents: &str, after: &str) -> Vec<u8> {
        let head = "%PDF-1.7\n1 0 obj\n<< /Type /Sig /ByteRange [0 AAAAA BBBBB CCCCC] /Contents ";
        let start = head.len();
        let end = start + contents.len() + 2;
        let tail = " >>\nendobj\n%%EOF\n";
        let range = format!("{start:05} {end:05} {:05}", tail.len());
        let mut text = head.replace("AAAAA BBBBB CCCCC", &range);
        text.push('<');
        text.push_str(contents);
        text.push('>');
        text.push_str(tail);
        text.push_str(after);
        text.into_bytes()
    }

    #[test]
    fn finds_the_cms_and_what_follows_it() {
        // A DER SEQUENCE of two octets, then padding.
        let pdf = file("30020500000000", "");
        let found = signatures(&pdf).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].cms, vec![0x30, 0x02, 0x05, 0x00]);
        assert!(found[0].covers_whole_file && !found[0].dss_after);
        let mut signed = pdf.clone();
        signed.drain(found[0].byte_range[1]..found[0].byte_range[2]);
        assert_eq!(found[0].signed_bytes, signed);

        let later = file("30020500", "2 0 obj << /DSS 3 0 R >> endobj\n");
        let found = signatures(&later).unwrap();
        assert!(!found[0].covers_whole_file && found[0].dss_after);
    }

    #[test]
    fn placeholders_are_skipped_and_damage_is_named() {
        assert!(signatures(&file("0000", "")).unwrap().is_empty());
        assert!(matches!(signatures(b"GIF89a"), Err(PdfError::NotPdf(_))));
        let mut broken = file("30020500", "");
        let at = broken.windows(5).position(|w| w == b"[0 00").unwrap();
        broken[at + 1] = b'7';
        assert!(matches!(signatures(&broken), Err(PdfError::Malformed(_))));
        assert!(matches!(
            signatures(&file("zz", "")),
            Err(PdfError::Malformed(_))
        ));
        assert!(matches!(
            signatures(&file("3005", "")),
            Err(PdfError::Malformed(_))
        ));
    }
}
