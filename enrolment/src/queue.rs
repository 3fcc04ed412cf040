//! Card activations that wait for the CA. When the CA cannot be reached during an
//! activation, the desk keeps what the citizen and the clerk did: the card holds its
//! PINs, both key pairs and the PUK; the certificate requests signed on it (while the
//! PINs were at hand) and the evidence that the signing key is on a QSCD wait in the
//! activation's row, state `queued`. A worker ([`Enrolment::maintain`]) takes them up
//! when the CA answers again: it asks for the certificates, writes them on the card
//! (public objects, no PIN needed) and completes the activation as the clerk's — the
//! identity becomes active and its record is sealed. The card stays at the centre
//! (in the reader) until then.
//!
//! Each step is stored before the next: a certificate is kept in the row as soon as
//! the CA returns it, so a crash never asks for it twice. A queued card that never got
//! its PUK (a crash in between) is wiped with the transport code; a card the CA
//! refuses, or that left the reader for good, is cleaned up as far as the desk can:
//! every certificate issued for it is revoked.

use std::sync::Arc;

use eid_core::{AuditEvent, audit};
use eid_hsm::{
    CITIZEN_AUTHENTICATION_LABEL, CITIZEN_SIGNING_LABEL, CardId, CardState, KeyLabel, PinKind,
    PublicKey, QscdEvidence,
};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::{
    ApplicationStatus, CertificateKind, CertificateRequest, Enrolment, EnrolmentError, PortError,
    activation::Reader,
    error::query,
    staff::{Desk, DeskSession, Role},
};

/// What a queued activation needs to finish, as stored in `queued_requests`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct QueuedRequests {
    /// The authentication key's PKCS#10 request, hex DER.
    pub(crate) auth_csr: String,
    /// The signing key's request, hex DER.
    pub(crate) sign_csr: String,
    /// The signing key's public key (SPKI, hex DER), which the evidence describes.
    pub(crate) sign_public_key: String,
    /// What the card reported about the signing key.
    pub(crate) sign_evidence: QscdEvidence,
    /// The authentication certificate (hex DER), once the CA issued it.
    pub(crate) auth_certificate: Option<String>,
    /// The signing certificate (hex DER), once issued.
    pub(crate) sign_certificate: Option<String>,
}

/// What one pass over the queue did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueRun {
    /// Activations completed: identities now active.
    pub completed: usize,
    /// Activations given up (refused by the CA, the application no longer approved).
    pub failed: usize,
    /// Activations still waiting (the CA unreachable, the card not in the reader).
    pub waiting: usize,
}

/// How one queued activation fared.
enum Fate {
    Completed,
    /// Keep it queued, with why.
    Waiting(String),
    /// Give it up, with why.
    Failed(EnrolmentError),
}

struct Queued {
    activation_id: String,
    application_id: String,
    token_id: String,
    requests: QueuedRequests,
    session: DeskSession,
}

fn unhex(what: &str, value: &str) -> Result<Vec<u8>, EnrolmentError> {
    hex::decode(value).map_err(|e| EnrolmentError::Internal {
        operation: "reading a queued activation",
        detail: format!("{what}: {e}"),
    })
}

