//! Passkeys (WebAuthn, through webauthn-rs): a citizen adds one only from a session at
//! level high (an ID-card login), and logging in with it reaches level substantial.
//! The relying-party id is the issuer's host name; WebAuthn does not work on an IP
//! address, so an issuer like `http://127.0.0.1:8080` offers no passkeys.

use eid_core::{AuditEvent, audit};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use webauthn_rs::prelude::{
    CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Uuid,
};

use crate::{Idp, IdpError, error::query, jose::b64, random_token};

/// How long a ceremony may take between its two steps.
const CEREMONY_SECS: i64 = 300;

/// Why a passkey step was refused (told to the citizen's browser).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasskeyError {
    /// Passkeys are not available on this provider (its host is an IP address).
    #[error("passkeys are not available on this login service")]
    Unavailable,
    /// The ceremony is unknown, expired or already used.
    #[error("this passkey request has expired; start again")]
    Ceremony,
    /// The citizen has no passkey.
    #[error("no passkey is registered for this person")]
    NoPasskey,
    /// WebAuthn verification failed.
    #[error("the passkey could not be verified: {0}")]
    Verification(String),
    /// Something inside the provider failed.
    #[error(transparent)]
    Internal(#[from] IdpError),
}

impl From<eid_core::DbError> for PasskeyError {
    fn from(e: eid_core::DbError) -> Self {
        Self::Internal(IdpError::from(e))
    }
}

pub(crate) use eid_core::web::relying_party;

/// A passkey as the self-service page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct PasskeyEntry {
    /// The credential id (base64url).
    pub credential_id: String,
    /// The name the citizen gave it.
    pub name: String,
    /// When it was added.
    pub created_at: i64,
    /// When it was last used to log in.
    pub last_used_at: Option<i64>,
}

fn user_handle(idp: &Idp, citizen_id: &str) -> Uuid {
    // Stable per citizen, unlinkable to the citizen id without the instance's salt.
    let mut hash = Sha256::new();
    hash.update(b"eid webauthn user\n");
    hash.update(idp.salt());
    hash.update(citizen_id.as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

async fn citizen_passkeys(idp: &Idp, citizen_id: &str) -> Result<Vec<Passkey>, IdpError> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT passkey FROM idp_passkey WHERE citizen_id = $1 AND removed_at IS NULL",
    )
    .bind(citizen_id)
    .fetch_all(idp.ctx().db.pool())
    .await
    .map_err(query("reading passkeys"))?;
    rows.iter()
        .map(|text| serde_json::from_str(text).map_err(|e| IdpError::stored("passkey", e)))
        .collect()
}

