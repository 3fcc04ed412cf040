//! The relying-party registry: who may ask for logins, where codes may be sent, which
//! scopes and assurance levels each may have, and how each authenticates.

use eid_core::{AuditEvent, ServiceContext, audit};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use zeroize::Zeroizing;

use crate::{
    IdpError, Level,
    error::query,
    jose::{Algorithm, Jwk, b64},
    random_token,
};

/// Scopes the provider knows. `openid` is always allowed.
pub const SCOPES: &[&str] = &[
    "openid",
    "profile",
    "national_id",
    "contact",
    "offline_access",
    "service",
    "credential",
    "eseal",
];

/// The scopes of the Cloud Signature Consortium API v2 (8.3.2): `service` (the signing
/// service's credential list and info) and `credential` (authorising signatures with one
/// credential, with `authorization_details` or on its own). A client registered for
/// either gets access tokens meant for the signing service too, and those tokens carry
/// the citizen's internal identifier as `sub` (see [`crate::tokens`]).
pub const CSC_SCOPES: &[&str] = &["service", "credential"];

/// The scope of the signing service's organisation seals: a service client (client
/// credentials grant) allowed it gets access tokens meant for the signing service too.
pub const SEAL_SCOPE: &str = "eseal";

/// How a client authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// HTTP Basic with the client secret (RFC 6749 2.3.1).
    ClientSecretBasic,
    /// The secret in the form body.
    ClientSecretPost,
    /// A JWT signed with the client's key, published at its JWKS URI (RFC 7523).
    PrivateKeyJwt,
}

impl AuthMethod {
    /// Parses the registered name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            "private_key_jwt" => Some(Self::PrivateKeyJwt),
            _ => None,
        }
    }

    /// The registered name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// The CIBA grant type (OpenID Connect CIBA Core 1.0).
pub const CIBA_GRANT: &str = "urn:openid:params:grant-type:ciba";

/// How a CIBA client learns that the citizen has answered
/// (`backchannel_token_delivery_mode`). Push is not offered: it hands tokens to an
/// endpoint without the client asking, and FAPI-CIBA leaves it out too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CibaMode {
    /// The client polls the token endpoint.
    Poll,
    /// The provider calls the client's notification endpoint, then the client asks
    /// the token endpoint.
    Ping,
}

impl CibaMode {
    /// Parses the registered name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "poll" => Some(Self::Poll),
            "ping" => Some(Self::Ping),
            _ => None,
        }
    }

    /// The registered name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Poll => "poll",
            Self::Ping => "ping",
        }
    }
}

/// How `sub` is formed for a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectType {
    /// Different per sector (the default): services of different sectors cannot join
    /// their records on `sub`.
    Pairwise,
    /// The same for every client configured public.
    Public,
}

/// A client's registration, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientMetadata {
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may return to.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Scopes the client may ask for (`openid` implied).
    pub scopes: Vec<String>,
    /// Grant types: `authorization_code`, `refresh_token`, `client_credentials`.
    pub grant_types: Vec<String>,
    /// Token endpoint authentication.
    pub auth_method: AuthMethod,
    /// Where the client's public keys are (for `private_key_jwt`).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Public keys given at registration (instead of a JWKS URI).
    #[serde(default)]
    pub jwks: Option<Vec<Jwk>>,
    /// Pairwise or public `sub`.
    pub subject_type: SubjectType,
    /// The sector identifier for pairwise subjects (default: the redirect URIs' host).
    pub sector: String,
    /// The lowest assurance level the client accepts for any login.
    pub min_level: Level,
    /// Whether authorization requests must be pushed first (RFC 9126).
    #[serde(default)]
    pub require_par: bool,
    /// Whether tokens must be DPoP-bound (RFC 9449).
    #[serde(default)]
    pub require_dpop: bool,
    /// Back-channel logout endpoint (OpenID Connect Back-Channel Logout 1.0).
    #[serde(default)]
    pub backchannel_logout_uri: Option<String>,
    /// The algorithm of this client's ID tokens, if not the provider's own
    /// (`id_token_signed_response_alg`: ES256, PS256 or RS256).
    #[serde(default)]
    pub id_token_alg: Option<Algorithm>,
    /// CIBA delivery mode, for clients of the CIBA grant.
    #[serde(default)]
    pub ciba_mode: Option<CibaMode>,
    /// Where a ping-mode CIBA client is notified
    /// (`backchannel_client_notification_endpoint`).
    #[serde(default)]
    pub ciba_notification_endpoint: Option<String>,
}

