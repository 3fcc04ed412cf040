//! Mobile-ID authentication: the citizen's SIM signs a fresh random hash through the
//! mobile operator's signature gateway, and the provider checks the answer itself:
//! the signature over the hash it chose, the certificate's chain to the citizen
//! authentication CA (clientAuth, as for the ID card), that the certificate names the
//! national identity number that was asked for, and its OCSP status. Used by the login
//! page and by CIBA; the state lives in the database (`idp_mobile_auth`), so any
//! provider process can poll the gateway for a request another one started.

use std::{sync::Arc, time::Duration};

use eid_core::{AuditEvent, Outcome, audit};
use eid_hsm::mobile::{
    HashType, Language, MobileIdClient, MobileIdError, MobileIdRequest, MobileIdSession,
    MobileIdSignature, Operation, VerificationCode,
    protocol::{self, DisplayTextFormat},
};
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};
use sqlx::Row;

use crate::{
    Idp, IdpError,
    card::{self, CardHolder},
    error::query,
    flow::{Authentication, Citizen},
    jose, random_bytes,
};

/// How long a mobile-ID request can be answered, from its start: the gateway's own
/// session lifetime (MID REST: the phone gives up after about two minutes, the session
/// can be polled for five).
const LIFETIME_SECS: i64 = 300;

/// Why a mobile-ID request is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The browser's login page, for an interaction.
    Login,
    /// A CIBA request from a relying party.
    Ciba,
}

impl Purpose {
    fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Ciba => "ciba",
        }
    }
}

/// The provider's side of mobile ID: the gateway client and the certificate checks.
pub(crate) struct MobileId {
    client: MobileIdClient,
    poll: Duration,
    max_attempts: u32,
    chain: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for MobileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MobileId")
            .field("client", &self.client)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl MobileId {
    /// The gateway client for `[mobile_id]`, and a chain check to `citizen_auth_ca`.
    pub(crate) fn new(
        config: &eid_core::config::MobileIdConfig,
        citizen_auth_ca: &[u8],
    ) -> Result<Self, IdpError> {
        let client =
            MobileIdClient::new(config.client_options()).map_err(|e| IdpError::Invalid {
                what: "mobile_id",
                detail: e.to_string(),
            })?;
        Ok(Self {
            client,
            poll: Duration::from_secs(config.poll_secs),
            max_attempts: config.max_attempts,
            chain: card::chain_verifier(citizen_auth_ca)?,
        })
    }
}

/// Why no citizen is authenticated: what to tell them, and what the audit log and
/// the relying party learn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// A stable code: the gateway's result code (`USER_CANCELLED`, ...) or ours
    /// (`BAD_SIGNATURE`, `WRONG_PERSON`, `CERTIFICATE`, `REVOKED`, `UNAVAILABLE`,
    /// `INVALID_INPUT`, `TOO_MANY`, `EXPIRED`).
    pub code: String,
    /// For logs and the audit record.
    pub detail: String,
}

impl Refusal {
    fn new(code: &str, detail: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            detail: detail.into(),
        }
    }

    fn of(error: &MobileIdError) -> Self {
        let code = match error.result_code() {
            Some(code) => code.name(),
            None => "UNAVAILABLE",
        };
        Self::new(code, error.to_string())
    }

    /// The OAuth error a CIBA client gets for this refusal at the token endpoint.
    pub fn oauth_code(&self) -> &'static str {
        match self.code.as_str() {
            "TIMEOUT" | "EXPIRED" => "expired_token",
            _ => "access_denied",
        }
    }
}

/// A mobile-ID request sent to the citizen's phone.
#[derive(Clone, Debug)]
pub struct Started {
    /// Our id of it.
    pub auth_id: String,
    /// The code both screens show.
    pub code: VerificationCode,
}