async fn store_ceremony(
    idp: &Idp,
    kind: &str,
    citizen_id: &str,
    interaction_id: Option<&str>,
    state: String,
) -> Result<String, IdpError> {
    let id = random_token();
    let now = idp.ctx().clock.now().unix_timestamp();
    sqlx::query(
        "INSERT INTO idp_webauthn_ceremony (ceremony_id, kind, citizen_id, interaction_id, state, \
         expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(kind)
    .bind(citizen_id)
    .bind(interaction_id)
    .bind(state)
    .bind(now + CEREMONY_SECS)
    .execute(idp.ctx().db.pool())
    .await
    .map_err(query("storing a WebAuthn ceremony"))?;
    Ok(id)
}

/// Takes a ceremony (once): its citizen and state.
async fn take_ceremony(
    idp: &Idp,
    id: &str,
    kind: &str,
    interaction_id: Option<&str>,
) -> Result<(String, String), PasskeyError> {
    let now = idp.ctx().clock.now().unix_timestamp();
    let row = sqlx::query(
        "UPDATE idp_webauthn_ceremony SET used_at = $1 WHERE ceremony_id = $2 AND kind = $3 \
         AND used_at IS NULL AND expires_at > $1 RETURNING citizen_id, interaction_id, state",
    )
    .bind(now)
    .bind(id)
    .bind(kind)
    .fetch_optional(idp.ctx().db.pool())
    .await
    .map_err(query("taking a WebAuthn ceremony"))?
    .ok_or(PasskeyError::Ceremony)?;
    let read = |e| PasskeyError::from(query("reading a WebAuthn ceremony")(e));
    let stored_interaction: Option<String> = row.try_get("interaction_id").map_err(read)?;
    if stored_interaction.as_deref() != interaction_id {
        return Err(PasskeyError::Ceremony);
    }
    Ok((
        row.try_get("citizen_id").map_err(read)?,
        row.try_get("state").map_err(read)?,
    ))
}

/// Starts adding a passkey for a citizen (the caller checked the session is high).
pub async fn start_registration(
    idp: &Idp,
    citizen_id: &str,
    display_name: &str,
) -> Result<(String, CreationChallengeResponse), PasskeyError> {
    let webauthn = idp.webauthn().ok_or(PasskeyError::Unavailable)?;
    let existing = citizen_passkeys(idp, citizen_id).await?;
    let exclude = existing.iter().map(|p| p.cred_id().clone()).collect();
    let (challenge, state) = webauthn
        .start_passkey_registration(
            user_handle(idp, citizen_id),
            display_name,
            display_name,
            Some(exclude),
        )
        .map_err(|e| PasskeyError::Verification(e.to_string()))?;
    let state = serde_json::to_string(&state).map_err(|e| IdpError::stored("ceremony", e))?;
    let id = store_ceremony(idp, "register", citizen_id, None, state).await?;
    Ok((id, challenge))
}

/// Finishes adding a passkey; returns its credential id.
pub async fn finish_registration(
    idp: &Idp,
    citizen_id: &str,
    ceremony_id: &str,
    response: &RegisterPublicKeyCredential,
    name: &str,
) -> Result<String, PasskeyError> {
    let webauthn = idp.webauthn().ok_or(PasskeyError::Unavailable)?;
    let (owner, state) = take_ceremony(idp, ceremony_id, "register", None).await?;
    if owner != citizen_id {
        return Err(PasskeyError::Ceremony);
    }
    let state: PasskeyRegistration =
        serde_json::from_str(&state).map_err(|e| IdpError::stored("ceremony", e))?;
    let passkey = webauthn
        .finish_passkey_registration(response, &state)
        .map_err(|e| PasskeyError::Verification(e.to_string()))?;
    let credential_id = b64(passkey.cred_id().as_ref());
    let name: String = name
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(60)
        .collect();
    let name = if name.is_empty() {
        "Passkey".to_owned()
    } else {
        name
    };
    let stored = serde_json::to_string(&passkey).map_err(|e| IdpError::stored("passkey", e))?;
    let ctx = idp.ctx();
    let now = ctx.clock.now().unix_timestamp();
    let mut tx = ctx.db.begin_write().await?;
    sqlx::query(
        "INSERT INTO idp_passkey (credential_id, citizen_id, name, passkey, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&credential_id)
    .bind(citizen_id)
    .bind(&name)
    .bind(stored)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(query("storing a passkey"))?;
    audit::append(
        &mut tx,
        ctx.clock.as_ref(),
        &AuditEvent::new(
            format!("citizen:{citizen_id}"),
            "idp.passkey.add",
            "passkey",
            &credential_id,
        )
        .details(serde_json::json!({ "name": name })),
    )
    .await
    .map_err(IdpError::from)?;
    tx.commit().await.map_err(query("storing a passkey"))?;
    Ok(credential_id)
}

/// The citizen's passkeys, newest first.
pub async fn list(idp: &Idp, citizen_id: &str) -> Result<Vec<PasskeyEntry>, IdpError> {
    let rows = sqlx::query(
        "SELECT credential_id, name, created_at, last_used_at FROM idp_passkey \
         WHERE citizen_id = $1 AND removed_at IS NULL ORDER BY created_at DESC, credential_id",
    )
    .bind(citizen_id)
    .fetch_all(idp.ctx().db.pool())
    .await
    .map_err(query("listing passkeys"))?;
    rows.iter()
        .map(|row| {
            let read = |e| query("reading a passkey")(e);
            Ok(PasskeyEntry {
                credential_id: row.try_get("credential_id").map_err(read)?,
                name: row.try_get("name").map_err(read)?,
                created_at: row.try_get("created_at").map_err(read)?,
                last_used_at: row.try_get("last_used_at").map_err(read)?,
            })
        })
        .collect()
}

/// Removes one of the citizen's passkeys.
pub async fn remove(idp: &Idp, citizen_id: &str, credential_id: &str) -> Result<bool, IdpError> {
    let ctx = idp.ctx();
    let now = ctx.clock.now().unix_timestamp();
    let mut tx = ctx.db.begin_write().await?;
    let removed = sqlx::query(
        "UPDATE idp_passkey SET removed_at = $1 WHERE credential_id = $2 AND citizen_id = $3 \
         AND removed_at IS NULL",
    )
    .bind(now)
    .bind(credential_id)
    .bind(citizen_id)
    .execute(&mut *tx)
    .await
    .map_err(query("removing a passkey"))?
    .rows_affected();
    if removed > 0 {
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                format!("citizen:{citizen_id}"),
                "idp.passkey.remove",
                "passkey",
                credential_id,
            ),
        )
        .await?;
    }
    tx.commit().await.map_err(query("removing a passkey"))?;
    Ok(removed > 0)
}

