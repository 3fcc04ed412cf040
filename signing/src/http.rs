//! The signing service's HTTP surface and its error boundary. The TSA's errors never
//! reach HTTP: the domain answers every request with a `TimeStampResp` (a rejection
//! carries the PKIFailureInfo), sent with 200 as RFC 3161 §3.4 clients expect. Only a
//! request that is not a time-stamp query at all (wrong media type) gets a 415
//! problem+json, since its sender would not read a DER reply.
//!
//! The signature API (`/api/v1/signatures/...`) answers problem+json for every error,
//! each [`SignatureError`] (and each [`PdfError`]) with its own status and type;
//! callers authenticate with a bearer token of a `[[signing.api_client]]`.

use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        Path, State,
        rejection::{BytesRejection, JsonRejection},
    },
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64ct::{Base64, Encoding};
use eid_core::http::Problem;
use serde::Deserialize;

use crate::{
    PdfError, SignatureError,
    cades::{
        DocumentInput, Format, Level, PrepareRequest, Signatures, VisiblePlacement,
        build::DigestAlgorithm, mobile::MobileSignRequest,
    },
    pades::MAX_PDF_BYTES,
    seal::{SealRequest, Seals},
    tsa::{FailureInfo, TimeStampAuthority, token},
    validation::Covered,
};

const QUERY: &str = "application/timestamp-query";
const REPLY: &str = "application/timestamp-reply";

fn reply(body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, REPLY),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn time_stamp(
    State(tsa): State<TimeStampAuthority>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    if media_type.as_deref() != Some(QUERY) {
        return Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!("POST a DER TimeStampReq with Content-Type: {QUERY} (RFC 3161 §3.4)"),
        )
        .into_response();
    }
    match body {
        Ok(body) => reply(tsa.respond(&body).await),
        // Over the body limit (or a broken upload): still an answer in the protocol.
        Err(rejection) => reply(token::rejection(
            FailureInfo::BadRequest,
            &format!(
                "the request body could not be read ({}); requests are at most {} octets",
                rejection.status(),
                token::MAX_REQUEST_BYTES
            ),
        )),
    }
}

const PKCS7_SIGNATURE: &str = "application/pkcs7-signature";
const PDF: &str = "application/pdf";
/// The largest signature API request: a document of up to about 24 MiB in base64.
const MAX_API_BYTES: usize = 32 * 1024 * 1024;

