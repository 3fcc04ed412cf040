//! Signing with a citizen's SIM: the service asks the mobile operator's gateway for
//! the citizen's signing certificate, prepares the signature with it (the same step 1
//! as for a card), sends the signed attributes' digest to the SIM to be signed with
//! PIN2, and, when the SIM answers, finishes it (step 2: signature checked, OCSP
//! fetched here since the gateway does none, time-stamp, validation data).

use std::time::Duration;

use der::Encode;
use eid_core::{AuditEvent, audit};
use eid_hsm::mobile::{
    HashType, Language, MobileIdError, MobileIdRequest, MobileIdSession, Operation,
};

use super::{DocumentInput, Finished, Format, Level, PrepareRequest, Signatures, query_error};
use crate::SignatureError;

/// How long one status request waits for the SIM's answer.
const POLL: Duration = Duration::from_secs(20);

/// What to sign with the SIM of `phone_number`.
#[derive(Debug)]
pub struct MobileSignRequest {
    /// The citizen's phone number (`+` and country code).
    pub phone_number: String,
    /// The citizen's national identity number.
    pub national_id: String,
    /// The document (a PDF for PAdES).
    pub document: Vec<u8>,
    /// CAdES or PAdES.
    pub format: Format,
    /// The level wanted.
    pub level: Level,
    /// Shown on the phone (GSM-7, at most 40 characters).
    pub display_text: Option<String>,
    /// For PAdES, where a visible signature goes (invisible without).
    pub visible: Option<super::VisiblePlacement>,
}

/// A signature waiting for the citizen's PIN2.
#[derive(Debug)]
pub struct MobileStarted {
    /// The pending signature's id.
    pub id: String,
    /// The 4-digit code the phone shows too.
    pub verification_code: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
}

fn refused(error: &MobileIdError) -> SignatureError {
    match error.result_code() {
        Some(code) => SignatureError::MobileIdRefused {
            code: code.name().to_owned(),
            message: error.citizen_message().to_owned(),
        },
        None => match error {
            MobileIdError::Refused {
                status: 400,
                message,
            } => SignatureError::BadRequest(format!("the mobile-ID gateway refused: {message}")),
            other => SignatureError::MobileIdUnavailable(other.to_string()),
        },
    }
}

impl Signatures {
    fn gateway(&self) -> Result<&eid_hsm::mobile::MobileIdClient, SignatureError> {
        self.mobile.as_ref().ok_or_else(|| {
            SignatureError::MobileIdUnavailable(
                "mobile ID is not configured for this service ([mobile_id])".into(),
            )
        })
    }

    /// Starts a signature on the citizen's SIM: certificate from the gateway, the
    /// signature prepared, the SIM asked. `client` is the authenticated caller.
    pub async fn mobile_start(
        &self,
        client: &str,
        request: MobileSignRequest,
    ) -> Result<MobileStarted, SignatureError> {
        let gateway = self.gateway()?;
        let certificate = gateway
            .certificate(&request.phone_number, &request.national_id)
            .await
            .map_err(|e| refused(&e))?;
        let prepared = self
            .prepare(
                client,
                PrepareRequest {
                    certificate,
                    document: DocumentInput::Bytes(request.document),
                    level: request.level,
                    format: request.format,
                    visible: request.visible,
                },
            )
            .await?;
        let hash_type = match prepared.digest_algorithm.name() {
            "sha384" => HashType::Sha384,
            "sha512" => HashType::Sha512,
            _ => HashType::Sha256,
        };
        let ask = MobileIdRequest {
            phone_number: request.phone_number.clone(),
            national_identity_number: request.national_id.clone(),
            hash: prepared.signed_attributes_digest.clone(),
            hash_type,
            language: Language::Eng,
            display_text: request.display_text,
        };
        let code = ask.verification_code().to_string();
        let session = match gateway.start(Operation::Signature, &ask).await {
            Ok(session) => session,
            Err(error) => {
                let reason = refused(&error);
                let pending = self.load(client, &prepared.id).await?;
                self.refuse(
                    client,
                    &prepared.id,
                    &pending,
                    &reason,
                    self.ctx.clock.now(),
                )
                .await?;
                return Err(reason);
            }
        };
        let mut tx = self.ctx.db.begin_write().await?;
        sqlx::query("UPDATE pending_signature SET mobile_session = $1 WHERE id = $2")
            .bind(&session.id)
            .bind(&prepared.id)
            .execute(&mut *tx)
            .await
            .map_err(query_error("recording a mobile-ID signature"))?;
        audit::append(
            &mut tx,
            self.ctx.clock.as_ref(),
            &AuditEvent::new(
                format!("service:{client}"),
                "signature.mobile-id.start",
                "signature",
                &prepared.id,
            )
            .details(serde_json::json!({
                "phone_number": request.phone_number,
                "national_id": request.national_id,
                "verification_code": code,
            })),
        )
        .await?;
        tx.commit()
            .await
            .map_err(query_error("recording a mobile-ID signature"))?;
        Ok(MobileStarted {
            id: prepared.id,
            verification_code: code,
            expires_at: prepared.expires_at,
        })
    }

    /// Waits (up to 20 s) for the SIM's answer to signature `id`: `None` while the
    /// citizen has not answered, the finished signature once they have; a refusal
    /// ends the pending signature.
    pub async fn mobile_poll(
        &self,
        client: &str,
        id: &str,
    ) -> Result<Option<Finished>, SignatureError> {
        let gateway = self.gateway()?;
        let pending = self.load(client, id).await?;
        if pending.state != "pending" {
            return Err(SignatureError::AlreadyUsed(id.to_owned()));
        }
        let Some(session) = pending.mobile_session.clone() else {
            return Err(SignatureError::BadRequest(format!(
                "signature {id} is not signed by mobile ID: finalize it with the signature value"
            )));
        };
        let session = MobileIdSession {
            operation: Operation::Signature,
            id: session,
        };
        let now = self.ctx.clock.now();
        let answer = match gateway.poll_once(&session, POLL).await {
            Ok(None) => return Ok(None),
            Ok(Some(answer)) => answer,
            Err(error) => {
                let reason = refused(&error);
                if matches!(reason, SignatureError::MobileIdRefused { .. }) {
                    self.refuse(client, id, &pending, &reason, now).await?;
                }
                return Err(reason);
            }
        };
        let prepared_certificate =
            pending
                .certificate
                .to_der()
                .map_err(|source| SignatureError::Encoding {
                    what: "certificate",
                    source,
                })?;
        if answer.certificate.as_deref() != Some(prepared_certificate.as_slice()) {
            let reason = SignatureError::InvalidSignature(
                "the SIM answered with another certificate than the one the signature was prepared for"
                    .into(),
            );
            self.refuse(client, id, &pending, &reason, now).await?;
            return Err(reason);
        }
        self.finalize(client, id, &answer.value).await.map(Some)
    }
}