/// Where a mobile-ID request stands.
#[derive(Clone, Debug)]
pub enum Progress {
    /// The citizen has not answered yet.
    Waiting {
        /// The code both screens show.
        code: VerificationCode,
    },
    /// The citizen is authenticated (reported once: the first poll that sees it).
    Done {
        /// Who.
        citizen: Citizen,
        /// How.
        authentication: Authentication,
    },
    /// Authenticated before, reported to an earlier poll.
    AlreadyDone,
    /// No one is authenticated.
    Failed(Refusal),
}

/// What a mobile-ID request asks.
#[derive(Clone, Debug)]
pub struct Ask<'a> {
    /// Why.
    pub purpose: Purpose,
    /// The interaction it logs in (login).
    pub interaction_id: Option<&'a str>,
    /// The citizen's phone number, `+` and country code.
    pub phone_number: &'a str,
    /// The citizen's national identity number.
    pub national_id: &'a str,
    /// What the phone shows (shortened to fit the gateway's limits).
    pub display_text: &'a str,
    /// Who asks, for the audit log (`service:idp`, `client:<id>`).
    pub actor: &'a str,
}

/// A display text the gateway accepts: GSM-7, at most 40 characters; characters
/// GSM-7 lacks are left out rather than the text refused. `None` if nothing is left.
fn fit_display_text(text: &str) -> Option<String> {
    let gsm7 = |c: &char| {
        protocol::check_display_text(c.encode_utf8(&mut [0; 4]), DisplayTextFormat::Gsm7).is_ok()
    };
    let kept: String = text.trim().chars().filter(gsm7).take(40).collect();
    let kept = kept.trim().to_owned();
    if !kept.is_empty() && protocol::check_display_text(&kept, DisplayTextFormat::Gsm7).is_ok() {
        return Some(kept);
    }
    // Too many characters from the extension table: plain letters only.
    let plain: String = kept
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .collect();
    (!plain.trim().is_empty()).then(|| plain.trim().to_owned())
}

impl Idp {
    fn mobile(&self) -> Result<&MobileId, Refusal> {
        self.inner
            .mobile
            .as_ref()
            .ok_or_else(|| Refusal::new("UNAVAILABLE", "mobile ID is not configured"))
    }

    /// How long one long poll waits at the gateway, seconds (when mobile ID is on).
    pub(crate) fn mobile_poll_secs(&self) -> Option<i64> {
        self.inner
            .mobile
            .as_ref()
            .map(|m| i64::try_from(m.poll.as_secs()).unwrap_or(60))
    }

    /// Whether mobile ID is configured.
    pub fn mobile_id_enabled(&self) -> bool {
        self.inner.mobile.is_some()
    }