impl IntoResponse for SignatureError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            Self::Unauthorised(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            Self::UnsupportedAlgorithm(_) => (StatusCode::BAD_REQUEST, "unsupported-algorithm"),
            Self::BadCertificate(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad-certificate"),
            Self::UnknownSignature(_) => (StatusCode::NOT_FOUND, "unknown-signature"),
            Self::Expired(_) => (StatusCode::GONE, "signature-expired"),
            Self::AlreadyUsed(_) => (StatusCode::CONFLICT, "signature-already-used"),
            Self::InvalidSignature(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-signature"),
            Self::CertificateRevoked(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "certificate-revoked")
            }
            Self::CertificateSuspended(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "certificate-suspended")
            }
            Self::CertificateUnknown(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "certificate-unknown")
            }
            Self::RevocationUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "revocation-unavailable")
            }
            Self::TimeStampUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "time-stamp-unavailable")
            }
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "request-too-large"),
            Self::MobileIdRefused { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "mobile-id-refused"),
            Self::MobileIdUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "mobile-id-unavailable")
            }
            Self::InsufficientScope(_) => (StatusCode::FORBIDDEN, "insufficient-scope"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::UnknownSeal(_) => (StatusCode::NOT_FOUND, "unknown-seal"),
            Self::SealWithdrawn(_) => (StatusCode::GONE, "seal-withdrawn"),
            Self::Refused(_) => (StatusCode::CONFLICT, "refused"),
            Self::NotExtendable(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "signature-not-extendable")
            }
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Pdf(pdf) => match pdf {
                PdfError::NotPdf(_) => (StatusCode::BAD_REQUEST, "not-a-pdf"),
                PdfError::Encrypted => (StatusCode::UNPROCESSABLE_ENTITY, "pdf-encrypted"),
                PdfError::BrokenXref(_) => (StatusCode::UNPROCESSABLE_ENTITY, "pdf-broken-xref"),
                PdfError::Malformed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "pdf-malformed"),
                PdfError::ChangesForbidden => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "pdf-changes-forbidden")
                }
                PdfError::Unsupported(_) => (StatusCode::UNPROCESSABLE_ENTITY, "pdf-unsupported"),
                PdfError::BadAppearance(_) => (StatusCode::BAD_REQUEST, "bad-visible-signature"),
                PdfError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "document-too-large"),
                // Our own estimate fell short: a server error, but one worth naming
                // (it carries only sizes).
                PdfError::NoRoom { .. } => {
                    tracing::error!(error = %pdf, "PAdES placeholder too small");
                    (StatusCode::INTERNAL_SERVER_ERROR, "signature-too-large")
                }
            },
            _ => return Problem::internal("signature API", &self).into_response(),
        };
        let challenge = match &self {
            Self::InsufficientScope(_) => Some("Bearer error=\"insufficient_scope\""),
            _ if status == StatusCode::UNAUTHORIZED => Some("Bearer"),
            _ => None,
        };
        let mut response = Problem::new(status, kind, self.to_string()).into_response();
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// The authenticated API client, by name.
fn caller(signatures: &Signatures, headers: &HeaderMap) -> Result<String, SignatureError> {
    let clients = &signatures.context().config.signing.api_clients;
    if clients.is_empty() {
        return Err(SignatureError::Unauthorised(
            "the signature API has no clients configured ([[signing.api_client]])".into(),
        ));
    }
    let callers = clients.iter().map(|c| (c.name.as_str(), c.token.as_ref()));
    match eid_core::http::bearer_caller(headers, callers) {
        Ok(name) => Ok(name.to_owned()),
        Err(eid_core::http::BearerRefusal::Missing) => Err(SignatureError::Unauthorised(
            "a bearer token is required".into(),
        )),
        Err(eid_core::http::BearerRefusal::Unknown) => Err(SignatureError::Unauthorised(
            "the bearer token is not a signature API client's".into(),
        )),
    }
}

fn too_large() -> SignatureError {
    SignatureError::TooLarge(format!(
        "the request is over {MAX_API_BYTES} octets (a document of at most {MAX_PDF_BYTES} \
         octets for PAdES, base64 in JSON)"
    ))
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, SignatureError> {
    body.map(|Json(value)| value).map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            SignatureError::BadRequest(e.body_text())
        }
    })
}

/// Refuses a request that announces a body over the API's limit at once, from its
/// `Content-Length`: the extractors' limit would read (and discard) up to 32 MiB of
/// it first. A body without a length (chunked) still meets that limit as it arrives.
async fn refuse_announced_too_large(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > MAX_API_BYTES as u64) {
        return too_large().into_response();
    }
    next.run(request).await
}