impl Enrolment {
    /// Runs the desk's background work until `stop`: every `queue_retry_secs`, the
    /// activations queued while the CA was unreachable are tried again.
    pub async fn maintain(self, stop: tokio_util::sync::CancellationToken) {
        let every = std::time::Duration::from_secs(self.ctx().config.enrolment.queue_retry_secs);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => match self.run_queue().await {
                    Ok(run) if run == QueueRun::default() => {}
                    Ok(run) => tracing::info!(?run, "took up queued activations"),
                    Err(error) => tracing::warn!(%error, "taking up queued activations failed"),
                },
            }
        }
    }

    /// Tries every queued activation once, oldest first; stops at the first that
    /// finds the CA still unreachable.
    pub async fn run_queue(&self) -> Result<QueueRun, EnrolmentError> {
        let mut run = QueueRun::default();
        let Some(reader) = self.reader().cloned() else {
            return Ok(run);
        };
        let rows = sqlx::query(
            "SELECT a.activation_id, a.application_id, a.token_id, a.queued_requests, \
             a.clerk_id, a.desk_id, d.centre_id, d.name AS desk_name, d.seal_key, \
             c.name AS centre_name, s.name AS clerk_name, s.role \
             FROM enrol_activation a \
             JOIN enrol_desk d ON d.desk_id = a.desk_id \
             JOIN enrol_centre c ON c.centre_id = d.centre_id \
             JOIN enrol_staff s ON s.staff_id = a.clerk_id \
             WHERE a.state = 'queued' ORDER BY a.queued_at, a.activation_id",
        )
        .fetch_all(self.ctx().db.pool())
        .await
        .map_err(query("reading queued activations"))?;
        let mut queued = Vec::new();
        for row in rows {
            let read = |e| query("reading a queued activation")(e);
            let requests: String = row.try_get("queued_requests").map_err(read)?;
            let role: String = row.try_get("role").map_err(read)?;
            queued.push(Queued {
                activation_id: row.try_get("activation_id").map_err(read)?,
                application_id: row.try_get("application_id").map_err(read)?,
                token_id: row.try_get("token_id").map_err(read)?,
                requests: serde_json::from_str(&requests).map_err(|e| {
                    EnrolmentError::Internal {
                        operation: "reading a queued activation",
                        detail: e.to_string(),
                    }
                })?,
                // The activation completes as the clerk's, at the desk where it began.
                session: DeskSession {
                    staff_id: row.try_get("clerk_id").map_err(read)?,
                    staff_name: row.try_get("clerk_name").map_err(read)?,
                    role: Role::parse(&role).unwrap_or(Role::Clerk),
                    desk: Desk {
                        desk_id: row.try_get("desk_id").map_err(read)?,
                        centre_id: row.try_get("centre_id").map_err(read)?,
                        name: row.try_get("desk_name").map_err(read)?,
                        centre_name: row.try_get("centre_name").map_err(read)?,
                        seal_key: row.try_get("seal_key").map_err(read)?,
                    },
                },
            });
        }
        for (index, item) in queued.iter().enumerate() {
            if !self.claim(&item.activation_id).await? {
                // Another process of this desk works on it.
                continue;
            }
            let fate = match self.take_up(item, &reader).await {
                Ok(fate) => fate,
                Err(EnrolmentError::Unavailable(why)) => Fate::Waiting(why),
                Err(e) if e.is_internal() => return Err(e),
                Err(e) => Fate::Failed(e),
            };
            match fate {
                Fate::Completed => run.completed += 1,
                Fate::Waiting(why) => {
                    self.still_waiting(&item.activation_id, &why).await?;
                    run.waiting += 1;
                    if why.starts_with(CA_DOWN) {
                        // The same for every other one: wait for the next pass.
                        run.waiting += queued.len() - index - 1;
                        break;
                    }
                }
                Fate::Failed(error) => {
                    self.give_up(item, &reader, &error).await?;
                    run.failed += 1;
                }
            }
        }
        Ok(run)
    }

    async fn take_up(&self, item: &Queued, reader: &Arc<Reader>) -> Result<Fate, EnrolmentError> {
        let card = CardId::new(item.token_id.as_str())?;
        let info = {
            let (reader, card) = (reader.clone(), card.clone());
            tokio::task::spawn_blocking(move || reader.reader.card(&card))
                .await
                .map_err(crate::activation::blocking_error)?
        };
        match info {
            Ok(info) if info.state == CardState::Personalised => {}
            Ok(info) => {
                return Ok(Fate::Failed(EnrolmentError::Token(format!(
                    "card {card} is {} (its PUK was never set: the activation was cut short before it was queued)",
                    info.state
                ))));
            }
            Err(e) => {
                return Ok(Fate::Waiting(format!(
                    "card {card} is not in the reader ({e}); insert it to finish"
                )));
            }
        }
        let application = self.application(&item.application_id).await?;
        if application.status != ApplicationStatus::Approved {
            return Ok(Fate::Failed(EnrolmentError::Conflict(format!(
                "the application is {} now, no longer approved",
                application.status.name()
            ))));
        }
        let issuer = self.issuer()?.clone();
        let mut requests = item.requests.clone();
        let request = |kind, csr, key_evidence| CertificateRequest {
            kind,
            csr,
            national_id: application.national_id.clone(),
            given_name: application.given_name.clone(),
            surname: application.family_name.clone(),
            key_evidence,
            requested_by: item.session.actor(),
        };
        let port = |e: PortError| match e {
            PortError::Refused(m) => {
                EnrolmentError::Token(format!("the CA refused the certificate: {m}"))
            }
            PortError::Unavailable(m) => EnrolmentError::Unavailable(format!("{CA_DOWN}: {m}")),
        };
        if requests.auth_certificate.is_none() {
            let csr = unhex("auth_csr", &requests.auth_csr)?;
            let auth = issuer
                .issue(request(CertificateKind::Authentication, csr, None))
                .await
                .map_err(port)?;
            requests.auth_certificate = Some(hex::encode(&auth.der));
            self.keep_issued(&item.activation_id, "auth_serial", &auth.serial, &requests)
                .await?;
        }
        if requests.sign_certificate.is_none() {
            let csr = unhex("sign_csr", &requests.sign_csr)?;
            let key = PublicKey::from_der(&unhex("sign_public_key", &requests.sign_public_key)?)?;
            let sign = issuer
                .issue(request(
                    CertificateKind::QualifiedSignature,
                    csr,
                    Some((key, requests.sign_evidence.clone())),
                ))
                .await
                .map_err(port)?;
            requests.sign_certificate = Some(hex::encode(&sign.der));
            self.keep_issued(&item.activation_id, "sign_serial", &sign.serial, &requests)
                .await?;
        }
        let (Some(auth), Some(sign)) = (&requests.auth_certificate, &requests.sign_certificate)
        else {
            return Err(EnrolmentError::internal("finishing a queued activation")(
                "a certificate is missing after issuance".into(),
            ));
        };
        let (auth, sign) = (unhex("auth", auth)?, unhex("sign", sign)?);
        {
            let reader = reader.clone();
            tokio::task::spawn_blocking(move || -> Result<(), EnrolmentError> {
                reader.reader.write_certificate(
                    &card,
                    PinKind::Pin1,
                    &KeyLabel::new(CITIZEN_AUTHENTICATION_LABEL)?,
                    &auth,
                )?;
                reader.reader.write_certificate(
                    &card,
                    PinKind::Pin2,
                    &KeyLabel::new(CITIZEN_SIGNING_LABEL)?,
                    &sign,
                )?;
                Ok(())
            })
            .await
            .map_err(crate::activation::blocking_error)??;
        }
        self.set_state(&item.activation_id, "written", None).await?;
        let outcome = self
            .complete(&item.session, &item.activation_id, &item.application_id)
            .await?;
        self.append_queue_event(
            item,
            "enrolment.activation.dequeue",
            serde_json::json!({
                "auth_serial": outcome.auth_serial,
                "sign_serial": outcome.sign_serial,
                "record_sha256": outcome.record_sha256,
            }),
        )
        .await?;
        Ok(Fate::Completed)
    }

    /// Stores a certificate the CA just issued, with its serial, before anything else.
    async fn keep_issued(
        &self,
        activation_id: &str,
        column: &str,
        serial: &str,
        requests: &QueuedRequests,
    ) -> Result<(), EnrolmentError> {
        let stored = serde_json::to_string(requests).map_err(|e| EnrolmentError::Internal {
            operation: "queueing an activation",
            detail: e.to_string(),
        })?;
        // Two fixed statements: no column name is spliced into SQL.
        let statement = match column {
            "auth_serial" => {
                "UPDATE enrol_activation SET auth_serial = $1, queued_requests = $2, updated_at = $3 \
                 WHERE activation_id = $4 AND state = 'queued'"
            }
            _ => {
                "UPDATE enrol_activation SET sign_serial = $1, queued_requests = $2, updated_at = $3 \
                 WHERE activation_id = $4 AND state = 'queued'"
            }
        };
        sqlx::query(statement)
            .bind(serial)
            .bind(stored)
            .bind(self.ctx().clock.now().unix_timestamp())
            .bind(activation_id)
            .execute(self.ctx().db.pool())
            .await
            .map_err(query("storing a queued activation's certificate"))?;
        Ok(())
    }

    /// Claims a queued activation for this process: none other takes it up until the
    /// claim is released or, after a crash, [`CLAIM_SECS`] have passed.
    async fn claim(&self, activation_id: &str) -> Result<bool, EnrolmentError> {
        let now = self.ctx().clock.now().unix_timestamp();
        let claimed = sqlx::query(
            "UPDATE enrol_activation SET queue_claimed_at = $1 WHERE activation_id = $2 \
             AND state = 'queued' AND (queue_claimed_at IS NULL OR queue_claimed_at < $3)",
        )
        .bind(now)
        .bind(activation_id)
        .bind(now - CLAIM_SECS)
        .execute(self.ctx().db.pool())
        .await
        .map_err(query("claiming a queued activation"))?
        .rows_affected();
        Ok(claimed == 1)
    }

    /// Records why a queued activation still waits, and releases the claim.
    async fn still_waiting(&self, activation_id: &str, why: &str) -> Result<(), EnrolmentError> {
        sqlx::query(
            "UPDATE enrol_activation SET error = $1, queue_attempts = queue_attempts + 1, \
             updated_at = $2, queue_claimed_at = NULL WHERE activation_id = $3 AND state = 'queued'",
        )
        .bind(format!("waiting: {why}"))
        .bind(self.ctx().clock.now().unix_timestamp())
        .bind(activation_id)
        .execute(self.ctx().db.pool())
        .await
        .map_err(query("recording a queued activation's try"))?;
        Ok(())
    }

    /// Ends a queued activation that cannot finish: revokes what was issued for it,
    /// wipes the card where the transport code still can, and records why.
    async fn give_up(
        &self,
        item: &Queued,
        reader: &Arc<Reader>,
        error: &EnrolmentError,
    ) -> Result<(), EnrolmentError> {
        tracing::warn!(activation = %item.activation_id, %error, "giving up a queued activation");
        let application = self.application(&item.application_id).await?;
        let cleaned = self
            .clean_up(
                &item.session,
                &item.activation_id,
                &application.national_id,
                reader,
            )
            .await;
        let error = EnrolmentError::Token(format!(
            "{error}. Every certificate issued for the card is revoked; a card whose PUK was set keeps its keys until the citizen's PUK wipes it. Activate a new card."
        ));
        self.fail(
            &item.session,
            &item.activation_id,
            &item.application_id,
            &error,
            cleaned.is_ok(),
        )
        .await
    }

    async fn append_queue_event(
        &self,
        item: &Queued,
        action: &str,
        details: serde_json::Value,
    ) -> Result<(), EnrolmentError> {
        let ctx = self.ctx();
        let mut tx = ctx.db.begin_write().await?;
        let mut all = serde_json::json!({
            "activation_id": item.activation_id,
            "token": item.token_id,
            "clerk": item.session.staff_id,
            "desk": item.session.desk.desk_id,
            "centre": item.session.desk.centre_id,
        });
        if let (Some(all), Some(more)) = (all.as_object_mut(), details.as_object()) {
            all.extend(more.clone());
        }
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                format!("system:queue@desk:{}", item.session.desk.desk_id),
                action,
                "application",
                &item.application_id,
            )
            .details(all),
        )
        .await?;
        tx.commit()
            .await
            .map_err(query("auditing a queued activation"))?;
        Ok(())
    }
}

/// How long a claim on a queued activation holds if its process never releases it
/// (longer than one take-up: two certificate requests, two writes on the card).
const CLAIM_SECS: i64 = 300;

/// How a wait for the CA begins, so that one pass stops at the first.
const CA_DOWN: &str = "the CA is not reachable";
