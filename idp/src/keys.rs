//! Token-signing keys: kept in the key layer, published in the JWKS, rotated with
//! overlap. A new key is published `key_publish_secs` before it signs anything, so
//! relying parties that cache the JWKS already have it; the key it replaces stays
//! published until every token it signed has expired.

use std::sync::{Arc, RwLock};

use eid_core::{AuditEvent, ServiceContext, audit};
use eid_hsm::{KeyLabel, KeyRole, KeySigner, KeySpec};
use sqlx::Row;

use crate::{
    IdpError,
    error::query,
    jose::{Algorithm, Jwk, b64},
};

/// The key that signs now, with its identifier.
#[derive(Clone, Debug)]
pub struct ActiveKey {
    /// `kid` in the JWS header and the JWKS.
    pub kid: String,
    /// The algorithm.
    pub alg: Algorithm,
    /// The signer in the key layer.
    pub signer: KeySigner,
}

/// A published key, loaded from the key layer once.
#[derive(Debug, Clone)]
struct Loaded {
    key: ActiveKey,
    jwk: Jwk,
}

#[derive(Debug, Default)]
struct KeySet {
    /// Every published key (active, waiting, or retired but still verifying).
    published: Vec<Loaded>,
    /// The `kid`s of the ones that sign: one per algorithm in use.
    active: Vec<String>,
}

/// The provider's token-signing keys, as last loaded from the database.
#[derive(Clone, Debug)]
pub struct TokenKeys {
    ctx: ServiceContext,
    alg: Algorithm,
    set: Arc<RwLock<KeySet>>,
}

/// One row of `eid idp keys`: a key and where it is in its life.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyStatus {
    /// Key identifier.
    pub kid: String,
    /// Algorithm.
    pub alg: String,
    /// `published`, `active` or `retired`.
    pub state: String,
    /// When it was created (Unix seconds).
    pub created_at: i64,
    /// When a retired key leaves the JWKS.
    pub remove_after: Option<i64>,
}

impl TokenKeys {
    /// Loads the keys, creating the first one (active at once: nothing was signed
    /// before it) on a new instance.
    pub async fn open(ctx: &ServiceContext) -> Result<Self, IdpError> {
        let alg = Algorithm::parse(&ctx.config.idp.token_alg)
            .ok_or_else(|| IdpError::invalid("idp.token_alg", "not ES256 or PS256"))?;
        let keys = Self {
            ctx: ctx.clone(),
            alg,
            set: Arc::default(),
        };
        ensure_algorithm(ctx, "system", alg).await?;
        keys.maintain_once().await?;
        Ok(keys)
    }

    /// The key to sign with, in the provider's algorithm.
    pub fn active(&self) -> Result<ActiveKey, IdpError> {
        self.active_for(self.alg)
    }

    /// The key that signs in `alg`.
    pub fn active_for(&self, alg: Algorithm) -> Result<ActiveKey, IdpError> {
        let set = self
            .set
            .read()
            .map_err(|_| IdpError::stored("token-signing key set", "lock poisoned"))?;
        set.published
            .iter()
            .find(|l| l.key.alg == alg && set.active.contains(&l.key.kid))
            .map(|l| l.key.clone())
            .ok_or_else(|| {
                IdpError::NotFound(format!("no active {} token-signing key", alg.name()))
            })
    }

    /// [`Self::active_for`], reloading once if the set has none for `alg` yet (its first
    /// key was just made by `eid rp add` in another process).
    pub async fn signing_key(&self, alg: Algorithm) -> Result<ActiveKey, IdpError> {
        match self.active_for(alg) {
            Ok(key) => Ok(key),
            Err(_) => {
                self.reload(self.ctx.clock.now().unix_timestamp()).await?;
                self.active_for(alg)
            }
        }
    }

