//! The enrolment service's HTTP surface: the pre-registration page and API, and the
//! desk. Handlers parse, call the domain, and map the result; refusals are specific
//! (a 4xx with the reason on the page or in problem+json), internal failures are
//! logged and answered with a 500 that says nothing about them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::{
    Extension, Json, Router,
    extract::{ConnectInfo, Form, Path, Query, State, rejection::FormRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64ct::Encoding;
use eid_core::{
    http::Problem,
    web::{cookie, csrf_token, html, no_store, see_other, set_cookie, tokens_match},
};
use serde::Deserialize;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use crate::{
    ApplicationStatus, Enrolment, EnrolmentError, NewApplication, UnblockPins,
    activation::CardPins,
    card_login::CardApproval,
    case::DocumentInput,
    lifecycle::Action,
    national_id::NationalIdNumber,
    pages,
    staff::{Desk, DeskSession},
};

const DESK_COOKIE: &str = "eid_desk";
const SESSION_COOKIE: &str = "eid_desk_session";
/// Browsers keep a cookie at most about 400 days; the desk cookie asks for a year.
const DESK_COOKIE_SECS: u64 = 365 * 24 * 3600;

pub(crate) fn routes(enrolment: &Enrolment) -> Router {
    Router::new()
        .route("/apply", get(apply_page).post(apply_form))
        .route("/api/v1/applications", post(apply_json))
        .route("/static/desk.js", get(script))
        .route(
            "/desk/register/{token}",
            get(register_page).post(register_desk),
        )
        .route("/staff/enrol/{token}", get(enrol_page))
        .route("/desk/api/enrol/{token}/start", post(enrol_start))
        .route("/desk/api/enrol/{token}/finish", post(enrol_finish))
        .route("/desk", get(desk_page))
        .route("/desk/api/login/start", post(login_start))
        .route("/desk/api/login/finish", post(login_finish))
        .route("/desk/logout", post(logout))
        .route("/desk/login/card", post(card_login_start))
        .route("/desk/login/card/{id}", get(card_login_finish))
        .route("/desk/search", get(search))
        .route("/desk/applications/{id}", get(case_page))
        .route("/desk/applications/{id}/consent", post(consent))
        .route("/desk/applications/{id}/documents", post(document))
        .route(
            "/desk/applications/{id}/photo",
            get(photo).post(photo_upload),
        )
        .route("/desk/applications/{id}/approve", post(approve))
        .route("/desk/applications/{id}/reject", post(reject))
        .route("/desk/applications/{id}/activate", post(activate))
        .route("/desk/applications/{id}/receipt", get(receipt))
        .route(
            "/desk/api/applications/{id}/approve/start",
            post(supervisor_start),
        )
        .route(
            "/desk/api/applications/{id}/approve/finish",
            post(supervisor_finish),
        )
        .route(
            "/desk/applications/{id}/approve/card",
            post(approve_card_start),
        )
        .route(
            "/desk/applications/{id}/deactivate/card",
            post(deactivate_card_start),
        )
        .route("/desk/approvals/card/{id}", get(card_approval_finish))
        .route("/desk/applications/{id}/suspend", post(suspend))
        .route("/desk/applications/{id}/resume", post(resume))
        .route("/desk/applications/{id}/unblock", post(unblock))
        .route("/desk/applications/{id}/replace", post(replace))
        .route("/desk/applications/{id}/remote", post(remote_create))
        .route("/desk/applications/{id}/remote/unlock", post(remote_unlock))
        .route(
            "/desk/applications/{id}/remote/withdraw",
            post(remote_withdraw),
        )
        .route(
            "/desk/api/applications/{id}/deactivate/start",
            post(deactivate_start),
        )
        .route(
            "/desk/api/applications/{id}/deactivate/finish",
            post(deactivate_finish),
        )
        .route(
            "/api/v1/identities/{national_id}/status",
            get(identity_status),
        )
        .route("/api/v1/sims/activations", post(sim_activation))
        .with_state(enrolment.clone())
}

// ---- Errors ----------------------------------------------------------------------------

fn status_of(error: &EnrolmentError) -> StatusCode {
    match error {
        EnrolmentError::Invalid(_) | EnrolmentError::Token(_) => StatusCode::UNPROCESSABLE_ENTITY,
        EnrolmentError::Conflict(_) => StatusCode::CONFLICT,
        EnrolmentError::NotFound(_) => StatusCode::NOT_FOUND,
        EnrolmentError::Forbidden(_) => StatusCode::FORBIDDEN,
        EnrolmentError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        EnrolmentError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The text a person may see: the refusal, or a generic line for internal failures
/// (whose detail goes to the log).
fn shown(error: &EnrolmentError) -> String {
    if error.is_internal() {
        tracing::error!(%error, "enrolment request failed");
        "The desk could not complete the request. It has been logged; please try again.".into()
    } else {
        error.to_string()
    }
}

fn problem(error: &EnrolmentError) -> Response {
    let status = status_of(error);
    let kind = match status {
        StatusCode::UNPROCESSABLE_ENTITY => "invalid-request",
        StatusCode::CONFLICT => "conflict",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::TOO_MANY_REQUESTS => "rate-limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "internal-error",
    };
    let mut response = Problem::new(status, kind, shown(error)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    no_store(response)
}

fn error_page(error: &EnrolmentError) -> Response {
    html(status_of(error), pages::error(&shown(error)))
}

// ---- Pre-registration -------------------------------------------------------------------

fn client_of(connect: &Result<ConnectInfo<SocketAddr>, impl std::fmt::Debug>) -> IpAddr {
    connect
        .as_ref()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

type Connect = Result<
    ConnectInfo<SocketAddr>,
    <ConnectInfo<SocketAddr> as axum::extract::FromRequestParts<Enrolment>>::Rejection,
>;

async fn apply_page() -> Response {
    html(StatusCode::OK, pages::apply(None, None))
}

async fn apply_form(
    State(enrolment): State<Enrolment>,
    connect: Connect,
    form: Result<Form<NewApplication>, FormRejection>,
) -> Response {
    let Ok(Form(new)) = form else {
        return html(
            StatusCode::UNPROCESSABLE_ENTITY,
            pages::apply(
                Some("the form is incomplete: fill in every required field"),
                None,
            ),
        );
    };
    let client = client_of(&connect);
    match enrolment
        .apply(&new, client, &format!("public:{client}"))
        .await
    {
        Ok(application) => html(StatusCode::CREATED, pages::applied(&application)),
        Err(e) => html(status_of(&e), pages::apply(Some(&shown(&e)), Some(&new))),
    }
}

async fn apply_json(
    State(enrolment): State<Enrolment>,
    connect: Connect,
    body: Result<Json<NewApplication>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let new = match body {
        Ok(Json(new)) => new,
        Err(e) => {
            return problem(&EnrolmentError::Invalid(format!(
                "the application is not valid JSON of the expected shape: {}",
                e.body_text()
            )));
        }
    };
    let client = client_of(&connect);
    match enrolment
        .apply(&new, client, &format!("api:{client}"))
        .await
    {
        Ok(application) => {
            let location = format!("/api/v1/applications/{}", application.reference);
            let mut response = (
                StatusCode::CREATED,
                Json(serde_json::json!({
                    "reference": application.reference,
                    "national_id": application.national_id,
                    "status": application.status,
                })),
            )
                .into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            no_store(response)
        }
        Err(e) => problem(&e),
    }
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../static/desk.js"),
    )
        .into_response()
}

// ---- Desk and session ------------------------------------------------------------------

async fn desk_of(enrolment: &Enrolment, headers: &HeaderMap) -> Result<Desk, Response> {
    let Some(value) = cookie(headers, DESK_COOKIE) else {
        return Err(html(StatusCode::FORBIDDEN, pages::unregistered()));
    };
    match enrolment.desk_by_cookie(&value).await {
        Ok(Some(desk)) => Ok(desk),
        Ok(None) => Err(html(StatusCode::FORBIDDEN, pages::unregistered())),
        Err(e) => Err(error_page(&e)),
    }
}

/// A desk session for a page: redirects to the login page when there is none.
async fn session_for_page(
    enrolment: &Enrolment,
    headers: &HeaderMap,
) -> Result<(DeskSession, String), Response> {
    let desk = desk_of(enrolment, headers).await?;
    let Some(value) = cookie(headers, SESSION_COOKIE) else {
        return Err(see_other("/desk"));
    };
    match enrolment.session(&desk, &value).await {
        Ok(Some(session)) => Ok((session, csrf_token(&value, "desk"))),
        Ok(None) => Err(see_other("/desk")),
        Err(e) => Err(error_page(&e)),
    }
}

/// A desk session for a form post or an API call, with its CSRF token checked.
async fn session_for_post(
    enrolment: &Enrolment,
    headers: &HeaderMap,
    sent_csrf: Option<&str>,
) -> Result<(DeskSession, String), Response> {
    let (session, csrf) = session_for_page(enrolment, headers).await?;
    if !sent_csrf.is_some_and(|sent| tokens_match(sent, &csrf)) {
        return Err(error_page(&EnrolmentError::Forbidden(
            "this form has expired (or came from elsewhere): reload the page".into(),
        )));
    }
    Ok((session, csrf))
}

fn csrf_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-csrf-token").and_then(|v| v.to_str().ok())
}

async fn register_page(Path(token): Path<String>) -> Response {
    html(
        StatusCode::OK,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Register this desk</title></head>\
             <body><h1>Register this workstation as a desk</h1><form method=\"post\" action=\"/desk/register/{}\">\
             <button type=\"submit\" id=\"register\" autofocus>Register this workstation</button></form></body></html>",
            eid_core::web::escape(&token)
        ),
    )
}

async fn register_desk(State(enrolment): State<Enrolment>, Path(token): Path<String>) -> Response {
    match enrolment.register_desk(&token).await {
        Ok((desk, value)) => {
            let mut response = html(StatusCode::OK, pages::desk_registered(&desk));
            set_cookie(
                &mut response,
                DESK_COOKIE,
                &value,
                enrolment.secure_cookies(),
                Some(DESK_COOKIE_SECS),
            );
            response
        }
        Err(e) => error_page(&e),
    }
}

async fn enrol_page(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let desk = match desk_of(&enrolment, &headers).await {
        Ok(desk) => desk,
        Err(response) => return response,
    };
    match enrolment.enrolment_link_subject(&token).await {
        Ok((staff_id, name)) => html(
            StatusCode::OK,
            pages::staff_enrol(&desk, &staff_id, &name, &token),
        ),
        Err(e) => error_page(&e),
    }
}

async fn enrol_start(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let desk = match desk_of(&enrolment, &headers).await {
        Ok(desk) => desk,
        Err(response) => return response,
    };
    match enrolment.start_passkey_enrolment(&desk, &token).await {
        Ok((ceremony, options)) => no_store(
            Json(serde_json::json!({ "ceremony": ceremony, "options": options })).into_response(),
        ),
        Err(e) => problem(&e),
    }
}

#[derive(Deserialize)]
struct EnrolFinish {
    ceremony: String,
    credential: RegisterPublicKeyCredential,
}

async fn enrol_finish(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Json(body): Json<EnrolFinish>,
) -> Response {
    let desk = match desk_of(&enrolment, &headers).await {
        Ok(desk) => desk,
        Err(response) => return response,
    };
    match enrolment
        .finish_passkey_enrolment(&desk, &token, &body.ceremony, &body.credential)
        .await
    {
        Ok(_) => no_store(Json(serde_json::json!({ "location": "/desk" })).into_response()),
        Err(e) => problem(&e),
    }
}

async fn desk_page(State(enrolment): State<Enrolment>, headers: HeaderMap) -> Response {
    let desk = match desk_of(&enrolment, &headers).await {
        Ok(desk) => desk,
        Err(response) => return response,
    };
    let session = match cookie(&headers, SESSION_COOKIE) {
        Some(value) => match enrolment.session(&desk, &value).await {
            Ok(session) => session.map(|s| (s, csrf_token(&value, "desk"))),
            Err(e) => return error_page(&e),
        },
        None => None,
    };
    let Some((session, csrf)) = session else {
        return html(
            StatusCode::OK,
            pages::login(&desk, enrolment.card_login_offered()),
        );
    };
    match enrolment.recent_applications(20).await {
        Ok(recent) => html(
            StatusCode::OK,
            pages::dashboard(&session, &csrf, &recent, None),
        ),
        Err(e) => error_page(&e),
    }
}

#[derive(Deserialize)]
struct LoginStart {
    staff_id: String,
}

async fn login_start(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Json(body): Json<LoginStart>,
) -> Response {
    let desk = match desk_of(&enrolment, &headers).await {
        Ok(desk) => desk,
        Err(response) => return response,
    };
    match enrolment
        .start_staff_authentication(&desk, &body.staff_id, "login", None)
        .await
    {
        Ok((ceremony, options)) => no_store(
            Json(serde_json::json!({ "ceremony": ceremony, "options": options })).into_response(),
        ),
        Err(e) => problem(&e),
    }
}

#[derive(Deserialize)]
struct CeremonyFinish {
    ceremony: String,
    credential: PublicKeyCredential,
    #[serde(default)]
    version: Option<i64>,
}

async fn login_finish(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Json(body): Json<CeremonyFinish>,
) -> Response {
    let desk = match desk_of(&enrolment, &headers).await {
        Ok(desk) => desk,
        Err(response) => return response,
    };
    let result = async {
        let (staff_id, _, _) = enrolment
            .finish_staff_authentication(&desk, &body.ceremony, "login", None, &body.credential)
            .await?;
        enrolment.open_session(&desk, &staff_id, "passkey").await
    }
    .await;
    match result {
        Ok(value) => with_session(
            &enrolment,
            no_store(Json(serde_json::json!({ "location": "/desk" })).into_response()),
            &value,
        ),
        Err(e) => problem(&e),
    }
}

/// `response` with the cookie of the session just opened.
fn with_session(enrolment: &Enrolment, mut response: Response, value: &str) -> Response {
    set_cookie(
        &mut response,
        SESSION_COOKIE,
        value,
        enrolment.secure_cookies(),
        None,
    );
    response
}

/// Step 1 of a card login (see `card_login`): to the card listener.
async fn card_login_start(State(enrolment): State<Enrolment>, headers: HeaderMap) -> Response {
    let desk = match desk_of(&enrolment, &headers).await {
        Ok(desk) => desk,
        Err(response) => return response,
    };
    match enrolment.start_card_login(&desk, None).await {
        Ok(location) => see_other(&location),
        Err(e) => error_page(&e),
    }
}

#[derive(Deserialize)]
struct Handoff {
    handoff: String,
}

/// Step 3 of a card login: back at the desk, the session.
async fn card_login_finish(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<Handoff>,
) -> Response {
    let desk = match desk_of(&enrolment, &headers).await {
        Ok(desk) => desk,
        Err(response) => return response,
    };
    match enrolment
        .finish_card_login(&desk, &id, &query.handoff)
        .await
    {
        Ok(value) => with_session(&enrolment, see_other("/desk"), &value),
        Err(e) => error_page(&e),
    }
}

/// The card listener's routes: step 2 of a card login or a supervisor's card approval.
pub(crate) fn card_routes(enrolment: &Enrolment) -> Router {
    Router::new()
        .route("/desk-card/{id}", get(card_login_prove))
        .with_state(enrolment.clone())
}

async fn card_login_prove(
    State(enrolment): State<Enrolment>,
    Extension(peer): Extension<eid_core::http::PeerCertificate>,
    Path(id): Path<String>,
) -> Response {
    match enrolment.prove_card_login(&id, peer.0.as_deref()).await {
        Ok(location) => see_other(&location),
        Err(e) => error_page(&e),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let (session, _) = match session_for_post(&enrolment, &headers, Some(&form.csrf)).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let value = cookie(&headers, SESSION_COOKIE).unwrap_or_default();
    if let Err(e) = enrolment.end_session(&session, &value).await {
        return error_page(&e);
    }
    let mut response = see_other("/desk");
    set_cookie(
        &mut response,
        SESSION_COOKIE,
        "",
        enrolment.secure_cookies(),
        Some(0),
    );
    response
}

#[derive(Deserialize)]
struct SearchQuery {
    q: String,
}

async fn search(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Query(query): Query<SearchQuery>,
) -> Response {
    let (session, csrf) = match session_for_page(&enrolment, &headers).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    match enrolment.find(&query.q).await {
        Ok(Some(application)) => see_other(&format!(
            "/desk/applications/{}",
            application.application_id
        )),
        Ok(None) => match enrolment.recent_applications(20).await {
            Ok(recent) => html(
                StatusCode::NOT_FOUND,
                pages::dashboard(
                    &session,
                    &csrf,
                    &recent,
                    Some(&format!(
                        "no application has the reference or national identity number {:?}",
                        query.q.trim()
                    )),
                ),
            ),
            Err(e) => error_page(&e),
        },
        Err(e) => error_page(&e),
    }
}

// ---- The case ----------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct Notice {
    #[serde(default)]
    done: Option<String>,
}

fn notice_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "consent" => "Consent recorded.",
        "document" => "Document checked and recorded: it matches the application.",
        "document-mismatch" => {
            "Document recorded, but it does not match the application: a supervisor must approve the exception."
        }
        "exceptions" => "The supervisor approved the exceptions.",
        "approved" => "Identity verified: the application is approved. Activate a card next.",
        "rejected" => "The application is rejected.",
        "photo" => "Photo stored.",
        "activated" => "The card is activated: the citizen can log in and sign. Print the receipt.",
        "queued" => {
            "The CA cannot be reached now. The card holds its PINs, keys and PUK; its certificates will be issued and written when the link returns, and the identity becomes active then. Keep the card in the reader until this case shows it active."
        }
        "suspended" => {
            "Every valid certificate is suspended (on hold): the card can neither log in nor sign until the certificates are resumed."
        }
        "resumed" => "The certificates are resumed: the card logs in and signs again.",
        "unblocked" => "The PIN is unblocked: the citizen can use the new PIN now.",
        "replaced" => {
            "The new card is activated and the old card's certificates are revoked. Print the receipt."
        }
        "remote-created" => {
            "The remote signing credential is created: the citizen signs with it after logging in, with the signing PIN chosen now. Print the receipt."
        }
        "remote-unlocked" => {
            "The remote signing credential is unlocked: the signing PIN works again."
        }
        "remote-withdrawn" => {
            "The remote signing credential is withdrawn: its certificate is revoked and its key destroyed."
        }
        "deactivated" => {
            "The identity is deactivated and every certificate revoked. This cannot be undone."
        }
        _ => return None,
    })
}

