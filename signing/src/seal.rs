//! Organisation e-seals: an agency's seal key on the signing service's HSM with its
//! qualified seal certificate (EN 319 412-3 legal person, QCP-l-qscd, QcType eseal),
//! used by the agency's own systems to seal documents without a person at hand.
//!
//! - An operator creates a seal (`eid signing seal create`): a P-256 key generated on
//!   the HSM (the soft store is refused: a qualified seal needs a QSCD), a certificate
//!   from the organisation seal CA on the key layer's evidence, the row and its audit
//!   event. A creation that fails part-way revokes what was issued and destroys the key.
//! - Each seal lists the OAuth clients allowed to use it (added and removed by an
//!   operator, audited). A client authenticates with an access token from our identity
//!   provider (client credentials grant, scope `eseal`), checked here as the resource
//!   server, and may seal only with a seal that lists it.
//! - Sealing is the signature API's two steps done in one call with the seal key:
//!   [`Signatures::prepare`] with the seal's certificate, the signed attributes signed on
//!   the HSM, [`Signatures::finalize`] (status from our OCSP responder, time-stamp,
//!   validation data): CAdES or PAdES at level B, T or LT (PAdES also LTA), audited
//!   as every signature is, plus a `seal.apply` event naming the seal and the client.
//! - Withdrawal revokes the certificate (a reason from RFC 5280), destroys the key and
//!   keeps the row.

use std::{fmt, sync::Arc};

use der::{Decode, EncodePem};
use eid_core::{AuditEvent, Outcome, ServiceContext, audit};
use eid_hsm::{KeyLabel, PublicKey, QscdEvidence};
use serde_json::json;
use sqlx::Row;
use x509_cert::Certificate;

use crate::{
    SignatureError, Signatures,
    cades::{DocumentInput, Finished, Format, Level, PrepareRequest, VisiblePlacement},
    csc::{CscError, SigningCertificates, random_hex, token::AccessTokens},
    service_keys::{self, KeyTaskError},
};

/// The scope an access token needs to seal.
pub const SEAL_SCOPE: &str = "eseal";

/// What the service asks the CA for a new seal.
#[derive(Debug)]
pub struct SealOrder {
    /// PKCS#10, signed by the new key on the HSM.
    pub csr: Vec<u8>,
    /// The organisation's registered name.
    pub organisation: String,
    /// Its identifier (EN 319 412-1, `NTRTT-4021877`).
    pub organisation_id: String,
    /// The seal's name (the certificate's commonName).
    pub name: String,
    /// The key and the key layer's evidence that it is on a QSCD.
    pub key_evidence: (PublicKey, QscdEvidence),
    /// The audit actor asking.
    pub requested_by: String,
}

/// An operator's request for a new seal.
#[derive(Clone, Debug)]
pub struct NewSeal {
    /// The organisation's registered name.
    pub organisation: String,
    /// Its identifier (EN 319 412-1, `NTRTT-4021877`).
    pub organisation_id: String,
    /// The seal's name.
    pub name: String,
    /// The OAuth clients allowed to seal with it from the start.
    pub clients: Vec<String>,
}

/// A seal as listed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SealSummary {
    /// Its id (`seal-` and 32 hex digits), in the API's paths.
    pub seal_id: String,
    /// The organisation's registered name.
    pub organisation: String,
    /// Its identifier.
    pub organisation_id: String,
    /// The seal's name.
    pub name: String,
    /// The certificate's serial (hex).
    pub serial: String,
    /// `active` or `withdrawn`.
    pub status: String,
    /// The clients allowed to seal with it.
    pub clients: Vec<String>,
    /// The certificate, PEM.
    pub certificate: String,
}

/// A document to seal.
#[derive(Debug)]
pub struct SealRequest {
    /// The document (a PDF for PAdES), or its digest for CAdES.
    pub document: DocumentInput,
    /// CAdES or PAdES.
    pub format: Format,
    /// B, T, LT or (PAdES) LTA.
    pub level: Level,
    /// For PAdES, where a visible seal goes.
    pub visible: Option<VisiblePlacement>,
}

/// The organisation seals of this service.
#[derive(Clone)]
pub struct Seals {
    inner: Arc<Inner>,
}

