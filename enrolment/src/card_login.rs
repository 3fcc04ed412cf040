//! Staff log in at the desk with their own ID card, as citizens log in at the idp.
//!
//! Three steps, because the card is asked for in a TLS handshake on a listener of its
//! own (`enrolment.card_url`) while the desk's pages and cookies live on the desk's
//! origin:
//! 1. the desk page starts a login at a registered desk (`POST /desk/login/card`): a
//!    random login id bound to that desk, valid for five minutes, and a redirect to
//!    the card listener;
//! 2. the card listener (`GET /desk-card/{id}`) takes the browser's client
//!    certificate, whose chain the handshake verified against the citizen
//!    authentication CA; the [`StaffCards`] port reads the holder and asks the CA's OCSP
//!    responder (fails closed). The national identity number must be a staff member's
//!    (`eid enrolment staff card`), enabled, of the desk's centre. The login is marked
//!    proved and the browser sent back with a one-time hand-off (only its hash is kept);
//! 3. the desk (`GET /desk/login/card/{id}?handoff=`) takes the login once, at the desk
//!    that began it, with that hand-off, and opens the session.
//!
//! The same three steps give a supervisor's approval by card instead of a login
//! ([`CardApproval`]): the clerk's case page starts it (bound to the desk, the clerk
//! and exactly what is approved), the card must be an enabled supervisor's of the
//! centre and not the clerk's own, and the desk takes the hand-off back only in that
//! clerk's session, where the approval is recorded as a passkey's would be.
//!
//! Every refusal on the card listener is audited with the certificate's serial.

use eid_core::{AuditEvent, Outcome, audit};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::{
    Enrolment, EnrolmentError, PortError, PortFuture, Role,
    error::query,
    national_id::NationalIdNumber,
    random_token,
    staff::{Desk, DeskSession},
    token_hash,
};

/// How long a card login may take from the desk page's button to the hand-off back.
const LOGIN_SECS: i64 = 300;

/// Who a staff member's login certificate names, once checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaffCard {
    /// The national identity number in the certificate's `serialNumber`.
    pub national_id: String,
    /// The certificate's serial (hex), for the audit log.
    pub serial: String,
}

/// What a supervisor approves with their ID card: kept with the card proof, shown to
/// nobody, and recorded when the clerk's desk takes the hand-off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub(crate) enum CardApproval {
    /// The open exceptions of a pending case, at the version the clerk saw.
    Exceptions {
        application: String,
        clerk: String,
        version: i64,
    },
    /// The deactivation of an identity, for exactly this reason and note.
    Deactivation {
        application: String,
        clerk: String,
        version: i64,
        reason: String,
        note: String,
    },
}

impl CardApproval {
    /// The application the approval is for.
    pub(crate) fn application(&self) -> &str {
        match self {
            Self::Exceptions { application, .. } | Self::Deactivation { application, .. } => {
                application
            }
        }
    }

    /// The clerk who asked for it.
    fn clerk(&self) -> &str {
        match self {
            Self::Exceptions { clerk, .. } | Self::Deactivation { clerk, .. } => clerk,
        }
    }

    /// The version of the case the clerk saw when asking.
    fn version(&self) -> i64 {
        match self {
            Self::Exceptions { version, .. } | Self::Deactivation { version, .. } => *version,
        }
    }
}

/// Reads and checks the client certificate a browser presented on the desk's card
/// listener (its chain was verified in the handshake): the holder, and the status now
/// (OCSP). `Refused` when it cannot log in (revoked, suspended, unknown, not an
/// authentication certificate of ours); `Unavailable` when its status cannot be learnt.
pub trait StaffCards: Send + Sync + std::fmt::Debug {
    /// Checks one certificate (DER).
    fn check<'a>(&'a self, certificate: &'a [u8]) -> PortFuture<'a, StaffCard>;
}

impl Enrolment {
    /// Sets the certificate check of staff ID-card login; without it the desk offers
    /// passkeys only.
    pub fn set_staff_cards(&self, cards: std::sync::Arc<dyn StaffCards>) {
        let _ = self.inner.staff_cards.set(cards);
    }

    /// Whether staff may log in with their ID card here.
    pub(crate) fn card_login_offered(&self) -> bool {
        self.inner.staff_cards.get().is_some()
    }

