//! The PDF side of PAdES on generated PDFs, read back with lopdf. The signatures
//! themselves are judged by pyHanko and openssl in `tests/pades.rs`.
#![allow(clippy::unwrap_used)]

#[path = "../../tests/common/pdf.rs"]
mod pdf;

use lopdf::{Document, Object};
use pdf::{Form, Sample, sample};
use time::macros::datetime;

use super::{dss, signature};
use crate::PdfError;

const AT: time::OffsetDateTime = datetime!(2026-11-21 10:30:00 UTC);

fn reread(bytes: &[u8]) -> Document {
    let document = Document::load_mem(bytes).unwrap();
    assert!(
        document.xref_recovery.is_none(),
        "the update reads as written"
    );
    document
}

fn dictionary<'a>(document: &'a Document, object: &'a Object) -> &'a lopdf::Dictionary {
    document.dereference(object).unwrap().1.as_dict().unwrap()
}

/// The signature field `prepare` added: its dictionary and its signature dictionary.
fn signature_field(document: &Document) -> (lopdf::Dictionary, lopdf::Dictionary) {
    let catalog = document.catalog().unwrap();
    let form = dictionary(document, catalog.get(b"AcroForm").unwrap());
    assert_eq!(form.get(b"SigFlags").unwrap().as_i64().unwrap() & 3, 3);
    let fields = form.get(b"Fields").unwrap().as_array().unwrap();
    let field = fields
        .iter()
        .map(|f| dictionary(document, f))
        .find(|f| f.get(b"FT").and_then(Object::as_name).ok() == Some(b"Sig"))
        .unwrap()
        .clone();
    let value = dictionary(document, field.get(b"V").unwrap()).clone();
    (field, value)
}

#[test]
fn every_sample_gets_an_invisible_field_by_incremental_update() {
    for form in [Form::None, Form::Indirect, Form::Inline] {
        for xref_stream in [false, true] {
            let original = sample(&Sample {
                form,
                xref_stream,
                ..Sample::default()
            });
            let prepared = signature::prepare(&original, AT, 6000, None).unwrap();
            let context = format!("{form:?}, xref stream {xref_stream}");
            assert!(prepared.bytes.starts_with(&original), "{context}");
            let appended = &prepared.bytes[original.len()..];
            let has = |needle: &[u8]| appended.windows(needle.len()).any(|w| w == needle);
            assert_eq!(has(b"/Type /XRef"), xref_stream, "{context}");
            assert_eq!(has(b"\nxref\n"), !xref_stream, "{context}");

            let document = reread(&prepared.bytes);
            let (field, value) = signature_field(&document);
            assert_eq!(
                field.get(b"Rect").unwrap().as_array().unwrap(),
                &vec![Object::Integer(0); 4],
                "{context}"
            );
            let expected_name: &[u8] = if form == Form::None {
                b"Signature1"
            } else {
                // The sample's text field already took the first name.
                b"Signature2"
            };
            assert_eq!(field.get(b"T").unwrap().as_str().unwrap(), expected_name);
            assert_eq!(
                value.get(b"SubFilter").unwrap().as_name().unwrap(),
                b"ETSI.CAdES.detached"
            );
            assert_eq!(
                value.get(b"M").unwrap().as_str().unwrap(),
                b"D:20261121103000Z"
            );
            let range: Vec<i64> = value
                .get(b"ByteRange")
                .unwrap()
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_i64().unwrap())
                .collect();
            let expected = prepared.placeholder.byte_range(prepared.bytes.len());
            assert_eq!(
                range,
                expected.iter().map(|n| *n as i64).collect::<Vec<_>>()
            );
            assert_eq!(prepared.placeholder.capacity(), 6000);
            assert_eq!(
                signature::placeholder(&prepared.bytes).unwrap(),
                prepared.placeholder
            );

            // The widget is on the first page, after whatever was there.
            let first = document.page_iter().next().unwrap();
            let annotations = document
                .get_dictionary(first)
                .unwrap()
                .get(b"Annots")
                .unwrap()
                .as_array()
                .unwrap();
            assert_eq!(
                annotations.len(),
                if form == Form::None { 1 } else { 2 },
                "{context}"
            );
            // Nothing else moved: the pages and the existing field are all still there.
            assert_eq!(document.get_pages().len(), 3, "{context}");
            if form != Form::None {
                let catalog = document.catalog().unwrap();
                let form = dictionary(&document, catalog.get(b"AcroForm").unwrap());
                assert_eq!(form.get(b"Fields").unwrap().as_array().unwrap().len(), 2);
                assert!(form.has(b"DA"), "the form keeps its other keys");
            }
        }
    }
}