/// A registered relying party.
#[derive(Clone, Debug)]
pub struct Client {
    /// The client identifier.
    pub client_id: String,
    /// Display name (shown on the consent page).
    pub name: String,
    /// The registration.
    pub metadata: ClientMetadata,
    secret_sha256: Option<String>,
}

impl Client {
    /// Whether `secret` is this client's secret.
    pub fn secret_matches(&self, secret: &str) -> bool {
        let Some(stored) = &self.secret_sha256 else {
            return false;
        };
        // Comparing digests of a high-entropy secret: a timing difference reveals
        // nothing usable about the secret itself.
        &sha256_hex(secret.as_bytes()) == stored
    }

    /// Whether the client may use `grant_type`.
    pub fn allows_grant(&self, grant_type: &str) -> bool {
        self.metadata.grant_types.iter().any(|g| g == grant_type)
    }

    /// Whether `scope` may be asked for.
    pub fn allows_scope(&self, scope: &str) -> bool {
        scope == "openid" || self.metadata.scopes.iter().any(|s| s == scope)
    }
}

/// What an operator gives to register a client.
#[derive(Clone, Debug)]
pub struct NewClient {
    /// Display name.
    pub name: String,
    /// Exact redirect URIs (at least one for the code flow).
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may return to.
    pub post_logout_redirect_uris: Vec<String>,
    /// Scopes beyond `openid` (default: `profile`).
    pub scopes: Vec<String>,
    /// Grant types (default: `authorization_code`, `refresh_token`).
    pub grant_types: Vec<String>,
    /// Token endpoint authentication (default: `client_secret_basic`).
    pub auth_method: AuthMethod,
    /// JWKS URI for `private_key_jwt`.
    pub jwks_uri: Option<String>,
    /// Public subject instead of pairwise.
    pub public_subject: bool,
    /// Explicit sector identifier (a host name).
    pub sector: Option<String>,
    /// Lowest acceptable level.
    pub min_level: Level,
    /// Require PAR.
    pub require_par: bool,
    /// Require DPoP-bound tokens.
    pub require_dpop: bool,
    /// Back-channel logout endpoint.
    pub backchannel_logout_uri: Option<String>,
    /// ID tokens in this algorithm rather than the provider's (`ES256`, `PS256`, `RS256`).
    pub id_token_alg: Option<String>,
    /// CIBA delivery mode (`poll` or `ping`; the CIBA grant defaults to `poll`).
    pub ciba_mode: Option<String>,
    /// The notification endpoint of a ping-mode CIBA client.
    pub ciba_notification_endpoint: Option<String>,
}

impl NewClient {
    /// A confidential code-flow client with the defaults.
    pub fn new(name: impl Into<String>, redirect_uris: Vec<String>) -> Self {
        Self {
            name: name.into(),
            redirect_uris,
            post_logout_redirect_uris: Vec::new(),
            scopes: vec!["profile".into()],
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            auth_method: AuthMethod::ClientSecretBasic,
            jwks_uri: None,
            public_subject: false,
            sector: None,
            min_level: Level::Low,
            require_par: false,
            require_dpop: false,
            backchannel_logout_uri: None,
            id_token_alg: None,
            ciba_mode: None,
            ciba_notification_endpoint: None,
        }
    }
}

/// A newly registered client and, for secret-based methods, its secret (shown once).
#[derive(Debug)]
pub struct Registered {
    /// The client.
    pub client: Client,
    /// The secret, for `client_secret_*` methods.
    pub secret: Option<Zeroizing<String>>,
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex_lower(&Sha256::digest(data))
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Checks a redirect or logout URI: absolute, no fragment, https (or http on a loopback
/// host, as RFC 8252 allows native and development clients).
pub(crate) fn check_uri(what: &'static str, uri: &str) -> Result<url::Url, IdpError> {
    // The URL parser drops tabs and newlines silently; the registered string is what
    // requests are compared with and what goes into Location headers, so refuse them.
    if uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(IdpError::invalid(
            what,
            format!("{uri:?} contains whitespace or control characters"),
        ));
    }
    let parsed =
        url::Url::parse(uri).map_err(|e| IdpError::invalid(what, format!("`{uri}`: {e}")))?;
    if parsed.fragment().is_some() {
        return Err(IdpError::invalid(
            what,
            format!("`{uri}` has a fragment (RFC 6749 3.1.2)"),
        ));
    }
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => Err(IdpError::invalid(
            what,
            format!("`{uri}` must be https (http only for a loopback host)"),
        )),
    }
}

