//! The provider's HTTP surface. Handlers parse, call the protocol functions, and map
//! results to responses: OAuth errors as JSON (or redirects, or error pages when the
//! redirect URI is not trusted), pages as HTML with strict security headers.

use eid_core::AuditEvent;
use eid_core::web::{cookie, csrf_token, escape, html, no_store, see_other};

use axum::{
    Extension, Form, Json, Router,
    extract::{Path, Query, State, rejection::FormRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{
    Idp, IdpError, Level, OAuthError,
    authorize::{self, AuthorizationRequest, Parameters},
    card,
    clients::{self, Client, sha256_hex},
    flow::{self, Authentication, Session},
    jose::{self, Algorithm, Parsed, b64},
    pages::{self, Lang},
    random_token, tokens,
};

mod mobile;

const BROWSER_COOKIE: &str = "eid_browser";
const SESSION_COOKIE: &str = "eid_session";
const PAR_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
const PAR_LIFETIME_SECS: i64 = 60;
const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

type Pairs = Vec<(String, String)>;

pub(crate) fn routes(idp: &Idp) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize_get).post(authorize_post))
        .route("/par", post(par))
        .route("/backchannel/authenticate", post(backchannel_authenticate))
        .route("/token", post(token))
        .route("/userinfo", get(userinfo_get).post(userinfo_post))
        .route("/revoke", post(revoke))
        .route("/introspect", post(introspect))
        .route("/login/{id}", get(login_page))
        .route("/login/{id}/done", get(login_done))
        .route("/consent/{id}", get(consent_page).post(consent_post))
        .route("/logout", get(logout_get).post(logout_post))
        .route("/login/{id}/passkey/start", post(passkey_login_start))
        .route("/login/{id}/passkey/finish", post(passkey_login_finish))
        .route("/account", get(account_page))
        .route("/account/login", get(account_login))
        .route("/account/passkeys/start", post(passkey_add_start))
        .route("/account/passkeys/finish", post(passkey_add_finish))
        .route("/account/passkeys/remove", post(passkey_remove))
        .route("/account/consents/withdraw", post(consent_withdraw))
        .route("/account/certificates/suspend", post(certificate_suspend))
        .route("/static/passkey.js", get(passkey_script))
        .merge(mobile::routes())
        .with_state(idp.clone())
}

// ---- Responses ---------------------------------------------------------------------

fn oauth_json(error: &OAuthError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (
        status,
        Json(json!({ "error": error.code, "error_description": error.description })),
    )
        .into_response();
    if error.code == "invalid_client" {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"eid\""),
        );
    }
    no_store(response)
}