    /// Sends a mobile-ID authentication request to the citizen's phone. Input the
    /// gateway would refuse is refused here (`INVALID_INPUT`), and so is a login that
    /// has already sent `max_attempts` requests (`TOO_MANY`).
    pub async fn mobile_start(&self, ask: &Ask<'_>) -> Result<Result<Started, Refusal>, IdpError> {
        let mobile = match self.mobile() {
            Ok(m) => m,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let phone = ask.phone_number.trim().replace([' ', '-'], "");
        let national_id = ask.national_id.trim();
        if let Err(e) = protocol::check_phone_number(&phone) {
            return Ok(Err(Refusal::new("INVALID_INPUT", e.to_string())));
        }
        if let Err(e) = protocol::check_national_identity_number(national_id) {
            return Ok(Err(Refusal::new("INVALID_INPUT", e.to_string())));
        }
        let ctx = self.ctx();
        if let Some(interaction) = ask.interaction_id {
            let sent: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM idp_mobile_auth WHERE interaction_id = $1",
            )
            .bind(interaction)
            .fetch_one(ctx.db.pool())
            .await
            .map_err(query("counting mobile-ID requests"))?;
            if sent >= i64::from(mobile.max_attempts) {
                return Ok(Err(Refusal::new(
                    "TOO_MANY",
                    format!("this login has already sent {sent} mobile-ID requests"),
                )));
            }
        }
        let hash = random_bytes::<32>().to_vec();
        let request = MobileIdRequest {
            phone_number: phone.clone(),
            national_identity_number: national_id.to_owned(),
            hash: hash.clone(),
            hash_type: HashType::Sha256,
            language: Language::Eng,
            display_text: fit_display_text(ask.display_text),
        };
        let code = request.verification_code();
        let session = match mobile
            .client
            .start(Operation::Authentication, &request)
            .await
        {
            Ok(session) => session,
            Err(error) => {
                tracing::warn!(%error, "mobile-ID request not started");
                let refusal = Refusal::of(&error);
                self.audit_mobile(ask.actor, national_id, "idp.mobile-id.start", &refusal)
                    .await?;
                return Ok(Err(refusal));
            }
        };
        let auth_id = crate::random_token();
        let now = ctx.clock.now().unix_timestamp();
        let mut tx = ctx.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO idp_mobile_auth (auth_id, purpose, interaction_id, phone_number, \
             national_id, hash, gateway_session, state, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9)",
        )
        .bind(&auth_id)
        .bind(ask.purpose.name())
        .bind(ask.interaction_id)
        .bind(&phone)
        .bind(national_id)
        .bind(jose::b64(&hash))
        .bind(&session.id)
        .bind(now)
        .bind(now + LIFETIME_SECS)
        .execute(&mut *tx)
        .await
        .map_err(query("recording a mobile-ID request"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(ask.actor, "idp.mobile-id.start", "citizen", national_id).details(
                serde_json::json!({
                    "purpose": ask.purpose.name(),
                    "phone_number": phone,
                    "verification_code": code.to_string(),
                }),
            ),
        )
        .await?;
        tx.commit()
            .await
            .map_err(query("recording a mobile-ID request"))?;
        Ok(Ok(Started { auth_id, code }))
    }

    /// The verification code of login request `auth_id`, if it belongs to interaction
    /// `interaction_id`.
    pub async fn mobile_code(
        &self,
        auth_id: &str,
        interaction_id: &str,
    ) -> Result<Option<VerificationCode>, IdpError> {
        let hash: Option<String> = sqlx::query_scalar(
            "SELECT hash FROM idp_mobile_auth WHERE auth_id = $1 AND interaction_id = $2",
        )
        .bind(auth_id)
        .bind(interaction_id)
        .fetch_optional(self.ctx().db.pool())
        .await
        .map_err(query("reading a mobile-ID request"))?;
        hash.map(|h| {
            jose::unb64(&h)
                .map(|hash| VerificationCode::of(&hash))
                .map_err(|e| IdpError::stored("mobile-ID hash", e))
        })
        .transpose()
    }