struct Inner {
    signatures: Signatures,
    tokens: AccessTokens,
    certificates: Option<Arc<dyn SigningCertificates>>,
}

impl fmt::Debug for Seals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seals")
            .field("tokens", &self.inner.tokens)
            .finish_non_exhaustive()
    }
}

/// The client a token was issued to, as the signature API names its callers.
fn caller(client_id: &str) -> String {
    format!("client:{client_id}")
}

fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> SignatureError {
    move |source| {
        SignatureError::Db(eid_core::DbError::Query {
            operation: what,
            source,
        })
    }
}

fn hsm(e: KeyTaskError) -> SignatureError {
    SignatureError::Unavailable(format!("the HSM: {e}"))
}

fn port(e: CscError) -> SignatureError {
    match e {
        CscError::InvalidRequest(m) => SignatureError::BadRequest(m),
        CscError::AccessDenied(m) => SignatureError::Refused(m),
        other => SignatureError::Unavailable(other.to_string()),
    }
}

impl Seals {
    /// The seals over `signatures` (trust, OCSP, time-stamps), with the CA where this
    /// process may create seals. Access tokens are those of the identity provider the
    /// CSC API trusts, for the same audience.
    pub fn new(
        signatures: &Signatures,
        certificates: Option<Arc<dyn SigningCertificates>>,
    ) -> Self {
        let config = &signatures.context().config.signing.csc;
        Self {
            inner: Arc::new(Inner {
                tokens: AccessTokens::new(
                    &config.issuer,
                    &config.audience,
                    signatures.http().clone(),
                ),
                signatures: signatures.clone(),
                certificates,
            }),
        }
    }

    fn ctx(&self) -> &ServiceContext {
        self.inner.signatures.context()
    }

    /// Why this service cannot create seals, if it cannot: its key store is not an
    /// HSM, or it has no way to the CA.
    pub fn creation_refusal(&self) -> Option<SignatureError> {
        if let Some(refusal) = service_keys::not_an_hsm(&self.ctx().keys, "seal keys") {
            return Some(SignatureError::Refused(refusal));
        }
        self.certificates().err()
    }

    fn certificates(&self) -> Result<&Arc<dyn SigningCertificates>, SignatureError> {
        self.inner.certificates.as_ref().ok_or_else(|| {
            SignatureError::Refused("this process cannot reach the CA to certify keys".into())
        })
    }

    /// Creates a seal: key on the HSM, certificate from the CA, the row with its
    /// clients. Undone (certificate revoked, key destroyed) if any step fails.
    pub async fn create(
        &self,
        actor: &str,
        request: NewSeal,
    ) -> Result<SealSummary, SignatureError> {
        if let Some(refusal) = self.creation_refusal() {
            return Err(refusal);
        }
        let mut clients = request.clients.clone();
        clients.sort();
        clients.dedup();
        if let Some(bad) = clients.iter().find(|c| !valid_client_id(c)) {
            return Err(SignatureError::BadRequest(format!(
                "`{bad}` is not a client id (1 to 128 printable characters, no spaces)"
            )));
        }
        let seal_id = format!(
            "seal-{}",
            random_hex::<16>().map_err(|e| SignatureError::Task(e.to_string()))?
        );
        let label =
            KeyLabel::new(seal_id.clone()).map_err(|e| SignatureError::Task(e.to_string()))?;
        let keys = &self.ctx().keys;
        let key = match service_keys::generate(keys, &label, "CN=eID organisation seal key").await {
            Ok(key) => key,
            Err(e) => {
                // Half a key pair must not stay behind.
                self.discard(actor, &label, None).await;
                return Err(hsm(e));
            }
        };
        let order = SealOrder {
            csr: key.csr,
            organisation: request.organisation.clone(),
            organisation_id: request.organisation_id.clone(),
            name: request.name.clone(),
            key_evidence: (key.public_key, key.evidence),
            requested_by: actor.to_owned(),
        };
        let mut issued_serial = None;
        let created = self
            .certify(actor, &seal_id, &label, &clients, order, &mut issued_serial)
            .await;
        match created {
            Ok(summary) => Ok(summary),
            Err(e) => {
                self.discard(actor, &label, issued_serial.as_deref()).await;
                let event = AuditEvent::new(
                    actor,
                    "seal.create",
                    "organisation",
                    &request.organisation_id,
                )
                .outcome(Outcome::Failure)
                .details(json!({ "seal": seal_id, "error": e.to_string() }));
                audit::record(&self.ctx().db, self.ctx().clock.as_ref(), &event).await?;
                Err(e)
            }
        }
    }