fn validate(new: &NewClient) -> Result<ClientMetadata, IdpError> {
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(IdpError::invalid("name", "1 to 100 printable characters"));
    }
    let mut grant_types = new.grant_types.clone();
    grant_types.sort();
    grant_types.dedup();
    for grant in &grant_types {
        if !matches!(
            grant.as_str(),
            "authorization_code" | "refresh_token" | "client_credentials" | CIBA_GRANT
        ) {
            return Err(IdpError::invalid(
                "grant type",
                format!(
                    "`{grant}` is not authorization_code, refresh_token, client_credentials or {CIBA_GRANT}"
                ),
            ));
        }
    }
    let (ciba_mode, ciba_notification_endpoint) = validate_ciba(new, &grant_types)?;
    let code_flow = grant_types.iter().any(|g| g == "authorization_code");
    if code_flow && new.redirect_uris.is_empty() {
        return Err(IdpError::invalid(
            "redirect URI",
            "a client of the authorization code flow needs at least one",
        ));
    }
    let mut hosts = Vec::new();
    for uri in &new.redirect_uris {
        let parsed = check_uri("redirect URI", uri)?;
        hosts.push(parsed.host_str().unwrap_or_default().to_owned());
    }
    for uri in &new.post_logout_redirect_uris {
        check_uri("post-logout redirect URI", uri)?;
    }
    if let Some(uri) = &new.backchannel_logout_uri {
        check_uri("back-channel logout URI", uri)?;
    }
    let mut scopes: Vec<String> = new
        .scopes
        .iter()
        .filter(|s| s.as_str() != "openid")
        .cloned()
        .collect();
    scopes.sort();
    scopes.dedup();
    for scope in &scopes {
        if !SCOPES.contains(&scope.as_str()) {
            return Err(IdpError::invalid(
                "scope",
                format!("`{scope}` is not one of {}", SCOPES.join(", ")),
            ));
        }
    }
    let id_token_alg = match new.id_token_alg.as_deref() {
        None => None,
        Some(name) => Some(Algorithm::parse(name).ok_or_else(|| {
            IdpError::invalid(
                "ID token algorithm",
                format!("`{name}` is not ES256, PS256 or RS256"),
            )
        })?),
    };
    if new.auth_method == AuthMethod::PrivateKeyJwt {
        let Some(uri) = &new.jwks_uri else {
            return Err(IdpError::invalid(
                "jwks URI",
                "private_key_jwt needs the client's JWKS URI",
            ));
        };
        check_uri("jwks URI", uri)?;
    }
    hosts.sort();
    hosts.dedup();
    let sector = match &new.sector {
        Some(sector) => sector.clone(),
        None if hosts.len() <= 1 => hosts.pop().unwrap_or_else(|| name.to_owned()),
        None => {
            return Err(IdpError::invalid(
                "sector",
                format!(
                    "the redirect URIs name several hosts ({}); give the sector identifier \
                     that groups them, so pairwise subjects stay the same across them",
                    hosts.join(", ")
                ),
            ));
        }
    };
    Ok(ClientMetadata {
        redirect_uris: new.redirect_uris.clone(),
        post_logout_redirect_uris: new.post_logout_redirect_uris.clone(),
        scopes,
        grant_types,
        auth_method: new.auth_method,
        jwks_uri: new.jwks_uri.clone(),
        jwks: None,
        subject_type: if new.public_subject {
            SubjectType::Public
        } else {
            SubjectType::Pairwise
        },
        sector,
        min_level: new.min_level,
        require_par: new.require_par,
        require_dpop: new.require_dpop,
        backchannel_logout_uri: new.backchannel_logout_uri.clone(),
        id_token_alg,
        ciba_mode,
        ciba_notification_endpoint,
    })
}

