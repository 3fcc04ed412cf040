//! CAdES baseline signatures (ETSI EN 319 122-1: B, T and LT) in two steps, for keys
//! that never leave a citizen's card or SIM; PAdES signatures (EN 319 142-1) take the
//! same two steps with the PDF work done by [`crate::pades`].
//!
//! 1. [`Signatures::prepare`] checks the signer's certificate, builds the signed
//!    attributes over the document's digest and stores them as a pending signature
//!    (`pending_signature`, audited as `signature.prepare`). The caller gets the DER
//!    the token must sign and its hash.
//! 2. [`Signatures::finalize`] (once, before the pending signature expires) checks the
//!    signature value against the certificate's key and the stored attributes, asks
//!    our OCSP responder for the certificate's status, adds a signature time-stamp
//!    (T) and the validation data (LT), and stores the finished signature with its
//!    audit event (`signature.finalize`) in one transaction, claiming the pending row
//!    only if it is still pending, so it is single-use even under concurrent calls.
//!
//! A refusal that consumes the pending signature (a signature value that does not
//! verify, a revoked, suspended or unknown certificate) is recorded and audited as
//! denied in one transaction; one that may pass on retry (OCSP or TSA unavailable)
//! changes nothing. For CAdES only digests are stored and audited, never documents; a
//! PAdES signature needs its PDF between the steps, so that is stored with it (and
//! the signed PDF after), while the audit log still gets digests only.

pub mod build;
pub mod extend;
pub mod mobile;
pub mod revocation;
pub mod timestamp;
pub mod trust;

use base64ct::{Base64, Encoding};
use der::{Decode, DecodePem, Encode};
use eid_core::{AuditEvent, Outcome, ServiceContext, audit};
use eid_hsm::SignatureScheme;
use sha2::{Digest, Sha256};
use sqlx::Row;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use x509_cert::Certificate;

use self::{
    build::{Additions, DigestAlgorithm},
    timestamp::TimeStampSource,
    trust::TrustedCas,
};
use crate::{
    SignatureError,
    pades::{self, ValidationMaterial},
};

/// A CAdES baseline level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Level {
    /// B-B: signed attributes, signer certificate.
    B,
    /// B-T: plus a signature time-stamp.
    T,
    /// B-LT: plus certificate chains and OCSP responses of the signer and the TSU.
    Lt,
    /// B-LTA, PAdES only: B-LT with a document time-stamp over the whole file, the
    /// DSS included, appended last (the proof of existence of the validation data that
    /// long-term validation starts from; renewed by later document time-stamps).
    Lta,
}

impl Level {
    /// Parses `B`, `T`, `LT`, `LTA` (with or without the `B-` prefix, any case).
    pub fn parse(text: &str) -> Option<Self> {
        let upper = text.to_ascii_uppercase();
        match upper.strip_prefix("B-").unwrap_or(&upper) {
            "B" => Some(Self::B),
            "T" => Some(Self::T),
            "LT" => Some(Self::Lt),
            "LTA" => Some(Self::Lta),
            _ => None,
        }
    }

    /// Whether the signature carries a signature time-stamp (T and above).
    pub fn time_stamped(self) -> bool {
        self != Self::B
    }

    /// Whether validation data is added (LT and above).
    pub fn long_term(self) -> bool {
        matches!(self, Self::Lt | Self::Lta)
    }

    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            Self::B => "B",
            Self::T => "T",
            Self::Lt => "LT",
            Self::Lta => "LTA",
        }
    }
}

/// What kind of signature is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// A detached CAdES signature (`.p7s`) over any document.
    Cades,
    /// A PAdES signature inside the PDF.
    Pades,
}

impl Format {
    /// Parses `cades` or `pades` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "cades" => Some(Self::Cades),
            "pades" => Some(Self::Pades),
            _ => None,
        }
    }

    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cades => "cades",
            Self::Pades => "pades",
        }
    }
}

/// What the document is, as the caller gives it.
#[derive(Debug)]
#[non_exhaustive]
pub enum DocumentInput {
    /// The document itself (hashed here, never stored).
    Bytes(Vec<u8>),
    /// The document's digest, made with `algorithm`.
    Digest {
        /// The digest algorithm's name.
        algorithm: String,
        /// The digest.
        value: Vec<u8>,
    },
}

