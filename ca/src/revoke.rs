//! Revocation: revoke with an RFC 5280 reason, suspend (certificateHold) and resume.
//! Each change is one transaction holding the new status, its audit event, the
//! revocation epoch, the certificate's new OCSP responses and its issuer's new CRLs; the
//! responder's memory cache is updated before the call returns.

use eid_core::{AuditEvent, audit};
use sqlx::Row;
use time::format_description::well_known::Rfc3339;

use crate::{CaError, CaRole, CertificateAuthority, CertificateSerial, reason::ReasonCode};

/// A change of a certificate's revocation status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusChange {
    /// Revoke for good, for this reason.
    Revoke(ReasonCode),
    /// Put on hold (`certificateHold`), as when a citizen reports a card lost.
    Suspend,
    /// Take off hold.
    Resume,
}

impl StatusChange {
    /// The change named as the registration authority names it: `certificateHold`
    /// (suspend), `resume`, or an RFC 5280 reason name (revoke for that reason).
    pub fn parse(name: &str) -> Result<Self, CaError> {
        match name {
            "certificateHold" => Ok(Self::Suspend),
            "resume" => Ok(Self::Resume),
            reason => ReasonCode::parse(reason)
                .map(Self::Revoke)
                .map_err(|e| CaError::BadRequest(format!("{e}; or certificateHold, resume"))),
        }
    }

    fn action(self) -> &'static str {
        match self {
            Self::Revoke(_) => "certificate.revoke",
            Self::Suspend => "certificate.suspend",
            Self::Resume => "certificate.resume",
        }
    }
}

/// What a status change did.
#[derive(Clone, Debug)]
pub struct StatusChanged {
    /// The certificate.
    pub serial: CertificateSerial,
    /// Its issuing CA.
    pub issuer: CaRole,
    /// The reason now recorded (None after a resume).
    pub reason: Option<ReasonCode>,
}