    /// The public keys to publish.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<Jwk> = self
            .set
            .read()
            .map(|set| set.published.iter().map(|l| l.jwk.clone()).collect())
            .unwrap_or_default();
        serde_json::json!({ "keys": keys })
    }

    /// The published public key with this `kid` (to verify our own tokens).
    pub fn verifying_key(&self, kid: &str) -> Option<(Algorithm, eid_hsm::PublicKey)> {
        let set = self.set.read().ok()?;
        set.published
            .iter()
            .find(|l| l.key.kid == kid)
            .map(|l| (l.key.alg, l.key.signer.public_key().clone()))
    }

    /// The configured algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Moves keys along their life (activates a published key whose publication time
    /// has passed, drops retired keys whose tokens have expired) and reloads.
    pub async fn maintain_once(&self) -> Result<(), IdpError> {
        let config = &self.ctx.config.idp;
        let now = self.ctx.clock.now().unix_timestamp();
        let ready_before = now - i64::try_from(config.key_publish_secs).unwrap_or(i64::MAX);
        // Per algorithm, the newest key whose publication time has passed.
        let candidates = sqlx::query(
            "SELECT kid, alg FROM idp_signing_key WHERE state = 'published' AND created_at <= $1 \
             ORDER BY created_at DESC",
        )
        .bind(ready_before)
        .fetch_all(self.ctx.db.pool())
        .await
        .map_err(query("looking for a key to activate"))?;
        let mut seen = Vec::new();
        for row in candidates {
            let kid: String = row.try_get("kid").map_err(query("reading a key"))?;
            let alg: String = row.try_get("alg").map_err(query("reading a key"))?;
            if !seen.contains(&alg) {
                self.activate(&kid, &alg, now).await?;
                seen.push(alg);
            }
        }
        self.reload(now).await
    }

    async fn activate(&self, kid: &str, alg: &str, now: i64) -> Result<(), IdpError> {
        let config = &self.ctx.config.idp;
        let longest = config
            .access_token_ttl_secs
            .max(config.id_token_ttl_secs)
            .saturating_add(60);
        let remove_after = now + i64::try_from(longest).unwrap_or(i64::MAX / 2);
        let mut tx = self.ctx.db.begin_write().await?;
        let retired: Vec<String> = sqlx::query_scalar(
            "UPDATE idp_signing_key SET state = 'retired', retired_at = $1, remove_after = $2 \
             WHERE state = 'active' AND alg = $3 RETURNING kid",
        )
        .bind(now)
        .bind(remove_after)
        .bind(alg)
        .fetch_all(&mut *tx)
        .await
        .map_err(query("retiring the active token-signing key"))?;
        let activated = sqlx::query(
            "UPDATE idp_signing_key SET state = 'active', activated_at = $1 \
             WHERE kid = $2 AND state = 'published'",
        )
        .bind(now)
        .bind(kid)
        .execute(&mut *tx)
        .await
        .map_err(query("activating a token-signing key"))?
        .rows_affected();
        if activated == 0 {
            // Another replica got there first.
            return Ok(());
        }
        audit::append(
            &mut tx,
            self.ctx.clock.as_ref(),
            &AuditEvent::new("system", "idp.key.activate", "signing_key", kid)
                .details(serde_json::json!({ "retired": retired, "remove_after": remove_after })),
        )
        .await?;
        tx.commit()
            .await
            .map_err(query("activating a token-signing key"))?;
        tracing::info!(kid, ?retired, "token-signing key activated");
        Ok(())
    }

    async fn reload(&self, now: i64) -> Result<(), IdpError> {
        let rows = sqlx::query(
            "SELECT kid, key_label, alg, state FROM idp_signing_key \
             WHERE state <> 'retired' OR remove_after > $1 ORDER BY created_at",
        )
        .bind(now)
        .fetch_all(self.ctx.db.pool())
        .await
        .map_err(query("loading token-signing keys"))?;
        // Keys already loaded are kept: the key store is read only for a new key.
        let loaded: Vec<Loaded> = self
            .set
            .read()
            .map(|set| set.published.clone())
            .unwrap_or_default();
        let mut set = KeySet::default();
        for row in rows {
            let kid: String = row.try_get("kid").map_err(query("reading a key"))?;
            let state: String = row.try_get("state").map_err(query("reading a key"))?;
            if state == "active" {
                set.active.push(kid.clone());
            }
            if let Some(known) = loaded.iter().find(|l| l.key.kid == kid) {
                set.published.push(known.clone());
                continue;
            }
            let label: String = row.try_get("key_label").map_err(query("reading a key"))?;
            let alg: String = row.try_get("alg").map_err(query("reading a key"))?;
            let alg = Algorithm::parse(&alg)
                .ok_or_else(|| IdpError::stored("signing key", format!("alg {alg}")))?;
            let label = KeyLabel::new(label)?;
            let keys = self.ctx.keys.clone();
            let signer =
                tokio::task::spawn_blocking(move || keys.signer(&label, Some(alg.scheme())))
                    .await
                    .map_err(|e| IdpError::stored("signing key", e))??;
            let jwk = Jwk::from_public_key(signer.public_key(), &kid, alg)?;
            set.published.push(Loaded {
                key: ActiveKey { kid, alg, signer },
                jwk,
            });
        }
        if let Ok(mut current) = self.set.write() {
            *current = set;
        }
        Ok(())
    }
}

