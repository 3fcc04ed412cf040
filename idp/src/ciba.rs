//! OpenID Connect Client-Initiated Backchannel Authentication (CIBA Core 1.0), poll and
//! ping modes, backed by mobile ID: a call centre or a kiosk asks for a citizen by
//! phone number and national identity number, the citizen confirms on the phone, and
//! the client collects the tokens at the token endpoint. No browser takes part.
//!
//! `login_hint` is `phone=<+number>;national_id=<number>` (both are what the mobile
//! operator's gateway needs); `binding_message` is shown on the phone (GSM-7, at most
//! 40 characters) and the answer carries the 4-digit `verification_code` the phone also
//! shows, for the clerk or screen to read out.

use std::time::Duration;

use eid_core::{AuditEvent, Outcome, audit};
use eid_hsm::mobile::protocol::{self, DisplayTextFormat};
use serde_json::{Value, json};
use sqlx::Row;

use crate::{
    Idp, IdpError, OAuthError,
    authorize::Parameters,
    clients::{CIBA_GRANT, CibaMode, Client, sha256_hex},
    error::query,
    flow::{self, NewCode, NewGrant},
    mobile::{Ask, Progress, Purpose, Refusal},
    random_token, tokens,
};

/// The polling interval the provider asks for, seconds (CIBA Core 7.3: default 5).
const INTERVAL_SECS: i64 = 5;
/// The longest a request can wait for the citizen: the gateway's session lifetime.
const MAX_EXPIRY_SECS: i64 = 300;
/// The shortest `requested_expiry` honoured: less leaves the citizen no time to answer.
const MIN_EXPIRY_SECS: i64 = 60;

/// The phone number and national identity number in a `login_hint`.
fn parse_login_hint(hint: &str) -> Result<(String, String), OAuthError> {
    let bad = |why: &str| {
        OAuthError::invalid_request(format!(
            "login_hint {why}: write it as phone=<+country code and number>;national_id=<number>"
        ))
    };
    let (mut phone, mut national_id) = (None, None);
    for part in hint.split(';') {
        match part.trim().split_once('=') {
            Some(("phone", value)) if phone.is_none() => phone = Some(value.trim().to_owned()),
            Some(("national_id", value)) if national_id.is_none() => {
                national_id = Some(value.trim().to_owned());
            }
            _ => return Err(bad(&format!("has an unknown or repeated part `{part}`"))),
        }
    }
    match (phone, national_id) {
        (Some(phone), Some(national_id)) => Ok((phone, national_id)),
        _ => Err(bad(
            "needs both the phone number and the national identity number",
        )),
    }
}

