//! The OpenID Connect identity provider: discovery, JWKS, authorization (code flow with
//! PKCE, PAR), the token endpoint (code, refresh with rotation, client credentials),
//! userinfo, revocation and introspection, logout; login with the ID card over a TLS
//! listener of its own; the relying-party registry and consents.
#![forbid(unsafe_code)]

mod admin;
pub mod authorization_details;
pub mod authorize;
pub mod card;
pub mod ciba;
pub mod clients;
mod dpop;
mod error;
pub mod flow;
mod http;
pub mod jose;
pub mod keys;
pub mod mobile;
mod pages;
pub mod passkeys;
pub mod tokens;

use std::{collections::HashMap, sync::Arc, time::Duration};

use eid_core::ServiceContext;
use eid_hsm::KeySigner;
use serde::{Deserialize, Serialize};

pub use error::{IdpError, OAuthError};
pub use http::serve_card_listener;

/// The service's name in `eid serve idp`, logs and metrics.
pub const SERVICE: &str = "idp";

/// What the service is, as its index page says.
pub const DESCRIPTION: &str =
    "OpenID Connect identity provider: ID card, mobile ID and passkey login";

/// eIDAS assurance levels (Regulation 2015/1502), lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Low.
    Low,
    /// Substantial (a passkey).
    Substantial,
    /// High (ID card, mobile ID).
    High,
}

impl Level {
    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Substantial => "substantial",
            Self::High => "high",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "low" => Some(Self::Low),
            "substantial" => Some(Self::Substantial),
            "high" => Some(Self::High),
            _ => None,
        }
    }

    fn from_index(index: usize) -> Option<Self> {
        [Self::Low, Self::Substantial, Self::High]
            .get(index)
            .copied()
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// `N` bytes from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS generator failing is not something a request can cause or recover from.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    bytes
}

/// A fresh 256-bit token in base64url (codes, refresh tokens, cookies, secrets).
pub(crate) fn random_token() -> String {
    jose::b64(&random_bytes::<32>())
}

/// What the ID-card listener needs from the CA hierarchy: its server certificate chain
/// and key, and the CA whose certificates may log in.
#[derive(Clone, Debug)]
pub struct CardSetup {
    /// The TLS server certificate first, then any intermediates (DER).
    pub server_chain: Vec<Vec<u8>>,
    /// The TLS server key.
    pub server_key: KeySigner,
    /// The citizen authentication CA certificate (DER).
    pub citizen_auth_ca: Vec<u8>,
    /// Asked at every handshake whether the server certificate may still be used;
    /// none: always.
    pub standing: Option<Arc<dyn eid_core::CertificateStanding>>,
}

/// A future the certificate port returns (boxed: the port is a trait object).
pub type PortFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// One of a citizen's certificates, as the account page shows it.
#[derive(Clone, Debug)]
pub struct CitizenCertificate {
    /// Serial (hex).
    pub serial: String,
    /// `citizen-auth` or `citizen-sign`.
    pub profile: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// `active`, `suspended` or `revoked`.
    pub status: String,
}

/// What the provider may ask of the certificate authority for a logged-in citizen:
/// their certificates, and suspending one (a lost card). The `eid` binary connects it
/// to the CA in-process; the idp never touches CA internals.
pub trait CitizenCertificates: Send + Sync + std::fmt::Debug {
    /// The citizen's certificates, newest first.
    fn list<'a>(&'a self, national_id: &'a str) -> PortFuture<'a, Vec<CitizenCertificate>>;
    /// Suspends (certificateHold) one of the citizen's certificates, as `actor`.
    fn suspend<'a>(
        &'a self,
        national_id: &'a str,
        serial: &'a str,
        actor: &'a str,
    ) -> PortFuture<'a, ()>;
}

