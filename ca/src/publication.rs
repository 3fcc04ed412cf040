//! Publishing revocation data: CRLs per issuing CA, regenerated on every status change
//! and on schedule, each checked to list every revoked, unexpired certificate before it
//! is published; and the server's maintenance loop.

use std::{collections::BTreeSet, time::Duration};

use der::Decode;
use sqlx::Row;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use x509_cert::crl::CertificateList;

use crate::{
    CaError, CaRole, CertificateAuthority, CertificateSerial,
    crl::{self, CrlContent, CrlScope, RevokedEntry},
    parse_rfc3339,
    reason::ReasonCode,
    rfc3339,
};

/// A published CRL.
#[derive(Clone, Debug)]
pub struct PublishedCrl {
    /// Its cRLNumber.
    pub number: i64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
    /// The DER CertificateList.
    pub der: Vec<u8>,
}

impl CertificateAuthority {
    /// Builds, checks, stores and returns a new full CRL for `issuer`, audited as
    /// `actor`'s doing (a revocation's CRL is covered by the revocation's own event).
    pub async fn publish_crl(&self, issuer: CaRole, actor: &str) -> Result<PublishedCrl, CaError> {
        // One writer at a time: the number must grow by one.
        let mut tx = self.ctx.db.begin_write().await?;
        let published = self.publish_crl_on(&mut tx, issuer).await?;
        eid_core::audit::append(
            &mut tx,
            self.ctx.clock.as_ref(),
            &eid_core::AuditEvent::new(
                actor,
                "crl.publish",
                "crl",
                format!("{issuer}/{}", published.number),
            )
            .details(serde_json::json!({
                "issuer": issuer.name(),
                "number": published.number,
                "next_update": rfc3339(published.next_update)?,
            })),
        )
        .await?;
        tx.commit()
            .await
            .map_err(CaError::query("committing a CRL"))?;
        Ok(published)
    }

    /// [`Self::publish_crl`] on `conn`, inside the caller's transaction.
    pub(crate) async fn publish_crl_on(
        &self,
        conn: &mut sqlx::AnyConnection,
        issuer: CaRole,
    ) -> Result<PublishedCrl, CaError> {
        if !issuer.is_issuing_ca() {
            return Err(CaError::BadRequest(format!("{issuer} publishes no CRL")));
        }
        let ctx = &self.ctx;
        let now = ctx.clock.now();
        let next_update =
            now + time::Duration::hours(i64::from(ctx.config.ca.crl_next_update_hours));
        let rows = sqlx::query(
            "SELECT serial, revoked_at, revocation_reason FROM certificate \
             WHERE issuer_role = $1 AND state = 'issued' AND revoked_at IS NOT NULL AND not_after > $2",
        )
        .bind(issuer.name())
        .bind(rfc3339(now)?)
        .fetch_all(&mut *conn)
        .await
        .map_err(CaError::query("listing revoked certificates"))?;
        let mut entries = Vec::with_capacity(rows.len());
        let mut expected = BTreeSet::new();
        for row in &rows {
            let get = |name: &str| -> Result<Option<String>, CaError> {
                row.try_get(name)
                    .map_err(CaError::query("listing revoked certificates"))
            };
            let serial = CertificateSerial::parse(&get("serial")?.unwrap_or_default())?;
            let reason = get("revocation_reason")?
                .map(|r| ReasonCode::parse(&r))
                .transpose()
                .map_err(|e| CaError::encoding("stored revocation reason", e))?;
            expected.insert(serial.clone());
            entries.push(RevokedEntry {
                serial: serial.to_x509()?,
                revoked_at: parse_rfc3339(&get("revoked_at")?.unwrap_or_default())?,
                reason,
            });
        }
        let last: Option<i64> =
            sqlx::query("SELECT MAX(crl_number) AS last FROM crl WHERE issuer_role = $1")
                .bind(issuer.name())
                .fetch_one(&mut *conn)
                .await
                .and_then(|row| row.try_get("last"))
                .map_err(CaError::query("reading the last CRL number"))?;
        let number = last.unwrap_or(0) + 1;
        let authority = self.hierarchy.get(issuer)?.clone();
        let crl_number = u64::try_from(number).map_err(|e| CaError::encoding("CRL number", e))?;
        let der = tokio::task::spawn_blocking(move || {
            crl::build_crl(
                &authority.certificate,
                &authority.signer,
                &CrlContent {
                    crl_number,
                    this_update: now,
                    next_update,
                    entries: &entries,
                    scope: CrlScope::Full,
                },
            )
        })
        .await
        .map_err(|e| CaError::Task(e.to_string()))?
        .map_err(|e| CaError::Task(format!("building the CRL: {e}")))?;
        // The self-check: the signed CRL lists exactly the revoked, unexpired certificates.
        let listed: BTreeSet<CertificateSerial> = CertificateList::from_der(&der)
            .map_err(|e| CaError::Mismatch(format!("the CRL does not parse: {e}")))?
            .tbs_cert_list
            .revoked_certificates
            .unwrap_or_default()
            .iter()
            .map(|entry| CertificateSerial::from_certificate(&entry.serial_number))
            .collect();
        if listed != expected {
            return Err(CaError::Mismatch(format!(
                "CRL {number} of {issuer} lists {} certificates, the database has {} revoked",
                listed.len(),
                expected.len()
            )));
        }
        sqlx::query(
            "INSERT INTO crl (issuer_role, crl_number, delta_base, this_update, next_update, der) \
             VALUES ($1, $2, NULL, $3, $4, $5)",
        )
        .bind(issuer.name())
        .bind(number)
        .bind(rfc3339(now)?)
        .bind(rfc3339(next_update)?)
        .bind(&der)
        .execute(&mut *conn)
        .await
        .map_err(CaError::query("storing a CRL"))?;
        tracing::info!(
            issuer = issuer.name(),
            number,
            revoked = expected.len(),
            "published CRL"
        );
        Ok(PublishedCrl {
            number,
            this_update: now,
            next_update,
            der,
        })
    }