impl CertificateAuthority {
    /// Applies `change` to the certificate `serial`, as `actor`.
    pub async fn change_status(
        &self,
        serial: &CertificateSerial,
        change: StatusChange,
        actor: &str,
    ) -> Result<StatusChanged, CaError> {
        if let StatusChange::Revoke(reason) = change {
            match reason {
                ReasonCode::CertificateHold => {
                    return Err(CaError::BadRequest(
                        "certificateHold is a suspension: use suspend (and resume to lift it)"
                            .into(),
                    ));
                }
                ReasonCode::RemoveFromCrl => {
                    return Err(CaError::BadRequest(
                        "removeFromCRL is not a revocation reason: use resume".into(),
                    ));
                }
                _ => {}
            }
        }
        let ctx = &self.ctx;
        let hex = serial.to_hex();
        let mut tx = ctx.db.begin_write().await?;
        let row = sqlx::query(
            "SELECT issuer_role, state, revoked_at, revocation_reason FROM certificate WHERE serial = $1",
        )
        .bind(&hex)
        .fetch_optional(&mut *tx)
        .await
        .map_err(CaError::query("reading a certificate"))?
        .ok_or_else(|| CaError::UnknownCertificate(hex.clone()))?;
        let get = |name: &str| -> Result<Option<String>, CaError> {
            row.try_get(name)
                .map_err(CaError::query("reading a certificate"))
        };
        let issuer_name = get("issuer_role")?.unwrap_or_default();
        let issuer = CaRole::parse(&issuer_name).ok_or_else(|| {
            CaError::Task(format!("stored issuer {issuer_name:?} is not a CA role"))
        })?;
        if get("state")?.as_deref() != Some("issued") {
            return Err(CaError::Conflict(format!(
                "certificate {hex} was never issued (its signing did not complete)"
            )));
        }
        let current = get("revocation_reason")?;
        let revoked_at = get("revoked_at")?;
        let on_hold = current.as_deref() == Some(ReasonCode::CertificateHold.name());
        let (new_reason, new_time) = match change {
            StatusChange::Revoke(reason) => {
                if revoked_at.is_some() && !on_hold {
                    return Err(CaError::Conflict(format!(
                        "certificate {hex} is already revoked ({}) since {}",
                        current.unwrap_or_else(|| "unspecified".into()),
                        revoked_at.unwrap_or_default()
                    )));
                }
                (Some(reason), Some(ctx.clock.now()))
            }
            StatusChange::Suspend => {
                if revoked_at.is_some() {
                    return Err(CaError::Conflict(format!(
                        "certificate {hex} is already {}",
                        if on_hold { "suspended" } else { "revoked" }
                    )));
                }
                (Some(ReasonCode::CertificateHold), Some(ctx.clock.now()))
            }
            StatusChange::Resume => {
                if !on_hold {
                    return Err(CaError::Conflict(format!(
                        "certificate {hex} is not suspended{}: only a certificate on hold can be resumed",
                        if revoked_at.is_some() {
                            " but revoked for good"
                        } else {
                            ""
                        }
                    )));
                }
                (None, None)
            }
        };
        let time_text = new_time
            .map(|t| t.format(&Rfc3339))
            .transpose()
            .map_err(|e| CaError::encoding("time", e))?;
        let epoch: i64 = sqlx::query(
            "UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
        )
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get("epoch"))
        .map_err(CaError::query("advancing the revocation epoch"))?;
        // status_epoch puts the change on every delta CRL whose base predates it.
        sqlx::query(
            "UPDATE certificate SET revoked_at = $1, revocation_reason = $2, status_epoch = $3 \
             WHERE serial = $4",
        )
        .bind(&time_text)
        .bind(new_reason.map(ReasonCode::name))
        .bind(epoch)
        .bind(&hex)
        .execute(&mut *tx)
        .await
        .map_err(CaError::query("changing a certificate's status"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(actor, change.action(), "certificate", &hex).details(
                serde_json::json!({
                    "issuer": issuer.name(),
                    "reason": new_reason.map(ReasonCode::name),
                    "previous_reason": current,
                    "at": time_text,
                }),
            ),
        )
        .await?;
        // New OCSP responses and CRL in the same transaction: the status change, its
        // audit record and the revocation data that announce it commit together or
        // not at all.
        let fresh = self
            .reproduce_responses(&mut tx, issuer, serial.as_bytes())
            .await?;
        if ctx.config.ca.crl_full_on_change {
            self.publish_crl_on(&mut tx, issuer).await?;
        }
        self.publish_delta_crl_on(&mut tx, issuer).await?;
        tx.commit()
            .await
            .map_err(CaError::query("committing a status change"))?;
        self.cache_responses(serial.as_bytes(), fresh);
        // This process knows of its own change: no need to drop the whole cache.
        self.responder.epoch_seen(epoch);
        tracing::info!(serial = %hex, change = change.action(), "certificate status changed");
        Ok(StatusChanged {
            serial: serial.clone(),
            issuer,
            reason: new_reason,
        })
    }
}

/// One of a citizen's certificates, as the citizen's self-service shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateSummary {
    /// The serial (hex).
    pub serial: String,
    /// `citizen-auth` or `citizen-sign`.
    pub profile: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// `active`, `suspended` or `revoked`.
    pub status: &'static str,
}

impl CertificateAuthority {
    /// The issued certificates of the citizen with this national identity number,
    /// newest first.
    pub async fn certificates_of(
        &self,
        national_id: &str,
    ) -> Result<Vec<CertificateSummary>, CaError> {
        let rows = sqlx::query(
            "SELECT serial, profile, not_after, revoked_at, revocation_reason FROM certificate \
             WHERE national_id = $1 AND state = 'issued' ORDER BY created_at DESC, serial",
        )
        .bind(national_id)
        .fetch_all(self.ctx.db.pool())
        .await
        .map_err(eid_core::DbError::query("listing a citizen's certificates"))?;
        rows.iter()
            .map(|row| {
                let get = |name: &str| -> Result<Option<String>, CaError> {
                    row.try_get(name).map_err(|e| {
                        CaError::from(eid_core::DbError::query("reading a certificate")(e))
                    })
                };
                let reason = get("revocation_reason")?;
                let status = match (get("revoked_at")?, reason.as_deref()) {
                    (None, _) => "active",
                    (Some(_), Some("certificateHold")) => "suspended",
                    (Some(_), _) => "revoked",
                };
                Ok(CertificateSummary {
                    serial: get("serial")?.unwrap_or_default(),
                    profile: get("profile")?.unwrap_or_default(),
                    not_after: get("not_after")?.unwrap_or_default(),
                    status,
                })
            })
            .collect()
    }
}

