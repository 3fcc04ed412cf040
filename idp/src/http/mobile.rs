//! Mobile-ID login in the browser: the login page's form sends the request to the
//! citizen's phone, the waiting page shows the verification code, and the answer is
//! awaited by long polls (JSON for the page's script, or a plain link that waits on
//! the server and redirects).

use axum::{
    Form, Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use eid_core::web::{csrf_token, html, no_store, see_other};
use serde_json::json;

use super::{
    LoginLookup, SESSION_COOKIE, cancel_url, error_page, finish_login, internal, lang_of,
    lookup_login, set_cookie,
};
use crate::{
    Idp, flow,
    mobile::{Ask, Progress, Purpose},
    pages,
};

pub(super) fn routes() -> Router<Idp> {
    Router::new()
        .route("/login/{id}/mobile-id", post(start))
        .route("/login/{id}/mobile-id/{auth}", get(waiting_page))
        .route("/login/{id}/mobile-id/{auth}/status", get(status))
        .route("/login/{id}/mobile-id/{auth}/continue", get(continue_page))
        .route("/static/mobile-id.js", get(mobile_script))
}

async fn mobile_script() -> Response {
    super::script(include_str!("../../static/mobile-id.js"))
}

/// The interaction `id`, waiting for a login in this browser; else the page to show.
async fn browser_interaction(
    idp: &Idp,
    headers: &HeaderMap,
    id: &str,
) -> Result<(flow::Interaction, String), Response> {
    match lookup_login(idp, headers, id).await {
        Ok(LoginLookup::Found(interaction, browser)) => Ok((interaction, browser)),
        Ok(LoginLookup::NoBrowser) => Err(error_page(
            headers,
            StatusCode::BAD_REQUEST,
            "This browser did not start the login (no login cookie). Start again from the service.",
        )),
        Ok(LoginLookup::NotWaiting) => Err(error_page(
            headers,
            StatusCode::NOT_FOUND,
            "This login has expired or is already finished.",
        )),
        Err(e) => Err(internal(headers, &e)),
    }
}

#[derive(serde::Deserialize)]
struct StartForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    phone_number: String,
    #[serde(default)]
    national_id: String,
}

fn back_to_login(id: &str, code: &str) -> Response {
    see_other(&format!("/login/{id}?mobile_error={code}"))
}