struct Render<'a> {
    error: Option<&'a EnrolmentError>,
    notice: Option<&'a str>,
    document: Option<&'a DocumentInput>,
}

async fn render_case(
    enrolment: &Enrolment,
    session: &DeskSession,
    csrf: &str,
    application_id: &str,
    render: Render<'_>,
) -> Response {
    let case = match enrolment.case(application_id).await {
        Ok(case) => case,
        Err(e) => return error_page(&e),
    };
    let activations = match enrolment.activations(application_id).await {
        Ok(a) => a,
        Err(e) => return error_page(&e),
    };
    // Listing the blank cards reads every token in the reader: only for the forms
    // that offer them (activation, and the card steps of an active or suspended
    // identity).
    let offers_cards = matches!(
        case.application.status,
        ApplicationStatus::Approved | ApplicationStatus::Active | ApplicationStatus::Suspended
    );
    let reader = match enrolment.reader().filter(|_| offers_cards) {
        Some(reader) => match enrolment.blank_cards().await {
            Ok(cards) => Some((reader.description.clone(), cards)),
            Err(e) => Some((format!("{} — {}", reader.description, e), Vec::new())),
        },
        None => None,
    };
    let lifecycle = match enrolment.lifecycle_events(application_id).await {
        Ok(events) => events,
        Err(e) => return error_page(&e),
    };
    let current_card = match enrolment.current_card(application_id).await {
        Ok(card) => card,
        Err(e) => return error_page(&e),
    };
    // The signing service's answer, or why there is none: the rest of the case is
    // still shown when it cannot be reached.
    let remote = if enrolment.offers_remote_signing()
        && matches!(
            case.application.status,
            ApplicationStatus::Active
                | ApplicationStatus::Suspended
                | ApplicationStatus::Deactivated
        ) {
        Some(
            enrolment
                .remote_credentials(&case.application.national_id)
                .await
                .map_err(|e| e.to_string()),
        )
    } else {
        None
    };
    let remote_refusal = remote
        .is_some()
        .then(|| enrolment.remote_creation_refusal())
        .flatten();
    let error_text = render.error.map(shown);
    let view = pages::CaseView {
        session,
        csrf,
        case: &case,
        document_types: &enrolment.ctx().config.enrolment.document_types,
        reader,
        error: error_text.as_deref(),
        notice: render.notice,
        document: render.document,
        activations: &activations,
        lifecycle: &lifecycle,
        current_card: current_card.as_ref(),
        remote: remote.as_ref(),
        remote_refusal: remote_refusal.as_deref(),
        card_approval: enrolment.card_login_offered(),
    };
    let status = render.error.map(status_of).unwrap_or(StatusCode::OK);
    html(status, pages::case(&view))
}

