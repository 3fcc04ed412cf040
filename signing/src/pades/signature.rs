//! The signature revision (ETSI EN 319 142-1 §5.3, ISO 32000-1 §12.8): a signature
//! field whose widget sits on the first page (invisible) or in a box on a chosen page
//! with an appearance (visible), listed in the AcroForm (made when absent; /SigFlags
//! 3), and a signature dictionary with /SubFilter
//! /ETSI.CAdES.detached, /M, a /ByteRange and a zero-filled /Contents placeholder.
//! The CMS is later written into the placeholder without moving a byte, so the digest
//! over the ByteRange taken now is the one the CMS signs. A document time-stamp
//! (B-LTA) is the same revision with an invisible field and a /DocTimeStamp
//! dictionary whose /Contents is a time-stamp token.

use lopdf::{Dictionary, Object, ObjectId, StringFormat};
use time::OffsetDateTime;

use super::{appearance::Appearance, document, syntax, update::Update};
use crate::PdfError;

/// Width of each ByteRange number in the placeholder: 10 digits cover files up to
/// 9.3 GiB, far past the upload limit.
const RANGE_DIGITS: usize = 10;

/// A PDF with a signature placeholder.
#[derive(Debug)]
pub struct PreparedPdf {
    /// The whole file.
    pub bytes: Vec<u8>,
    /// Where the placeholder lies.
    pub placeholder: Placeholder,
}

/// The `/Contents` hex string of a signature dictionary and the ByteRange around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placeholder {
    /// Offset of the `<` opening the hex string.
    pub start: usize,
    /// Offset just after the closing `>`.
    pub end: usize,
}

impl Placeholder {
    /// The /ByteRange: everything but the hex string, delimiters included.
    pub fn byte_range(&self, file_len: usize) -> [usize; 4] {
        [0, self.start, self.end, file_len - self.end]
    }

    /// How many octets of DER the hex string holds.
    pub fn capacity(&self) -> usize {
        (self.end - self.start - 2) / 2
    }

    /// The two signed parts of `bytes`.
    pub fn signed_parts<'a>(&self, bytes: &'a [u8]) -> [&'a [u8]; 2] {
        [&bytes[..self.start], &bytes[self.end..]]
    }
}

/// Adds an unsigned signature field with room for `reserved` octets of CMS to
/// `original`, signed at `signing_time` (the /M entry: PAdES keeps the time out of the
/// CMS); visible where `appearance` says, invisible without one.
pub fn prepare(
    original: &[u8],
    signing_time: OffsetDateTime,
    reserved: usize,
    appearance: Option<&Appearance>,
) -> Result<PreparedPdf, PdfError> {
    let mut head = b"<</Type /Sig/Filter /Adobe.PPKLite/SubFilter /ETSI.CAdES.detached/M ".to_vec();
    syntax::write_string(&mut head, syntax::date(signing_time).as_bytes());
    add_field(original, &head, reserved, appearance)
}

/// Adds an invisible document time-stamp field (ISO 32000-2 §12.8.5, ETSI EN 319 142-1
/// B-LTA) with room for a token of `reserved` octets to `original`: /Type
/// /DocTimeStamp, /SubFilter /ETSI.RFC3161; the token's imprint is the digest over the
/// ByteRange, which covers every earlier revision, DSS included.
pub fn prepare_document_time_stamp(
    original: &[u8],
    reserved: usize,
) -> Result<PreparedPdf, PdfError> {
    add_field(
        original,
        b"<</Type /DocTimeStamp/Filter /Adobe.PPKLite/SubFilter /ETSI.RFC3161",
        reserved,
        None,
    )
}

