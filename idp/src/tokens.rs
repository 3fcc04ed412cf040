//! The token endpoint (RFC 6749 3.2, OpenID Connect Core 3.1.3), the tokens it makes
//! (ID tokens, RFC 9068 JWT access tokens, rotating refresh tokens), userinfo, and
//! client authentication (`client_secret_basic`, `client_secret_post`,
//! `private_key_jwt`).

use base64ct::{Base64, Encoding};
use eid_core::{AuditEvent, Backend, audit, group_commit::Written};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::{
    Idp, IdpError, Level, OAuthError,
    authorization_details::{AuthorizationDetail, to_json},
    authorize::Parameters,
    clients::{AuthMethod, CIBA_GRANT, CSC_SCOPES, Client, SEAL_SCOPE, SubjectType, sha256_hex},
    error::query,
    flow::Citizen,
    jose::{self, Algorithm, Jwk, Parsed, b64},
    random_token,
};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Authenticates the calling client from the `Authorization` header and the form.
pub async fn authenticate_client(
    idp: &Idp,
    params: &Parameters,
    authorization: Option<&str>,
    endpoint: &str,
) -> Result<Client, OAuthError> {
    let basic = match authorization {
        Some(header) => Some(parse_basic(header)?),
        None => None,
    };
    let assertion = params.get("client_assertion");
    let form_secret = params.get("client_secret");
    let methods = usize::from(basic.is_some())
        + usize::from(assertion.is_some())
        + usize::from(form_secret.is_some());
    if methods > 1 {
        return Err(OAuthError::invalid_request(
            "use exactly one client authentication method (RFC 6749 2.3)",
        ));
    }
    if let Some((id, secret)) = basic {
        if let Some(form_id) = params.get("client_id")
            && form_id != id
        {
            return Err(OAuthError::invalid_request(
                "client_id in the form differs from the one authenticated",
            ));
        }
        let client = known_client(idp, &id).await?;
        if client.metadata.auth_method != AuthMethod::ClientSecretBasic {
            return Err(OAuthError::invalid_client(format!(
                "this client is registered for {}",
                client.metadata.auth_method.name()
            )));
        }
        return if client.secret_matches(&secret) {
            Ok(client)
        } else {
            Err(OAuthError::invalid_client("client authentication failed"))
        };
    }
    if let Some(assertion) = assertion {
        if params.get("client_assertion_type") != Some(JWT_BEARER) {
            return Err(OAuthError::invalid_request(format!(
                "client_assertion_type must be {JWT_BEARER}"
            )));
        }
        return verify_assertion(idp, assertion, params.get("client_id"), endpoint).await;
    }
    let Some(client_id) = params.get("client_id") else {
        return Err(OAuthError::invalid_client(
            "no client authentication (RFC 6749 2.3)",
        ));
    };
    let client = known_client(idp, client_id).await?;
    match (client.metadata.auth_method, form_secret) {
        (AuthMethod::ClientSecretPost, Some(secret)) if client.secret_matches(secret) => Ok(client),
        (AuthMethod::ClientSecretPost, Some(_)) => {
            Err(OAuthError::invalid_client("client authentication failed"))
        }
        (method, _) => Err(OAuthError::invalid_client(format!(
            "this client must authenticate with {}",
            method.name()
        ))),
    }
}

async fn known_client(idp: &Idp, client_id: &str) -> Result<Client, OAuthError> {
    idp.client(client_id)
        .await?
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))
}