/// The backchannel authentication endpoint: checks the request, sends the mobile-ID
/// request to the citizen's phone, and answers with `auth_req_id`.
pub async fn authenticate(
    idp: &Idp,
    params: &Parameters,
    authorization: Option<&str>,
) -> Result<Value, OAuthError> {
    let ctx = idp.ctx();
    let endpoint = format!("{}/backchannel/authenticate", ctx.config.idp.issuer);
    let client = tokens::authenticate_client(idp, params, authorization, &endpoint).await?;
    if !client.allows_grant(CIBA_GRANT) {
        return Err(OAuthError::unauthorized_client(format!(
            "this client is not registered for {CIBA_GRANT}"
        )));
    }
    let mode = client.metadata.ciba_mode.unwrap_or(CibaMode::Poll);
    if params.get("request").is_some() {
        return Err(OAuthError::invalid_request(
            "signed authentication requests are not supported: send the parameters as a form",
        ));
    }
    if params.get("user_code").is_some() {
        return Err(OAuthError::invalid_request(
            "user_code is not supported (backchannel_user_code_parameter_supported is false)",
        ));
    }
    let scopes: Vec<&str> = params
        .get("scope")
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    if !scopes.contains(&"openid") {
        return Err(OAuthError::invalid_scope(
            "scope must include openid (CIBA Core 7.1)",
        ));
    }
    if let Some(scope) = scopes.iter().find(|s| !client.allows_scope(s)) {
        return Err(OAuthError::invalid_scope(format!(
            "this client may not ask for `{scope}`"
        )));
    }
    let hints = ["login_hint", "login_hint_token", "id_token_hint"]
        .iter()
        .filter(|h| params.get(h).is_some())
        .count();
    if hints != 1 {
        return Err(OAuthError::invalid_request(
            "exactly one of login_hint, login_hint_token and id_token_hint is required",
        ));
    }
    let Some(hint) = params.get("login_hint") else {
        return Err(OAuthError::invalid_request(
            "only login_hint identifies the citizen here (phone=...;national_id=...)",
        ));
    };
    let (phone, national_id) = parse_login_hint(hint)?;
    if let Some(acr_values) = params.get("acr_values") {
        let known = acr_values
            .split(' ')
            .filter(|a| !a.is_empty())
            .all(|acr| idp.level_of(acr).is_some());
        if !known {
            return Err(OAuthError::invalid_request(format!(
                "acr_values `{acr_values}` names a level this provider does not know"
            )));
        }
    }
    let binding_message = params.get("binding_message");
    if let Some(message) = binding_message
        && let Err(why) = protocol::check_display_text(message, DisplayTextFormat::Gsm7)
    {
        return Err(OAuthError::invalid_binding_message(format!(
            "binding_message is shown on the phone: {why}"
        )));
    }
    let notification_token = params.get("client_notification_token");
    match (mode, notification_token) {
        (CibaMode::Ping, None) => {
            return Err(OAuthError::invalid_request(
                "client_notification_token is required in ping mode",
            ));
        }
        (CibaMode::Ping, Some(token)) if token.is_empty() || token.len() > 1024 => {
            return Err(OAuthError::invalid_request(
                "client_notification_token must be 1 to 1024 characters",
            ));
        }
        _ => {}
    }
    let expiry = match params.get("requested_expiry") {
        None => MAX_EXPIRY_SECS,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|secs| *secs > 0)
            .ok_or_else(|| {
                OAuthError::invalid_request("requested_expiry must be a positive whole number")
            })?
            .clamp(MIN_EXPIRY_SECS, MAX_EXPIRY_SECS),
    };
    let actor = format!("client:{}", client.client_id);
    let ask = Ask {
        purpose: Purpose::Ciba,
        interaction_id: None,
        phone_number: &phone,
        national_id: &national_id,
        display_text: binding_message.unwrap_or(&client.name),
        actor: &actor,
    };
    let started = match idp.mobile_start(&ask).await? {
        Ok(started) => started,
        Err(refusal) if refusal.code == "INVALID_INPUT" => {
            return Err(OAuthError::invalid_request(format!(
                "login_hint: {}",
                refusal.detail
            )));
        }
        Err(refusal) => {
            return Err(OAuthError::temporarily_unavailable(format!(
                "mobile ID cannot be reached ({})",
                refusal.code
            )));
        }
    };
    let auth_req_id = random_token();
    let auth_req_sha256 = sha256_hex(auth_req_id.as_bytes());
    let now = ctx.clock.now().unix_timestamp();
    let expires_at = now + expiry;
    let mut tx = ctx.db.begin_write().await.map_err(IdpError::from)?;
    sqlx::query(
        "INSERT INTO idp_ciba_request (auth_req_sha256, client_id, scope, binding_message, \
         auth_id, mode, notification_token, ping_auth_req_id, state, poll_interval, \
         created_at, expires_at, watched_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $11, $10)",
    )
    .bind(&auth_req_sha256)
    .bind(&client.client_id)
    .bind(scopes.join(" "))
    .bind(binding_message)
    .bind(&started.auth_id)
    .bind(mode.name())
    .bind(notification_token)
    .bind((mode == CibaMode::Ping).then_some(auth_req_id.as_str()))
    .bind(INTERVAL_SECS)
    .bind(now)
    .bind(expires_at)
    .execute(&mut *tx)
    .await
    .map_err(query("recording a CIBA request"))?;
    audit::append(
        &mut tx,
        ctx.clock.as_ref(),
        &AuditEvent::new(&actor, "idp.ciba.request", "citizen", &national_id).details(json!({
            "mode": mode.name(),
            "scope": scopes.join(" "),
            "expires_in": expiry,
        })),
    )
    .await
    .map_err(IdpError::from)?;
    tx.commit()
        .await
        .map_err(query("recording a CIBA request"))?;
    spawn_watch(idp, client, auth_req_sha256, started.auth_id, expires_at);
    Ok(json!({
        "auth_req_id": auth_req_id,
        "expires_in": expiry,
        "interval": INTERVAL_SECS,
        "verification_code": started.code.to_string(),
    }))
}