fn bearer_error(error: &OAuthError) -> Response {
    let mut response = oauth_json(error);
    let challenge = format!(
        "Bearer error=\"{}\", error_description=\"{}\"",
        error.code,
        error.description.replace(['"', '\\'], "'")
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn lang_of(headers: &HeaderMap, ui_locales: Option<&str>) -> Lang {
    Lang::pick(
        ui_locales,
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

fn error_page(headers: &HeaderMap, status: StatusCode, message: &str) -> Response {
    html(status, pages::error(lang_of(headers, None), message))
}

fn internal(headers: &HeaderMap, error: &IdpError) -> Response {
    tracing::error!(%error, "idp request failed");
    error_page(
        headers,
        StatusCode::INTERNAL_SERVER_ERROR,
        "The login service could not complete the request. It has been logged; please try again.",
    )
}

// ---- Cookies -----------------------------------------------------------------------

fn set_cookie(response: &mut Response, idp: &Idp, name: &str, value: &str, max_age: Option<u64>) {
    let secure = idp.ctx().config.idp.issuer.starts_with("https://");
    eid_core::web::set_cookie(response, name, value, secure, max_age);
}

// ---- Discovery and keys --------------------------------------------------------------

async fn discovery(State(idp): State<Idp>) -> Response {
    let config = &idp.ctx().config.idp;
    let issuer = &config.issuer;
    let mut body = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "jwks_uri": format!("{issuer}/jwks"),
        "pushed_authorization_request_endpoint": format!("{issuer}/par"),
        "require_pushed_authorization_requests": false,
        "revocation_endpoint": format!("{issuer}/revoke"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "end_session_endpoint": format!("{issuer}/logout"),
        "scopes_supported": clients::SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["pairwise", "public"],
        // The provider's algorithm first; the others for clients registered for them.
        "id_token_signing_alg_values_supported": id_token_algs(idp.keys().algorithm()),
        "token_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "PS256"],
        "revocation_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "introspection_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "code_challenge_methods_supported": ["S256"],
        "acr_values_supported": config.acr,
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr",
            "amr", "sid", "at_hash", "given_name", "family_name", "name", "birthdate",
            "national_id", "email", "phone_number"],
        "claims_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "ui_locales_supported": ["en", "es"],
        "claim_types_supported": ["normal"],
        "dpop_signing_alg_values_supported": ["ES256", "PS256"],
        // RFC 9396 10: signing authorisations of the CSC API v2 (8.4).
        "authorization_details_types_supported":
            [crate::authorization_details::CREDENTIAL_TYPE],
    });
    // CIBA is backed by mobile ID: offered only when the gateway is configured.
    if idp.mobile_id_enabled() {
        body["backchannel_authentication_endpoint"] =
            format!("{issuer}/backchannel/authenticate").into();
        body["backchannel_token_delivery_modes_supported"] = json!(["poll", "ping"]);
        body["backchannel_user_code_parameter_supported"] = false.into();
        if let Some(grants) = body["grant_types_supported"].as_array_mut() {
            grants.push(clients::CIBA_GRANT.into());
        }
    }
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

fn id_token_algs(primary: Algorithm) -> Vec<&'static str> {
    let mut algs = vec![primary.name()];
    for alg in [Algorithm::Es256, Algorithm::Ps256, Algorithm::Rs256] {
        if alg != primary {
            algs.push(alg.name());
        }
    }
    algs
}

async fn jwks(State(idp): State<Idp>) -> Response {
    let mut response = Json(idp.keys().jwks()).into_response();
    // New keys are published key_publish_secs before use; caching for less keeps every
    // relying party ahead of the switch.
    let max_age = (idp.ctx().config.idp.key_publish_secs / 2).max(1);
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

// ---- Authorization -------------------------------------------------------------------

async fn authorize_get(
    State(idp): State<Idp>,
    headers: HeaderMap,
    query: Result<Query<Pairs>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match query {
        Ok(Query(pairs)) => authorize(&idp, &headers, pairs).await,
        Err(e) => error_page(&headers, StatusCode::BAD_REQUEST, &e.body_text()),
    }
}

async fn authorize_post(
    State(idp): State<Idp>,
    headers: HeaderMap,
    form: Result<Form<Pairs>, FormRejection>,
) -> Response {
    match form {
        Ok(Form(pairs)) => authorize(&idp, &headers, pairs).await,
        Err(e) => error_page(&headers, StatusCode::BAD_REQUEST, &e.body_text()),
    }
}

async fn pushed_request(
    idp: &Idp,
    client: &Client,
    request_uri: &str,
) -> Result<Parameters, OAuthError> {
    let invalid = || {
        OAuthError::invalid_request_uri(
            "request_uri is unknown, expired, already used or for another client",
        )
    };
    if !request_uri.starts_with(PAR_PREFIX) {
        return Err(OAuthError::request_uri_not_supported(
            "only request_uri values from this provider's PAR endpoint are accepted",
        ));
    }
    let now = idp.ctx().clock.now().unix_timestamp();
    let stored: Option<String> = sqlx::query_scalar(
        "UPDATE idp_pushed_request SET used_at = $1 WHERE request_uri = $2 AND client_id = $3 \
         AND used_at IS NULL AND expires_at > $1 RETURNING request",
    )
    .bind(now)
    .bind(request_uri)
    .bind(&client.client_id)
    .fetch_optional(idp.ctx().db.pool())
    .await
    .map_err(|e| OAuthError::from(crate::error::query("using a pushed request")(e)))?;
    let stored = stored.ok_or_else(invalid)?;
    serde_json::from_str(&stored).map_err(|_| invalid())
}

async fn authorize(idp: &Idp, headers: &HeaderMap, pairs: Pairs) -> Response {
    let params = match Parameters::collect(pairs) {
        Ok(p) => p,
        Err(e) => return error_page(headers, StatusCode::BAD_REQUEST, &e.description),
    };
    let Some(client_id) = params.get("client_id") else {
        return error_page(headers, StatusCode::BAD_REQUEST, "client_id is missing.");
    };
    let client = match idp.client(client_id).await {
        Ok(Some(client)) => client,
        Ok(None) => {
            return error_page(
                headers,
                StatusCode::BAD_REQUEST,
                "The service that sent you here is not registered with this login service.",
            );
        }
        Err(e) => return internal(headers, &e),
    };
    let (params, pushed) = match params.get("request_uri") {
        Some(uri) => match pushed_request(idp, &client, uri).await {
            Ok(pushed) => (pushed, true),
            Err(e) => return error_page(headers, StatusCode::BAD_REQUEST, &e.description),
        },
        None => (params, false),
    };
    let redirect_uri = match authorize::redirect_target(&client, &params) {
        Ok(uri) => uri,
        // Never redirect to an unverified URI (OpenID Connect Core 3.1.2.4).
        Err(e) => return error_page(headers, StatusCode::BAD_REQUEST, &e.description),
    };
    let issuer = &idp.ctx().config.idp.issuer;
    let state = params.get("state").map(str::to_owned);
    let refuse = |error: OAuthError| {
        see_other(&authorize::response_url(
            &redirect_uri,
            issuer,
            state.as_deref(),
            Err(&error),
        ))
    };
    if client.metadata.require_par && !pushed {
        return refuse(OAuthError::invalid_request(
            "this client must push its authorization requests (PAR, RFC 9126)",
        ));
    }
    let request = match authorize::check(
        &client,
        &params,
        redirect_uri.clone(),
        &idp.ctx().config.idp.acr,
    ) {
        Ok(request) => request,
        Err(error) => return refuse(error),
    };
    match proceed(idp, headers, &request).await {
        Ok(response) => response,
        Err(e) => internal(headers, &e),
    }
}

fn session_satisfies(idp: &Idp, session: &Session, request: &AuthorizationRequest) -> bool {
    if request.prompt.login || session.authentication.level < request.required_level {
        return false;
    }
    match request.max_age {
        Some(max_age) => {
            let now = idp.ctx().clock.now().unix_timestamp();
            now - session.authentication.auth_time <= i64::try_from(max_age).unwrap_or(i64::MAX)
        }
        None => true,
    }
}

async fn consent_needed(
    idp: &Idp,
    session: &Session,
    request: &AuthorizationRequest,
) -> Result<bool, IdpError> {
    let Some(shared) = shared_scopes(request) else {
        return Ok(false);
    };
    if request.prompt.consent {
        return Ok(true);
    }
    Ok(!flow::consent_covers(idp.ctx(), &session.citizen_id, &request.client_id, &shared).await?)
}

/// The scopes beyond `openid` a request shares and the citizen must have allowed; `None`
/// when no consent is needed for it (the provider's own pages, or `openid` alone, which
/// shares only a pairwise identifier). `prompt=consent` asks even if allowed before.
fn shared_scopes(request: &AuthorizationRequest) -> Option<Vec<String>> {
    if request.client_id == crate::ACCOUNT_CLIENT {
        return None;
    }
    let shared: Vec<String> = request
        .scopes
        .iter()
        .filter(|s| s.as_str() != "openid")
        .cloned()
        .collect();
    (request.prompt.consent || !shared.is_empty()).then_some(shared)
}

/// [`consent_needed`] with what the citizen allowed already read.
fn consent_needed_given(request: &AuthorizationRequest, allowed: &[String]) -> bool {
    shared_scopes(request)
        .is_some_and(|shared| request.prompt.consent || !shared.iter().all(|s| allowed.contains(s)))
}

/// After a checked request: use the session if it is good enough, else log in; ask for
/// consent if needed; issue the code.
async fn proceed(
    idp: &Idp,
    headers: &HeaderMap,
    request: &AuthorizationRequest,
) -> Result<Response, IdpError> {
    let issuer = &idp.ctx().config.idp.issuer;
    let refuse = |error: OAuthError| {
        see_other(&authorize::response_url(
            &request.redirect_uri,
            issuer,
            request.state.as_deref(),
            Err(&error),
        ))
    };
    // The session and the citizen's consent to this client in one read.
    let session = match cookie(headers, SESSION_COOKIE) {
        Some(value) => flow::session_and_consent(idp.ctx(), &value, &request.client_id).await?,
        None => None,
    };
    let usable = session.filter(|(s, _)| session_satisfies(idp, s, request));
    let (browser, new_browser) = match cookie(headers, BROWSER_COOKIE) {
        Some(value) => (value, false),
        None => (random_token(), true),
    };
    let mut response = match usable {
        None if request.prompt.none => {
            return Ok(refuse(OAuthError::login_required(
                "the citizen is not logged in at the level asked for, and prompt=none forbids asking",
            )));
        }
        None => {
            let id = flow::start_interaction(idp.ctx(), &browser, request, "login", None).await?;
            see_other(&format!("{issuer}/login/{id}"))
        }
        Some((session, allowed)) => {
            if consent_needed_given(request, &allowed) {
                if request.prompt.none {
                    return Ok(refuse(OAuthError::consent_required(
                        "the citizen has not allowed this client these scopes, and prompt=none forbids asking",
                    )));
                }
                let id = flow::start_interaction(
                    idp.ctx(),
                    &browser,
                    request,
                    "consent",
                    Some(&session),
                )
                .await?;
                see_other(&format!("{issuer}/consent/{id}"))
            } else {
                see_other(&complete(idp, request, &session).await?)
            }
        }
    };
    if new_browser {
        set_cookie(&mut response, idp, BROWSER_COOKIE, &browser, None);
    }
    Ok(response)
}

// ---- Login and consent pages -----------------------------------------------------------

async fn login_page(
    State(idp): State<Idp>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<LoginQuery>,
) -> Response {
    let interaction = match flow::interaction(idp.ctx(), &id).await {
        Ok(Some(i)) if i.state == "login" => i,
        Ok(_) => {
            return error_page(
                &headers,
                StatusCode::NOT_FOUND,
                "This login has expired or is already finished.",
            );
        }
        Err(e) => return internal(&headers, &e),
    };
    let client = match idp.client(&interaction.request.client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return error_page(
                &headers,
                StatusCode::NOT_FOUND,
                "The service is no longer registered.",
            );
        }
        Err(e) => return internal(&headers, &e),
    };
    let lang = lang_of(&headers, interaction.request.ui_locales.as_deref());
    let config = &idp.ctx().config.idp;
    let passkey_start = format!("/login/{id}/passkey/start");
    let passkey_finish = format!("/login/{id}/passkey/finish");
    let passkey = (idp.webauthn().is_some()
        && interaction.request.required_level <= Level::Substantial)
        .then_some((passkey_start.as_str(), passkey_finish.as_str()));
    let cancel = cancel_url(&idp, &interaction.request);
    let mobile_action = format!("/login/{id}/mobile-id");
    let csrf = cookie(&headers, BROWSER_COOKIE)
        .map(|browser| csrf_token(&browser, &mobile_action))
        .unwrap_or_default();
    let mobile = idp.mobile_id_enabled().then(|| pages::MobileForm {
        action: &mobile_action,
        csrf: &csrf,
        error: query.mobile_error.as_deref(),
    });
    html(
        StatusCode::OK,
        pages::login(
            lang,
            &client.name,
            interaction.request.required_level.name(),
            &format!("{}/card-login/{id}", config.card_url),
            &cancel,
            passkey,
            mobile.as_ref(),
        ),
    )
}

/// Where Cancel on a login page goes: the client, with `access_denied`.
fn cancel_url(idp: &Idp, request: &AuthorizationRequest) -> String {
    authorize::response_url(
        &request.redirect_uri,
        &idp.ctx().config.idp.issuer,
        request.state.as_deref(),
        Err(&OAuthError::access_denied(
            "the citizen cancelled the login",
        )),
    )
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    mobile_error: Option<String>,
}

#[derive(serde::Deserialize)]
struct Handoff {
    handoff: String,
}

async fn login_done(
    State(idp): State<Idp>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(Handoff { handoff }): Query<Handoff>,
) -> Response {
    let Some(browser) = cookie(&headers, BROWSER_COOKIE) else {
        return error_page(
            &headers,
            StatusCode::BAD_REQUEST,
            "This browser did not start the login (no login cookie). Start again from the service.",
        );
    };
    let result = async {
        if !flow::take_handoff(idp.ctx(), &id, &browser, &handoff).await? {
            return Ok(None);
        }
        let Some(interaction) = flow::interaction(idp.ctx(), &id).await? else {
            return Ok(None);
        };
        let (Some(citizen_id), Some(authentication)) =
            (&interaction.citizen_id, &interaction.authentication)
        else {
            return Ok(None);
        };
        let previous = cookie(&headers, SESSION_COOKIE);
        let (session, session_cookie) =
            flow::start_session(idp.ctx(), citizen_id, authentication, previous.as_deref()).await?;
        Ok::<_, IdpError>(Some((interaction, session, session_cookie)))
    }
    .await;
    let (interaction, session, session_cookie) = match result {
        Ok(Some(found)) => found,
        Ok(None) => {
            return error_page(
                &headers,
                StatusCode::BAD_REQUEST,
                "This login cannot be completed in this browser, or it was already completed.",
            );
        }
        Err(e) => return internal(&headers, &e),
    };
    let mut response =
        match after_login(&idp, &interaction.id, &interaction.request, &session).await {
            Ok(location) => see_other(&location),
            Err(e) => return internal(&headers, &e),
        };
    set_cookie(&mut response, &idp, SESSION_COOKIE, &session_cookie, None);
    response
}

/// Ends a login made in this browser's own requests (passkey, mobile ID): records it
/// against the interaction, starts the session, and says where the browser goes next
/// and the session cookie to set. `None` if the interaction was no longer waiting.
async fn finish_login(
    idp: &Idp,
    headers: &HeaderMap,
    interaction: &flow::Interaction,
    browser: &str,
    citizen_id: &str,
    authentication: &Authentication,
) -> Result<Option<(String, String)>, IdpError> {
    let ctx = idp.ctx();
    let id = &interaction.id;
    let Some(handoff) = flow::record_login(ctx, id, citizen_id, authentication).await? else {
        return Ok(None);
    };
    if !flow::take_handoff(ctx, id, browser, &handoff).await? {
        return Ok(None);
    }
    let previous = cookie(headers, SESSION_COOKIE);
    let (session, session_cookie) =
        flow::start_session(ctx, citizen_id, authentication, previous.as_deref()).await?;
    let location = after_login(idp, id, &interaction.request, &session).await?;
    Ok(Some((location, session_cookie)))
}

/// Where the browser goes once the citizen has logged in for an interaction.
async fn after_login(
    idp: &Idp,
    id: &str,
    request: &AuthorizationRequest,
    session: &Session,
) -> Result<String, IdpError> {
    let issuer = &idp.ctx().config.idp.issuer;
    if consent_needed(idp, session, request).await? {
        return Ok(format!("{issuer}/consent/{id}"));
    }
    if !flow::finish_interaction(idp.ctx(), id, "consent", "done").await? {
        return Err(IdpError::NotFound("interaction already finished".into()));
    }
    complete(idp, request, session).await
}

/// The end of a successful authorization: the code back to the client, or, for the
/// provider's own self-service pages, straight back to them (they use the session).
async fn complete(
    idp: &Idp,
    request: &AuthorizationRequest,
    session: &Session,
) -> Result<String, IdpError> {
    if request.client_id == crate::ACCOUNT_CLIENT {
        return Ok(request.redirect_uri.clone());
    }
    let code = flow::issue_code(idp.ctx(), request, session, Vec::new()).await?;
    Ok(authorize::response_url(
        &request.redirect_uri,
        &idp.ctx().config.idp.issuer,
        request.state.as_deref(),
        Ok(&code),
    ))
}

/// The interaction and session a consent page or form belongs to: both must be this
/// browser's, and the session's citizen the one who logged in for the interaction.
async fn consent_context(
    idp: &Idp,
    headers: &HeaderMap,
    id: &str,
) -> Result<Result<(flow::Interaction, Session, String), &'static str>, IdpError> {
    let Some(browser) = cookie(headers, BROWSER_COOKIE) else {
        return Ok(Err(
            "This browser did not start the login. Start again from the service.",
        ));
    };
    let Some(interaction) = flow::interaction(idp.ctx(), id).await? else {
        return Ok(Err(
            "This request has expired. Start again from the service.",
        ));
    };
    if interaction.state != "consent"
        || interaction.browser_sha256 != sha256_hex(browser.as_bytes())
    {
        return Ok(Err(
            "This request is already finished or belongs to another browser.",
        ));
    }
    let Some(session) = (match cookie(headers, SESSION_COOKIE) {
        Some(value) => flow::session(idp.ctx(), &value).await?,
        None => None,
    }) else {
        return Ok(Err(
            "You are not logged in any more. Start again from the service.",
        ));
    };
    if interaction.citizen_id.as_deref() != Some(session.citizen_id.as_str()) {
        return Ok(Err("This request was started by someone else."));
    }
    Ok(Ok((interaction, session, browser)))
}

async fn consent_page(
    State(idp): State<Idp>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (interaction, session, browser) = match consent_context(&idp, &headers, &id).await {
        Ok(Ok(found)) => found,
        Ok(Err(message)) => return error_page(&headers, StatusCode::BAD_REQUEST, message),
        Err(e) => return internal(&headers, &e),
    };
    let (client, citizen) = match (
        idp.client(&interaction.request.client_id).await,
        flow::citizen(idp.ctx(), &session.citizen_id).await,
    ) {
        (Ok(Some(client)), Ok(Some(citizen))) => (client, citizen),
        (Err(e), _) | (_, Err(e)) => return internal(&headers, &e),
        _ => {
            return error_page(
                &headers,
                StatusCode::NOT_FOUND,
                "The service is no longer registered.",
            );
        }
    };
    let lang = lang_of(&headers, interaction.request.ui_locales.as_deref());
    html(
        StatusCode::OK,
        pages::consent(
            lang,
            &client.name,
            &format!("{} {}", citizen.given_name, citizen.family_name),
            &interaction.request.scopes,
            interaction.request.credential(),
            &format!("{}/consent/{id}", idp.ctx().config.idp.issuer),
            &csrf_token(&browser, &id),
        ),
    )
}

#[derive(serde::Deserialize)]
struct ConsentForm {
    csrf: String,
    decision: String,
}

async fn consent_post(
    State(idp): State<Idp>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<ConsentForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return error_page(
            &headers,
            StatusCode::BAD_REQUEST,
            "The form was incomplete.",
        );
    };
    let (interaction, session, browser) = match consent_context(&idp, &headers, &id).await {
        Ok(Ok(found)) => found,
        Ok(Err(message)) => return error_page(&headers, StatusCode::BAD_REQUEST, message),
        Err(e) => return internal(&headers, &e),
    };
    if form.csrf != csrf_token(&browser, &id) {
        return error_page(
            &headers,
            StatusCode::FORBIDDEN,
            "The form did not come from this page (CSRF check failed).",
        );
    }
    let request = &interaction.request;
    let issuer = &idp.ctx().config.idp.issuer;
    let result = async {
        match form.decision.as_str() {
            "allow" => {
                let shared: Vec<String> = request
                    .scopes
                    .iter()
                    .filter(|s| s.as_str() != "openid")
                    .cloned()
                    .collect();
                if !flow::finish_interaction(idp.ctx(), &id, "consent", "done").await? {
                    return Ok(None);
                }
                if !shared.is_empty() {
                    flow::record_consent(
                        idp.ctx(),
                        &session.citizen_id,
                        &request.client_id,
                        &shared,
                    )
                    .await?;
                }
                // A signing authorisation is confirmed on this page every time: the
                // confirmation is recorded with the grant it makes.
                let confirmed = request
                    .credential()
                    .map(|credential| {
                        AuditEvent::new(
                            format!("citizen:{}", session.citizen_id),
                            "idp.consent.credential",
                            "client",
                            &request.client_id,
                        )
                        .details(flow::credential_audit(credential))
                    })
                    .into_iter()
                    .collect();
                let code = flow::issue_code(idp.ctx(), request, &session, confirmed).await?;
                Ok(Some(authorize::response_url(
                    &request.redirect_uri,
                    issuer,
                    request.state.as_deref(),
                    Ok(&code),
                )))
            }
            _ => {
                if !flow::finish_interaction(idp.ctx(), &id, "consent", "failed").await? {
                    return Ok(None);
                }
                Ok::<_, IdpError>(Some(authorize::response_url(
                    &request.redirect_uri,
                    issuer,
                    request.state.as_deref(),
                    Err(&OAuthError::access_denied("the citizen did not allow it")),
                )))
            }
        }
    }
    .await;
    match result {
        Ok(Some(location)) => see_other(&location),
        Ok(None) => error_page(
            &headers,
            StatusCode::CONFLICT,
            "This request is already finished.",
        ),
        Err(e) => internal(&headers, &e),
    }
}