    /// Asks the gateway (waiting up to `[mobile_id] poll_secs`) whether the citizen
    /// answered request `auth_id`, and checks the answer. `None` for an unknown id.
    pub async fn mobile_poll(&self, auth_id: &str) -> Result<Option<Progress>, IdpError> {
        let ctx = self.ctx();
        let row = sqlx::query(
            "SELECT national_id, hash, gateway_session, state, result, expires_at \
             FROM idp_mobile_auth WHERE auth_id = $1",
        )
        .bind(auth_id)
        .fetch_optional(ctx.db.pool())
        .await
        .map_err(query("reading a mobile-ID request"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let read = |e| query("reading a mobile-ID request")(e);
        let national_id: String = row.try_get("national_id").map_err(read)?;
        let hash: String = row.try_get("hash").map_err(read)?;
        let hash = jose::unb64(&hash).map_err(|e| IdpError::stored("mobile-ID hash", e))?;
        let session: String = row.try_get("gateway_session").map_err(read)?;
        let state: String = row.try_get("state").map_err(read)?;
        let result: Option<String> = row.try_get("result").map_err(read)?;
        let expires_at: i64 = row.try_get("expires_at").map_err(read)?;
        let code = VerificationCode::of(&hash);
        match state.as_str() {
            "done" => return Ok(Some(Progress::AlreadyDone)),
            "failed" => {
                return Ok(Some(Progress::Failed(Refusal::new(
                    result.as_deref().unwrap_or("UNAVAILABLE"),
                    "already refused",
                ))));
            }
            _ => {}
        }
        let actor = "service:idp";
        if ctx.clock.now().unix_timestamp() >= expires_at {
            let refusal = Refusal::new("EXPIRED", "the request's five minutes are over");
            return self
                .mobile_fail(auth_id, actor, &national_id, refusal)
                .await
                .map(Some);
        }
        let mobile = match self.mobile() {
            Ok(m) => m,
            Err(refusal) => {
                return self
                    .mobile_fail(auth_id, actor, &national_id, refusal)
                    .await
                    .map(Some);
            }
        };
        let gateway_session = MobileIdSession {
            operation: Operation::Authentication,
            id: session,
        };
        let signature = match mobile.client.poll_once(&gateway_session, mobile.poll).await {
            Ok(None) => return Ok(Some(Progress::Waiting { code })),
            Ok(Some(signature)) => signature,
            Err(error) => {
                tracing::info!(%error, "mobile-ID authentication ended without a signature");
                return self
                    .mobile_fail(auth_id, actor, &national_id, Refusal::of(&error))
                    .await
                    .map(Some);
            }
        };
        let holder = match self.check_answer(&hash, &national_id, &signature).await {
            Ok(holder) => holder,
            Err(refusal) => {
                tracing::warn!(code = %refusal.code, detail = %refusal.detail, "mobile-ID answer refused");
                return self
                    .mobile_fail(auth_id, actor, &national_id, refusal)
                    .await
                    .map(Some);
            }
        };
        // A key on the SIM (hardware), used with PIN1, confirmed on a second channel (the
        // phone) beside the one the login started on.
        let (citizen, authentication) =
            card::high_login(ctx, &holder, &["hwk", "mca", "mfa", "pin"], "mobile-id").await?;
        let mut tx = ctx.db.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE idp_mobile_auth SET state = 'done', result = 'OK', citizen_id = $1 \
             WHERE auth_id = $2 AND state = 'pending'",
        )
        .bind(&citizen.citizen_id)
        .bind(auth_id)
        .execute(&mut *tx)
        .await
        .map_err(query("recording a mobile-ID answer"))?
        .rows_affected();
        if updated == 0 {
            return Ok(Some(Progress::AlreadyDone));
        }
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                actor,
                "idp.mobile-id.authenticated",
                "citizen",
                &national_id,
            )
            .details(serde_json::json!({ "certificate": holder.serial.to_hex() })),
        )
        .await?;
        tx.commit()
            .await
            .map_err(query("recording a mobile-ID answer"))?;
        Ok(Some(Progress::Done {
            citizen,
            authentication,
        }))
    }

    /// Checks what the SIM returned: the certificate's chain and purpose, that it
    /// names `national_id`, the signature over `hash`, and the certificate's status.
    async fn check_answer(
        &self,
        hash: &[u8],
        national_id: &str,
        signature: &MobileIdSignature,
    ) -> Result<CardHolder, Refusal> {
        let mobile = self.mobile()?;
        let certificate = signature
            .certificate
            .as_deref()
            .ok_or_else(|| Refusal::new("CERTIFICATE", "the gateway returned no certificate"))?;
        mobile
            .chain
            .verify_client_cert(&CertificateDer::from(certificate), &[], UnixTime::now())
            .map_err(|e| {
                Refusal::new(
                    "CERTIFICATE",
                    format!(
                        "the certificate is not a valid citizen authentication certificate: {e}"
                    ),
                )
            })?;
        let holder = card::holder(certificate, &self.ctx().config.ca.country)
            .map_err(|why| Refusal::new("CERTIFICATE", why))?;
        if holder.national_id != national_id {
            return Err(Refusal::new(
                "WRONG_PERSON",
                format!(
                    "the certificate is {}'s, not {national_id}'s",
                    holder.national_id
                ),
            ));
        }
        let key = card::public_key(certificate).map_err(|why| Refusal::new("CERTIFICATE", why))?;
        key.verify_ecdsa_digest(hash, &signature.value)
            .map_err(|e| Refusal::new("BAD_SIGNATURE", e.to_string()))?;
        match self.inner.status.status(&holder).await {
            Ok(eid_ca::ocsp::client::CheckedStatus::Good) => Ok(holder),
            Ok(eid_ca::ocsp::client::CheckedStatus::Revoked { .. }) => Err(Refusal::new(
                "REVOKED",
                format!(
                    "certificate {} is revoked or suspended",
                    holder.serial.to_hex()
                ),
            )),
            Ok(eid_ca::ocsp::client::CheckedStatus::Unknown) => Err(Refusal::new(
                "REVOKED",
                format!(
                    "certificate {} is unknown to the OCSP responder",
                    holder.serial.to_hex()
                ),
            )),
            Err(why) => Err(Refusal::new(
                "UNAVAILABLE",
                format!("the certificate's status cannot be checked: {why}"),
            )),
        }
    }

    /// Ends request `auth_id` as refused (once), with an audit event.
    async fn mobile_fail(
        &self,
        auth_id: &str,
        actor: &str,
        national_id: &str,
        refusal: Refusal,
    ) -> Result<Progress, IdpError> {
        let ctx = self.ctx();
        let mut tx = ctx.db.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE idp_mobile_auth SET state = 'failed', result = $1 \
             WHERE auth_id = $2 AND state = 'pending'",
        )
        .bind(&refusal.code)
        .bind(auth_id)
        .execute(&mut *tx)
        .await
        .map_err(query("recording a refused mobile-ID request"))?
        .rows_affected();
        if updated == 1 {
            audit::append(
                &mut tx,
                ctx.clock.as_ref(),
                &refused_event(actor, "idp.login.mobile-id", national_id, &refusal),
            )
            .await?;
        }
        tx.commit()
            .await
            .map_err(query("recording a refused mobile-ID request"))?;
        Ok(Progress::Failed(refusal))
    }

    async fn audit_mobile(
        &self,
        actor: &str,
        national_id: &str,
        action: &str,
        refusal: &Refusal,
    ) -> Result<(), IdpError> {
        let ctx = self.ctx();
        let event = refused_event(actor, action, national_id, refusal);
        audit::record(&ctx.db, ctx.clock.as_ref(), &event).await?;
        Ok(())
    }
}

