//! The issuance pipeline, as boulder runs it: validate the request against the profile,
//! plan the TBS certificate, lint it, store the plan with its audit event, sign through
//! the key layer, check the result is exactly the plan, store it with its audit event.

use der::Decode;
use eid_core::{AuditEvent, Outcome, audit, group_commit::Written};
use eid_hsm::{PublicKey, QscdEvidence};
use sqlx::Row;
use x509_cert::certificate::TbsCertificate;

use crate::{
    CaError, CertificateAuthority, CertificateSerial, csr,
    hierarchy::prepare,
    names::{NationalId, Organisation, PersonName},
    profile::{self, Profile},
    rfc3339,
};

/// What the registration authority asks the CA to certify.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    /// The profile.
    pub profile: Profile,
    /// The PKCS#10 request, PEM or DER: the key and its proof of possession.
    pub csr: Vec<u8>,
    /// Whom the certificate is about.
    pub holder: Holder,
    /// Who asks (an audit actor such as `service:enrolment` or `operator:NAME`).
    pub requested_by: String,
    /// What the key layer says about the key's device, with the key it describes.
    /// Required for the qualified profiles.
    pub key_evidence: Option<KeyEvidence>,
}

/// Whom a certificate is about.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Holder {
    /// A citizen (the citizen profiles).
    Citizen {
        /// The national identity number.
        national_id: NationalId,
        /// The names.
        name: PersonName,
    },
    /// An organisation (the seal profile).
    Organisation(Organisation),
}

impl Holder {
    /// The holder's identifier: the citizen's national identity number or the
    /// organisation's identifier; the CA's records are kept under it.
    pub fn identifier(&self) -> &str {
        match self {
            Self::Citizen { national_id, .. } => national_id.as_str(),
            Self::Organisation(organisation) => organisation.identifier(),
        }
    }

    /// What the holder is, as audit events name it.
    fn kind(&self) -> &'static str {
        match self {
            Self::Citizen { .. } => "citizen",
            Self::Organisation(_) => "organisation",
        }
    }
}

/// The key layer's evidence about a key: where it lives, and which key it is.
#[derive(Clone, Debug)]
pub struct KeyEvidence {
    /// The key the evidence describes.
    pub public_key: PublicKey,
    /// The device and attributes.
    pub qscd: QscdEvidence,
}

/// An issued certificate.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    /// Its serial number.
    pub serial: CertificateSerial,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The profile it was issued under.
    pub profile: Profile,
    /// Issued for an earlier, identical request, and handed out again now.
    pub repeated: bool,
}

impl CertificateAuthority {
    /// Issues a certificate. Refusals (bad request, policy) are audited as denied and
    /// store nothing else.
    pub async fn issue(&self, request: IssueRequest) -> Result<IssuedCertificate, CaError> {
        match self.issue_inner(&request).await {
            Err(e @ (CaError::BadRequest(_) | CaError::Refused(_))) => {
                let event = AuditEvent::new(
                    &request.requested_by,
                    "certificate.issue",
                    request.holder.kind(),
                    request.holder.identifier(),
                )
                .outcome(Outcome::Denied)
                .details(serde_json::json!({
                    "profile": request.profile.name(),
                    "reason": e.to_string(),
                }));
                audit::record(&self.ctx.db, self.ctx.clock.as_ref(), &event).await?;
                Err(e)
            }
            other => other,
        }
    }