async fn case_page(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Response {
    let (session, csrf) = match session_for_page(&enrolment, &headers).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let notice = notice.done.as_deref().and_then(notice_text);
    render_case(
        &enrolment,
        &session,
        &csrf,
        &id,
        Render {
            error: None,
            notice,
            document: None,
        },
    )
    .await
}

#[derive(Deserialize)]
struct Versioned {
    csrf: String,
    version: i64,
    #[serde(default)]
    reason: String,
}

/// The result of a case form: back to the case with a notice, or the case with the error.
async fn after_case_post(
    enrolment: &Enrolment,
    session: &DeskSession,
    csrf: &str,
    id: &str,
    result: Result<&'static str, EnrolmentError>,
) -> Response {
    match result {
        Ok(done) => see_other(&format!("/desk/applications/{id}?done={done}")),
        Err(e) => {
            render_case(
                enrolment,
                session,
                csrf,
                id,
                Render {
                    error: Some(&e),
                    notice: None,
                    document: None,
                },
            )
            .await
        }
    }
}

async fn consent(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Versioned>,
) -> Response {
    let (session, csrf) = match session_for_post(&enrolment, &headers, Some(&form.csrf)).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let result = enrolment
        .record_consent(&session, &id, form.version)
        .await
        .map(|()| "consent");
    after_case_post(&enrolment, &session, &csrf, &id, result).await
}

#[derive(Deserialize)]
struct DocumentForm {
    csrf: String,
    version: i64,
    #[serde(flatten)]
    document: DocumentInput,
}

async fn document(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DocumentForm>,
) -> Response {
    let (session, csrf) = match session_for_post(&enrolment, &headers, Some(&form.csrf)).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    match enrolment
        .record_document(&session, &id, form.version, &form.document)
        .await
    {
        Ok(d) => see_other(&format!(
            "/desk/applications/{id}?done={}",
            if d.name_matches && d.birth_matches {
                "document"
            } else {
                "document-mismatch"
            }
        )),
        Err(e) => {
            if !e.is_internal()
                && let Err(audit) = enrolment
                    .record_refused_document(&session, &id, &form.document, &e.to_string())
                    .await
            {
                return error_page(&audit);
            }
            render_case(
                &enrolment,
                &session,
                &csrf,
                &id,
                Render {
                    error: Some(&e),
                    notice: None,
                    document: Some(&form.document),
                },
            )
            .await
        }
    }
}

async fn photo(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(response) = session_for_page(&enrolment, &headers).await {
        return response;
    }
    match enrolment.photo(&id).await {
        Ok(Some((image, media_type))) => {
            no_store(([(header::CONTENT_TYPE, media_type)], image).into_response())
        }
        Ok(None) => problem(&EnrolmentError::NotFound("no photo".into())),
        Err(e) => problem(&e),
    }
}

#[derive(Deserialize)]
struct PhotoUpload {
    /// The image, base64 (a `data:` URL's payload).
    image: String,
}

async fn photo_upload(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<PhotoUpload>,
) -> Response {
    let (session, _) = match session_for_post(&enrolment, &headers, csrf_header(&headers)).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let payload = body
        .image
        .split_once(',')
        .map(|(_, data)| data)
        .unwrap_or(&body.image);
    let Ok(image) = base64ct::Base64::decode_vec(payload.trim()) else {
        return problem(&EnrolmentError::Invalid("the photo is not base64".into()));
    };
    match enrolment.record_photo(&session, &id, &image).await {
        Ok(sha256) => no_store(
            Json(serde_json::json!({
                "sha256": sha256,
                "location": format!("/desk/applications/{id}?done=photo"),
            }))
            .into_response(),
        ),
        Err(e) => problem(&e),
    }
}

async fn approve(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Versioned>,
) -> Response {
    let (session, csrf) = match session_for_post(&enrolment, &headers, Some(&form.csrf)).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let result = enrolment
        .approve_case(&session, &id, form.version)
        .await
        .map(|()| "approved");
    after_case_post(&enrolment, &session, &csrf, &id, result).await
}

async fn reject(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Versioned>,
) -> Response {
    let (session, csrf) = match session_for_post(&enrolment, &headers, Some(&form.csrf)).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let result = enrolment
        .reject_case(&session, &id, form.version, &form.reason)
        .await
        .map(|()| "rejected");
    after_case_post(&enrolment, &session, &csrf, &id, result).await
}

#[derive(Deserialize)]
struct ActivateForm {
    csrf: String,
    version: i64,
    #[serde(default)]
    card: String,
    #[serde(flatten)]
    pins: CardPins,
}

async fn activate(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<ActivateForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return error_page(&EnrolmentError::Invalid(
            "the activation form is incomplete: PIN1, PIN2 and the PUK, each twice".into(),
        ));
    };
    let (session, csrf) = match session_for_post(&enrolment, &headers, Some(&form.csrf)).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let result = enrolment
        .activate_card(&session, &id, form.version, &form.card, form.pins)
        .await
        .map(|activated| match activated {
            crate::activation::Activated::Done(_) => "activated",
            crate::activation::Activated::Queued => "queued",
        });
    if let Err(e) = &result
        && matches!(e, EnrolmentError::Invalid(_) | EnrolmentError::Conflict(_))
    {
        let _ = enrolment
            .append_refusal(
                &session,
                "enrolment.activation.start",
                &id,
                serde_json::json!({ "reason": e.to_string() }),
            )
            .await;
    }
    after_case_post(&enrolment, &session, &csrf, &id, result).await
}