/// A revision adding a signature field whose value is the dictionary opened by `head`
/// (its entries before /ByteRange and /Contents), with `reserved` octets of zeroed
/// /Contents.
fn add_field(
    original: &[u8],
    head: &[u8],
    reserved: usize,
    appearance: Option<&Appearance>,
) -> Result<PreparedPdf, PdfError> {
    let revision = document::read(original)?;
    let mut update = Update::new(&revision);
    let signature_id = update.allocate();
    let field_id = update.allocate();

    let catalog = revision.catalog()?.clone();
    let (page_id, page) = match appearance {
        Some(appearance) => revision.page(appearance.page)?,
        None => revision.first_page()?,
    };
    // A visible widget: its box on the page, and the appearance viewers draw in it.
    let visible = match appearance {
        Some(appearance) => {
            let rect = appearance.placed(revision.media_box(page)?)?;
            let font_id = update.allocate();
            let stream_id = update.allocate();
            update.put(font_id, &Object::Dictionary(super::appearance::font()))?;
            update.put_raw(
                stream_id,
                super::appearance::stream(
                    rect[2] - rect[0],
                    rect[3] - rect[1],
                    revision.rotation(page)?,
                    &appearance.lines,
                    font_id,
                ),
            );
            Some((rect, stream_id))
        }
        None => None,
    };
    let mut page = page.clone();

    // The AcroForm: extended where it is (its own object, or inside the catalog),
    // made when absent.
    let (acroform_home, mut acroform) = match catalog.get(b"AcroForm") {
        Ok(Object::Reference(id)) => (
            AcroFormHome::Object(*id),
            revision
                .dictionary(&Object::Reference(*id), "the AcroForm")?
                .clone(),
        ),
        Ok(Object::Dictionary(inline)) => (AcroFormHome::Catalog, inline.clone()),
        Ok(_) => {
            return Err(PdfError::Malformed(
                "the catalog's /AcroForm is not a dictionary".into(),
            ));
        }
        Err(_) => (AcroFormHome::New(update.allocate()), Dictionary::new()),
    };
    let mut fields = match acroform.get(b"Fields") {
        Ok(fields) => revision.array(fields, "the AcroForm's /Fields")?.clone(),
        Err(_) => Vec::new(),
    };
    let name = field_name(&revision, &fields);
    fields.push(Object::Reference(field_id));
    acroform.set("Fields", Object::Array(fields));
    let flags = acroform
        .get(b"SigFlags")
        .and_then(Object::as_i64)
        .unwrap_or(0);
    // SignaturesExist | AppendOnly (§12.7.2): viewers must save incrementally.
    acroform.set("SigFlags", Object::Integer(flags | 3));

    let mut annotations = match page.get(b"Annots") {
        Ok(annotations) => revision.array(annotations, "the page's /Annots")?.clone(),
        Err(_) => Vec::new(),
    };
    annotations.push(Object::Reference(field_id));
    page.set("Annots", Object::Array(annotations));

    // The field and its widget in one dictionary (§12.5.2): invisible (empty /Rect)
    // or in its box with a normal appearance; printable and locked (/F 132).
    let mut field = Dictionary::new();
    field.set("Type", Object::Name(b"Annot".to_vec()));
    field.set("Subtype", Object::Name(b"Widget".to_vec()));
    field.set("FT", Object::Name(b"Sig".to_vec()));
    field.set(
        "T",
        Object::String(name.into_bytes(), StringFormat::Literal),
    );
    field.set("V", Object::Reference(signature_id));
    field.set("F", Object::Integer(132));
    match visible {
        Some((rect, stream_id)) => {
            field.set(
                "Rect",
                Object::Array(rect.iter().map(|v| Object::Real(*v as f32)).collect()),
            );
            let mut states = Dictionary::new();
            states.set("N", Object::Reference(stream_id));
            field.set("AP", Object::Dictionary(states));
        }
        None => field.set(
            "Rect",
            Object::Array(vec![0.into(), 0.into(), 0.into(), 0.into()]),
        ),
    }
    field.set("P", Object::Reference(page_id));
    update.put(field_id, &Object::Dictionary(field))?;
    update.put(page_id, &Object::Dictionary(page))?;
    match acroform_home {
        AcroFormHome::Object(id) => update.put(id, &Object::Dictionary(acroform))?,
        AcroFormHome::Catalog => {
            let mut catalog = catalog;
            catalog.set("AcroForm", Object::Dictionary(acroform));
            update.put(revision.root, &Object::Dictionary(catalog))?;
        }
        AcroFormHome::New(id) => {
            update.put(id, &Object::Dictionary(acroform))?;
            let mut catalog = catalog;
            catalog.set("AcroForm", Object::Reference(id));
            update.put(revision.root, &Object::Dictionary(catalog))?;
        }
    }

    let (body, range_at, contents_at) = signature_dictionary(head, reserved);
    update.put_raw(signature_id, body);
    let mut written = update.write(&revision)?;
    let body_at = *written
        .body_offsets
        .get(&signature_id.0)
        .ok_or_else(|| PdfError::Unsupported("the signature dictionary was not written".into()))?;
    let placeholder = Placeholder {
        start: body_at + contents_at,
        end: body_at + contents_at + 2 + 2 * reserved,
    };
    let range = placeholder.byte_range(written.bytes.len());
    let numbers = format!("0 {} {} {}", range[1], range[2], range[3]);
    let slot = &mut written.bytes[body_at + range_at..body_at + range_at + range_slot_len()];
    if numbers.len() > slot.len() {
        return Err(PdfError::Unsupported("the file is too large".into()));
    }
    slot[..numbers.len()].copy_from_slice(numbers.as_bytes());
    Ok(PreparedPdf {
        bytes: written.bytes,
        placeholder,
    })
}

