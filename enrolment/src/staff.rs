//! Who works at the desk, and where: service centres, registered desk workstations,
//! staff with roles, their passkeys (user verification required), desk sessions, and a
//! supervisor's separate authentication at the moment of an approval.
//!
//! A workstation is registered once with a one-time link an administrator makes
//! (`eid enrolment desk add`); its browser then holds a desk cookie, and every session,
//! record and audit event names that desk and its centre. A staff member enrols their
//! passkey with a one-time link (`eid enrolment staff add`) on a registered desk.

use eid_core::{AuditEvent, Outcome, audit};
use sha2::{Digest, Sha256};
use sqlx::Row;
use webauthn_rs::prelude::{
    CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Uuid, Webauthn,
};

use crate::{Enrolment, EnrolmentError, error::query, random_token, token_hash};

/// How long a WebAuthn ceremony may take between its two steps.
const CEREMONY_SECS: i64 = 300;

pub(crate) fn relying_party(public_url: &str) -> Option<Webauthn> {
    eid_core::web::relying_party(public_url, "eID enrolment desk")
}

/// A staff member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Verifies identities and activates tokens.
    Clerk,
    /// A clerk who may also approve exceptions (never their own case).
    Supervisor,
    /// Manages the desk; may approve like a supervisor.
    Administrator,
}

impl Role {
    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Clerk => "clerk",
            Self::Supervisor => "supervisor",
            Self::Administrator => "administrator",
        }
    }

    /// Parses a stored or typed name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "clerk" => Self::Clerk,
            "supervisor" => Self::Supervisor,
            "administrator" => Self::Administrator,
            _ => return None,
        })
    }

    /// Whether the role may approve another clerk's exceptions.
    pub fn approves(self) -> bool {
        matches!(self, Self::Supervisor | Self::Administrator)
    }
}

/// A registered desk workstation.
#[derive(Clone, Debug)]
pub(crate) struct Desk {
    pub(crate) desk_id: String,
    pub(crate) centre_id: String,
    pub(crate) name: String,
    pub(crate) centre_name: String,
    pub(crate) seal_key: String,
}

/// A logged-in staff member at a desk.
#[derive(Clone, Debug)]
pub(crate) struct DeskSession {
    pub(crate) staff_id: String,
    pub(crate) staff_name: String,
    pub(crate) role: Role,
    pub(crate) desk: Desk,
}

impl DeskSession {
    /// The audit actor: who, at which desk.
    pub(crate) fn actor(&self) -> String {
        format!("staff:{}@desk:{}", self.staff_id, self.desk.desk_id)
    }
}

/// A one-time link an administrator hands over.
#[derive(Clone, Debug)]
pub struct StaffLink {
    /// The subject: a staff id or a desk id.
    pub subject_id: String,
    /// The path with the one-time token (`/desk/register/…`, `/staff/enrol/…`).
    pub path: String,
    /// When it stops working (unix seconds).
    pub expires_at: i64,
}

fn check_id(what: &str, id: &str) -> Result<(), EnrolmentError> {
    let valid = (2..=40).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && id.as_bytes()[0].is_ascii_lowercase();
    if valid {
        Ok(())
    } else {
        Err(EnrolmentError::Invalid(format!(
            "{what} `{id}`: use 2-40 characters from a-z 0-9 . -, starting with a letter"
        )))
    }
}

fn check_name(what: &str, name: &str) -> Result<String, EnrolmentError> {
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
        return Err(EnrolmentError::Invalid(format!(
            "{what} needs 1 to 80 printable characters"
        )));
    }
    Ok(name)
}