// ---- Token endpoint and friends --------------------------------------------------------

fn form_params(form: Result<Form<Pairs>, FormRejection>) -> Result<Parameters, OAuthError> {
    let Form(pairs) = form.map_err(|e| {
        OAuthError::invalid_request(format!(
            "the body must be application/x-www-form-urlencoded: {}",
            e.body_text()
        ))
    })?;
    Parameters::collect(pairs)
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

async fn token(
    State(idp): State<Idp>,
    headers: HeaderMap,
    form: Result<Form<Pairs>, FormRejection>,
) -> Response {
    let result = async {
        let params = form_params(form)?;
        let proof = single_header(&headers, "dpop")?;
        tokens::token(&idp, &params, authorization(&headers), proof).await
    }
    .await;
    match result {
        Ok(body) => no_store(Json(body).into_response()),
        Err(error) => oauth_json(&error),
    }
}

async fn backchannel_authenticate(
    State(idp): State<Idp>,
    headers: HeaderMap,
    form: Result<Form<Pairs>, FormRejection>,
) -> Response {
    let result = async {
        if !idp.mobile_id_enabled() {
            return Err(OAuthError::invalid_request(
                "CIBA needs mobile ID, which this provider has not configured",
            ));
        }
        let params = form_params(form)?;
        crate::ciba::authenticate(&idp, &params, authorization(&headers)).await
    }
    .await;
    match result {
        Ok(body) => no_store(Json(body).into_response()),
        Err(error) => oauth_json(&error),
    }
}

async fn par(
    State(idp): State<Idp>,
    headers: HeaderMap,
    form: Result<Form<Pairs>, FormRejection>,
) -> Response {
    let result = async {
        let params = form_params(form)?;
        let endpoint = format!("{}/par", idp.ctx().config.idp.issuer);
        let client =
            tokens::authenticate_client(&idp, &params, authorization(&headers), &endpoint).await?;
        if params.get("request_uri").is_some() {
            return Err(OAuthError::invalid_request(
                "request_uri must not be pushed (RFC 9126 2.1)",
            ));
        }
        let mut request = params.clone();
        for name in ["client_secret", "client_assertion", "client_assertion_type"] {
            request.0.remove(name);
        }
        request
            .0
            .insert("client_id".into(), client.client_id.clone());
        let redirect_uri = authorize::redirect_target(&client, &request)?;
        authorize::check(&client, &request, redirect_uri, &idp.ctx().config.idp.acr)?;
        let request_uri = format!("{PAR_PREFIX}{}", random_token());
        let now = idp.ctx().clock.now().unix_timestamp();
        let stored = serde_json::to_string(&request).map_err(|e| IdpError::stored("request", e))?;
        sqlx::query(
            "INSERT INTO idp_pushed_request (request_uri, client_id, request, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&request_uri)
        .bind(&client.client_id)
        .bind(stored)
        .bind(now + PAR_LIFETIME_SECS)
        .execute(idp.ctx().db.pool())
        .await
        .map_err(crate::error::query("storing a pushed request"))?;
        Ok(json!({ "request_uri": request_uri, "expires_in": PAR_LIFETIME_SECS }))
    }
    .await;
    match result {
        Ok(body) => no_store((StatusCode::CREATED, Json(body)).into_response()),
        Err(error) => oauth_json(&error),
    }
}

/// A header that may appear at most once.
fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, OAuthError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => value
            .to_str()
            .map(Some)
            .map_err(|_| OAuthError::invalid_request(format!("the {name} header is not text"))),
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(format!(
            "the {name} header appears more than once"
        ))),
    }
}

