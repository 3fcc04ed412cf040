//! The simulator's HTTP surfaces: the relying side's API (MID REST shape), the phone's
//! JSON API and page. Handlers parse, call the gateway, map the result.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use axum::{
    Form, Json, Router,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use eid_core::web;
use eid_hsm::{
    PinKind, SecretString,
    mobile::{
        CertificateRequest, CertificateResponse, ErrorBody, Operation, SessionStarted, StartRequest,
    },
};
use tokio_util::sync::CancellationToken;

use crate::{GatewayTls, SERVICE, SimGateway, SimGatewayError};

const CSRF_COOKIE: &str = "sim_gateway_csrf";

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

impl IntoResponse for SimGatewayError {
    fn into_response(self) -> Response {
        match self {
            Self::BadRequest(m) => error(StatusCode::BAD_REQUEST, m),
            Self::NotFound(m) => error(StatusCode::NOT_FOUND, m),
            Self::Conflict(m) => error(StatusCode::CONFLICT, m),
            other => eid_core::http::Problem::internal("sim gateway", &other).into_response(),
        }
    }
}

/// The simulator's routes, wrapped with `/healthz`, `/metrics` and the rest.
pub fn router(gateway: &SimGateway) -> Router {
    let routes = Router::new()
        .route("/authentication", post(start_authentication))
        .route("/signature", post(start_signature))
        .route("/certificate", post(certificate))
        .route("/authentication/session/{id}", get(poll_authentication))
        .route("/signature/session/{id}", get(poll_signature))
        .route("/phone/api/{phone}/pending", get(api_pending))
        .route(
            "/phone/api/{phone}/sessions/{id}/confirm",
            post(api_confirm),
        )
        .route("/phone/api/{phone}/sessions/{id}/cancel", post(api_cancel))
        .route("/phone/api/{phone}/sessions/{id}/fault", post(api_fault))
        .route("/phone/api/{phone}/unblock", post(api_unblock))
        .route("/phone", get(page))
        .route("/phone/confirm", post(form_confirm))
        .route("/phone/cancel", post(form_cancel))
        .with_state(gateway.clone());
    eid_core::http::service_router(
        SERVICE,
        "SIM gateway simulator: the mobile operator's signature gateway and the phones (development and tests only)",
        &gateway.inner.ctx,
        routes,
    )
}