fn refused_event(actor: &str, action: &str, national_id: &str, refusal: &Refusal) -> AuditEvent {
    AuditEvent::new(actor, action, "citizen", national_id)
        .outcome(Outcome::Denied)
        .details(serde_json::json!({ "result": refusal.code, "reason": refusal.detail }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn display_texts_are_fitted_to_the_gateway() {
        assert_eq!(
            fit_display_text("Board of Inland Revenue").as_deref(),
            Some("Board of Inland Revenue")
        );
        let long = "A".repeat(60);
        assert_eq!(fit_display_text(&long).unwrap().len(), 40);
        // Characters GSM-7 lacks are dropped rather than the text refused.
        assert_eq!(
            fit_display_text("Ministère ✓ Santé").as_deref(),
            Some("Ministère  Santé")
        );
        assert_eq!(fit_display_text("✓✓✓"), None);
    }

    #[test]
    fn refusals_map_to_ciba_errors() {
        assert_eq!(Refusal::new("TIMEOUT", "").oauth_code(), "expired_token");
        assert_eq!(
            Refusal::new("USER_CANCELLED", "").oauth_code(),
            "access_denied"
        );
        assert_eq!(
            Refusal::new("UNAVAILABLE", "").oauth_code(),
            "access_denied"
        );
        assert_eq!(Refusal::of(&MobileIdError::SimError).code, "SIM_ERROR");
    }
}
