//! An incremental update (ISO 32000-1 §7.5.6): the original bytes untouched, then the
//! new and changed objects, a cross-reference section naming only them, and a trailer
//! whose /Prev points at the revision before. The section is a classic table, or a
//! cross-reference stream (§7.5.8) when the revision before used one, so that readers
//! never meet both kinds in one chain.

use std::collections::BTreeMap;

use lopdf::{Object, ObjectId};

use super::{document::Revision, syntax};
use crate::PdfError;

/// The objects an update adds or replaces.
#[derive(Debug, Default)]
pub(super) struct Update {
    /// Each object's id and its body in PDF syntax (what stands between `obj` and
    /// `endobj`).
    objects: BTreeMap<ObjectId, Vec<u8>>,
    /// The next object number to hand out.
    next_number: u32,
}

/// An update as written.
#[derive(Debug)]
pub(super) struct Written {
    /// The whole file: the original, then the update.
    pub(super) bytes: Vec<u8>,
    /// Where each written object's body starts in `bytes`.
    pub(super) body_offsets: BTreeMap<u32, usize>,
}

impl Update {
    /// An empty update of `revision`.
    pub(super) fn new(revision: &Revision<'_>) -> Self {
        Self {
            objects: BTreeMap::new(),
            next_number: revision.next_number,
        }
    }

    /// A fresh object number (generation 0).
    pub(super) fn allocate(&mut self) -> ObjectId {
        let id = (self.next_number, 0);
        self.next_number += 1;
        id
    }

    /// Sets object `id` to `body` (raw PDF syntax).
    pub(super) fn put_raw(&mut self, id: ObjectId, body: Vec<u8>) {
        self.objects.insert(id, body);
    }

    /// Sets object `id` to `object`.
    pub(super) fn put(&mut self, id: ObjectId, object: &Object) -> Result<(), PdfError> {
        let mut body = Vec::new();
        syntax::write_object(&mut body, object)?;
        self.put_raw(id, body);
        Ok(())
    }

    /// Appends the update to `revision`'s bytes.
    pub(super) fn write(self, revision: &Revision<'_>) -> Result<Written, PdfError> {
        let mut out = Vec::with_capacity(revision.bytes.len() + 4096 + self.body_len());
        out.extend_from_slice(revision.bytes);
        // The update starts on a line of its own (the original may end without EOL).
        if !matches!(out.last(), Some(b'\n' | b'\r')) {
            out.push(b'\n');
        }
        let mut entries: BTreeMap<u32, (usize, u16)> = BTreeMap::new();
        let mut body_offsets = BTreeMap::new();
        for ((number, generation), body) in &self.objects {
            entries.insert(*number, (out.len(), *generation));
            out.extend_from_slice(format!("{number} {generation} obj\n").as_bytes());
            body_offsets.insert(*number, out.len());
            out.extend_from_slice(body);
            out.extend_from_slice(b"\nendobj\n");
        }
        let trailer = trailer_entries(revision)?;
        if revision.xref_stream {
            write_xref_stream(&mut out, entries, self.next_number, &trailer);
        } else {
            write_xref_table(&mut out, &entries, self.next_number, &trailer);
        }
        Ok(Written {
            bytes: out,
            body_offsets,
        })
    }

    fn body_len(&self) -> usize {
        self.objects.values().map(|body| body.len() + 32).sum()
    }
}

/// The trailer keys every update repeats (§7.5.6): /Root, /Info and /ID as the
/// revision before had them, and /Prev.
fn trailer_entries(revision: &Revision<'_>) -> Result<Vec<u8>, PdfError> {
    let mut out = Vec::new();
    out.extend_from_slice(b"/Root ");
    syntax::write_reference(&mut out, revision.root);
    for key in [b"Info".as_slice(), b"ID".as_slice()] {
        if let Ok(value) = revision.document.trailer.get(key) {
            syntax::write_name(&mut out, key);
            out.push(b' ');
            syntax::write_object(&mut out, value)?;
        }
    }
    out.extend_from_slice(format!("/Prev {}", revision.startxref).as_bytes());
    Ok(out)
}

/// Runs of consecutive object numbers: (first, count).
fn runs(numbers: impl Iterator<Item = u32>) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for number in numbers {
        match runs.last_mut() {
            Some((first, count)) if *first + *count == number => *count += 1,
            _ => runs.push((number, 1)),
        }
    }
    runs
}

fn write_xref_table(
    out: &mut Vec<u8>,
    entries: &BTreeMap<u32, (usize, u16)>,
    size: u32,
    trailer: &[u8],
) {
    let start = out.len();
    out.extend_from_slice(b"xref\n");
    for (first, count) in runs(entries.keys().copied()) {
        out.extend_from_slice(format!("{first} {count}\n").as_bytes());
        for number in first..first + count {
            if let Some((offset, generation)) = entries.get(&number) {
                // Exactly 20 octets an entry (§7.5.4), with a two-character EOL.
                out.extend_from_slice(format!("{offset:010} {generation:05} n\r\n").as_bytes());
            }
        }
    }
    out.extend_from_slice(format!("trailer\n<</Size {size}").as_bytes());
    out.extend_from_slice(trailer);
    out.extend_from_slice(format!(">>\nstartxref\n{start}\n%%EOF\n").as_bytes());
}

fn write_xref_stream(
    out: &mut Vec<u8>,
    mut entries: BTreeMap<u32, (usize, u16)>,
    next_number: u32,
    trailer: &[u8],
) {
    // The stream is an object too, and lists itself.
    let own_number = next_number;
    let size = next_number + 1;
    let start = out.len();
    entries.insert(own_number, (start, 0));
    let largest = entries
        .values()
        .map(|(offset, _)| *offset)
        .max()
        .unwrap_or(0);
    let offset_width = (1..=8usize)
        .find(|width| *width == 8 || (largest as u64) < 1u64 << (8 * width))
        .unwrap_or(8);
    let mut data = Vec::with_capacity(entries.len() * (3 + offset_width));
    for (offset, generation) in entries.values() {
        data.push(1); // type 1: in use, at a byte offset
        data.extend_from_slice(&(*offset as u64).to_be_bytes()[8 - offset_width..]);
        data.extend_from_slice(&generation.to_be_bytes());
    }
    let index: Vec<String> = runs(entries.keys().copied())
        .into_iter()
        .map(|(first, count)| format!("{first} {count}"))
        .collect();
    out.extend_from_slice(
        format!(
            "{own_number} 0 obj\n<</Type /XRef/Size {size}/W [1 {offset_width} 2]/Index [{}]/Length {}",
            index.join(" "),
            data.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(trailer);
    out.extend_from_slice(b">>\nstream\n");
    out.extend_from_slice(&data);
    out.extend_from_slice(format!("\nendstream\nendobj\nstartxref\n{start}\n%%EOF\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn consecutive_numbers_form_runs() {
        assert_eq!(
            runs([3, 4, 5, 9, 11, 12].into_iter()),
            vec![(3, 3), (9, 1), (11, 2)]
        );
        assert!(runs(std::iter::empty()).is_empty());
    }
}