async fn receipt(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(response) = session_for_page(&enrolment, &headers).await {
        return response;
    }
    match enrolment.receipt(&id).await {
        Ok(receipt) => html(StatusCode::OK, pages::receipt(&receipt)),
        Err(e) => error_page(&e),
    }
}

#[derive(Deserialize)]
struct SupervisorStart {
    supervisor_id: String,
}

fn approval_context(application_id: &str, session: &DeskSession) -> String {
    format!("{application_id}:{}", session.staff_id)
}

async fn supervisor_start(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<SupervisorStart>,
) -> Response {
    let (session, _) = match session_for_post(&enrolment, &headers, csrf_header(&headers)).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let supervisor = body.supervisor_id.trim().to_ascii_lowercase();
    if supervisor == session.staff_id {
        let e = EnrolmentError::Forbidden(
            "nobody approves their own case: another supervisor must authenticate".into(),
        );
        if let Err(audit) = enrolment
            .append_refusal(
                &session,
                "enrolment.exception.approve",
                &id,
                serde_json::json!({ "supervisor": supervisor, "reason": e.to_string() }),
            )
            .await
        {
            return problem(&audit);
        }
        return problem(&e);
    }
    match enrolment
        .start_staff_authentication(
            &session.desk,
            &supervisor,
            "approve",
            Some(&approval_context(&id, &session)),
        )
        .await
    {
        Ok((ceremony, options)) => no_store(
            Json(serde_json::json!({ "ceremony": ceremony, "options": options })).into_response(),
        ),
        Err(e) => problem(&e),
    }
}