    async fn issue_inner(&self, request: &IssueRequest) -> Result<IssuedCertificate, CaError> {
        let ctx = &self.ctx;
        let profile = request.profile;
        // 1. The request: proof of possession and key policy.
        let verified = csr::verify(&csr::decode(&request.csr)?)?;
        if profile.needs_qscd() {
            require_qscd(profile, request.key_evidence.as_ref(), &verified.public_key)?;
        }
        let certified = sqlx::query(
            "SELECT serial, profile, subject, national_id, state, der, revoked_at \
             FROM certificate WHERE spki_sha256 = $1 AND state <> 'failed'",
        )
        .bind(&verified.key_fingerprint)
        .fetch_optional(ctx.db.pool())
        .await
        .map_err(CaError::query("checking for a certified key"))?;

        // 2. The plan and its lint, before the CA key is touched.
        self.check_in_service(profile.issuer())?;
        let issuer = self.hierarchy.get(profile.issuer())?;
        let config = &ctx.config.ca;
        let planned = profile::plan(
            profile,
            &config.country,
            &request.holder,
            &verified.public_key,
            issuer,
            &config.public_url,
            &config.pds_url,
        )?;
        let subject_name = planned.subject.clone();
        if let Some(certified) = certified {
            return self
                .issued_before(request, &certified, &subject_name.to_string())
                .await;
        }
        let serial = CertificateSerial::random()?;
        let now = ctx.clock.now();
        let not_before = now - time::Duration::minutes(5);
        let not_after = (now + time::Duration::days(i64::from(config.citizen_validity_days)))
            .min(issuer.not_after());
        let prepared = prepare(
            planned,
            &serial,
            (not_before, not_after),
            verified.public_key.clone(),
            &issuer.signer,
        )?;
        profile::lint(
            profile,
            &prepared.tbs,
            issuer,
            &verified.public_key,
            &subject_name,
        )?;
        let tbs = TbsCertificate::from_der(&prepared.tbs)
            .map_err(|e| CaError::encoding("planned TBS certificate", e))?;
        let subject_text = tbs.subject().to_string();

        // 3. The plan is stored, with its audit event, before the CA key is used (in a
        //    group commit with other requests' writes; returns once it is committed).
        let plan_event = AuditEvent::new(
            &request.requested_by,
            "certificate.plan",
            "certificate",
            serial.to_hex(),
        )
        .details(serde_json::json!({
            "profile": profile.name(),
            "issuer": issuer.role.name(),
            "subject": subject_text,
            "holder": request.holder.identifier(),
            "key": verified.key_type,
            "key_sha256": verified.key_fingerprint,
            "qscd": request.key_evidence.as_ref().map(|e| e.qscd.token_class.name()),
            "not_after": rfc3339(not_after)?,
        }));
        let row = PlannedRow {
            serial: serial.to_hex(),
            issuer: issuer.role.name(),
            profile: profile.name(),
            subject: subject_text,
            national_id: request.holder.identifier().to_owned(),
            key_sha256: verified.key_fingerprint.clone(),
            not_before: rfc3339(not_before)?,
            not_after: rfc3339(not_after)?,
            tbs: prepared.tbs.clone(),
            requested_by: request.requested_by.clone(),
            created_at: rfc3339(now)?,
        };
        ctx.db
            .group_commit(&ctx.clock)
            .write_without_savepoint(move |conn| {
                Box::pin(async move {
                    // A refusal leaves the transaction sound: it is the value, not a
                    // failure of the write (which would roll back the whole group).
                    Ok::<_, CaError>(match row.insert(conn).await? {
                        Ok(()) => Written {
                            value: Ok(()),
                            audit: vec![plan_event],
                        },
                        Err(refusal) => Written {
                            value: Err(refusal),
                            audit: Vec::new(),
                        },
                    })
                })
            })
            .await??;

        // 4. Sign, and check the certificate is exactly what was planned.
        let signer = issuer.signer.clone();
        let signed = issuer
            .signer
            .run_signing(move || prepared.sign(&signer))
            .await
            .map_err(|e| CaError::Task(e.to_string()))?;
        let (state, outcome, result) = match signed {
            Ok(der) => ("issued", Outcome::Success, Ok(der)),
            Err(e) => ("failed", Outcome::Failure, Err(e)),
        };

        // 5. Store the outcome with its audit event.
        let mut details = serde_json::json!({ "profile": profile.name() });
        if let Err(e) = &result {
            details["error"] = serde_json::Value::String(e.to_string());
        }
        let issue_event = AuditEvent::new(
            &request.requested_by,
            "certificate.issue",
            "certificate",
            serial.to_hex(),
        )
        .outcome(outcome)
        .details(details);
        let der = result.as_ref().ok().cloned();
        let serial_hex = serial.to_hex();
        ctx.db
            .group_commit(&ctx.clock)
            .write_without_savepoint(move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE certificate SET state = $1, der = $2 WHERE serial = $3 AND state = 'planned'",
                    )
                    .bind(state)
                    .bind(der)
                    .bind(serial_hex)
                    .execute(&mut *conn)
                    .await
                    .map_err(CaError::query("storing the issued certificate"))?;
                    Ok::<_, CaError>(Written {
                        value: (),
                        audit: vec![issue_event],
                    })
                })
            })
            .await?;
        let der = result?;
        tracing::info!(serial = %serial, profile = profile.name(), "issued certificate");
        Ok(IssuedCertificate {
            serial,
            der,
            profile,
            repeated: false,
        })
    }
}