/// Starts a passkey login for the citizen with this national id, within an interaction.
pub async fn start_login(
    idp: &Idp,
    interaction_id: &str,
    national_id: &str,
) -> Result<(String, RequestChallengeResponse), PasskeyError> {
    let webauthn = idp.webauthn().ok_or(PasskeyError::Unavailable)?;
    let citizen_id: Option<String> =
        sqlx::query_scalar("SELECT citizen_id FROM idp_citizen WHERE national_id = $1")
            .bind(national_id.trim())
            .fetch_optional(idp.ctx().db.pool())
            .await
            .map_err(query("finding a citizen"))?;
    let citizen_id = citizen_id.ok_or(PasskeyError::NoPasskey)?;
    let passkeys = citizen_passkeys(idp, &citizen_id).await?;
    if passkeys.is_empty() {
        return Err(PasskeyError::NoPasskey);
    }
    let (challenge, state) = webauthn
        .start_passkey_authentication(&passkeys)
        .map_err(|e| PasskeyError::Verification(e.to_string()))?;
    let state = serde_json::to_string(&state).map_err(|e| IdpError::stored("ceremony", e))?;
    let id = store_ceremony(idp, "login", &citizen_id, Some(interaction_id), state).await?;
    Ok((id, challenge))
}

/// Finishes a passkey login: returns the citizen it proved.
pub async fn finish_login(
    idp: &Idp,
    interaction_id: &str,
    ceremony_id: &str,
    response: &PublicKeyCredential,
) -> Result<String, PasskeyError> {
    let webauthn = idp.webauthn().ok_or(PasskeyError::Unavailable)?;
    let (citizen_id, state) =
        take_ceremony(idp, ceremony_id, "login", Some(interaction_id)).await?;
    let state: PasskeyAuthentication =
        serde_json::from_str(&state).map_err(|e| IdpError::stored("ceremony", e))?;
    let result = webauthn
        .finish_passkey_authentication(response, &state)
        .map_err(|e| PasskeyError::Verification(e.to_string()))?;
    let credential_id = b64(result.cred_id().as_ref());
    let row: Option<String> = sqlx::query_scalar(
        "SELECT passkey FROM idp_passkey WHERE credential_id = $1 AND citizen_id = $2 \
         AND removed_at IS NULL",
    )
    .bind(&credential_id)
    .bind(&citizen_id)
    .fetch_optional(idp.ctx().db.pool())
    .await
    .map_err(query("reading a passkey"))?;
    let mut passkey: Passkey = serde_json::from_str(&row.ok_or(PasskeyError::NoPasskey)?)
        .map_err(|e| IdpError::stored("passkey", e))?;
    // The signature counter and backup state move on with each use.
    passkey.update_credential(&result);
    let stored = serde_json::to_string(&passkey).map_err(|e| IdpError::stored("passkey", e))?;
    sqlx::query("UPDATE idp_passkey SET passkey = $1, last_used_at = $2 WHERE credential_id = $3")
        .bind(stored)
        .bind(idp.ctx().clock.now().unix_timestamp())
        .bind(&credential_id)
        .execute(idp.ctx().db.pool())
        .await
        .map_err(query("updating a passkey"))?;
    Ok(citizen_id)
}