    /// The latest full CRL of `issuer`, publishing a first one if there is none.
    pub async fn current_crl(&self, issuer: CaRole) -> Result<PublishedCrl, CaError> {
        let row = sqlx::query(
            "SELECT crl_number, this_update, next_update, der FROM crl \
             WHERE issuer_role = $1 AND delta_base IS NULL ORDER BY crl_number DESC LIMIT 1",
        )
        .bind(issuer.name())
        .fetch_optional(self.ctx.db.pool())
        .await
        .map_err(CaError::query("reading the current CRL"))?;
        match row {
            Some(row) => {
                let get = |name: &str| -> Result<String, CaError> {
                    row.try_get(name)
                        .map_err(CaError::query("reading the current CRL"))
                };
                Ok(PublishedCrl {
                    number: row
                        .try_get("crl_number")
                        .map_err(CaError::query("reading the current CRL"))?,
                    this_update: parse_rfc3339(&get("this_update")?)?,
                    next_update: parse_rfc3339(&get("next_update")?)?,
                    der: row
                        .try_get("der")
                        .map_err(CaError::query("reading the current CRL"))?,
                })
            }
            None => self.publish_crl(issuer, "system").await,
        }
    }

    /// Keeps revocation data current while serving: notices status changes made by
    /// other processes (every 250 ms) and republishes CRLs that have used up half of
    /// their validity (checked every minute).
    pub async fn maintain(self, shutdown: CancellationToken) {
        let mut sync = tokio::time::interval(Duration::from_millis(250));
        let mut crls = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = sync.tick() => {
                    if let Err(e) = self.sync_revocations().await {
                        tracing::warn!(error = %e, "checking the revocation epoch failed");
                    }
                }
                _ = crls.tick() => {
                    for issuer in [CaRole::CitizenAuthenticationCa, CaRole::CitizenSigningCa] {
                        if let Err(e) = self.refresh_crl(issuer).await {
                            tracing::warn!(issuer = issuer.name(), error = %e, "CRL refresh failed");
                        }
                    }
                }
            }
        }
    }

    async fn refresh_crl(&self, issuer: CaRole) -> Result<(), CaError> {
        let current = self.current_crl(issuer).await?;
        let half = (current.next_update - current.this_update) / 2;
        if self.ctx.clock.now() >= current.this_update + half {
            self.publish_crl(issuer, "system").await?;
        }
        Ok(())
    }
}
