//! The gateway's side of a session and the simulated phone: starting, confirming with
//! a PIN, cancelling, timing out, unblocking with the PUK.

use base64ct::{Base64, Encoding};
use eid_core::{AuditEvent, Outcome, audit};
use eid_hsm::{
    CITIZEN_AUTHENTICATION_LABEL, CITIZEN_SIGNING_LABEL, CardId, HsmError, KeyLabel, KeySpec,
    PinKind, SecretString,
    mobile::{
        CertificateRequest, Operation, ResultCode, SessionState, SessionStatus, SignatureValue,
        StartRequest, protocol::signature_algorithm_name,
    },
};

use crate::{Session, SimGateway, SimGatewayError, TRIES, random_hex};

/// A fault a tester makes the gateway commit on a waiting session, to see a relying
/// party cope (the simulator's test hooks: a real gateway has none).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "fault")]
pub enum Fault {
    /// `OK` with the SIM's certificate and a signature that does not verify.
    BadSignature,
    /// `OK` with the certificate of the SIM of `other_phone` (another person).
    OtherCertificate {
        /// The phone whose SIM's certificate is sent.
        other_phone: String,
    },
    /// `SIGNATURE_HASH_MISMATCH`.
    HashMismatch,
    /// `PHONE_ABSENT`.
    PhoneAbsent,
    /// `DELIVERY_ERROR`.
    DeliveryError,
    /// The gateway stops answering this session's polls (each hangs past the caller's
    /// timeout).
    Silence,
}

/// A DER `ECDSA-Sig-Value` of random positive 32-byte integers: well formed, and
/// verifying under no key.
fn random_ecdsa_signature() -> Result<Vec<u8>, SimGatewayError> {
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    getrandom::fill(&mut r).map_err(|e| SimGatewayError::Internal(e.to_string()))?;
    getrandom::fill(&mut s).map_err(|e| SimGatewayError::Internal(e.to_string()))?;
    // Top bit clear (positive, no leading zero needed), second bit set (minimal).
    r[0] = (r[0] & 0x3f) | 0x40;
    s[0] = (s[0] & 0x3f) | 0x40;
    let mut der = vec![0x30, 0x44, 0x02, 0x20];
    der.extend_from_slice(&r);
    der.extend_from_slice(&[0x02, 0x20]);
    der.extend_from_slice(&s);
    Ok(der)
}

/// A prompt waiting on a phone, as the phone shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PendingPrompt {
    /// The session.
    pub session_id: String,
    /// Authentication (PIN1) or signature (PIN2).
    pub operation: Operation,
    /// Who asks.
    pub relying_party_name: String,
    /// The 4 digits the citizen compares with the relying party's screen.
    pub verification_code: String,
    /// The text on the phone: the display text, then "Enter?" or "Sign?".
    pub prompt: String,
    /// Which PIN confirms it.
    pub pin: String,
    /// Wrong tries left for that PIN.
    pub tries_left: i64,
}

/// What a confirmation did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Confirmation {
    /// The SIM signed; the session is complete with OK.
    Signed,
    /// The PIN was wrong; the phone asks again.
    WrongPin {
        /// Tries left before the PIN blocks.
        tries_left: i64,
    },
    /// The PIN is blocked (now or before); the session is complete with SIM_ERROR.
    Blocked,
}

/// What the SIM returned: the signature, its key's type, the key's certificate.
struct SimSignature {
    value: Vec<u8>,
    spec: KeySpec,
    certificate: Option<Vec<u8>>,
}

fn pin_of(operation: Operation) -> PinKind {
    match operation {
        Operation::Authentication => PinKind::Pin1,
        Operation::Signature => PinKind::Pin2,
    }
}