    /// Links a staff member to the national identity number of their own ID card (or
    /// unlinks: `None`), so that card logs them in at the desk.
    pub async fn set_staff_card(
        &self,
        staff_id: &str,
        national_id: Option<&str>,
        actor: &str,
    ) -> Result<(), EnrolmentError> {
        let national_id = national_id
            .map(|n| {
                NationalIdNumber::parse(n)
                    .map(|n| n.as_str().to_owned())
                    .map_err(|e| EnrolmentError::Invalid(format!("national identity number: {e}")))
            })
            .transpose()?;
        let ctx = self.ctx();
        let mut tx = ctx.db.begin_write().await?;
        if let Some(national_id) = &national_id {
            let holder: Option<String> = sqlx::query_scalar(
                "SELECT staff_id FROM enrol_staff WHERE national_id = $1 AND staff_id <> $2",
            )
            .bind(national_id)
            .bind(staff_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query("linking a staff card"))?;
            if let Some(other) = holder {
                return Err(EnrolmentError::Conflict(format!(
                    "that national identity number is staff member `{other}`'s card already"
                )));
            }
        }
        let changed = sqlx::query(
            "UPDATE enrol_staff SET national_id = $1 WHERE staff_id = $2 AND disabled_at IS NULL",
        )
        .bind(&national_id)
        .bind(staff_id)
        .execute(&mut *tx)
        .await
        .map_err(query("linking a staff card"))?
        .rows_affected();
        if changed == 0 {
            return Err(EnrolmentError::NotFound(format!(
                "no enabled staff member `{staff_id}`"
            )));
        }
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(actor, "enrolment.staff.card", "staff", staff_id)
                .details(serde_json::json!({ "national_id": national_id })),
        )
        .await?;
        tx.commit().await.map_err(query("linking a staff card"))?;
        Ok(())
    }

    /// Step 1: a card login at `desk`, or a supervisor's approval when `approval` says
    /// what is approved; the URL on the card listener to send the browser to.
    pub(crate) async fn start_card_login(
        &self,
        desk: &Desk,
        approval: Option<&CardApproval>,
    ) -> Result<String, EnrolmentError> {
        if !self.card_login_offered() {
            return Err(EnrolmentError::Unavailable(
                "ID-card login is not set up on this desk".into(),
            ));
        }
        if let Some(approval) = approval
            && !self.case_unchanged(approval).await?
        {
            return Err(EnrolmentError::Conflict(
                "the application changed since this page was shown: reload it".into(),
            ));
        }
        let ctx = self.ctx();
        let id = random_token();
        let now = ctx.clock.now().unix_timestamp();
        let mut tx = ctx.db.begin_write().await?;
        // Attempts a day old are of no use to anyone.
        sqlx::query("DELETE FROM enrol_card_login WHERE expires_at < $1")
            .bind(now - 86_400)
            .execute(&mut *tx)
            .await
            .map_err(query("starting a card login"))?;
        let approves = approval
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| EnrolmentError::internal("starting a card approval")(e.to_string()))?;
        sqlx::query(
            "INSERT INTO enrol_card_login (login_id, desk_id, created_at, expires_at, approves) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(&desk.desk_id)
        .bind(now)
        .bind(now + LOGIN_SECS)
        .bind(&approves)
        .execute(&mut *tx)
        .await
        .map_err(query("starting a card login"))?;
        tx.commit().await.map_err(query("starting a card login"))?;
        Ok(format!("{}/desk-card/{id}", ctx.config.enrolment.card_url))
    }

    /// Step 2, on the card listener: the certificate the browser presented (if any)
    /// proves login `id`; the desk URL to send the browser back to, with the hand-off.
    pub(crate) async fn prove_card_login(
        &self,
        id: &str,
        certificate: Option<&[u8]>,
    ) -> Result<String, EnrolmentError> {
        let ctx = self.ctx();
        let now = ctx.clock.now().unix_timestamp();
        let login = sqlx::query(
            "SELECT desk_id, approves FROM enrol_card_login WHERE login_id = $1 \
             AND proved_at IS NULL AND expires_at > $2",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(ctx.db.pool())
        .await
        .map_err(query("reading a card login"))?;
        let Some(login) = login else {
            return Err(EnrolmentError::NotFound(
                "this login has expired or is finished: start again at the desk".into(),
            ));
        };
        let read = |e| query("reading a card login")(e);
        let desk_id: String = login.try_get("desk_id").map_err(read)?;
        let approval = approval_of(login.try_get("approves").map_err(read)?)?;
        // What the card is for: the audit's purpose, the refusal's verb, the way back.
        let (purpose, verb, back) = match approval {
            Some(_) => ("approve", "approve", "approvals"),
            None => ("login", "log in", "login"),
        };
        let Some(certificate) = certificate else {
            return Err(EnrolmentError::Forbidden(
                "no ID card certificate was presented: check that your card is in the reader, \
                 then start again at the desk"
                    .into(),
            ));
        };
        let cards = self.inner.staff_cards.get().ok_or_else(|| {
            EnrolmentError::Unavailable("ID-card login is not set up on this desk".into())
        })?;
        let card = match cards.check(certificate).await {
            Ok(card) => card,
            Err(PortError::Refused(why)) => {
                self.refuse_card(&desk_id, "-", purpose, &why).await?;
                return Err(EnrolmentError::Forbidden(format!(
                    "this ID card cannot {verb}: {why}"
                )));
            }
            Err(PortError::Unavailable(why)) => {
                tracing::warn!(%why, "staff card status unavailable");
                return Err(EnrolmentError::Unavailable(
                    "the card's certificate status cannot be checked right now; try again shortly"
                        .into(),
                ));
            }
        };
        let row = sqlx::query(
            "SELECT st.staff_id, st.role, st.centre_id AS staff_centre, d.centre_id AS desk_centre \
             FROM enrol_staff st, enrol_desk d \
             WHERE st.national_id = $1 AND st.disabled_at IS NULL AND d.desk_id = $2",
        )
        .bind(&card.national_id)
        .bind(&desk_id)
        .fetch_optional(ctx.db.pool())
        .await
        .map_err(query("finding the card's staff member"))?;
        let read = |e| query("finding the card's staff member")(e);
        let (staff_id, role): (String, String) = match &row {
            Some(row)
                if row.try_get::<String, _>("staff_centre").map_err(read)?
                    == row.try_get::<String, _>("desk_centre").map_err(read)? =>
            {
                (
                    row.try_get("staff_id").map_err(read)?,
                    row.try_get("role").map_err(read)?,
                )
            }
            _ => {
                self.refuse_card(&desk_id, &card.serial, purpose, "not staff at this centre")
                    .await?;
                return Err(EnrolmentError::Forbidden(
                    "this ID card is not a staff member's card at this centre (unknown, disabled \
                     or another centre)"
                        .into(),
                ));
            }
        };
        if let Some(approval) = &approval {
            self.check_card_approver(&desk_id, &card.serial, &staff_id, &role, approval)
                .await?;
        }
        let handoff = random_token();
        let proved = sqlx::query(
            "UPDATE enrol_card_login SET staff_id = $1, certificate = $2, handoff_hash = $3, \
             proved_at = $4 WHERE login_id = $5 AND proved_at IS NULL AND expires_at > $4",
        )
        .bind(&staff_id)
        .bind(&card.serial)
        .bind(token_hash(&handoff))
        .bind(now)
        .bind(id)
        .execute(ctx.db.pool())
        .await
        .map_err(query("recording a card login"))?
        .rows_affected();
        if proved == 0 {
            return Err(EnrolmentError::NotFound(
                "this login has expired or is finished: start again at the desk".into(),
            ));
        }
        Ok(format!(
            "{}/desk/{back}/card/{id}?handoff={handoff}",
            ctx.config.enrolment.public_url
        ))
    }

    /// An approval's card must be a supervisor's, not the asking clerk's own; the
    /// supervisor's authentication is audited (the approval itself is recorded when
    /// the desk takes it).
    async fn check_card_approver(
        &self,
        desk_id: &str,
        serial: &str,
        staff_id: &str,
        role: &str,
        approval: &CardApproval,
    ) -> Result<(), EnrolmentError> {
        let refusal = if staff_id == approval.clerk() {
            Some("nobody approves their own case: another supervisor's card is needed")
        } else if !Role::parse(role).is_some_and(Role::approves) {
            Some("this ID card is not a supervisor's: a supervisor's card is needed")
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.refuse_card(desk_id, serial, "approve", refusal)
                .await?;
            return Err(EnrolmentError::Forbidden(refusal.into()));
        }
        // The case as the clerk saw it, or nothing: an approval of a case changed since
        // would be refused when the desk takes it back, after the supervisor's card.
        if !self.case_unchanged(approval).await? {
            let refusal = "the case changed since the clerk asked for this approval";
            self.refuse_card(desk_id, serial, "approve", refusal)
                .await?;
            return Err(EnrolmentError::Conflict(format!(
                "{refusal}: the clerk asks again from the case as it is now"
            )));
        }
        self.append_audit(
            AuditEvent::new(
                format!("staff:{staff_id}@desk:{desk_id}"),
                "enrolment.staff.authenticate",
                "staff",
                staff_id,
            )
            .details(serde_json::json!({
                "purpose": "approve",
                "method": "idcard",
                "certificate": serial,
                "approves": approval,
            })),
        )
        .await
    }

    /// Whether the case of `approval` is still at the version the clerk saw.
    async fn case_unchanged(&self, approval: &CardApproval) -> Result<bool, EnrolmentError> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM enrol_application WHERE application_id = $1")
                .bind(approval.application())
                .fetch_optional(self.ctx().db.pool())
                .await
                .map_err(query("reading the case's version"))?;
        Ok(version == Some(approval.version()))
    }

    /// Audits a card the listener refused (`serial` `-` when it was unreadable).
    async fn refuse_card(
        &self,
        desk_id: &str,
        serial: &str,
        purpose: &str,
        why: &str,
    ) -> Result<(), EnrolmentError> {
        self.append_audit(
            AuditEvent::new(
                format!("card@desk:{desk_id}"),
                "enrolment.staff.authenticate",
                "certificate",
                serial,
            )
            .outcome(Outcome::Denied)
            .details(serde_json::json!({ "purpose": purpose, "method": "idcard", "reason": why })),
        )
        .await
    }

    /// Step 3, at the desk: takes login `id` once, with its hand-off, at the desk that
    /// began it; opens the session (the cookie's value).
    pub(crate) async fn finish_card_login(
        &self,
        desk: &Desk,
        id: &str,
        handoff: &str,
    ) -> Result<String, EnrolmentError> {
        let ctx = self.ctx();
        let now = ctx.clock.now().unix_timestamp();
        let staff_id: Option<String> = sqlx::query_scalar(
            "UPDATE enrol_card_login SET used_at = $1 WHERE login_id = $2 AND desk_id = $3 \
             AND handoff_hash = $4 AND used_at IS NULL AND expires_at > $1 \
             AND approves IS NULL RETURNING staff_id",
        )
        .bind(now)
        .bind(id)
        .bind(&desk.desk_id)
        .bind(token_hash(handoff))
        .fetch_optional(ctx.db.pool())
        .await
        .map_err(query("taking a card login"))?;
        let Some(staff_id) = staff_id else {
            return Err(EnrolmentError::Forbidden(
                "this ID-card login has expired, is used, or belongs to another desk: log in again"
                    .into(),
            ));
        };
        // Disabled, or moved to another centre, between the steps?
        let member = self.staff_member(&staff_id).await?;
        match member {
            Some((_, _, centre_id)) if centre_id == desk.centre_id => {}
            _ => {
                return Err(EnrolmentError::Forbidden(
                    "this staff member cannot log in at this desk".into(),
                ));
            }
        }
        self.open_session(desk, &staff_id, "idcard").await
    }

    /// Step 3 of an approval, at the desk: takes approval `id` once, with its hand-off,
    /// at the desk and in the session of the clerk who asked for it; the supervisor,
    /// their role (checked again: disabled or moved between the steps?) and what they
    /// approved.
    pub(crate) async fn take_card_approval(
        &self,
        session: &DeskSession,
        id: &str,
        handoff: &str,
    ) -> Result<(String, Role, CardApproval), EnrolmentError> {
        let ctx = self.ctx();
        let now = ctx.clock.now().unix_timestamp();
        let refused = || {
            EnrolmentError::Forbidden(
                "this ID-card approval has expired, is used, or belongs to another desk: ask \
                 the supervisor again"
                    .into(),
            )
        };
        // Read first and take after: a hand-off opened in another clerk's session is
        // refused without being used up, so the clerk who asked can still take it.
        let found = sqlx::query(
            "SELECT staff_id, approves FROM enrol_card_login WHERE login_id = $1 \
             AND desk_id = $2 AND handoff_hash = $3 AND used_at IS NULL AND expires_at > $4 \
             AND approves IS NOT NULL",
        )
        .bind(id)
        .bind(&session.desk.desk_id)
        .bind(token_hash(handoff))
        .bind(now)
        .fetch_optional(ctx.db.pool())
        .await
        .map_err(query("reading a card approval"))?
        .ok_or_else(refused)?;
        let read = |e| query("reading a card approval")(e);
        let supervisor: String = found.try_get("staff_id").map_err(read)?;
        let approval =
            approval_of(found.try_get("approves").map_err(read)?)?.ok_or_else(refused)?;
        if approval.clerk() != session.staff_id {
            return Err(EnrolmentError::Forbidden(
                "this ID-card approval was asked for by another clerk".into(),
            ));
        }
        // Once: of two tabs taking it at the same moment, one gets it.
        let taken = sqlx::query(
            "UPDATE enrol_card_login SET used_at = $1 WHERE login_id = $2 \
             AND used_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(id)
        .execute(ctx.db.pool())
        .await
        .map_err(query("taking a card approval"))?;
        if taken.rows_affected() != 1 {
            return Err(refused());
        }
        match self.staff_member(&supervisor).await? {
            Some((_, role, centre_id)) if centre_id == session.desk.centre_id => {
                Ok((supervisor, role, approval))
            }
            _ => Err(EnrolmentError::Forbidden(
                "the approving supervisor is disabled or belongs to another centre".into(),
            )),
        }
    }
}

/// What a card proof approves (`None`: it is a login), from its stored JSON.
fn approval_of(stored: Option<String>) -> Result<Option<CardApproval>, EnrolmentError> {
    stored
        .map(|json| serde_json::from_str(&json))
        .transpose()
        .map_err(|e| EnrolmentError::internal("reading a card approval")(e.to_string()))
}
