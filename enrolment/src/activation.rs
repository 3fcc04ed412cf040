//! Activating a citizen's ID card or SIM at the desk, crash-safe.
//!
//! The steps, each recorded in `enrol_activation` before the next begins:
//! 1. `started`: the card and the clerk are named;
//! 2. `keys`: PIN1, PIN2 set and both key pairs generated on the card (the key layer's
//!    `personalise`; the PUK is not set yet, so the transport code can still wipe it);
//! 3. `certified`: both certificates issued by the CA, each serial stored as soon as
//!    it exists, with proof of possession signed on the card;
//! 4. `written`: both certificates on the card, and the PUK set (`finish`);
//! 5. `done`: the identity is active and the enrolment record sealed, in one
//!    transaction.
//!
//! A failure on the way cleans up at once: every certificate issued for the attempt is
//! revoked and the card is wiped back to blank with the transport code. A crash leaves
//! a row short of `done`; the next attempt for the application first finishes it (a
//! card that got its PUK only needs the last step) or cleans it up the same way
//! (certificates the CA issued while the row did not yet name them are found by asking
//! the CA for the citizen's certificates).

use std::sync::Arc;

use eid_core::{AuditEvent, Outcome, audit};
use eid_hsm::{
    CITIZEN_AUTHENTICATION_LABEL, CITIZEN_SIGNING_LABEL, CardId, CardReader, CardState,
    CitizenPins, KeyLabel, KeySpec, PinKind, TokenClass,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::Row;

use crate::{
    ApplicationStatus, CertificateKind, CertificateRequest, Enrolment, EnrolmentError,
    IssuedCertificate,
    error::query,
    lifecycle::{Action, Reason, ReplaceReason},
    new_id,
    queue::QueuedRequests,
    staff::DeskSession,
};

/// The PINs the citizen typed at the desk, each twice. Never logged, never stored.
#[derive(Deserialize)]
pub struct CardPins {
    /// PIN1.
    pub pin1: SecretString,
    /// PIN1 again.
    pub pin1_confirm: SecretString,
    /// PIN2.
    pub pin2: SecretString,
    /// PIN2 again.
    pub pin2_confirm: SecretString,
    /// PUK.
    pub puk: SecretString,
    /// PUK again.
    pub puk_confirm: SecretString,
}

impl std::fmt::Debug for CardPins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardPins(<redacted>)")
    }
}

impl CardPins {
    /// Checks each PIN equals its confirmation and they differ from each other; the
    /// key layer checks length and content rules.
    fn confirmed(self) -> Result<CitizenPins, EnrolmentError> {
        for (name, a, b) in [
            ("PIN1", &self.pin1, &self.pin1_confirm),
            ("PIN2", &self.pin2, &self.pin2_confirm),
            ("PUK", &self.puk, &self.puk_confirm),
        ] {
            same_twice(name, a, b)?;
        }
        if self.pin1.expose_secret() == self.pin2.expose_secret() {
            return Err(EnrolmentError::Invalid("PIN1 and PIN2 must differ".into()));
        }
        Ok(CitizenPins {
            pin1: self.pin1,
            pin2: self.pin2,
            puk: self.puk,
        })
    }
}

/// Refuses a PIN (`name`) whose confirmation differs.
pub(crate) fn same_twice(
    name: &str,
    pin: &SecretString,
    again: &SecretString,
) -> Result<(), EnrolmentError> {
    if pin.expose_secret() == again.expose_secret() {
        return Ok(());
    }
    Err(EnrolmentError::Invalid(format!(
        "{name} and its confirmation differ: type both again"
    )))
}

/// How an activation ended.
#[derive(Clone, Debug)]
pub struct ActivationOutcome {
    /// The activation's id.
    pub activation_id: String,
    /// The card.
    pub token_id: String,
    /// Serial of the authentication certificate (none for a remote signing
    /// credential).
    pub auth_serial: Option<String>,
    /// Serial of the qualified signature certificate.
    pub sign_serial: String,
    /// SHA-256 of the sealed enrolment record.
    pub record_sha256: String,
}

/// What a card activation came to: done, or queued until the CA can be reached.
#[derive(Clone, Debug)]
pub(crate) enum Activated {
    Done(ActivationOutcome),
    Queued,
}

/// An activation as the case page lists it.
#[derive(Clone, Debug)]
pub(crate) struct ActivationSummary {
    pub(crate) carrier: String,
    pub(crate) token_id: String,
    pub(crate) state: String,
    pub(crate) error: Option<String>,
}

/// An unfinished activation found at the next attempt.
struct Unfinished {
    activation_id: String,
    token_id: String,
    state: String,
    auth_serial: Option<String>,
    sign_serial: Option<String>,
}