/// A request to prepare a signature.
#[derive(Debug)]
pub struct PrepareRequest {
    /// The signer's certificate, PEM or DER.
    pub certificate: Vec<u8>,
    /// The document.
    pub document: DocumentInput,
    /// The level wanted.
    pub level: Level,
    /// CAdES or PAdES (which needs the document's bytes, a PDF).
    pub format: Format,
    /// For PAdES, where a visible signature goes (invisible without).
    pub visible: Option<VisiblePlacement>,
}

/// Where a visible PAdES signature goes; the service writes in it who signed and when.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VisiblePlacement {
    /// The page, counted from 1.
    pub page: usize,
    /// `[x1, y1, x2, y2]` in points from the page's lower left corner.
    pub rect: [f64; 4],
}

/// X.520 serialNumber: the signer's identifier (ETSI semantics, `PNOTT-…`).
const SERIAL_NUMBER: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("2.5.4.5");
/// X.520 organizationIdentifier: a seal's organisation (ETSI semantics, `NTRTT-…`).
const ORGANIZATION_IDENTIFIER: spki::ObjectIdentifier =
    spki::ObjectIdentifier::new_unwrap("2.5.4.97");

/// The lines a visible signature shows: the signer's name and identifier from the
/// certificate's subject (a person's, or a seal's organisation), and the time.
fn appearance_lines(certificate: &Certificate, at: OffsetDateTime) -> Vec<String> {
    let subject = certificate.tbs_certificate().subject();
    let name = subject
        .common_name()
        .ok()
        .flatten()
        .map(|n| n.value().into_owned())
        .unwrap_or_else(|| subject.to_string());
    let attribute = |oid| {
        subject
            .by_oid::<x509_cert::ext::pkix::name::DirectoryString>(oid)
            .ok()
            .flatten()
            .map(|n| n.value().into_owned())
    };
    let mut lines = match attribute(ORGANIZATION_IDENTIFIER) {
        Some(organisation) => vec![format!("Sealed by {name}"), organisation],
        None => vec![format!("Digitally signed by {name}")],
    };
    lines.extend(attribute(SERIAL_NUMBER));
    let date = at
        .format(time::macros::format_description!(
            "Date: [year]-[month]-[day] [hour]:[minute]:[second] UTC"
        ))
        .unwrap_or_default();
    lines.push(date);
    lines
}

/// A prepared signature: what the signer's token must sign.
#[derive(Debug)]
pub struct Prepared {
    /// The pending signature's id.
    pub id: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// The DER of the signed attributes: the data to be signed.
    pub signed_attributes: Vec<u8>,
    /// Their hash under the signature scheme's digest, for tokens that sign a hash.
    pub signed_attributes_digest: Vec<u8>,
    /// That digest's algorithm.
    pub digest_algorithm: DigestAlgorithm,
    /// The signature scheme the token must use.
    pub scheme: SignatureScheme,
}

/// A finished signature.
#[derive(Debug)]
pub struct Finished {
    /// The pending signature's id.
    pub id: String,
    /// Its level.
    pub level: Level,
    /// CAdES or PAdES.
    pub format: Format,
    /// The DER `ContentInfo` (a detached CAdES signature, `.p7s`; for PAdES the CMS
    /// inside the PDF).
    pub cades: Vec<u8>,
    /// The signed PDF (PAdES).
    pub pdf: Option<Vec<u8>>,
}

/// A finished signature before it is recorded.
struct Output {
    cms: Vec<u8>,
    pdf: Option<Vec<u8>>,
}

/// The signature service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Signatures {
    ctx: ServiceContext,
    pub(crate) trust: std::sync::Arc<TrustedCas>,
    time_stamps: TimeStampSource,
    pub(crate) http: reqwest::Client,
    crls: std::sync::Arc<revocation::CrlCache>,
    /// OCSP responses whose signature was verified already.
    ocsp: std::sync::Arc<eid_ca::ocsp::client::VerifiedResponses>,
    /// Our responder in this process, when it serves there.
    local_ocsp: Option<std::sync::Arc<dyn revocation::LocalResponder>>,
    mobile: Option<eid_hsm::mobile::MobileIdClient>,
}