/// The CIBA part of a registration: a mode only with the grant (poll by default), and
/// ping with its notification endpoint.
fn validate_ciba(
    new: &NewClient,
    grant_types: &[String],
) -> Result<(Option<CibaMode>, Option<String>), IdpError> {
    let ciba = grant_types.iter().any(|g| g == CIBA_GRANT);
    let mode = match new.ciba_mode.as_deref() {
        None => None,
        Some(name) => Some(CibaMode::parse(name).ok_or_else(|| {
            IdpError::invalid(
                "CIBA delivery mode",
                format!("`{name}` is not poll or ping (push is not offered)"),
            )
        })?),
    };
    if !ciba {
        if mode.is_some() || new.ciba_notification_endpoint.is_some() {
            return Err(IdpError::invalid(
                "CIBA delivery mode",
                format!("only a client of the {CIBA_GRANT} grant has one"),
            ));
        }
        return Ok((None, None));
    }
    let mode = mode.unwrap_or(CibaMode::Poll);
    match (&new.ciba_notification_endpoint, mode) {
        (Some(uri), CibaMode::Ping) => {
            check_uri("CIBA notification endpoint", uri)?;
            Ok((Some(mode), Some(uri.clone())))
        }
        (None, CibaMode::Ping) => Err(IdpError::invalid(
            "CIBA notification endpoint",
            "a ping-mode client needs backchannel_client_notification_endpoint",
        )),
        (Some(_), CibaMode::Poll) => Err(IdpError::invalid(
            "CIBA notification endpoint",
            "a poll-mode client is not notified: leave the endpoint out, or choose ping",
        )),
        (None, CibaMode::Poll) => Ok((Some(mode), None)),
    }
}

fn new_secret(method: AuthMethod) -> Option<Zeroizing<String>> {
    match method {
        AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost => {
            Some(Zeroizing::new(random_token()))
        }
        AuthMethod::PrivateKeyJwt => None,
    }
}

/// Registers a client; `actor` is recorded in the audit log.
pub async fn register(
    ctx: &ServiceContext,
    actor: &str,
    new: &NewClient,
) -> Result<Registered, IdpError> {
    let metadata = validate(new)?;
    // The algorithm's key first: a client never exists whose ID tokens cannot be signed
    // (a key made for a registration that then fails is unused, and harmless).
    if let Some(alg) = metadata.id_token_alg {
        crate::keys::ensure_algorithm(ctx, actor, alg).await?;
    }
    let client_id = format!("rp-{}", &b64(&crate::random_bytes::<12>()));
    let secret = new_secret(metadata.auth_method);
    let secret_sha256 = secret.as_ref().map(|s| sha256_hex(s.as_bytes()));
    let now = ctx.clock.now().unix_timestamp();
    let metadata_json =
        serde_json::to_string(&metadata).map_err(|e| IdpError::stored("client", e))?;
    let mut tx = ctx.db.begin_write().await?;
    sqlx::query(
        "INSERT INTO idp_client (client_id, name, secret_sha256, metadata, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&client_id)
    .bind(new.name.trim())
    .bind(secret_sha256.clone())
    .bind(&metadata_json)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(query("registering a client"))?;
    audit::append(
        &mut tx,
        ctx.clock.as_ref(),
        &AuditEvent::new(actor, "rp.register", "client", &client_id).details(serde_json::json!({
            "name": new.name.trim(),
            "redirect_uris": metadata.redirect_uris,
            "scopes": metadata.scopes,
            "grant_types": metadata.grant_types,
            "auth_method": metadata.auth_method.name(),
            "min_level": metadata.min_level.name(),
        })),
    )
    .await?;
    tx.commit().await.map_err(query("registering a client"))?;
    Ok(Registered {
        client: Client {
            client_id,
            name: new.name.trim().to_owned(),
            metadata,
            secret_sha256,
        },
        secret,
    })
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<Client, IdpError> {
    let metadata: String = row.try_get("metadata").map_err(query("reading a client"))?;
    Ok(Client {
        client_id: row
            .try_get("client_id")
            .map_err(query("reading a client"))?,
        name: row.try_get("name").map_err(query("reading a client"))?,
        secret_sha256: row
            .try_get("secret_sha256")
            .map_err(query("reading a client"))?,
        metadata: serde_json::from_str(&metadata).map_err(|e| IdpError::stored("client", e))?,
    })
}

/// The active client with this identifier.
pub async fn find(ctx: &ServiceContext, client_id: &str) -> Result<Option<Client>, IdpError> {
    if client_id.len() > 128 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT client_id, name, secret_sha256, metadata FROM idp_client \
         WHERE client_id = $1 AND removed_at IS NULL",
    )
    .bind(client_id)
    .fetch_optional(ctx.db.pool())
    .await
    .map_err(query("finding a client"))?;
    row.as_ref().map(from_row).transpose()
}

/// Registrations kept in memory for a short while (`idp.client_cache_secs`): authorize,
/// the token endpoint and userinfo each need the client, and reading it anew was a large
/// share of their database work. Only registrations found are kept; a change made here
/// ([`ClientCache::forget`]) applies at once, one made by another process within the
/// time-to-live.
#[derive(Debug)]
pub struct ClientCache {
    ttl: std::time::Duration,
    entries: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Client)>>,
}

