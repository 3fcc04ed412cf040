//! Small valid PDFs made in code for the PAdES tests and benchmark (no checked-in
//! binaries): a few pages of text, optionally an AcroForm with a text field (its own
//! object or inline in the catalog), a cross-reference stream with object streams
//! instead of a classic table, a certification signature's DocMDP entry, encryption,
//! or padding up to a size.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use lopdf::{
    Dictionary, Document, EncryptionState, EncryptionVersion, Object, Permissions, SaveOptions,
    Stream, StringFormat,
    content::{Content, Operation},
    dictionary,
};

/// Where the sample's AcroForm lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// No form.
    None,
    /// A form in its own object, with one text field.
    Indirect,
    /// A form inline in the catalog, with one text field.
    Inline,
}

/// What sample to make.
#[derive(Clone, Debug)]
pub struct Sample {
    /// How many pages.
    pub pages: usize,
    /// The form.
    pub form: Form,
    /// A cross-reference stream (and object streams) instead of a classic table.
    pub xref_stream: bool,
    /// A DocMDP certification entry with this /P.
    pub certified: Option<i64>,
    /// Encrypted with an empty user password.
    pub encrypted: bool,
    /// Pad the first page's content stream until the file has about this many octets.
    pub size: usize,
    /// The pages' /Rotate, set on the page tree's root (inherited by every page).
    pub rotate: i64,
}

impl Default for Sample {
    fn default() -> Self {
        Self {
            pages: 3,
            form: Form::None,
            xref_stream: false,
            certified: None,
            encrypted: false,
            size: 0,
            rotate: 0,
        }
    }
}

/// Deterministic filler that does not compress away.
fn filler(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 80);
    while out.len() < len {
        out.extend_from_slice(b"% ");
        for _ in 0..32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.extend_from_slice(format!("{:02x}", state as u8).as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// Makes the sample.
pub fn sample(spec: &Sample) -> Vec<u8> {
    let mut doc = Document::with_version(if spec.xref_stream { "1.7" } else { "1.4" });
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
    });
    let resources = dictionary! { "Font" => dictionary! { "F1" => font_id } };
    let mut kids = Vec::new();
    let mut page_ids = Vec::new();
    for number in 1..=spec.pages.max(1) {
        let content = Content {
            operations: vec![
                Operation::new("BT", vec![]),
                Operation::new("Tf", vec!["F1".into(), 14.into()]),
                Operation::new("Td", vec![72.into(), 720.into()]),
                Operation::new(
                    "Tj",
                    vec![Object::string_literal(format!(
                        "Contract, page {number}: the parties agree to sign on a card."
                    ))],
                ),
                Operation::new("ET", vec![]),
            ],
        };
        let mut bytes = content.encode().unwrap();
        if number == 1 && spec.size > 0 {
            bytes.extend_from_slice(&filler(spec.size));
        }
        let content_id =
            doc.add_object(Stream::new(Dictionary::new(), bytes).with_compression(false));
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "Contents" => content_id,
            "MediaBox" => vec![0.into(), 0.into(), Object::Real(595.276), Object::Real(841.89)],
        });
        kids.push(page_id.into());
        page_ids.push(page_id);
    }
    let mut pages = dictionary! {
        "Type" => "Pages",
        "Kids" => kids,
        "Count" => i64::try_from(spec.pages.max(1)).unwrap(),
        "Resources" => resources,
    };
    if spec.rotate != 0 {
        pages.set("Rotate", spec.rotate);
    }
    doc.objects.insert(pages_id, Object::Dictionary(pages));
    let mut catalog = dictionary! { "Type" => "Catalog", "Pages" => pages_id };
    if spec.form != Form::None {
        let field_id = doc.add_object(dictionary! {
            "Type" => "Annot",
            "Subtype" => "Widget",
            "FT" => "Tx",
            "T" => Object::String(b"Signature1".to_vec(), StringFormat::Literal),
            "V" => Object::string_literal("filled in before signing"),
            "Rect" => vec![72.into(), 600.into(), 300.into(), 620.into()],
            "P" => page_ids[0],
        });
        if let Ok(Object::Dictionary(page)) = doc.get_object_mut(page_ids[0]) {
            page.set("Annots", vec![Object::Reference(field_id)]);
        }
        let form = dictionary! {
            "Fields" => vec![Object::Reference(field_id)],
            "DA" => Object::string_literal("/F1 0 Tf 0 g"),
            "DR" => dictionary! { "Font" => dictionary! { "F1" => font_id } },
        };
        match spec.form {
            Form::Indirect => {
                let form_id = doc.add_object(form);
                catalog.set("AcroForm", form_id);
            }
            _ => catalog.set("AcroForm", form),
        }
    }
    if let Some(p) = spec.certified {
        let certification = doc.add_object(dictionary! {
            "Type" => "Sig",
            "Filter" => "Adobe.PPKLite",
            "SubFilter" => "ETSI.CAdES.detached",
            "Reference" => vec![Object::Dictionary(dictionary! {
                "Type" => "SigRef",
                "TransformMethod" => "DocMDP",
                "TransformParams" => dictionary! { "Type" => "TransformParams", "P" => p, "V" => "1.2" },
            })],
            "ByteRange" => vec![0.into(), 0.into(), 0.into(), 0.into()],
            "Contents" => Object::String(vec![0; 8], StringFormat::Hexadecimal),
        });
        catalog.set("Perms", dictionary! { "DocMDP" => certification });
    }
    let catalog_id = doc.add_object(catalog);
    doc.trailer.set("Root", catalog_id);
    let id = Object::String(b"eid-pades-sample".to_vec(), StringFormat::Hexadecimal);
    doc.trailer.set("ID", vec![id.clone(), id]);
    if spec.encrypted {
        let version = EncryptionVersion::V2 {
            document: &doc,
            owner_password: "owner",
            user_password: "",
            key_length: 128,
            permissions: Permissions::PRINTABLE,
        };
        let state = EncryptionState::try_from(version).unwrap();
        doc.encrypt(&state).unwrap();
    }
    let mut out = Vec::new();
    if spec.xref_stream {
        let options = SaveOptions::builder()
            .use_xref_streams(true)
            .use_object_streams(true)
            .build();
        doc.save_with_options(&mut out, options).unwrap();
    } else {
        doc.reference_table.cross_reference_type = lopdf::xref::XrefType::CrossReferenceTable;
        doc.save_to(&mut out).unwrap();
    }
    out
}