/// The planned certificate's row, owned so a group commit can write it.
struct PlannedRow {
    serial: String,
    issuer: &'static str,
    profile: &'static str,
    subject: String,
    national_id: String,
    key_sha256: String,
    not_before: String,
    not_after: String,
    tbs: Vec<u8>,
    requested_by: String,
    created_at: String,
}

impl PlannedRow {
    /// Inserts the row; `Ok(Err(refusal))` for a key that is already certified, found
    /// without failing the statement (ON CONFLICT DO NOTHING), so the insert needs no
    /// savepoint of its own.
    async fn insert(self, conn: &mut sqlx::AnyConnection) -> Result<Result<(), CaError>, CaError> {
        let inserted = sqlx::query(
            "INSERT INTO certificate (serial, issuer_role, profile, subject, national_id, \
             spki_sha256, not_before, not_after, state, tbs, requested_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'planned', $9, $10, $11) \
             ON CONFLICT DO NOTHING",
        )
        .bind(self.serial)
        .bind(self.issuer)
        .bind(self.profile)
        .bind(self.subject)
        .bind(self.national_id)
        .bind(self.key_sha256)
        .bind(self.not_before)
        .bind(self.not_after)
        .bind(self.tbs)
        .bind(self.requested_by)
        .bind(self.created_at)
        .execute(&mut *conn)
        .await
        .map_err(CaError::query("storing the planned certificate"))?;
        // Two requests for one key at once: the unique index decides. (The other
        // unique column, the serial, has 64 random bits and more.)
        if inserted.rows_affected() == 0 {
            return Ok(Err(CaError::Refused(
                "this public key is already certified; every certificate needs a fresh key".into(),
            )));
        }
        Ok(Ok(()))
    }
}

impl CertificateAuthority {
    /// A request for a key that is certified already. The key is certified once: the
    /// same certificate comes back when the request is the one it answered (the same
    /// profile, holder and subject; issued and not revoked or suspended), which is how
    /// a registration authority retries after the answer was lost on the link (audited
    /// as a repeated issue); anything else is refused.
    async fn issued_before(
        &self,
        request: &IssueRequest,
        certified: &sqlx::any::AnyRow,
        subject: &str,
    ) -> Result<IssuedCertificate, CaError> {
        let read = |e| CaError::query("reading a certified key")(e);
        let text = |column: &str| -> Result<String, CaError> {
            certified.try_get::<String, _>(column).map_err(read)
        };
        let der: Option<Vec<u8>> = certified.try_get("der").map_err(read)?;
        let revoked_at: Option<String> = certified.try_get("revoked_at").map_err(read)?;
        let same = text("state")? == "issued"
            && revoked_at.is_none()
            && text("profile")? == request.profile.name()
            && text("national_id")? == request.holder.identifier()
            && text("subject")? == subject;
        let (true, Some(der)) = (same, der) else {
            return Err(CaError::Refused(
                "this public key is already certified; every certificate needs a fresh key".into(),
            ));
        };
        let serial = text("serial")?;
        let event = AuditEvent::new(
            &request.requested_by,
            "certificate.issue",
            "certificate",
            &serial,
        )
        .details(serde_json::json!({ "profile": request.profile.name(), "repeated": true }));
        audit::record(&self.ctx.db, self.ctx.clock.as_ref(), &event).await?;
        Ok(IssuedCertificate {
            serial: CertificateSerial::parse(&serial)?,
            der,
            profile: request.profile,
            repeated: true,
        })
    }
}

/// A qualified signature certificate needs the key layer's word that this very key is
/// on a qualified signature creation device.
fn require_qscd(
    profile: Profile,
    evidence: Option<&KeyEvidence>,
    key: &spki::SubjectPublicKeyInfoOwned,
) -> Result<(), CaError> {
    let evidence = evidence.ok_or_else(|| {
        CaError::Refused(format!(
            "the {} profile certifies only keys on a qualified signature creation device, \
             and no evidence from the key layer came with this request",
            profile.name()
        ))
    })?;
    if evidence.public_key.spki() != key {
        return Err(CaError::Refused(
            "the key evidence describes a different key than the request's".into(),
        ));
    }
    if !evidence.qscd.is_qscd() {
        return Err(CaError::Refused(format!(
            "the key is not on a qualified signature creation device: {} token, role {:?}, \
             attributes {:?}",
            evidence.qscd.token_class, evidence.qscd.role, evidence.qscd.attributes
        )));
    }
    Ok(())
}