/// The most registrations kept; past it, the stale ones are dropped, then all.
const MAX_CACHED_CLIENTS: usize = 4096;

impl ClientCache {
    /// A cache keeping registrations for `ttl` (zero: read every time).
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            ttl,
            entries: std::sync::Mutex::default(),
        }
    }

    /// The active client with this id, from memory if read less than the ttl ago.
    pub async fn find(
        &self,
        ctx: &ServiceContext,
        client_id: &str,
    ) -> Result<Option<Client>, IdpError> {
        if self.ttl.is_zero() {
            return find(ctx, client_id).await;
        }
        if let Some((read_at, client)) = self.lock().get(client_id)
            && read_at.elapsed() < self.ttl
        {
            return Ok(Some(client.clone()));
        }
        let found = find(ctx, client_id).await?;
        let mut entries = self.lock();
        match &found {
            Some(client) => {
                if entries.len() >= MAX_CACHED_CLIENTS {
                    entries.retain(|_, (read_at, _)| read_at.elapsed() < self.ttl);
                    if entries.len() >= MAX_CACHED_CLIENTS {
                        entries.clear();
                    }
                }
                entries.insert(
                    client_id.to_owned(),
                    (std::time::Instant::now(), client.clone()),
                );
            }
            None => {
                entries.remove(client_id);
            }
        }
        Ok(found)
    }

    /// Drops what is kept of a client (after it was changed or removed here).
    pub fn forget(&self, client_id: &str) {
        self.lock().remove(client_id);
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (std::time::Instant, Client)>>
    {
        // A panic while holding the lock leaves nothing half-changed worth refusing.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Every active client, oldest first.
pub async fn list(ctx: &ServiceContext) -> Result<Vec<Client>, IdpError> {
    sqlx::query(
        "SELECT client_id, name, secret_sha256, metadata FROM idp_client \
         WHERE removed_at IS NULL ORDER BY created_at, client_id",
    )
    .fetch_all(ctx.db.pool())
    .await
    .map_err(query("listing clients"))?
    .iter()
    .map(from_row)
    .collect()
}

/// Removes a client: it can no longer log anyone in, and its grants are revoked.
pub async fn remove(ctx: &ServiceContext, actor: &str, client_id: &str) -> Result<(), IdpError> {
    let now = ctx.clock.now().unix_timestamp();
    let mut tx = ctx.db.begin_write().await?;
    let removed = sqlx::query(
        "UPDATE idp_client SET removed_at = $1 WHERE client_id = $2 AND removed_at IS NULL",
    )
    .bind(now)
    .bind(client_id)
    .execute(&mut *tx)
    .await
    .map_err(query("removing a client"))?
    .rows_affected();
    if removed == 0 {
        return Err(IdpError::NotFound(format!(
            "no active client with id `{client_id}`"
        )));
    }
    let revoked = sqlx::query(
        "UPDATE idp_grant SET revoked_at = $1 WHERE client_id = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(client_id)
    .execute(&mut *tx)
    .await
    .map_err(query("revoking a removed client's grants"))?
    .rows_affected();
    audit::append(
        &mut tx,
        ctx.clock.as_ref(),
        &AuditEvent::new(actor, "rp.remove", "client", client_id)
            .details(serde_json::json!({ "grants_revoked": revoked })),
    )
    .await?;
    tx.commit().await.map_err(query("removing a client"))?;
    Ok(())
}

/// Gives a secret-based client a new secret; the old one stops working at once.
pub async fn rotate_secret(
    ctx: &ServiceContext,
    actor: &str,
    client_id: &str,
) -> Result<Zeroizing<String>, IdpError> {
    let client = find(ctx, client_id)
        .await?
        .ok_or_else(|| IdpError::NotFound(format!("no active client with id `{client_id}`")))?;
    let secret = new_secret(client.metadata.auth_method).ok_or_else(|| {
        IdpError::invalid(
            "client",
            "authenticates with private_key_jwt and has no secret; rotate its keys at its JWKS URI",
        )
    })?;
    let mut tx = ctx.db.begin_write().await?;
    sqlx::query("UPDATE idp_client SET secret_sha256 = $1 WHERE client_id = $2")
        .bind(sha256_hex(secret.as_bytes()))
        .bind(client_id)
        .execute(&mut *tx)
        .await
        .map_err(query("rotating a client secret"))?;
    audit::append(
        &mut tx,
        ctx.clock.as_ref(),
        &AuditEvent::new(actor, "rp.rotate_secret", "client", client_id),
    )
    .await?;
    tx.commit()
        .await
        .map_err(query("rotating a client secret"))?;
    Ok(secret)
}

/// Makes sure one of the provider's own clients exists (the self-service pages), with
/// no secret: it never uses the token endpoint.
pub(crate) async fn ensure_internal(
    ctx: &ServiceContext,
    client_id: &str,
    name: &str,
    redirect_uri: &str,
) -> Result<(), IdpError> {
    let metadata = ClientMetadata {
        redirect_uris: vec![redirect_uri.to_owned()],
        post_logout_redirect_uris: Vec::new(),
        scopes: vec!["profile".into()],
        grant_types: vec!["authorization_code".into()],
        auth_method: AuthMethod::ClientSecretBasic,
        jwks_uri: None,
        jwks: None,
        subject_type: SubjectType::Public,
        sector: "eid-internal".into(),
        min_level: Level::Low,
        require_par: false,
        require_dpop: false,
        backchannel_logout_uri: None,
        id_token_alg: None,
        ciba_mode: None,
        ciba_notification_endpoint: None,
    };
    let metadata = serde_json::to_string(&metadata).map_err(|e| IdpError::stored("client", e))?;
    sqlx::query(
        "INSERT INTO idp_client (client_id, name, metadata, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (client_id) DO UPDATE SET metadata = excluded.metadata",
    )
    .bind(client_id)
    .bind(name)
    .bind(metadata)
    .bind(ctx.clock.now().unix_timestamp())
    .execute(ctx.db.pool())
    .await
    .map_err(query("registering the provider's own client"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn redirect_uris_are_checked_as_written() {
        assert!(check_uri("redirect URI", "https://rp.example/callback").is_ok());
        assert!(check_uri("redirect URI", "http://127.0.0.1:9/cb").is_ok());
        for bad in [
            "https://rp.example/cb\n",
            "https://rp.example/c\tb",
            "https://rp.example/a b",
            "http://rp.example/cb",
            "https://rp.example/cb#frag",
            "not a url",
        ] {
            assert!(check_uri("redirect URI", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ciba_clients_need_a_consistent_delivery_mode() {
        let ciba = |mode: Option<&str>, endpoint: Option<&str>, grant: bool| {
            let mut new = NewClient::new("Call centre", Vec::new());
            new.grant_types = if grant {
                vec![CIBA_GRANT.into()]
            } else {
                vec!["client_credentials".into()]
            };
            new.ciba_mode = mode.map(str::to_owned);
            new.ciba_notification_endpoint = endpoint.map(str::to_owned);
            validate(&new).map(|m| (m.ciba_mode, m.ciba_notification_endpoint))
        };
        assert_eq!(
            ciba(None, None, true).ok(),
            Some((Some(CibaMode::Poll), None))
        );
        assert_eq!(
            ciba(Some("ping"), Some("https://rp.example/ciba"), true).ok(),
            Some((Some(CibaMode::Ping), Some("https://rp.example/ciba".into())))
        );
        for (mode, endpoint, grant, says) in [
            (
                Some("ping"),
                None,
                true,
                "needs backchannel_client_notification_endpoint",
            ),
            (
                Some("poll"),
                Some("https://rp.example/ciba"),
                true,
                "not notified",
            ),
            (Some("push"), None, true, "is not poll or ping"),
            (
                Some("ping"),
                Some("http://rp.example/ciba"),
                true,
                "must be https",
            ),
            (Some("poll"), None, false, "only a client of"),
        ] {
            let error = ciba(mode, endpoint, grant).unwrap_err().to_string();
            assert!(error.contains(says), "{mode:?} {endpoint:?}: {error}");
        }
    }
}