/// Follows request `auth_req_sha256` in a task of its own, unless this process
/// already does.
fn spawn_watch(
    idp: &Idp,
    client: Client,
    auth_req_sha256: String,
    auth_id: String,
    expires_at: i64,
) {
    let Ok(mut watching) = idp.inner.ciba_watching.lock() else {
        return;
    };
    if watching.insert(auth_req_sha256.clone()) {
        tokio::spawn(watch(
            idp.clone(),
            client,
            auth_req_sha256,
            auth_id,
            expires_at,
        ));
    }
}

/// Takes up the pending requests no process is watching (the one that accepted them
/// stopped): run by the provider's periodic work.
pub(crate) async fn resume(idp: &Idp) -> Result<(), IdpError> {
    let ctx = idp.ctx();
    let now = ctx.clock.now().unix_timestamp();
    // A watcher marks its request at each long poll: one unmarked for two polls and a
    // margin has no watcher left.
    let stale = idp.mobile_poll_secs().map_or(45, |secs| 2 * secs + 5);
    let rows = sqlx::query(
        "SELECT auth_req_sha256, client_id, auth_id, expires_at FROM idp_ciba_request \
         WHERE state = 'pending' AND expires_at > $1 \
         AND (watched_at IS NULL OR watched_at < $2)",
    )
    .bind(now)
    .bind(now - stale)
    .fetch_all(ctx.db.pool())
    .await
    .map_err(query("finding unwatched CIBA requests"))?;
    for row in rows {
        let read = |e| query("reading a CIBA request")(e);
        let hash: String = row.try_get("auth_req_sha256").map_err(read)?;
        let client_id: String = row.try_get("client_id").map_err(read)?;
        let auth_id: String = row.try_get("auth_id").map_err(read)?;
        let expires_at: i64 = row.try_get("expires_at").map_err(read)?;
        let Some(client) = idp.client(&client_id).await? else {
            conclude(idp, &hash, "denied", Some("CLIENT_REMOVED")).await?;
            continue;
        };
        tracing::info!(client = %client_id, "CIBA: taking up a request no process was watching");
        spawn_watch(idp, client, hash, auth_id, expires_at);
    }
    Ok(())
}

