//! The CA's HTTP surface and its one error boundary. Handlers parse, call the domain,
//! and map the result; CA errors become problem+json with a status that says whose
//! fault it is.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use eid_core::http::BearerRefusal;
use eid_core::http::Problem;
use eid_hsm::{KeyAttributes, KeyRole, PublicKey, QscdEvidence, TokenClass};
use serde::Deserialize;

use crate::{
    CaError, CaRole, CertificateAuthority, CertificateSerial, CrlKind, Holder, IssueRequest,
    KeyEvidence, NationalId, OcspAnswer, Organisation, PersonName, Profile, StatusChange, csr,
    ocsp,
};

impl IntoResponse for CaError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            Self::Refused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "refused"),
            Self::Unauthorised(_) => (StatusCode::UNAUTHORIZED, "unauthorised"),
            Self::UnknownCertificate(_) => (StatusCode::NOT_FOUND, "unknown-certificate"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            _ => return Problem::internal("certificate authority", &self).into_response(),
        };
        let mut response = Problem::new(status, kind, self.to_string()).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The registration authority's request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueBody {
    profile: String,
    /// PEM.
    csr: String,
    /// A citizen: national id and names (the citizen profiles).
    national_id: Option<String>,
    given_name: Option<String>,
    surname: Option<String>,
    /// An organisation (the seal profile).
    organisation: Option<OrganisationBody>,
    /// What the RA read from the token the key was generated on.
    key_evidence: Option<EvidenceBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrganisationBody {
    name: String,
    identifier: String,
    seal_name: String,
}

