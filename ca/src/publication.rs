//! Publishing revocation data: full and delta CRLs per issuing CA and the root's CRL,
//! regenerated on status changes and on schedule, each checked to list exactly what it
//! should before it is published; and the server's maintenance loop.

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

/// Which kind of CRL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrlKind {
    /// A complete CRL (`<issuer>.crl`).
    Full,
    /// A delta CRL against the latest full CRL (`<issuer>-delta.crl`).
    Delta,
}

impl CrlKind {
    /// The file name under `/crl/`.
    pub fn file_name(self, issuer: CaRole) -> String {
        match self {
            Self::Full => format!("{issuer}.crl"),
            Self::Delta => format!("{issuer}-delta.crl"),
        }
    }

    /// Parses [`Self::file_name`].
    pub fn parse_file_name(file: &str) -> Option<(CaRole, Self)> {
        let stem = file.strip_suffix(".crl")?;
        match stem.strip_suffix("-delta") {
            Some(issuer) => CaRole::parse(issuer)
                .filter(|role| role.is_issuing_ca())
                .map(|role| (role, Self::Delta)),
            None => CaRole::parse(stem)
                .filter(|role| role.publishes_crl())
                .map(|role| (role, Self::Full)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Delta => "delta",
        }
    }
}

/// The newest full CRL: number and the revocation epoch it was built at.
struct Base {
    number: i64,
    epoch: i64,
}

impl CertificateAuthority {
    /// Builds, checks, stores and returns a new CRL of `kind` for `issuer`, audited as
    /// `actor`'s doing (a revocation's CRLs are covered by the revocation's own event).
    pub async fn publish_crl(
        &self,
        issuer: CaRole,
        kind: CrlKind,
        actor: &str,
    ) -> Result<PublishedCrl, CaError> {
        // One writer at a time: the number must grow by one.
        let mut tx = self.ctx.db.begin_write().await?;
        let published = match kind {
            CrlKind::Full => self.publish_crl_on(&mut tx, issuer).await?,
            CrlKind::Delta => self.publish_delta_crl_on(&mut tx, issuer).await?,
        };
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
                "kind": kind.name(),
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

    /// A new full CRL of `issuer` on `conn`, inside the caller's transaction.
    pub(crate) async fn publish_crl_on(
        &self,
        conn: &mut sqlx::AnyConnection,
        issuer: CaRole,
    ) -> Result<PublishedCrl, CaError> {
        if !issuer.publishes_crl() {
            return Err(CaError::BadRequest(format!("{issuer} publishes no CRL")));
        }
        let now = self.ctx.clock.now();
        // The epoch before the list: a change committed in between is then both on
        // this CRL and (harmlessly) on the next delta, never on neither.
        let epoch = current_epoch(conn).await?;
        let rows = sqlx::query(
            "SELECT serial, revoked_at, revocation_reason FROM certificate \
             WHERE issuer_role = $1 AND state = 'issued' AND revoked_at IS NOT NULL AND not_after > $2",
        )
        .bind(issuer.name())
        .bind(rfc3339(now)?)
        .fetch_all(&mut *conn)
        .await
        .map_err(CaError::query("listing revoked certificates"))?;
        // The CA certificates it issued and revoked (the root's CRL lists issuing CAs),
        // current or replaced by a re-key.
        let authorities = sqlx::query(
            "SELECT serial, revoked_at, revocation_reason FROM ca_certificate \
             WHERE issuer_role = $1 AND role <> $1 AND revoked_at IS NOT NULL AND not_after > $2 \
             UNION ALL SELECT serial, revoked_at, revocation_reason FROM ca_certificate_retired \
             WHERE issuer_role = $1 AND not_after > $2",
        )
        .bind(issuer.name())
        .bind(rfc3339(now)?)
        .fetch_all(&mut *conn)
        .await
        .map_err(CaError::query("listing revoked CA certificates"))?;
        let entries = rows
            .iter()
            .chain(&authorities)
            .map(|row| revoked_entry(row, now))
            .collect::<Result<Vec<_>, _>>()?;
        let hours = self.ctx.config.ca.crl_next_update_hours;
        self.sign_and_store(conn, issuer, CrlScope::Full, epoch, entries, hours)
            .await
    }

    /// A new delta CRL of `issuer` on `conn`: every certificate whose status changed
    /// after the newest full CRL was built, revoked ones with their reason and resumed
    /// ones as removeFromCRL (RFC 5280 §5.3.1). Publishes a full CRL first if there is
    /// none.
    pub(crate) async fn publish_delta_crl_on(
        &self,
        conn: &mut sqlx::AnyConnection,
        issuer: CaRole,
    ) -> Result<PublishedCrl, CaError> {
        if !issuer.is_issuing_ca() {
            return Err(CaError::BadRequest(format!(
                "{issuer} publishes no delta CRL"
            )));
        }
        let base = match newest_base(conn, issuer).await? {
            Some(base) => base,
            None => {
                self.publish_crl_on(conn, issuer).await?;
                newest_base(conn, issuer).await?.ok_or_else(|| {
                    CaError::Task(format!("the full CRL of {issuer} was not stored"))
                })?
            }
        };
        let now = self.ctx.clock.now();
        let epoch = current_epoch(conn).await?;
        let rows = sqlx::query(
            "SELECT serial, revoked_at, revocation_reason FROM certificate \
             WHERE issuer_role = $1 AND state = 'issued' AND status_epoch > $2 AND not_after > $3",
        )
        .bind(issuer.name())
        .bind(base.epoch)
        .bind(rfc3339(now)?)
        .fetch_all(&mut *conn)
        .await
        .map_err(CaError::query("listing changed certificates"))?;
        let entries = rows
            .iter()
            .map(|row| revoked_entry(row, now))
            .collect::<Result<Vec<_>, _>>()?;
        let base_number =
            u64::try_from(base.number).map_err(|e| CaError::encoding("CRL number", e))?;
        let hours = self.ctx.config.ca.delta_crl_next_update_hours;
        self.sign_and_store(
            conn,
            issuer,
            CrlScope::DeltaOf(base_number),
            epoch,
            entries,
            hours,
        )
        .await
    }

    /// Numbers, signs, self-checks and stores a CRL listing exactly `entries`.
    async fn sign_and_store(
        &self,
        conn: &mut sqlx::AnyConnection,
        issuer: CaRole,
        scope: CrlScope,
        epoch: i64,
        entries: Vec<RevokedEntry>,
        validity_hours: u32,
    ) -> Result<PublishedCrl, CaError> {
        let now = self.ctx.clock.now();
        let next_update = now + time::Duration::hours(i64::from(validity_hours));
        let expected: BTreeSet<CertificateSerial> = entries
            .iter()
            .map(|entry| CertificateSerial::from_certificate(&entry.serial))
            .collect();
        // Full and delta CRLs of one issuer share one number sequence (RFC 5280 §5.2.3).
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
                    scope,
                },
            )
        })
        .await
        .map_err(|e| CaError::Task(e.to_string()))?
        .map_err(|e| CaError::Task(format!("building the CRL: {e}")))?;
        // The self-check: the signed CRL lists exactly the certificates it should (for
        // a full CRL, every revoked, unexpired one).
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
                "CRL {number} of {issuer} lists {} certificates, the database has {}",
                listed.len(),
                expected.len()
            )));
        }
        let delta_base = match scope {
            CrlScope::Full => None,
            CrlScope::DeltaOf(base) => {
                Some(i64::try_from(base).map_err(|e| CaError::encoding("CRL number", e))?)
            }
        };
        sqlx::query(
            "INSERT INTO crl (issuer_role, crl_number, delta_base, this_update, next_update, der, epoch) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(issuer.name())
        .bind(number)
        .bind(delta_base)
        .bind(rfc3339(now)?)
        .bind(rfc3339(next_update)?)
        .bind(&der)
        .bind(epoch)
        .execute(&mut *conn)
        .await
        .map_err(CaError::query("storing a CRL"))?;
        tracing::info!(
            issuer = issuer.name(),
            number,
            delta_base,
            entries = expected.len(),
            "published CRL"
        );
        Ok(PublishedCrl {
            number,
            this_update: now,
            next_update,
            der,
        })
    }

    /// The CRL of `kind` currently published for `issuer`, publishing one if there is
    /// none (or, for a delta, none against the newest full CRL).
    pub async fn current_crl(
        &self,
        issuer: CaRole,
        kind: CrlKind,
    ) -> Result<PublishedCrl, CaError> {
        let sql = match kind {
            CrlKind::Full => {
                "SELECT crl_number, this_update, next_update, der FROM crl \
                 WHERE issuer_role = $1 AND delta_base IS NULL ORDER BY crl_number DESC LIMIT 1"
            }
            CrlKind::Delta => {
                "SELECT crl_number, this_update, next_update, der FROM crl \
                 WHERE issuer_role = $1 AND delta_base IS NOT NULL AND delta_base = \
                 (SELECT MAX(crl_number) FROM crl WHERE issuer_role = $1 AND delta_base IS NULL) \
                 ORDER BY crl_number DESC LIMIT 1"
            }
        };
        let row = sqlx::query(sql)
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
            None => self.publish_crl(issuer, kind, "system").await,
        }
    }

    /// Keeps revocation data current while serving: notices status changes made by
    /// other processes (every 250 ms), republishes CRLs that have used up half of
    /// their validity (checked every minute), and warns of service certificates due for
    /// renewal (every six hours; the next start renews them).
    pub async fn maintain(self, shutdown: CancellationToken) {
        let mut sync = tokio::time::interval(Duration::from_millis(250));
        let mut crls = tokio::time::interval(Duration::from_secs(60));
        let mut renewals = tokio::time::interval(Duration::from_secs(6 * 60 * 60));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = renewals.tick() => {
                    // A running server keeps the certificates it started with; the
                    // next start renews those that fell due (Hierarchy::ensure).
                    for authority in self.hierarchy.due_for_renewal(self.ctx.clock.now()) {
                        tracing::warn!(
                            role = authority.role.name(),
                            not_after = %authority.not_after(),
                            "certificate due for renewal: restart the service to renew it"
                        );
                    }
                }
                _ = sync.tick() => {
                    if let Err(e) = self.sync_revocations().await {
                        tracing::warn!(error = %e, "checking the revocation epoch failed");
                    }
                }
                _ = crls.tick() => {
                    for issuer in CaRole::CRL_ISSUERS {
                        if let Err(e) = self.refresh_crl(issuer, CrlKind::Full).await {
                            tracing::warn!(issuer = issuer.name(), error = %e, "CRL refresh failed");
                        }
                        if issuer.is_issuing_ca()
                            && let Err(e) = self.refresh_crl(issuer, CrlKind::Delta).await
                        {
                            tracing::warn!(issuer = issuer.name(), error = %e, "delta CRL refresh failed");
                        }
                    }
                }
            }
        }
    }

    async fn refresh_crl(&self, issuer: CaRole, kind: CrlKind) -> Result<(), CaError> {
        let current = self.current_crl(issuer, kind).await?;
        let half = (current.next_update - current.this_update) / 2;
        if self.ctx.clock.now() >= current.this_update + half {
            self.publish_crl(issuer, kind, "system").await?;
        }
        Ok(())
    }
}

