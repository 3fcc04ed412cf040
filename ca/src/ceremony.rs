//! Key ceremonies: the CA certificates a reviewed file lists, created with fresh keys
//! on the configured token, audited, and written up in a transcript.
//!
//! The file is an ordinary eid configuration (the `[keys]` it names hold the new keys,
//! the database records the certificates) with a `[ceremony]` section: its name, at
//! least two witnesses, where the transcript goes, and one `[[ceremony.certificate]]`
//! per CA role (key type, common name, validity, policies). The transcript records the
//! file's SHA-256, so anyone can check that the file reviewed is the file that ran.

use std::{collections::BTreeMap, time::Duration};

use der::Encode;
use eid_core::{AuditEvent, CeremonyConfig, ServiceContext, audit};
use eid_hsm::{KeyLabel, KeySigner, KeySpec};
use sha2::{Digest, Sha256};

use crate::{
    CaError, CaRole,
    hierarchy::{Authority, RoleOverride, create, load_existing},
    rfc3339,
};

/// What a ceremony did, as written to its transcript.
#[derive(Debug, serde::Serialize)]
pub struct Transcript {
    /// The ceremony's name.
    pub ceremony: String,
    /// Who witnessed it.
    pub witnesses: Vec<String>,
    /// SHA-256 of the ceremony file that ran.
    pub file_sha256: String,
    /// Where the keys were generated.
    pub key_store: String,
    /// When it began (RFC 3339).
    pub started_at: String,
    /// When it ended.
    pub finished_at: String,
    /// Each certificate created, issuers first.
    pub certificates: Vec<TranscriptCertificate>,
    /// The audit entries the ceremony wrote, and the checkpoint that seals them.
    pub audit: TranscriptAudit,
}

/// One certificate of a transcript.
#[derive(Debug, serde::Serialize)]
pub struct TranscriptCertificate {
    /// The CA role.
    pub role: String,
    /// The key's label on the token.
    pub key_label: String,
    /// The key type.
    pub key_spec: String,
    /// The key's attributes as the token reports them.
    pub key_attributes: eid_hsm::KeyAttributes,
    /// SHA-256 of the key's SubjectPublicKeyInfo.
    pub public_key_sha256: String,
    /// The certificate's serial number.
    pub serial: String,
    /// Subject and issuer names.
    pub subject: String,
    /// The issuer's name.
    pub issuer: String,
    /// Validity (RFC 3339).
    pub not_before: String,
    /// Validity end.
    pub not_after: String,
    /// SHA-256 of the certificate's DER.
    pub fingerprint_sha256: String,
    /// The certificate, PEM.
    pub pem: String,
}

/// The audit trail of a ceremony.
#[derive(Debug, serde::Serialize)]
pub struct TranscriptAudit {
    /// The first and last entries it wrote.
    pub entries: (i64, i64),
    /// The signed checkpoint covering them.
    pub checkpoint: i64,
    /// The chain's head hash at that checkpoint.
    pub head_hash: String,
}