impl IssueBody {
    /// The holder the body names: a citizen or an organisation, not both.
    fn holder(&self) -> Result<Holder, CaError> {
        match (
            &self.organisation,
            &self.national_id,
            &self.given_name,
            &self.surname,
        ) {
            (Some(org), None, None, None) => Ok(Holder::Organisation(Organisation::new(
                &org.name,
                &org.identifier,
                &org.seal_name,
            )?)),
            (None, Some(national_id), Some(given), Some(surname)) => Ok(Holder::Citizen {
                national_id: NationalId::new(national_id)?,
                name: PersonName::new(given, surname)?,
            }),
            _ => Err(CaError::BadRequest(
                "name either a citizen (national_id, given_name, surname) or an organisation \
                 (organisation: name, identifier, seal_name)"
                    .into(),
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceBody {
    token_class: TokenClass,
    role: KeyRole,
    attributes: KeyAttributes,
}

/// The authenticated caller, by name.
fn caller(ca: &CertificateAuthority, headers: &HeaderMap) -> Result<String, CaError> {
    let clients = &ca.ctx.config.ca.issuance_clients;
    if clients.is_empty() {
        return Err(CaError::Unauthorised(
            "the issuance API has no clients configured ([[ca.issuance_client]])".into(),
        ));
    }
    let callers = clients.iter().map(|c| (c.name.as_str(), &c.token));
    match eid_core::http::bearer_caller(headers, callers) {
        Ok(name) => Ok(format!("service:{name}")),
        Err(BearerRefusal::Missing) => {
            Err(CaError::Unauthorised("a bearer token is required".into()))
        }
        Err(BearerRefusal::Unknown) => Err(CaError::Unauthorised(
            "the bearer token is not an issuance client's".into(),
        )),
    }
}

async fn issue(
    State(ca): State<CertificateAuthority>,
    headers: HeaderMap,
    body: Result<Json<IssueBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, CaError> {
    let requested_by = acting_for(&caller(&ca, &headers)?, &headers)?;
    let Json(body) = body.map_err(|e| CaError::BadRequest(e.body_text()))?;
    let holder = body.holder()?;
    let csr_bytes = body.csr.into_bytes();
    let key_evidence = match body.key_evidence {
        Some(evidence) => {
            // The RA vouches for the key in the request it sends.
            let request = csr::decode(&csr_bytes)?;
            let spki = der::Encode::to_der(&request.info.public_key)
                .map_err(|e| CaError::encoding("public key", e))?;
            Some(KeyEvidence {
                public_key: PublicKey::from_der(&spki)?,
                qscd: QscdEvidence {
                    token_class: evidence.token_class,
                    role: evidence.role,
                    attributes: evidence.attributes,
                },
            })
        }
        None => None,
    };
    let issued = ca
        .issue(IssueRequest {
            profile: Profile::parse(&body.profile)?,
            csr: csr_bytes,
            holder,
            requested_by,
            key_evidence,
        })
        .await?;
    let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &issued.der)
        .map_err(|e| CaError::encoding("certificate", e))?;
    // 201 for a new certificate; 200 for the one an identical earlier request got
    // (a retry whose answer was lost).
    Ok((
        if issued.repeated {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        Json(serde_json::json!({
            "serial": issued.serial.to_hex(),
            "profile": issued.profile.name(),
            "certificate": pem,
        })),
    )
        .into_response())
}

/// `?national_id=` of the RA's listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolderQuery {
    national_id: String,
}

/// The registration authority's view of a citizen's certificates (serial, profile,
/// end of validity, status), newest first.
async fn certificates_of(
    State(ca): State<CertificateAuthority>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<HolderQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, CaError> {
    caller(&ca, &headers)?;
    let axum::extract::Query(query) = query.map_err(|e| CaError::BadRequest(e.body_text()))?;
    let national_id = NationalId::new(&query.national_id)?;
    let certificates: Vec<_> = ca
        .certificates_of(national_id.as_str())
        .await?
        .into_iter()
        .map(|c| {
            serde_json::json!({
                "serial": c.serial,
                "profile": c.profile,
                "not_after": c.not_after,
                "status": c.status,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "certificates": certificates })).into_response())
}

/// The registration authority's status change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    /// An RFC 5280 reason name (revoke), `certificateHold` (suspend) or `resume`.
    change: String,
}

/// Revokes, suspends or resumes one certificate for the registration authority, which
/// is named in the audit event beside the desk actor it sends (`X-Eid-Actor`).
async fn change_status(
    State(ca): State<CertificateAuthority>,
    headers: HeaderMap,
    Path(serial): Path<String>,
    body: Result<Json<StatusBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, CaError> {
    let caller = caller(&ca, &headers)?;
    let Json(body) = body.map_err(|e| CaError::BadRequest(e.body_text()))?;
    let serial = CertificateSerial::parse(&serial)?;
    let change = StatusChange::parse(&body.change)?;
    let actor = acting_for(&caller, &headers)?;
    let changed = ca.change_status(&serial, change, &actor).await?;
    Ok(Json(serde_json::json!({
        "serial": changed.serial.to_hex(),
        "reason": changed.reason.map(|r| r.name()),
    }))
    .into_response())
}

/// The audit actor of an RA call: the service caller, and the person at the desk it
/// acts for when it names one (`X-Eid-Actor`, at most 200 printable characters).
fn acting_for(caller: &str, headers: &HeaderMap) -> Result<String, CaError> {
    match headers.get("x-eid-actor") {
        None => Ok(caller.to_owned()),
        Some(value) => {
            let actor = value
                .to_str()
                .ok()
                .filter(|a| {
                    !a.is_empty() && a.len() <= 200 && a.bytes().all(|b| b.is_ascii_graphic())
                })
                .ok_or_else(|| {
                    CaError::BadRequest(
                        "X-Eid-Actor must be 1-200 printable ASCII characters without spaces"
                            .into(),
                    )
                })?;
            Ok(format!("{actor} via {caller}"))
        }
    }
}

async fn ca_certificate(
    State(ca): State<CertificateAuthority>,
    Path(file): Path<String>,
) -> Response {
    let role = file.strip_suffix(".crt").and_then(CaRole::parse);
    match role.and_then(|role| ca.hierarchy.get(role).ok()) {
        Some(authority) => (
            [
                (header::CONTENT_TYPE, "application/pkix-cert"),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            authority.der.clone(),
        )
            .into_response(),
        None => Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no CA certificate {file:?}; known: {}", role_list()),
        )
        .into_response(),
    }
}

fn role_list() -> String {
    CaRole::ALL
        .iter()
        .map(|r| format!("{}.crt", r.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// RFC 5019 §5 caching headers for a cacheable OCSP answer; `no-store` otherwise.
fn ocsp_response(answer: OcspAnswer, now: time::OffsetDateTime) -> Response {
    let mut response = (
        [(header::CONTENT_TYPE, "application/ocsp-response")],
        axum::body::Bytes::from_owner(answer.body),
    )
        .into_response();
    let headers = response.headers_mut();
    match answer.cache {
        Some(info) => {
            let max_age = (info.next_update - now).whole_seconds().max(0);
            let pairs = [
                (header::LAST_MODIFIED, info.last_modified.as_str()),
                (header::EXPIRES, info.expires.as_str()),
                (header::ETAG, info.etag.as_str()),
            ];
            for (name, value) in pairs {
                if let Ok(value) = header::HeaderValue::from_str(value) {
                    headers.insert(name, value);
                }
            }
            if let Ok(value) = header::HeaderValue::from_str(&format!(
                "max-age={max_age}, public, no-transform, must-revalidate"
            )) {
                headers.insert(header::CACHE_CONTROL, value);
            }
        }
        None => {
            headers.insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
        }
    }
    response
}

async fn ocsp_post(State(ca): State<CertificateAuthority>, body: axum::body::Bytes) -> Response {
    let answer = ca.respond_ocsp(&body).await;
    ocsp_response(answer, ca.ctx.clock.now())
}

async fn ocsp_get(
    State(ca): State<CertificateAuthority>,
    Path((_issuer, request)): Path<(String, String)>,
) -> Response {
    let answer = match ocsp::parse_get_path(&request) {
        Ok(der) => ca.respond_ocsp(&der).await,
        Err(e) => OcspAnswer {
            body: ocsp::error_response(e.response_status()).into(),
            cache: None,
        },
    };
    ocsp_response(answer, ca.ctx.clock.now())
}

async fn crl(
    State(ca): State<CertificateAuthority>,
    Path(file): Path<String>,
) -> Result<Response, CaError> {
    let Some((issuer, kind)) = CrlKind::parse_file_name(&file) else {
        return Ok(Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!(
                "no CRL {file:?}; published: root.crl, citizen-auth-ca.crl, \
                 citizen-auth-ca-delta.crl, citizen-sign-ca.crl, citizen-sign-ca-delta.crl"
            ),
        )
        .into_response());
    };
    let published = ca.current_crl(issuer, kind).await?;
    let max_age = (published.next_update - ca.ctx.clock.now())
        .whole_seconds()
        .max(0);
    Ok((
        [
            (header::CONTENT_TYPE, "application/pkix-crl".to_owned()),
            (
                header::CACHE_CONTROL,
                format!("max-age={max_age}, public, no-transform"),
            ),
            (
                header::LAST_MODIFIED,
                httpdate::fmt_http_date(published.this_update.into()),
            ),
        ],
        published.der,
    )
        .into_response())
}

/// Makes the responder re-read the revocation epoch now: `eid ca revoke` (another
/// process) calls it before returning, so the server never answers from a cache the
/// change made stale. It takes no input and drops the cache only if the epoch moved.
async fn revocation_sync(State(ca): State<CertificateAuthority>) -> Result<StatusCode, CaError> {
    ca.sync_revocations().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The routes, before the shared `/healthz` and `/metrics`.
pub(crate) fn routes(ca: &CertificateAuthority) -> Router {
    Router::new()
        .route("/ca/{file}", get(ca_certificate))
        .route("/crl/{file}", get(crl))
        .route("/ocsp", post(ocsp_post))
        .route("/ocsp/{issuer}", post(ocsp_post))
        .route("/ocsp/{issuer}/{*request}", get(ocsp_get))
        // Bodies past the OCSP limit reach the parser, which answers malformedRequest;
        // past this, HTTP answers 413.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .route("/api/v1/certificates", post(issue).get(certificates_of))
        .route("/api/v1/certificates/{serial}/status", post(change_status))
        .route("/internal/revocation-sync", post(revocation_sync))
        .with_state(ca.clone())
}