fn parse_basic(header: &str) -> Result<(String, String), OAuthError> {
    let bad = || OAuthError::invalid_client("malformed Basic authorization header");
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))
        .ok_or_else(bad)?;
    let decoded = Base64::decode_vec(encoded.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    // RFC 6749 2.3.1: both parts are form-urlencoded before joining.
    let decode = |part: &str| -> Result<String, OAuthError> {
        url::form_urlencoded::parse(format!("v={part}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .ok_or_else(bad)
    };
    Ok((decode(id)?, decode(secret)?))
}

async fn verify_assertion(
    idp: &Idp,
    assertion: &str,
    client_id: Option<&str>,
    endpoint: &str,
) -> Result<Client, OAuthError> {
    let bad = |why: &str| OAuthError::invalid_client(format!("client assertion: {why}"));
    let parsed = Parsed::new(assertion).map_err(|e| bad(&e.to_string()))?;
    let issuer = parsed
        .claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no iss"))?
        .to_owned();
    if parsed.claims.get("sub").and_then(Value::as_str) != Some(&issuer) {
        return Err(bad("iss and sub must both be the client_id"));
    }
    if client_id.is_some_and(|id| id != issuer) {
        return Err(bad("client_id differs from the assertion's issuer"));
    }
    let client = known_client(idp, &issuer).await?;
    if client.metadata.auth_method != AuthMethod::PrivateKeyJwt {
        return Err(OAuthError::invalid_client(format!(
            "this client is registered for {}",
            client.metadata.auth_method.name()
        )));
    }
    let alg = parsed
        .algorithm(&[Algorithm::Es256, Algorithm::Ps256, Algorithm::Rs256])
        .map_err(|e| bad(&e.to_string()))?;
    let keys = idp.client_keys(&client).await?;
    let key = jose::select_key(&keys, parsed.kid(), alg).map_err(|e| bad(&e.to_string()))?;
    let public = key.public_key().map_err(|e| bad(&e.to_string()))?;
    parsed
        .verify(alg, &public)
        .map_err(|e| bad(&e.to_string()))?;

    let issuer_url = &idp.ctx().config.idp.issuer;
    let audience_ok = |v: &Value| v.as_str().is_some_and(|a| a == issuer_url || a == endpoint);
    let aud_ok = match parsed.claims.get("aud") {
        Some(Value::Array(list)) => list.iter().any(audience_ok),
        Some(one) => audience_ok(one),
        None => false,
    };
    if !aud_ok {
        return Err(bad(&format!(
            "aud must be the issuer ({issuer_url}) or the endpoint ({endpoint})"
        )));
    }
    let now = idp.ctx().clock.now().unix_timestamp();
    let exp = parsed
        .claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("no exp"))?;
    if exp <= now {
        return Err(bad("expired"));
    }
    if exp > now + 600 {
        return Err(bad("exp is more than 10 minutes ahead"));
    }
    if let Some(nbf) = parsed.claims.get("nbf").and_then(Value::as_i64)
        && nbf > now + 30
    {
        return Err(bad("not yet valid"));
    }
    let jti = parsed
        .claims
        .get("jti")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no jti"))?;
    // Used once: the insert fails if this client already sent this jti.
    sqlx::query("DELETE FROM idp_client_assertion WHERE expires_at < $1")
        .bind(now)
        .execute(idp.ctx().db.pool())
        .await
        .map_err(|e| OAuthError::from(query("pruning client assertions")(e)))?;
    let inserted = sqlx::query(
        "INSERT INTO idp_client_assertion (jti_sha256, client_id, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (jti_sha256) DO NOTHING",
    )
    .bind(sha256_hex(format!("{issuer}\n{jti}").as_bytes()))
    .bind(&issuer)
    .bind(exp)
    .execute(idp.ctx().db.pool())
    .await
    .map_err(|e| OAuthError::from(query("recording a client assertion")(e)))?
    .rows_affected();
    if inserted == 0 {
        return Err(bad("this assertion (jti) was already used"));
    }
    Ok(client)
}

/// The token endpoint: dispatches on `grant_type`. Returns the JSON body.
pub async fn token(
    idp: &Idp,
    params: &Parameters,
    authorization: Option<&str>,
    dpop_proof: Option<&str>,
) -> Result<Value, OAuthError> {
    let endpoint = format!("{}/token", idp.ctx().config.idp.issuer);
    let client = authenticate_client(idp, params, authorization, &endpoint).await?;
    let jkt = match dpop_proof {
        Some(proof) => Some(idp.dpop(proof, "POST", &endpoint, None)?),
        None if client.metadata.require_dpop => {
            return Err(OAuthError::invalid_dpop_proof(
                "this client's tokens must be DPoP-bound: send a DPoP proof (RFC 9449)",
            ));
        }
        None => None,
    };
    let grant_type = params
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    if !matches!(
        grant_type,
        "authorization_code" | "refresh_token" | "client_credentials" | CIBA_GRANT
    ) {
        return Err(OAuthError::unsupported_grant_type(format!(
            "grant_type `{grant_type}` is not supported"
        )));
    }
    if !client.allows_grant(grant_type) {
        return Err(OAuthError::unauthorized_client(format!(
            "this client is not registered for {grant_type}"
        )));
    }
    let jkt = jkt.as_deref();
    match grant_type {
        "authorization_code" => code_grant(idp, &client, params, jkt).await,
        "refresh_token" => refresh_grant(idp, &client, params, jkt).await,
        CIBA_GRANT => crate::ciba::token(idp, &client, params, jkt).await,
        _ => client_credentials(idp, &client, params, jkt).await,
    }
}

/// What a grant row says.
#[derive(Debug)]
struct Grant {
    grant_id: String,
    client_id: String,
    citizen_id: Option<String>,
    sid: Option<String>,
    scopes: Vec<String>,
    level: Option<Level>,
    amr: Vec<String>,
    auth_time: Option<i64>,
    id_token_claims: Vec<String>,
    dpop_jkt: Option<String>,
    /// Rich authorization details (RFC 9396) granted (empty: none).
    authorization_details: Vec<AuthorizationDetail>,
    revoked: bool,
    /// The citizen, read in the same query (none for client-credentials grants).
    citizen: Option<Citizen>,
}

fn grant_from_row(row: &sqlx::any::AnyRow) -> Result<Grant, IdpError> {
    let read = |e| query("reading a grant")(e);
    let scope: String = row.try_get("scope").map_err(read)?;
    let level: Option<String> = row.try_get("acr").map_err(read)?;
    let amr: Option<String> = row.try_get("amr").map_err(read)?;
    let claims: Option<String> = row.try_get("claims").map_err(read)?;
    let revoked_at: Option<i64> = row.try_get("revoked_at").map_err(read)?;
    let details: Option<String> = row.try_get("authorization_details").map_err(read)?;
    let authorization_details = match details {
        Some(text) => {
            serde_json::from_str(&text).map_err(|e| IdpError::stored("authorization details", e))?
        }
        None => Vec::new(),
    };
    let amr: Vec<String> = match amr {
        Some(text) => {
            let (_method, amr): (String, Vec<String>) =
                serde_json::from_str(&text).map_err(|e| IdpError::stored("amr", e))?;
            amr
        }
        None => Vec::new(),
    };
    let id_token_claims = claims
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|v| v.get("id_token").cloned())
        .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
        .unwrap_or_default();
    Ok(Grant {
        grant_id: row.try_get("grant_id").map_err(read)?,
        client_id: row.try_get("client_id").map_err(read)?,
        citizen_id: row.try_get("citizen_id").map_err(read)?,
        sid: row.try_get("sid").map_err(read)?,
        scopes: scope.split(' ').map(str::to_owned).collect(),
        level: level.as_deref().and_then(Level::parse),
        amr,
        auth_time: row.try_get("auth_time").map_err(read)?,
        id_token_claims,
        dpop_jkt: row.try_get("dpop_jkt").map_err(read)?,
        authorization_details,
        revoked: revoked_at.is_some(),
        citizen: match row
            .try_get::<Option<String>, _>("national_id")
            .map_err(read)?
        {
            Some(national_id) => Some(Citizen {
                citizen_id: row.try_get("citizen_id").map_err(read)?,
                national_id,
                given_name: row.try_get("given_name").map_err(read)?,
                family_name: row.try_get("family_name").map_err(read)?,
                birthdate: row.try_get("birthdate").map_err(read)?,
                email: row.try_get("email").map_err(read)?,
                phone_number: row.try_get("phone_number").map_err(read)?,
            }),
            None => None,
        },
    })
}