/// The access token from the Authorization header, and whether its scheme is DPoP.
fn bearer(headers: &HeaderMap) -> Result<Option<(String, bool)>, OAuthError> {
    match authorization(headers) {
        Some(value) => {
            let (scheme, token) = value.split_once(' ').ok_or_else(|| {
                OAuthError::invalid_request("use the Bearer or DPoP authorization scheme")
            })?;
            let dpop = if scheme.eq_ignore_ascii_case("bearer") {
                false
            } else if scheme.eq_ignore_ascii_case("dpop") {
                true
            } else {
                return Err(OAuthError::invalid_request(
                    "use the Bearer or DPoP authorization scheme",
                ));
            };
            Ok(Some((token.trim().to_owned(), dpop)))
        }
        None => Ok(None),
    }
}

async fn userinfo_get(
    State(idp): State<Idp>,
    headers: HeaderMap,
    Query(query): Query<Pairs>,
) -> Response {
    if query.iter().any(|(name, _)| name == "access_token") {
        return bearer_error(&OAuthError::invalid_request(
            "access tokens are not accepted in the query string (RFC 6750 2.3, OAuth Security BCP)",
        ));
    }
    let result = async {
        let (token, dpop_scheme) =
            bearer(&headers)?.ok_or_else(|| OAuthError::invalid_token("no access token"))?;
        Ok((token, dpop_scheme))
    }
    .await;
    userinfo(&idp, &headers, "GET", result).await
}

