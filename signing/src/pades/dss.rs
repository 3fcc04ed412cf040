//! The Document Security Store (ETSI EN 319 142-1 §5.4.2, PAdES B-LT): a second
//! incremental update after the signature carrying the certificates and revocation
//! data a verifier needs later, each as a stream, listed in /Certs, /OCSPs and /CRLs and
//! again under /VRI for the one signature they serve (keyed by the uppercase hex SHA-1
//! of the signature's /Contents string).
//!
//! An existing DSS (from an earlier LT signature) is kept: its entries are carried
//! into the new DSS dictionary, which replaces it, and what it already holds is
//! referred to rather than stored twice.

use lopdf::{Dictionary, Object, ObjectId};
use sha1::{Digest, Sha1};

use super::{document, update::Update};
use crate::PdfError;

/// What goes into the DSS, each item DER.
#[derive(Debug, Default)]
pub struct ValidationMaterial {
    /// Certificates (signer's chain, TSU's chain, OCSP responders').
    pub certificates: Vec<Vec<u8>>,
    /// OCSP responses (`OCSPResponse`).
    pub ocsp_responses: Vec<Vec<u8>>,
    /// CRLs.
    pub crls: Vec<Vec<u8>>,
}

/// The DSS /VRI key of a signature whose /Contents string holds `contents`.
pub fn vri_key(contents: &[u8]) -> String {
    hex::encode_upper(Sha1::digest(contents))
}

/// Appends a DSS update to `signed` for the signature whose /Contents string holds
/// `contents`.
pub fn add(
    signed: &[u8],
    contents: &[u8],
    material: &ValidationMaterial,
) -> Result<Vec<u8>, PdfError> {
    add_all(signed, &[(contents, material)])
}

/// Appends one DSS update to `signed` for several signatures, each given by its
/// /Contents string's octets and its validation data: every item stored once, each
/// signature's own under its /VRI key.
pub fn add_all(
    signed: &[u8],
    signatures: &[(&[u8], &ValidationMaterial)],
) -> Result<Vec<u8>, PdfError> {
    let revision = document::read(signed)?;
    let mut update = Update::new(&revision);
    let mut catalog = revision.catalog()?.clone();
    let mut dss = match catalog.get(b"DSS") {
        Ok(existing) => revision.dictionary(existing, "the DSS")?.clone(),
        Err(_) => Dictionary::new(),
    };
    let mut vris = match dss.get(b"VRI") {
        Ok(existing) => revision.dictionary(existing, "the DSS /VRI")?.clone(),
        Err(_) => Dictionary::new(),
    };
    // Streams this update adds, so that a second signature refers to them too.
    let mut added: Vec<(&[u8], Object)> = Vec::new();
    for (contents, material) in signatures {
        let key_of_signature = vri_key(contents);
        // A signature's /VRI entry, once written, stays as it is (pyHanko, for one,
        // judges a DSS update that changes one a suspicious modification); what is new
        // for it goes into the DSS's arrays only.
        let listed_already = vris.get(key_of_signature.as_bytes()).is_ok();
        let mut vri = Dictionary::new();
        for (key, vri_key, items) in [
            (
                b"Certs".as_slice(),
                b"Cert".as_slice(),
                &material.certificates,
            ),
            (b"OCSPs", b"OCSP", &material.ocsp_responses),
            (b"CRLs", b"CRL", &material.crls),
        ] {
            let mut unique: Vec<&Vec<u8>> = Vec::new();
            for item in items {
                if !unique.contains(&item) {
                    unique.push(item);
                }
            }
            if unique.is_empty() {
                continue;
            }
            let mut listed = match dss.get(key) {
                Ok(existing) => revision.array(existing, "a DSS array")?.clone(),
                Err(_) => Vec::new(),
            };
            // What an earlier signature already stored is referred to, not stored again.
            let stored: Vec<(Object, Vec<u8>)> = listed
                .iter()
                .filter_map(|entry| {
                    let content = revision.resolve(entry).ok()?.as_stream().ok()?;
                    Some((entry.clone(), content.get_plain_content().ok()?))
                })
                .collect();
            let mut ours = Vec::new();
            for der in unique {
                let known = stored
                    .iter()
                    .find(|(_, content)| content == der)
                    .map(|(entry, _)| entry)
                    .or_else(|| {
                        added
                            .iter()
                            .find(|(content, _)| *content == der.as_slice())
                            .map(|(_, entry)| entry)
                    });
                if let Some(entry) = known {
                    ours.push(entry.clone());
                    continue;
                }
                let id = update.allocate();
                update.put_raw(id, stream(der));
                listed.push(Object::Reference(id));
                ours.push(Object::Reference(id));
                added.push((der, Object::Reference(id)));
            }
            dss.set(key, Object::Array(listed));
            vri.set(vri_key, Object::Array(ours));
        }
        if !listed_already {
            vris.set(key_of_signature, Object::Dictionary(vri));
        }
    }
    dss.set("VRI", Object::Dictionary(vris));
    let dss_id: ObjectId = update.allocate();
    update.put(dss_id, &Object::Dictionary(dss))?;
    catalog.set("DSS", Object::Reference(dss_id));
    update.put(revision.root, &Object::Dictionary(catalog))?;
    Ok(update.write(&revision)?.bytes)
}

/// The OCSP responses (DER) listed in the DSS of `pdf`'s last revision (which carries
/// every earlier signature's entries); none without a DSS. Each is only what the file
/// claims: a validator checks the responder's signature before believing one.
pub fn ocsp_responses(pdf: &[u8]) -> Result<Vec<Vec<u8>>, PdfError> {
    let revision = document::read(pdf)?;
    let catalog = revision.catalog()?;
    let Ok(dss) = catalog.get(b"DSS") else {
        return Ok(Vec::new());
    };
    let dss = revision.dictionary(dss, "the DSS")?;
    let Ok(listed) = dss.get(b"OCSPs") else {
        return Ok(Vec::new());
    };
    revision
        .array(listed, "the DSS /OCSPs")?
        .iter()
        .map(|entry| {
            let stream = revision
                .resolve(entry)?
                .as_stream()
                .map_err(|_| PdfError::Malformed("a DSS /OCSPs entry is not a stream".into()))?;
            stream
                .get_plain_content()
                .map_err(|e| PdfError::Malformed(format!("a DSS OCSP stream cannot be read: {e}")))
        })
        .collect()
}

/// An uncompressed stream holding `der`.
fn stream(der: &[u8]) -> Vec<u8> {
    let mut body = format!("<</Length {}>>\nstream\n", der.len()).into_bytes();
    body.extend_from_slice(der);
    body.extend_from_slice(b"\nendstream");
    body
}