impl SimGateway {
    /// Starts a session (`POST /authentication` or `/signature`): checks the request,
    /// then delivers it to the phone, or completes it at once when there is no such
    /// mobile-ID client (NOT_MID_CLIENT) or the PIN it needs is blocked (SIM_ERROR).
    pub async fn start(
        &self,
        operation: Operation,
        request: StartRequest,
    ) -> Result<String, SimGatewayError> {
        let checked = request
            .validate()
            .map_err(|e| SimGatewayError::BadRequest(e.to_string()))?;
        self.expire()?;
        let sim = self
            .inner
            .registry
            .find(&request.phone_number)
            .await?
            .filter(|sim| sim.national_id == request.national_identity_number);
        let early = match &sim {
            None => Some(ResultCode::NotMidClient),
            Some(sim) if sim.blocked(PinKind::Puk) || sim.blocked(pin_of(operation)) => {
                Some(ResultCode::SimError)
            }
            Some(_) => None,
        };
        let id = format!(
            "{}-{}-{}-{}-{}",
            random_hex(4)?,
            random_hex(2)?,
            random_hex(2)?,
            random_hex(2)?,
            random_hex(6)?
        );
        let (changed, _) = tokio::sync::watch::channel(());
        let session = Session {
            operation,
            phone_number: request.phone_number.clone(),
            card: sim.map(|s| CardId::new(s.card_id)).transpose()?,
            relying_party_name: request.relying_party_name.clone(),
            display_text: request.display_text.clone(),
            hash: checked.hash,
            hash_type: request.hash_type,
            code: checked.verification_code,
            started: tokio::time::Instant::now(),
            status: SessionStatus {
                state: SessionState::Running,
                result: None,
                signature: None,
                cert: None,
            },
            changed,
            silent: false,
        };
        self.sessions()?.insert(id.clone(), session);
        tracing::info!(session = %id, %operation, phone = %request.phone_number, "session started");
        if let Some(result) = early {
            self.complete(&id, result, None, None).await?;
        } else {
            let gateway = self.clone();
            let timeout_id = id.clone();
            let wait = self.inner.options.answer_timeout;
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                if let Err(e) = gateway
                    .complete(&timeout_id, ResultCode::Timeout, None, None)
                    .await
                {
                    tracing::warn!(session = %timeout_id, error = %e, "timing out a session");
                }
            });
        }
        Ok(id)
    }

    /// Completes a running session (a completed one stays as it is) and records it.
    async fn complete(
        &self,
        id: &str,
        result: ResultCode,
        signature: Option<SignatureValue>,
        cert: Option<String>,
    ) -> Result<(), SimGatewayError> {
        let (operation, phone) = {
            let mut sessions = self.sessions()?;
            let Some(session) = sessions.get_mut(id) else {
                return Ok(());
            };
            if session.status.state == SessionState::Complete {
                return Ok(());
            }
            session.status = SessionStatus {
                state: SessionState::Complete,
                result: Some(result),
                signature,
                cert,
            };
            session.changed.send_replace(());
            (session.operation, session.phone_number.clone())
        };
        let outcome = if result == ResultCode::Ok {
            Outcome::Success
        } else {
            Outcome::Denied
        };
        let ctx = &self.inner.ctx;
        audit::record(
            &ctx.db,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                "service:sim-gateway",
                "sim_gateway.session.complete",
                "session",
                id,
            )
            .outcome(outcome)
            .details(serde_json::json!({
                "operation": operation.path(),
                "phone_number": phone,
                "result": result.name(),
            })),
        )
        .await?;
        tracing::info!(session = %id, %result, "session complete");
        Ok(())
    }

    /// The prompts waiting on a phone.
    pub async fn pending(&self, phone_number: &str) -> Result<Vec<PendingPrompt>, SimGatewayError> {
        let sim = self.inner.registry.find(phone_number).await?;
        let sessions = self.sessions()?;
        let mut pending: Vec<(tokio::time::Instant, PendingPrompt)> = sessions
            .iter()
            .filter(|(_, s)| s.phone_number == phone_number && s.card.is_some())
            .filter(|(_, s)| s.status.state == SessionState::Running)
            .map(|(id, s)| {
                let kind = pin_of(s.operation);
                let prompt = match &s.display_text {
                    Some(text) if !text.is_empty() => format!("{text} {}", s.operation.prompt()),
                    _ => s.operation.prompt().to_owned(),
                };
                (
                    s.started,
                    PendingPrompt {
                        session_id: id.clone(),
                        operation: s.operation,
                        relying_party_name: s.relying_party_name.clone(),
                        verification_code: s.code.to_string(),
                        prompt,
                        pin: kind.to_string(),
                        tries_left: sim.as_ref().map_or(TRIES, |sim| TRIES - sim.failures(kind)),
                    },
                )
            })
            .collect();
        pending.sort_by_key(|(started, _)| *started);
        Ok(pending.into_iter().map(|(_, p)| p).collect())
    }

    fn running(
        &self,
        phone_number: &str,
        id: &str,
    ) -> Result<(Operation, CardId, Vec<u8>, eid_hsm::mobile::HashType), SimGatewayError> {
        let sessions = self.sessions()?;
        let session = sessions
            .get(id)
            .filter(|s| s.phone_number == phone_number)
            .ok_or_else(|| {
                SimGatewayError::NotFound(format!("no session {id:?} on phone {phone_number}"))
            })?;
        if session.status.state != SessionState::Running {
            return Err(SimGatewayError::Conflict(format!(
                "session {id:?} is already complete ({})",
                session.status.result.map_or("?", |r| r.name())
            )));
        }
        let card = session
            .card
            .clone()
            .ok_or_else(|| SimGatewayError::NotFound(format!("no SIM for phone {phone_number}")))?;
        Ok((
            session.operation,
            card,
            session.hash.clone(),
            session.hash_type,
        ))
    }

    /// Makes the gateway commit `fault` on a waiting session (testing relying parties).
    pub async fn fault(
        &self,
        phone_number: &str,
        id: &str,
        fault: Fault,
    ) -> Result<(), SimGatewayError> {
        let (operation, card, _, hash_type) = self.running(phone_number, id)?;
        let certificate_of = |card: CardId| {
            let gateway = self.clone();
            async move {
                let label = KeyLabel::new(match operation {
                    Operation::Authentication => CITIZEN_AUTHENTICATION_LABEL,
                    Operation::Signature => CITIZEN_SIGNING_LABEL,
                })?;
                let kind = pin_of(operation);
                let _turn = gateway.inner.sim_turn.lock().await;
                let reader = gateway.clone();
                tokio::task::spawn_blocking(move || {
                    Ok::<_, SimGatewayError>(reader.inner.reader.certificate(&card, kind, &label)?)
                })
                .await
                .map_err(|e| SimGatewayError::Internal(e.to_string()))?
            }
        };
        let forged = |certificate: Option<Vec<u8>>| -> Result<_, SimGatewayError> {
            Ok((
                Some(SignatureValue {
                    value: Base64::encode_string(&random_ecdsa_signature()?),
                    algorithm: signature_algorithm_name(true, hash_type),
                }),
                certificate.map(|c| Base64::encode_string(&c)),
            ))
        };
        tracing::warn!(session = %id, ?fault, "a tester made the gateway misbehave");
        match fault {
            Fault::BadSignature => {
                let (signature, cert) = forged(certificate_of(card).await?)?;
                self.complete(id, ResultCode::Ok, signature, cert).await
            }
            Fault::OtherCertificate { other_phone } => {
                let other = self
                    .inner
                    .registry
                    .find(&other_phone)
                    .await?
                    .ok_or_else(|| {
                        SimGatewayError::NotFound(format!("no SIM for phone {other_phone}"))
                    })?;
                let (signature, cert) = forged(certificate_of(CardId::new(other.card_id)?).await?)?;
                self.complete(id, ResultCode::Ok, signature, cert).await
            }
            Fault::HashMismatch => {
                self.complete(id, ResultCode::SignatureHashMismatch, None, None)
                    .await
            }
            Fault::PhoneAbsent => self.complete(id, ResultCode::PhoneAbsent, None, None).await,
            Fault::DeliveryError => {
                self.complete(id, ResultCode::DeliveryError, None, None)
                    .await
            }
            Fault::Silence => {
                if let Some(session) = self.sessions()?.get_mut(id) {
                    session.silent = true;
                }
                Ok(())
            }
        }
    }

    /// The citizen cancels on the phone: USER_CANCELLED.
    pub async fn cancel(&self, phone_number: &str, id: &str) -> Result<(), SimGatewayError> {
        self.running(phone_number, id)?;
        self.complete(id, ResultCode::UserCancelled, None, None)
            .await
    }

    /// The citizen enters the PIN on the phone: PIN1 for authentication, PIN2 for a
    /// signature. A right PIN signs the hash on the SIM; a wrong one is counted, and
    /// the third blocks the PIN and ends the session with SIM_ERROR.
    pub async fn confirm(
        &self,
        phone_number: &str,
        id: &str,
        pin: SecretString,
    ) -> Result<Confirmation, SimGatewayError> {
        let (operation, card, hash, hash_type) = self.running(phone_number, id)?;
        let kind = pin_of(operation);
        let registry = &self.inner.registry;
        let _turn = self.inner.sim_turn.lock().await;
        let sim = registry
            .find(phone_number)
            .await?
            .ok_or_else(|| SimGatewayError::NotFound(format!("no SIM for phone {phone_number}")))?;
        if sim.blocked(kind) || sim.blocked(PinKind::Puk) {
            self.complete(id, ResultCode::SimError, None, None).await?;
            return Ok(Confirmation::Blocked);
        }
        let gateway = self.clone();
        let signed =
            tokio::task::spawn_blocking(move || gateway.sign_on_sim(&card, kind, &pin, &hash))
                .await
                .map_err(|e| SimGatewayError::Internal(e.to_string()))?;
        match signed {
            Ok(SimSignature {
                value: signature,
                spec,
                certificate,
            }) => {
                registry.right(phone_number, &[kind], None).await?;
                let ec = !matches!(spec, KeySpec::Rsa3072);
                self.complete(
                    id,
                    ResultCode::Ok,
                    Some(SignatureValue {
                        value: Base64::encode_string(&signature),
                        algorithm: signature_algorithm_name(ec, hash_type),
                    }),
                    certificate.map(|c| Base64::encode_string(&c)),
                )
                .await?;
                Ok(Confirmation::Signed)
            }
            Err(SimGatewayError::Hsm(HsmError::WrongPin { .. } | HsmError::PinLocked { .. })) => {
                let sim = registry.wrong(phone_number, kind).await?;
                if sim.blocked(kind) {
                    self.complete(id, ResultCode::SimError, None, None).await?;
                    Ok(Confirmation::Blocked)
                } else {
                    Ok(Confirmation::WrongPin {
                        tries_left: TRIES - sim.failures(kind),
                    })
                }
            }
            Err(SimGatewayError::Hsm(HsmError::PinPolicy { .. })) => {
                // A PIN the SIM could never have (too short, letters): counted like
                // any wrong PIN, as a real SIM would.
                let sim = registry.wrong(phone_number, kind).await?;
                if sim.blocked(kind) {
                    self.complete(id, ResultCode::SimError, None, None).await?;
                    Ok(Confirmation::Blocked)
                } else {
                    Ok(Confirmation::WrongPin {
                        tries_left: TRIES - sim.failures(kind),
                    })
                }
            }
            Err(e) => {
                self.complete(id, ResultCode::SimError, None, None).await?;
                Err(e)
            }
        }
    }

    /// The signing certificate on the SIM of the request's phone number, if that SIM
    /// is the national identity number's and not blocked for good (MID REST
    /// `POST /certificate`; no PIN: certificates are public on the SIM).
    pub async fn signing_certificate(
        &self,
        request: &CertificateRequest,
    ) -> Result<Option<Vec<u8>>, SimGatewayError> {
        request
            .validate()
            .map_err(|e| SimGatewayError::BadRequest(e.to_string()))?;
        let Some(sim) = self
            .inner
            .registry
            .find(&request.phone_number)
            .await?
            .filter(|sim| sim.national_id == request.national_identity_number)
            .filter(|sim| !sim.blocked(PinKind::Puk))
        else {
            return Ok(None);
        };
        let card = CardId::new(sim.card_id)?;
        let gateway = self.clone();
        let _turn = self.inner.sim_turn.lock().await;
        tokio::task::spawn_blocking(move || {
            let label = KeyLabel::new(CITIZEN_SIGNING_LABEL)?;
            Ok::<_, SimGatewayError>(gateway.inner.reader.certificate(
                &card,
                PinKind::Pin2,
                &label,
            )?)
        })
        .await
        .map_err(|e| SimGatewayError::Internal(format!("reading the SIM: {e}")))?
    }

    /// Signs `hash` with the SIM's key for `kind`; returns the signature, the key's
    /// type and its certificate. Blocks.
    fn sign_on_sim(
        &self,
        card: &CardId,
        kind: PinKind,
        pin: &SecretString,
        hash: &[u8],
    ) -> Result<SimSignature, SimGatewayError> {
        let label = KeyLabel::new(match kind {
            PinKind::Pin1 => CITIZEN_AUTHENTICATION_LABEL,
            _ => CITIZEN_SIGNING_LABEL,
        })?;
        let store = self.inner.reader.store(card, kind, pin)?;
        let mut signer = store.signer(&label, None)?;
        if kind == PinKind::Pin2 {
            signer = signer.with_pin(pin.clone());
        }
        let signature = signer.sign_digest(hash)?;
        let certificate = store.certificate(&label)?;
        Ok(SimSignature {
            value: signature.into_bytes(),
            spec: signer.info().spec,
            certificate,
        })
    }

    /// Unblocks PIN1 or PIN2 with the PUK, setting `new_pin`. Three wrong PUKs block
    /// the SIM for good (as on a real SIM: a new SIM and certificates).
    pub async fn unblock(
        &self,
        phone_number: &str,
        kind: PinKind,
        puk: SecretString,
        new_pin: SecretString,
    ) -> Result<(), SimGatewayError> {
        if kind == PinKind::Puk {
            return Err(SimGatewayError::BadRequest(
                "the PUK unblocks PIN1 or PIN2".into(),
            ));
        }
        let registry = &self.inner.registry;
        let _turn = self.inner.sim_turn.lock().await;
        let sim = registry
            .find(phone_number)
            .await?
            .ok_or_else(|| SimGatewayError::NotFound(format!("no SIM for phone {phone_number}")))?;
        if sim.blocked(PinKind::Puk) {
            return Err(SimGatewayError::Conflict(
                "the PUK is blocked: this SIM can no longer be used; a new SIM is needed".into(),
            ));
        }
        let card = CardId::new(sim.card_id)?;
        let gateway = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            gateway.inner.reader.unblock(&card, kind, &puk, &new_pin)
        })
        .await
        .map_err(|e| SimGatewayError::Internal(e.to_string()))?;
        match result {
            Ok(()) => {
                registry
                    .right(phone_number, &[kind, PinKind::Puk], Some(kind))
                    .await
            }
            Err(HsmError::WrongPuk { .. } | HsmError::WrongTransportCode { .. }) => {
                let sim = registry.wrong(phone_number, PinKind::Puk).await?;
                Err(SimGatewayError::Conflict(if sim.blocked(PinKind::Puk) {
                    "wrong PUK, three times: the PUK is now blocked and the SIM can no longer be used".into()
                } else {
                    format!(
                        "wrong PUK: {} tries left",
                        TRIES - sim.failures(PinKind::Puk)
                    )
                }))
            }
            Err(e @ HsmError::PinPolicy { .. }) => Err(SimGatewayError::BadRequest(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }
}