/// The provider: everything its handlers share. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Idp {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ctx: ServiceContext,
    keys: keys::TokenKeys,
    salt: Vec<u8>,
    http: reqwest::Client,
    card_tls: Arc<rustls::ServerConfig>,
    status: card::StatusChecker,
    client_keys: tokio::sync::Mutex<HashMap<String, (std::time::Instant, Vec<jose::Jwk>)>>,
    webauthn: Option<webauthn_rs::Webauthn>,
    dpop_replays: dpop::ReplayCache,
    certificates: Option<Arc<dyn CitizenCertificates>>,
    clients: clients::ClientCache,
    mobile: Option<mobile::MobileId>,
    /// The CIBA requests this process follows (by auth_req_id hash).
    ciba_watching: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// The client id of the provider's own self-service pages.
pub(crate) const ACCOUNT_CLIENT: &str = "eid-account";

impl Idp {
    /// Opens the provider: loads (or creates) its signing keys and pairwise salt, and
    /// sets up the ID-card listener's TLS.
    pub async fn open(
        ctx: &ServiceContext,
        card: CardSetup,
        certificates: Option<Arc<dyn CitizenCertificates>>,
    ) -> Result<Self, IdpError> {
        let keys = keys::TokenKeys::open(ctx).await?;
        let salt = pairwise_salt(ctx).await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| IdpError::Tls(format!("HTTP client: {e}")))?;
        let card_tls = card::server_config(
            card.server_chain,
            card.server_key,
            &card.citizen_auth_ca,
            card.standing,
        )?;
        let status = card::StatusChecker::new(
            &card.citizen_auth_ca,
            http.clone(),
            Duration::from_secs(ctx.config.idp.ocsp_cache_secs),
        )?;
        let mobile = ctx
            .config
            .mobile_id
            .as_ref()
            .map(|config| mobile::MobileId::new(config, &card.citizen_auth_ca))
            .transpose()?;
        let issuer = &ctx.config.idp.issuer;
        clients::ensure_internal(
            ctx,
            ACCOUNT_CLIENT,
            "eID account",
            &format!("{issuer}/account"),
        )
        .await?;
        let webauthn = passkeys::relying_party(issuer, &ctx.config.ca.organization);
        if webauthn.is_none() {
            tracing::info!(
                %issuer,
                "passkeys are off: WebAuthn needs the issuer to have a host name, not an IP address"
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                mobile,
                ciba_watching: std::sync::Mutex::default(),
                webauthn,
                dpop_replays: dpop::ReplayCache::default(),
                certificates,
                ctx: ctx.clone(),
                keys,
                salt,
                http,
                card_tls,
                status,
                client_keys: tokio::sync::Mutex::default(),
                clients: clients::ClientCache::new(Duration::from_secs(
                    ctx.config.idp.client_cache_secs,
                )),
            }),
        })
    }

    /// The service context.
    pub fn ctx(&self) -> &ServiceContext {
        &self.inner.ctx
    }

    /// The active relying party with this id (see [`clients::ClientCache`]).
    pub async fn client(&self, client_id: &str) -> Result<Option<clients::Client>, IdpError> {
        self.inner.clients.find(self.ctx(), client_id).await
    }

    /// Forgets what is kept in memory of a client this process just changed.
    pub(crate) fn forget_client(&self, client_id: &str) {
        self.inner.clients.forget(client_id);
    }

    /// The provider's HTTP client (OCSP, client JWKS, notifications).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The token-signing keys.
    pub fn keys(&self) -> &keys::TokenKeys {
        &self.inner.keys
    }

    pub(crate) fn webauthn(&self) -> Option<&webauthn_rs::Webauthn> {
        self.inner.webauthn.as_ref()
    }

    /// Checks a DPoP proof for a request to `url` of this provider.
    pub(crate) fn dpop(
        &self,
        proof: &str,
        method: &str,
        url: &str,
        access_token: Option<&str>,
    ) -> Result<String, OAuthError> {
        dpop::verify(
            proof,
            method,
            url,
            access_token,
            self.ctx().clock.now().unix_timestamp(),
            &self.inner.dpop_replays,
        )
    }

    pub(crate) fn certificates(&self) -> Option<&dyn CitizenCertificates> {
        self.inner.certificates.as_deref()
    }

    /// Forgets a cached certificate status (after the citizen suspended it here).
    pub(crate) fn forget_status(&self, serial_hex: &str) {
        self.inner.status.forget(serial_hex);
    }

    pub(crate) fn salt(&self) -> &[u8] {
        &self.inner.salt
    }

    /// The configured `acr` value of a level.
    pub fn acr_value(&self, level: Level) -> &str {
        &self.ctx().config.idp.acr[level.index()]
    }

    /// The level an `acr` value stands for.
    pub fn level_of(&self, acr: &str) -> Option<Level> {
        self.ctx()
            .config
            .idp
            .acr
            .iter()
            .position(|a| a == acr)
            .and_then(Level::from_index)
    }

    /// A client's public keys for `private_key_jwt`, fetched from its JWKS URI and kept
    /// for five minutes.
    pub(crate) async fn client_keys(
        &self,
        client: &clients::Client,
    ) -> Result<Vec<jose::Jwk>, OAuthError> {
        if let Some(keys) = &client.metadata.jwks {
            return Ok(keys.clone());
        }
        let uri = client
            .metadata
            .jwks_uri
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_client("the client has no JWKS URI"))?;
        let mut cache = self.inner.client_keys.lock().await;
        if let Some((at, keys)) = cache.get(uri)
            && at.elapsed() < Duration::from_secs(300)
        {
            return Ok(keys.clone());
        }
        let keys = tokens::fetch_jwks(&self.inner.http, uri).await?;
        cache.insert(uri.to_owned(), (std::time::Instant::now(), keys.clone()));
        Ok(keys)
    }

    /// Runs the provider's periodic work until `stop`: key activation and retirement,
    /// taking up CIBA requests whose process stopped, and purging expired rows.
    pub async fn maintain(self, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        // Expired rows go every ten minutes (and at start).
        let mut purged_at: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(error) = self.keys().maintain_once().await {
                        tracing::warn!(%error, "token-signing key maintenance failed");
                    }
                    if self.mobile_id_enabled()
                        && let Err(error) = ciba::resume(&self).await
                    {
                        tracing::warn!(%error, "taking up CIBA requests failed");
                    }
                    if purged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(600)) {
                        purged_at = Some(std::time::Instant::now());
                        let now = self.ctx().clock.now().unix_timestamp();
                        match flow::purge_expired(&self.ctx().db, now).await {
                            Ok(0) => {}
                            Ok(rows) => tracing::info!(rows, "purged expired login and CIBA rows"),
                            Err(error) => tracing::warn!(%error, "purging expired rows failed"),
                        }
                    }
                }
            }
        }
    }
}

/// The secret mixed into pairwise subjects, made once per instance.
async fn pairwise_salt(ctx: &ServiceContext) -> Result<Vec<u8>, IdpError> {
    let fresh = jose::b64(&random_bytes::<32>());
    sqlx::query(
        "INSERT INTO idp_setting (name, value) VALUES ('pairwise_salt', $1) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(&fresh)
    .execute(ctx.db.pool())
    .await
    .map_err(error::query("creating the pairwise salt"))?;
    let stored: String =
        sqlx::query_scalar("SELECT value FROM idp_setting WHERE name = 'pairwise_salt'")
            .fetch_one(ctx.db.pool())
            .await
            .map_err(error::query("reading the pairwise salt"))?;
    jose::unb64(&stored).map_err(|e| IdpError::stored("pairwise salt", e))
}

/// The provider's HTTP surface on the main listener.
pub fn router(idp: &Idp) -> axum::Router {
    eid_core::http::service_router(
        SERVICE,
        DESCRIPTION,
        idp.ctx(),
        http::routes(idp).merge(admin::routes(idp)),
    )
}
