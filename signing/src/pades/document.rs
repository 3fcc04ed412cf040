//! Reading the PDF to be updated: what an incremental update needs to know of the
//! revision it extends (where its cross-reference section starts and of which kind,
//! the trailer's /Root, /Info and /ID, the next free object number) and the objects it
//! touches (catalog, first page, AcroForm, DSS), with lopdf.
//!
//! Refuses what it cannot extend faithfully: no `%PDF-` header, encryption,
//! cross-reference data lopdf had to repair (the update's /Prev would point into a
//! damaged chain), and a certification signature that forbids changes.

use lopdf::{Dictionary, Document, LoadOptions, Object, ObjectId, xref::XrefType};

use crate::PdfError;

/// How far from the end `startxref` may stand (ISO 32000-1 §7.5.5 puts it in the last
/// lines; 1 KiB leaves room for trailing whitespace and comments).
const TAIL: usize = 1024;

/// The most a compressed stream in the original may inflate to while it is read.
const MAX_INFLATED: usize = 64 * 1024 * 1024;

/// One revision of a PDF, ready to be extended by an incremental update.
#[derive(Debug)]
pub(super) struct Revision<'a> {
    /// The file as given.
    pub(super) bytes: &'a [u8],
    /// lopdf's reading of it (latest version of every object).
    pub(super) document: Document,
    /// Where the last cross-reference section starts (the update's /Prev).
    pub(super) startxref: usize,
    /// Whether that section is a cross-reference stream (the update then writes one).
    pub(super) xref_stream: bool,
    /// The first object number no revision has used.
    pub(super) next_number: u32,
    /// The document catalog.
    pub(super) root: ObjectId,
}

/// Reads `bytes` as a PDF to extend.
pub(super) fn read(bytes: &[u8]) -> Result<Revision<'_>, PdfError> {
    if !bytes.starts_with(b"%PDF-") {
        return Err(PdfError::NotPdf("it does not start with %PDF-".into()));
    }
    let startxref = startxref(bytes)?;
    let options = LoadOptions {
        max_decompressed_size: Some(MAX_INFLATED),
        ..LoadOptions::default()
    };
    let document = Document::load_mem_with_options(bytes, options).map_err(load_error)?;
    if document.trailer.has(b"Encrypt") || document.encryption_state.is_some() {
        return Err(PdfError::Encrypted);
    }
    if let Some(recovery) = document.xref_recovery {
        return Err(PdfError::BrokenXref(format!(
            "it could only be read after repair ({recovery:?})"
        )));
    }
    if document.xref_start != startxref {
        return Err(PdfError::BrokenXref(format!(
            "startxref says {startxref}, the section read starts at {}",
            document.xref_start
        )));
    }
    let xref_stream = matches!(
        document.reference_table.cross_reference_type,
        XrefType::CrossReferenceStream
    );
    let root = document
        .trailer
        .get(b"Root")
        .and_then(Object::as_reference)
        .map_err(|_| PdfError::Malformed("the trailer names no catalog (/Root)".into()))?;
    document
        .get_dictionary(root)
        .map_err(|_| PdfError::Malformed("the catalog (/Root) is not a dictionary".into()))?;
    let size = document
        .trailer
        .get(b"Size")
        .and_then(Object::as_i64)
        .ok()
        .and_then(|size| u32::try_from(size).ok())
        .unwrap_or(0);
    let highest = document.objects.keys().map(|(number, _)| *number).max();
    let next_number = size
        .max(highest.map_or(1, |h| h.saturating_add(1)))
        .max(document.reference_table.max_id().saturating_add(1));
    if next_number >= 8_000_000 {
        // ISO 32000-1 Annex C: 8,388,607 indirect objects at most; leave room for ours.
        return Err(PdfError::Unsupported("the PDF has too many objects".into()));
    }
    let revision = Revision {
        bytes,
        document,
        startxref,
        xref_stream,
        next_number,
        root,
    };
    revision.refuse_if_certified_without_changes()?;
    Ok(revision)
}