async fn start(
    State(idp): State<Idp>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<StartForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (interaction, browser) = match browser_interaction(&idp, &headers, &id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Ok(Form(form)) = form else {
        return back_to_login(&id, "INVALID_INPUT");
    };
    if form.csrf != csrf_token(&browser, &format!("/login/{id}/mobile-id")) {
        return error_page(
            &headers,
            StatusCode::FORBIDDEN,
            "This form is out of date (the page was opened in another login). Go back to the service and start again.",
        );
    }
    let client_name = match idp.client(&interaction.request.client_id).await {
        Ok(Some(client)) => client.name,
        Ok(None) => {
            return error_page(
                &headers,
                StatusCode::NOT_FOUND,
                "The service is no longer registered.",
            );
        }
        Err(e) => return internal(&headers, &e),
    };
    let ask = Ask {
        purpose: Purpose::Login,
        interaction_id: Some(&id),
        phone_number: &form.phone_number,
        national_id: &form.national_id,
        display_text: &client_name,
        actor: "service:idp",
    };
    match idp.mobile_start(&ask).await {
        Ok(Ok(started)) => see_other(&format!("/login/{id}/mobile-id/{}", started.auth_id)),
        Ok(Err(refusal)) => back_to_login(&id, &refusal.code),
        Err(e) => internal(&headers, &e),
    }
}

async fn waiting_page(
    State(idp): State<Idp>,
    headers: HeaderMap,
    Path((id, auth)): Path<(String, String)>,
) -> Response {
    let (interaction, _) = match browser_interaction(&idp, &headers, &id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let code = match idp.mobile_code(&auth, &id).await {
        Ok(Some(code)) => code,
        Ok(None) => {
            return error_page(
                &headers,
                StatusCode::NOT_FOUND,
                "This mobile-ID request is not part of this login.",
            );
        }
        Err(e) => return internal(&headers, &e),
    };
    let lang = lang_of(&headers, interaction.request.ui_locales.as_deref());
    html(
        StatusCode::OK,
        pages::mobile_wait(
            lang,
            &code.to_string(),
            &format!("/login/{id}/mobile-id/{auth}/status"),
            &format!("/login/{id}/mobile-id/{auth}/continue"),
            &cancel_url(&idp, &interaction.request),
        ),
    )
}

/// Where a poll leaves the login.
enum Step {
    Waiting,
    Done {
        location: String,
        session_cookie: String,
    },
    /// The refusal's code, and the language of the login's pages.
    Failed(String, pages::Lang),
}

/// One long poll for the interaction's mobile-ID request, and the login finished when
/// the citizen has confirmed.
async fn advance(idp: &Idp, headers: &HeaderMap, id: &str, auth: &str) -> Result<Step, Response> {
    let (interaction, browser) = browser_interaction(idp, headers, id).await?;
    match idp.mobile_code(auth, id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(error_page(
                headers,
                StatusCode::NOT_FOUND,
                "This mobile-ID request is not part of this login.",
            ));
        }
        Err(e) => return Err(internal(headers, &e)),
    }
    let progress = match idp.mobile_poll(auth).await {
        Ok(Some(progress)) => progress,
        Ok(None) => {
            return Ok(Step::Failed(
                "EXPIRED".into(),
                lang_of(headers, interaction.request.ui_locales.as_deref()),
            ));
        }
        Err(e) => return Err(internal(headers, &e)),
    };
    match progress {
        Progress::Waiting { .. } => Ok(Step::Waiting),
        Progress::Failed(refusal) => Ok(Step::Failed(
            refusal.code,
            lang_of(headers, interaction.request.ui_locales.as_deref()),
        )),
        // Another poll (a second tab) finished this login.
        Progress::AlreadyDone => Err(error_page(
            headers,
            StatusCode::CONFLICT,
            "This login is already finished.",
        )),
        Progress::Done {
            citizen,
            authentication,
        } => match finish_login(
            idp,
            headers,
            &interaction,
            &browser,
            &citizen.citizen_id,
            &authentication,
        )
        .await
        {
            Ok(Some((location, session_cookie))) => Ok(Step::Done {
                location,
                session_cookie,
            }),
            Ok(None) => Err(error_page(
                headers,
                StatusCode::CONFLICT,
                "This login is already finished.",
            )),
            Err(e) => Err(internal(headers, &e)),
        },
    }
}

/// The page script's long poll (JSON).
async fn status(
    State(idp): State<Idp>,
    headers: HeaderMap,
    Path((id, auth)): Path<(String, String)>,
) -> Response {
    match advance(&idp, &headers, &id, &auth).await {
        Ok(Step::Waiting) => no_store(Json(json!({ "state": "waiting" })).into_response()),
        Ok(Step::Done {
            location,
            session_cookie,
        }) => {
            let mut response =
                no_store(Json(json!({ "state": "done", "location": location })).into_response());
            set_cookie(&mut response, &idp, SESSION_COOKIE, &session_cookie, None);
            response
        }
        Ok(Step::Failed(code, lang)) => no_store(
            Json(json!({
                "state": "failed",
                "code": code,
                "message": pages::mobile_error(lang, &code),
                "retry": format!("/login/{id}"),
            }))
            .into_response(),
        ),
        Err(page) => {
            let status = page.status();
            no_store(
                (
                    status,
                    Json(json!({
                        "state": "failed",
                        "message": "This login has expired or is already finished. Go back to the service and start again.",
                    })),
                )
                    .into_response(),
            )
        }
    }
}

/// Without scripts: waits on the server, then on to the service, back to the waiting
/// page, or to the login page with the reason.
async fn continue_page(
    State(idp): State<Idp>,
    headers: HeaderMap,
    Path((id, auth)): Path<(String, String)>,
) -> Response {
    match advance(&idp, &headers, &id, &auth).await {
        Ok(Step::Waiting) => see_other(&format!("/login/{id}/mobile-id/{auth}")),
        Ok(Step::Done {
            location,
            session_cookie,
        }) => {
            let mut response = see_other(&location);
            set_cookie(&mut response, &idp, SESSION_COOKIE, &session_cookie, None);
            response
        }
        Ok(Step::Failed(code, _)) => back_to_login(&id, &code),
        Err(page) => page,
    }
}