/// What revoking a CA certificate did.
#[derive(Clone, Debug)]
pub struct CaRevoked {
    /// The role whose certificate is revoked.
    pub role: CaRole,
    /// Its certificate's serial (hex).
    pub serial: String,
    /// Its issuer, whose new CRL lists it.
    pub issuer: CaRole,
    /// That CRL's number.
    pub crl_number: i64,
}

impl CertificateAuthority {
    /// Revokes the certificate of CA role `role` for `reason`, as `actor`: its issuer's
    /// new full CRL lists it (the root's CRL for an issuing CA), in the same transaction
    /// as the change and its audit event, and from then on the role signs nothing more
    /// (issuance under a revoked issuing CA is refused; another process learns of it
    /// through the revocation epoch). The root cannot be revoked this way: a
    /// self-signed certificate is withdrawn from trust stores instead. A new key and
    /// certificate come from a re-key: by itself for a service role, by
    /// [`Self::rekey`] for an issuing CA.
    pub async fn revoke_ca(
        &self,
        role: CaRole,
        reason: ReasonCode,
        actor: &str,
    ) -> Result<CaRevoked, CaError> {
        let issuer = role.issuer().ok_or_else(|| {
            CaError::BadRequest(format!(
                "{role} is self-signed: no CRL can revoke it; withdraw it from the trust stores and run a new ceremony"
            ))
        })?;
        if matches!(
            reason,
            ReasonCode::CertificateHold | ReasonCode::RemoveFromCrl
        ) {
            return Err(CaError::BadRequest(format!(
                "{} is not a reason to revoke a CA certificate for good",
                reason.name()
            )));
        }
        let ctx = &self.ctx;
        let now = crate::rfc3339(ctx.clock.now())?;
        let mut tx = ctx.db.begin_write().await?;
        let row = sqlx::query(
            "SELECT serial, revoked_at, revocation_reason FROM ca_certificate WHERE role = $1",
        )
        .bind(role.name())
        .fetch_optional(&mut *tx)
        .await
        .map_err(CaError::query("reading a CA certificate"))?
        .ok_or_else(|| CaError::BadRequest(format!("CA role {role} has no certificate")))?;
        let get = |name: &str| -> Result<Option<String>, CaError> {
            row.try_get(name)
                .map_err(CaError::query("reading a CA certificate"))
        };
        let serial = get("serial")?.unwrap_or_default();
        if let Some(at) = get("revoked_at")? {
            return Err(CaError::Conflict(format!(
                "the {role} certificate ({serial}) is already revoked ({}) since {at}",
                get("revocation_reason")?.unwrap_or_default()
            )));
        }
        sqlx::query("UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await
            .map_err(CaError::query("advancing the revocation epoch"))?;
        sqlx::query(
            "UPDATE ca_certificate SET revoked_at = $1, revocation_reason = $2 WHERE role = $3",
        )
        .bind(&now)
        .bind(reason.name())
        .bind(role.name())
        .execute(&mut *tx)
        .await
        .map_err(CaError::query("revoking a CA certificate"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                actor,
                "ca.certificate.revoke",
                "ca_certificate",
                role.name(),
            )
            .details(serde_json::json!({
                "serial": serial,
                "issuer": issuer.name(),
                "reason": reason.name(),
                "at": now,
            })),
        )
        .await?;
        let responder = issuer.ocsp_responder() == Some(role);
        if responder {
            // The pre-produced responses it signed are not served again; the CA signs
            // their successors until the responder has a new key.
            sqlx::query("DELETE FROM ocsp_response")
                .execute(&mut *tx)
                .await
                .map_err(CaError::query("dropping a revoked responder's responses"))?;
        }
        let crl = self.publish_crl_on(&mut tx, issuer).await?;
        tx.commit()
            .await
            .map_err(CaError::query("committing a CA certificate's revocation"))?;
        self.load_out_of_service().await?;
        if responder {
            self.responder.forget_all();
        }
        tracing::warn!(%role, %serial, reason = reason.name(), "CA certificate revoked");
        Ok(CaRevoked {
            role,
            serial,
            issuer,
            crl_number: crl.number,
        })
    }

    /// A new key and certificate for `role`, whose certificate is revoked, as `actor`
    /// (`eid ca rekey`): see the hierarchy's re-key. The certificates the role issued
    /// to other roles (an issuing CA's OCSP responder) are then renewed under the new
    /// key. This process's CA keeps the hierarchy it loaded and refuses to sign as a
    /// replaced role; servers use the new key from their next start.
    pub async fn rekey(&self, role: CaRole, actor: &str) -> Result<Rekeyed, CaError> {
        if role.issuer().is_none() {
            return Err(CaError::BadRequest(format!(
                "{role} is self-signed: a new root is a new trust anchor, made in a ceremony"
            )));
        }
        let ctx = &self.ctx;
        if !crate::hierarchy::revoked_roles(ctx).await?.contains(&role) {
            return Err(CaError::Conflict(format!(
                "the {role} certificate is not revoked: only a revoked role is re-keyed (eid ca revoke-ca first)"
            )));
        }
        let mut loaded = std::collections::BTreeMap::new();
        for each in CaRole::ALL {
            if let Some(authority) = crate::hierarchy::load(ctx, each).await? {
                loaded.insert(each, authority);
            }
        }
        let old = loaded
            .remove(&role)
            .ok_or_else(|| CaError::BadRequest(format!("CA role {role} has no certificate")))?;
        let replaces =
            CertificateSerial::from_certificate(old.certificate.tbs_certificate().serial_number());
        let made = crate::hierarchy::rekey(ctx, old, &loaded, actor).await?;
        // Renews what the old key issued (and anything else that fell due).
        crate::Hierarchy::ensure(ctx).await?;
        self.load_out_of_service().await?;
        Ok(Rekeyed {
            role,
            serial: CertificateSerial::from_certificate(
                made.certificate.tbs_certificate().serial_number(),
            )
            .to_hex(),
            replaces: replaces.to_hex(),
            key_label: made.key_label,
        })
    }

    /// Why this process may not sign as `role` now, if it may not: the role's
    /// certificate is revoked, or was replaced since this process loaded it.
    pub fn out_of_service(&self, role: CaRole) -> Option<String> {
        match self.out_of_service.read() {
            Ok(roles) => roles.get(&role).cloned(),
            Err(_) => Some("the CA's role status lock is poisoned".into()),
        }
    }

    /// Refuses to sign as `role` while [`Self::out_of_service`] says so.
    pub(crate) fn check_in_service(&self, role: CaRole) -> Result<(), CaError> {
        match self.out_of_service(role) {
            Some(why) => Err(CaError::Refused(why)),
            None => Ok(()),
        }
    }

    /// Reads which roles this process may no longer sign as.
    pub(crate) async fn load_out_of_service(&self) -> Result<(), CaError> {
        let rows = sqlx::query("SELECT role, serial, revoked_at FROM ca_certificate")
            .fetch_all(self.ctx.db.pool())
            .await
            .map_err(CaError::query("reading the CA certificates' status"))?;
        let mut roles = std::collections::BTreeMap::new();
        for row in rows {
            let get = |name: &str| -> Result<Option<String>, CaError> {
                row.try_get(name)
                    .map_err(CaError::query("reading the CA certificates' status"))
            };
            let Some(role) = get("role")?.as_deref().and_then(CaRole::parse) else {
                continue;
            };
            let serial = get("serial")?.unwrap_or_default();
            let loaded = self.hierarchy.get(role).map(|a| {
                CertificateSerial::from_certificate(a.certificate.tbs_certificate().serial_number())
                    .to_hex()
            })?;
            let why = if get("revoked_at")?.is_some() {
                let next = if role.renews_automatically() {
                    "the next process that opens the CA gives it a new key and certificate"
                } else {
                    "`eid ca rekey` gives it a new key and certificate"
                };
                Some(format!(
                    "the {role} certificate ({serial}) is revoked: it signs nothing more; {next}"
                ))
            } else if !serial.eq_ignore_ascii_case(&loaded) {
                Some(format!(
                    "the {role} certificate was replaced ({serial}) since this process started: restart it to use the new key"
                ))
            } else {
                None
            };
            if let Some(why) = why {
                roles.insert(role, why);
            }
        }
        *self
            .out_of_service
            .write()
            .map_err(|_| CaError::Task("the CA's role status lock is poisoned".into()))? = roles;
        Ok(())
    }
}

/// What re-keying a CA role did.
#[derive(Clone, Debug)]
pub struct Rekeyed {
    /// The role.
    pub role: CaRole,
    /// Its new certificate's serial (hex).
    pub serial: String,
    /// The revoked certificate it replaces (hex).
    pub replaces: String,
    /// The new key's label in the key layer.
    pub key_label: String,
}