/// The offset after the last `startxref` keyword.
fn startxref(bytes: &[u8]) -> Result<usize, PdfError> {
    let tail_start = bytes.len().saturating_sub(TAIL);
    let tail = &bytes[tail_start..];
    let keyword = b"startxref";
    let at = tail
        .windows(keyword.len())
        .rposition(|w| w == keyword)
        .ok_or_else(|| PdfError::BrokenXref("no startxref at the end of the file".into()))?;
    let after = &tail[at + keyword.len()..];
    let digits: Vec<u8> = after
        .iter()
        .copied()
        .skip_while(u8::is_ascii_whitespace)
        .take_while(u8::is_ascii_digit)
        .collect();
    let offset = std::str::from_utf8(&digits)
        .ok()
        .and_then(|d| d.parse::<usize>().ok())
        .ok_or_else(|| PdfError::BrokenXref("startxref is not followed by an offset".into()))?;
    if offset >= bytes.len() {
        return Err(PdfError::BrokenXref(format!(
            "startxref {offset} is past the end of the file"
        )));
    }
    if !after.windows(5).any(|w| w == b"%%EOF") {
        return Err(PdfError::BrokenXref("no %%EOF after startxref".into()));
    }
    Ok(offset)
}

fn load_error(error: lopdf::Error) -> PdfError {
    use lopdf::Error;
    match error {
        Error::Decryption(_) | Error::InvalidPassword | Error::UnsupportedSecurityHandler(_) => {
            PdfError::Encrypted
        }
        Error::Xref(e) => PdfError::BrokenXref(e.to_string()),
        Error::MissingXrefEntry | Error::InvalidOffset(_) => {
            PdfError::BrokenXref(error.to_string())
        }
        other => PdfError::Malformed(other.to_string()),
    }
}