async fn supervisor_finish(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<CeremonyFinish>,
) -> Response {
    let (session, _) = match session_for_post(&enrolment, &headers, csrf_header(&headers)).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let result = async {
        let (supervisor, _, role) = enrolment
            .finish_staff_authentication(
                &session.desk,
                &body.ceremony,
                "approve",
                Some(&approval_context(&id, &session)),
                &body.credential,
            )
            .await?;
        enrolment
            .approve_exceptions(&session, &id, &supervisor, role, body.version.unwrap_or(-1))
            .await
    }
    .await;
    match result {
        Ok(_) => no_store(
            Json(serde_json::json!({
                "location": format!("/desk/applications/{id}?done=exceptions"),
            }))
            .into_response(),
        ),
        Err(e) => problem(&e),
    }
}

/// A supervisor approves the case's exceptions with their ID card: to the card
/// listener (see `card_login`), bound to this clerk and the version they saw.
async fn approve_card_start(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Versioned>,
) -> Response {
    let (session, csrf) = match session_for_post(&enrolment, &headers, Some(&form.csrf)).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let approval = CardApproval::Exceptions {
        application: id.clone(),
        clerk: session.staff_id.clone(),
        version: form.version,
    };
    match enrolment
        .start_card_login(&session.desk, Some(&approval))
        .await
    {
        Ok(location) => see_other(&location),
        Err(e) => after_case_post(&enrolment, &session, &csrf, &id, Err(e)).await,
    }
}