/// Runs the ceremony `ceremony` describes. Refuses, before creating anything, if a
/// listed role or its key already exists, if an issuer is neither listed earlier nor
/// already present, or if the transcript file exists.
pub async fn run(
    ctx: &ServiceContext,
    ceremony: &CeremonyConfig,
    checkpoint_signer: &KeySigner,
) -> Result<Transcript, CaError> {
    let started = ctx.clock.now();
    if ceremony.transcript.exists() {
        return Err(CaError::Conflict(format!(
            "the transcript {} exists: a ceremony never overwrites one",
            ceremony.transcript.display()
        )));
    }
    let actor = format!(
        "ceremony:{} (witnesses: {})",
        ceremony.name,
        ceremony.witnesses.join(", ")
    );
    // Check everything first: nothing is created unless the whole ceremony can run.
    let mut plan = Vec::new();
    let mut listed = Vec::new();
    for certificate in &ceremony.certificates {
        let role = CaRole::parse(&certificate.role).ok_or_else(|| {
            CaError::BadRequest(format!("ceremony: unknown CA role `{}`", certificate.role))
        })?;
        if listed.contains(&role) {
            return Err(CaError::BadRequest(format!(
                "ceremony: role {role} is listed twice"
            )));
        }
        if load_existing(ctx, role).await? {
            return Err(CaError::Conflict(format!(
                "ceremony: the {role} certificate already exists; a ceremony only creates"
            )));
        }
        let label = KeyLabel::new(role.key_label())?;
        let keys = ctx.keys.clone();
        let exists = tokio::task::spawn_blocking(move || keys.find(&label))
            .await
            .map_err(|e| CaError::Task(e.to_string()))??;
        if exists.is_some() {
            return Err(CaError::Conflict(format!(
                "ceremony: key `{}` already exists in {}; a ceremony generates fresh keys",
                role.key_label(),
                ctx.keys.description()
            )));
        }
        if let Some(issuer) = role.issuer()
            && !listed.contains(&issuer)
            && !load_existing(ctx, issuer).await?
        {
            return Err(CaError::BadRequest(format!(
                "ceremony: {role} is issued by {issuer}, which is neither listed before it nor present"
            )));
        }
        let policies = certificate
            .policies
            .iter()
            .map(|p| {
                p.parse::<der::asn1::ObjectIdentifier>()
                    .map_err(|e| CaError::BadRequest(format!("ceremony: policy `{p}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !policies.is_empty() && !role.is_issuing_ca() {
            return Err(CaError::BadRequest(format!(
                "ceremony: policies apply to issuing CAs; {role} takes none"
            )));
        }
        plan.push((
            role,
            RoleOverride {
                common_name: certificate.common_name.clone(),
                lifetime: Duration::from_secs(u64::from(certificate.validity_days) * 86_400),
                key_spec: KeySpec::parse(&certificate.key)?,
                policies,
                actor: actor.clone(),
            },
        ));
        listed.push(role);
    }

    let first = audit::record(
        &ctx.db,
        ctx.clock.as_ref(),
        &AuditEvent::new(&actor, "ca.ceremony.start", "ceremony", &ceremony.name).details(
            serde_json::json!({
                "file_sha256": ceremony.file_sha256,
                "witnesses": ceremony.witnesses,
                "roles": listed.iter().map(|r| r.name()).collect::<Vec<_>>(),
                "key_store": ctx.keys.description(),
            }),
        ),
    )
    .await?;
    let mut authorities: BTreeMap<CaRole, Authority> = BTreeMap::new();
    for role in CaRole::ALL {
        if let Some(authority) = crate::hierarchy::load(ctx, role).await? {
            authorities.insert(role, authority);
        }
    }
    let mut certificates = Vec::new();
    for (role, chosen) in &plan {
        let authority = create(ctx, *role, &authorities, Some(chosen)).await?;
        certificates.push(describe(ctx, &authority).await?);
        authorities.insert(*role, authority);
    }
    let last = audit::record(
        &ctx.db,
        ctx.clock.as_ref(),
        &AuditEvent::new(&actor, "ca.ceremony.finish", "ceremony", &ceremony.name)
            .details(serde_json::json!({ "certificates": certificates.len() })),
    )
    .await?;
    let checkpoint = audit::checkpoint(&ctx.db, ctx.clock.as_ref(), checkpoint_signer)
        .await?
        .ok_or_else(|| {
            CaError::Task("the audit checkpoint after the ceremony was not made".into())
        })?;
    let transcript = Transcript {
        ceremony: ceremony.name.clone(),
        witnesses: ceremony.witnesses.clone(),
        file_sha256: ceremony.file_sha256.clone(),
        key_store: ctx.keys.description(),
        started_at: rfc3339(started)?,
        finished_at: rfc3339(ctx.clock.now())?,
        certificates,
        audit: TranscriptAudit {
            entries: (first.seq, last.seq),
            checkpoint: checkpoint.upto_seq,
            head_hash: checkpoint.head_hash,
        },
    };
    let text = serde_json::to_string_pretty(&transcript)
        .map_err(|e| CaError::encoding("transcript", e))?;
    std::fs::write(&ceremony.transcript, text).map_err(|e| {
        CaError::Task(format!(
            "the ceremony completed but its transcript could not be written to {}: {e}; \
             the audit log holds entries #{}-#{}",
            ceremony.transcript.display(),
            first.seq,
            last.seq
        ))
    })?;
    Ok(transcript)
}

async fn describe(
    ctx: &ServiceContext,
    authority: &Authority,
) -> Result<TranscriptCertificate, CaError> {
    let tbs = authority.certificate.tbs_certificate();
    let label = KeyLabel::new(authority.key_label.clone())?;
    let keys = ctx.keys.clone();
    let info = tokio::task::spawn_blocking(move || keys.find(&label))
        .await
        .map_err(|e| CaError::Task(e.to_string()))??
        .ok_or_else(|| CaError::Task(format!("key of {} vanished", authority.role)))?;
    let spki = tbs
        .subject_public_key_info()
        .to_der()
        .map_err(|e| CaError::encoding("public key", e))?;
    let time = |t: &x509_cert::time::Time| {
        let at: std::time::SystemTime = (*t).into();
        rfc3339(time::OffsetDateTime::from(at))
    };
    Ok(TranscriptCertificate {
        role: authority.role.name().to_owned(),
        key_label: authority.key_label.clone(),
        key_spec: info.spec.name().to_owned(),
        key_attributes: info.attributes,
        public_key_sha256: hex::encode(Sha256::digest(&spki)),
        serial: crate::CertificateSerial::from_certificate(tbs.serial_number()).to_hex(),
        subject: tbs.subject().to_string(),
        issuer: tbs.issuer().to_string(),
        not_before: time(&tbs.validity().not_before)?,
        not_after: time(&tbs.validity().not_after)?,
        fingerprint_sha256: hex::encode(Sha256::digest(&authority.der)),
        pem: der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &authority.der)
            .map_err(|e| CaError::encoding("certificate", e))?,
    })
}
