//! PAdES baseline signatures (ETSI EN 319 142-1: B-B, B-T, B-LT, B-LTA) on PDFs, by
//! incremental update, in the same two steps as CAdES (see [`crate::cades`]):
//!
//! 1. prepare: [`signature::prepare`] appends a revision with a signature field
//!    (invisible, or visible with an [`Appearance`]) and a zeroed /Contents
//!    placeholder; the digest over its ByteRange becomes the message-digest of signed
//!    attributes that carry no signing-time (the time is the dictionary's /M). The
//!    prepared PDF is stored with the pending signature.
//! 2. finalize: the CMS (signature time-stamp for B-T and above) goes into the
//!    placeholder ([`signature::embed`]); for B-LT [`dss::add`] appends a second
//!    revision with the validation data; for B-LTA a third revision follows, a
//!    document time-stamp over the whole file
//!    ([`signature::prepare_document_time_stamp`], then `embed` again).
//!
//! Pure code: no database, no network, no clock reads.

pub mod appearance;
mod document;
pub mod dss;
pub mod embedded;
pub mod signature;
mod syntax;
mod update;

use crate::{PdfError, cades::build::DigestAlgorithm};

pub use appearance::Appearance;
pub use dss::ValidationMaterial;
pub use signature::{Placeholder, PreparedPdf};

/// The largest PDF accepted for signing: it is stored twice (prepared and signed)
/// with its pending signature, and read whole into memory.
pub const MAX_PDF_BYTES: usize = 16 * 1024 * 1024;

/// Refuses a PDF over [`MAX_PDF_BYTES`].
pub fn check_size(pdf: &[u8]) -> Result<(), PdfError> {
    if pdf.len() > MAX_PDF_BYTES {
        return Err(PdfError::TooLarge {
            size: pdf.len(),
            limit: MAX_PDF_BYTES,
        });
    }
    Ok(())
}

/// Octets to reserve in /Contents for a CMS carrying `certificates_len` octets of
/// certificates (signer and chain), with a signature time-stamp when `time_stamped`.
/// Generous on purpose: a placeholder too small fails the signature after the
/// citizen has signed on the card, a large one costs only zeros in the file.
pub fn reserved_len(certificates_len: usize, time_stamped: bool) -> usize {
    // Signed attributes, SignerInfo and SignedData framing, an RSA-4096 or ECDSA
    // signature value: well under 4 KiB.
    let base = 4096 + certificates_len;
    // A token: TSTInfo, its own signed attributes and signature, the TSU certificate
    // and possibly its chain.
    if time_stamped { base + 12 * 1024 } else { base }
}

/// Octets reserved in /Contents for a document time-stamp (B-LTA): a token's TSTInfo,
/// signed attributes and signature, the TSU certificate and room for a chain.
pub const DOCUMENT_TIME_STAMP_RESERVED: usize = 16 * 1024;

/// The digest over the signed parts of a prepared PDF.
pub fn byte_range_digest(
    algorithm: DigestAlgorithm,
    bytes: &[u8],
    placeholder: &Placeholder,
) -> Vec<u8> {
    let [head, tail] = placeholder.signed_parts(bytes);
    algorithm.digest_parts(&[head, tail])
}

#[cfg(test)]
mod tests;
