//! DPoP (RFC 9449): sender-constrained tokens. A client proves possession of a key with
//! a signed proof per request; the access token carries the key's thumbprint
//! (`cnf.jkt`) and is accepted only with a fresh proof by the same key.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    OAuthError,
    jose::{Algorithm, Jwk, Parsed, b64},
};

/// How far a proof's `iat` may be from our clock.
const IAT_WINDOW_SECS: i64 = 60;

/// Proofs seen recently (by `jti`), so that a captured proof cannot be replayed.
#[derive(Debug, Default)]
pub(crate) struct ReplayCache {
    seen: Mutex<HashMap<String, Instant>>,
}

impl ReplayCache {
    /// Records `jti`; false if it was seen within the window.
    fn first_use(&self, jti: &str) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        let window = Duration::from_secs(2 * IAT_WINDOW_SECS.unsigned_abs());
        if seen.len() > 100_000 {
            seen.retain(|_, at| at.elapsed() < window);
        }
        match seen.get(jti) {
            Some(at) if at.elapsed() < window => false,
            _ => {
                seen.insert(jti.to_owned(), Instant::now());
                true
            }
        }
    }
}

/// The URL as a proof's `htu` names it: without query and fragment (RFC 9449 4.3).
pub(crate) fn htu(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_owned()
}

/// Checks a DPoP proof for a request (`method`, `url`) and, at a resource, the access
/// token it accompanies. Returns the key's thumbprint (`jkt`).
pub(crate) fn verify(
    proof: &str,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    now: i64,
    replays: &ReplayCache,
) -> Result<String, OAuthError> {
    let bad = |why: &str| OAuthError::invalid_dpop_proof(format!("DPoP proof: {why}"));
    let parsed = Parsed::new(proof).map_err(|e| bad(&e.to_string()))?;
    if parsed.header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(bad("typ must be dpop+jwt"));
    }
    let alg = parsed
        .algorithm(&[Algorithm::Es256, Algorithm::Ps256])
        .map_err(|e| bad(&e.to_string()))?;
    let jwk_value = parsed
        .header
        .get("jwk")
        .ok_or_else(|| bad("no jwk in the header"))?;
    if jwk_value.get("d").is_some() {
        return Err(bad("the jwk carries a private key"));
    }
    let jwk: Jwk = serde_json::from_value(jwk_value.clone()).map_err(|_| bad("unreadable jwk"))?;
    let key = jwk.public_key().map_err(|e| bad(&e.to_string()))?;
    parsed.verify(alg, &key).map_err(|_| bad("bad signature"))?;
    let claims = &parsed.claims;
    if claims.get("htm").and_then(Value::as_str) != Some(method) {
        return Err(bad(&format!("htm must be {method}")));
    }
    let expected = htu(url);
    if claims
        .get("htu")
        .and_then(Value::as_str)
        .map(htu)
        .as_deref()
        != Some(expected.as_str())
    {
        return Err(bad(&format!("htu must be {expected}")));
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("no iat"))?;
    if (iat - now).abs() > IAT_WINDOW_SECS {
        return Err(bad("iat is not within a minute of the provider's clock"));
    }
    if let Some(token) = access_token {
        let ath = b64(&Sha256::digest(token.as_bytes()));
        if claims.get("ath").and_then(Value::as_str) != Some(ath.as_str()) {
            return Err(bad("ath does not match the access token"));
        }
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| bad("no jti"))?;
    let thumbprint = jwk.thumbprint().map_err(|e| bad(&e.to_string()))?;
    if !replays.first_use(&format!("{thumbprint}:{jti}")) {
        return Err(bad("this proof was already used (jti)"));
    }
    Ok(thumbprint)
}