fn random_id() -> Result<String, SignatureError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| SignatureError::Task(format!("random id: {e}")))?;
    Ok(hex::encode(bytes))
}

fn rfc3339(at: OffsetDateTime) -> Result<String, SignatureError> {
    at.format(&Rfc3339)
        .map_err(|e| SignatureError::Task(format!("formatting a time: {e}")))
}

fn parse_certificate(input: &[u8]) -> Result<Certificate, SignatureError> {
    let parsed = if input.starts_with(b"-----BEGIN") {
        Certificate::from_pem(input)
    } else {
        Certificate::from_der(input)
    };
    parsed.map_err(|e| SignatureError::BadCertificate(format!("unreadable certificate: {e}")))
}

fn query_error(operation: &'static str) -> impl FnOnce(sqlx::Error) -> SignatureError {
    move |source| SignatureError::Db(eid_core::DbError::Query { operation, source })
}

/// A pending signature as stored.
struct Pending {
    level: Level,
    format: Format,
    /// The PDF with its signature placeholder (PAdES).
    prepared_document: Option<Vec<u8>>,
    certificate: Certificate,
    digest_algorithm: DigestAlgorithm,
    document_digest: String,
    scheme: SignatureScheme,
    signed_attributes: Vec<u8>,
    expires_at: i64,
    state: String,
    /// The mobile gateway's session, for a signature made on a SIM.
    mobile_session: Option<String>,
}

impl Signatures {
    /// The service: it signs for certificates of `trust`'s signer CAs and takes
    /// signature time-stamps from `time_stamps`.
    pub fn new(ctx: &ServiceContext, trust: TrustedCas, time_stamps: TimeStampSource) -> Self {
        Self {
            ctx: ctx.clone(),
            trust: std::sync::Arc::new(trust),
            time_stamps,
            http: reqwest::Client::new(),
            crls: std::sync::Arc::default(),
            ocsp: std::sync::Arc::default(),
            local_ocsp: None,
            mobile: None,
        }
    }

    /// The service, signing also with citizens' SIMs through the mobile operator's
    /// gateway (see [`mobile`]).
    #[must_use]
    pub fn with_mobile_id(mut self, client: eid_hsm::mobile::MobileIdClient) -> Self {
        self.mobile = Some(client);
        self
    }

    /// The service context (configuration, database).
    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    /// The CA certificates the service signs for.
    pub(crate) fn trust(&self) -> &TrustedCas {
        &self.trust
    }

    /// Where signature time-stamps come from.
    pub(crate) fn time_stamps(&self) -> &TimeStampSource {
        &self.time_stamps
    }

    /// The HTTP client (OCSP, CRLs).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The service, asking our OCSP responder in this process directly (only when the
    /// CA's responder is served by this process: its answers are then the listener's).
    #[must_use]
    pub fn with_local_responder(
        mut self,
        responder: std::sync::Arc<dyn revocation::LocalResponder>,
    ) -> Self {
        self.local_ocsp = Some(responder);
        self
    }