/// The revocation epoch: the count of status changes so far.
async fn current_epoch(conn: &mut sqlx::AnyConnection) -> Result<i64, CaError> {
    sqlx::query("SELECT epoch FROM revocation_epoch WHERE id = 1")
        .fetch_one(&mut *conn)
        .await
        .and_then(|row| row.try_get("epoch"))
        .map_err(CaError::query("reading the revocation epoch"))
}

async fn newest_base(
    conn: &mut sqlx::AnyConnection,
    issuer: CaRole,
) -> Result<Option<Base>, CaError> {
    let row = sqlx::query(
        "SELECT crl_number, epoch FROM crl WHERE issuer_role = $1 AND delta_base IS NULL \
         ORDER BY crl_number DESC LIMIT 1",
    )
    .bind(issuer.name())
    .fetch_optional(&mut *conn)
    .await
    .map_err(CaError::query("reading the newest full CRL"))?;
    row.map(|row| {
        Ok(Base {
            number: row
                .try_get("crl_number")
                .map_err(CaError::query("reading the newest full CRL"))?,
            // Built before epochs were recorded: every later change counts.
            epoch: row
                .try_get::<Option<i64>, _>("epoch")
                .map_err(CaError::query("reading the newest full CRL"))?
                .unwrap_or(0),
        })
    })
    .transpose()
}

/// A CRL entry from a certificate row: revoked with its reason, or (no longer revoked:
/// taken off hold since the base CRL) removeFromCRL as of `now`.
fn revoked_entry(row: &sqlx::any::AnyRow, now: OffsetDateTime) -> Result<RevokedEntry, CaError> {
    let get = |name: &str| -> Result<Option<String>, CaError> {
        row.try_get(name)
            .map_err(CaError::query("listing revoked certificates"))
    };
    let serial = CertificateSerial::parse(&get("serial")?.unwrap_or_default())?;
    let (revoked_at, reason) = match get("revoked_at")? {
        Some(at) => (
            parse_rfc3339(&at)?,
            get("revocation_reason")?
                .map(|r| ReasonCode::parse(&r))
                .transpose()
                .map_err(|e| CaError::encoding("stored revocation reason", e))?,
        ),
        None => (now, Some(ReasonCode::RemoveFromCrl)),
    };
    Ok(RevokedEntry {
        serial: serial.to_x509()?,
        revoked_at,
        reason,
    })
}
