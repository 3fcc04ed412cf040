//! The CSC API v2 over HTTP: JSON POSTs under `/csc/v2/`, errors as the API defines
//! them ([`CscError`]). Both v2 parameter names and the v1 names that clients still
//! send (`hash`, `hashAlgo`, `PIN`) are read.

use axum::{
    Json, Router,
    extract::{State, rejection::JsonRejection},
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
    routing::post,
};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use super::{
    AuthorizeRequest, Csc, CscError, SIGN_ALGORITHMS, SignHashRequest, decode_hash, token::Access,
};

/// The largest CSC request (a batch of hashes, never a document).
const MAX_BODY: usize = 256 * 1024;

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, CscError> {
    body.map(|Json(v)| v)
        .map_err(|e| CscError::InvalidRequest(e.body_text()))
}

async fn access(csc: &Csc, headers: &HeaderMap) -> Result<Access, CscError> {
    let token = eid_core::http::bearer_token(headers).ok_or_else(|| {
        CscError::InvalidToken("an access token is required (Authorization: Bearer)".into())
    })?;
    csc.access(token).await
}

/// A request's list of hashes, under its v2 name or its v1 one.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HashList {
    hashes: Option<Vec<String>>,
    hash: Option<Vec<String>>,
}

impl HashList {
    fn decoded(self) -> Result<Vec<Vec<u8>>, CscError> {
        self.hashes
            .or(self.hash)
            .unwrap_or_default()
            .iter()
            .map(|h| decode_hash(h))
            .collect()
    }
}

/// A request's hash algorithm OID, under its v2 name or its v1 one.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HashAlgorithmField {
    #[serde(rename = "hashAlgorithmOID")]
    hash_algorithm_oid: Option<String>,
    #[serde(rename = "hashAlgo")]
    hash_algo: Option<String>,
}

impl HashAlgorithmField {
    fn required(self) -> Result<String, CscError> {
        self.hash_algorithm_oid
            .or(self.hash_algo)
            .ok_or_else(|| CscError::InvalidRequest("missing parameter hashAlgorithmOID".into()))
    }
}

fn required(value: Option<String>, name: &str) -> Result<String, CscError> {
    value.filter(|v| !v.is_empty()).ok_or_else(|| {
        CscError::InvalidRequest(format!("missing (or invalid type) string parameter {name}"))
    })
}

/// `info`: the service, without authentication.
async fn info(State(csc): State<Csc>) -> Response {
    let ctx = csc.inner.signatures.context();
    let config = &ctx.config.signing.csc;
    Json(json!({
        "specs": "2.0.0.2",
        "name": format!("{} remote signing", ctx.config.ca.organization),
        "logo": format!("{}/favicon.ico", ctx.config.signing.public_url),
        "region": ctx.config.ca.country,
        "lang": "en-US",
        "description": "Qualified electronic signatures with keys held on the service's HSM",
        "authType": ["oauth2code"],
        "oauth2": csc.issuer(),
        "oauth2Issuer": csc.issuer(),
        "asynchronousOperationMode": false,
        "methods": [
            "info", "credentials/list", "credentials/info", "credentials/authorize",
            "credentials/authorizeCheck", "signatures/signHash", "signatures/timestamp",
        ],
        "validationInfo": false,
        "signAlgorithms": { "algos": SIGN_ALGORITHMS },
        "signature_formats": { "formats": [] },
        "conformance_levels": [],
        "multisign": config.max_signatures,
    }))
    .into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListBody {
    #[serde(rename = "userID")]
    user_id: Option<String>,
    #[serde(rename = "credentialInfo")]
    credential_info: bool,
    certificates: Option<String>,
    #[serde(rename = "certInfo")]
    cert_info: bool,
}

async fn list(
    State(csc): State<Csc>,
    headers: HeaderMap,
    request: Result<Json<ListBody>, JsonRejection>,
) -> Result<Response, CscError> {
    let access = access(&csc, &headers).await?;
    let request = body(request)?;
    if request.user_id.is_some() {
        return Err(CscError::InvalidRequest(
            "userID must not be given: the user is the access token's".into(),
        ));
    }
    let describe = request.credential_info.then(|| {
        (
            request.certificates.as_deref().unwrap_or("single"),
            request.cert_info,
        )
    });
    let (ids, infos) = csc.list(&access, describe).await?;
    let mut answer = json!({ "credentialIDs": ids });
    if request.credential_info {
        answer["credentialInfos"] = infos.into();
    }
    Ok(Json(answer).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InfoBody {
    #[serde(rename = "credentialID")]
    credential_id: Option<String>,
    certificates: Option<String>,
    #[serde(rename = "certInfo")]
    cert_info: bool,
}

async fn credential_info(
    State(csc): State<Csc>,
    headers: HeaderMap,
    request: Result<Json<InfoBody>, JsonRejection>,
) -> Result<Response, CscError> {
    let access = access(&csc, &headers).await?;
    let request = body(request)?;
    let id = required(request.credential_id, "credentialID")?;
    let certificates = request.certificates.as_deref().unwrap_or("single");
    Ok(Json(
        csc.info(&access, &id, certificates, request.cert_info)
            .await?,
    )
    .into_response())
}

#[derive(Debug, Deserialize)]
struct AuthData {
    id: String,
    value: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthorizeBody {
    #[serde(rename = "credentialID")]
    credential_id: Option<String>,
    #[serde(rename = "numSignatures")]
    num_signatures: Option<u32>,
    #[serde(flatten)]
    hashes: HashList,
    #[serde(flatten)]
    algorithm: HashAlgorithmField,
    #[serde(rename = "authData")]
    auth_data: Option<Vec<AuthData>>,
    #[serde(rename = "PIN")]
    pin: Option<String>,
    #[serde(rename = "OTP")]
    otp: Option<String>,
}

impl std::fmt::Debug for AuthorizeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizeBody")
            .field("credential_id", &self.credential_id)
            .finish_non_exhaustive()
    }
}

async fn authorize(
    State(csc): State<Csc>,
    headers: HeaderMap,
    request: Result<Json<AuthorizeBody>, JsonRejection>,
) -> Result<Response, CscError> {
    let access = access(&csc, &headers).await?;
    let request = body(request)?;
    if request.otp.is_some() {
        return Err(CscError::InvalidRequest(
            "this credential is authorised with its PIN, not an OTP".into(),
        ));
    }
    let mut pin = request.pin.map(SecretString::from);
    for item in request.auth_data.unwrap_or_default() {
        match item.id.as_str() {
            "PIN" => pin = Some(SecretString::from(item.value)),
            other => {
                return Err(CscError::InvalidRequest(format!(
                    "authData `{other}` is not an authentication object of this credential (PIN)"
                )));
            }
        }
    }
    let hashes = request.hashes.decoded()?;
    if hashes.is_empty() {
        return Err(CscError::InvalidRequest(
            "missing parameter hashes: this service authorises exact hashes only (SCAL2)".into(),
        ));
    }
    let hash_algorithm = request.algorithm.required()?;
    let request = AuthorizeRequest {
        credential_id: required(request.credential_id, "credentialID")?,
        num_signatures: request.num_signatures.ok_or_else(|| {
            CscError::InvalidRequest(
                "missing (or invalid type) integer parameter numSignatures".into(),
            )
        })?,
        hashes,
        hash_algorithm,
        pin,
    };
    let (sad, expires_in) = csc.authorize(&access, request).await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "SAD": sad, "expiresIn": expires_in })),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CheckBody {
    #[serde(rename = "credentialID")]
    credential_id: Option<String>,
    #[serde(rename = "SAD")]
    sad: Option<String>,
}