async fn start(
    gateway: SimGateway,
    operation: Operation,
    body: Result<Json<StartRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    match gateway.start(operation, request).await {
        Ok(session_id) => Json(SessionStarted { session_id }).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn certificate(
    State(g): State<SimGateway>,
    body: Result<Json<CertificateRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    match g.signing_certificate(&request).await {
        Ok(Some(der)) => Json(CertificateResponse {
            result: "OK".into(),
            cert: Some(<base64ct::Base64 as base64ct::Encoding>::encode_string(
                &der,
            )),
        })
        .into_response(),
        Ok(None) => Json(CertificateResponse {
            result: "NOT_FOUND".into(),
            cert: None,
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn start_authentication(
    State(g): State<SimGateway>,
    body: Result<Json<StartRequest>, JsonRejection>,
) -> Response {
    start(g, Operation::Authentication, body).await
}

async fn start_signature(
    State(g): State<SimGateway>,
    body: Result<Json<StartRequest>, JsonRejection>,
) -> Response {
    start(g, Operation::Signature, body).await
}

/// `timeoutMs` clamped as MID REST does: at least 1 s, at most 2 minutes; 10 s unsaid.
fn wait(query: &HashMap<String, String>) -> Result<Duration, &'static str> {
    let millis = match query.get("timeoutMs") {
        None => 10_000,
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| "timeoutMs must be a whole number of milliseconds")?,
    };
    Ok(Duration::from_millis(millis.clamp(1_000, 120_000)))
}

async fn poll(
    gateway: SimGateway,
    operation: Operation,
    id: String,
    query: HashMap<String, String>,
) -> Response {
    let wait = match wait(&query) {
        Ok(wait) => wait,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match gateway.poll(operation, &id, wait).await {
        Ok(status) => Json(status).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn poll_authentication(
    State(g): State<SimGateway>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    poll(g, Operation::Authentication, id, q).await
}

async fn poll_signature(
    State(g): State<SimGateway>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    poll(g, Operation::Signature, id, q).await
}

async fn api_pending(State(g): State<SimGateway>, Path(phone): Path<String>) -> Response {
    match g.pending(&phone).await {
        Ok(pending) => Json(pending).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct PinBody {
    pin: SecretString,
}

async fn api_confirm(
    State(g): State<SimGateway>,
    Path((phone, id)): Path<(String, String)>,
    body: Result<Json<PinBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    match g.confirm(&phone, &id, body.pin).await {
        Ok(confirmation) => Json(confirmation).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn api_cancel(
    State(g): State<SimGateway>,
    Path((phone, id)): Path<(String, String)>,
) -> Response {
    match g.cancel(&phone, &id).await {
        Ok(()) => Json(serde_json::json!({ "outcome": "cancelled" })).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn api_fault(
    State(g): State<SimGateway>,
    Path((phone, id)): Path<(String, String)>,
    body: Result<Json<crate::Fault>, JsonRejection>,
) -> Response {
    let Json(fault) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    match g.fault(&phone, &id, fault).await {
        Ok(()) => Json(serde_json::json!({ "outcome": "fault" })).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct UnblockBody {
    /// `PIN1` or `PIN2`.
    pin: String,
    puk: SecretString,
    new_pin: SecretString,
}

fn pin_kind(name: &str) -> Option<PinKind> {
    match name {
        "PIN1" | "pin1" => Some(PinKind::Pin1),
        "PIN2" | "pin2" => Some(PinKind::Pin2),
        _ => None,
    }
}

async fn api_unblock(
    State(g): State<SimGateway>,
    Path(phone): Path<String>,
    body: Result<Json<UnblockBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let Some(kind) = pin_kind(&body.pin) else {
        return error(StatusCode::BAD_REQUEST, "pin must be PIN1 or PIN2");
    };
    match g.unblock(&phone, kind, body.puk, body.new_pin).await {
        Ok(()) => Json(serde_json::json!({ "outcome": "unblocked" })).into_response(),
        Err(e) => e.into_response(),
    }
}

// ---- The phone page ------------------------------------------------------------------

fn csrf(gateway: &SimGateway, headers: &HeaderMap) -> (String, Option<String>) {
    match web::cookie(headers, CSRF_COOKIE) {
        Some(cookie) => (cookie, None),
        None => {
            let fresh = crate::random_hex(16).unwrap_or_else(|_| gateway.inner.csrf_secret.clone());
            (fresh.clone(), Some(fresh))
        }
    }
}

async fn page(
    State(g): State<SimGateway>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (cookie, new_cookie) = csrf(&g, &headers);
    let token = web::csrf_token(&cookie, "phone");
    let number = q.get("number").cloned().unwrap_or_default();
    let message = q.get("message").cloned().unwrap_or_default();
    let mut body = String::from(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Simulated phone</title></head><body>\
         <h1>Simulated phone</h1><p>SIM gateway simulator: for development and tests only.</p>\
         <form method=get action=/phone><label>Phone number <input name=number value=\"",
    );
    body.push_str(&web::escape(&number));
    body.push_str("\"></label> <button>Show</button></form>");
    if !message.is_empty() {
        body.push_str(&format!("<p role=status>{}</p>", web::escape(&message)));
    }
    if !number.is_empty() {
        match g.pending(&number).await {
            Ok(pending) if pending.is_empty() => body.push_str("<p>No requests waiting.</p>"),
            Ok(pending) => {
                for p in pending {
                    let hidden = format!(
                        "<input type=hidden name=number value=\"{}\"><input type=hidden name=session value=\"{}\"><input type=hidden name=csrf value=\"{}\">",
                        web::escape(&number),
                        web::escape(&p.session_id),
                        token
                    );
                    body.push_str(&format!(
                        "<section><h2>{}</h2><p>Verification code <strong class=code>{}</strong></p><p class=prompt>{}</p>\
                         <form method=post action=/phone/confirm>{hidden}<label>{} ({} tries left) <input name=pin type=password inputmode=numeric autocomplete=off></label> <button>OK</button></form>\
                         <form method=post action=/phone/cancel>{hidden}<button>Cancel</button></form></section>",
                        web::escape(&p.relying_party_name),
                        p.verification_code,
                        web::escape(&p.prompt),
                        p.pin,
                        p.tries_left
                    ));
                }
            }
            Err(e) => body.push_str(&format!(
                "<p role=alert>{}</p>",
                web::escape(&e.to_string())
            )),
        }
    }
    body.push_str("</body></html>");
    let mut response = web::html(StatusCode::OK, body);
    if let Some(value) = new_cookie {
        web::set_cookie(&mut response, CSRF_COOKIE, &value, true, None);
    }
    response
}

#[derive(serde::Deserialize)]
struct PhoneForm {
    number: String,
    session: String,
    csrf: String,
    #[serde(default)]
    pin: Option<SecretString>,
}

fn back(number: &str, message: &str) -> Response {
    let query: String = url_encode(number);
    web::see_other(&format!(
        "/phone?number={query}&message={}",
        url_encode(message)
    ))
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn csrf_ok(headers: &HeaderMap, form: &PhoneForm) -> bool {
    web::cookie(headers, CSRF_COOKIE)
        .is_some_and(|cookie| web::tokens_match(&web::csrf_token(&cookie, "phone"), &form.csrf))
}

async fn form_confirm(
    State(g): State<SimGateway>,
    headers: HeaderMap,
    Form(form): Form<PhoneForm>,
) -> Response {
    if !csrf_ok(&headers, &form) {
        return error(
            StatusCode::FORBIDDEN,
            "the form's CSRF token does not match: reload the page",
        );
    }
    let Some(pin) = form.pin.clone() else {
        return back(&form.number, "Enter the PIN.");
    };
    let message = match g.confirm(&form.number, &form.session, pin).await {
        Ok(crate::Confirmation::Signed) => "Confirmed: the SIM signed.".to_owned(),
        Ok(crate::Confirmation::WrongPin { tries_left }) => {
            format!("Wrong PIN: {tries_left} tries left.")
        }
        Ok(crate::Confirmation::Blocked) => "PIN blocked: unblock it with the PUK.".to_owned(),
        Err(
            e @ (SimGatewayError::NotFound(_)
            | SimGatewayError::Conflict(_)
            | SimGatewayError::BadRequest(_)),
        ) => e.to_string(),
        Err(e) => return e.into_response(),
    };
    back(&form.number, &message)
}

async fn form_cancel(
    State(g): State<SimGateway>,
    headers: HeaderMap,
    Form(form): Form<PhoneForm>,
) -> Response {
    if !csrf_ok(&headers, &form) {
        return error(
            StatusCode::FORBIDDEN,
            "the form's CSRF token does not match: reload the page",
        );
    }
    let message = match g.cancel(&form.number, &form.session).await {
        Ok(()) => "Cancelled.".to_owned(),
        Err(e @ (SimGatewayError::NotFound(_) | SimGatewayError::Conflict(_))) => e.to_string(),
        Err(e) => return e.into_response(),
    };
    back(&form.number, &message)
}

// ---- Serving over TLS ----------------------------------------------------------------

/// Serves the simulator on `listener` over TLS until `shutdown`.
pub async fn serve_tls(
    gateway: SimGateway,
    tls: GatewayTls,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
    let router = router(&gateway);
    tracing::info!(service = SERVICE, address = ?listener.local_addr().ok(), "listening (TLS)");
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "sim gateway accept failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "sim gateway TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper_util::service::TowerToHyperService::new(
                router.layer(axum::Extension(axum::extract::ConnectInfo(peer))),
            );
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "sim gateway connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {}
            }
        });
    }
}