    /// Where certificate status comes from.
    pub(crate) fn responders(&self) -> revocation::Responders<'_> {
        revocation::Responders {
            http: &self.http,
            local: self.local_ocsp.as_deref(),
            verified: &self.ocsp,
        }
    }

    /// Step 1: checks the certificate, builds and stores the signed attributes.
    /// `client` is the authenticated caller.
    pub async fn prepare(
        &self,
        client: &str,
        request: PrepareRequest,
    ) -> Result<Prepared, SignatureError> {
        let now = self.ctx.clock.now();
        let certificate = parse_certificate(&request.certificate)?;
        let issuer = self.trust.check_signer(&certificate, now)?.clone();
        let scheme = build::scheme_for(&certificate)?;
        let digest_algorithm = DigestAlgorithm::of_scheme(scheme).ok_or_else(|| {
            SignatureError::UnsupportedAlgorithm(format!("no digest for {scheme}"))
        })?;
        let mut pdf_details = None;
        if request.level == Level::Lta && request.format != Format::Pades {
            return Err(SignatureError::BadRequest(
                "level LTA (a document time-stamp over the signed file) is for format pades; \
                 CAdES archive time-stamps are not offered: use LT"
                    .into(),
            ));
        }
        if request.visible.is_some() && request.format != Format::Pades {
            return Err(SignatureError::BadRequest(
                "a visible signature is drawn in a PDF: it needs format pades".into(),
            ));
        }
        let appearance = request.visible.map(|placement| pades::Appearance {
            page: placement.page,
            rect: placement.rect,
            lines: appearance_lines(&certificate, now.to_offset(time::UtcOffset::UTC)),
        });
        let (document_digest, signing_time, prepared_document) = match (
            request.format,
            request.document,
        ) {
            (Format::Cades, DocumentInput::Bytes(bytes)) => {
                (digest_algorithm.digest(&bytes), Some(now), None)
            }
            (Format::Pades, DocumentInput::Bytes(pdf)) => {
                pades::check_size(&pdf)?;
                let chain = self.trust.chain_of(&certificate);
                let certificates_len = std::iter::once(&certificate)
                    .chain(&chain)
                    .map(|c| c.to_der().map(|der| der.len()))
                    .sum::<Result<usize, _>>()
                    .map_err(|source| SignatureError::Encoding {
                        what: "certificate",
                        source,
                    })?;
                let reserved = pades::reserved_len(certificates_len, request.level.time_stamped());
                // Parsing and hashing a PDF of many megabytes is CPU work: off the executor.
                let (prepared, digest, original_sha256) = tokio::task::spawn_blocking(move || {
                    let prepared =
                        pades::signature::prepare(&pdf, now, reserved, appearance.as_ref())?;
                    let digest = pades::byte_range_digest(
                        digest_algorithm,
                        &prepared.bytes,
                        &prepared.placeholder,
                    );
                    Ok::<_, SignatureError>((prepared, digest, hex::encode(Sha256::digest(&pdf))))
                })
                .await
                .map_err(|e| SignatureError::Task(format!("preparing the PDF: {e}")))??;
                pdf_details = Some(serde_json::json!({
                    "visible": request.visible.map(|v| serde_json::json!({ "page": v.page, "rect": v.rect })),
                    "pdf_sha256": original_sha256,
                    "prepared_pdf_sha256": hex::encode(Sha256::digest(&prepared.bytes)),
                    "byte_range": prepared.placeholder.byte_range(prepared.bytes.len()),
                }));
                // PAdES: the time is the signature dictionary's /M, not an attribute.
                (digest, None, Some(prepared.bytes))
            }
            (Format::Pades, DocumentInput::Digest { .. }) => {
                return Err(SignatureError::BadRequest(
                    "a PAdES signature goes into the PDF: give the `document`, not a digest".into(),
                ));
            }
            (Format::Cades, DocumentInput::Digest { algorithm, value }) => {
                let named = DigestAlgorithm::parse(&algorithm).ok_or_else(|| {
                    SignatureError::UnsupportedAlgorithm(format!(
                        "digest algorithm `{algorithm}` is not supported (sha256, sha384, sha512)"
                    ))
                })?;
                if named != digest_algorithm {
                    return Err(SignatureError::UnsupportedAlgorithm(format!(
                        "this certificate's key signs with {scheme}: give a {} digest of the document, not {}",
                        digest_algorithm.name(),
                        named.name()
                    )));
                }
                if value.len() != named.output_len() {
                    return Err(SignatureError::BadRequest(format!(
                        "a {} digest has {} octets, not {}",
                        named.name(),
                        named.output_len(),
                        value.len()
                    )));
                }
                (value, Some(now), None)
            }
        };
        let signed_attributes =
            build::signed_attributes(&certificate, &document_digest, signing_time)?;
        let signed_attributes_digest = digest_algorithm.digest(&signed_attributes);
        let id = random_id()?;
        let ttl = time::Duration::try_from(self.ctx.config.signing.cades.pending_ttl)
            .map_err(|e| SignatureError::Task(format!("pending TTL: {e}")))?;
        let expires = now + ttl;
        let certificate_der = certificate
            .to_der()
            .map_err(|source| SignatureError::Encoding {
                what: "certificate",
                source,
            })?;
        let tbs = certificate.tbs_certificate();
        let serial = hex::encode(tbs.serial_number().as_bytes());
        let document_digest_hex = hex::encode(&document_digest);
        let mut details = serde_json::json!({
            "format": request.format.name(),
            "level": request.level.name(),
            "signer_serial": serial,
            "signer_subject": tbs.subject().to_string(),
            "signer_issuer": issuer.tbs_certificate().subject().to_string(),
            "digest_algorithm": digest_algorithm.name(),
            "document_digest": document_digest_hex,
            "signature_scheme": scheme.name(),
            "expires_at": rfc3339(expires)?,
        });
        if let (Some(object), Some(serde_json::Value::Object(pdf))) =
            (details.as_object_mut(), pdf_details)
        {
            object.extend(pdf);
        }
        let event = AuditEvent::new(
            format!("service:{client}"),
            "signature.prepare",
            "signature",
            &id,
        )
        .details(details);
        let mut tx = self.ctx.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO pending_signature (id, client, level, signer_serial, signer_issuer, \
             certificate, digest_algorithm, document_digest, signature_scheme, \
             signed_attributes, created_at, expires_at, state, format, prepared_document) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', $13, $14)",
        )
        .bind(&id)
        .bind(client)
        .bind(request.level.name())
        .bind(&serial)
        .bind(tbs.issuer().to_string())
        .bind(Base64::encode_string(&certificate_der))
        .bind(digest_algorithm.name())
        .bind(&document_digest_hex)
        .bind(scheme.name())
        .bind(Base64::encode_string(&signed_attributes))
        .bind(rfc3339(now)?)
        .bind(expires.unix_timestamp())
        .bind(request.format.name())
        .bind(prepared_document)
        .execute(&mut *tx)
        .await
        .map_err(query_error("storing a pending signature"))?;
        audit::append(&mut tx, self.ctx.clock.as_ref(), &event).await?;
        tx.commit()
            .await
            .map_err(query_error("committing a pending signature"))?;
        Ok(Prepared {
            id,
            expires_at: rfc3339(expires)?,
            signed_attributes,
            signed_attributes_digest,
            digest_algorithm,
            scheme,
        })
    }

    async fn load(&self, client: &str, id: &str) -> Result<Pending, SignatureError> {
        let unknown = || SignatureError::UnknownSignature(id.to_owned());
        // Ids are 32 hex digits; anything else cannot exist.
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(unknown());
        }
        let row = sqlx::query(
            "SELECT client, level, certificate, digest_algorithm, document_digest, \
             signature_scheme, signed_attributes, expires_at, state, format, \
             prepared_document, mobile_session FROM pending_signature WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.ctx.db.pool())
        .await
        .map_err(query_error("reading a pending signature"))?
        .ok_or_else(unknown)?;
        let text = |name: &str| -> Result<String, SignatureError> {
            row.try_get::<String, _>(name)
                .map_err(query_error("reading a pending signature"))
        };
        // Another client's pending signature is not even confirmed to exist.
        if text("client")? != client {
            return Err(unknown());
        }
        let stored = |what: &str| SignatureError::Task(format!("stored {what} is unreadable"));
        let certificate = Base64::decode_vec(&text("certificate")?)
            .ok()
            .and_then(|der| Certificate::from_der(&der).ok())
            .ok_or_else(|| stored("certificate"))?;
        let format = Format::parse(&text("format")?).ok_or_else(|| stored("format"))?;
        let prepared_document = row
            .try_get::<Option<Vec<u8>>, _>("prepared_document")
            .map_err(query_error("reading a pending signature"))?;
        if format == Format::Pades && prepared_document.is_none() && text("state")? == "pending" {
            return Err(stored("prepared PDF"));
        }
        Ok(Pending {
            level: Level::parse(&text("level")?).ok_or_else(|| stored("level"))?,
            format,
            prepared_document,
            certificate,
            digest_algorithm: DigestAlgorithm::parse(&text("digest_algorithm")?)
                .ok_or_else(|| stored("digest algorithm"))?,
            document_digest: text("document_digest")?,
            scheme: SignatureScheme::parse(&text("signature_scheme")?)
                .map_err(|_| stored("signature scheme"))?,
            signed_attributes: Base64::decode_vec(&text("signed_attributes")?)
                .map_err(|_| stored("signed attributes"))?,
            expires_at: row
                .try_get::<i64, _>("expires_at")
                .map_err(query_error("reading a pending signature"))?,
            state: text("state")?,
            mobile_session: row
                .try_get::<Option<String>, _>("mobile_session")
                .map_err(query_error("reading a pending signature"))?,
        })
    }

    /// Step 2: checks `signature` (the value the token made over the prepared signed
    /// attributes) and finishes the signature at the prepared level.
    pub async fn finalize(
        &self,
        client: &str,
        id: &str,
        signature: &[u8],
    ) -> Result<Finished, SignatureError> {
        let pending = self.load(client, id).await?;
        if pending.state != "pending" {
            return Err(SignatureError::AlreadyUsed(id.to_owned()));
        }
        let now = self.ctx.clock.now();
        if now.unix_timestamp() >= pending.expires_at {
            return Err(SignatureError::Expired(id.to_owned()));
        }
        match self.finish(&pending, signature, now).await {
            Ok(output) => {
                self.complete(client, id, &pending, &output, now).await?;
                Ok(Finished {
                    id: id.to_owned(),
                    level: pending.level,
                    format: pending.format,
                    cades: output.cms,
                    pdf: output.pdf,
                })
            }
            Err(
                e @ (SignatureError::InvalidSignature(_)
                | SignatureError::CertificateRevoked(_)
                | SignatureError::CertificateSuspended(_)
                | SignatureError::CertificateUnknown(_)
                | SignatureError::BadCertificate(_)),
            ) => {
                self.refuse(client, id, &pending, &e, now).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn finish(
        &self,
        pending: &Pending,
        signature: &[u8],
        now: OffsetDateTime,
    ) -> Result<Output, SignatureError> {
        let certificate = &pending.certificate;
        let scheme = pending.scheme;
        let signature = match scheme {
            SignatureScheme::EcdsaSha256 => build::ecdsa_signature_der(signature, 32),
            SignatureScheme::EcdsaSha384 => build::ecdsa_signature_der(signature, 48),
            _ => Some(signature.to_vec()),
        }
        .ok_or_else(|| {
            SignatureError::InvalidSignature(format!(
                "the signature value is not an {} signature",
                scheme.name()
            ))
        })?;
        let key = eid_hsm::PublicKey::new(
            certificate
                .tbs_certificate()
                .subject_public_key_info()
                .clone(),
        );
        key.verify(scheme, &pending.signed_attributes, &signature)
            .map_err(|_| {
                SignatureError::InvalidSignature(
                    "the signature value does not verify with the certificate's key over the prepared signed attributes"
                        .into(),
                )
            })?;
        // The certificate may have been revoked (or expired) since it was prepared.
        let issuer = self.trust.check_signer(certificate, now)?.clone();
        revocation::check(
            self.responders(),
            certificate,
            &issuer,
            now,
            revocation::Freshness::Current,
        )
        .await?;

        let chain = self.trust.chain_of(certificate);
        let mut additions = Additions {
            certificates: chain.clone(),
            ..Additions::default()
        };
        // B-LT's validation data: in the CMS for CAdES, in the DSS for PAdES.
        let mut validation = Additions::default();
        if pending.level.time_stamped() {
            let token = self
                .time_stamps
                .stamp(Sha256::digest(&signature).as_slice())
                .await?;
            if pending.level.long_term() {
                // Asked again after the time-stamp, answered then: the status before
                // signing may be older than the time-stamp, and proves nothing after it.
                let status = revocation::check(
                    self.responders(),
                    certificate,
                    &issuer,
                    now,
                    revocation::Freshness::Fresh,
                )
                .await?;
                self.add_signer_material(certificate, &status, &mut validation, now)
                    .await?;
                self.add_time_stamp_material(&token.certificates, &mut validation, now)
                    .await?;
            }
            additions.time_stamp = Some(token.token);
        }
        if pending.format == Format::Cades {
            additions.certificates.append(&mut validation.certificates);
            additions
                .ocsp_responses
                .append(&mut validation.ocsp_responses);
            additions.crls.append(&mut validation.crls);
        }
        let cms = build::assemble(
            certificate,
            scheme,
            pending.digest_algorithm,
            &pending.signed_attributes,
            &signature,
            &additions,
        )?;
        let Some(prepared) = pending.prepared_document.clone() else {
            return Ok(Output { cms, pdf: None });
        };
        let material = pending
            .level
            .long_term()
            .then(|| {
                let certificates = std::iter::once(certificate)
                    .chain(&chain)
                    .chain(&validation.certificates)
                    .map(Encode::to_der)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ValidationMaterial {
                    certificates,
                    ocsp_responses: validation.ocsp_responses,
                    crls: validation.crls,
                })
            })
            .transpose()
            .map_err(|source| SignatureError::Encoding {
                what: "validation data",
                source,
            })?;
        let embedded = cms.clone();
        let pdf = tokio::task::spawn_blocking(move || {
            let (signed, contents) = pades::signature::embed(&prepared, &embedded)?;
            match material {
                Some(material) => pades::dss::add(&signed, &contents, &material),
                None => Ok(signed),
            }
        })
        .await
        .map_err(|e| SignatureError::Task(format!("finishing the PDF: {e}")))??;
        // B-LTA: the document time-stamp over everything above, the DSS included.
        let pdf = if pending.level == Level::Lta {
            self.add_document_time_stamp(pdf).await?
        } else {
            pdf
        };
        Ok(Output {
            cms,
            pdf: Some(pdf),
        })
    }

    /// LT validation data for a signer whose status our responder gave as `status`:
    /// the responder's certificates, its response, and the CRLs of the CAs above.
    pub(crate) async fn add_signer_material(
        &self,
        certificate: &Certificate,
        status: &revocation::OcspAnswer,
        validation: &mut Additions,
        now: OffsetDateTime,
    ) -> Result<(), SignatureError> {
        validation
            .certificates
            .extend(status.responder_certificates.iter().cloned());
        validation.ocsp_responses.push(status.response.clone());
        // The CA certificates' status: the CRL each names (the root's).
        self.add_ca_crls(certificate, validation, now).await
    }

    /// LT validation data for the TSU certificates a time-stamp token carries: each
    /// with its chain, the CRLs covering them, and the TSU's own OCSP status where
    /// its certificate names a responder.
    pub(crate) async fn add_time_stamp_material(
        &self,
        tsus: &[Certificate],
        validation: &mut Additions,
        now: OffsetDateTime,
    ) -> Result<(), SignatureError> {
        for tsu in tsus {
            validation.certificates.push(tsu.clone());
            validation.certificates.extend(self.trust.chain_of(tsu));
            self.add_ca_crls(tsu, validation, now).await?;
            if trust::ocsp_url(tsu).is_some()
                && let Some(tsu_issuer) = self.trust.issuer_of(tsu)
            {
                let tsu_status = revocation::check(
                    self.responders(),
                    tsu,
                    tsu_issuer,
                    now,
                    revocation::Freshness::Fresh,
                )
                .await?;
                validation.ocsp_responses.push(tsu_status.response);
            }
        }
        Ok(())
    }

    /// Appends a document time-stamp (B-LTA) to `pdf`: an invisible field whose token,
    /// from our TSA, covers every byte before it.
    pub(crate) async fn add_document_time_stamp(
        &self,
        pdf: Vec<u8>,
    ) -> Result<Vec<u8>, SignatureError> {
        let (prepared, digest) = tokio::task::spawn_blocking(move || {
            let prepared = pades::signature::prepare_document_time_stamp(
                &pdf,
                pades::DOCUMENT_TIME_STAMP_RESERVED,
            )?;
            let digest = pades::byte_range_digest(
                DigestAlgorithm::Sha256,
                &prepared.bytes,
                &prepared.placeholder,
            );
            Ok::<_, SignatureError>((prepared.bytes, digest))
        })
        .await
        .map_err(|e| SignatureError::Task(format!("preparing a document time-stamp: {e}")))??;
        let token = self.time_stamps.stamp(&digest).await?;
        let token = token
            .token
            .to_der()
            .map_err(|source| SignatureError::Encoding {
                what: "document time-stamp",
                source,
            })?;
        Ok(pades::signature::embed(&prepared, &token)?.0)
    }

    /// Adds the CRL covering each CA certificate above `certificate` (and, for a TSU
    /// certificate, the TSU itself), once each: what a validator needs for the
    /// certificates that name a CRL rather than an OCSP responder.
    async fn add_ca_crls(
        &self,
        certificate: &Certificate,
        validation: &mut Additions,
        now: OffsetDateTime,
    ) -> Result<(), SignatureError> {
        let chain = self.trust.chain_of(certificate);
        // The signer's own status comes from OCSP; above it, and for a TSU (which names
        // no responder), from CRLs.
        let subjects = if trust::ocsp_url(certificate).is_some() {
            chain.iter().collect::<Vec<_>>()
        } else {
            std::iter::once(certificate).chain(&chain).collect()
        };
        for subject in subjects {
            let tbs = subject.tbs_certificate();
            if tbs.issuer() == tbs.subject() {
                continue;
            }
            let Some(issuer) = self.trust.issuer_of(subject) else {
                continue;
            };
            if let Some(crl) = self.crls.covering(&self.http, subject, issuer, now).await?
                && !validation.crls.contains(&crl)
            {
                validation.crls.push(crl);
            }
        }
        Ok(())
    }

    async fn complete(
        &self,
        client: &str,
        id: &str,
        pending: &Pending,
        output: &Output,
        now: OffsetDateTime,
    ) -> Result<(), SignatureError> {
        let mut details = serde_json::json!({
            "format": pending.format.name(),
            "level": pending.level.name(),
            "signer_serial": hex::encode(pending.certificate.tbs_certificate().serial_number().as_bytes()),
            "digest_algorithm": pending.digest_algorithm.name(),
            "document_digest": pending.document_digest,
            "certificate_status": "good",
            "signature_sha256": hex::encode(Sha256::digest(&output.cms)),
        });
        if let (Some(object), Some(pdf)) = (details.as_object_mut(), &output.pdf) {
            object.insert(
                "signed_pdf_sha256".into(),
                hex::encode(Sha256::digest(pdf)).into(),
            );
        }
        let event = AuditEvent::new(
            format!("service:{client}"),
            "signature.finalize",
            "signature",
            id,
        )
        .details(details);
        let mut tx = self.ctx.db.begin_write().await?;
        // The prepared PDF goes: the signed one holds it byte for byte.
        let claimed = sqlx::query(
            "UPDATE pending_signature SET state = 'completed', finalized_at = $1, cades = $2, \
             signed_document = $3, prepared_document = NULL \
             WHERE id = $4 AND state = 'pending' AND expires_at > $5",
        )
        .bind(rfc3339(now)?)
        .bind(Base64::encode_string(&output.cms))
        .bind(output.pdf.as_deref())
        .bind(id)
        .bind(now.unix_timestamp())
        .execute(&mut *tx)
        .await
        .map_err(query_error("finishing a pending signature"))?;
        if claimed.rows_affected() != 1 {
            // Another call got there first (or it expired meanwhile): nothing written.
            let _ = tx.rollback().await;
            return Err(SignatureError::AlreadyUsed(id.to_owned()));
        }
        audit::append(&mut tx, self.ctx.clock.as_ref(), &event).await?;
        tx.commit()
            .await
            .map_err(query_error("committing a finished signature"))?;
        Ok(())
    }

    async fn refuse(
        &self,
        client: &str,
        id: &str,
        pending: &Pending,
        reason: &SignatureError,
        now: OffsetDateTime,
    ) -> Result<(), SignatureError> {
        let event = AuditEvent::new(
            format!("service:{client}"),
            "signature.finalize",
            "signature",
            id,
        )
        .outcome(Outcome::Denied)
        .details(serde_json::json!({
            "format": pending.format.name(),
            "level": pending.level.name(),
            "signer_serial": hex::encode(pending.certificate.tbs_certificate().serial_number().as_bytes()),
            "document_digest": pending.document_digest,
            "reason": reason.to_string(),
        }));
        let mut tx = self.ctx.db.begin_write().await?;
        let claimed = sqlx::query(
            "UPDATE pending_signature SET state = 'refused', finalized_at = $1, failure = $2, \
             prepared_document = NULL WHERE id = $3 AND state = 'pending'",
        )
        .bind(rfc3339(now)?)
        .bind(reason.to_string())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(query_error("refusing a pending signature"))?;
        if claimed.rows_affected() != 1 {
            let _ = tx.rollback().await;
            return Err(SignatureError::AlreadyUsed(id.to_owned()));
        }
        audit::append(&mut tx, self.ctx.clock.as_ref(), &event).await?;
        tx.commit()
            .await
            .map_err(query_error("committing a refused signature"))?;
        Ok(())
    }
}