/// Userinfo for a token taken from the request (or the error that taking it gave).
async fn userinfo(
    idp: &Idp,
    headers: &HeaderMap,
    method: &str,
    token: Result<(String, bool), OAuthError>,
) -> Response {
    let result = async {
        let (token, dpop_scheme) = token?;
        let url = format!("{}/userinfo", idp.ctx().config.idp.issuer);
        let presented = tokens::Presented {
            token: &token,
            dpop_scheme,
            proof: single_header(headers, "dpop")?,
            method,
            url: &url,
        };
        tokens::userinfo(idp, &presented).await
    }
    .await;
    match result {
        Ok(body) => no_store(Json(body).into_response()),
        Err(error) => bearer_error(&error),
    }
}

async fn userinfo_post(
    State(idp): State<Idp>,
    headers: HeaderMap,
    form: Result<Form<Pairs>, FormRejection>,
) -> Response {
    let result = async {
        let from_header = bearer(&headers)?;
        let params = match form {
            Ok(Form(pairs)) => Parameters::collect(pairs)?,
            Err(_) if from_header.is_some() => Parameters::default(),
            Err(e) => {
                return Err(OAuthError::invalid_request(format!(
                    "the body must be a form: {}",
                    e.body_text()
                )));
            }
        };
        let (token, dpop_scheme) = match (from_header, params.get("access_token")) {
            (Some(_), Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "send the access token once, in the header or the body",
                ));
            }
            (Some(found), None) => found,
            (None, Some(token)) => (token.to_owned(), false),
            (None, None) => return Err(OAuthError::invalid_token("no access token")),
        };
        Ok((token, dpop_scheme))
    }
    .await;
    userinfo(&idp, &headers, "POST", result).await
}

async fn revoke(
    State(idp): State<Idp>,
    headers: HeaderMap,
    form: Result<Form<Pairs>, FormRejection>,
) -> Response {
    let result = async {
        let params = form_params(form)?;
        let endpoint = format!("{}/revoke", idp.ctx().config.idp.issuer);
        let client =
            tokens::authenticate_client(&idp, &params, authorization(&headers), &endpoint).await?;
        let token = params
            .get("token")
            .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        tokens::revoke(&idp, &client, token).await
    }
    .await;
    match result {
        // RFC 7009 2.2: 200 whether or not the token was known.
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(error) => oauth_json(&error),
    }
}

async fn introspect(
    State(idp): State<Idp>,
    headers: HeaderMap,
    form: Result<Form<Pairs>, FormRejection>,
) -> Response {
    let result = async {
        let params = form_params(form)?;
        let endpoint = format!("{}/introspect", idp.ctx().config.idp.issuer);
        let client =
            tokens::authenticate_client(&idp, &params, authorization(&headers), &endpoint).await?;
        let token = params
            .get("token")
            .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        tokens::introspect(&idp, &client, token).await
    }
    .await;
    match result {
        Ok(body) => no_store(Json(body).into_response()),
        Err(error) => oauth_json(&error),
    }
}

// ---- Logout ----------------------------------------------------------------------------

/// The client an `id_token_hint` was issued to (expired hints are fine: OpenID Connect
/// RP-Initiated Logout 1.0, section 2).
fn hinted_client(idp: &Idp, hint: &str) -> Option<String> {
    let parsed = Parsed::new(hint).ok()?;
    let alg = parsed
        .algorithm(&[Algorithm::Es256, Algorithm::Ps256, Algorithm::Rs256])
        .ok()?;
    let (key_alg, key) = idp.keys().verifying_key(parsed.kid()?)?;
    if key_alg != alg || parsed.verify(alg, &key).is_err() {
        return None;
    }
    if parsed.claims.get("iss").and_then(Value::as_str)
        != Some(idp.ctx().config.idp.issuer.as_str())
    {
        return None;
    }
    match parsed.claims.get("aud") {
        Some(Value::String(aud)) => Some(aud.clone()),
        Some(Value::Array(list)) => list.first().and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

async fn logout_get(
    State(idp): State<Idp>,
    headers: HeaderMap,
    Query(pairs): Query<Pairs>,
) -> Response {
    let params = match Parameters::collect(pairs) {
        Ok(p) => p,
        Err(e) => return error_page(&headers, StatusCode::BAD_REQUEST, &e.description),
    };
    let lang = lang_of(&headers, params.get("ui_locales"));
    let Some(session_cookie) = cookie(&headers, SESSION_COOKIE) else {
        return logout_finish(&idp, &headers, &params).await;
    };
    let mut hidden = format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(&csrf_token(&session_cookie, "logout"))
    );
    for name in [
        "id_token_hint",
        "post_logout_redirect_uri",
        "state",
        "client_id",
        "ui_locales",
    ] {
        if let Some(value) = params.get(name) {
            hidden.push_str(&format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                escape(value)
            ));
        }
    }
    html(
        StatusCode::OK,
        pages::logout(
            lang,
            Some((&format!("{}/logout", idp.ctx().config.idp.issuer), &hidden)),
        ),
    )
}