const GRANT_COLUMNS: &str = "g.grant_id, g.client_id, g.citizen_id, g.sid, g.scope, g.acr, \
                             g.amr, g.auth_time, g.claims, g.dpop_jkt, g.revoked_at, \
                             g.authorization_details, \
                             z.national_id, z.given_name, z.family_name, z.birthdate, z.email, \
                             z.phone_number";

/// The grant's citizen, joined into the same query.
const CITIZEN_JOIN: &str = "LEFT JOIN idp_citizen z ON z.citizen_id = g.citizen_id";

/// What a single-use credential (code or refresh token) turned out to be when spent.
enum Spent {
    /// Spent now; the successor refresh token, if one was made.
    Now(Option<String>),
    /// It had been spent before: the grant is now revoked.
    Reused,
}

/// The single-use credentials the token endpoint accepts.
#[derive(Clone, Copy)]
enum Credential {
    Code,
    Refresh,
}

/// Spends a code or refresh token in one group-commit write: marks it used only if it
/// was not (the conditional update is the guard against two concurrent uses), issues
/// the successor refresh token, and audits. A second use revokes the whole grant. The
/// refusal is a value (no row updated), so the write needs no savepoint: only the
/// database failing could make a statement fail, and that fails the whole group.
async fn spend(
    idp: &Idp,
    client: &Client,
    kind: Credential,
    key_hash: String,
    grant: &Grant,
) -> Result<Spent, IdpError> {
    let grant_id = grant.grant_id.clone();
    let (table, key_column, action, reuse_action) = match kind {
        Credential::Code => (
            "idp_code",
            "code_sha256",
            "idp.token.code",
            "idp.code.reuse",
        ),
        Credential::Refresh => (
            "idp_refresh_token",
            "token_sha256",
            "idp.token.refresh",
            "idp.refresh.reuse",
        ),
    };
    // A grant with authorization details (a signing authorisation) is for one use: it
    // gets no refresh token.
    let successor = grant.authorization_details.is_empty()
        && match kind {
            Credential::Code => client.allows_grant("refresh_token"),
            Credential::Refresh => true,
        };
    let ctx = idp.ctx();
    let now = ctx.clock.now().unix_timestamp();
    let ttl = i64::try_from(ctx.config.idp.refresh_token_ttl_secs).unwrap_or(i64::MAX / 2);
    let actor = format!("client:{}", client.client_id);
    // The successor is made up front; it is stored only if the credential was spent now.
    let next = successor.then(random_token);
    let backend = ctx.db.backend();
    ctx.db
        .group_commit(&ctx.clock)
        .write_without_savepoint(move |conn| {
            Box::pin(async move {
                let spend = format!(
                    "UPDATE {table} SET used_at = $1 WHERE {key_column} = $2 AND used_at IS NULL"
                );
                let spent = match (&next, backend) {
                    // One round trip on PostgreSQL: the successor is inserted only for the
                    // row the update spent, so the count says both.
                    (Some(token), Backend::Postgres) => {
                        let sql = format!(
                            "WITH spent AS ({spend} RETURNING 1) INSERT INTO idp_refresh_token                              (token_sha256, grant_id, created_at, expires_at)                              SELECT $3, $4, $1, $5 FROM spent"
                        );
                        sqlx::query(sqlx::AssertSqlSafe(sql))
                            .bind(now)
                            .bind(&key_hash)
                            .bind(sha256_hex(token.as_bytes()))
                            .bind(&grant_id)
                            .bind(now + ttl)
                            .execute(&mut *conn)
                            .await
                            .map_err(query("spending a credential"))?
                            .rows_affected()
                    }
                    (Some(token), _) => {
                        let spent = sqlx::query(sqlx::AssertSqlSafe(spend))
                            .bind(now)
                            .bind(&key_hash)
                            .execute(&mut *conn)
                            .await
                            .map_err(query("spending a credential"))?
                            .rows_affected();
                        if spent == 1 {
                            sqlx::query(
                                "INSERT INTO idp_refresh_token (token_sha256, grant_id, \
                                 created_at, expires_at) VALUES ($1, $2, $3, $4)",
                            )
                            .bind(sha256_hex(token.as_bytes()))
                            .bind(&grant_id)
                            .bind(now)
                            .bind(now + ttl)
                            .execute(&mut *conn)
                            .await
                            .map_err(query("storing a refresh token"))?;
                        }
                        spent
                    }
                    (None, _) => sqlx::query(sqlx::AssertSqlSafe(spend))
                        .bind(now)
                        .bind(&key_hash)
                        .execute(&mut *conn)
                        .await
                        .map_err(query("spending a credential"))?
                        .rows_affected(),
                };
                if spent == 0 {
                    // RFC 6749 4.1.2 and the Security BCP 4.14.2: a second use of a code
                    // or a rotated-out refresh token revokes everything the grant issued.
                    sqlx::query(
                        "UPDATE idp_grant SET revoked_at = $1 WHERE grant_id = $2 \
                         AND revoked_at IS NULL",
                    )
                    .bind(now)
                    .bind(&grant_id)
                    .execute(&mut *conn)
                    .await
                    .map_err(query("revoking a grant"))?;
                    let event = AuditEvent::new(actor, reuse_action, "grant", &grant_id)
                        .outcome(eid_core::Outcome::Denied)
                        .details(
                            json!({ "reason": "a single-use credential was presented again" }),
                        );
                    return Ok::<_, IdpError>(Written {
                        value: Spent::Reused,
                        audit: vec![event],
                    });
                }
                Ok(Written {
                    value: Spent::Now(next),
                    audit: vec![AuditEvent::new(actor, action, "grant", &grant_id)],
                })
            })
        })
        .await
}

