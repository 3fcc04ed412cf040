//! Access tokens from our identity provider, checked here as the resource server:
//! RFC 9068 JWTs (`typ` `at+jwt`) signed by a key the provider publishes in its JWKS,
//! with `iss` the provider, `aud` naming this API, unexpired. The JWKS is fetched
//! through the provider's discovery document and cached; a token naming an unknown
//! `kid` refetches it (at most every ten seconds), so a rotated key is found.

use std::time::{Duration, Instant};

use eid_idp::jose::{self, Algorithm, Jwk, Parsed};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::CscError;

/// How long fetched keys are used before they are fetched again.
const KEYS_FRESH: Duration = Duration::from_secs(300);
/// Least time between two fetches forced by an unknown key.
const REFETCH_GAP: Duration = Duration::from_secs(10);
/// Clock difference allowed on `exp` and `iat`.
const LEEWAY_SECS: i64 = 30;
const TIMEOUT: Duration = Duration::from_secs(5);

/// A checked access token: who, for which client, with which authority.
#[derive(Clone, Debug)]
pub struct Access {
    /// The citizen (the provider's internal id).
    pub subject: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// RFC 9396 `authorization_details` of type `credential`, when the token
    /// authorises one credential itself.
    pub credential: Option<CredentialAuthorization>,
    /// The token's `jti`.
    pub jti: String,
    /// Expiry (Unix seconds).
    pub expires_at: i64,
    /// The national id of the citizen the token speaks for, once the identity
    /// provider's register was asked (none: not a citizen it knows).
    pub national_id: Option<String>,
}