async fn logout_post(
    State(idp): State<Idp>,
    headers: HeaderMap,
    form: Result<Form<Pairs>, FormRejection>,
) -> Response {
    let params = match form_params(form) {
        Ok(p) => p,
        Err(e) => return error_page(&headers, StatusCode::BAD_REQUEST, &e.description),
    };
    if let Some(session_cookie) = cookie(&headers, SESSION_COOKIE) {
        if params.get("csrf") != Some(csrf_token(&session_cookie, "logout").as_str()) {
            return error_page(
                &headers,
                StatusCode::FORBIDDEN,
                "The form did not come from this page (CSRF check failed).",
            );
        }
        match flow::session(idp.ctx(), &session_cookie).await {
            Ok(Some(session)) => {
                let actor = format!("citizen:{}", session.citizen_id);
                match flow::end_session(idp.ctx(), &session.sid, &actor).await {
                    Ok(clients) => {
                        tokio::spawn(backchannel_logout(idp.clone(), session, clients));
                    }
                    Err(e) => return internal(&headers, &e),
                }
            }
            Ok(None) => {}
            Err(e) => return internal(&headers, &e),
        }
    }
    let mut response = logout_finish(&idp, &headers, &params).await;
    set_cookie(&mut response, &idp, SESSION_COOKIE, "", Some(0));
    response
}

async fn logout_finish(idp: &Idp, headers: &HeaderMap, params: &Parameters) -> Response {
    let lang = lang_of(headers, params.get("ui_locales"));
    let client_id = params
        .get("id_token_hint")
        .and_then(|hint| hinted_client(idp, hint))
        .or_else(|| params.get("client_id").map(str::to_owned));
    if let (Some(target), Some(client_id)) = (params.get("post_logout_redirect_uri"), client_id)
        && let Ok(Some(client)) = idp.client(&client_id).await
        && client
            .metadata
            .post_logout_redirect_uris
            .iter()
            .any(|u| u == target)
        && let Ok(mut url) = url::Url::parse(target)
    {
        if let Some(state) = params.get("state") {
            url.query_pairs_mut().append_pair("state", state);
        }
        return see_other(url.as_str());
    }
    html(StatusCode::OK, pages::logout(lang, None))
}

/// Tells every client of the ended session (OpenID Connect Back-Channel Logout 1.0).
async fn backchannel_logout(idp: Idp, session: Session, client_ids: Vec<String>) {
    for client_id in client_ids {
        let Ok(Some(client)) = idp.client(&client_id).await else {
            continue;
        };
        let Some(uri) = client.metadata.backchannel_logout_uri.clone() else {
            continue;
        };
        let Ok(key) = idp.keys().active() else {
            return;
        };
        let now = idp.ctx().clock.now().unix_timestamp();
        let claims = json!({
            "iss": idp.ctx().config.idp.issuer,
            "aud": client.client_id,
            "iat": now,
            "exp": now + 120,
            "jti": b64(&crate::random_bytes::<16>()),
            "sub": tokens::subject(&idp, &client, &session.citizen_id),
            "sid": session.sid,
            "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
        });
        let token = match jose::sign(&key.signer, key.alg, &key.kid, "logout+jwt", &claims).await {
            Ok(token) => token,
            Err(error) => {
                tracing::warn!(%error, "could not sign a logout token");
                continue;
            }
        };
        let sent = reqwest::Client::new()
            .post(&uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(format!("logout_token={token}"))
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                tracing::info!(client_id = %client.client_id, "back-channel logout delivered");
            }
            Ok(response) => {
                tracing::warn!(client_id = %client.client_id, status = %response.status(), "back-channel logout refused");
            }
            Err(error) => {
                tracing::warn!(client_id = %client.client_id, %error, "back-channel logout failed");
            }
        }
    }
}

// ---- The ID-card listener ----------------------------------------------------------------

fn card_routes(idp: &Idp) -> Router {
    Router::new()
        .route("/card-login/{id}", get(card_login))
        .with_state(idp.clone())
}

async fn card_login(
    State(idp): State<Idp>,
    headers: HeaderMap,
    Extension(peer): Extension<eid_core::http::PeerCertificate>,
    Path(id): Path<String>,
) -> Response {
    let ctx = idp.ctx();
    let interaction = match flow::interaction(ctx, &id).await {
        Ok(Some(i)) if i.state == "login" => i,
        Ok(_) => {
            return error_page(
                &headers,
                StatusCode::NOT_FOUND,
                "This login has expired or is already finished.",
            );
        }
        Err(e) => return internal(&headers, &e),
    };
    let Some(cert) = peer.0 else {
        return error_page(
            &headers,
            StatusCode::UNAUTHORIZED,
            "No ID card certificate was presented. Check that the card is in the reader, then try again.",
        );
    };
    let holder = match card::holder(&cert, &ctx.config.ca.country) {
        Ok(h) => h,
        Err(why) => {
            return error_page(
                &headers,
                StatusCode::FORBIDDEN,
                &format!("This certificate cannot be used to log in: {why}."),
            );
        }
    };
    let refused = |why: String| {
        let event = AuditEvent::new(
            "service:idp",
            "idp.login.idcard",
            "certificate",
            holder.serial.to_hex(),
        )
        .outcome(eid_core::Outcome::Denied)
        .details(json!({ "reason": why }));
        async move {
            if let Err(error) = eid_core::audit::record(&ctx.db, ctx.clock.as_ref(), &event).await {
                tracing::error!(%error, "could not audit a refused login");
            }
        }
    };
    match idp.inner.status.status(&holder).await {
        Ok(eid_ca::ocsp::client::CheckedStatus::Good) => {}
        Ok(eid_ca::ocsp::client::CheckedStatus::Revoked { .. }) => {
            refused("certificate revoked or suspended".into()).await;
            return error_page(
                &headers,
                StatusCode::FORBIDDEN,
                "This ID card's certificate is revoked or suspended. Visit a service centre.",
            );
        }
        Ok(eid_ca::ocsp::client::CheckedStatus::Unknown) => {
            refused("certificate unknown to the OCSP responder".into()).await;
            return error_page(
                &headers,
                StatusCode::FORBIDDEN,
                "This ID card's certificate is not known to the issuer.",
            );
        }
        Err(why) => {
            tracing::warn!(%why, "certificate status unavailable at login");
            return error_page(
                &headers,
                StatusCode::SERVICE_UNAVAILABLE,
                "The certificate's status cannot be checked right now. Please try again shortly.",
            );
        }
    }
    let result = async {
        let (citizen, authentication) =
            card::high_login(ctx, &holder, &["hwk", "mfa", "pin", "sc"], "idcard").await?;
        if authentication.level < interaction.request.required_level {
            return Ok(None);
        }
        flow::record_login(ctx, &id, &citizen.citizen_id, &authentication).await
    }
    .await;
    match result {
        Ok(Some(handoff)) => see_other(&format!(
            "{}/login/{id}/done?handoff={handoff}",
            ctx.config.idp.issuer
        )),
        Ok(None) => error_page(
            &headers,
            StatusCode::CONFLICT,
            "This login is already finished.",
        ),
        Err(e) => internal(&headers, &e),
    }
}

/// Serves the ID-card listener: TLS (asking for a client certificate) in-process, then
/// HTTP/1.1 with the certificate handed to the handlers. Runs until `shutdown`.
pub async fn serve_card_listener(
    idp: Idp,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = eid_core::http::service_router(
        "idp-card",
        "ID-card login (TLS client certificate)",
        idp.ctx(),
        card_routes(&idp),
    );
    eid_core::http::serve_client_certificates(
        "idp-card",
        idp.inner.card_tls.clone(),
        listener,
        router,
        shutdown,
    )
    .await
}

// ---- Passkeys and the self-service pages -----------------------------------------------