fn user_handle(staff_id: &str) -> Uuid {
    let digest = Sha256::digest(format!("eid enrolment staff\n{staff_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

fn stored<T: serde::Serialize>(what: &'static str, value: &T) -> Result<String, EnrolmentError> {
    serde_json::to_string(value).map_err(|e| EnrolmentError::internal(what)(e.to_string()))
}

fn restored<T: serde::de::DeserializeOwned>(
    what: &'static str,
    text: &str,
) -> Result<T, EnrolmentError> {
    serde_json::from_str(text).map_err(|e| EnrolmentError::internal(what)(e.to_string()))
}

fn verification(e: impl std::fmt::Display) -> EnrolmentError {
    EnrolmentError::Forbidden(format!("the passkey could not be verified: {e}"))
}

impl Enrolment {
    fn relying_party(&self) -> Result<&Webauthn, EnrolmentError> {
        self.webauthn().ok_or_else(|| {
            EnrolmentError::Unavailable(
                "passkeys need the desk to be reached by a host name (enrolment.public_url)".into(),
            )
        })
    }

    pub(crate) async fn append_audit(&self, event: AuditEvent) -> Result<(), EnrolmentError> {
        audit::record(&self.ctx().db, self.ctx().clock.as_ref(), &event).await?;
        Ok(())
    }

    /// Adds a service centre.
    pub async fn add_centre(
        &self,
        centre_id: &str,
        name: &str,
        actor: &str,
    ) -> Result<(), EnrolmentError> {
        check_id("centre id", centre_id)?;
        let name = check_name("centre name", name)?;
        let ctx = self.ctx();
        let mut tx = ctx.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO enrol_centre (centre_id, name, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (centre_id) DO NOTHING",
        )
        .bind(centre_id)
        .bind(&name)
        .bind(ctx.clock.now().unix_timestamp())
        .execute(&mut *tx)
        .await
        .map_err(query("adding a centre"))?
        .rows_affected();
        if inserted == 0 {
            return Err(EnrolmentError::Conflict(format!(
                "centre `{centre_id}` exists already"
            )));
        }
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(actor, "enrolment.centre.add", "centre", centre_id)
                .details(serde_json::json!({ "name": name })),
        )
        .await?;
        tx.commit().await.map_err(query("adding a centre"))?;
        Ok(())
    }

    async fn require_centre(&self, centre_id: &str) -> Result<(), EnrolmentError> {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT centre_id FROM enrol_centre WHERE centre_id = $1")
                .bind(centre_id)
                .fetch_optional(self.ctx().db.pool())
                .await
                .map_err(query("reading a centre"))?;
        exists.map(|_| ()).ok_or_else(|| {
            EnrolmentError::NotFound(format!(
                "no centre `{centre_id}` (add it with `eid enrolment centre add`)"
            ))
        })
    }

    async fn new_link(
        &self,
        tx: &mut eid_core::WriteTx,
        kind: &str,
        subject_id: &str,
    ) -> Result<StaffLink, EnrolmentError> {
        let ctx = self.ctx();
        let token = random_token();
        let now = ctx.clock.now().unix_timestamp();
        let ttl = i64::try_from(ctx.config.enrolment.link_ttl_secs).unwrap_or(i64::MAX / 2);
        sqlx::query(
            "INSERT INTO enrol_link (link_hash, kind, subject_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash(&token))
        .bind(kind)
        .bind(subject_id)
        .bind(now)
        .bind(now + ttl)
        .execute(&mut **tx)
        .await
        .map_err(query("storing a one-time link"))?;
        let path = match kind {
            "desk" => format!("/desk/register/{token}"),
            _ => format!("/staff/enrol/{token}"),
        };
        Ok(StaffLink {
            subject_id: subject_id.to_owned(),
            path,
            expires_at: now + ttl,
        })
    }

    /// Adds a desk workstation to a centre, creates its sealing key, and returns the
    /// one-time link that registers the workstation's browser.
    pub async fn add_desk(
        &self,
        desk_id: &str,
        centre_id: &str,
        name: &str,
        actor: &str,
    ) -> Result<StaffLink, EnrolmentError> {
        check_id("desk id", desk_id)?;
        let name = check_name("desk name", name)?;
        self.require_centre(centre_id).await?;
        let ctx = self.ctx();
        let seal_key = format!("enrolment-desk-{desk_id}");
        let label = eid_hsm::KeyLabel::new(&seal_key)?;
        let keys = ctx.keys.clone();
        tokio::task::spawn_blocking(move || {
            keys.ensure(&label, eid_hsm::KeySpec::EcP256, eid_hsm::KeyRole::Service)
        })
        .await
        .map_err(|e| EnrolmentError::internal("creating a desk key")(e.to_string()))??;
        let mut tx = ctx.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO enrol_desk (desk_id, centre_id, name, seal_key, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (desk_id) DO NOTHING",
        )
        .bind(desk_id)
        .bind(centre_id)
        .bind(&name)
        .bind(&seal_key)
        .bind(ctx.clock.now().unix_timestamp())
        .execute(&mut *tx)
        .await
        .map_err(query("adding a desk"))?
        .rows_affected();
        if inserted == 0 {
            return Err(EnrolmentError::Conflict(format!(
                "desk `{desk_id}` exists already (`eid enrolment desk link {desk_id}` makes a new link)"
            )));
        }
        let link = self.new_link(&mut tx, "desk", desk_id).await?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(actor, "enrolment.desk.add", "desk", desk_id).details(
                serde_json::json!({ "centre": centre_id, "name": name, "seal_key": seal_key }),
            ),
        )
        .await?;
        tx.commit().await.map_err(query("adding a desk"))?;
        Ok(link)
    }

    /// A new one-time registration link for a desk (a replaced workstation).
    pub async fn desk_link(&self, desk_id: &str, actor: &str) -> Result<StaffLink, EnrolmentError> {
        let ctx = self.ctx();
        let mut tx = ctx.db.begin_write().await?;
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT desk_id FROM enrol_desk WHERE desk_id = $1 AND retired_at IS NULL",
        )
        .bind(desk_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query("reading a desk"))?;
        if exists.is_none() {
            return Err(EnrolmentError::NotFound(format!("no desk `{desk_id}`")));
        }
        let link = self.new_link(&mut tx, "desk", desk_id).await?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(actor, "enrolment.desk.link", "desk", desk_id),
        )
        .await?;
        tx.commit().await.map_err(query("making a desk link"))?;
        Ok(link)
    }

    /// Adds a staff member and returns the one-time link that enrols their passkey.
    pub async fn add_staff(
        &self,
        staff_id: &str,
        name: &str,
        role: Role,
        centre_id: &str,
        actor: &str,
    ) -> Result<StaffLink, EnrolmentError> {
        check_id("staff id", staff_id)?;
        let name = check_name("staff name", name)?;
        self.require_centre(centre_id).await?;
        let ctx = self.ctx();
        let mut tx = ctx.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO enrol_staff (staff_id, name, role, centre_id, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (staff_id) DO NOTHING",
        )
        .bind(staff_id)
        .bind(&name)
        .bind(role.name())
        .bind(centre_id)
        .bind(ctx.clock.now().unix_timestamp())
        .execute(&mut *tx)
        .await
        .map_err(query("adding a staff member"))?
        .rows_affected();
        if inserted == 0 {
            return Err(EnrolmentError::Conflict(format!(
                "staff member `{staff_id}` exists already"
            )));
        }
        let link = self.new_link(&mut tx, "staff-passkey", staff_id).await?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(actor, "enrolment.staff.add", "staff", staff_id).details(
                serde_json::json!({ "name": name, "role": role.name(), "centre": centre_id }),
            ),
        )
        .await?;
        tx.commit().await.map_err(query("adding a staff member"))?;
        Ok(link)
    }

    /// A new one-time passkey link for a staff member (a lost or new authenticator).
    pub async fn staff_link(
        &self,
        staff_id: &str,
        actor: &str,
    ) -> Result<StaffLink, EnrolmentError> {
        let ctx = self.ctx();
        let mut tx = ctx.db.begin_write().await?;
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT staff_id FROM enrol_staff WHERE staff_id = $1 AND disabled_at IS NULL",
        )
        .bind(staff_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query("reading a staff member"))?;
        if exists.is_none() {
            return Err(EnrolmentError::NotFound(format!(
                "no active staff member `{staff_id}`"
            )));
        }
        let link = self.new_link(&mut tx, "staff-passkey", staff_id).await?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(actor, "enrolment.staff.link", "staff", staff_id),
        )
        .await?;
        tx.commit().await.map_err(query("making a staff link"))?;
        Ok(link)
    }

    /// Disables a staff member: their sessions end and their passkeys stop working.
    pub async fn disable_staff(&self, staff_id: &str, actor: &str) -> Result<(), EnrolmentError> {
        let ctx = self.ctx();
        let now = ctx.clock.now().unix_timestamp();
        let mut tx = ctx.db.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE enrol_staff SET disabled_at = $1 WHERE staff_id = $2 AND disabled_at IS NULL",
        )
        .bind(now)
        .bind(staff_id)
        .execute(&mut *tx)
        .await
        .map_err(query("disabling a staff member"))?
        .rows_affected();
        if changed == 0 {
            return Err(EnrolmentError::NotFound(format!(
                "no active staff member `{staff_id}`"
            )));
        }
        sqlx::query(
            "UPDATE enrol_session SET ended_at = $1 WHERE staff_id = $2 AND ended_at IS NULL",
        )
        .bind(now)
        .bind(staff_id)
        .execute(&mut *tx)
        .await
        .map_err(query("ending a staff member's sessions"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(actor, "enrolment.staff.disable", "staff", staff_id),
        )
        .await?;
        tx.commit()
            .await
            .map_err(query("disabling a staff member"))?;
        Ok(())
    }

    /// Staff, for `eid enrolment staff list`: id, name, role, centre, passkeys, disabled.
    pub async fn list_staff(
        &self,
    ) -> Result<Vec<(String, String, String, String, i64, bool)>, EnrolmentError> {
        let rows = sqlx::query(
            "SELECT s.staff_id, s.name, s.role, s.centre_id, s.disabled_at, \
             (SELECT COUNT(*) FROM enrol_staff_passkey p WHERE p.staff_id = s.staff_id) AS passkeys \
             FROM enrol_staff s ORDER BY s.staff_id",
        )
        .fetch_all(self.ctx().db.pool())
        .await
        .map_err(query("listing staff"))?;
        rows.iter()
            .map(|row| {
                let read = |e| query("reading staff")(e);
                let disabled: Option<i64> = row.try_get("disabled_at").map_err(read)?;
                Ok((
                    row.try_get("staff_id").map_err(read)?,
                    row.try_get("name").map_err(read)?,
                    row.try_get("role").map_err(read)?,
                    row.try_get("centre_id").map_err(read)?,
                    row.try_get("passkeys").map_err(read)?,
                    disabled.is_some(),
                ))
            })
            .collect()
    }

    /// Uses a one-time link of `kind` (once): its subject.
    async fn take_link(&self, token: &str, kind: &str) -> Result<String, EnrolmentError> {
        let now = self.ctx().clock.now().unix_timestamp();
        let subject: Option<String> = sqlx::query_scalar(
            "UPDATE enrol_link SET used_at = $1 WHERE link_hash = $2 AND kind = $3 \
             AND used_at IS NULL AND expires_at > $1 RETURNING subject_id",
        )
        .bind(now)
        .bind(token_hash(token))
        .bind(kind)
        .fetch_optional(self.ctx().db.pool())
        .await
        .map_err(query("using a one-time link"))?;
        subject.ok_or_else(|| {
            EnrolmentError::Forbidden(
                "this link is unknown, used or expired: ask an administrator for a new one".into(),
            )
        })
    }

    /// Checks a one-time link of `kind` without using it.
    async fn peek_link(&self, token: &str, kind: &str) -> Result<String, EnrolmentError> {
        let now = self.ctx().clock.now().unix_timestamp();
        let subject: Option<String> = sqlx::query_scalar(
            "SELECT subject_id FROM enrol_link WHERE link_hash = $1 AND kind = $2 \
             AND used_at IS NULL AND expires_at > $3",
        )
        .bind(token_hash(token))
        .bind(kind)
        .bind(now)
        .fetch_optional(self.ctx().db.pool())
        .await
        .map_err(query("reading a one-time link"))?;
        subject.ok_or_else(|| {
            EnrolmentError::Forbidden(
                "this link is unknown, used or expired: ask an administrator for a new one".into(),
            )
        })
    }

    /// Registers this browser as the desk the link names; returns the desk and the
    /// desk cookie's value.
    pub(crate) async fn register_desk(
        &self,
        token: &str,
    ) -> Result<(Desk, String), EnrolmentError> {
        let desk_id = self.take_link(token, "desk").await?;
        let cookie = random_token();
        let ctx = self.ctx();
        let mut tx = ctx.db.begin_write().await?;
        sqlx::query(
            "UPDATE enrol_desk SET cookie_hash = $1, registered_at = $2 WHERE desk_id = $3",
        )
        .bind(token_hash(&cookie))
        .bind(ctx.clock.now().unix_timestamp())
        .bind(&desk_id)
        .execute(&mut *tx)
        .await
        .map_err(query("registering a desk"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                format!("desk:{desk_id}"),
                "enrolment.desk.register",
                "desk",
                &desk_id,
            ),
        )
        .await?;
        tx.commit().await.map_err(query("registering a desk"))?;
        let desk = self
            .desk_by_cookie(&cookie)
            .await?
            .ok_or_else(|| EnrolmentError::NotFound("the desk was retired".into()))?;
        Ok((desk, cookie))
    }

    /// The registered desk whose browser holds this cookie.
    pub(crate) async fn desk_by_cookie(
        &self,
        cookie: &str,
    ) -> Result<Option<Desk>, EnrolmentError> {
        let row = sqlx::query(
            "SELECT d.desk_id, d.centre_id, d.name, d.seal_key, c.name AS centre_name \
             FROM enrol_desk d JOIN enrol_centre c ON c.centre_id = d.centre_id \
             WHERE d.cookie_hash = $1 AND d.retired_at IS NULL",
        )
        .bind(token_hash(cookie))
        .fetch_optional(self.ctx().db.pool())
        .await
        .map_err(query("finding a desk"))?;
        let Some(row) = row else { return Ok(None) };
        let read = |e| query("reading a desk")(e);
        Ok(Some(Desk {
            desk_id: row.try_get("desk_id").map_err(read)?,
            centre_id: row.try_get("centre_id").map_err(read)?,
            name: row.try_get("name").map_err(read)?,
            centre_name: row.try_get("centre_name").map_err(read)?,
            seal_key: row.try_get("seal_key").map_err(read)?,
        }))
    }

    pub(crate) async fn staff_member(
        &self,
        staff_id: &str,
    ) -> Result<Option<(String, Role, String)>, EnrolmentError> {
        let row = sqlx::query(
            "SELECT name, role, centre_id FROM enrol_staff WHERE staff_id = $1 AND disabled_at IS NULL",
        )
        .bind(staff_id)
        .fetch_optional(self.ctx().db.pool())
        .await
        .map_err(query("reading a staff member"))?;
        let Some(row) = row else { return Ok(None) };
        let read = |e| query("reading a staff member")(e);
        let role: String = row.try_get("role").map_err(read)?;
        Ok(Some((
            row.try_get("name").map_err(read)?,
            Role::parse(&role).ok_or_else(|| EnrolmentError::Internal {
                operation: "reading a staff member",
                detail: format!("unknown role {role:?}"),
            })?,
            row.try_get("centre_id").map_err(read)?,
        )))
    }

    async fn passkeys_of(&self, staff_id: &str) -> Result<Vec<Passkey>, EnrolmentError> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT passkey FROM enrol_staff_passkey WHERE staff_id = $1")
                .bind(staff_id)
                .fetch_all(self.ctx().db.pool())
                .await
                .map_err(query("reading passkeys"))?;
        rows.iter()
            .map(|t| restored("reading a passkey", t))
            .collect()
    }

    async fn store_ceremony(
        &self,
        kind: &str,
        staff_id: Option<&str>,
        desk_id: &str,
        context: Option<&str>,
        state: String,
    ) -> Result<String, EnrolmentError> {
        let id = random_token();
        let now = self.ctx().clock.now().unix_timestamp();
        sqlx::query(
            "INSERT INTO enrol_webauthn_ceremony (ceremony_id, kind, staff_id, desk_id, context, \
             state, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(kind)
        .bind(staff_id)
        .bind(desk_id)
        .bind(context)
        .bind(state)
        .bind(now + CEREMONY_SECS)
        .execute(self.ctx().db.pool())
        .await
        .map_err(query("storing a WebAuthn ceremony"))?;
        Ok(id)
    }

    /// Takes a ceremony (once), checking it belongs to this desk and context: its staff
    /// id and state.
    async fn take_ceremony(
        &self,
        id: &str,
        kind: &str,
        desk_id: &str,
        context: Option<&str>,
    ) -> Result<(Option<String>, String), EnrolmentError> {
        let now = self.ctx().clock.now().unix_timestamp();
        let row = sqlx::query(
            "UPDATE enrol_webauthn_ceremony SET used_at = $1 WHERE ceremony_id = $2 AND kind = $3 \
             AND desk_id = $4 AND used_at IS NULL AND expires_at > $1 \
             RETURNING staff_id, context, state",
        )
        .bind(now)
        .bind(id)
        .bind(kind)
        .bind(desk_id)
        .fetch_optional(self.ctx().db.pool())
        .await
        .map_err(query("taking a WebAuthn ceremony"))?
        .ok_or_else(|| {
            EnrolmentError::Forbidden("this passkey request has expired; start again".into())
        })?;
        let read = |e| query("reading a WebAuthn ceremony")(e);
        let stored_context: Option<String> = row.try_get("context").map_err(read)?;
        if stored_context.as_deref() != context {
            return Err(EnrolmentError::Forbidden(
                "this passkey request belongs to another step; start again".into(),
            ));
        }
        Ok((
            row.try_get("staff_id").map_err(read)?,
            row.try_get("state").map_err(read)?,
        ))
    }

    /// The staff member a passkey-enrolment link names (without using the link).
    pub(crate) async fn enrolment_link_subject(
        &self,
        token: &str,
    ) -> Result<(String, String), EnrolmentError> {
        let staff_id = self.peek_link(token, "staff-passkey").await?;
        let (name, _, _) = self
            .staff_member(&staff_id)
            .await?
            .ok_or_else(|| EnrolmentError::Forbidden("this staff member is disabled".into()))?;
        Ok((staff_id, name))
    }

    /// Starts enrolling a staff member's passkey on a registered desk.
    pub(crate) async fn start_passkey_enrolment(
        &self,
        desk: &Desk,
        token: &str,
    ) -> Result<(String, CreationChallengeResponse), EnrolmentError> {
        let webauthn = self.relying_party()?;
        let (staff_id, name) = self.enrolment_link_subject(token).await?;
        let existing = self.passkeys_of(&staff_id).await?;
        let exclude = existing.iter().map(|p| p.cred_id().clone()).collect();
        let (challenge, state) = webauthn
            .start_passkey_registration(user_handle(&staff_id), &staff_id, &name, Some(exclude))
            .map_err(verification)?;
        let state = stored("storing a ceremony", &state)?;
        let id = self
            .store_ceremony(
                "register",
                Some(&staff_id),
                &desk.desk_id,
                Some(&token_hash(token)),
                state,
            )
            .await?;
        Ok((id, challenge))
    }

    /// Finishes enrolling a passkey: stores it and uses up the link.
    pub(crate) async fn finish_passkey_enrolment(
        &self,
        desk: &Desk,
        token: &str,
        ceremony_id: &str,
        response: &RegisterPublicKeyCredential,
    ) -> Result<String, EnrolmentError> {
        let webauthn = self.relying_party()?;
        let (staff_id, state) = self
            .take_ceremony(
                ceremony_id,
                "register",
                &desk.desk_id,
                Some(&token_hash(token)),
            )
            .await?;
        let staff_id = staff_id.unwrap_or_default();
        let state: PasskeyRegistration = restored("reading a ceremony", &state)?;
        let passkey = webauthn
            .finish_passkey_registration(response, &state)
            .map_err(verification)?;
        let linked = self.take_link(token, "staff-passkey").await?;
        if linked != staff_id {
            return Err(EnrolmentError::Forbidden(
                "this link belongs to someone else".into(),
            ));
        }
        let credential_id = hex::encode(passkey.cred_id().as_ref());
        let ctx = self.ctx();
        let mut tx = ctx.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO enrol_staff_passkey (credential_id, staff_id, passkey, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&credential_id)
        .bind(&staff_id)
        .bind(stored("storing a passkey", &passkey)?)
        .bind(ctx.clock.now().unix_timestamp())
        .execute(&mut *tx)
        .await
        .map_err(query("storing a passkey"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                format!("staff:{staff_id}@desk:{}", desk.desk_id),
                "enrolment.staff.passkey.add",
                "staff",
                &staff_id,
            )
            .details(
                serde_json::json!({ "credential_id": credential_id, "centre": desk.centre_id }),
            ),
        )
        .await?;
        tx.commit().await.map_err(query("storing a passkey"))?;
        Ok(staff_id)
    }

    /// Starts a passkey authentication of `staff_id` at `desk`: a login (`kind` login,
    /// no context) or a supervisor's approval (`kind` approve, context the case).
    pub(crate) async fn start_staff_authentication(
        &self,
        desk: &Desk,
        staff_id: &str,
        kind: &str,
        context: Option<&str>,
    ) -> Result<(String, RequestChallengeResponse), EnrolmentError> {
        let webauthn = self.relying_party()?;
        let staff_id = staff_id.trim().to_ascii_lowercase();
        let member = self.staff_member(&staff_id).await?;
        let unknown = || {
            EnrolmentError::Forbidden(format!(
                "`{staff_id}` cannot log in at this desk (unknown, disabled, another centre, or no passkey)"
            ))
        };
        let Some((_, _, centre_id)) = member else {
            return Err(unknown());
        };
        if centre_id != desk.centre_id {
            return Err(unknown());
        }
        let passkeys = self.passkeys_of(&staff_id).await?;
        if passkeys.is_empty() {
            return Err(unknown());
        }
        let (challenge, state) = webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(verification)?;
        let state = stored("storing a ceremony", &state)?;
        let id = self
            .store_ceremony(kind, Some(&staff_id), &desk.desk_id, context, state)
            .await?;
        Ok((id, challenge))
    }

    /// Finishes a staff passkey authentication; returns who it proved (with user
    /// verification: webauthn-rs passkeys require it) and their name and role.
    pub(crate) async fn finish_staff_authentication(
        &self,
        desk: &Desk,
        ceremony_id: &str,
        kind: &str,
        context: Option<&str>,
        response: &PublicKeyCredential,
    ) -> Result<(String, String, Role), EnrolmentError> {
        let webauthn = self.relying_party()?;
        let (staff_id, state) = self
            .take_ceremony(ceremony_id, kind, &desk.desk_id, context)
            .await?;
        let staff_id = staff_id.unwrap_or_default();
        let state: PasskeyAuthentication = restored("reading a ceremony", &state)?;
        let result = match webauthn.finish_passkey_authentication(response, &state) {
            Ok(result) => result,
            Err(e) => {
                self.append_audit(
                    AuditEvent::new(
                        format!("staff:{staff_id}@desk:{}", desk.desk_id),
                        "enrolment.staff.authenticate",
                        "staff",
                        &staff_id,
                    )
                    .outcome(Outcome::Denied)
                    .details(serde_json::json!({ "purpose": kind, "reason": e.to_string() })),
                )
                .await?;
                return Err(verification(e));
            }
        };
        let credential_id = hex::encode(result.cred_id().as_ref());
        let row: Option<String> = sqlx::query_scalar(
            "SELECT passkey FROM enrol_staff_passkey WHERE credential_id = $1 AND staff_id = $2",
        )
        .bind(&credential_id)
        .bind(&staff_id)
        .fetch_optional(self.ctx().db.pool())
        .await
        .map_err(query("reading a passkey"))?;
        let mut passkey: Passkey = restored(
            "reading a passkey",
            &row.ok_or_else(|| EnrolmentError::Forbidden("unknown passkey".into()))?,
        )?;
        passkey.update_credential(&result);
        sqlx::query(
            "UPDATE enrol_staff_passkey SET passkey = $1, last_used_at = $2 WHERE credential_id = $3",
        )
        .bind(stored("storing a passkey", &passkey)?)
        .bind(self.ctx().clock.now().unix_timestamp())
        .bind(&credential_id)
        .execute(self.ctx().db.pool())
        .await
        .map_err(query("updating a passkey"))?;
        // Disabled between the two steps?
        let (name, role, centre_id) = self
            .staff_member(&staff_id)
            .await?
            .ok_or_else(|| EnrolmentError::Forbidden("this staff member is disabled".into()))?;
        if centre_id != desk.centre_id {
            return Err(EnrolmentError::Forbidden(
                "this staff member belongs to another centre".into(),
            ));
        }
        Ok((staff_id, name, role))
    }

    /// Opens a desk session for a staff member who just authenticated; returns the
    /// session cookie's value.
    pub(crate) async fn open_session(
        &self,
        desk: &Desk,
        staff_id: &str,
        method: &str,
    ) -> Result<String, EnrolmentError> {
        let ctx = self.ctx();
        let cookie = random_token();
        let now = ctx.clock.now().unix_timestamp();
        let ttl = i64::try_from(ctx.config.enrolment.session_ttl_secs).unwrap_or(i64::MAX / 2);
        let mut tx = ctx.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO enrol_session (session_hash, staff_id, desk_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash(&cookie))
        .bind(staff_id)
        .bind(&desk.desk_id)
        .bind(now)
        .bind(now + ttl)
        .execute(&mut *tx)
        .await
        .map_err(query("opening a desk session"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                format!("staff:{staff_id}@desk:{}", desk.desk_id),
                "enrolment.staff.login",
                "desk",
                &desk.desk_id,
            )
            .details(serde_json::json!({ "centre": desk.centre_id, "method": method })),
        )
        .await?;
        tx.commit().await.map_err(query("opening a desk session"))?;
        Ok(cookie)
    }

    /// The live session this cookie names, at this desk.
    pub(crate) async fn session(
        &self,
        desk: &Desk,
        cookie: &str,
    ) -> Result<Option<DeskSession>, EnrolmentError> {
        let now = self.ctx().clock.now().unix_timestamp();
        let row = sqlx::query(
            "SELECT s.staff_id, st.name, st.role FROM enrol_session s \
             JOIN enrol_staff st ON st.staff_id = s.staff_id \
             WHERE s.session_hash = $1 AND s.desk_id = $2 AND s.ended_at IS NULL \
             AND s.expires_at > $3 AND st.disabled_at IS NULL",
        )
        .bind(token_hash(cookie))
        .bind(&desk.desk_id)
        .bind(now)
        .fetch_optional(self.ctx().db.pool())
        .await
        .map_err(query("reading a desk session"))?;
        let Some(row) = row else { return Ok(None) };
        let read = |e| query("reading a desk session")(e);
        let role: String = row.try_get("role").map_err(read)?;
        Ok(Some(DeskSession {
            staff_id: row.try_get("staff_id").map_err(read)?,
            staff_name: row.try_get("name").map_err(read)?,
            role: Role::parse(&role).unwrap_or(Role::Clerk),
            desk: desk.clone(),
        }))
    }

    /// Ends a desk session.
    pub(crate) async fn end_session(
        &self,
        session: &DeskSession,
        cookie: &str,
    ) -> Result<(), EnrolmentError> {
        let ctx = self.ctx();
        let mut tx = ctx.db.begin_write().await?;
        sqlx::query(
            "UPDATE enrol_session SET ended_at = $1 WHERE session_hash = $2 AND ended_at IS NULL",
        )
        .bind(ctx.clock.now().unix_timestamp())
        .bind(token_hash(cookie))
        .execute(&mut *tx)
        .await
        .map_err(query("ending a desk session"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                session.actor(),
                "enrolment.staff.logout",
                "desk",
                &session.desk.desk_id,
            ),
        )
        .await?;
        tx.commit().await.map_err(query("ending a desk session"))?;
        Ok(())
    }
}