    async fn certify(
        &self,
        actor: &str,
        seal_id: &str,
        label: &KeyLabel,
        clients: &[String],
        order: SealOrder,
        issued_serial: &mut Option<String>,
    ) -> Result<SealSummary, SignatureError> {
        let ctx = self.ctx();
        let (organisation, organisation_id, name) = (
            order.organisation.clone(),
            order.organisation_id.clone(),
            order.name.clone(),
        );
        let der = self.certificates()?.issue_seal(order).await.map_err(port)?;
        let certificate = Certificate::from_der(&der).map_err(|e| {
            SignatureError::Task(format!("the CA's certificate is unreadable: {e}"))
        })?;
        let serial = hex::encode(certificate.tbs_certificate().serial_number().as_bytes());
        *issued_serial = Some(serial.clone());
        service_keys::store_certificate(&ctx.keys, label, &der)
            .await
            .map_err(hsm)?;
        let now = ctx.clock.now().unix_timestamp();
        let mut tx = ctx.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO seal (seal_id, organisation, organisation_id, name, key_label, \
             certificate, serial, status, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $9, $9)",
        )
        .bind(seal_id)
        .bind(&organisation)
        .bind(&organisation_id)
        .bind(&name)
        .bind(label.as_str())
        .bind(&der)
        .bind(&serial)
        .bind(actor)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db("storing a seal"))?;
        for client in clients {
            insert_client(&mut tx, seal_id, client, actor, now).await?;
        }
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(actor, "seal.create", "organisation", &organisation_id).details(
                json!({
                    "seal": seal_id,
                    "name": name,
                    "serial": serial,
                    "key": label.as_str(),
                    "store": ctx.keys.description(),
                    "clients": clients,
                }),
            ),
        )
        .await?;
        tx.commit().await.map_err(db("committing a seal"))?;
        Ok(SealSummary {
            seal_id: seal_id.to_owned(),
            organisation,
            organisation_id,
            name,
            serial,
            status: "active".into(),
            clients: clients.to_vec(),
            certificate: pem(&certificate)?,
        })
    }

    /// Undoes a creation that failed part-way: the certificate revoked, the key
    /// destroyed. Best effort; what could not be undone is logged.
    async fn discard(&self, actor: &str, label: &KeyLabel, serial: Option<&str>) {
        if let (Some(serial), Some(issuer)) = (serial, self.inner.certificates.as_ref())
            && let Err(e) = issuer.revoke(serial, "cessationOfOperation", actor).await
        {
            tracing::error!(%serial, error = %e, "could not revoke the certificate of a failed seal");
        }
        if let Err(e) = service_keys::destroy(&self.ctx().keys, label).await {
            tracing::error!(%label, error = %e, "could not destroy the key of a failed seal");
        }
    }

    /// Every seal, withdrawn ones too, oldest first.
    pub async fn list(&self) -> Result<Vec<SealSummary>, SignatureError> {
        self.summaries(None).await
    }

    /// One seal.
    pub async fn get(&self, seal_id: &str) -> Result<SealSummary, SignatureError> {
        self.summaries(Some(seal_id))
            .await?
            .pop()
            .ok_or_else(|| SignatureError::UnknownSeal(seal_id.to_owned()))
    }

    async fn summaries(&self, only: Option<&str>) -> Result<Vec<SealSummary>, SignatureError> {
        let pool = self.ctx().db.pool();
        let rows = sqlx::query(
            "SELECT seal_id, organisation, organisation_id, name, certificate, serial, status \
             FROM seal WHERE ($1 IS NULL OR seal_id = $1) ORDER BY created_at, seal_id",
        )
        .bind(only)
        .fetch_all(pool)
        .await
        .map_err(db("listing seals"))?;
        let clients = sqlx::query(
            "SELECT seal_id, client_id FROM seal_client WHERE ($1 IS NULL OR seal_id = $1) \
             ORDER BY client_id",
        )
        .bind(only)
        .fetch_all(pool)
        .await
        .map_err(db("listing seal clients"))?;
        let read = |e| db("reading a seal")(e);
        let mut seals = Vec::with_capacity(rows.len());
        for row in rows {
            let seal_id: String = row.try_get("seal_id").map_err(read)?;
            let der: Vec<u8> = row.try_get("certificate").map_err(read)?;
            let certificate = Certificate::from_der(&der)
                .map_err(|e| SignatureError::Task(format!("a stored seal certificate: {e}")))?;
            let mut allowed = Vec::new();
            for client in &clients {
                let of: String = client.try_get("seal_id").map_err(read)?;
                if of == seal_id {
                    allowed.push(client.try_get("client_id").map_err(read)?);
                }
            }
            seals.push(SealSummary {
                organisation: row.try_get("organisation").map_err(read)?,
                organisation_id: row.try_get("organisation_id").map_err(read)?,
                name: row.try_get("name").map_err(read)?,
                serial: row.try_get("serial").map_err(read)?,
                status: row.try_get("status").map_err(read)?,
                clients: allowed,
                certificate: pem(&certificate)?,
                seal_id,
            });
        }
        Ok(seals)
    }

    /// Allows (`allow`) or stops a client sealing with a seal; audited. Allowing an
    /// allowed client, or stopping one that was not, changes nothing and is no error.
    pub async fn set_client(
        &self,
        actor: &str,
        seal_id: &str,
        client_id: &str,
        allow: bool,
    ) -> Result<(), SignatureError> {
        if !valid_client_id(client_id) {
            return Err(SignatureError::BadRequest(format!(
                "`{client_id}` is not a client id (1 to 128 printable characters, no spaces)"
            )));
        }
        let seal = self.get(seal_id).await?;
        if allow && seal.status != "active" {
            return Err(SignatureError::SealWithdrawn(seal_id.to_owned()));
        }
        let ctx = self.ctx();
        let now = ctx.clock.now().unix_timestamp();
        let mut tx = ctx.db.begin_write().await?;
        let changed = if allow {
            if seal.clients.iter().any(|c| c == client_id) {
                false
            } else {
                insert_client(&mut tx, seal_id, client_id, actor, now).await?;
                true
            }
        } else {
            sqlx::query("DELETE FROM seal_client WHERE seal_id = $1 AND client_id = $2")
                .bind(seal_id)
                .bind(client_id)
                .execute(&mut *tx)
                .await
                .map_err(db("removing a seal client"))?
                .rows_affected()
                > 0
        };
        if changed {
            let action = if allow {
                "seal.client.add"
            } else {
                "seal.client.remove"
            };
            audit::append(
                &mut tx,
                ctx.clock.as_ref(),
                &AuditEvent::new(actor, action, "seal", seal_id)
                    .details(json!({ "client": client_id })),
            )
            .await?;
        }
        tx.commit().await.map_err(db("committing a seal client"))?;
        Ok(())
    }

    /// Withdraws a seal for good: no client may use it, its certificate is revoked
    /// for `reason` (an RFC 5280 reason name), its key destroyed. A seal withdrawn
    /// already is withdrawn again harmlessly (a step that failed before is retried).
    pub async fn withdraw(
        &self,
        actor: &str,
        seal_id: &str,
        reason: &str,
    ) -> Result<(), SignatureError> {
        let seal = self.get(seal_id).await?;
        let ctx = self.ctx();
        let now = ctx.clock.now().unix_timestamp();
        let mut tx = ctx.db.begin_write().await?;
        sqlx::query("UPDATE seal SET status = 'withdrawn', updated_at = $1 WHERE seal_id = $2")
            .bind(now)
            .bind(seal_id)
            .execute(&mut *tx)
            .await
            .map_err(db("withdrawing a seal"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(actor, "seal.withdraw", "seal", seal_id).details(json!({
                "serial": seal.serial,
                "reason": reason,
                "was": seal.status,
            })),
        )
        .await?;
        tx.commit().await.map_err(db("committing a withdrawal"))?;
        // Disabled first, so nothing seals while the certificate and key go.
        self.certificates()?
            .revoke(&seal.serial, reason, actor)
            .await
            .map_err(port)?;
        let label =
            KeyLabel::new(seal_id.to_owned()).map_err(|e| SignatureError::Task(e.to_string()))?;
        service_keys::destroy(&ctx.keys, &label)
            .await
            .map_err(hsm)?;
        Ok(())
    }

    /// Checks an access token for sealing: ours, unexpired, with the `eseal` scope.
    /// Returns the client it was issued to.
    pub async fn client(&self, token: &str) -> Result<String, SignatureError> {
        let now = self.ctx().clock.now().unix_timestamp();
        let access = self
            .inner
            .tokens
            .verify(token, now)
            .await
            .map_err(|e| match e {
                CscError::Unavailable(m) => SignatureError::Unavailable(m),
                other => SignatureError::Unauthorised(other.to_string()),
            })?;
        if !access.has_scope(SEAL_SCOPE) {
            return Err(SignatureError::InsufficientScope(format!(
                "the access token lacks the `{SEAL_SCOPE}` scope"
            )));
        }
        Ok(access.client_id)
    }

    /// The seals `client` may use.
    pub async fn seals_of(&self, client: &str) -> Result<Vec<SealSummary>, SignatureError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|seal| seal.status == "active" && seal.clients.iter().any(|c| c == client))
            .collect())
    }

    /// Seals a document with `seal_id` for `client`.
    pub async fn apply(
        &self,
        client: &str,
        seal_id: &str,
        request: SealRequest,
    ) -> Result<Finished, SignatureError> {
        let seal = self.get(seal_id).await?;
        if !seal.clients.iter().any(|c| c == client) {
            let ctx = self.ctx();
            let event = AuditEvent::new(caller(client), "seal.apply", "seal", seal_id)
                .outcome(Outcome::Denied)
                .details(json!({ "reason": "client not allowed" }));
            audit::record(&ctx.db, ctx.clock.as_ref(), &event).await?;
            return Err(SignatureError::Forbidden(format!(
                "client `{client}` may not use seal {seal_id}"
            )));
        }
        if seal.status != "active" {
            return Err(SignatureError::SealWithdrawn(seal_id.to_owned()));
        }
        let signatures = &self.inner.signatures;
        let caller = caller(client);
        let prepared = signatures
            .prepare(
                &caller,
                PrepareRequest {
                    certificate: seal.certificate.into_bytes(),
                    document: request.document,
                    level: request.level,
                    format: request.format,
                    visible: request.visible,
                },
            )
            .await?;
        let label =
            KeyLabel::new(seal_id.to_owned()).map_err(|e| SignatureError::Task(e.to_string()))?;
        let value = service_keys::sign(&self.ctx().keys, &label, prepared.signed_attributes)
            .await
            .map_err(hsm)?;
        let finished = signatures.finalize(&caller, &prepared.id, &value).await?;
        let ctx = self.ctx();
        let event = AuditEvent::new(&caller, "seal.apply", "seal", seal_id).details(json!({
            "signature": finished.id,
            "format": finished.format.name(),
            "level": finished.level.name(),
        }));
        audit::record(&ctx.db, ctx.clock.as_ref(), &event).await?;
        Ok(finished)
    }
}

async fn insert_client(
    tx: &mut eid_core::WriteTx,
    seal_id: &str,
    client_id: &str,
    actor: &str,
    now: i64,
) -> Result<(), SignatureError> {
    sqlx::query(
        "INSERT INTO seal_client (seal_id, client_id, added_by, added_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(seal_id)
    .bind(client_id)
    .bind(actor)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(db("adding a seal client"))?;
    Ok(())
}

/// An OAuth client id as our identity provider makes them, or any reasonable one.
fn valid_client_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

fn pem(certificate: &Certificate) -> Result<String, SignatureError> {
    certificate
        .to_pem(der::pem::LineEnding::LF)
        .map_err(|source| SignatureError::Encoding {
            what: "seal certificate",
            source,
        })
}