fn json_error(status: StatusCode, code: &'static str, description: &str) -> Response {
    no_store(
        (
            status,
            Json(json!({ "error": code, "error_description": description })),
        )
            .into_response(),
    )
}

fn passkey_error(headers: &HeaderMap, error: crate::passkeys::PasskeyError) -> Response {
    use crate::passkeys::PasskeyError;
    match error {
        PasskeyError::Internal(e) => {
            let _ = internal(headers, &e);
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the login service could not complete the request",
            )
        }
        PasskeyError::Unavailable => {
            json_error(StatusCode::NOT_FOUND, "unavailable", &error.to_string())
        }
        other => json_error(
            StatusCode::BAD_REQUEST,
            "passkey_refused",
            &other.to_string(),
        ),
    }
}

async fn passkey_script() -> Response {
    script(include_str!("../static/passkey.js"))
}

/// One of the provider's own scripts, cacheable for five minutes.
fn script(body: &'static str) -> Response {
    let mut response = (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        body,
    )
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The session behind the request's cookie, with the cookie.
async fn current_session(
    idp: &Idp,
    headers: &HeaderMap,
) -> Result<Option<(Session, String)>, IdpError> {
    let Some(cookie_value) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    Ok(flow::session(idp.ctx(), &cookie_value)
        .await?
        .map(|session| (session, cookie_value)))
}

async fn account_login(State(idp): State<Idp>, headers: HeaderMap) -> Response {
    let issuer = &idp.ctx().config.idp.issuer;
    let request = AuthorizationRequest {
        client_id: crate::ACCOUNT_CLIENT.to_owned(),
        redirect_uri: format!("{issuer}/account"),
        scopes: vec!["openid".into()],
        state: None,
        nonce: None,
        code_challenge: None,
        prompt: authorize::Prompt::default(),
        max_age: None,
        required_level: Level::High,
        id_token_claims: Vec::new(),
        userinfo_claims: Vec::new(),
        dpop_jkt: None,
        ui_locales: None,
        authorization_details: Vec::new(),
    };
    match proceed(&idp, &headers, &request).await {
        Ok(response) => response,
        Err(e) => internal(&headers, &e),
    }
}

async fn account_page(State(idp): State<Idp>, headers: HeaderMap) -> Response {
    let lang = lang_of(&headers, None);
    let (session, session_cookie) = match current_session(&idp, &headers).await {
        Ok(Some(found)) => found,
        Ok(None) => return html(StatusCode::OK, pages::account_login(lang)),
        Err(e) => return internal(&headers, &e),
    };
    let result = async {
        let citizen = flow::citizen(idp.ctx(), &session.citizen_id)
            .await?
            .ok_or_else(|| IdpError::NotFound("citizen".into()))?;
        let passkeys = crate::passkeys::list(&idp, &session.citizen_id).await?;
        let consents = flow::consents(idp.ctx(), &session.citizen_id).await?;
        let logins = flow::recent_logins(idp.ctx(), &session.citizen_id, 10).await?;
        Ok::<_, IdpError>((citizen, passkeys, consents, logins))
    }
    .await;
    let (citizen, passkeys, consents, logins) = match result {
        Ok(found) => found,
        Err(e) => return internal(&headers, &e),
    };
    let certificates = match idp.certificates() {
        Some(port) => match port.list(&citizen.national_id).await {
            Ok(list) => Some(
                list.into_iter()
                    .map(|c| {
                        let until = c.not_after.get(..10).unwrap_or(&c.not_after).to_owned();
                        (c.serial, c.profile, until, c.status)
                    })
                    .collect(),
            ),
            Err(why) => {
                tracing::warn!(%why, "the citizen's certificates could not be listed");
                None
            }
        },
        None => None,
    };
    let date = |at: i64| {
        time::OffsetDateTime::from_unix_timestamp(at)
            .ok()
            .and_then(|t| {
                t.format(&time::macros::format_description!("[year]-[month]-[day]"))
                    .ok()
            })
            .unwrap_or_default()
    };
    let csrf = csrf_token(&session_cookie, "account");
    let name = format!("{} {}", citizen.given_name, citizen.family_name);
    let page = pages::Account {
        name: &name,
        national_id: &citizen.national_id,
        level: session.authentication.level.name(),
        high: session.authentication.level == Level::High,
        passkeys: passkeys
            .into_iter()
            .map(|p| (p.credential_id, p.name, date(p.created_at)))
            .collect(),
        consents: consents
            .into_iter()
            .map(|(id, name, scopes)| (id, name, scopes.join(", ")))
            .collect(),
        csrf: &csrf,
        passkeys_available: idp.webauthn().is_some(),
        logins: logins
            .into_iter()
            .map(|l| (l.at, l.method, l.level))
            .collect(),
        certificates,
    };
    html(StatusCode::OK, pages::account(lang, &page))
}

/// The session of a JSON call from the account page, checked against its CSRF header.
async fn account_call(idp: &Idp, headers: &HeaderMap) -> Result<Session, Response> {
    let (session, session_cookie) = match current_session(idp, headers).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return Err(json_error(
                StatusCode::UNAUTHORIZED,
                "login_required",
                "you are not logged in",
            ));
        }
        Err(e) => return Err(internal(headers, &e)),
    };
    let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    if sent != Some(csrf_token(&session_cookie, "account").as_str()) {
        return Err(json_error(
            StatusCode::FORBIDDEN,
            "csrf",
            "the request did not come from the account page",
        ));
    }
    Ok(session)
}

fn needs_high() -> Response {
    json_error(
        StatusCode::FORBIDDEN,
        "insufficient_user_authentication",
        "a passkey can be added only after logging in with the ID card (level high)",
    )
}

async fn passkey_add_start(State(idp): State<Idp>, headers: HeaderMap) -> Response {
    let session = match account_call(&idp, &headers).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    if session.authentication.level < Level::High {
        return needs_high();
    }
    let name = match flow::citizen(idp.ctx(), &session.citizen_id).await {
        Ok(Some(c)) => format!("{} {}", c.given_name, c.family_name),
        Ok(None) => return json_error(StatusCode::NOT_FOUND, "not_found", "no such citizen"),
        Err(e) => return internal(&headers, &e),
    };
    match crate::passkeys::start_registration(&idp, &session.citizen_id, &name).await {
        Ok((ceremony, options)) => {
            no_store(Json(json!({ "ceremony": ceremony, "options": options })).into_response())
        }
        Err(e) => passkey_error(&headers, e),
    }
}

#[derive(serde::Deserialize)]
struct AddPasskey {
    ceremony: String,
    #[serde(default)]
    name: String,
    credential: webauthn_rs::prelude::RegisterPublicKeyCredential,
}

async fn passkey_add_finish(
    State(idp): State<Idp>,
    headers: HeaderMap,
    body: Result<Json<AddPasskey>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let session = match account_call(&idp, &headers).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let Ok(Json(body)) = body else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "malformed passkey response",
        );
    };
    if session.authentication.level < Level::High {
        return needs_high();
    }
    match crate::passkeys::finish_registration(
        &idp,
        &session.citizen_id,
        &body.ceremony,
        &body.credential,
        &body.name,
    )
    .await
    {
        Ok(id) => no_store(Json(json!({ "credential_id": id })).into_response()),
        Err(e) => passkey_error(&headers, e),
    }
}