/// Step 3 of a supervisor's card approval: back at the clerk's desk, recorded as a
/// passkey's approval would be; then the case.
async fn card_approval_finish(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(login): Path<String>,
    Query(query): Query<Handoff>,
) -> Response {
    let (session, csrf) = match session_for_page(&enrolment, &headers).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let (supervisor, role, approval) = match enrolment
        .take_card_approval(&session, &login, &query.handoff)
        .await
    {
        Ok(taken) => taken,
        Err(e) => return error_page(&e),
    };
    let id = approval.application().to_owned();
    let result = match approval {
        CardApproval::Exceptions { version, .. } => enrolment
            .approve_exceptions(&session, &id, &supervisor, role, version)
            .await
            .map(|_| "exceptions"),
        CardApproval::Deactivation {
            version,
            reason,
            note,
            ..
        } => match enrolment
            .deactivate(&session, &id, version, &supervisor, role, &reason, &note)
            .await
        {
            Ok(_) => Ok("deactivated"),
            Err(e) => Err(enrolment
                .refuse_step(&session, Action::Deactivate, &id, e)
                .await),
        },
    };
    after_case_post(&enrolment, &session, &csrf, &id, result).await
}

// ---- The identity's lifecycle -------------------------------------------------------------
//
// These handlers answer `Result<Response, Response>`: `?` stands for "or the early
// answer" (no desk, no session, a stale form).

/// The result of a lifecycle form: refusals are audited, then back to the case.
async fn after_lifecycle_post(
    enrolment: &Enrolment,
    session: &DeskSession,
    csrf: &str,
    id: &str,
    action: Action,
    result: Result<&'static str, EnrolmentError>,
) -> Response {
    let result = match result {
        Err(e) => Err(enrolment.refuse_step(session, action, id, e).await),
        ok => ok,
    };
    after_case_post(enrolment, session, csrf, id, result).await
}

#[derive(Deserialize)]
struct RemoteForm {
    csrf: String,
    version: i64,
    #[serde(flatten)]
    pins: crate::RemotePins,
}

#[derive(Deserialize)]
struct RemoteStepForm {
    csrf: String,
    version: i64,
    #[serde(default)]
    credential: String,
    #[serde(default)]
    reason: String,
}

/// The case after a step on a remote credential; a refusal is audited as `action`.
async fn after_remote_post(
    enrolment: &Enrolment,
    session: &DeskSession,
    (csrf, id): (&str, &str),
    action: &str,
    result: Result<&'static str, EnrolmentError>,
) -> Response {
    if let Err(e) = &result
        && matches!(
            e,
            EnrolmentError::Invalid(_) | EnrolmentError::Conflict(_) | EnrolmentError::NotFound(_)
        )
    {
        let _ = enrolment
            .append_refusal(
                session,
                action,
                id,
                serde_json::json!({ "reason": e.to_string() }),
            )
            .await;
    }
    after_case_post(enrolment, session, csrf, id, result).await
}

async fn remote_create(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<RemoteForm>, FormRejection>,
) -> Result<Response, Response> {
    let Form(form) = form.map_err(|_| incomplete("remote signing credential"))?;
    let (session, csrf) = session_for_post(&enrolment, &headers, Some(&form.csrf)).await?;
    let result = enrolment
        .create_remote_credential(&session, &id, form.version, form.pins)
        .await
        .map(|_| "remote-created");
    Ok(after_remote_post(
        &enrolment,
        &session,
        (&csrf, &id),
        "enrolment.activation.start",
        result,
    )
    .await)
}

async fn remote_unlock(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<RemoteStepForm>, FormRejection>,
) -> Result<Response, Response> {
    let Form(form) = form.map_err(|_| incomplete("unlocking"))?;
    let (session, csrf) = session_for_post(&enrolment, &headers, Some(&form.csrf)).await?;
    let result = enrolment
        .unlock_remote_credential(&session, &id, form.version, &form.credential)
        .await
        .map(|()| "remote-unlocked");
    Ok(after_remote_post(
        &enrolment,
        &session,
        (&csrf, &id),
        "enrolment.remote.unlock",
        result,
    )
    .await)
}

async fn remote_withdraw(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<RemoteStepForm>, FormRejection>,
) -> Result<Response, Response> {
    let Form(form) = form.map_err(|_| incomplete("withdrawal"))?;
    let (session, csrf) = session_for_post(&enrolment, &headers, Some(&form.csrf)).await?;
    let result = enrolment
        .withdraw_remote_credential(&session, &id, form.version, &form.credential, &form.reason)
        .await
        .map(|()| "remote-withdrawn");
    Ok(after_remote_post(
        &enrolment,
        &session,
        (&csrf, &id),
        "enrolment.remote.withdraw",
        result,
    )
    .await)
}

