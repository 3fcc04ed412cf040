//! The login journey's state: citizens, browser sessions, interactions (one
//! authorization request in progress), consents, and the code that ends it.

use eid_core::{AuditEvent, Backend, ServiceContext, audit, group_commit::Written};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::{
    IdpError, Level,
    authorization_details::{self, AuthorizationDetail, CredentialAuthorization},
    authorize::AuthorizationRequest,
    clients::sha256_hex,
    error::query,
    jose::b64,
    random_token,
};

/// A citizen as the provider knows them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Citizen {
    /// Internal identifier (never shown to relying parties).
    pub citizen_id: String,
    /// The national identity number.
    pub national_id: String,
    /// Given names.
    pub given_name: String,
    /// Family name.
    pub family_name: String,
    /// Birth date (YYYY-MM-DD), when known.
    pub birthdate: Option<String>,
    /// E-mail address, when given.
    pub email: Option<String>,
    /// Phone number, when given.
    pub phone_number: Option<String>,
}

/// How a login was made: the level reached and the methods (RFC 8176).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Authentication {
    /// The assurance level reached.
    pub level: Level,
    /// `amr` values.
    pub amr: Vec<String>,
    /// When (Unix seconds).
    pub auth_time: i64,
    /// The method's name for logs and audit (`idcard`, `passkey`, `mobile-id`).
    pub method: String,
}

/// A single-sign-on session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Session id (`sid` claim).
    pub sid: String,
    /// Who.
    pub citizen_id: String,
    /// How they logged in.
    pub authentication: Authentication,
    /// When it ends.
    pub expires_at: i64,
}

/// An authorization request in progress.
#[derive(Debug, Clone)]
pub struct Interaction {
    /// Its identifier (in the login and consent URLs).
    pub id: String,
    /// The checked request.
    pub request: AuthorizationRequest,
    /// `login`, `authenticated`, `consent`, `done` or `failed`.
    pub state: String,
    /// The hash of the browser cookie it is bound to.
    pub browser_sha256: String,
    /// Who logged in, once someone did.
    pub citizen_id: Option<String>,
    /// How, once someone did.
    pub authentication: Option<Authentication>,
}

const CITIZEN_COLUMNS: &str =
    "citizen_id, national_id, given_name, family_name, birthdate, email, phone_number";

fn citizen_from_row(row: &sqlx::any::AnyRow) -> Result<Citizen, IdpError> {
    let read = |e| query("reading a citizen")(e);
    Ok(Citizen {
        citizen_id: row.try_get("citizen_id").map_err(read)?,
        national_id: row.try_get("national_id").map_err(read)?,
        given_name: row.try_get("given_name").map_err(read)?,
        family_name: row.try_get("family_name").map_err(read)?,
        birthdate: row.try_get("birthdate").map_err(read)?,
        email: row.try_get("email").map_err(read)?,
        phone_number: row.try_get("phone_number").map_err(read)?,
    })
}

/// Who an access token of ours speaks for, if its grant is still in force (not revoked
/// by the citizen, the client, a logout or a reused code): the national id of the
/// citizen `subject` (the token's `sub`, our internal id), found by the token's `jti`
/// (`<grant id>.<random>`) in one read of both. A resource server that checks our
/// tokens itself asks this to see revocations before the token expires.
pub async fn token_holder(
    ctx: &ServiceContext,
    jti: &str,
    subject: &str,
) -> Result<TokenHolder, IdpError> {
    let Some((grant_id, _)) = jti.rsplit_once('.') else {
        return Ok(TokenHolder::GrantNotInForce);
    };
    let row = sqlx::query(
        "SELECT g.revoked_at, c.national_id FROM idp_grant g \
         LEFT JOIN idp_citizen c ON c.citizen_id = $2 WHERE g.grant_id = $1",
    )
    .bind(grant_id)
    .bind(subject)
    .fetch_optional(ctx.db.pool())
    .await
    .map_err(query("reading a grant"))?;
    let Some(row) = row else {
        return Ok(TokenHolder::GrantNotInForce);
    };
    if row
        .try_get::<Option<i64>, _>("revoked_at")
        .map_err(query("reading a grant"))?
        .is_some()
    {
        return Ok(TokenHolder::GrantNotInForce);
    }
    Ok(
        match row
            .try_get::<Option<String>, _>("national_id")
            .map_err(query("reading a grant's citizen"))?
        {
            Some(national_id) => TokenHolder::Citizen { national_id },
            None => TokenHolder::UnknownCitizen,
        },
    )
}