#[test]
fn the_cms_fills_the_placeholder_and_the_dss_follows() {
    for xref_stream in [false, true] {
        let original = sample(&Sample {
            xref_stream,
            ..Sample::default()
        });
        let prepared = signature::prepare(&original, AT, 100, None).unwrap();
        let cms = vec![0x30, 0x03, 0x02, 0x01, 0x07];
        let (signed, contents) = signature::embed(&prepared.bytes, &cms).unwrap();
        assert_eq!(signed.len(), prepared.bytes.len());
        assert_eq!(contents.len(), 100);
        assert!(contents.starts_with(&cms));
        let [head, tail] = prepared.placeholder.signed_parts(&signed);
        let [old_head, old_tail] = prepared.placeholder.signed_parts(&prepared.bytes);
        assert_eq!((head, tail), (old_head, old_tail), "only /Contents changed");
        let document = reread(&signed);
        let (_, value) = signature_field(&document);
        assert_eq!(value.get(b"Contents").unwrap().as_str().unwrap(), contents);
        // Once filled, the placeholder is no longer blank.
        assert!(signature::placeholder(&signed).is_err());

        let material = dss::ValidationMaterial {
            certificates: vec![
                b"cert one".to_vec(),
                b"cert two".to_vec(),
                b"cert one".to_vec(),
            ],
            ocsp_responses: vec![b"ocsp".to_vec()],
            crls: Vec::new(),
        };
        let with_dss = dss::add(&signed, &contents, &material).unwrap();
        assert!(with_dss.starts_with(&signed));
        let document = reread(&with_dss);
        let catalog = document.catalog().unwrap();
        let store = dictionary(&document, catalog.get(b"DSS").unwrap());
        let certificates = store.get(b"Certs").unwrap().as_array().unwrap();
        assert_eq!(certificates.len(), 2, "duplicates are stored once");
        let first = document
            .dereference(&certificates[0])
            .unwrap()
            .1
            .as_stream()
            .unwrap();
        assert_eq!(first.content, b"cert one");
        assert!(!store.has(b"CRLs"));
        let vri = store.get(b"VRI").unwrap().as_dict().unwrap();
        let entry = vri
            .get(dss::vri_key(&contents).as_bytes())
            .unwrap()
            .as_dict()
            .unwrap();
        assert_eq!(entry.get(b"Cert").unwrap().as_array().unwrap().len(), 2);
        assert_eq!(entry.get(b"OCSP").unwrap().as_array().unwrap().len(), 1);
        // The signature revision is intact inside the new one.
        let (_, value) = signature_field(&document);
        assert_eq!(value.get(b"Contents").unwrap().as_str().unwrap(), contents);

        // A second signature's DSS keeps the first's entries and reuses its streams.
        let other = vec![7u8; 100];
        let more = dss::ValidationMaterial {
            certificates: vec![b"cert two".to_vec(), b"cert three".to_vec()],
            ocsp_responses: vec![b"ocsp".to_vec()],
            crls: Vec::new(),
        };
        let again = dss::add(&with_dss, &other, &more).unwrap();
        let document = reread(&again);
        let catalog = document.catalog().unwrap();
        let store = dictionary(&document, catalog.get(b"DSS").unwrap());
        assert_eq!(store.get(b"Certs").unwrap().as_array().unwrap().len(), 3);
        assert_eq!(store.get(b"OCSPs").unwrap().as_array().unwrap().len(), 1);
        let vri = store.get(b"VRI").unwrap().as_dict().unwrap();
        assert!(vri.has(dss::vri_key(&contents).as_bytes()));
        let second = vri
            .get(dss::vri_key(&other).as_bytes())
            .unwrap()
            .as_dict()
            .unwrap();
        assert_eq!(second.get(b"Cert").unwrap().as_array().unwrap().len(), 2);
    }
}

#[test]
fn a_signed_pdf_can_be_signed_again() {
    let original = sample(&Sample::default());
    let prepared = signature::prepare(&original, AT, 100, None).unwrap();
    let (signed, _) = signature::embed(&prepared.bytes, &[0x05, 0x00]).unwrap();
    let again = signature::prepare(&signed, AT, 100, None).unwrap();
    assert!(again.bytes.starts_with(&signed));
    let document = reread(&again.bytes);
    let catalog = document.catalog().unwrap();
    let form = dictionary(&document, catalog.get(b"AcroForm").unwrap());
    let names: Vec<Vec<u8>> = form
        .get(b"Fields")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            dictionary(&document, f)
                .get(b"T")
                .unwrap()
                .as_str()
                .unwrap()
                .to_vec()
        })
        .collect();
    assert_eq!(names, vec![b"Signature1".to_vec(), b"Signature2".to_vec()]);
}

#[test]
fn a_cms_larger_than_reserved_is_refused() {
    let prepared = signature::prepare(&sample(&Sample::default()), AT, 10, None).unwrap();
    let error = signature::embed(&prepared.bytes, &[0u8; 11]).unwrap_err();
    assert!(matches!(
        error,
        PdfError::NoRoom {
            needed: 11,
            reserved: 10
        }
    ));
    assert!(!error.is_client_error());
}

#[test]
fn bad_input_gets_its_own_error() {
    let refuse = |bytes: &[u8]| signature::prepare(bytes, AT, 100, None).unwrap_err();
    assert!(matches!(refuse(b"GIF89a not a pdf"), PdfError::NotPdf(_)));
    assert!(matches!(refuse(b""), PdfError::NotPdf(_)));

    let encrypted = sample(&Sample {
        encrypted: true,
        ..Sample::default()
    });
    assert!(matches!(refuse(&encrypted), PdfError::Encrypted));

    // startxref pointing elsewhere.
    let original = sample(&Sample::default());
    let at = original
        .windows(9)
        .rposition(|w| w == b"startxref")
        .unwrap();
    let mut broken = original[..at].to_vec();
    broken.extend_from_slice(b"startxref\n17\n%%EOF\n");
    assert!(
        matches!(refuse(&broken), PdfError::BrokenXref(_)),
        "{:?}",
        refuse(&broken)
    );
    // No startxref at all (truncated).
    assert!(matches!(
        refuse(&original[..original.len() / 2]),
        PdfError::BrokenXref(_)
    ));

    let locked = sample(&Sample {
        certified: Some(1),
        ..Sample::default()
    });
    assert!(matches!(refuse(&locked), PdfError::ChangesForbidden));
    // P=2 permits signing.
    let fillable = sample(&Sample {
        certified: Some(2),
        ..Sample::default()
    });
    assert!(signature::prepare(&fillable, AT, 100, None).is_ok());
}