/// The page for a form that arrived incomplete (fields missing or malformed).
fn incomplete(what: &str) -> Response {
    error_page(&EnrolmentError::Invalid(format!(
        "the {what} form is incomplete: reload the page and fill it in again"
    )))
}

#[derive(Deserialize)]
struct LifecycleForm {
    csrf: String,
    version: i64,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    note: String,
}

async fn suspend(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<LifecycleForm>, FormRejection>,
) -> Result<Response, Response> {
    let Form(form) = form.map_err(|_| incomplete("suspension"))?;
    let (session, csrf) = session_for_post(&enrolment, &headers, Some(&form.csrf)).await?;
    let result = enrolment
        .suspend(&session, &id, form.version, &form.reason, &form.note)
        .await
        .map(|_| "suspended");
    Ok(after_lifecycle_post(&enrolment, &session, &csrf, &id, Action::Suspend, result).await)
}

async fn resume(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<LifecycleForm>, FormRejection>,
) -> Result<Response, Response> {
    let Form(form) = form.map_err(|_| incomplete("resumption"))?;
    let (session, csrf) = session_for_post(&enrolment, &headers, Some(&form.csrf)).await?;
    let result = enrolment
        .resume(&session, &id, form.version, &form.note)
        .await
        .map(|_| "resumed");
    Ok(after_lifecycle_post(&enrolment, &session, &csrf, &id, Action::Resume, result).await)
}

#[derive(Deserialize)]
struct UnblockForm {
    csrf: String,
    version: i64,
    #[serde(flatten)]
    pins: UnblockPins,
}

async fn unblock(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<UnblockForm>, FormRejection>,
) -> Result<Response, Response> {
    let Form(form) = form.map_err(|_| incomplete("unblock (the PUK and the new PIN, twice)"))?;
    let (session, csrf) = session_for_post(&enrolment, &headers, Some(&form.csrf)).await?;
    let result = enrolment
        .unblock_pin(&session, &id, form.version, form.pins)
        .await
        .map(|_| "unblocked");
    Ok(after_lifecycle_post(&enrolment, &session, &csrf, &id, Action::Unblock, result).await)
}

#[derive(Deserialize)]
struct ReplaceForm {
    csrf: String,
    version: i64,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    card: String,
    #[serde(flatten)]
    pins: CardPins,
}

async fn replace(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<ReplaceForm>, FormRejection>,
) -> Result<Response, Response> {
    let Form(form) =
        form.map_err(|_| incomplete("replacement (PIN1, PIN2 and the PUK, each twice)"))?;
    let (session, csrf) = session_for_post(&enrolment, &headers, Some(&form.csrf)).await?;
    let result = enrolment
        .replace_card(
            &session,
            &id,
            form.version,
            &form.reason,
            &form.card,
            form.pins,
        )
        .await
        .map(|_| "replaced");
    Ok(after_lifecycle_post(&enrolment, &session, &csrf, &id, Action::Replace, result).await)
}

#[derive(Deserialize)]
struct DeactivateStart {
    supervisor_id: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    note: String,
}

#[derive(Deserialize)]
struct DeactivateFinish {
    ceremony: String,
    credential: PublicKeyCredential,
    version: i64,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    note: String,
}

/// What a supervisor's passkey approves: this deactivation of this case, asked by this
/// clerk, for exactly this reason and note.
fn deactivation_context(id: &str, session: &DeskSession, reason: &str, note: &str) -> String {
    let what = crate::token_hash(&format!("{}\n{}", reason.trim(), note.trim()));
    format!("deactivate:{id}:{}:{what}", session.staff_id)
}

async fn deactivate_start(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<DeactivateStart>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Response> {
    let Json(body) = body.map_err(|e| {
        problem(&EnrolmentError::Invalid(format!(
            "the deactivation request is not of the expected shape: {}",
            e.body_text()
        )))
    })?;
    let (session, _) = session_for_post(&enrolment, &headers, csrf_header(&headers)).await?;
    let supervisor = body.supervisor_id.trim().to_ascii_lowercase();
    // Refused before anyone is asked for a passkey: a wrong form, a step the identity's
    // status does not allow, or the clerk approving their own deactivation.
    let checked = async {
        enrolment
            .check_deactivation(&id, &body.reason, &body.note)
            .await?;
        if supervisor == session.staff_id {
            return Err(EnrolmentError::Forbidden(
                "nobody approves their own action: another supervisor must authenticate".into(),
            ));
        }
        Ok(())
    }
    .await;
    if let Err(e) = checked {
        return Err(problem(
            &enrolment
                .refuse_step(&session, Action::Deactivate, &id, e)
                .await,
        ));
    }
    match enrolment
        .start_staff_authentication(
            &session.desk,
            &supervisor,
            "approve",
            Some(&deactivation_context(
                &id,
                &session,
                &body.reason,
                &body.note,
            )),
        )
        .await
    {
        Ok((ceremony, options)) => Ok(no_store(
            Json(serde_json::json!({ "ceremony": ceremony, "options": options })).into_response(),
        )),
        Err(e) => Err(problem(&e)),
    }
}

/// A supervisor approves a deactivation with their ID card: the form is checked first,
/// then to the card listener, bound to this clerk, reason and note.
async fn deactivate_card_start(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<LifecycleForm>, FormRejection>,
) -> Result<Response, Response> {
    let Form(form) = form.map_err(|_| incomplete("deactivation"))?;
    let (session, csrf) = session_for_post(&enrolment, &headers, Some(&form.csrf)).await?;
    let started = async {
        enrolment
            .check_deactivation(&id, &form.reason, &form.note)
            .await?;
        let approval = CardApproval::Deactivation {
            application: id.clone(),
            clerk: session.staff_id.clone(),
            version: form.version,
            reason: form.reason.trim().to_owned(),
            note: form.note.trim().to_owned(),
        };
        enrolment
            .start_card_login(&session.desk, Some(&approval))
            .await
    }
    .await;
    Ok(match started {
        Ok(location) => see_other(&location),
        Err(e) => {
            let e = enrolment
                .refuse_step(&session, Action::Deactivate, &id, e)
                .await;
            after_case_post(&enrolment, &session, &csrf, &id, Err(e)).await
        }
    })
}

async fn deactivate_finish(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<DeactivateFinish>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Response> {
    let Json(body) = body.map_err(|e| {
        problem(&EnrolmentError::Invalid(format!(
            "the deactivation request is not of the expected shape: {}",
            e.body_text()
        )))
    })?;
    let (session, _) = session_for_post(&enrolment, &headers, csrf_header(&headers)).await?;
    let result = async {
        let (supervisor, _, role) = enrolment
            .finish_staff_authentication(
                &session.desk,
                &body.ceremony,
                "approve",
                Some(&deactivation_context(
                    &id,
                    &session,
                    &body.reason,
                    &body.note,
                )),
                &body.credential,
            )
            .await?;
        enrolment
            .deactivate(
                &session,
                &id,
                body.version,
                &supervisor,
                role,
                &body.reason,
                &body.note,
            )
            .await
    }
    .await;
    match result {
        Ok(_) => Ok(no_store(
            Json(serde_json::json!({
                "location": format!("/desk/applications/{id}?done=deactivated"),
            }))
            .into_response(),
        )),
        Err(e) => Err(problem(
            &enrolment
                .refuse_step(&session, Action::Deactivate, &id, e)
                .await,
        )),
    }
}

// ---- Status for relying services -----------------------------------------------------------

fn unauthorised(detail: &str) -> Response {
    let mut response =
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorised", detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"eid-enrolment\""),
    );
    no_store(response)
}

