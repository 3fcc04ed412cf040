//! The relying-party registry's admin API, for the operators' tooling: the same
//! operations as `eid rp`, over HTTP, for callers configured as `[[idp.admin_client]]`
//! (bearer tokens from files or the environment). Every change is audited with the
//! caller as the actor.

use axum::{
    Json, Router,
    extract::{Path, State, rejection::JsonRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use eid_core::http::Problem;
use serde::Deserialize;
use serde_json::json;

use crate::{
    Idp, IdpError, Level,
    clients::{self, AuthMethod, NewClient},
};

pub(crate) fn routes(idp: &Idp) -> Router {
    Router::new()
        .route("/admin/api/v1/clients", get(list).post(add))
        .route(
            "/admin/api/v1/clients/{client_id}",
            axum::routing::delete(remove),
        )
        .route(
            "/admin/api/v1/clients/{client_id}/secret",
            post(rotate_secret),
        )
        .with_state(idp.clone())
}

/// The admin caller's name, from its bearer token.
fn caller(idp: &Idp, headers: &HeaderMap) -> Result<String, Problem> {
    let clients = &idp.ctx().config.idp.admin_clients;
    if clients.is_empty() {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorised",
            "the admin API has no callers configured ([[idp.admin_client]])",
        ));
    }
    let callers = clients.iter().map(|c| (c.name.as_str(), c.token.as_ref()));
    match eid_core::http::bearer_caller(headers, callers) {
        Ok(name) => Ok(format!("admin:{name}")),
        Err(eid_core::http::BearerRefusal::Missing) => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorised",
            "a bearer token is required",
        )),
        Err(eid_core::http::BearerRefusal::Unknown) => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorised",
            "the bearer token is not an admin client's",
        )),
    }
}

fn problem(error: IdpError) -> Problem {
    match error {
        IdpError::Invalid { what, detail } => Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-client",
            format!("{what}: {detail}"),
        ),
        IdpError::NotFound(what) => Problem::new(StatusCode::NOT_FOUND, "not-found", what),
        other => Problem::internal("relying-party registry", &other),
    }
}

async fn list(State(idp): State<Idp>, headers: HeaderMap) -> Response {
    if let Err(p) = caller(&idp, &headers) {
        return p.into_response();
    }
    match clients::list(idp.ctx()).await {
        Ok(all) => Json(
            all.into_iter()
                .map(
                    |c| json!({ "client_id": c.client_id, "name": c.name, "metadata": c.metadata }),
                )
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => problem(e).into_response(),
    }
}

/// A registration as the admin API takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    name: String,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default)]
    auth_method: Option<String>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    public_subject: bool,
    #[serde(default)]
    sector: Option<String>,
    #[serde(default)]
    min_level: Option<String>,
    #[serde(default)]
    require_par: bool,
    #[serde(default)]
    require_dpop: bool,
    #[serde(default)]
    backchannel_logout_uri: Option<String>,
    /// `id_token_signed_response_alg` (RFC 7591 name).
    #[serde(default)]
    id_token_signed_response_alg: Option<String>,
    /// `backchannel_token_delivery_mode` (CIBA: poll or ping).
    #[serde(default)]
    backchannel_token_delivery_mode: Option<String>,
    /// `backchannel_client_notification_endpoint` (CIBA ping mode).
    #[serde(default)]
    backchannel_client_notification_endpoint: Option<String>,
}

impl Registration {
    fn into_new_client(self) -> Result<NewClient, IdpError> {
        let mut new = NewClient::new(self.name, self.redirect_uris);
        new.post_logout_redirect_uris = self.post_logout_redirect_uris;
        if let Some(scopes) = self.scopes {
            new.scopes = scopes;
        }
        if let Some(grants) = self.grant_types {
            new.grant_types = grants;
        }
        if let Some(method) = self.auth_method {
            new.auth_method = AuthMethod::parse(&method).ok_or_else(|| {
                IdpError::invalid(
                    "auth_method",
                    format!(
                        "`{method}` is not client_secret_basic, client_secret_post or private_key_jwt"
                    ),
                )
            })?;
        }
        if let Some(level) = self.min_level {
            new.min_level = Level::parse(&level).ok_or_else(|| {
                IdpError::invalid(
                    "min_level",
                    format!("`{level}` is not low, substantial or high"),
                )
            })?;
        }
        new.jwks_uri = self.jwks_uri;
        new.id_token_alg = self.id_token_signed_response_alg;
        new.public_subject = self.public_subject;
        new.sector = self.sector;
        new.require_par = self.require_par;
        new.require_dpop = self.require_dpop;
        new.backchannel_logout_uri = self.backchannel_logout_uri;
        new.ciba_mode = self.backchannel_token_delivery_mode;
        new.ciba_notification_endpoint = self.backchannel_client_notification_endpoint;
        Ok(new)
    }
}

async fn add(
    State(idp): State<Idp>,
    headers: HeaderMap,
    body: Result<Json<Registration>, JsonRejection>,
) -> Response {
    let actor = match caller(&idp, &headers) {
        Ok(actor) => actor,
        Err(p) => return p.into_response(),
    };
    let registration = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return Problem::new(StatusCode::BAD_REQUEST, "invalid-json", e.body_text())
                .into_response();
        }
    };
    let result = async {
        let new = registration.into_new_client()?;
        clients::register(idp.ctx(), &actor, &new).await
    }
    .await;
    match result {
        Ok(registered) => {
            let mut body = json!({
                "client_id": registered.client.client_id,
                "name": registered.client.name,
                "metadata": registered.client.metadata,
            });
            if let Some(secret) = &registered.secret {
                body["client_secret"] = secret.as_str().into();
            }
            (
                StatusCode::CREATED,
                [(header::CACHE_CONTROL, "no-store")],
                Json(body),
            )
                .into_response()
        }
        Err(e) => problem(e).into_response(),
    }
}

async fn remove(
    State(idp): State<Idp>,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Response {
    let actor = match caller(&idp, &headers) {
        Ok(actor) => actor,
        Err(p) => return p.into_response(),
    };
    let removed = clients::remove(idp.ctx(), &actor, &client_id).await;
    idp.forget_client(&client_id);
    match removed {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => problem(e).into_response(),
    }
}

async fn rotate_secret(
    State(idp): State<Idp>,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Response {
    let actor = match caller(&idp, &headers) {
        Ok(actor) => actor,
        Err(p) => return p.into_response(),
    };
    let rotated = clients::rotate_secret(idp.ctx(), &actor, &client_id).await;
    idp.forget_client(&client_id);
    match rotated {
        Ok(secret) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(json!({ "client_id": client_id, "client_secret": secret.as_str() })),
        )
            .into_response(),
        Err(e) => problem(e).into_response(),
    }
}