fn base64_field(name: &str, value: &str) -> Result<Vec<u8>, SignatureError> {
    Base64::decode_vec(value.trim())
        .map_err(|_| SignatureError::BadRequest(format!("`{name}` is not base64")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrepareBody {
    /// The signer's certificate, PEM.
    certificate: String,
    /// The document, base64 (or give `digest`).
    document: Option<String>,
    /// The document's digest, base64.
    digest: Option<String>,
    /// The digest's algorithm (`sha256`, `sha384`, `sha512`).
    digest_algorithm: Option<String>,
    /// `B`, `T`, `LT` or `LTA` (PAdES only) (default `LT`; `B-B`, `B-T`, `B-LT`, `B-LTA` too).
    level: Option<String>,
    /// `cades` (default: a detached signature) or `pades` (the PDF `document`
    /// signed inside).
    format: Option<String>,
    /// PAdES: a visible signature, `{"page": 1, "rect": [x1, y1, x2, y2]}`.
    visible_signature: Option<VisibleBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VisibleBody {
    /// The page, from 1 (default 1).
    #[serde(default = "first_page")]
    page: usize,
    /// The box, in points from the page's lower left corner.
    rect: [f64; 4],
}

fn first_page() -> usize {
    1
}

impl VisibleBody {
    fn placement(self) -> VisiblePlacement {
        VisiblePlacement {
            page: self.page,
            rect: self.rect,
        }
    }
}

async fn prepare(
    State(signatures): State<Signatures>,
    headers: HeaderMap,
    body: Result<Json<PrepareBody>, JsonRejection>,
) -> Result<Response, SignatureError> {
    let client = caller(&signatures, &headers)?;
    let body = json_body(body)?;
    let (level, format) = level_and_format(body.level.as_deref(), body.format.as_deref())?;
    let document = document_input(body.document, body.digest, body.digest_algorithm)?;
    let prepared = signatures
        .prepare(
            &client,
            PrepareRequest {
                certificate: body.certificate.into_bytes(),
                document,
                level,
                format,
                visible: body.visible_signature.map(VisibleBody::placement),
            },
        )
        .await?;
    let answer = serde_json::json!({
        "id": prepared.id,
        "format": format.name(),
        "level": level.name(),
        "expires_at": prepared.expires_at,
        "signature_algorithm": prepared.scheme.name(),
        "digest_algorithm": prepared.digest_algorithm.name(),
        "data_to_be_signed": Base64::encode_string(&prepared.signed_attributes),
        "data_to_be_signed_digest": Base64::encode_string(&prepared.signed_attributes_digest),
        "finalize": format!("/api/v1/signatures/{}/finalize", prepared.id),
    });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// The document of a request: its bytes (base64), or its digest with the algorithm.
fn document_input(
    document: Option<String>,
    digest: Option<String>,
    digest_algorithm: Option<String>,
) -> Result<DocumentInput, SignatureError> {
    match (document, digest, digest_algorithm) {
        (Some(document), None, None) => {
            Ok(DocumentInput::Bytes(base64_field("document", &document)?))
        }
        (None, Some(digest), Some(algorithm)) => Ok(DocumentInput::Digest {
            algorithm,
            value: base64_field("digest", &digest)?,
        }),
        _ => Err(SignatureError::BadRequest(
            "give either `document`, or `digest` with `digest_algorithm`".into(),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FinalizeBody {
    /// The signature value the token made, base64.
    signature: String,
}

async fn finalize(
    State(signatures): State<Signatures>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<FinalizeBody>, JsonRejection>,
) -> Result<Response, SignatureError> {
    let client = caller(&signatures, &headers)?;
    let body = json_body(body)?;
    let signature = base64_field("signature", &body.signature)?;
    if signature.is_empty() {
        return Err(SignatureError::BadRequest("`signature` is empty".into()));
    }
    let finished = signatures.finalize(&client, &id, &signature).await?;
    Ok(finished_response(&headers, finished))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendBody {
    /// A CAdES signature (base64 DER) to extend; without it, `document` is a signed
    /// PDF whose signatures are extended.
    signature: Option<String>,
    /// The signed PDF, or the document a CAdES signature covers (base64).
    document: Option<String>,
    /// Instead of a CAdES signature's document: its digest (base64).
    digest: Option<String>,
    /// The digest's algorithm (`sha256`, `sha384`, `sha512`).
    digest_algorithm: Option<String>,
    /// `LT` or `LTA` (LTA for PDFs only; default: LTA for a PDF, LT for CAdES).
    level: Option<String>,
}

/// `POST /api/v1/signatures/extend`: a signed PDF's signatures to B-LT or B-LTA (a
/// B-LTA file's archive renewed by another document time-stamp).
async fn extend(
    State(signatures): State<Signatures>,
    headers: HeaderMap,
    body: Result<Json<ExtendBody>, JsonRejection>,
) -> Result<Response, SignatureError> {
    let client = caller(&signatures, &headers)?;
    let body = json_body(body)?;
    let level = match body.level.as_deref() {
        None if body.signature.is_some() => Level::Lt,
        None => Level::Lta,
        Some(text) => Level::parse(text).ok_or_else(|| {
            SignatureError::BadRequest(format!("level `{text}` is not LT or LTA"))
        })?,
    };
    if let Some(signature) = &body.signature {
        let signature = base64_field("signature", signature)?;
        let covered = covered(body.document, body.digest, body.digest_algorithm)?;
        let extended = signatures
            .extend_cades(&client, &signature, &covered, level)
            .await?;
        if accepts(&headers, PKCS7_SIGNATURE) {
            return Ok(bytes_response(PKCS7_SIGNATURE, extended));
        }
        return Ok(Json(serde_json::json!({
            "level": level.name(),
            "format": "CAdES detached (CMS SignedData, DER)",
            "signature": Base64::encode_string(&extended),
        }))
        .into_response());
    }
    let (Some(document), None, None) = (&body.document, &body.digest, &body.digest_algorithm)
    else {
        return Err(SignatureError::BadRequest(
            "give a signed PDF as `document`, or a CAdES `signature` with the signed \
             `document` or its `digest`"
                .into(),
        ));
    };
    let pdf = base64_field("document", document)?;
    let extended = signatures.extend_pdf(&client, pdf, level).await?;
    if accepts(&headers, PDF) {
        return Ok(bytes_response(PDF, extended.pdf));
    }
    Ok(Json(serde_json::json!({
        "level": extended.level.name(),
        "signatures": extended.signatures,
        "document_time_stamps": extended.document_time_stamps,
        "document": Base64::encode_string(&extended.pdf),
    }))
    .into_response())
}

/// A signed PDF or `.p7s` as the whole answer, of `media_type` (not to be cached:
/// it is someone's signed document).
fn bytes_response(media_type: &'static str, bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, media_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        bytes,
    )
        .into_response()
}

/// Whether the request's `Accept` names `media_type`.
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains(media_type))
}

/// A finished signature in the representation asked for: the signed PDF or the
/// `.p7s` itself (`Accept`), else JSON with it in base64.
fn finished_response(headers: &HeaderMap, finished: crate::cades::Finished) -> Response {
    let accepts = |media_type: &str| accepts(headers, media_type);
    if let Some(pdf) = finished.pdf {
        if accepts(PDF) {
            return bytes_response(PDF, pdf);
        }
        return Json(serde_json::json!({
            "id": finished.id,
            "level": finished.level.name(),
            "format": "PAdES (PDF, ETSI.CAdES.detached)",
            "document": Base64::encode_string(&pdf),
        }))
        .into_response();
    }
    if accepts(PKCS7_SIGNATURE) {
        return bytes_response(PKCS7_SIGNATURE, finished.cades);
    }
    Json(serde_json::json!({
        "id": finished.id,
        "level": finished.level.name(),
        "format": "CAdES detached (CMS SignedData, DER)",
        "signature": Base64::encode_string(&finished.cades),
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MobileBody {
    /// The citizen's phone number, `+` and country code.
    phone_number: String,
    /// The citizen's national identity number.
    national_id: String,
    /// The document, base64 (a PDF for `pades`).
    document: String,
    /// `B`, `T`, `LT` or `LTA` (PAdES only) (default `LT`).
    level: Option<String>,
    /// `cades` (default) or `pades`.
    format: Option<String>,
    /// Shown on the phone (GSM-7, at most 40 characters).
    display_text: Option<String>,
    /// PAdES: a visible signature, as for `prepare`.
    visible_signature: Option<VisibleBody>,
}

fn level_and_format(
    level: Option<&str>,
    format: Option<&str>,
) -> Result<(Level, Format), SignatureError> {
    let level = match level {
        None => Level::Lt,
        Some(text) => Level::parse(text).ok_or_else(|| {
            SignatureError::BadRequest(format!("level `{text}` is not B, T, LT or LTA"))
        })?,
    };
    let format = match format {
        None => Format::Cades,
        Some(text) => Format::parse(text).ok_or_else(|| {
            SignatureError::BadRequest(format!("format `{text}` is not cades or pades"))
        })?,
    };
    Ok((level, format))
}

/// `POST /api/v1/signatures/mobile-id`: a signature on the citizen's SIM. Answers
/// 202 with the id and the verification code; the result comes from
/// `GET /api/v1/signatures/{id}/mobile-id`.
async fn mobile_start(
    State(signatures): State<Signatures>,
    headers: HeaderMap,
    body: Result<Json<MobileBody>, JsonRejection>,
) -> Result<Response, SignatureError> {
    let client = caller(&signatures, &headers)?;
    let body = json_body(body)?;
    let (level, format) = level_and_format(body.level.as_deref(), body.format.as_deref())?;
    let started = signatures
        .mobile_start(
            &client,
            MobileSignRequest {
                phone_number: body.phone_number,
                national_id: body.national_id,
                document: base64_field("document", &body.document)?,
                format,
                level,
                display_text: body.display_text,
                visible: body.visible_signature.map(VisibleBody::placement),
            },
        )
        .await?;
    let status = format!("/api/v1/signatures/{}/mobile-id", started.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, status.clone())],
        Json(serde_json::json!({
            "id": started.id,
            "format": format.name(),
            "level": level.name(),
            "verification_code": started.verification_code,
            "expires_at": started.expires_at,
            "status": status,
        })),
    )
        .into_response())
}

/// `GET /api/v1/signatures/{id}/mobile-id`: waits up to 20 s for the SIM; 202
/// `{"state": "waiting"}` until the citizen answers, then the finished signature as
/// finalize gives it.
async fn mobile_status(
    State(signatures): State<Signatures>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, SignatureError> {
    let client = caller(&signatures, &headers)?;
    match signatures.mobile_poll(&client, &id).await? {
        None => Ok((
            StatusCode::ACCEPTED,
            [(header::CACHE_CONTROL, "no-store")],
            Json(serde_json::json!({ "state": "waiting" })),
        )
            .into_response()),
        Some(finished) => Ok(finished_response(&headers, finished)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateBody {
    /// The detached CMS signature (CAdES), base64; absent for a signed PDF (PAdES)
    /// given as `document`.
    signature: Option<String>,
    /// The signed document, base64 (or give `digest`).
    document: Option<String>,
    /// The document's digest, base64.
    digest: Option<String>,
    /// The digest's algorithm (`sha256`, `sha384`, `sha512`).
    digest_algorithm: Option<String>,
}

/// `POST /api/v1/validations`: an EN 319 102-1 report on a CAdES signature. Always
/// 200 with the report for a signature that could be examined (even TOTAL-FAILED);
/// 400 for a request that names nothing to validate.
async fn validate(
    State(signatures): State<Signatures>,
    headers: HeaderMap,
    body: Result<Json<ValidateBody>, JsonRejection>,
) -> Result<Response, SignatureError> {
    let client = caller(&signatures, &headers)?;
    let body = json_body(body)?;
    let Some(signature) = body.signature else {
        // A signed PDF: its signatures are inside.
        let (Some(document), None, None) = (body.document, body.digest, body.digest_algorithm)
        else {
            return Err(SignatureError::BadRequest(
                "give a signed PDF as `document`, or a CAdES `signature` with the signed \
                 `document` or its `digest`"
                    .into(),
            ));
        };
        let pdf = base64_field("document", &document)?;
        let report = signatures.validate_pades(&pdf).await?;
        tracing::info!(
            client,
            document = %crate::validation::fingerprint(&pdf),
            indications = ?report.signatures.iter().map(|s| s.indication).collect::<Vec<_>>(),
            "validated a PDF's signatures"
        );
        return Ok(Json(report).into_response());
    };
    let signature = base64_field("signature", &signature)?;
    let covered = covered(body.document, body.digest, body.digest_algorithm)?;
    let report = signatures.validate_cades(&signature, &covered).await?;
    tracing::info!(
        client,
        signature = %crate::validation::fingerprint(&signature),
        indications = ?report.signatures.iter().map(|s| s.indication).collect::<Vec<_>>(),
        "validated a signature"
    );
    Ok(Json(report).into_response())
}

/// What a detached CAdES signature covers, from a request's fields: the `document`
/// (base64), or its `digest` (base64) with `digest_algorithm`.
fn covered(
    document: Option<String>,
    digest: Option<String>,
    algorithm: Option<String>,
) -> Result<Covered, SignatureError> {
    Ok(match (document, digest, algorithm) {
        (Some(document), None, None) => Covered::Document(base64_field("document", &document)?),
        (None, Some(digest), Some(algorithm)) => {
            let algorithm = DigestAlgorithm::parse(&algorithm).ok_or_else(|| {
                SignatureError::UnsupportedAlgorithm(format!(
                    "digest algorithm `{algorithm}` is not sha256, sha384 or sha512"
                ))
            })?;
            let digest = base64_field("digest", &digest)?;
            if digest.len() != algorithm.output_len() {
                return Err(SignatureError::BadRequest(format!(
                    "a {} digest has {} octets, not {}",
                    algorithm.name(),
                    algorithm.output_len(),
                    digest.len()
                )));
            }
            Covered::Digest(algorithm, digest)
        }
        _ => {
            return Err(SignatureError::BadRequest(
                "give the signed `document`, or its `digest` with `digest_algorithm`".into(),
            ));
        }
    })
}

/// The client of a seal API call, from its access token.
async fn seal_client(seals: &Seals, headers: &HeaderMap) -> Result<String, SignatureError> {
    let token = eid_core::http::bearer_token(headers).ok_or_else(|| {
        SignatureError::Unauthorised(
            "an access token from the identity provider is required (Authorization: Bearer)".into(),
        )
    })?;
    seals.client(token).await
}

/// `GET /api/v1/seals`: the seals the token's client may use.
async fn seal_list(
    State(seals): State<Seals>,
    headers: HeaderMap,
) -> Result<Response, SignatureError> {
    let client = seal_client(&seals, &headers).await?;
    let list: Vec<_> = seals
        .seals_of(&client)
        .await?
        .into_iter()
        .map(|seal| {
            serde_json::json!({
                "seal_id": seal.seal_id,
                "organisation": seal.organisation,
                "organisation_id": seal.organisation_id,
                "name": seal.name,
                "certificate": seal.certificate,
                "sign": format!("/api/v1/seals/{}/sign", seal.seal_id),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "seals": list })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealBody {
    /// The document, base64 (or give `digest`, CAdES only).
    document: Option<String>,
    /// The document's digest, base64.
    digest: Option<String>,
    /// The digest's algorithm (`sha256`, `sha384`, `sha512`).
    digest_algorithm: Option<String>,
    /// `B`, `T`, `LT` or `LTA` (PAdES only) (default `LT`).
    level: Option<String>,
    /// `cades` (default) or `pades`.
    format: Option<String>,
    /// PAdES: a visible seal, `{"page": 1, "rect": [x1, y1, x2, y2]}`.
    visible_signature: Option<VisibleBody>,
}

/// `POST /api/v1/seals/{id}/sign`: the document sealed, as `finalize` answers.
async fn seal_sign(
    State(seals): State<Seals>,
    Path(seal_id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<SealBody>, JsonRejection>,
) -> Result<Response, SignatureError> {
    let client = seal_client(&seals, &headers).await?;
    let body = json_body(body)?;
    let (level, format) = level_and_format(body.level.as_deref(), body.format.as_deref())?;
    let document = document_input(body.document, body.digest, body.digest_algorithm)?;
    let finished = seals
        .apply(
            &client,
            &seal_id,
            SealRequest {
                document,
                format,
                level,
                visible: body.visible_signature.map(VisibleBody::placement),
            },
        )
        .await?;
    Ok(finished_response(&headers, finished))
}

/// The seal API's routes.
pub(crate) fn seal_routes(seals: &Seals) -> Router {
    Router::new()
        .route("/api/v1/seals", get(seal_list))
        .route("/api/v1/seals/{id}/sign", post(seal_sign))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_API_BYTES))
        .route_layer(axum::middleware::from_fn(refuse_announced_too_large))
        .with_state(seals.clone())
}

/// The routes, before the shared `/healthz` and `/metrics`.
pub(crate) fn routes(tsa: &TimeStampAuthority, signatures: &Signatures) -> Router {
    let api = Router::new()
        .route("/api/v1/signatures/prepare", post(prepare))
        .route("/api/v1/signatures/{id}/finalize", post(finalize))
        .route("/api/v1/signatures/mobile-id", post(mobile_start))
        .route("/api/v1/signatures/{id}/mobile-id", get(mobile_status))
        .route("/api/v1/validations", post(validate))
        .route("/api/v1/signatures/extend", post(extend))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_API_BYTES))
        .route_layer(axum::middleware::from_fn(refuse_announced_too_large))
        .with_state(signatures.clone());
    Router::new()
        .route("/tsa", post(time_stamp))
        // Past the parser's limit the body is not read further; the handler answers
        // badRequest in a TimeStampResp.
        .layer(axum::extract::DefaultBodyLimit::max(
            token::MAX_REQUEST_BYTES + 1,
        ))
        .with_state(tsa.clone())
        .merge(api)
}