async fn code_grant(
    idp: &Idp,
    client: &Client,
    params: &Parameters,
    jkt: Option<&str>,
) -> Result<Value, OAuthError> {
    let code = params
        .get("code")
        .ok_or_else(|| OAuthError::invalid_request("code is required"))?;
    let redirect_uri = params
        .get("redirect_uri")
        .ok_or_else(|| OAuthError::invalid_request("redirect_uri is required"))?;
    let code_hash = sha256_hex(code.as_bytes());
    let redeemed = redeem(
        idp,
        client,
        &code_hash,
        Some((redirect_uri, params.get("code_verifier"))),
        jkt,
    )
    .await?;
    redeemed.ok_or_else(|| OAuthError::invalid_grant("unknown authorization code"))
}

/// Redeems a code (or a CIBA request's auth_req_id, stored as one): `None` if no such
/// code exists. `browser` carries the redirect URI and PKCE verifier of a code from
/// the browser flow, which must match what the authorization request gave.
pub(crate) async fn redeem(
    idp: &Idp,
    client: &Client,
    code_hash: &str,
    browser: Option<(&str, Option<&str>)>,
    jkt: Option<&str>,
) -> Result<Option<Value>, OAuthError> {
    let ctx = idp.ctx();
    let now = ctx.clock.now().unix_timestamp();
    let what = if browser.is_some() {
        "authorization code"
    } else {
        "auth_req_id"
    };
    let sql = format!(
        "SELECT {GRANT_COLUMNS}, c.redirect_uri, c.code_challenge, c.nonce, c.expires_at AS \
         code_expires, c.used_at FROM idp_code c JOIN idp_grant g ON g.grant_id = c.grant_id \
         {CITIZEN_JOIN} WHERE c.code_sha256 = $1"
    );
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(code_hash)
        .fetch_optional(ctx.db.pool())
        .await
        .map_err(query("finding a code"))?
    else {
        return Ok(None);
    };
    let read = |e| query("reading a code")(e);
    let stored_redirect: String = row.try_get("redirect_uri").map_err(read)?;
    // A CIBA request's code (marked by the grant type in place of a redirect URI) is
    // redeemed only by the CIBA grant, and an authorization code only by its own.
    if (stored_redirect == CIBA_GRANT) == browser.is_some() {
        return Ok(None);
    }
    let grant = grant_from_row(&row)?;
    let used_at: Option<i64> = row.try_get("used_at").map_err(read)?;
    let reused = || {
        OAuthError::invalid_grant(format!(
            "the {what} was already used; the tokens issued with it are revoked"
        ))
    };
    if used_at.is_some() {
        spend(idp, client, Credential::Code, code_hash.to_owned(), &grant).await?;
        return Err(reused());
    }
    let expires: i64 = row.try_get("code_expires").map_err(read)?;
    if expires <= now {
        let description = format!("the {what} has expired");
        // CIBA names its own error for an expired request (CIBA Core 11).
        return Err(if browser.is_some() {
            OAuthError::invalid_grant(description)
        } else {
            OAuthError::expired_token(description)
        });
    }
    if grant.client_id != client.client_id {
        return Err(OAuthError::invalid_grant(format!(
            "the {what} was issued to another client"
        )));
    }
    let (redirect_uri, code_verifier) = browser.unwrap_or((&stored_redirect, None));
    if stored_redirect != redirect_uri {
        return Err(OAuthError::invalid_grant(
            "redirect_uri differs from the one in the authorization request",
        ));
    }
    let challenge: Option<String> = row.try_get("code_challenge").map_err(read)?;
    if let Some(challenge) = challenge {
        let verifier = code_verifier
            .ok_or_else(|| OAuthError::invalid_grant("code_verifier is required (PKCE)"))?;
        let well_formed = (43..=128).contains(&verifier.len())
            && verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if !well_formed || b64(&Sha256::digest(verifier.as_bytes())) != challenge {
            return Err(OAuthError::invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
    }
    if grant.revoked {
        return Err(OAuthError::invalid_grant("the grant has been revoked"));
    }
    // RFC 9449 10: a code bound to a key at the authorization request needs that key.
    if let Some(bound) = &grant.dpop_jkt
        && jkt != Some(bound.as_str())
    {
        return Err(OAuthError::invalid_grant(
            "the code is bound to a DPoP key (dpop_jkt); send a proof made with it",
        ));
    }
    let nonce: Option<String> = row.try_get("nonce").map_err(read)?;
    let spent = spend(idp, client, Credential::Code, code_hash.to_owned(), &grant).await?;
    match spent {
        Spent::Now(refresh) => respond(idp, client, &grant, nonce.as_deref(), refresh, true, jkt)
            .await
            .map(Some),
        Spent::Reused => Err(reused()),
    }
}

async fn refresh_grant(
    idp: &Idp,
    client: &Client,
    params: &Parameters,
    jkt: Option<&str>,
) -> Result<Value, OAuthError> {
    let ctx = idp.ctx();
    let token = params
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
    let now = ctx.clock.now().unix_timestamp();
    let token_hash = sha256_hex(token.as_bytes());
    let sql = format!(
        "SELECT {GRANT_COLUMNS}, r.expires_at AS token_expires, r.used_at FROM idp_refresh_token r \
         JOIN idp_grant g ON g.grant_id = r.grant_id {CITIZEN_JOIN} WHERE r.token_sha256 = $1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&token_hash)
        .fetch_optional(ctx.db.pool())
        .await
        .map_err(query("finding a refresh token"))?
        .ok_or_else(|| OAuthError::invalid_grant("unknown refresh token"))?;
    let mut grant = grant_from_row(&row)?;
    let read = |e| query("reading a refresh token")(e);
    if grant.client_id != client.client_id {
        return Err(OAuthError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    let reused = || {
        OAuthError::invalid_grant(
            "the refresh token was already used; every token of this grant is revoked",
        )
    };
    let used_at: Option<i64> = row.try_get("used_at").map_err(read)?;
    if used_at.is_some() {
        // A rotated-out token coming back means two parties hold it: revoke the family.
        spend(idp, client, Credential::Refresh, token_hash, &grant).await?;
        return Err(reused());
    }
    if grant.revoked {
        return Err(OAuthError::invalid_grant("the grant has been revoked"));
    }
    if !grant.authorization_details.is_empty() {
        // Never issued such a token; refused should one exist all the same.
        return Err(OAuthError::invalid_grant(
            "a grant with authorization_details is for one use and cannot be refreshed",
        ));
    }
    let expires: i64 = row.try_get("token_expires").map_err(read)?;
    if expires <= now {
        return Err(OAuthError::invalid_grant("the refresh token has expired"));
    }
    if let Some(scope) = params.get("scope") {
        let asked: Vec<String> = scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(extra) = asked.iter().find(|s| !grant.scopes.contains(s)) {
            return Err(OAuthError::invalid_scope(format!(
                "scope `{extra}` was not part of the original grant"
            )));
        }
        grant.scopes = asked;
    }
    let spent = spend(idp, client, Credential::Refresh, token_hash, &grant).await?;
    match spent {
        Spent::Now(next) => {
            let openid = grant.scopes.iter().any(|s| s == "openid");
            respond(idp, client, &grant, None, next, openid, jkt).await
        }
        Spent::Reused => Err(reused()),
    }
}

async fn client_credentials(
    idp: &Idp,
    client: &Client,
    params: &Parameters,
    jkt: Option<&str>,
) -> Result<Value, OAuthError> {
    let scopes: Vec<String> = params
        .get("scope")
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(refused) = scopes
        .iter()
        .find(|s| s.as_str() == "openid" || !client.allows_scope(s))
    {
        return Err(OAuthError::invalid_scope(format!(
            "scope `{refused}` is not allowed for this client's own access"
        )));
    }
    let now = idp.ctx().clock.now().unix_timestamp();
    let ttl = idp.ctx().config.idp.access_token_ttl_secs;
    let key = idp.keys().active()?;
    // A token for sealing is for the signing service as well as for the provider.
    let config = &idp.ctx().config;
    let audience = if scopes.iter().any(|s| s == SEAL_SCOPE) {
        json!([config.idp.issuer, config.signing.csc.audience])
    } else {
        Value::from(config.idp.issuer.as_str())
    };
    let mut claims = json!({
        "iss": config.idp.issuer,
        "sub": client.client_id,
        "aud": audience,
        "client_id": client.client_id,
        "iat": now,
        "exp": now + i64::try_from(ttl).unwrap_or(600),
        "jti": format!("cc.{}", b64(&crate::random_bytes::<16>())),
    });
    if !scopes.is_empty() {
        claims["scope"] = Value::from(scopes.join(" "));
    }
    if let Some(jkt) = jkt {
        claims["cnf"] = json!({ "jkt": jkt });
    }
    let access_token = jose::sign(&key.signer, key.alg, &key.kid, "at+jwt", &claims)
        .await
        .map_err(IdpError::from)?;
    let mut body = json!({
        "access_token": access_token,
        "token_type": if jkt.is_some() { "DPoP" } else { "Bearer" },
        "expires_in": ttl,
    });
    if !scopes.is_empty() {
        body["scope"] = Value::from(scopes.join(" "));
    }
    Ok(body)
}

/// The pairwise or public `sub` of a citizen for a client.
pub fn subject(idp: &Idp, client: &Client, citizen_id: &str) -> String {
    match client.metadata.subject_type {
        SubjectType::Public => citizen_id.to_owned(),
        SubjectType::Pairwise => {
            let mut hash = Sha256::new();
            for part in [
                client.metadata.sector.as_bytes(),
                citizen_id.as_bytes(),
                idp.salt(),
            ] {
                hash.update((part.len() as u64).to_be_bytes());
                hash.update(part);
            }
            b64(&hash.finalize())
        }
    }
}

/// The claims a citizen's data gives for the granted scopes.
pub fn scope_claims(citizen: &Citizen, scopes: &[String]) -> Map<String, Value> {
    let mut claims = Map::new();
    let has = |s: &str| scopes.iter().any(|x| x == s);
    if has("profile") {
        claims.insert("given_name".into(), citizen.given_name.clone().into());
        claims.insert("family_name".into(), citizen.family_name.clone().into());
        claims.insert(
            "name".into(),
            format!("{} {}", citizen.given_name, citizen.family_name).into(),
        );
        if let Some(birthdate) = &citizen.birthdate {
            claims.insert("birthdate".into(), birthdate.clone().into());
        }
    }
    if has("national_id") {
        claims.insert("national_id".into(), citizen.national_id.clone().into());
    }
    if has("contact") {
        if let Some(email) = &citizen.email {
            claims.insert("email".into(), email.clone().into());
        }
        if let Some(phone) = &citizen.phone_number {
            claims.insert("phone_number".into(), phone.clone().into());
        }
    }
    claims
}

/// Whether a grant's access tokens are for the remote signing service too (CSC API v2):
/// it has a CSC scope or a signing authorisation. Such a token names the signing
/// service's audience beside the issuer, and its `sub` is the citizen's internal
/// identifier (the public subject), whatever subject type the client has: the signing
/// service finds the citizen's credentials by it. A client allowed the CSC scopes
/// therefore sees that identifier in its access tokens; its ID tokens and userinfo keep
/// the client's own (pairwise) `sub`.
fn for_signing_service(grant: &Grant) -> bool {
    !grant.authorization_details.is_empty()
        || grant
            .scopes
            .iter()
            .any(|scope| CSC_SCOPES.contains(&scope.as_str()))
}

async fn respond(
    idp: &Idp,
    client: &Client,
    grant: &Grant,
    nonce: Option<&str>,
    refresh_token: Option<String>,
    with_id_token: bool,
    jkt: Option<&str>,
) -> Result<Value, OAuthError> {
    let ctx = idp.ctx();
    let config = &ctx.config.idp;
    let now = ctx.clock.now().unix_timestamp();
    let citizen_id = grant
        .citizen_id
        .as_deref()
        .ok_or_else(|| IdpError::stored("grant", "no citizen"))?;
    let citizen = grant
        .citizen
        .as_ref()
        .ok_or_else(|| IdpError::stored("grant", "citizen missing"))?;
    let sub = subject(idp, client, citizen_id);
    let key = idp.keys().active()?;
    let acr = grant.level.map(|level| idp.acr_value(level).to_owned());
    let access_ttl = i64::try_from(config.access_token_ttl_secs).unwrap_or(600);
    let (access_sub, access_aud) = if for_signing_service(grant) {
        (
            Value::from(citizen_id),
            json!([config.issuer, ctx.config.signing.csc.audience]),
        )
    } else {
        (
            Value::from(sub.as_str()),
            Value::from(config.issuer.as_str()),
        )
    };
    let mut access = json!({
        "iss": config.issuer,
        "sub": access_sub,
        "aud": access_aud,
        "client_id": client.client_id,
        "iat": now,
        "exp": now + access_ttl,
        "jti": format!("{}.{}", grant.grant_id, b64(&crate::random_bytes::<12>())),
        "scope": grant.scopes.join(" "),
    });
    if let Some(auth_time) = grant.auth_time {
        access["auth_time"] = auth_time.into();
    }
    if let Some(acr) = &acr {
        access["acr"] = acr.clone().into();
    }
    if let Some(jkt) = jkt {
        access["cnf"] = json!({ "jkt": jkt });
    }
    let details =
        (!grant.authorization_details.is_empty()).then(|| to_json(&grant.authorization_details));
    if let Some(details) = &details {
        access["authorization_details"] = details.clone();
    }
    let access_token = jose::sign(&key.signer, key.alg, &key.kid, "at+jwt", &access)
        .await
        .map_err(IdpError::from)?;
    let mut body = json!({
        "access_token": access_token,
        "token_type": if jkt.is_some() { "DPoP" } else { "Bearer" },
        "expires_in": access_ttl,
        "scope": grant.scopes.join(" "),
    });
    if let Some(details) = details {
        body["authorization_details"] = details;
    }
    if with_id_token {
        let mut id = json!({
            "iss": config.issuer,
            "sub": sub,
            "aud": client.client_id,
            "iat": now,
            "exp": now + i64::try_from(config.id_token_ttl_secs).unwrap_or(600),
            "amr": grant.amr,
            "at_hash": jose::half_hash(&access_token),
        });
        if let Some(auth_time) = grant.auth_time {
            id["auth_time"] = auth_time.into();
        }
        if let Some(acr) = acr {
            id["acr"] = acr.into();
        }
        if let Some(nonce) = nonce {
            id["nonce"] = nonce.into();
        }
        if let Some(sid) = &grant.sid {
            id["sid"] = sid.clone().into();
        }
        // Claims asked for in the ID token by the claims parameter, within the scopes.
        let available = scope_claims(citizen, &grant.scopes);
        for name in &grant.id_token_claims {
            if let Some(value) = available.get(name) {
                id[name.as_str()] = value.clone();
            }
        }
        // The client's own ID-token algorithm if it registered one (RS256 for relying
        // parties that know no other); access tokens stay in the provider's.
        let id_key = match client.metadata.id_token_alg {
            Some(alg) if alg != key.alg => idp.keys().signing_key(alg).await?,
            _ => key.clone(),
        };
        body["id_token"] = jose::sign(&id_key.signer, id_key.alg, &id_key.kid, "JWT", &id)
            .await
            .map_err(IdpError::from)?
            .into();
    }
    if let Some(refresh) = refresh_token {
        body["refresh_token"] = refresh.into();
    }
    Ok(body)
}

/// A verified access token of ours.
#[derive(Debug)]
pub struct AccessToken {
    /// The claims.
    pub claims: Map<String, Value>,
    /// The grant it belongs to (none for client-credentials tokens).
    pub grant_id: Option<String>,
    /// That grant as stored, read once while checking it is not revoked.
    grant: Option<Grant>,
}

/// Verifies an access token we issued: signature by a published key, type, issuer,
/// expiry, and that its grant is not revoked.
pub async fn verify_access_token(idp: &Idp, token: &str) -> Result<AccessToken, OAuthError> {
    let invalid = |why: &str| OAuthError::invalid_token(why.to_owned());
    let parsed = Parsed::new(token).map_err(|_| invalid("malformed access token"))?;
    let alg = parsed
        .algorithm(&[Algorithm::Es256, Algorithm::Ps256])
        .map_err(|_| invalid("unexpected algorithm"))?;
    let kid = parsed.kid().ok_or_else(|| invalid("no kid"))?;
    let (key_alg, key) = idp
        .keys()
        .verifying_key(kid)
        .ok_or_else(|| invalid("signed by an unknown key"))?;
    if key_alg != alg {
        return Err(invalid("algorithm does not match the key"));
    }
    parsed
        .verify(alg, &key)
        .map_err(|_| invalid("bad signature"))?;
    if parsed.header.get("typ").and_then(Value::as_str) != Some("at+jwt") {
        return Err(invalid("not an access token (typ)"));
    }
    let claims = parsed.claims;
    if claims.get("iss").and_then(Value::as_str) != Some(idp.ctx().config.idp.issuer.as_str()) {
        return Err(invalid("issued by someone else"));
    }
    // RFC 9068 4: the provider is a resource of its own tokens (userinfo); `aud` is the
    // issuer, or a list naming it (tokens also meant for the signing service).
    let issuer = idp.ctx().config.idp.issuer.as_str();
    let for_us = match claims.get("aud") {
        Some(Value::String(aud)) => aud == issuer,
        Some(Value::Array(list)) => list.iter().any(|aud| aud.as_str() == Some(issuer)),
        _ => false,
    };
    if !for_us {
        return Err(invalid(
            "the access token is not meant for this provider (aud)",
        ));
    }
    let now = idp.ctx().clock.now().unix_timestamp();
    if claims
        .get("exp")
        .and_then(Value::as_i64)
        .is_none_or(|exp| exp <= now)
    {
        return Err(invalid("the access token has expired"));
    }
    let jti = claims.get("jti").and_then(Value::as_str).unwrap_or("");
    let grant_id = match jti.split_once('.') {
        Some(("cc", _)) => None,
        Some((grant, _)) => Some(grant.to_owned()),
        None => return Err(invalid("malformed jti")),
    };
    let grant = match &grant_id {
        Some(grant_id) => {
            let sql = format!(
                "SELECT {GRANT_COLUMNS} FROM idp_grant g {CITIZEN_JOIN} WHERE g.grant_id = $1"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(grant_id)
                .fetch_optional(idp.ctx().db.pool())
                .await
                .map_err(|e| OAuthError::from(query("checking a grant")(e)))?
                .ok_or_else(|| invalid("unknown grant"))?;
            let grant = grant_from_row(&row)?;
            if grant.revoked {
                return Err(invalid("the access token has been revoked"));
            }
            Some(grant)
        }
        None => None,
    };
    Ok(AccessToken {
        claims,
        grant_id,
        grant,
    })
}

/// How an access token was presented at a resource of this provider.
#[derive(Debug)]
pub struct Presented<'a> {
    /// The token.
    pub token: &'a str,
    /// `Authorization: DPoP` rather than `Bearer`.
    pub dpop_scheme: bool,
    /// The `DPoP` header, if any.
    pub proof: Option<&'a str>,
    /// The request's method, which the proof must name.
    pub method: &'a str,
    /// The request's URL, which the proof must name.
    pub url: &'a str,
}

/// Verifies a presented access token, and its DPoP proof when the token is bound.
pub async fn verify_presented(
    idp: &Idp,
    presented: &Presented<'_>,
) -> Result<AccessToken, OAuthError> {
    let access = verify_access_token(idp, presented.token).await?;
    let bound = access
        .claims
        .get("cnf")
        .and_then(|cnf| cnf.get("jkt"))
        .and_then(Value::as_str);
    match (bound, presented.dpop_scheme, presented.proof) {
        (None, false, _) => Ok(access),
        (None, true, _) => Err(OAuthError::invalid_token(
            "the access token is not DPoP-bound; present it as Bearer",
        )),
        (Some(_), false, _) => Err(OAuthError::invalid_token(
            "the access token is DPoP-bound; present it with the DPoP scheme and a proof",
        )),
        (Some(_), true, None) => Err(OAuthError::invalid_dpop_proof("no DPoP proof")),
        (Some(jkt), true, Some(proof)) => {
            let proved = idp.dpop(
                proof,
                presented.method,
                presented.url,
                Some(presented.token),
            )?;
            if proved == jkt {
                Ok(access)
            } else {
                Err(OAuthError::invalid_dpop_proof(
                    "the proof is made with another key than the token is bound to",
                ))
            }
        }
    }
}

/// Userinfo (OpenID Connect Core 5.3): the claims of the granted scopes.
pub async fn userinfo(idp: &Idp, presented: &Presented<'_>) -> Result<Value, OAuthError> {
    let access = verify_presented(idp, presented).await?;
    let Some(grant) = access.grant else {
        return Err(OAuthError::insufficient_scope(
            "a client's own access token carries no citizen",
        ));
    };
    let scopes: Vec<String> = access
        .claims
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or("")
        .split(' ')
        .map(str::to_owned)
        .collect();
    if !scopes.iter().any(|s| s == "openid") {
        return Err(OAuthError::insufficient_scope(
            "userinfo needs the openid scope",
        ));
    }
    let client = idp
        .client(&grant.client_id)
        .await?
        .ok_or_else(|| OAuthError::invalid_token("the client has been removed"))?;
    let citizen = grant
        .citizen
        .ok_or_else(|| OAuthError::invalid_token("no citizen"))?;
    let citizen_id = citizen.citizen_id.clone();
    let mut claims = scope_claims(&citizen, &scopes);
    claims.insert("sub".into(), subject(idp, &client, &citizen_id).into());
    Ok(Value::Object(claims))
}

/// Fetches a client's public keys (for `private_key_jwt`).
pub(crate) async fn fetch_jwks(http: &reqwest::Client, uri: &str) -> Result<Vec<Jwk>, OAuthError> {
    let fail = |why: String| OAuthError::invalid_client(format!("client JWKS at {uri}: {why}"));
    let response = http
        .get(uri)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("HTTP {}", response.status())));
    }
    let body: Value = response.json().await.map_err(|e| fail(e.to_string()))?;
    let keys = body
        .get("keys")
        .cloned()
        .ok_or_else(|| fail("no keys member".into()))?;
    serde_json::from_value(keys).map_err(|e| fail(e.to_string()))
}

/// Token revocation (RFC 7009): a refresh token or access token of this client revokes
/// its whole grant. Unknown tokens, and other clients' tokens, change nothing.
pub async fn revoke(idp: &Idp, client: &Client, token: &str) -> Result<(), OAuthError> {
    let grant_id = match grant_of_token(idp, token).await? {
        Some((grant_id, client_id)) if client_id == client.client_id => grant_id,
        _ => return Ok(()),
    };
    let ctx = idp.ctx();
    let now = ctx.clock.now().unix_timestamp();
    let mut tx = ctx.db.begin_write().await.map_err(IdpError::from)?;
    let revoked = sqlx::query(
        "UPDATE idp_grant SET revoked_at = $1 WHERE grant_id = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(&grant_id)
    .execute(&mut *tx)
    .await
    .map_err(query("revoking a grant"))?
    .rows_affected();
    if revoked > 0 {
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                format!("client:{}", client.client_id),
                "idp.token.revoke",
                "grant",
                &grant_id,
            ),
        )
        .await
        .map_err(IdpError::from)?;
    }
    tx.commit().await.map_err(query("revoking a grant"))?;
    Ok(())
}

/// The grant (and its client) a refresh token or one of our access tokens belongs to.
async fn grant_of_token(idp: &Idp, token: &str) -> Result<Option<(String, String)>, OAuthError> {
    let row = sqlx::query(
        "SELECT g.grant_id, g.client_id FROM idp_refresh_token r \
         JOIN idp_grant g ON g.grant_id = r.grant_id WHERE r.token_sha256 = $1",
    )
    .bind(sha256_hex(token.as_bytes()))
    .fetch_optional(idp.ctx().db.pool())
    .await
    .map_err(|e| OAuthError::from(query("finding a token")(e)))?;
    if let Some(row) = row {
        let read = |e| OAuthError::from(query("reading a token")(e));
        return Ok(Some((
            row.try_get("grant_id").map_err(read)?,
            row.try_get("client_id").map_err(read)?,
        )));
    }
    match verify_access_token(idp, token).await {
        Ok(AccessToken {
            grant_id: Some(grant_id),
            claims,
            ..
        }) => Ok(claims
            .get("client_id")
            .and_then(Value::as_str)
            .map(|client_id| (grant_id, client_id.to_owned()))),
        _ => Ok(None),
    }
}

/// Token introspection (RFC 7662) for resource servers (registered clients).
pub async fn introspect(idp: &Idp, _caller: &Client, token: &str) -> Result<Value, OAuthError> {
    let inactive = json!({ "active": false });
    if let Ok(access) = verify_access_token(idp, token).await {
        let mut body = json!({ "active": true, "token_type": "Bearer" });
        for name in [
            "scope",
            "client_id",
            "sub",
            "exp",
            "iat",
            "iss",
            "aud",
            "jti",
            "acr",
            "auth_time",
            "cnf",
            "authorization_details",
        ] {
            if let Some(value) = access.claims.get(name) {
                body[name] = value.clone();
            }
        }
        return Ok(body);
    }
    let now = idp.ctx().clock.now().unix_timestamp();
    let row = sqlx::query(
        "SELECT g.client_id, g.scope, r.expires_at FROM idp_refresh_token r \
         JOIN idp_grant g ON g.grant_id = r.grant_id \
         WHERE r.token_sha256 = $1 AND r.used_at IS NULL AND g.revoked_at IS NULL",
    )
    .bind(sha256_hex(token.as_bytes()))
    .fetch_optional(idp.ctx().db.pool())
    .await
    .map_err(|e| OAuthError::from(query("introspecting a token")(e)))?;
    let Some(row) = row else { return Ok(inactive) };
    let read = |e| OAuthError::from(query("reading a token")(e));
    let expires: i64 = row.try_get("expires_at").map_err(read)?;
    if expires <= now {
        return Ok(inactive);
    }
    let client_id: String = row.try_get("client_id").map_err(read)?;
    let scope: String = row.try_get("scope").map_err(read)?;
    Ok(json!({
        "active": true,
        "token_type": "refresh_token",
        "client_id": client_id,
        "scope": scope,
        "exp": expires,
        "iss": idp.ctx().config.idp.issuer,
    }))
}