/// The desk's card reader, opened from `[enrolment.reader]`.
pub(crate) struct Reader {
    pub(crate) reader: CardReader,
    pub(crate) transport: Arc<SecretString>,
    pub(crate) spec: KeySpec,
    pub(crate) class: TokenClass,
    pub(crate) description: String,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Opens the configured reader (blocking: loads the PKCS#11 module).
    pub(crate) fn open(config: &eid_core::ReaderConfig) -> Result<Self, EnrolmentError> {
        let class = match config.class.as_str() {
            "sim" => TokenClass::Sim,
            _ => TokenClass::Smartcard,
        };
        let spec = KeySpec::parse(&config.key)?;
        let reader = CardReader::open(&config.module, class)?;
        Ok(Self {
            reader,
            transport: config.transport_code.clone(),
            spec,
            class,
            description: format!("{} reader ({})", class, config.module.display()),
        })
    }
}

const RUNNING: &str = "an activation of this application is already running (submitted twice?)";

/// Refuses a second activation of an application while one is under way (submitted
/// twice, or the desk and the operator at once).
pub(crate) async fn no_activation_running(
    tx: &mut sqlx::AnyConnection,
    application_id: &str,
) -> Result<(), EnrolmentError> {
    let busy: Option<(String, String)> = sqlx::query_as(
        "SELECT state, token_id FROM enrol_activation WHERE application_id = $1 \
         AND state NOT IN ('done', 'failed', 'cleaned')",
    )
    .bind(application_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(query("checking activations"))?;
    match busy {
        Some((state, card)) if state == "queued" => Err(EnrolmentError::Conflict(format!(
            "card {card} of this application waits for the CA (queued): it is finished when the CA answers; keep it in the reader"
        ))),
        Some(_) => Err(EnrolmentError::Conflict(RUNNING.into())),
        None => Ok(()),
    }
}

/// Why an activation's first row could not be written: another submission started one
/// meanwhile (the database allows one running activation per application), or the
/// database failed.
pub(crate) fn insert_failed(e: sqlx::Error) -> EnrolmentError {
    match e {
        sqlx::Error::Database(e) if e.is_unique_violation() => {
            EnrolmentError::Conflict(RUNNING.into())
        }
        e => query("starting an activation")(e),
    }
}

pub(crate) fn blocking_error(e: tokio::task::JoinError) -> EnrolmentError {
    EnrolmentError::internal("a card operation")(e.to_string())
}

/// A PKCS#10 request for the key `label` of `store`, signed on the card.
fn csr(
    store: &eid_hsm::KeyStore,
    label: &str,
    pin: Option<&SecretString>,
) -> Result<Vec<u8>, EnrolmentError> {
    let label = KeyLabel::new(label)?;
    let mut signer = store.signer(&label, None)?;
    if let Some(pin) = pin {
        signer = signer.with_pin(pin.clone());
    }
    signer
        .certification_request("CN=eID card key")
        .map_err(|e| EnrolmentError::Token(format!("the card did not sign the request: {e}")))
}

impl Enrolment {
    pub(crate) fn reader(&self) -> Option<&Arc<Reader>> {
        self.inner.reader.as_ref()
    }

    /// The blank cards in the desk's reader, for the activation form.
    pub(crate) async fn blank_cards(&self) -> Result<Vec<String>, EnrolmentError> {
        let Some(reader) = self.reader().cloned() else {
            return Ok(Vec::new());
        };
        let cards = tokio::task::spawn_blocking(move || reader.reader.blank_cards())
            .await
            .map_err(blocking_error)??;
        Ok(cards
            .into_iter()
            .map(|c| c.id.as_str().to_owned())
            .collect())
    }

    /// The application's activations, newest first.
    pub(crate) async fn activations(
        &self,
        application_id: &str,
    ) -> Result<Vec<ActivationSummary>, EnrolmentError> {
        let rows = sqlx::query(
            "SELECT carrier, token_id, state, error FROM enrol_activation \
             WHERE application_id = $1 ORDER BY created_at DESC, activation_id",
        )
        .bind(application_id)
        .fetch_all(self.ctx().db.pool())
        .await
        .map_err(query("reading activations"))?;
        rows.iter()
            .map(|row| {
                let read = |e| query("reading an activation")(e);
                Ok(ActivationSummary {
                    carrier: row.try_get("carrier").map_err(read)?,
                    token_id: row.try_get("token_id").map_err(read)?,
                    state: row.try_get("state").map_err(read)?,
                    error: row.try_get("error").map_err(read)?,
                })
            })
            .collect()
    }

    pub(crate) async fn set_state(
        &self,
        activation_id: &str,
        state: &str,
        column: Option<(&str, &str)>,
    ) -> Result<(), EnrolmentError> {
        let now = self.ctx().clock.now().unix_timestamp();
        let sql = match column {
            Some((name, _)) => format!(
                "UPDATE enrol_activation SET state = $1, updated_at = $2, {name} = $4 \
                 WHERE activation_id = $3"
            ),
            None => {
                "UPDATE enrol_activation SET state = $1, updated_at = $2 WHERE activation_id = $3"
                    .to_owned()
            }
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(state)
            .bind(now)
            .bind(activation_id);
        if let Some((_, value)) = column {
            q = q.bind(value);
        }
        q.execute(self.ctx().db.pool())
            .await
            .map_err(query("recording an activation step"))?;
        Ok(())
    }

    /// Activates a blank card for an approved application.
    pub(crate) async fn activate_card(
        &self,
        session: &DeskSession,
        application_id: &str,
        version: i64,
        card: &str,
        pins: CardPins,
    ) -> Result<Activated, EnrolmentError> {
        self.activate(session, application_id, version, card, pins, None)
            .await
    }

    /// Replaces an active (or suspended) identity's card: once the new card and the
    /// PINs pass their checks, every certificate of the old card is revoked (`reason`
    /// says which RFC 5280 reason), then the new card is activated exactly as a first
    /// card is, and the record is sealed again, naming the one it supersedes.
    pub(crate) async fn replace_card(
        &self,
        session: &DeskSession,
        application_id: &str,
        version: i64,
        reason: &str,
        card: &str,
        pins: CardPins,
    ) -> Result<ActivationOutcome, EnrolmentError> {
        let reason = <ReplaceReason as Reason>::parse(reason)?;
        match self
            .activate(session, application_id, version, card, pins, Some(reason))
            .await?
        {
            Activated::Done(outcome) => Ok(outcome),
            // A replacement is never queued: the old card's certificates would stay on
            // hold for as long as the link is down.
            Activated::Queued => Err(EnrolmentError::internal("replacing a card")(
                "a replacement was queued".into(),
            )),
        }
    }

    /// Activates a blank card: the first card of an approved application, or a
    /// replacement (`replacing`) for an active or suspended one.
    async fn activate(
        &self,
        session: &DeskSession,
        application_id: &str,
        version: i64,
        card: &str,
        pins: CardPins,
        replacing: Option<ReplaceReason>,
    ) -> Result<Activated, EnrolmentError> {
        let reader = self.reader().cloned().ok_or_else(|| {
            EnrolmentError::Unavailable("this desk has no card reader configured".into())
        })?;
        let pins = pins.confirmed()?;
        for (kind, pin) in [
            (PinKind::Pin1, &pins.pin1),
            (PinKind::Pin2, &pins.pin2),
            (PinKind::Puk, &pins.puk),
        ] {
            eid_hsm::PinPolicy::CITIZEN.check(kind, pin)?;
        }
        let card_id = CardId::new(card.trim())
            .map_err(|_| EnrolmentError::Invalid("choose the card in the reader".into()))?;
        let application = self.application(application_id).await?;
        match replacing {
            None if application.status != ApplicationStatus::Approved => {
                return Err(EnrolmentError::Conflict(format!(
                    "the application is {}; only an approved application is activated",
                    application.status.name()
                )));
            }
            None => {}
            Some(_) => Action::Replace.check(application.status)?,
        }
        if application.version != version {
            return Err(EnrolmentError::Conflict(
                "the application changed since this page was shown (submitted twice?): reload it"
                    .into(),
            ));
        }
        let issuer = self.issuer()?.clone();
        // An earlier attempt cut short: finish it, or clean it up before starting again.
        if let Some(outcome) = self.recover(session, application_id, &reader).await? {
            return Ok(Activated::Done(outcome));
        }
        {
            let reader = reader.clone();
            let id = card_id.clone();
            let info = tokio::task::spawn_blocking(move || reader.reader.card(&id))
                .await
                .map_err(blocking_error)??;
            if info.state != CardState::Blank {
                return Err(EnrolmentError::Token(format!(
                    "card {card_id} is not blank ({}): use a new card",
                    info.contents()
                )));
            }
        }
        // The new card and the PINs are fine: now the old card's certificates go.
        let replaces = match replacing {
            Some(reason) => Some(
                self.retire_card(session, &application, version, reason)
                    .await?,
            ),
            None => None,
        };
        let carrier = if reader.class == TokenClass::Sim {
            "sim"
        } else {
            "card"
        };
        let started = self
            .start_activation(
                session,
                application_id,
                carrier,
                card_id.as_str(),
                replaces.as_deref(),
            )
            .await;
        let activation_id = match (started, &replaces) {
            (Ok(id), _) => id,
            (Err(e), None) => return Err(e),
            (Err(e), Some(step)) => {
                // Nothing started: the old card's certificates come off hold again.
                self.restore_retired(session, &application, step).await?;
                return Err(e);
            }
        };

        let result = self
            .run_activation(
                session,
                &application,
                &activation_id,
                &card_id,
                &reader,
                &issuer,
                &pins,
                replaces.is_none(),
            )
            .await;
        match result {
            Ok(outcome) => Ok(outcome),
            Err(error) => {
                let mut cleanup = self
                    .clean_up(session, &activation_id, &application.national_id, &reader)
                    .await;
                if cleanup.is_ok()
                    && let Some(step) = &replaces
                {
                    cleanup = self.restore_retired(session, &application, step).await;
                }
                let message = match &cleanup {
                    Ok(()) if replaces.is_some() => format!(
                        "activation failed: {error}. The new card was wiped and any certificate issued for it revoked; the old card's certificates are as they were before (a stolen card's stay suspended). Fix the cause and try again."
                    ),
                    Ok(()) => format!(
                        "activation failed: {error}. The card was wiped and any certificate issued for it revoked; fix the cause and try again."
                    ),
                    Err(e) => format!(
                        "activation failed: {error}. Cleaning up also failed ({e}); try again: the next attempt finishes the clean-up."
                    ),
                };
                self.fail(
                    session,
                    &activation_id,
                    application_id,
                    &error,
                    cleanup.is_ok(),
                )
                .await?;
                Err(match error {
                    EnrolmentError::Invalid(_) => EnrolmentError::Invalid(message),
                    EnrolmentError::Unavailable(_) => EnrolmentError::Unavailable(message),
                    e if e.is_internal() => e,
                    _ => EnrolmentError::Token(message),
                })
            }
        }
    }

    /// Records the first step of an activation (`started`, naming the carrier and the
    /// token or credential), with its audit event; refused while another activation
    /// of the application runs. Returns the activation's id.
    pub(crate) async fn start_activation(
        &self,
        session: &DeskSession,
        application_id: &str,
        carrier: &str,
        token_id: &str,
        replaces: Option<&str>,
    ) -> Result<String, EnrolmentError> {
        let ctx = self.ctx();
        let activation_id = new_id("act");
        let now = ctx.clock.now().unix_timestamp();
        let mut tx = ctx.db.begin_write().await?;
        no_activation_running(&mut tx, application_id).await?;
        sqlx::query(
            "INSERT INTO enrol_activation (activation_id, application_id, carrier, token_id, \
             state, clerk_id, desk_id, created_at, updated_at, replaces) \
             VALUES ($1, $2, $3, $4, 'started', $5, $6, $7, $7, $8)",
        )
        .bind(&activation_id)
        .bind(application_id)
        .bind(carrier)
        .bind(token_id)
        .bind(&session.staff_id)
        .bind(&session.desk.desk_id)
        .bind(now)
        .bind(replaces)
        .execute(&mut *tx)
        .await
        .map_err(insert_failed)?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                session.actor(),
                "enrolment.activation.start",
                "application",
                application_id,
            )
            .details(serde_json::json!({
                "activation_id": activation_id,
                "carrier": carrier,
                "token": token_id,
                "replaces": replaces,
                "clerk": session.staff_id,
                "desk": session.desk.desk_id,
                "centre": session.desk.centre_id,
            })),
        )
        .await?;
        tx.commit().await.map_err(query("starting an activation"))?;
        Ok(activation_id)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_activation(
        &self,
        session: &DeskSession,
        application: &crate::Application,
        activation_id: &str,
        card_id: &CardId,
        reader: &Arc<Reader>,
        issuer: &Arc<dyn crate::CertificateIssuer>,
        pins: &CitizenPins,
        may_queue: bool,
    ) -> Result<Activated, EnrolmentError> {
        // 2. PINs and keys on the card.
        let personalised = {
            let reader = reader.clone();
            let id = card_id.clone();
            let pins = pins.clone();
            tokio::task::spawn_blocking(move || {
                reader
                    .reader
                    .personalise(&id, &reader.transport, &pins, reader.spec)
            })
            .await
            .map_err(blocking_error)??
        };
        let serials = format!(
            "{} {}",
            personalised.card.pin1.serial, personalised.card.pin2.serial
        );
        self.set_state(activation_id, "keys", Some(("token_serials", &serials)))
            .await?;

        // 3. Requests signed on the card, certificates from the CA.
        let (auth_store, sign_store, auth_csr, sign_csr) = {
            let reader = reader.clone();
            let id = card_id.clone();
            let pins = pins.clone();
            tokio::task::spawn_blocking(move || -> Result<_, EnrolmentError> {
                let auth = reader.reader.store(&id, PinKind::Pin1, &pins.pin1)?;
                let sign = reader.reader.store(&id, PinKind::Pin2, &pins.pin2)?;
                let auth_csr = csr(&auth, CITIZEN_AUTHENTICATION_LABEL, None)?;
                let sign_csr = csr(&sign, CITIZEN_SIGNING_LABEL, Some(&pins.pin2))?;
                Ok((auth, sign, auth_csr, sign_csr))
            })
            .await
            .map_err(blocking_error)??
        };
        let request = |kind, csr, key_evidence| CertificateRequest {
            kind,
            csr,
            national_id: application.national_id.clone(),
            given_name: application.given_name.clone(),
            surname: application.family_name.clone(),
            key_evidence,
            requested_by: session.actor(),
        };
        let port = |e: crate::PortError| match e {
            crate::PortError::Refused(m) => {
                EnrolmentError::Token(format!("the CA refused the certificate: {m}"))
            }
            crate::PortError::Unavailable(m) => {
                EnrolmentError::Unavailable(format!("the CA is not reachable: {m}"))
            }
        };
        // With the CA out of reach, a first card waits in the queue (crate::queue) with
        // what it needs: the requests, and the certificate issued before the link went.
        let queued = |auth: Option<&IssuedCertificate>| -> Result<QueuedRequests, EnrolmentError> {
            Ok(QueuedRequests {
                auth_csr: hex::encode(&auth_csr),
                sign_csr: hex::encode(&sign_csr),
                sign_public_key: hex::encode(personalised.signing.public_key.to_der()?),
                sign_evidence: personalised.signing_evidence.clone(),
                auth_certificate: auth.map(|a| hex::encode(&a.der)),
                sign_certificate: None,
            })
        };
        // The authentication certificate first, then (if that worked) the signing one.
        let (auth, sign) = match issuer
            .issue(request(
                CertificateKind::Authentication,
                auth_csr.clone(),
                None,
            ))
            .await
        {
            Ok(auth) => {
                self.set_state(activation_id, "keys", Some(("auth_serial", &auth.serial)))
                    .await?;
                let evidence = Some((
                    personalised.signing.public_key.clone(),
                    personalised.signing_evidence.clone(),
                ));
                let sign = issuer
                    .issue(request(
                        CertificateKind::QualifiedSignature,
                        sign_csr.clone(),
                        evidence,
                    ))
                    .await;
                (Some(auth), sign)
            }
            Err(e) => (None, Err(e)),
        };
        let sign = match sign {
            Ok(sign) => sign,
            Err(crate::PortError::Unavailable(why)) if may_queue => {
                drop((auth_store, sign_store));
                let requests = queued(auth.as_ref())?;
                return self
                    .queue(
                        session,
                        activation_id,
                        card_id,
                        reader,
                        pins,
                        requests,
                        &why,
                    )
                    .await;
            }
            Err(e) => return Err(port(e)),
        };
        let auth = auth.ok_or_else(|| {
            EnrolmentError::internal("activating a card")(
                "a signing certificate without the authentication certificate".into(),
            )
        })?;
        self.set_state(
            activation_id,
            "certified",
            Some(("sign_serial", &sign.serial)),
        )
        .await?;

        // 4. Certificates onto the card, then the PUK.
        {
            let reader = reader.clone();
            let id = card_id.clone();
            let puk = pins.puk.clone();
            let (auth_der, sign_der) = (auth.der.clone(), sign.der.clone());
            tokio::task::spawn_blocking(move || -> Result<(), EnrolmentError> {
                auth_store
                    .store_certificate(&KeyLabel::new(CITIZEN_AUTHENTICATION_LABEL)?, &auth_der)?;
                sign_store.store_certificate(&KeyLabel::new(CITIZEN_SIGNING_LABEL)?, &sign_der)?;
                // The stores hold sessions on the tokens; finishing needs them closed.
                drop(auth_store);
                drop(sign_store);
                reader.reader.finish(&id, &reader.transport, &puk)?;
                Ok(())
            })
            .await
            .map_err(blocking_error)??;
        }
        self.set_state(activation_id, "written", None).await?;

        // 5. Active, sealed.
        self.complete(session, activation_id, &application.application_id)
            .await
            .map(Activated::Done)
    }

    /// Queues an activation whose certificates the CA could not issue now (`why`):
    /// the row keeps the requests (state `queued`, audited), then the card gets its
    /// PUK, so that no PIN needs keeping. The queue (crate::queue) finishes it.
    #[allow(clippy::too_many_arguments)]
    async fn queue(
        &self,
        session: &DeskSession,
        activation_id: &str,
        card_id: &CardId,
        reader: &Arc<Reader>,
        pins: &CitizenPins,
        requests: QueuedRequests,
        why: &str,
    ) -> Result<Activated, EnrolmentError> {
        let ctx = self.ctx();
        let stored = serde_json::to_string(&requests).map_err(|e| EnrolmentError::Internal {
            operation: "queueing an activation",
            detail: e.to_string(),
        })?;
        let now = ctx.clock.now().unix_timestamp();
        let mut tx = ctx.db.begin_write().await?;
        let application_id: String = sqlx::query_scalar(
            "UPDATE enrol_activation SET state = 'queued', queued_requests = $1, queued_at = $2, \
             updated_at = $2, error = $3 WHERE activation_id = $4 AND state = 'keys' \
             RETURNING application_id",
        )
        .bind(stored)
        .bind(now)
        .bind(format!("waiting: the CA is not reachable: {why}"))
        .bind(activation_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(query("queueing an activation"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                session.actor(),
                "enrolment.activation.queue",
                "application",
                &application_id,
            )
            .details(serde_json::json!({
                "activation_id": activation_id,
                "token": card_id.as_str(),
                "why": why,
                "auth_certificate_issued": requests.auth_certificate.is_some(),
                "clerk": session.staff_id,
                "desk": session.desk.desk_id,
                "centre": session.desk.centre_id,
            })),
        )
        .await?;
        tx.commit().await.map_err(query("queueing an activation"))?;
        tracing::warn!(activation = activation_id, %why, "the CA is not reachable: activation queued");
        let reader = reader.clone();
        let id = card_id.clone();
        let puk = pins.puk.clone();
        tokio::task::spawn_blocking(move || reader.reader.finish(&id, &reader.transport, &puk))
            .await
            .map_err(blocking_error)??;
        Ok(Activated::Queued)
    }

    /// The last step: the identity becomes active and the record is sealed, in one
    /// transaction with its audit event. A remote signing credential (no
    /// authentication certificate) is added only to an identity that is active.
    pub(crate) async fn complete(
        &self,
        session: &DeskSession,
        activation_id: &str,
        application_id: &str,
    ) -> Result<ActivationOutcome, EnrolmentError> {
        let row = sqlx::query(
            "SELECT carrier, token_id, auth_serial, sign_serial, replaces FROM enrol_activation \
             WHERE activation_id = $1",
        )
        .bind(activation_id)
        .fetch_one(self.ctx().db.pool())
        .await
        .map_err(query("reading an activation"))?;
        let read = |e| query("reading an activation")(e);
        let carrier: String = row.try_get("carrier").map_err(read)?;
        let token_id: String = row.try_get("token_id").map_err(read)?;
        let auth_serial: Option<String> = row.try_get("auth_serial").map_err(read)?;
        let sign_serial: Option<String> = row.try_get("sign_serial").map_err(read)?;
        let replaces: Option<String> = row.try_get("replaces").map_err(read)?;
        let remote = carrier == "remote";
        let sign_serial = sign_serial
            .filter(|_| remote || auth_serial.is_some())
            .ok_or_else(|| {
                EnrolmentError::internal("completing an activation")(
                    "an activation reached its last step without its certificates".into(),
                )
            })?;
        // A replacement card is written: the old card's certificates, on hold since the
        // replacement began, are revoked now.
        if let Some(step) = &replaces {
            let application = self.application(application_id).await?;
            self.revoke_retired(session, &application, step).await?;
        }
        let sealed = self
            .seal_record(session, application_id, activation_id)
            .await?;
        let ctx = self.ctx();
        let now = ctx.clock.now().unix_timestamp();
        let mut tx = ctx.db.begin_write().await?;
        // A first card makes an approved identity active; a replacement card makes a
        // suspended one active again (an active one stays so, since when it was). A
        // remote credential only joins an active identity.
        let changed = sqlx::query(
            "UPDATE enrol_application SET status = 'active', version = version + 1, updated_at = $1, \
             status_since = CASE WHEN status = 'active' THEN status_since ELSE $1 END, \
             status_reason = NULL \
             WHERE application_id = $2 AND (status = 'active' OR \
             ($3 = 0 AND status IN ('approved', 'suspended')))",
        )
        .bind(now)
        .bind(application_id)
        .bind(i32::from(remote))
        .execute(&mut *tx)
        .await
        .map_err(query("activating an identity"))?
        .rows_affected();
        if changed == 0 {
            return Err(EnrolmentError::Conflict(if remote {
                "the identity is no longer active (suspended or deactivated meanwhile)".into()
            } else {
                "the application is no longer approved (rejected or deactivated meanwhile)".into()
            }));
        }
        sqlx::query(
            "UPDATE enrol_activation SET state = 'done', updated_at = $1 WHERE activation_id = $2",
        )
        .bind(now)
        .bind(activation_id)
        .execute(&mut *tx)
        .await
        .map_err(query("finishing an activation"))?;
        // The record of an earlier card is kept, superseded; the new record names its hash.
        sqlx::query(
            "INSERT INTO enrol_record_history (sha256, application_id, record, signature, \
             seal_key, desk_id, created_at, superseded_at) \
             SELECT sha256, application_id, record, signature, seal_key, desk_id, created_at, $1 \
             FROM enrol_record WHERE application_id = $2",
        )
        .bind(now)
        .bind(application_id)
        .execute(&mut *tx)
        .await
        .map_err(query("keeping the superseded record"))?;
        sqlx::query("DELETE FROM enrol_record WHERE application_id = $1")
            .bind(application_id)
            .execute(&mut *tx)
            .await
            .map_err(query("keeping the superseded record"))?;
        sqlx::query(
            "INSERT INTO enrol_record (application_id, record, sha256, signature, seal_key, \
             desk_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(application_id)
        .bind(&sealed.record)
        .bind(&sealed.sha256)
        .bind(sealed.signature.clone())
        .bind(&session.desk.seal_key)
        .bind(&session.desk.desk_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(query("storing the enrolment record"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                session.actor(),
                "enrolment.activation.complete",
                "application",
                application_id,
            )
            .details(serde_json::json!({
                "activation_id": activation_id,
                "carrier": carrier,
                "token": token_id,
                "auth_serial": auth_serial,
                "sign_serial": sign_serial,
                "record_sha256": sealed.sha256,
                "clerk": session.staff_id,
                "desk": session.desk.desk_id,
                "centre": session.desk.centre_id,
            })),
        )
        .await?;
        tx.commit().await.map_err(query("activating an identity"))?;
        Ok(ActivationOutcome {
            activation_id: activation_id.to_owned(),
            token_id,
            auth_serial,
            sign_serial,
            record_sha256: sealed.sha256,
        })
    }

    /// Marks an activation failed (and cleaned, if the clean-up worked), audited.
    pub(crate) async fn fail(
        &self,
        session: &DeskSession,
        activation_id: &str,
        application_id: &str,
        error: &EnrolmentError,
        cleaned: bool,
    ) -> Result<(), EnrolmentError> {
        self.record_failed_activation(
            &session.actor(),
            "enrolment.activation.fail",
            (activation_id, application_id),
            if cleaned { "cleaned" } else { "failed" },
            error,
            serde_json::json!({ "cleaned": cleaned }),
        )
        .await
    }

    /// Records activation `ids` (activation, application) as ended in `state`
    /// (`failed` or `cleaned`) by `error`, audited as `action` by `actor` with
    /// `details` beside the activation's id and the error.
    pub(crate) async fn record_failed_activation(
        &self,
        actor: &str,
        action: &str,
        (activation_id, application_id): (&str, &str),
        state: &str,
        error: &EnrolmentError,
        mut details: serde_json::Value,
    ) -> Result<(), EnrolmentError> {
        let ctx = self.ctx();
        let mut tx = ctx.db.begin_write().await?;
        sqlx::query(
            "UPDATE enrol_activation SET state = $1, error = $2, updated_at = $3 WHERE activation_id = $4",
        )
        .bind(state)
        .bind(error.to_string())
        .bind(ctx.clock.now().unix_timestamp())
        .bind(activation_id)
        .execute(&mut *tx)
        .await
        .map_err(query("recording a failed activation"))?;
        details["activation_id"] = activation_id.into();
        details["error"] = error.to_string().into();
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(actor, action, "application", application_id)
                .outcome(Outcome::Failure)
                .details(details),
        )
        .await?;
        tx.commit()
            .await
            .map_err(query("recording a failed activation"))?;
        Ok(())
    }

    /// Undoes an attempt: revokes every certificate issued for it and wipes the card
    /// if it is still in the reader and not finished.
    pub(crate) async fn clean_up(
        &self,
        session: &DeskSession,
        activation_id: &str,
        national_id: &str,
        reader: &Arc<Reader>,
    ) -> Result<(), EnrolmentError> {
        let row = sqlx::query(
            "SELECT token_id, auth_serial, sign_serial FROM enrol_activation WHERE activation_id = $1",
        )
        .bind(activation_id)
        .fetch_one(self.ctx().db.pool())
        .await
        .map_err(query("reading an activation"))?;
        let read = |e| query("reading an activation")(e);
        let token_id: String = row.try_get("token_id").map_err(read)?;
        let serials: Vec<String> = [
            row.try_get::<Option<String>, _>("auth_serial")
                .map_err(read)?,
            row.try_get::<Option<String>, _>("sign_serial")
                .map_err(read)?,
        ]
        .into_iter()
        .flatten()
        .collect();
        let revoked = self.revoke_unheld(session, national_id, serials).await?;
        let id = CardId::new(token_id.as_str())?;
        let reader = reader.clone();
        tokio::task::spawn_blocking(move || -> Result<(), EnrolmentError> {
            match reader.reader.card(&id) {
                Ok(info) if info.state == CardState::Personalising => {
                    reader.reader.reset(&id, &reader.transport, None)?;
                    Ok(())
                }
                // Blank already, or pulled out (useless now: its certificates are revoked),
                // or finished (its certificates are revoked; the PUK can wipe it).
                Ok(_) | Err(_) => Ok(()),
            }
        })
        .await
        .map_err(blocking_error)??;
        tracing::info!(
            activation = activation_id,
            revoked,
            "cleaned up an activation"
        );
        Ok(())
    }

    /// Revokes (`cessationOfOperation`) the certificates `serials` of an attempt that
    /// failed, and those issued while its row did not name them yet (a crash between
    /// the CA's answer and the row's update): every active certificate of the citizen
    /// that no finished activation or remote credential holds. Returns how many.
    pub(crate) async fn revoke_unheld(
        &self,
        session: &DeskSession,
        national_id: &str,
        mut serials: Vec<String>,
    ) -> Result<usize, EnrolmentError> {
        let issuer = self.issuer()?;
        let kept = self.certificates_in_use(national_id).await?;
        let known = issuer
            .certificates_of(national_id)
            .await
            .map_err(|e| EnrolmentError::Unavailable(format!("the CA is not reachable: {e}")))?;
        for certificate in known {
            if certificate.status == "active"
                && !kept.contains(&certificate.serial)
                && !serials.contains(&certificate.serial)
            {
                serials.push(certificate.serial);
            }
        }
        for serial in &serials {
            issuer
                .change_status(serial, "cessationOfOperation", &session.actor())
                .await
                .or_else(|e| match e {
                    // Already revoked: nothing left to do.
                    crate::PortError::Refused(m) if m.contains("revoked") => Ok(()),
                    other => Err(other),
                })
                .map_err(|e| EnrolmentError::Unavailable(format!("revoking {serial}: {e}")))?;
        }
        Ok(serials.len())
    }

    /// Serials of certificates held by finished activations of this citizen, and by
    /// its remote signing credentials that are not withdrawn (created at a desk or by
    /// an operator).
    pub(crate) async fn certificates_in_use(
        &self,
        national_id: &str,
    ) -> Result<Vec<String>, EnrolmentError> {
        let rows = sqlx::query(
            "SELECT a.auth_serial, a.sign_serial FROM enrol_activation a \
             JOIN enrol_application p ON p.application_id = a.application_id \
             WHERE p.national_id = $1 AND a.state = 'done'",
        )
        .bind(national_id)
        .fetch_all(self.ctx().db.pool())
        .await
        .map_err(query("reading finished activations"))?;
        let mut serials = Vec::new();
        for row in rows {
            let read = |e| query("reading an activation")(e);
            serials.extend(
                row.try_get::<Option<String>, _>("auth_serial")
                    .map_err(read)?,
            );
            serials.extend(
                row.try_get::<Option<String>, _>("sign_serial")
                    .map_err(read)?,
            );
        }
        serials.extend(
            self.remote_credentials(national_id)
                .await?
                .into_iter()
                .filter(|c| c.status != "disabled")
                .map(|c| c.serial),
        );
        Ok(serials)
    }

    /// Finds an attempt for this application that a crash cut short: completes it when
    /// only the last step is missing, cleans it up otherwise.
    async fn recover(
        &self,
        session: &DeskSession,
        application_id: &str,
        reader: &Arc<Reader>,
    ) -> Result<Option<ActivationOutcome>, EnrolmentError> {
        let rows = sqlx::query(
            "SELECT activation_id, carrier, token_id, state, auth_serial, sign_serial, replaces \
             FROM enrol_activation WHERE application_id = $1 \
             AND state NOT IN ('done', 'cleaned', 'queued')",
        )
        .bind(application_id)
        .fetch_all(self.ctx().db.pool())
        .await
        .map_err(query("reading unfinished activations"))?;
        let application = self.application(application_id).await?;
        for row in rows {
            let read = |e| query("reading an activation")(e);
            let unfinished = Unfinished {
                activation_id: row.try_get("activation_id").map_err(read)?,
                token_id: row.try_get("token_id").map_err(read)?,
                state: row.try_get("state").map_err(read)?,
                auth_serial: row.try_get("auth_serial").map_err(read)?,
                sign_serial: row.try_get("sign_serial").map_err(read)?,
            };
            if row.try_get::<String, _>("carrier").map_err(read)? == "remote" {
                self.recover_remote(session, &application, &unfinished.activation_id)
                    .await?;
                continue;
            }
            let card_finished = {
                let reader = reader.clone();
                let id = CardId::new(unfinished.token_id.as_str())?;
                tokio::task::spawn_blocking(move || reader.reader.card(&id))
                    .await
                    .map_err(blocking_error)?
                    .is_ok_and(|c| c.state == CardState::Personalised)
            };
            if unfinished.state == "written"
                && card_finished
                && unfinished.auth_serial.is_some()
                && unfinished.sign_serial.is_some()
            {
                tracing::info!(activation = %unfinished.activation_id, "completing an interrupted activation");
                return self
                    .complete(session, &unfinished.activation_id, application_id)
                    .await
                    .map(Some);
            }
            tracing::info!(activation = %unfinished.activation_id, state = %unfinished.state, "cleaning up an interrupted activation");
            let mut cleaned = self
                .clean_up(
                    session,
                    &unfinished.activation_id,
                    &application.national_id,
                    reader,
                )
                .await;
            if cleaned.is_ok()
                && let Some(step) = row.try_get::<Option<String>, _>("replaces").map_err(read)?
            {
                cleaned = self.restore_retired(session, &application, &step).await;
            }
            let error = EnrolmentError::Token(format!(
                "interrupted at step `{}` (process stopped or card removed)",
                unfinished.state
            ));
            self.fail(
                session,
                &unfinished.activation_id,
                application_id,
                &error,
                cleaned.is_ok(),
            )
            .await?;
            cleaned?;
        }
        Ok(None)
    }
}
