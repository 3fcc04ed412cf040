//! Visible signatures (ISO 32000-1 §12.5.5, §12.7.4.5): the signature widget gets a
//! rectangle on a page and a normal appearance, a form XObject that draws a frame and
//! a few lines of text (who signed, when) in the standard Helvetica font. On a page
//! that viewers turn (/Rotate), the drawing is turned back by its /Matrix so the text
//! reads upright on screen. Viewers show the appearance; validators judge the signature
//! as they would an invisible one.

use lopdf::{Dictionary, Object};

use crate::PdfError;

/// Where a visible signature goes and what it says.
#[derive(Clone, Debug, PartialEq)]
pub struct Appearance {
    /// The page, counted from 1.
    pub page: usize,
    /// The rectangle in the page's default user space (points, origin bottom left):
    /// `[x1, y1, x2, y2]`.
    pub rect: [f64; 4],
    /// The lines of text, top to bottom (the signer's name, the time...).
    pub lines: Vec<String>,
}

/// The smallest box that still holds a readable line.
const MIN_SIDE: f64 = 12.0;
/// Text never grows past this size, however large the box.
const MAX_FONT: f64 = 11.0;
/// Helvetica's average advance per character, as a share of the font size: a
/// conservative estimate to keep lines inside the box.
const AVERAGE_ADVANCE: f64 = 0.56;

impl Appearance {
    /// Checks the rectangle is a box of some size inside `media_box` (`[x1 y1 x2 y2]`
    /// of the page), and normalises it to lower-left, upper-right.
    pub(super) fn placed(&self, media_box: [f64; 4]) -> Result<[f64; 4], PdfError> {
        let bad = |why: String| PdfError::BadAppearance(why);
        if self.rect.iter().any(|v| !v.is_finite()) {
            return Err(bad("the rectangle has a number that is not finite".into()));
        }
        let [x1, y1, x2, y2] = self.rect;
        let rect = [x1.min(x2), y1.min(y2), x1.max(x2), y1.max(y2)];
        if rect[2] - rect[0] < MIN_SIDE || rect[3] - rect[1] < MIN_SIDE {
            return Err(bad(format!(
                "the rectangle is too small: each side needs at least {MIN_SIDE} points"
            )));
        }
        let [mx1, my1, mx2, my2] = media_box;
        let (mx1, my1, mx2, my2) = (mx1.min(mx2), my1.min(my2), mx1.max(mx2), my1.max(my2));
        if rect[0] < mx1 || rect[1] < my1 || rect[2] > mx2 || rect[3] > my2 {
            return Err(bad(format!(
                "the rectangle [{} {} {} {}] is not inside page {}'s media box [{mx1} {my1} {mx2} {my2}]",
                rect[0], rect[1], rect[2], rect[3], self.page
            )));
        }
        Ok(rect)
    }
}

/// The standard font the appearance writes with (no embedding needed, §9.6.2.2).
pub(super) fn font() -> Dictionary {
    let mut font = Dictionary::new();
    font.set("Type", Object::Name(b"Font".to_vec()));
    font.set("Subtype", Object::Name(b"Type1".to_vec()));
    font.set("BaseFont", Object::Name(b"Helvetica".to_vec()));
    font.set("Encoding", Object::Name(b"WinAnsiEncoding".to_vec()));
    font
}

/// The appearance stream object's body (dictionary and stream) for a box of `width`
/// by `height` (in the page's default user space) on a page turned `rotation`
/// degrees clockwise, showing `lines`, with the font at `font_id`.
///
/// The drawing is made for the box as the reader sees it (width and height swapped on
/// a quarter turn) and its /Matrix turns it counter-clockwise by the page's rotation;
/// the widget's /Rect then places the turned box (ISO 32000-1 §12.5.5, Algorithm 8.1).
pub(super) fn stream(
    width: f64,
    height: f64,
    rotation: u16,
    lines: &[String],
    font_id: (u32, u16),
) -> Vec<u8> {
    let (width, height, matrix) = match rotation {
        90 => (height, width, "/Matrix [0 1 -1 0 0 0]"),
        180 => (width, height, "/Matrix [-1 0 0 -1 0 0]"),
        270 => (height, width, "/Matrix [0 -1 1 0 0 0]"),
        _ => (width, height, ""),
    };
    let content = content(width, height, lines);
    let mut body = format!(
        "<</Type /XObject/Subtype /Form/FormType 1/BBox [0 0 {} {}]{matrix}\
         /Resources <</Font <</F1 {} {} R>>/ProcSet [/PDF /Text]>>/Length {}>>\nstream\n",
        number(width),
        number(height),
        font_id.0,
        font_id.1,
        content.len()
    )
    .into_bytes();
    body.extend_from_slice(&content);
    body.extend_from_slice(b"\nendstream");
    body
}