impl Revision<'_> {
    /// `object`, following references.
    pub(super) fn resolve<'b>(&'b self, object: &'b Object) -> Result<&'b Object, PdfError> {
        self.document
            .dereference(object)
            .map(|(_, object)| object)
            .map_err(|e| PdfError::Malformed(format!("a reference does not resolve: {e}")))
    }

    /// The dictionary `object` is or refers to.
    pub(super) fn dictionary<'b>(
        &'b self,
        object: &'b Object,
        what: &str,
    ) -> Result<&'b Dictionary, PdfError> {
        self.resolve(object)?
            .as_dict()
            .map_err(|_| PdfError::Malformed(format!("{what} is not a dictionary")))
    }

    /// The array `object` is or refers to.
    pub(super) fn array<'b>(
        &'b self,
        object: &'b Object,
        what: &str,
    ) -> Result<&'b Vec<Object>, PdfError> {
        self.resolve(object)?
            .as_array()
            .map_err(|_| PdfError::Malformed(format!("{what} is not an array")))
    }

    /// The catalog.
    pub(super) fn catalog(&self) -> Result<&Dictionary, PdfError> {
        self.document
            .get_dictionary(self.root)
            .map_err(|_| PdfError::Malformed("the catalog is not a dictionary".into()))
    }

    /// The first page, where an invisible signature's widget goes.
    pub(super) fn first_page(&self) -> Result<(ObjectId, &Dictionary), PdfError> {
        let id = self
            .document
            .page_iter()
            .next()
            .ok_or_else(|| PdfError::Malformed("the PDF has no pages".into()))?;
        let page = self
            .document
            .get_dictionary(id)
            .map_err(|_| PdfError::Malformed("the first page is not a dictionary".into()))?;
        Ok((id, page))
    }

    /// Page `number` (from 1), for a visible signature.
    pub(super) fn page(&self, number: usize) -> Result<(ObjectId, &Dictionary), PdfError> {
        let id = number
            .checked_sub(1)
            .and_then(|index| self.document.page_iter().nth(index))
            .ok_or_else(|| {
                PdfError::BadAppearance(format!(
                    "the PDF has {} page(s); there is no page {number}",
                    self.document.page_iter().count()
                ))
            })?;
        let page = self
            .document
            .get_dictionary(id)
            .map_err(|_| PdfError::Malformed(format!("page {number} is not a dictionary")))?;
        Ok((id, page))
    }

    /// A page attribute, inherited from the page's ancestors when it has none
    /// (§7.7.3.4): the value, or none anywhere up the tree.
    fn inherited<'b>(
        &'b self,
        page: &'b Dictionary,
        key: &[u8],
    ) -> Result<Option<&'b Object>, PdfError> {
        let mut node = page;
        // The page tree's depth bounds the walk; a cycle would not end otherwise.
        for _ in 0..64 {
            if let Ok(value) = node.get(key) {
                return Ok(Some(self.resolve(value)?));
            }
            match node.get(b"Parent") {
                Ok(parent) => node = self.dictionary(parent, "a page's /Parent")?,
                Err(_) => break,
            }
        }
        Ok(None)
    }

    /// A page's /MediaBox, inherited when the page has none.
    pub(super) fn media_box(&self, page: &Dictionary) -> Result<[f64; 4], PdfError> {
        let value = self
            .inherited(page, b"MediaBox")?
            .ok_or_else(|| PdfError::Malformed("a page has no /MediaBox".into()))?;
        let numbers = self
            .array(value, "a /MediaBox")?
            .iter()
            .map(|n| match self.resolve(n).ok()? {
                Object::Integer(i) => Some(*i as f64),
                Object::Real(r) => Some(f64::from(*r)),
                _ => None,
            })
            .collect::<Option<Vec<f64>>>();
        match numbers.as_deref() {
            Some(&[x1, y1, x2, y2]) => Ok([x1, y1, x2, y2]),
            _ => Err(PdfError::Malformed(
                "a /MediaBox is not four numbers".into(),
            )),
        }
    }

    /// How far viewers turn a page clockwise (its inherited /Rotate, §7.7.3.3): 0, 90,
    /// 180 or 270.
    pub(super) fn rotation(&self, page: &Dictionary) -> Result<u16, PdfError> {
        match self.inherited(page, b"Rotate")? {
            None => Ok(0),
            Some(Object::Integer(degrees)) if degrees % 90 == 0 => {
                // rem_euclid keeps it in 0..360 for negative turns too.
                Ok(u16::try_from(degrees.rem_euclid(360)).unwrap_or(0))
            }
            Some(_) => Err(PdfError::Malformed(
                "a page's /Rotate is not a multiple of 90".into(),
            )),
        }
    }

    /// ISO 32000-1 §12.8.2.2: a certification signature whose DocMDP transform has
    /// /P 1 permits no change to the document at all, a new signature included.
    fn refuse_if_certified_without_changes(&self) -> Result<(), PdfError> {
        let catalog = self.catalog()?;
        let Ok(permissions) = catalog.get(b"Perms") else {
            return Ok(());
        };
        let permissions = self.dictionary(permissions, "/Perms")?;
        let Ok(certification) = permissions.get(b"DocMDP") else {
            return Ok(());
        };
        let certification = self.dictionary(certification, "the DocMDP signature")?;
        let Ok(references) = certification.get(b"Reference") else {
            return Ok(());
        };
        for reference in self.array(references, "the signature's /Reference")? {
            let reference = self.dictionary(reference, "a signature reference")?;
            let is_docmdp = reference
                .get(b"TransformMethod")
                .and_then(Object::as_name)
                .is_ok_and(|name| name == b"DocMDP");
            if !is_docmdp {
                continue;
            }
            // /P defaults to 2 (form filling and signing allowed).
            let level = match reference.get(b"TransformParams") {
                Ok(params) => self
                    .dictionary(params, "the DocMDP transform parameters")?
                    .get(b"P")
                    .and_then(Object::as_i64)
                    .unwrap_or(2),
                Err(_) => 2,
            };
            if level == 1 {
                return Err(PdfError::ChangesForbidden);
            }
        }
        Ok(())
    }
}