impl Access {
    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// One credential's authorisation carried in the access token (CSC API v2 §8.4).
#[derive(Clone, Debug)]
pub struct CredentialAuthorization {
    /// The credential.
    pub credential_id: String,
    /// The authorised hashes, decoded.
    pub hashes: Vec<Vec<u8>>,
    /// Their algorithm's OID.
    pub hash_algorithm: String,
}

#[derive(Default)]
struct Cache {
    keys: Vec<Jwk>,
    fetched: Option<Instant>,
}

/// Verifies the provider's access tokens.
pub struct AccessTokens {
    issuer: String,
    audience: String,
    http: reqwest::Client,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokens")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl AccessTokens {
    /// Tokens of `issuer` meant for `audience`.
    pub fn new(issuer: &str, audience: &str, http: reqwest::Client) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            audience: audience.to_owned(),
            http,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The provider this API trusts.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    async fn fetch_keys(&self) -> Result<Vec<Jwk>, CscError> {
        let unavailable = |what: &str, e: String| {
            CscError::Unavailable(format!(
                "the identity provider's keys could not be read ({what}: {e})"
            ))
        };
        let discovery: Value = self
            .http
            .get(format!("{}/.well-known/openid-configuration", self.issuer))
            .timeout(TIMEOUT)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| unavailable("discovery", e.to_string()))?
            .json()
            .await
            .map_err(|e| unavailable("discovery", e.to_string()))?;
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| unavailable("discovery", "no jwks_uri".into()))?;
        #[derive(serde::Deserialize)]
        struct Jwks {
            keys: Vec<Value>,
        }
        let jwks: Jwks = self
            .http
            .get(jwks_uri)
            .timeout(TIMEOUT)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| unavailable("JWKS", e.to_string()))?
            .json()
            .await
            .map_err(|e| unavailable("JWKS", e.to_string()))?;
        // Keys of kinds we do not use are skipped, not fatal.
        Ok(jwks
            .keys
            .into_iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
            .collect())
    }

    /// The key for a token, refetching the set when it is stale or lacks the key.
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Jwk, CscError> {
        let mut cache = self.cache.lock().await;
        let fresh = cache.fetched.is_some_and(|at| at.elapsed() < KEYS_FRESH);
        if fresh && let Ok(key) = jose::select_key(&cache.keys, kid, alg) {
            return Ok(key.clone());
        }
        let may_fetch = cache.fetched.is_none_or(|at| at.elapsed() >= REFETCH_GAP) || !fresh;
        if may_fetch {
            cache.keys = self.fetch_keys().await?;
            cache.fetched = Some(Instant::now());
        }
        jose::select_key(&cache.keys, kid, alg)
            .cloned()
            .map_err(|_| {
                CscError::InvalidToken(
                    "the access token's signing key is not one the identity provider publishes"
                        .into(),
                )
            })
    }

    /// Checks a bearer token at `now` (Unix seconds).
    pub async fn verify(&self, token: &str, now: i64) -> Result<Access, CscError> {
        let invalid = |m: &str| CscError::InvalidToken(m.to_owned());
        let parsed = Parsed::new(token).map_err(|_| invalid("the access token is not a JWT"))?;
        let typ = parsed
            .header
            .get("typ")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        if typ != "at+jwt" && typ != "application/at+jwt" {
            return Err(invalid("the token is not an access token (typ at+jwt)"));
        }
        let alg = parsed
            .algorithm(&[Algorithm::Es256, Algorithm::Ps256])
            .map_err(|_| invalid("the access token's algorithm is not ES256 or PS256"))?;
        let key = self.key_for(parsed.kid(), alg).await?;
        let public = key
            .public_key()
            .map_err(|_| invalid("the identity provider's key is unusable"))?;
        parsed
            .verify(alg, &public)
            .map_err(|_| invalid("the access token's signature does not verify"))?;
        let claims = &parsed.claims;
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        if text("iss").map(|i| i.trim_end_matches('/')) != Some(self.issuer.as_str()) {
            return Err(invalid(
                "the access token is not from the identity provider this API trusts",
            ));
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => *aud == self.audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(&self.audience)),
            _ => false,
        };
        if !audience_ok {
            return Err(invalid(&format!(
                "the access token is not meant for this API (aud must include {})",
                self.audience
            )));
        }
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| invalid("the access token has no exp"))?;
        if expires_at + LEEWAY_SECS < now {
            return Err(invalid("the access token has expired"));
        }
        if claims
            .get("iat")
            .and_then(Value::as_i64)
            .is_some_and(|iat| iat > now + LEEWAY_SECS)
        {
            return Err(invalid("the access token was issued in the future"));
        }
        if claims.contains_key("cnf") {
            return Err(invalid(
                "sender-constrained (DPoP) access tokens are not accepted by the CSC API",
            ));
        }
        let subject = text("sub")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                invalid("the access token names no subject (a citizen's token is needed)")
            })?
            .to_owned();
        let client_id = text("client_id")
            .ok_or_else(|| invalid("the access token names no client_id"))?
            .to_owned();
        let jti = text("jti")
            .ok_or_else(|| invalid("the access token has no jti"))?
            .to_owned();
        let scopes = text("scope")
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let credential = credential_details(claims)?;
        Ok(Access {
            subject,
            client_id,
            scopes,
            credential,
            jti,
            expires_at,
            national_id: None,
        })
    }
}

/// The `credential` entry of the token's `authorization_details`, if any.
fn credential_details(
    claims: &Map<String, Value>,
) -> Result<Option<CredentialAuthorization>, CscError> {
    let Some(details) = claims.get("authorization_details") else {
        return Ok(None);
    };
    let invalid = |m: &str| CscError::InvalidToken(format!("authorization_details: {m}"));
    let entries = details.as_array().ok_or_else(|| invalid("not an array"))?;
    let mut found = None;
    for entry in entries {
        if entry.get("type").and_then(Value::as_str) != Some("credential") {
            continue;
        }
        if found.is_some() {
            return Err(invalid("more than one credential"));
        }
        let credential_id = entry
            .get("credentialID")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("no credentialID"))?
            .to_owned();
        let hash_algorithm = entry
            .get("hashAlgorithmOID")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("no hashAlgorithmOID"))?
            .to_owned();
        let hashes = entry
            .get("documentDigests")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("no documentDigests"))?
            .iter()
            .map(|d| {
                d.get("hash")
                    .and_then(Value::as_str)
                    .and_then(|h| super::decode_hash(h).ok())
                    .ok_or_else(|| invalid("a document digest is not base64"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        found = Some(CredentialAuthorization {
            credential_id,
            hashes,
            hash_algorithm,
        });
    }
    Ok(found)
}