async fn create(
    ctx: &ServiceContext,
    actor: &str,
    alg: Algorithm,
    active: bool,
) -> Result<String, IdpError> {
    let label = KeyLabel::new(format!("idp-token-{}", b64(&crate::random_bytes::<9>())))?;
    let spec = match alg {
        Algorithm::Es256 => KeySpec::EcP256,
        Algorithm::Ps256 | Algorithm::Rs256 => KeySpec::Rsa3072,
    };
    let keys = ctx.keys.clone();
    let generate_label = label.clone();
    let info =
        tokio::task::spawn_blocking(move || keys.generate(&generate_label, spec, KeyRole::Service))
            .await
            .map_err(|e| IdpError::stored("signing key", e))??;
    // The kid is the key's RFC 7638 thumbprint: stable, and the same on every replica.
    let kid = Jwk::from_public_key(&info.public_key, "", alg)?.thumbprint()?;
    let now = ctx.clock.now().unix_timestamp();
    let mut tx = ctx.db.begin_write().await?;
    sqlx::query(
        "INSERT INTO idp_signing_key (kid, key_label, alg, state, created_at, activated_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&kid)
    .bind(label.as_str())
    .bind(alg.name())
    .bind(if active { "active" } else { "published" })
    .bind(now)
    .bind(active.then_some(now))
    .execute(&mut *tx)
    .await
    .map_err(query("storing a token-signing key"))?;
    audit::append(
        &mut tx,
        ctx.clock.as_ref(),
        &AuditEvent::new(actor, "idp.key.create", "signing_key", &kid).details(
            serde_json::json!({ "alg": alg.name(), "label": label.as_str(), "active": active }),
        ),
    )
    .await?;
    tx.commit()
        .await
        .map_err(query("storing a token-signing key"))?;
    Ok(kid)
}

/// `eid idp rotate-keys`: creates and publishes the next token-signing key of the
/// provider's algorithm, and of every other algorithm a key is active for. The running
/// provider starts signing with them `idp.key_publish_secs` later, and keeps the current
/// keys published until their tokens expire. Returns the new keys' ids.
pub async fn rotate(ctx: &ServiceContext, actor: &str) -> Result<Vec<String>, IdpError> {
    let primary = Algorithm::parse(&ctx.config.idp.token_alg)
        .ok_or_else(|| IdpError::invalid("idp.token_alg", "not ES256 or PS256"))?;
    let mut algs = vec![primary];
    let active: Vec<String> =
        sqlx::query_scalar("SELECT alg FROM idp_signing_key WHERE state = 'active'")
            .fetch_all(ctx.db.pool())
            .await
            .map_err(query("listing token-signing keys"))?;
    for name in active {
        let alg = Algorithm::parse(&name)
            .ok_or_else(|| IdpError::stored("signing key", format!("alg {name}")))?;
        if !algs.contains(&alg) {
            algs.push(alg);
        }
    }
    let mut kids = Vec::new();
    for alg in algs {
        kids.push(create(ctx, actor, alg, false).await?);
    }
    Ok(kids)
}

/// Makes sure `alg` has a token-signing key (for a client registered for ID tokens in
/// it): the first one is active at once, since nothing was signed in `alg` before.
pub async fn ensure_algorithm(
    ctx: &ServiceContext,
    actor: &str,
    alg: Algorithm,
) -> Result<(), IdpError> {
    let any: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM idp_signing_key WHERE alg = $1 LIMIT 1")
            .bind(alg.name())
            .fetch_optional(ctx.db.pool())
            .await
            .map_err(query("looking for token-signing keys"))?;
    if any.is_none() {
        create(ctx, actor, alg, true).await?;
    }
    Ok(())
}

/// Every token-signing key and its state.
pub async fn status(ctx: &ServiceContext) -> Result<Vec<KeyStatus>, IdpError> {
    let rows = sqlx::query(
        "SELECT kid, alg, state, created_at, remove_after FROM idp_signing_key ORDER BY created_at",
    )
    .fetch_all(ctx.db.pool())
    .await
    .map_err(query("listing token-signing keys"))?;
    rows.iter()
        .map(|row| {
            Ok(KeyStatus {
                kid: row.try_get("kid").map_err(query("reading a key"))?,
                alg: row.try_get("alg").map_err(query("reading a key"))?,
                state: row.try_get("state").map_err(query("reading a key"))?,
                created_at: row.try_get("created_at").map_err(query("reading a key"))?,
                remove_after: row
                    .try_get("remove_after")
                    .map_err(query("reading a key"))?,
            })
        })
        .collect()
}