/// The drawing: a light fill, a frame, then the lines, the font sized to fit both the
/// height and the longest line.
fn content(width: f64, height: f64, lines: &[String]) -> Vec<u8> {
    let count = lines.len().max(1) as f64;
    let longest = lines
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let margin = 4.0_f64.min(width / 8.0).min(height / 8.0);
    let by_height = (height - 2.0 * margin) / (count * 1.25);
    let by_width = (width - 2.0 * margin) / (longest * AVERAGE_ADVANCE);
    let size = by_height.min(by_width).clamp(1.0, MAX_FONT);
    let leading = size * 1.25;
    let mut out = format!(
        "q 0.95 0.96 0.99 rg 0 0 {w} {h} re f Q\n\
         q 0.12 0.23 0.54 RG 0.8 w 0.4 0.4 {iw} {ih} re S Q\n\
         BT 0.05 0.05 0.1 rg /F1 {size} Tf {leading} TL {margin} {top} Td\n",
        w = number(width),
        h = number(height),
        iw = number(width - 0.8),
        ih = number(height - 0.8),
        size = number(size),
        leading = number(leading),
        margin = number(margin),
        top = number(height - margin - size),
    )
    .into_bytes();
    for (index, line) in lines.iter().enumerate() {
        if index > 0 {
            out.extend_from_slice(b"T* ");
        }
        out.push(b'(');
        out.extend(win_ansi_literal(line));
        out.extend_from_slice(b") Tj\n");
    }
    out.extend_from_slice(b"ET");
    out
}

/// A number as PDF writes it: at most two decimals, no exponent.
fn number(value: f64) -> String {
    let rounded = (value * 100.0).round() / 100.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}")
    } else {
        format!("{rounded}")
    }
}

/// The text of a literal string in WinAnsiEncoding: Latin-1 letters as themselves,
/// the delimiters escaped, anything the encoding lacks as `?`.
fn win_ansi_literal(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '(' | ')' | '\\' => {
                out.push(b'\\');
                out.push(c as u8);
            }
            ' '..='~' => out.push(c as u8),
            '\u{a0}'..='\u{ff}' => out.push(u32::from(c) as u8),
            _ => out.push(b'?'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn appearance(rect: [f64; 4]) -> Appearance {
        Appearance {
            page: 1,
            rect,
            lines: vec!["Signed by Mary Seacole".into()],
        }
    }

    #[test]
    fn the_box_lies_on_the_page_and_has_a_size() {
        let a4 = [0.0, 0.0, 595.0, 842.0];
        assert_eq!(
            appearance([400.0, 120.0, 50.0, 50.0]).placed(a4).unwrap(),
            [50.0, 50.0, 400.0, 120.0]
        );
        for (rect, words) in [
            ([50.0, 50.0, 55.0, 120.0], "too small"),
            ([500.0, 50.0, 700.0, 120.0], "not inside page 1"),
            ([50.0, f64::NAN, 400.0, 120.0], "not finite"),
        ] {
            let error = appearance(rect).placed(a4).unwrap_err().to_string();
            assert!(error.contains(words), "{error}");
        }
    }

    #[test]
    fn text_is_escaped_and_kept_in_the_encoding() {
        assert_eq!(
            win_ansi_literal("Zoë (née) \\ Łukasz"),
            b"Zo\xeb \\(n\xe9e\\) \\\\ ?ukasz".to_vec()
        );
    }

    #[test]
    fn the_stream_declares_its_length_and_fits_the_text() {
        let lines = vec![
            "Signed by Mary Seacole".to_owned(),
            "2026-11-22 10:00 UTC".to_owned(),
        ];
        let body = stream(200.0, 50.0, 0, &lines, (12, 0));
        let text = String::from_utf8_lossy(&body);
        let content = content(200.0, 50.0, &lines);
        assert!(
            text.contains(&format!("/Length {}", content.len())),
            "{text}"
        );
        assert!(text.contains("/BBox [0 0 200 50]"), "{text}");
        assert!(text.contains("/F1 12 0 R"), "{text}");
        assert!(text.ends_with("endstream"));
        // Two lines in 50 points: the font is at most 11 and the second line follows.
        assert!(
            text.contains("/F1 11 Tf") || text.contains("/F1 1"),
            "{text}"
        );
        assert!(text.contains("T* (2026-11-22 10:00 UTC) Tj"), "{text}");
        assert!(!text.contains("/Matrix"), "{text}");
    }

    #[test]
    fn on_a_turned_page_the_drawing_is_turned_back() {
        let lines = vec!["Signed by Mary Seacole".to_owned()];
        for (rotation, bbox, matrix) in [
            (90, "/BBox [0 0 50 200]", "/Matrix [0 1 -1 0 0 0]"),
            (180, "/BBox [0 0 200 50]", "/Matrix [-1 0 0 -1 0 0]"),
            (270, "/BBox [0 0 50 200]", "/Matrix [0 -1 1 0 0 0]"),
        ] {
            let body = stream(200.0, 50.0, rotation, &lines, (12, 0));
            let text = String::from_utf8_lossy(&body);
            assert!(
                text.contains(&format!("{bbox}{matrix}")),
                "{rotation}: {text}"
            );
        }
    }
}