/// The session of a form on the account page, checked against its CSRF field.
async fn account_form(
    idp: &Idp,
    headers: &HeaderMap,
    params: &Parameters,
) -> Result<Session, Response> {
    let (session, session_cookie) = match current_session(idp, headers).await {
        Ok(Some(found)) => found,
        Ok(None) => return Err(see_other("/account")),
        Err(e) => return Err(internal(headers, &e)),
    };
    if params.get("csrf") != Some(csrf_token(&session_cookie, "account").as_str()) {
        return Err(error_page(
            headers,
            StatusCode::FORBIDDEN,
            "The form did not come from your account page (CSRF check failed).",
        ));
    }
    Ok(session)
}

async fn passkey_remove(
    State(idp): State<Idp>,
    headers: HeaderMap,
    form: Result<Form<Pairs>, FormRejection>,
) -> Response {
    let (params, session) = match account_post(&idp, &headers, form).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let id = params.get("credential_id").unwrap_or("");
    back_to_account(
        &headers,
        crate::passkeys::remove(&idp, &session.citizen_id, id).await,
    )
}

async fn consent_withdraw(
    State(idp): State<Idp>,
    headers: HeaderMap,
    form: Result<Form<Pairs>, FormRejection>,
) -> Response {
    let (params, session) = match account_post(&idp, &headers, form).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let client_id = params.get("client_id").unwrap_or("");
    back_to_account(
        &headers,
        flow::withdraw_consent(idp.ctx(), &session.citizen_id, client_id).await,
    )
}

/// The checked form and session of a POST from the account page.
async fn account_post(
    idp: &Idp,
    headers: &HeaderMap,
    form: Result<Form<Pairs>, FormRejection>,
) -> Result<(Parameters, Session), Response> {
    let params = form_params(form)
        .map_err(|e| error_page(headers, StatusCode::BAD_REQUEST, &e.description))?;
    let session = account_form(idp, headers, &params).await?;
    Ok((params, session))
}

/// Back to the account page after a change made there, or the error page.
fn back_to_account<T>(headers: &HeaderMap, result: Result<T, IdpError>) -> Response {
    match result {
        Ok(_) => see_other("/account"),
        Err(e) => internal(headers, &e),
    }
}

/// The interaction a passkey login call belongs to: waiting for a login, in this browser.
/// Where interaction `id` stands for the browser that sent `headers`.
pub(super) enum LoginLookup {
    /// The browser has no login cookie.
    NoBrowser,
    /// No such interaction waiting for a login, or another browser's.
    NotWaiting,
    /// The interaction, waiting for this browser's login, and the browser cookie.
    Found(flow::Interaction, String),
}

pub(super) async fn lookup_login(
    idp: &Idp,
    headers: &HeaderMap,
    id: &str,
) -> Result<LoginLookup, IdpError> {
    let Some(browser) = cookie(headers, BROWSER_COOKIE) else {
        return Ok(LoginLookup::NoBrowser);
    };
    Ok(match flow::interaction(idp.ctx(), id).await? {
        Some(i) if i.state == "login" && i.browser_sha256 == sha256_hex(browser.as_bytes()) => {
            LoginLookup::Found(i, browser)
        }
        _ => LoginLookup::NotWaiting,
    })
}

async fn login_interaction(
    idp: &Idp,
    headers: &HeaderMap,
    id: &str,
) -> Result<(flow::Interaction, String), Response> {
    match lookup_login(idp, headers, id).await {
        Ok(LoginLookup::Found(interaction, browser)) => Ok((interaction, browser)),
        Ok(LoginLookup::NoBrowser) => Err(json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "this browser did not start the login",
        )),
        Ok(LoginLookup::NotWaiting) => Err(json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "this login has expired or is already finished",
        )),
        Err(e) => Err(internal(headers, &e)),
    }
}

#[derive(serde::Deserialize)]
struct PasskeyLoginStart {
    national_id: String,
}

async fn passkey_login_start(
    State(idp): State<Idp>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<PasskeyLoginStart>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let (interaction, _) = match login_interaction(&idp, &headers, &id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Ok(Json(body)) = body else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "national_id is required",
        );
    };
    if interaction.request.required_level > Level::Substantial {
        return json_error(
            StatusCode::FORBIDDEN,
            "insufficient_user_authentication",
            "this service asks for level high: log in with the ID card",
        );
    }
    match crate::passkeys::start_login(&idp, &id, &body.national_id).await {
        Ok((ceremony, options)) => {
            no_store(Json(json!({ "ceremony": ceremony, "options": options })).into_response())
        }
        Err(e) => passkey_error(&headers, e),
    }
}

#[derive(serde::Deserialize)]
struct PasskeyLoginFinish {
    ceremony: String,
    credential: webauthn_rs::prelude::PublicKeyCredential,
}

async fn passkey_login_finish(
    State(idp): State<Idp>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<PasskeyLoginFinish>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let (interaction, browser) = match login_interaction(&idp, &headers, &id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Ok(Json(body)) = body else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "malformed passkey response",
        );
    };
    let citizen_id =
        match crate::passkeys::finish_login(&idp, &id, &body.ceremony, &body.credential).await {
            Ok(citizen_id) => citizen_id,
            Err(e) => return passkey_error(&headers, e),
        };
    let ctx = idp.ctx();
    let authentication = Authentication {
        level: Level::Substantial,
        // Possession of a hardware-bound key, with user verification on the device.
        amr: vec!["hwk".into(), "mfa".into(), "user".into()],
        auth_time: ctx.clock.now().unix_timestamp(),
        method: "passkey".into(),
    };
    let result = finish_login(
        &idp,
        &headers,
        &interaction,
        &browser,
        &citizen_id,
        &authentication,
    )
    .await;
    match result {
        Ok(Some((location, session_cookie))) => {
            let mut response = no_store(Json(json!({ "location": location })).into_response());
            set_cookie(&mut response, &idp, SESSION_COOKIE, &session_cookie, None);
            response
        }
        Ok(None) => json_error(
            StatusCode::CONFLICT,
            "invalid_request",
            "this login is already finished",
        ),
        Err(e) => {
            let _ = internal(&headers, &e);
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the login service could not complete the request",
            )
        }
    }
}

async fn certificate_suspend(
    State(idp): State<Idp>,
    headers: HeaderMap,
    form: Result<Form<Pairs>, FormRejection>,
) -> Response {
    let (params, session) = match account_post(&idp, &headers, form).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(port) = idp.certificates() else {
        return error_page(
            &headers,
            StatusCode::NOT_FOUND,
            "Certificates cannot be managed here. Visit a service centre.",
        );
    };
    let citizen = match flow::citizen(idp.ctx(), &session.citizen_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return error_page(&headers, StatusCode::NOT_FOUND, "Unknown citizen."),
        Err(e) => return internal(&headers, &e),
    };
    let serial = params.get("serial").unwrap_or("");
    let actor = format!("citizen:{}", session.citizen_id);
    match port.suspend(&citizen.national_id, serial, &actor).await {
        Ok(()) => {
            idp.forget_status(serial);
            see_other("/account")
        }
        Err(why) => error_page(
            &headers,
            StatusCode::BAD_REQUEST,
            &format!("The certificate could not be suspended: {why}"),
        ),
    }
}
