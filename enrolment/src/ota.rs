//! Activation of a SIM over the air: the mobile operator has generated the citizen's
//! two key pairs on the SIM and sends their certificate requests; the registration
//! authority checks that the citizen's identity was verified in person at a desk (an
//! approved application, no token yet), has the CA issue both certificates, and makes
//! the identity active. The operator vouches for where the keys were made (the signing
//! key's attributes as the SIM reports them); that statement is the QSCD evidence the
//! CA requires for the qualified certificate, and it is kept in the audit log.

use eid_core::{AuditEvent, Outcome, audit};
use eid_hsm::{KeyAttributes, KeyRole, PublicKey, QscdEvidence, TokenClass};
use sqlx::Row;

use crate::{
    ApplicationStatus, CertificateKind, CertificateRequest, Enrolment, EnrolmentError, PortError,
    error::query, national_id::NationalIdNumber, new_id,
};

/// What the operator reports about a SIM it personalised.
#[derive(Clone, Debug)]
pub struct OtaRequest {
    /// The citizen's national identity number.
    pub national_id: String,
    /// The SIM's phone number (for the record).
    pub phone_number: String,
    /// The SIM's identifier at the operator.
    pub sim_id: String,
    /// PKCS#10 (PEM or DER) of the authentication key, signed on the SIM.
    pub authentication_csr: Vec<u8>,
    /// PKCS#10 (PEM or DER) of the signing key, signed on the SIM.
    pub signing_csr: Vec<u8>,
    /// The signing key's attributes, as the SIM reports them.
    pub signing_key: KeyAttributes,
}

/// A SIM activated over the air.
#[derive(Clone, Debug)]
pub struct OtaOutcome {
    /// The activation's id.
    pub activation_id: String,
    /// The authentication certificate (DER) and its serial.
    pub authentication: crate::IssuedCertificate,
    /// The qualified signature certificate (DER) and its serial.
    pub signing: crate::IssuedCertificate,
}

/// The public key a certificate request carries.
fn requested_key(csr: &[u8]) -> Result<PublicKey, EnrolmentError> {
    use der::{Decode, DecodePem, Encode};
    let request = if csr.starts_with(b"-----BEGIN") {
        x509_cert::request::CertReq::from_pem(csr)
    } else {
        x509_cert::request::CertReq::from_der(csr)
    }
    .map_err(|e| EnrolmentError::Invalid(format!("signing_csr is not a PKCS#10 request: {e}")))?;
    let spki = request
        .info
        .public_key
        .to_der()
        .map_err(|e| EnrolmentError::Invalid(format!("signing_csr's key: {e}")))?;
    PublicKey::from_der(&spki).map_err(|e| EnrolmentError::Invalid(e.to_string()))
}