/// What [`token_holder`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenHolder {
    /// The grant is revoked or unknown: the token speaks for nobody.
    GrantNotInForce,
    /// The grant is in force but its subject is no citizen of ours.
    UnknownCitizen,
    /// The grant is in force for this citizen.
    Citizen {
        /// Their national identity number.
        national_id: String,
    },
}

/// The citizen with this internal id.
pub async fn citizen(ctx: &ServiceContext, citizen_id: &str) -> Result<Option<Citizen>, IdpError> {
    let sql = format!("SELECT {CITIZEN_COLUMNS} FROM idp_citizen WHERE citizen_id = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(citizen_id)
        .fetch_optional(ctx.db.pool())
        .await
        .map_err(query("finding a citizen"))?
        .as_ref()
        .map(citizen_from_row)
        .transpose()
}

/// Finds the citizen with this national id, creating them (or updating their names)
/// from what a login certificate says.
pub async fn upsert_citizen(
    ctx: &ServiceContext,
    national_id: &str,
    given_name: &str,
    family_name: &str,
) -> Result<Citizen, IdpError> {
    let now = ctx.clock.now().unix_timestamp();
    let mut tx = ctx.db.begin_write().await?;
    let sql = format!("SELECT {CITIZEN_COLUMNS} FROM idp_citizen WHERE national_id = $1");
    let existing = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(national_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query("finding a citizen"))?
        .as_ref()
        .map(citizen_from_row)
        .transpose()?;
    let citizen = match existing {
        Some(c) if c.given_name == given_name && c.family_name == family_name => return Ok(c),
        Some(mut c) => {
            sqlx::query(
                "UPDATE idp_citizen SET given_name = $1, family_name = $2, updated_at = $3 \
                 WHERE citizen_id = $4",
            )
            .bind(given_name)
            .bind(family_name)
            .bind(now)
            .bind(&c.citizen_id)
            .execute(&mut *tx)
            .await
            .map_err(query("updating a citizen"))?;
            audit::append(
                &mut tx,
                ctx.clock.as_ref(),
                &AuditEvent::new(
                    "service:idp",
                    "citizen.update_names",
                    "citizen",
                    &c.citizen_id,
                )
                .details(serde_json::json!({ "source": "authentication certificate" })),
            )
            .await?;
            c.given_name = given_name.to_owned();
            c.family_name = family_name.to_owned();
            c
        }
        None => {
            let citizen = Citizen {
                citizen_id: format!("c-{}", b64(&crate::random_bytes::<15>())),
                national_id: national_id.to_owned(),
                given_name: given_name.to_owned(),
                family_name: family_name.to_owned(),
                birthdate: None,
                email: None,
                phone_number: None,
            };
            sqlx::query(
                "INSERT INTO idp_citizen (citizen_id, national_id, given_name, family_name, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(&citizen.citizen_id)
            .bind(national_id)
            .bind(given_name)
            .bind(family_name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query("creating a citizen"))?;
            audit::append(
                &mut tx,
                ctx.clock.as_ref(),
                &AuditEvent::new(
                    "service:idp",
                    "citizen.create",
                    "citizen",
                    &citizen.citizen_id,
                )
                .details(serde_json::json!({ "source": "authentication certificate" })),
            )
            .await?;
            citizen
        }
    };
    tx.commit().await.map_err(query("saving a citizen"))?;
    Ok(citizen)
}

fn authentication_from(level: &str, amr: &str, auth_time: i64) -> Result<Authentication, IdpError> {
    let level = Level::parse(level).ok_or_else(|| IdpError::stored("level", level))?;
    let (method, amr): (String, Vec<String>) =
        serde_json::from_str(amr).map_err(|e| IdpError::stored("amr", e))?;
    Ok(Authentication {
        level,
        amr,
        auth_time,
        method,
    })
}

fn amr_text(authentication: &Authentication) -> String {
    serde_json::json!([authentication.method, authentication.amr]).to_string()
}

/// The live session behind a session cookie.
pub async fn session(ctx: &ServiceContext, cookie: &str) -> Result<Option<Session>, IdpError> {
    Ok(read_session(ctx, cookie, None)
        .await?
        .map(|(session, _)| session))
}

/// The live session behind a session cookie and, read in the same query, the scopes its
/// citizen has allowed `client_id` (empty when none).
pub async fn session_and_consent(
    ctx: &ServiceContext,
    cookie: &str,
    client_id: &str,
) -> Result<Option<(Session, Vec<String>)>, IdpError> {
    read_session(ctx, cookie, Some(client_id)).await
}

async fn read_session(
    ctx: &ServiceContext,
    cookie: &str,
    consent_of: Option<&str>,
) -> Result<Option<(Session, Vec<String>)>, IdpError> {
    let now = ctx.clock.now().unix_timestamp();
    const COLUMNS: &str = "s.sid, s.citizen_id, s.acr, s.amr, s.auth_time, s.expires_at";
    const LIVE: &str = "s.cookie_sha256 = $1 AND s.ended_at IS NULL AND s.expires_at > $2";
    let sql = match consent_of {
        Some(_) => format!(
            "SELECT {COLUMNS}, c.scopes FROM idp_session s LEFT JOIN idp_consent c \
             ON c.citizen_id = s.citizen_id AND c.client_id = $3 AND c.revoked_at IS NULL \
             WHERE {LIVE}"
        ),
        None => format!("SELECT {COLUMNS}, NULL AS scopes FROM idp_session s WHERE {LIVE}"),
    };
    let mut statement = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(sha256_hex(cookie.as_bytes()))
        .bind(now);
    if let Some(client_id) = consent_of {
        statement = statement.bind(client_id);
    }
    let row = statement
        .fetch_optional(ctx.db.pool())
        .await
        .map_err(query("finding a session"))?;
    let Some(row) = row else { return Ok(None) };
    let read = |e| query("reading a session")(e);
    let level: String = row.try_get("acr").map_err(read)?;
    let amr: String = row.try_get("amr").map_err(read)?;
    let consented: Option<String> = row.try_get("scopes").map_err(read)?;
    let consented = match consented {
        Some(text) => serde_json::from_str(&text).map_err(|e| IdpError::stored("consent", e))?,
        None => Vec::new(),
    };
    let session = Session {
        sid: row.try_get("sid").map_err(read)?,
        citizen_id: row.try_get("citizen_id").map_err(read)?,
        authentication: authentication_from(&level, &amr, row.try_get("auth_time").map_err(read)?)?,
        expires_at: row.try_get("expires_at").map_err(read)?,
    };
    Ok(Some((session, consented)))
}

/// Starts a session for a citizen who just logged in; returns it and its cookie value.
/// A session the browser already had is ended (a new login replaces it).
pub async fn start_session(
    ctx: &ServiceContext,
    citizen_id: &str,
    authentication: &Authentication,
    previous_cookie: Option<&str>,
) -> Result<(Session, String), IdpError> {
    let now = ctx.clock.now().unix_timestamp();
    let cookie = random_token();
    let session = Session {
        sid: b64(&crate::random_bytes::<16>()),
        citizen_id: citizen_id.to_owned(),
        authentication: authentication.clone(),
        expires_at: now + i64::try_from(ctx.config.idp.session_ttl_secs).unwrap_or(1800),
    };
    let mut tx = ctx.db.begin_write().await?;
    if let Some(previous) = previous_cookie {
        sqlx::query(
            "UPDATE idp_session SET ended_at = $1 WHERE cookie_sha256 = $2 AND ended_at IS NULL",
        )
        .bind(now)
        .bind(sha256_hex(previous.as_bytes()))
        .execute(&mut *tx)
        .await
        .map_err(query("ending a replaced session"))?;
    }
    sqlx::query(
        "INSERT INTO idp_session (sid, cookie_sha256, citizen_id, acr, amr, auth_time, \
         created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&session.sid)
    .bind(sha256_hex(cookie.as_bytes()))
    .bind(citizen_id)
    .bind(authentication.level.name())
    .bind(amr_text(authentication))
    .bind(authentication.auth_time)
    .bind(now)
    .bind(session.expires_at)
    .execute(&mut *tx)
    .await
    .map_err(query("starting a session"))?;
    audit::append(
        &mut tx,
        ctx.clock.as_ref(),
        &AuditEvent::new(
            format!("citizen:{citizen_id}"),
            "idp.login",
            "session",
            &session.sid,
        )
        .details(serde_json::json!({
            "method": authentication.method,
            "level": authentication.level.name(),
            "amr": authentication.amr,
        })),
    )
    .await?;
    tx.commit().await.map_err(query("starting a session"))?;
    Ok((session, cookie))
}

/// Opens an interaction for a checked request in the browser with `browser_cookie`.
pub async fn start_interaction(
    ctx: &ServiceContext,
    browser_cookie: &str,
    request: &AuthorizationRequest,
    state: &str,
    session: Option<&Session>,
) -> Result<String, IdpError> {
    let now = ctx.clock.now().unix_timestamp();
    let id = random_token();
    let request_json =
        serde_json::to_string(request).map_err(|e| IdpError::stored("request", e))?;
    let (citizen_id, level, amr, auth_time) = match session {
        Some(s) => (
            Some(s.citizen_id.clone()),
            Some(s.authentication.level.name()),
            Some(amr_text(&s.authentication)),
            Some(s.authentication.auth_time),
        ),
        None => (None, None, None, None),
    };
    sqlx::query(
        "INSERT INTO idp_interaction (interaction_id, browser_sha256, client_id, request, state, \
         citizen_id, acr, amr, auth_time, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&id)
    .bind(sha256_hex(browser_cookie.as_bytes()))
    .bind(&request.client_id)
    .bind(request_json)
    .bind(state)
    .bind(citizen_id)
    .bind(level)
    .bind(amr)
    .bind(auth_time)
    .bind(now)
    .bind(now + i64::try_from(ctx.config.idp.interaction_ttl_secs).unwrap_or(600))
    .execute(ctx.db.pool())
    .await
    .map_err(query("starting an interaction"))?;
    Ok(id)
}

/// The unexpired interaction with this id.
pub async fn interaction(ctx: &ServiceContext, id: &str) -> Result<Option<Interaction>, IdpError> {
    if id.len() > 64 {
        return Ok(None);
    }
    let now = ctx.clock.now().unix_timestamp();
    let row = sqlx::query(
        "SELECT interaction_id, browser_sha256, request, state, citizen_id, acr, amr, auth_time \
         FROM idp_interaction WHERE interaction_id = $1 AND expires_at > $2",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(ctx.db.pool())
    .await
    .map_err(query("finding an interaction"))?;
    let Some(row) = row else { return Ok(None) };
    let read = |e| query("reading an interaction")(e);
    let request: String = row.try_get("request").map_err(read)?;
    let level: Option<String> = row.try_get("acr").map_err(read)?;
    let amr: Option<String> = row.try_get("amr").map_err(read)?;
    let auth_time: Option<i64> = row.try_get("auth_time").map_err(read)?;
    let authentication = match (level, amr, auth_time) {
        (Some(level), Some(amr), Some(at)) => Some(authentication_from(&level, &amr, at)?),
        _ => None,
    };
    Ok(Some(Interaction {
        id: row.try_get("interaction_id").map_err(read)?,
        request: serde_json::from_str(&request).map_err(|e| IdpError::stored("request", e))?,
        state: row.try_get("state").map_err(read)?,
        browser_sha256: row.try_get("browser_sha256").map_err(read)?,
        citizen_id: row.try_get("citizen_id").map_err(read)?,
        authentication,
    }))
}

/// Records a login made on another listener (the ID-card one) against an interaction
/// still waiting for it; returns the one-time hand-off value that moves the login back
/// to the browser's main session, or `None` if the interaction is not waiting.
pub async fn record_login(
    ctx: &ServiceContext,
    id: &str,
    citizen_id: &str,
    authentication: &Authentication,
) -> Result<Option<String>, IdpError> {
    let now = ctx.clock.now().unix_timestamp();
    let handoff = random_token();
    let updated = sqlx::query(
        "UPDATE idp_interaction SET state = 'authenticated', citizen_id = $1, acr = $2, amr = $3, \
         auth_time = $4, handoff_sha256 = $5 \
         WHERE interaction_id = $6 AND state = 'login' AND expires_at > $7",
    )
    .bind(citizen_id)
    .bind(authentication.level.name())
    .bind(amr_text(authentication))
    .bind(authentication.auth_time)
    .bind(sha256_hex(handoff.as_bytes()))
    .bind(id)
    .bind(now)
    .execute(ctx.db.pool())
    .await
    .map_err(query("recording a login"))?
    .rows_affected();
    Ok((updated == 1).then_some(handoff))
}

/// Takes the hand-off (once): the interaction must be bound to this browser and carry
/// this hand-off value. Moves it to `consent`.
pub async fn take_handoff(
    ctx: &ServiceContext,
    id: &str,
    browser_cookie: &str,
    handoff: &str,
) -> Result<bool, IdpError> {
    let now = ctx.clock.now().unix_timestamp();
    let updated = sqlx::query(
        "UPDATE idp_interaction SET state = 'consent', handoff_sha256 = NULL \
         WHERE interaction_id = $1 AND state = 'authenticated' AND browser_sha256 = $2 \
         AND handoff_sha256 = $3 AND expires_at > $4",
    )
    .bind(id)
    .bind(sha256_hex(browser_cookie.as_bytes()))
    .bind(sha256_hex(handoff.as_bytes()))
    .bind(now)
    .execute(ctx.db.pool())
    .await
    .map_err(query("taking a login hand-off"))?
    .rows_affected();
    Ok(updated == 1)
}

/// Moves an interaction on (`consent` → `done`), once.
pub async fn finish_interaction(
    ctx: &ServiceContext,
    id: &str,
    from: &str,
    to: &str,
) -> Result<bool, IdpError> {
    let updated = sqlx::query(
        "UPDATE idp_interaction SET state = $1 WHERE interaction_id = $2 AND state = $3",
    )
    .bind(to)
    .bind(id)
    .bind(from)
    .execute(ctx.db.pool())
    .await
    .map_err(query("finishing an interaction"))?
    .rows_affected();
    Ok(updated == 1)
}

/// Whether the citizen has already allowed `client_id` every one of `scopes`.
pub async fn consent_covers(
    ctx: &ServiceContext,
    citizen_id: &str,
    client_id: &str,
    scopes: &[String],
) -> Result<bool, IdpError> {
    let stored: Option<String> = sqlx::query_scalar(
        "SELECT scopes FROM idp_consent WHERE citizen_id = $1 AND client_id = $2 \
         AND revoked_at IS NULL",
    )
    .bind(citizen_id)
    .bind(client_id)
    .fetch_optional(ctx.db.pool())
    .await
    .map_err(query("reading a consent"))?;
    let Some(stored) = stored else {
        return Ok(false);
    };
    let granted: Vec<String> =
        serde_json::from_str(&stored).map_err(|e| IdpError::stored("consent", e))?;
    Ok(scopes.iter().all(|s| granted.contains(s)))
}

/// Remembers what the citizen allowed (adding to what they allowed before).
pub async fn record_consent(
    ctx: &ServiceContext,
    citizen_id: &str,
    client_id: &str,
    scopes: &[String],
) -> Result<(), IdpError> {
    let now = ctx.clock.now().unix_timestamp();
    let mut tx = ctx.db.begin_write().await?;
    let stored: Option<String> = sqlx::query_scalar(
        "SELECT scopes FROM idp_consent WHERE citizen_id = $1 AND client_id = $2 \
         AND revoked_at IS NULL",
    )
    .bind(citizen_id)
    .bind(client_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(query("reading a consent"))?;
    let mut granted: Vec<String> = match stored {
        Some(text) => serde_json::from_str(&text).map_err(|e| IdpError::stored("consent", e))?,
        None => Vec::new(),
    };
    for scope in scopes {
        if !granted.contains(scope) {
            granted.push(scope.clone());
        }
    }
    let granted_text =
        serde_json::to_string(&granted).map_err(|e| IdpError::stored("consent", e))?;
    sqlx::query("DELETE FROM idp_consent WHERE citizen_id = $1 AND client_id = $2")
        .bind(citizen_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await
        .map_err(query("replacing a consent"))?;
    sqlx::query(
        "INSERT INTO idp_consent (citizen_id, client_id, scopes, granted_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(citizen_id)
    .bind(client_id)
    .bind(granted_text)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(query("recording a consent"))?;
    audit::append(
        &mut tx,
        ctx.clock.as_ref(),
        &AuditEvent::new(
            format!("citizen:{citizen_id}"),
            "idp.consent.grant",
            "client",
            client_id,
        )
        .details(serde_json::json!({ "scopes": granted })),
    )
    .await?;
    tx.commit().await.map_err(query("recording a consent"))?;
    Ok(())
}

/// A grant about to be stored.
pub(crate) struct NewGrant {
    pub(crate) client_id: String,
    pub(crate) citizen_id: String,
    pub(crate) sid: Option<String>,
    pub(crate) scope: String,
    pub(crate) authentication: Authentication,
    pub(crate) claims: String,
    pub(crate) dpop_jkt: Option<String>,
    /// Validated rich authorization details (empty: none).
    pub(crate) authorization_details: Vec<AuthorizationDetail>,
}

/// The single-use code that redeems a new grant.
pub(crate) struct NewCode {
    pub(crate) code_sha256: String,
    pub(crate) redirect_uri: String,
    pub(crate) code_challenge: Option<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) expires_at: i64,
}

/// Issues the authorization code that ends a successful interaction: a grant for what
/// was asked and allowed, and a short-lived single-use code for it. `more` audit events
/// (the citizen's confirmation, say) are written with the grant.
pub async fn issue_code(
    ctx: &ServiceContext,
    request: &AuthorizationRequest,
    session: &Session,
    more: Vec<AuditEvent>,
) -> Result<String, IdpError> {
    let code = random_token();
    let claims = serde_json::json!({
        "id_token": request.id_token_claims,
        "userinfo": request.userinfo_claims,
    })
    .to_string();
    let now = ctx.clock.now().unix_timestamp();
    let grant = NewGrant {
        client_id: request.client_id.clone(),
        citizen_id: session.citizen_id.clone(),
        sid: Some(session.sid.clone()),
        scope: request.scopes.join(" "),
        authentication: session.authentication.clone(),
        claims,
        dpop_jkt: request.dpop_jkt.clone(),
        authorization_details: request.authorization_details.clone(),
    };
    let code_row = NewCode {
        code_sha256: sha256_hex(code.as_bytes()),
        redirect_uri: request.redirect_uri.clone(),
        code_challenge: request.code_challenge.clone(),
        nonce: request.nonce.clone(),
        expires_at: now + i64::try_from(ctx.config.idp.code_ttl_secs).unwrap_or(60),
    };
    store_grant(ctx, grant, code_row, "idp.authorize", more).await?;
    Ok(code)
}

/// Stores a grant and the code that redeems it in one group-commit write, audited as
/// `action` (with `more` audit events of the caller's, in the same write); returns the
/// grant's id.
pub(crate) async fn store_grant(
    ctx: &ServiceContext,
    grant: NewGrant,
    code: NewCode,
    action: &'static str,
    more: Vec<AuditEvent>,
) -> Result<String, IdpError> {
    let config = &ctx.config.idp;
    let now = ctx.clock.now().unix_timestamp();
    let grant_id = b64(&crate::random_bytes::<16>());
    let grant_lifetime = config
        .refresh_token_ttl_secs
        .max(config.access_token_ttl_secs);
    let NewGrant {
        client_id,
        citizen_id,
        sid,
        scope,
        authentication,
        claims,
        dpop_jkt,
        authorization_details,
    } = grant;
    let mut grant_audit = serde_json::json!({
        "client_id": client_id,
        "scope": scope,
        "level": authentication.level.name(),
        "sid": sid,
    });
    if let Some(credential) = authorization_details::credential(&authorization_details) {
        grant_audit["authorization_details"] = credential_audit(credential);
    }
    let authorization_details = (!authorization_details.is_empty())
        .then(|| serde_json::to_string(&authorization_details))
        .transpose()
        .map_err(|e| IdpError::stored("authorization details", e))?;
    let level = authentication.level.name();
    let amr = amr_text(&authentication);
    let auth_time = authentication.auth_time;
    let grant_expires = now + i64::try_from(grant_lifetime).unwrap_or(i64::MAX / 2);
    let backend = ctx.db.backend();
    let id = grant_id.clone();
    // Two inserts under fresh random keys: nothing but the database itself can refuse
    // them, so no savepoint (a failure rolls back the whole group, see the group commit).
    ctx.db
        .group_commit(&ctx.clock)
        .write_without_savepoint(move |conn| {
            Box::pin(async move {
                const GRANT: &str = "INSERT INTO idp_grant (grant_id, client_id, citizen_id, sid, \
                    scope, acr, amr, auth_time, claims, dpop_jkt, created_at, expires_at, \
                    authorization_details) \
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
                const CODE: &str = "INSERT INTO idp_code (code_sha256, grant_id, redirect_uri, \
                    code_challenge, nonce, expires_at)";
                // PostgreSQL takes both rows in one round trip; SQLite in two statements.
                let sql = match backend {
                    Backend::Postgres => {
                        format!("WITH g AS ({GRANT}) {CODE} VALUES ($14, $1, $15, $16, $17, $18)")
                    }
                    _ => GRANT.to_owned(),
                };
                let insert = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&grant_id)
                    .bind(&client_id)
                    .bind(&citizen_id)
                    .bind(&sid)
                    .bind(&scope)
                    .bind(level)
                    .bind(amr)
                    .bind(auth_time)
                    .bind(claims)
                    .bind(dpop_jkt)
                    .bind(now)
                    .bind(grant_expires)
                    .bind(authorization_details);
                if backend == Backend::Postgres {
                    insert
                        .bind(code.code_sha256)
                        .bind(code.redirect_uri)
                        .bind(code.code_challenge)
                        .bind(code.nonce)
                        .bind(code.expires_at)
                        .execute(&mut *conn)
                        .await
                        .map_err(query("creating a grant and its code"))?;
                } else {
                    insert
                        .execute(&mut *conn)
                        .await
                        .map_err(query("creating a grant"))?;
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "{CODE} VALUES ($1, $2, $3, $4, $5, $6)"
                    )))
                    .bind(code.code_sha256)
                    .bind(&grant_id)
                    .bind(code.redirect_uri)
                    .bind(code.code_challenge)
                    .bind(code.nonce)
                    .bind(code.expires_at)
                    .execute(&mut *conn)
                    .await
                    .map_err(query("storing a code"))?;
                }
                let mut audit = vec![
                    AuditEvent::new(format!("citizen:{citizen_id}"), action, "grant", &grant_id)
                        .details(grant_audit),
                ];
                audit.extend(more);
                Ok::<_, IdpError>(Written { value: (), audit })
            })
        })
        .await?;
    Ok(id)
}

/// What the audit log keeps of a signing authorisation: which credential and how many
/// documents (the digests themselves are not secret, but add nothing to the record).
pub(crate) fn credential_audit(credential: &CredentialAuthorization) -> serde_json::Value {
    serde_json::json!({
        "type": authorization_details::CREDENTIAL_TYPE,
        "credential_id": credential.credential_id,
        "document_digests": credential.document_digests.len(),
        "hash_algorithm_oid": credential.hash_algorithm_oid,
    })
}

/// Ends a session (logout) and revokes the grants made in it. Returns the clients that
/// had grants in the session (for back-channel logout).
pub async fn end_session(
    ctx: &ServiceContext,
    sid: &str,
    actor: &str,
) -> Result<Vec<String>, IdpError> {
    let now = ctx.clock.now().unix_timestamp();
    let mut tx = ctx.db.begin_write().await?;
    let ended =
        sqlx::query("UPDATE idp_session SET ended_at = $1 WHERE sid = $2 AND ended_at IS NULL")
            .bind(now)
            .bind(sid)
            .execute(&mut *tx)
            .await
            .map_err(query("ending a session"))?
            .rows_affected();
    let clients: Vec<String> = sqlx::query_scalar(
        // Every client that logged the citizen in during this session, even one whose
        // grant was revoked since: it may still hold a session of its own to end.
        "SELECT DISTINCT client_id FROM idp_grant WHERE sid = $1",
    )
    .bind(sid)
    .fetch_all(&mut *tx)
    .await
    .map_err(query("finding a session's clients"))?;
    sqlx::query("UPDATE idp_grant SET revoked_at = $1 WHERE sid = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(sid)
        .execute(&mut *tx)
        .await
        .map_err(query("revoking a session's grants"))?;
    if ended > 0 {
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(actor, "idp.logout", "session", sid)
                .details(serde_json::json!({ "clients": clients })),
        )
        .await?;
    }
    tx.commit().await.map_err(query("ending a session"))?;
    Ok(clients)
}

/// The consents a citizen has given: (client id, client name, scopes).
pub async fn consents(
    ctx: &ServiceContext,
    citizen_id: &str,
) -> Result<Vec<(String, String, Vec<String>)>, IdpError> {
    let rows = sqlx::query(
        "SELECT c.client_id, k.name, c.scopes FROM idp_consent c \
         JOIN idp_client k ON k.client_id = c.client_id \
         WHERE c.citizen_id = $1 AND c.revoked_at IS NULL AND k.removed_at IS NULL \
         ORDER BY k.name, c.client_id",
    )
    .bind(citizen_id)
    .fetch_all(ctx.db.pool())
    .await
    .map_err(query("listing consents"))?;
    rows.iter()
        .map(|row| {
            let read = |e| query("reading a consent")(e);
            let scopes: String = row.try_get("scopes").map_err(read)?;
            Ok((
                row.try_get("client_id").map_err(read)?,
                row.try_get("name").map_err(read)?,
                serde_json::from_str(&scopes).map_err(|e| IdpError::stored("consent", e))?,
            ))
        })
        .collect()
}

/// Withdraws a consent: the client must ask again, and its grants for this citizen
/// (refresh tokens, access tokens) stop working.
pub async fn withdraw_consent(
    ctx: &ServiceContext,
    citizen_id: &str,
    client_id: &str,
) -> Result<bool, IdpError> {
    let now = ctx.clock.now().unix_timestamp();
    let mut tx = ctx.db.begin_write().await?;
    let withdrawn = sqlx::query(
        "UPDATE idp_consent SET revoked_at = $1 WHERE citizen_id = $2 AND client_id = $3 \
         AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(citizen_id)
    .bind(client_id)
    .execute(&mut *tx)
    .await
    .map_err(query("withdrawing a consent"))?
    .rows_affected();
    let grants = sqlx::query(
        "UPDATE idp_grant SET revoked_at = $1 WHERE citizen_id = $2 AND client_id = $3 \
         AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(citizen_id)
    .bind(client_id)
    .execute(&mut *tx)
    .await
    .map_err(query("revoking a client's grants"))?
    .rows_affected();
    if withdrawn > 0 {
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                format!("citizen:{citizen_id}"),
                "idp.consent.withdraw",
                "client",
                client_id,
            )
            .details(serde_json::json!({ "grants_revoked": grants })),
        )
        .await?;
    }
    tx.commit().await.map_err(query("withdrawing a consent"))?;
    Ok(withdrawn > 0)
}

/// A login as the audit log recorded it.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    /// When (RFC 3339).
    pub at: String,
    /// The method (`idcard`, `passkey`, ...).
    pub method: String,
    /// The level reached.
    pub level: String,
}

/// The citizen's most recent logins, newest first, from the audit log.
pub async fn recent_logins(
    ctx: &ServiceContext,
    citizen_id: &str,
    limit: i64,
) -> Result<Vec<LoginRecord>, IdpError> {
    let rows = sqlx::query(
        "SELECT recorded_at, details FROM audit_log WHERE actor = $1 AND action = 'idp.login' \
         ORDER BY seq DESC LIMIT $2",
    )
    .bind(format!("citizen:{citizen_id}"))
    .bind(limit)
    .fetch_all(ctx.db.pool())
    .await
    .map_err(query("reading recent logins"))?;
    rows.iter()
        .map(|row| {
            let read = |e| query("reading a login record")(e);
            let details: String = row.try_get("details").map_err(read)?;
            let details: serde_json::Value =
                serde_json::from_str(&details).map_err(|e| IdpError::stored("audit details", e))?;
            let field = |name: &str| {
                details
                    .get(name)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            Ok(LoginRecord {
                at: row.try_get("recorded_at").map_err(read)?,
                method: field("method"),
                level: field("level"),
            })
        })
        .collect()
}

/// The short-lived rows a day past their expiry: login interactions, pushed requests,
/// mobile-ID requests and CIBA requests (their grants and codes stay). Returns how many
/// rows went.
pub async fn purge_expired(db: &eid_core::Database, now: i64) -> Result<u64, IdpError> {
    const KEEP_SECS: i64 = 24 * 3600;
    let mut purged = 0;
    for table in [
        "idp_interaction",
        "idp_pushed_request",
        "idp_mobile_auth",
        "idp_ciba_request",
    ] {
        let sql = format!("DELETE FROM {table} WHERE expires_at < $1");
        purged += sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now - KEEP_SECS)
            .execute(db.pool())
            .await
            .map_err(query("purging expired rows"))?
            .rows_affected();
    }
    Ok(purged)
}