/// `GET /api/v1/identities/{national_id}/status`, for the relying services configured
/// as `[[enrolment.status_client]]`.
async fn identity_status(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    Path(national_id): Path<String>,
) -> Response {
    let clients = &enrolment.ctx().config.enrolment.status_clients;
    if clients.is_empty() {
        return unauthorised(
            "the status API has no clients configured ([[enrolment.status_client]])",
        );
    }
    let callers = clients.iter().map(|c| (c.name.as_str(), c.token.as_ref()));
    let caller = match eid_core::http::bearer_caller(&headers, callers) {
        Ok(name) => name.to_owned(),
        Err(eid_core::http::BearerRefusal::Missing) => {
            return unauthorised("a bearer token is required");
        }
        Err(_) => return unauthorised("the bearer token is not a status client's"),
    };
    let number = match NationalIdNumber::parse(&national_id) {
        Ok(number) => number,
        Err(e) => {
            return no_store(
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    format!("{:?} is not a national identity number: {e}", national_id),
                )
                .into_response(),
            );
        }
    };
    tracing::debug!(caller, "identity status query");
    match enrolment.identity_status_for(&caller, &number).await {
        Ok(Some(status)) => {
            let since = time::OffsetDateTime::from_unix_timestamp(status.since)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                });
            let mut body = serde_json::json!({
                "national_id": status.national_id,
                "status": status.status,
                "since": since,
            });
            if let Some(reason) = status.reason {
                body["reason"] = serde_json::Value::String(reason);
            }
            no_store(Json(body).into_response())
        }
        Ok(None) => problem(&EnrolmentError::NotFound(format!(
            "no identity has the national identity number {}",
            number.as_str()
        ))),
        Err(e) => problem(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SimActivationBody {
    national_id: String,
    phone_number: String,
    sim_id: String,
    /// PEM.
    authentication_csr: String,
    /// PEM.
    signing_csr: String,
    signing_key: eid_hsm::KeyAttributes,
}

fn pem_certificate(der: &[u8]) -> String {
    let body = base64ct::Base64::encode_string(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// `POST /api/v1/sims/activations`: a mobile operator (`[[enrolment.operator_client]]`)
/// activates a SIM over the air for a citizen verified in person.
async fn sim_activation(
    State(enrolment): State<Enrolment>,
    headers: HeaderMap,
    body: Result<Json<SimActivationBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let clients = &enrolment.ctx().config.enrolment.operator_clients;
    if clients.is_empty() {
        return unauthorised(
            "over-the-air activation has no operators configured ([[enrolment.operator_client]])",
        );
    }
    let callers = clients.iter().map(|c| (c.name.as_str(), c.token.as_ref()));
    let operator = match eid_core::http::bearer_caller(&headers, callers) {
        Ok(name) => name.to_owned(),
        Err(eid_core::http::BearerRefusal::Missing) => {
            return unauthorised("a bearer token is required");
        }
        Err(_) => return unauthorised("the bearer token is not an operator's"),
    };
    let body = match body {
        Ok(Json(body)) => body,
        Err(e) => {
            return problem(&EnrolmentError::Invalid(format!(
                "the activation is not valid JSON of the expected shape: {}",
                e.body_text()
            )));
        }
    };
    let request = crate::OtaRequest {
        national_id: body.national_id,
        phone_number: body.phone_number,
        sim_id: body.sim_id,
        authentication_csr: body.authentication_csr.into_bytes(),
        signing_csr: body.signing_csr.into_bytes(),
        signing_key: body.signing_key,
    };
    match enrolment.activate_over_the_air(&operator, request).await {
        Ok(outcome) => no_store(
            (
                StatusCode::CREATED,
                Json(serde_json::json!({
                    "activation_id": outcome.activation_id,
                    "authentication_certificate": pem_certificate(&outcome.authentication.der),
                    "authentication_serial": outcome.authentication.serial,
                    "signing_certificate": pem_certificate(&outcome.signing.der),
                    "signing_serial": outcome.signing.serial,
                })),
            )
                .into_response(),
        ),
        Err(e) => problem(&e),
    }
}