impl Enrolment {
    /// Activates a SIM over the air for `operator` (see the module's description).
    /// Refused, changing nothing, unless the identity was verified in person and has
    /// no token yet; a certificate issued before a later step fails is revoked.
    pub async fn activate_over_the_air(
        &self,
        operator: &str,
        request: OtaRequest,
    ) -> Result<OtaOutcome, EnrolmentError> {
        let number = NationalIdNumber::parse(&request.national_id).map_err(|e| {
            EnrolmentError::Invalid(format!(
                "national_id {:?} is not a national identity number: {e}",
                request.national_id
            ))
        })?;
        let sim_id = request.sim_id.trim();
        if sim_id.is_empty() || sim_id.len() > 64 || sim_id.chars().any(char::is_control) {
            return Err(EnrolmentError::Invalid(
                "sim_id must be 1 to 64 printable characters".into(),
            ));
        }
        let signing_key = requested_key(&request.signing_csr)?;
        let actor = format!("operator:{operator}");
        let ctx = self.ctx();
        let row =
            sqlx::query("SELECT application_id FROM enrol_application WHERE national_id = $1")
                .bind(number.as_str())
                .fetch_optional(ctx.db.pool())
                .await
                .map_err(query("finding an application"))?;
        let Some(row) = row else {
            return Err(EnrolmentError::NotFound(format!(
                "no application for national identity number {}",
                number.as_str()
            )));
        };
        let application_id: String = row
            .try_get("application_id")
            .map_err(query("finding an application"))?;
        let application = self.application(&application_id).await?;
        let refused = match application.status {
            ApplicationStatus::Approved => None,
            ApplicationStatus::Pending => Some(
                "the citizen's identity has not been verified in person yet: they visit a service centre first",
            ),
            ApplicationStatus::Active | ApplicationStatus::Suspended => Some(
                "the identity already has an active token; a further SIM is activated at a desk",
            ),
            ApplicationStatus::Rejected | ApplicationStatus::Deactivated => {
                Some("the application was rejected or the identity deactivated")
            }
        };
        if let Some(why) = refused {
            audit::record(
                &ctx.db,
                ctx.clock.as_ref(),
                &AuditEvent::new(
                    &actor,
                    "enrolment.ota.activate",
                    "application",
                    &application_id,
                )
                .outcome(Outcome::Denied)
                .details(serde_json::json!({
                    "sim": sim_id,
                    "status": application.status.name(),
                    "reason": why,
                })),
            )
            .await?;
            return Err(EnrolmentError::Conflict(why.into()));
        }
        let issuer = self.issuer()?.clone();
        let activation_id = new_id("act");
        let now = ctx.clock.now().unix_timestamp();
        let mut tx = ctx.db.begin_write().await?;
        crate::activation::no_activation_running(&mut tx, &application_id).await?;
        // The keys are on the SIM already: the activation starts at `keys`.
        sqlx::query(
            "INSERT INTO enrol_activation (activation_id, application_id, carrier, token_id, \
             state, clerk_id, desk_id, created_at, updated_at) \
             VALUES ($1, $2, 'sim', $3, 'keys', $4, 'over-the-air', $5, $5)",
        )
        .bind(&activation_id)
        .bind(&application_id)
        .bind(sim_id)
        .bind(&actor)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(crate::activation::insert_failed)?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                &actor,
                "enrolment.ota.start",
                "application",
                &application_id,
            )
            .details(serde_json::json!({
                "activation_id": activation_id,
                "sim": sim_id,
                "phone_number": request.phone_number,
                "signing_key": request.signing_key,
            })),
        )
        .await?;
        tx.commit().await.map_err(query("starting an activation"))?;

        let port = |e: PortError| match e {
            PortError::Refused(m) => {
                EnrolmentError::Invalid(format!("the CA refused the certificate: {m}"))
            }
            PortError::Unavailable(m) => {
                EnrolmentError::Unavailable(format!("the CA is not reachable: {m}"))
            }
        };
        let certificate = |kind, csr: Vec<u8>, key_evidence| CertificateRequest {
            kind,
            csr,
            national_id: application.national_id.clone(),
            given_name: application.given_name.clone(),
            surname: application.family_name.clone(),
            key_evidence,
            requested_by: actor.clone(),
        };
        let authentication = match issuer
            .issue(certificate(
                CertificateKind::Authentication,
                request.authentication_csr.clone(),
                None,
            ))
            .await
        {
            Ok(issued) => issued,
            Err(e) => {
                let error = port(e);
                self.ota_failed(&actor, &activation_id, &application_id, &error, &[])
                    .await?;
                return Err(error);
            }
        };
        let evidence = QscdEvidence {
            token_class: TokenClass::Sim,
            role: KeyRole::CitizenSigning,
            attributes: request.signing_key,
        };
        let signing = match issuer
            .issue(certificate(
                CertificateKind::QualifiedSignature,
                request.signing_csr.clone(),
                Some((signing_key, evidence)),
            ))
            .await
        {
            Ok(issued) => issued,
            Err(e) => {
                let error = port(e);
                self.ota_failed(
                    &actor,
                    &activation_id,
                    &application_id,
                    &error,
                    &[&authentication.serial],
                )
                .await?;
                return Err(error);
            }
        };
        let now = ctx.clock.now().unix_timestamp();
        let mut tx = ctx.db.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE enrol_application SET status = 'active', version = version + 1, \
             updated_at = $1, status_since = $1, status_reason = NULL \
             WHERE application_id = $2 AND status = 'approved'",
        )
        .bind(now)
        .bind(&application_id)
        .execute(&mut *tx)
        .await
        .map_err(query("activating an identity"))?
        .rows_affected();
        if changed == 0 {
            drop(tx);
            let error = EnrolmentError::Conflict(
                "the application is no longer approved (changed meanwhile)".into(),
            );
            self.ota_failed(
                &actor,
                &activation_id,
                &application_id,
                &error,
                &[&authentication.serial, &signing.serial],
            )
            .await?;
            return Err(error);
        }
        sqlx::query(
            "UPDATE enrol_activation SET state = 'done', auth_serial = $1, sign_serial = $2, \
             updated_at = $3 WHERE activation_id = $4",
        )
        .bind(&authentication.serial)
        .bind(&signing.serial)
        .bind(now)
        .bind(&activation_id)
        .execute(&mut *tx)
        .await
        .map_err(query("finishing an activation"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                &actor,
                "enrolment.ota.activate",
                "application",
                &application_id,
            )
            .details(serde_json::json!({
                "activation_id": activation_id,
                "sim": sim_id,
                "auth_serial": authentication.serial,
                "sign_serial": signing.serial,
            })),
        )
        .await?;
        tx.commit().await.map_err(query("activating an identity"))?;
        Ok(OtaOutcome {
            activation_id,
            authentication,
            signing,
        })
    }

    /// Ends an over-the-air activation as failed: the certificates already issued
    /// for it are revoked, and the failure audited.
    async fn ota_failed(
        &self,
        actor: &str,
        activation_id: &str,
        application_id: &str,
        error: &EnrolmentError,
        issued: &[&str],
    ) -> Result<(), EnrolmentError> {
        let mut revoked = Vec::new();
        if let Ok(issuer) = self.issuer() {
            for serial in issued {
                match issuer
                    .change_status(serial, "cessationOfOperation", actor)
                    .await
                {
                    Ok(()) => revoked.push((*serial).to_owned()),
                    Err(e) => {
                        tracing::error!(%serial, error = %e, "could not revoke the certificate of a failed activation");
                    }
                }
            }
        }
        self.record_failed_activation(
            actor,
            "enrolment.ota.activate",
            (activation_id, application_id),
            "failed",
            error,
            serde_json::json!({ "revoked": revoked }),
        )
        .await
    }
}