/// Follows a CIBA request's mobile-ID answer until it comes or the request expires:
/// on success the grant and its code (keyed by the auth_req_id's hash) are stored; a
/// ping-mode client is then notified either way.
async fn watch(
    idp: Idp,
    client: Client,
    auth_req_sha256: String,
    auth_id: String,
    expires_at: i64,
) {
    loop {
        if idp.ctx().clock.now().unix_timestamp() >= expires_at {
            let _ = conclude(&idp, &auth_req_sha256, "denied", Some("EXPIRED")).await;
            break;
        }
        // Seen to be watched, so no other process takes it up.
        let _ =
            sqlx::query("UPDATE idp_ciba_request SET watched_at = $1 WHERE auth_req_sha256 = $2")
                .bind(idp.ctx().clock.now().unix_timestamp())
                .bind(&auth_req_sha256)
                .execute(idp.ctx().db.pool())
                .await;
        let progress = match idp.mobile_poll(&auth_id).await {
            Ok(Some(progress)) => progress,
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(%error, "CIBA: mobile-ID poll failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let concluded = match progress {
            Progress::Waiting { .. } => continue,
            Progress::AlreadyDone => break,
            Progress::Failed(refusal) => {
                conclude(&idp, &auth_req_sha256, "denied", Some(&refusal.code)).await
            }
            Progress::Done {
                citizen,
                authentication,
            } => authenticated(&idp, &auth_req_sha256, &citizen.citizen_id, authentication).await,
        };
        match concluded {
            Ok(()) => notify(&idp, &client, &auth_req_sha256).await,
            Err(error) => tracing::error!(%error, "CIBA: could not record the citizen's answer"),
        }
        break;
    }
    if let Ok(mut watching) = idp.inner.ciba_watching.lock() {
        watching.remove(&auth_req_sha256);
    }
}

/// Stores the grant of an answered request, and its code keyed by the request's hash.
async fn authenticated(
    idp: &Idp,
    auth_req_sha256: &str,
    citizen_id: &str,
    authentication: flow::Authentication,
) -> Result<(), IdpError> {
    let ctx = idp.ctx();
    let row = sqlx::query(
        "SELECT client_id, scope, expires_at FROM idp_ciba_request WHERE auth_req_sha256 = $1",
    )
    .bind(auth_req_sha256)
    .fetch_one(ctx.db.pool())
    .await
    .map_err(query("reading a CIBA request"))?;
    let read = |e| query("reading a CIBA request")(e);
    let client_id: String = row.try_get("client_id").map_err(read)?;
    let scope: String = row.try_get("scope").map_err(read)?;
    let expires_at: i64 = row.try_get("expires_at").map_err(read)?;
    let grant = NewGrant {
        client_id,
        citizen_id: citizen_id.to_owned(),
        sid: None,
        scope,
        authentication,
        claims: "{}".into(),
        dpop_jkt: None,
        authorization_details: Vec::new(),
    };
    let code = NewCode {
        code_sha256: auth_req_sha256.to_owned(),
        redirect_uri: CIBA_GRANT.to_owned(),
        code_challenge: None,
        nonce: None,
        expires_at,
    };
    flow::store_grant(ctx, grant, code, "idp.ciba.authenticated", Vec::new()).await?;
    conclude(idp, auth_req_sha256, "authenticated", Some("OK")).await
}

/// Ends a pending request in `state` (once).
async fn conclude(
    idp: &Idp,
    auth_req_sha256: &str,
    state: &str,
    result: Option<&str>,
) -> Result<(), IdpError> {
    sqlx::query(
        "UPDATE idp_ciba_request SET state = $1, result = $2 \
         WHERE auth_req_sha256 = $3 AND state = 'pending'",
    )
    .bind(state)
    .bind(result)
    .bind(auth_req_sha256)
    .execute(idp.ctx().db.pool())
    .await
    .map_err(query("ending a CIBA request"))?;
    Ok(())
}

/// Tells a ping-mode client that its request has an answer (CIBA Core 10.2), once.
async fn notify(idp: &Idp, client: &Client, auth_req_sha256: &str) {
    if client.metadata.ciba_mode != Some(CibaMode::Ping) {
        return;
    }
    let Some(endpoint) = &client.metadata.ciba_notification_endpoint else {
        return;
    };
    let ctx = idp.ctx();
    let row = sqlx::query(
        "SELECT notification_token, ping_auth_req_id FROM idp_ciba_request \
         WHERE auth_req_sha256 = $1",
    )
    .bind(auth_req_sha256)
    .fetch_optional(ctx.db.pool())
    .await;
    let pair = match row {
        Ok(Some(row)) => row
            .try_get::<Option<String>, _>("notification_token")
            .ok()
            .flatten()
            .zip(
                row.try_get::<Option<String>, _>("ping_auth_req_id")
                    .ok()
                    .flatten(),
            ),
        Ok(None) => None,
        Err(error) => {
            tracing::error!(%error, "CIBA: reading the notification token");
            return;
        }
    };
    let Some((token, auth_req_id)) = pair else {
        return;
    };
    let sent = idp
        .http()
        .post(endpoint)
        .bearer_auth(&token)
        .json(&json!({ "auth_req_id": auth_req_id }))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    let (outcome, detail) = match sent {
        Ok(response) if response.status().is_success() => {
            (Outcome::Success, format!("HTTP {}", response.status()))
        }
        Ok(response) => (Outcome::Failure, format!("HTTP {}", response.status())),
        Err(error) => (Outcome::Failure, error.to_string()),
    };
    // The token is the client's secret for its endpoint: not kept once used.
    let _ = sqlx::query(
        "UPDATE idp_ciba_request SET notification_token = NULL, ping_auth_req_id = NULL \
         WHERE auth_req_sha256 = $1",
    )
    .bind(auth_req_sha256)
    .execute(ctx.db.pool())
    .await;
    let event = AuditEvent::new(
        "service:idp",
        "idp.ciba.notify",
        "client",
        &client.client_id,
    )
    .outcome(outcome)
    .details(json!({ "endpoint": endpoint, "result": detail }));
    if let Err(error) = audit::record(&ctx.db, ctx.clock.as_ref(), &event).await {
        tracing::error!(%error, "CIBA: auditing a notification");
    }
}

/// The token endpoint's CIBA grant: the tokens once the citizen has confirmed,
/// `authorization_pending` or `slow_down` before, the refusal's error after.
pub(crate) async fn token(
    idp: &Idp,
    client: &Client,
    params: &Parameters,
    jkt: Option<&str>,
) -> Result<Value, OAuthError> {
    let auth_req_id = params
        .get("auth_req_id")
        .ok_or_else(|| OAuthError::invalid_request("auth_req_id is required"))?;
    let hash = sha256_hex(auth_req_id.as_bytes());
    // Answered: the grant's code is there, and is redeemed like any code.
    if let Some(body) = tokens::redeem(idp, client, &hash, None, jkt).await? {
        return Ok(body);
    }
    let ctx = idp.ctx();
    let row = sqlx::query(
        "SELECT client_id, state, result, poll_interval, last_polled_at, expires_at \
         FROM idp_ciba_request WHERE auth_req_sha256 = $1",
    )
    .bind(&hash)
    .fetch_optional(ctx.db.pool())
    .await
    .map_err(query("reading a CIBA request"))?
    .ok_or_else(|| OAuthError::invalid_grant("unknown auth_req_id"))?;
    let read = |e| query("reading a CIBA request")(e);
    let client_id: String = row.try_get("client_id").map_err(read)?;
    if client_id != client.client_id {
        return Err(OAuthError::invalid_grant(
            "the auth_req_id was issued to another client",
        ));
    }
    let state: String = row.try_get("state").map_err(read)?;
    let result: Option<String> = row.try_get("result").map_err(read)?;
    let interval: i64 = row.try_get("poll_interval").map_err(read)?;
    let last: Option<i64> = row.try_get("last_polled_at").map_err(read)?;
    let expires_at: i64 = row.try_get("expires_at").map_err(read)?;
    let now = ctx.clock.now().unix_timestamp();
    if state == "denied" {
        let refusal = Refusal {
            code: result.unwrap_or_else(|| "UNAVAILABLE".into()),
            detail: String::new(),
        };
        return Err(match refusal.oauth_code() {
            "expired_token" => OAuthError::expired_token(format!(
                "the citizen did not answer in time ({})",
                refusal.code
            )),
            _ => OAuthError::access_denied_at_token(format!("no authentication: {}", refusal.code)),
        });
    }
    if now >= expires_at {
        return Err(OAuthError::expired_token(
            "the request expired before the citizen answered",
        ));
    }
    // Too fast: the interval grows by 5 seconds (CIBA Core 11, RFC 8628 3.5).
    let too_fast = last.is_some_and(|last| now - last < interval);
    let interval = if too_fast { interval + 5 } else { interval };
    sqlx::query(
        "UPDATE idp_ciba_request SET last_polled_at = $1, poll_interval = $2 \
         WHERE auth_req_sha256 = $3",
    )
    .bind(now)
    .bind(interval)
    .bind(&hash)
    .execute(ctx.db.pool())
    .await
    .map_err(query("recording a CIBA poll"))?;
    if too_fast {
        return Err(OAuthError::slow_down(format!(
            "poll at most every {interval} seconds"
        )));
    }
    Err(OAuthError::authorization_pending(
        "the citizen has not confirmed on the phone yet",
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn login_hints_name_phone_and_national_id() {
        assert_eq!(
            parse_login_hint("phone=+18685550123;national_id=3900101123456").unwrap(),
            ("+18685550123".into(), "3900101123456".into())
        );
        assert_eq!(
            parse_login_hint(" national_id=1 ; phone=+2 ").unwrap(),
            ("+2".into(), "1".into())
        );
        for bad in [
            "+18685550123",
            "phone=+1",
            "phone=+1;phone=+2;national_id=3",
            "phone=+1;national_id=2;pin=1234",
        ] {
            let error = parse_login_hint(bad).unwrap_err();
            assert_eq!(error.code, "invalid_request", "{bad}");
        }
    }
}