async fn authorize_check(
    State(csc): State<Csc>,
    headers: HeaderMap,
    request: Result<Json<CheckBody>, JsonRejection>,
) -> Result<Response, CscError> {
    let access = access(&csc, &headers).await?;
    let request = body(request)?;
    let id = required(request.credential_id, "credentialID")?;
    let sad = required(request.sad, "SAD")?;
    Ok(Json(csc.authorize_check(&access, &id, &sad).await?).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SignHashBody {
    #[serde(rename = "credentialID")]
    credential_id: Option<String>,
    #[serde(rename = "SAD")]
    sad: Option<String>,
    #[serde(flatten)]
    hashes: HashList,
    #[serde(flatten)]
    algorithm: HashAlgorithmField,
    #[serde(rename = "signAlgo")]
    sign_algo: Option<String>,
    #[serde(rename = "signAlgoParams")]
    sign_algo_params: Option<String>,
    #[serde(rename = "operationMode")]
    operation_mode: Option<String>,
}

async fn sign_hash(
    State(csc): State<Csc>,
    headers: HeaderMap,
    request: Result<Json<SignHashBody>, JsonRejection>,
) -> Result<Response, CscError> {
    let access = access(&csc, &headers).await?;
    let request = body(request)?;
    if request.operation_mode.as_deref().is_some_and(|m| m != "S") {
        return Err(CscError::InvalidRequest(
            "operationMode must be S: signatures are made synchronously".into(),
        ));
    }
    if request.sign_algo_params.is_some() {
        return Err(CscError::InvalidRequest(
            "signAlgoParams is not used with ECDSA".into(),
        ));
    }
    let request = SignHashRequest {
        credential_id: required(request.credential_id, "credentialID")?,
        sad: request.sad.filter(|s| !s.is_empty()),
        hashes: request.hashes.decoded()?,
        hash_algorithm: request.algorithm.required()?,
        sign_algorithm: required(request.sign_algo, "signAlgo")?,
    };
    let signatures = csc.sign_hash(&access, request).await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "signatures": signatures })),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TimestampBody {
    hash: Option<String>,
    #[serde(flatten)]
    algorithm: HashAlgorithmField,
    nonce: Option<String>,
}

async fn timestamp(
    State(csc): State<Csc>,
    headers: HeaderMap,
    request: Result<Json<TimestampBody>, JsonRejection>,
) -> Result<Response, CscError> {
    let access = access(&csc, &headers).await?;
    let request = body(request)?;
    let hash = decode_hash(&required(request.hash, "hash")?)?;
    let algorithm = request.algorithm.required()?;
    let nonce = request
        .nonce
        .map(|n| {
            hex::decode(n.trim()).map_err(|_| CscError::InvalidRequest("nonce is not hex".into()))
        })
        .transpose()?;
    let token = csc
        .timestamp(&access, &hash, &algorithm, nonce.as_deref())
        .await?;
    use base64ct::Encoding;
    Ok(Json(json!({ "timestamp": base64ct::Base64::encode_string(&token) })).into_response())
}

async fn not_found() -> CscError {
    CscError::InvalidRequest("unknown CSC method".into())
}

/// The `/csc/v2/` routes.
pub(crate) fn routes(csc: &Csc) -> Router {
    Router::new()
        .route("/csc/v2/info", post(info).get(info))
        .route("/csc/v2/credentials/list", post(list))
        .route("/csc/v2/credentials/info", post(credential_info))
        .route("/csc/v2/credentials/authorize", post(authorize))
        .route("/csc/v2/credentials/authorizeCheck", post(authorize_check))
        .route("/csc/v2/signatures/signHash", post(sign_hash))
        .route("/csc/v2/signatures/timestamp", post(timestamp))
        .route("/csc/v2/{*rest}", post(not_found).get(not_found))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(csc.clone())
}