/// Where the AcroForm lives.
enum AcroFormHome {
    /// Its own object.
    Object(ObjectId),
    /// Inline in the catalog.
    Catalog,
    /// Nowhere yet: a new object with this id.
    New(ObjectId),
}

/// "Signature1", or the first "SignatureN" no top-level field of the form has taken.
fn field_name(revision: &document::Revision<'_>, fields: &[Object]) -> String {
    let taken: Vec<Vec<u8>> = fields
        .iter()
        .filter_map(|field| revision.dictionary(field, "a form field").ok())
        .filter_map(|field| field.get(b"T").and_then(Object::as_str).ok())
        .map(<[u8]>::to_vec)
        .collect();
    (1..)
        .map(|n| format!("Signature{n}"))
        .find(|name| !taken.iter().any(|t| t == name.as_bytes()))
        .unwrap_or_else(|| "Signature".into())
}

/// Length of the space the ByteRange numbers are written into.
fn range_slot_len() -> usize {
    2 + 3 * (RANGE_DIGITS + 1)
}

/// The signature dictionary's body, `head` then a blank ByteRange and a zero
/// /Contents of `reserved` octets; returns it with the offsets of the ByteRange slot
/// and of the `<` of /Contents within it.
fn signature_dictionary(head: &[u8], reserved: usize) -> (Vec<u8>, usize, usize) {
    let mut body = Vec::with_capacity(head.len() + 64 + 2 * reserved);
    body.extend_from_slice(head);
    body.extend_from_slice(b"/ByteRange [");
    let range_at = body.len();
    // Blank now, the numbers go in once the file's length is known; unused room stays
    // spaces, which PDF reads as whitespace.
    body.extend(std::iter::repeat_n(b' ', range_slot_len()));
    body.extend_from_slice(b"]/Contents ");
    let contents_at = body.len();
    body.push(b'<');
    body.extend(std::iter::repeat_n(b'0', 2 * reserved));
    body.extend_from_slice(b">>>");
    (body, range_at, contents_at)
}

/// Finds the placeholder of the signature `prepare` added last to `bytes` (its own
/// output, as stored between the two steps) and checks it is still blank and where
/// its ByteRange says.
pub fn placeholder(bytes: &[u8]) -> Result<Placeholder, PdfError> {
    let broken = || PdfError::Malformed("the prepared signature placeholder is damaged".into());
    let key = b"/ByteRange [";
    let at = bytes
        .windows(key.len())
        .rposition(|w| w == key)
        .ok_or_else(broken)?;
    let numbers: Vec<usize> = bytes[at + key.len()..]
        .iter()
        .take_while(|b| **b != b']')
        .take(range_slot_len() + 1)
        .copied()
        .collect::<Vec<u8>>()
        .split(u8::is_ascii_whitespace)
        .filter(|part| !part.is_empty())
        .map(|part| {
            std::str::from_utf8(part)
                .ok()
                .and_then(|p| p.parse::<usize>().ok())
        })
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(broken)?;
    let [zero, start, end, tail] = numbers[..] else {
        return Err(broken());
    };
    let placeholder = Placeholder { start, end };
    let fits = zero == 0
        && start + 2 <= end
        && end <= bytes.len()
        && end + tail == bytes.len()
        && (end - start) % 2 == 0
        && bytes[start] == b'<'
        && bytes[end - 1] == b'>'
        && bytes[start + 1..end - 1].iter().all(|b| *b == b'0');
    if !fits {
        return Err(broken());
    }
    Ok(placeholder)
}

/// Writes `cms` into the placeholder of `prepared`, hex-encoded and zero-padded;
/// returns the signed file and the /Contents string's octets (what DSS /VRI keys
/// hash).
pub fn embed(prepared: &[u8], cms: &[u8]) -> Result<(Vec<u8>, Vec<u8>), PdfError> {
    let placeholder = placeholder(prepared)?;
    let reserved = placeholder.capacity();
    if cms.len() > reserved {
        return Err(PdfError::NoRoom {
            needed: cms.len(),
            reserved,
        });
    }
    let mut signed = prepared.to_vec();
    let hex = hex::encode_upper(cms);
    signed[placeholder.start + 1..placeholder.start + 1 + hex.len()]
        .copy_from_slice(hex.as_bytes());
    let mut contents = cms.to_vec();
    contents.resize(reserved, 0);
    Ok((signed, contents))
}
