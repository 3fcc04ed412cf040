//! An identity's life after activation, at the desk: its certificates suspended (a lost
//! card) and resumed (found), a PIN unblocked with the PUK, the card replaced (the old
//! card's certificates revoked, a new card activated the usual way), and the identity
//! deactivated for good (death, with the reason; a supervisor approves).
//!
//! Each step checks what the identity's status allows and the version the clerk's page
//! showed, changes what it must at the CA, then records itself in one transaction: the
//! application's status, a row in `enrol_lifecycle` naming clerk, supervisor, desk and
//! centre, and the audit event. The CA changes come first and are convergent: a step cut
//! short (the CA unreachable half-way) is finished by trying it again, because each try
//! plans from the certificates' status as the CA reports it.
//!
//! Revocation reasons (RFC 5280 §5.3.1, with the meanings X.509 §9.6.3 gives them):
//! - suspension is `certificateHold`, the only reversible one;
//! - a replaced card's certificates are `superseded` (lost or damaged: new certificates
//!   take their place, nobody suspects the keys), or `keyCompromise` when the card was
//!   stolen (someone else holds the keys);
//! - deactivation after death, or at the citizen's own request, is
//!   `cessationOfOperation`: the certificates are no longer needed for their purpose and
//!   nothing suggests the keys were compromised; an identity the authority withdraws
//!   (found to be fraudulent, nationality lost) is `privilegeWithdrawn`. `unspecified` is
//!   never used: RFC 5280 says to leave the reason out rather than write it.

use eid_core::{AuditEvent, Outcome, audit};
use eid_hsm::{CardId, CardState, HsmError, PinKind, PinPolicy};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::Row;

use crate::{
    Application, ApplicationStatus, Enrolment, EnrolmentError, KnownCertificate, PortError,
    error::query, new_id, staff::DeskSession,
};

/// A lifecycle step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Every valid certificate on hold.
    Suspend,
    /// The hold lifted.
    Resume,
    /// Every certificate revoked, the identity ended.
    Deactivate,
    /// The old card's certificates revoked before a new card is activated.
    Replace,
    /// PIN1 or PIN2 unblocked with the PUK.
    Unblock,
    /// A remote signing credential unlocked after wrong PINs.
    RemoteUnlock,
    /// A remote signing credential withdrawn (certificate revoked, key destroyed).
    RemoteWithdraw,
}

impl Action {
    /// The stored name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Suspend => "suspend",
            Self::Resume => "resume",
            Self::Deactivate => "deactivate",
            Self::Replace => "replace",
            Self::Unblock => "unblock",
            Self::RemoteUnlock => "remote-unlock",
            Self::RemoteWithdraw => "remote-withdraw",
        }
    }

    /// The audit event's action.
    fn audit_action(self) -> &'static str {
        match self {
            Self::Suspend => "enrolment.identity.suspend",
            Self::Resume => "enrolment.identity.resume",
            Self::Deactivate => "enrolment.identity.deactivate",
            Self::Replace => "enrolment.card.replace",
            Self::Unblock => "enrolment.card.unblock",
            Self::RemoteUnlock => "enrolment.remote.unlock",
            Self::RemoteWithdraw => "enrolment.remote.withdraw",
        }
    }

    /// The statuses the step starts from.
    pub(crate) fn from(self) -> &'static [ApplicationStatus] {
        use ApplicationStatus::{Active, Approved, Deactivated, Suspended};
        match self {
            Self::Suspend | Self::RemoteUnlock => &[Active],
            // What a deactivation could not withdraw is withdrawn afterwards.
            Self::RemoteWithdraw => &[Active, Suspended, Deactivated],
            Self::Resume => &[Suspended],
            // An approved identity whose card was never activated can end too.
            Self::Deactivate => &[Approved, Active, Suspended],
            Self::Replace | Self::Unblock => &[Active, Suspended],
        }
    }

    /// Whether the identity's status allows the step, with a refusal the clerk can act on.
    pub(crate) fn check(self, status: ApplicationStatus) -> Result<(), EnrolmentError> {
        if self.from().contains(&status) {
            return Ok(());
        }
        let message = match (self, status) {
            (_, ApplicationStatus::Deactivated) => {
                "the identity is deactivated, which is final: nothing can change it any more"
                    .to_owned()
            }
            (Self::Suspend, ApplicationStatus::Suspended) => {
                "the certificates are already suspended".to_owned()
            }
            (Self::Resume, ApplicationStatus::Active) => {
                "the identity is active, not suspended: there is nothing to resume".to_owned()
            }
            (Self::RemoteUnlock, ApplicationStatus::Suspended) => {
                "the identity is suspended: resume it before unlocking its remote signing \
                 credential"
                    .to_owned()
            }
            (_, status) => format!(
                "the identity is {}: this needs an activated card first",
                status.name()
            ),
        };
        Err(EnrolmentError::Conflict(message))
    }
}

/// A reason from a fixed list: its stored code and what the clerk reads.
pub(crate) trait Reason: Copy + Sized + 'static {
    /// Every reason, in the order the form lists them.
    const ALL: &'static [Self];
    /// What the form asks when none was chosen.
    const MISSING: &'static str;
    /// The stored code.
    fn code(self) -> &'static str;
    /// What the clerk reads.
    fn label(self) -> &'static str;

    /// The reason with this code, or a refusal naming the choices.
    fn parse(code: &str) -> Result<Self, EnrolmentError> {
        let code = code.trim();
        Self::ALL
            .iter()
            .copied()
            .find(|r| r.code() == code)
            .ok_or_else(|| EnrolmentError::Invalid(Self::MISSING.to_owned()))
    }
}

/// Why certificates are put on hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SuspendReason {
    /// The card is lost.
    Lost,
    /// The card was stolen (suspend now; a replacement then revokes for key compromise).
    Stolen,
    /// The citizen asks for it.
    CitizenRequest,
    /// Something else, said in the note.
    Other,
}

impl Reason for SuspendReason {
    const ALL: &'static [Self] = &[Self::Lost, Self::Stolen, Self::CitizenRequest, Self::Other];
    const MISSING: &'static str = "choose why the certificates are suspended";

    fn code(self) -> &'static str {
        match self {
            Self::Lost => "lost",
            Self::Stolen => "stolen",
            Self::CitizenRequest => "citizen-request",
            Self::Other => "other",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Lost => "card lost",
            Self::Stolen => "card stolen",
            Self::CitizenRequest => "the citizen asks",
            Self::Other => "other (say why in the note)",
        }
    }
}

/// Why a card is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplaceReason {
    /// Lost: its certificates are superseded.
    Lost,
    /// Stolen: its keys are in someone else's hands.
    Stolen,
    /// Damaged or worn out: superseded.
    Damaged,
}

impl Reason for ReplaceReason {
    const ALL: &'static [Self] = &[Self::Lost, Self::Stolen, Self::Damaged];
    const MISSING: &'static str = "choose why the card is replaced: lost, stolen or damaged";

    fn code(self) -> &'static str {
        match self {
            Self::Lost => "lost",
            Self::Stolen => "stolen",
            Self::Damaged => "damaged",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Lost => "lost",
            Self::Stolen => "stolen (its certificates are revoked for key compromise)",
            Self::Damaged => "damaged or not working",
        }
    }
}

impl ReplaceReason {
    /// The RFC 5280 reason the old card's certificates are revoked with.
    pub(crate) fn revocation(self) -> &'static str {
        match self {
            Self::Stolen => "keyCompromise",
            Self::Lost | Self::Damaged => "superseded",
        }
    }
}

/// Why an identity is deactivated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeactivateReason {
    /// The citizen died.
    Death,
    /// The authority withdraws the identity (found fraudulent, nationality lost).
    Withdrawn,
    /// The citizen gives the identity up.
    Renounced,
}

impl Reason for DeactivateReason {
    const ALL: &'static [Self] = &[Self::Death, Self::Withdrawn, Self::Renounced];
    const MISSING: &'static str = "choose why the identity is deactivated";

    fn code(self) -> &'static str {
        match self {
            Self::Death => "death",
            Self::Withdrawn => "withdrawn",
            Self::Renounced => "renounced",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Death => "death of the citizen",
            Self::Withdrawn => "withdrawn by the authority",
            Self::Renounced => "renounced by the citizen",
        }
    }
}

impl DeactivateReason {
    /// The RFC 5280 reason every certificate is revoked with.
    pub(crate) fn revocation(self) -> &'static str {
        match self {
            Self::Death | Self::Renounced => "cessationOfOperation",
            Self::Withdrawn => "privilegeWithdrawn",
        }
    }
}

/// The clerk's note: whitespace tidied, at most 500 characters, required when `required`.
pub(crate) fn note(text: &str, required: Option<&str>) -> Result<Option<String>, EnrolmentError> {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return match required {
            Some(message) => Err(EnrolmentError::Invalid(message.to_owned())),
            None => Ok(None),
        };
    }
    if text.chars().count() > 500 {
        return Err(EnrolmentError::Invalid(
            "the note has more than 500 characters".into(),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(EnrolmentError::Invalid(
            "the note contains control characters".into(),
        ));
    }
    Ok(Some(text))
}

/// The certificates a step changes, from their status at the CA. `current` are the
/// serials on the citizen's current card.
pub(crate) fn plan(
    action: Action,
    certificates: &[KnownCertificate],
    current: &[String],
) -> Result<Vec<String>, EnrolmentError> {
    let with = |statuses: &[&str]| -> Vec<String> {
        certificates
            .iter()
            .filter(|c| statuses.contains(&c.status.as_str()))
            .map(|c| c.serial.clone())
            .collect()
    };
    match action {
        Action::Suspend => Ok(with(&["active"])),
        Action::Resume => {
            // A hold is lifted; a revocation is for good.
            if let Some(revoked) = certificates
                .iter()
                .find(|c| c.status == "revoked" && current.contains(&c.serial))
            {
                return Err(EnrolmentError::Conflict(format!(
                    "certificate {} of the current card is revoked for good, not suspended: \
                     it cannot be resumed. Replace the card instead.",
                    revoked.serial
                )));
            }
            Ok(with(&["suspended"]))
        }
        Action::Deactivate | Action::Replace => Ok(with(&["active", "suspended"])),
        // The credential's own step changes its certificate through the signing service.
        Action::Unblock | Action::RemoteUnlock | Action::RemoteWithdraw => Ok(Vec::new()),
    }
}

/// What the citizen types to unblock a PIN: the PUK and the new PIN twice. Never
/// logged, never stored.
#[derive(Deserialize)]
pub struct UnblockPins {
    /// `pin1` or `pin2`.
    #[serde(default)]
    pub pin: String,
    /// The PUK.
    pub puk: SecretString,
    /// The new PIN.
    pub new_pin: SecretString,
    /// The new PIN again.
    pub new_pin_confirm: SecretString,
}

impl std::fmt::Debug for UnblockPins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnblockPins")
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

impl UnblockPins {
    /// Checks the input before the card is touched (each wrong PUK costs the card a
    /// try): which PIN, a PUK that can be one, the new PIN equal to its confirmation and
    /// within the policy.
    pub(crate) fn checked(self) -> Result<(PinKind, SecretString, SecretString), EnrolmentError> {
        let kind = match self.pin.trim() {
            "pin1" => PinKind::Pin1,
            "pin2" => PinKind::Pin2,
            _ => {
                return Err(EnrolmentError::Invalid(
                    "choose the PIN to unblock: PIN1 or PIN2".into(),
                ));
            }
        };
        if self.puk.expose_secret().is_empty() {
            return Err(EnrolmentError::Invalid(
                "the citizen types the PUK of their card".into(),
            ));
        }
        if let Err(HsmError::PinPolicy { rule, .. }) =
            PinPolicy::CITIZEN.check(PinKind::Puk, &self.puk)
        {
            return Err(EnrolmentError::Invalid(format!(
                "that cannot be the card's PUK ({rule}); nothing was tried on the card"
            )));
        }
        if self.new_pin.expose_secret() != self.new_pin_confirm.expose_secret() {
            return Err(EnrolmentError::Invalid(format!(
                "the new {kind} and its confirmation differ: type both again"
            )));
        }
        PinPolicy::CITIZEN.check(kind, &self.new_pin)?;
        if self.new_pin.expose_secret() == self.puk.expose_secret() {
            return Err(EnrolmentError::Invalid(format!(
                "the new {kind} must differ from the PUK"
            )));
        }
        Ok((kind, self.puk, self.new_pin))
    }
}

/// What the key layer's refusal means at the desk, for the card `card`.
pub(crate) fn card_refusal(card: &str, error: HsmError) -> EnrolmentError {
    match error {
        HsmError::NoCard { .. } => EnrolmentError::Token(format!(
            "there is no card in the reader: put the citizen's card {card} in it and try again"
        )),
        HsmError::CardNotFound { present, .. } => EnrolmentError::Token(format!(
            "the citizen's card {card} is not in the reader (it holds {present}): put it in and try again"
        )),
        HsmError::WrongPuk { .. } => EnrolmentError::Invalid(format!(
            "card {card} refused the PUK. Each wrong PUK uses up one of the card's {} tries; \
             after the last one it cannot be unblocked any more and must be replaced.",
            PinPolicy::CITIZEN.tries
        )),
        HsmError::SoPinLocked { .. } => EnrolmentError::Token(format!(
            "the PUK of card {card} is blocked: the card can no longer be unblocked. Replace the card."
        )),
        HsmError::PinPolicy { .. } => EnrolmentError::Invalid(error.to_string()),
        other => EnrolmentError::Token(other.to_string()),
    }
}

/// An identity's status as relying services see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IdentityStatus {
    /// The national identity number.
    pub national_id: String,
    /// `pending` (not verified or no card yet), `active`, `suspended`, `deactivated`,
    /// or `rejected` (the application was refused: there is no identity).
    pub status: &'static str,
    /// When the status took effect (unix seconds).
    pub since: i64,
    /// Why, for `suspended` and `deactivated`: the category (`lost`, `death`, ...), never
    /// the clerk's note.
    pub reason: Option<String>,
}

impl IdentityStatus {
    pub(crate) fn of(application: &Application) -> Self {
        let (status, reason) = match application.status {
            ApplicationStatus::Pending | ApplicationStatus::Approved => ("pending", None),
            ApplicationStatus::Rejected => ("rejected", None),
            ApplicationStatus::Active => ("active", None),
            ApplicationStatus::Suspended => ("suspended", application.status_reason.clone()),
            ApplicationStatus::Deactivated => ("deactivated", application.status_reason.clone()),
        };
        Self {
            national_id: application.national_id.clone(),
            status,
            since: application.status_since,
            reason,
        }
    }
}

/// A lifecycle step as the case page lists it.
#[derive(Clone, Debug)]
pub(crate) struct LifecycleEvent {
    pub(crate) action: String,
    pub(crate) reason: Option<String>,
    pub(crate) note: Option<String>,
    pub(crate) serials: Vec<String>,
    pub(crate) token_id: Option<String>,
    pub(crate) clerk_id: String,
    pub(crate) supervisor_id: Option<String>,
    pub(crate) desk_id: String,
    pub(crate) created_at: i64,
}

/// The card the citizen holds now: the last finished activation.
#[derive(Clone, Debug)]
pub(crate) struct CurrentCard {
    pub(crate) token_id: String,
    pub(crate) serials: Vec<String>,
}

/// What a recorded step says about itself.
pub(crate) struct Step<'a> {
    pub(crate) action: Action,
    /// The status it leaves the identity in, with the reason stored with it.
    pub(crate) to: Option<(ApplicationStatus, Option<&'a str>)>,
    pub(crate) reason: Option<&'a str>,
    pub(crate) note: Option<&'a str>,
    pub(crate) serials: &'a [String],
    pub(crate) token_id: Option<&'a str>,
    pub(crate) supervisor_id: Option<&'a str>,
}

/// Changes a certificate's status at the CA (`serial`, `change`, `actor`), taking a
/// refusal that says `done` (the change was made already) as success: for steps that
/// are repeated after an interruption.
async fn change_unless(
    issuer: &dyn crate::CertificateIssuer,
    (serial, change, actor): (&str, &str, &str),
    done: &str,
) -> Result<(), EnrolmentError> {
    match issuer.change_status(serial, change, actor).await {
        Err(PortError::Refused(m)) if m.contains(done) => Ok(()),
        other => other.map_err(port),
    }
}

fn port(e: PortError) -> EnrolmentError {
    match e {
        PortError::Refused(m) => EnrolmentError::Conflict(format!("the CA refused: {m}")),
        PortError::Unavailable(m) => EnrolmentError::Unavailable(format!(
            "the CA is not reachable ({m}); nothing was recorded: try again"
        )),
    }
}

impl Enrolment {
    /// The application's lifecycle steps, oldest first.
    pub(crate) async fn lifecycle_events(
        &self,
        application_id: &str,
    ) -> Result<Vec<LifecycleEvent>, EnrolmentError> {
        let rows = sqlx::query(
            "SELECT action, reason, note, serials, token_id, clerk_id, supervisor_id, desk_id, \
             created_at FROM enrol_lifecycle WHERE application_id = $1 \
             ORDER BY created_at, event_id",
        )
        .bind(application_id)
        .fetch_all(self.ctx().db.pool())
        .await
        .map_err(query("reading lifecycle steps"))?;
        rows.iter()
            .map(|row| {
                let read = |e| query("reading a lifecycle step")(e);
                let serials: String = row.try_get("serials").map_err(read)?;
                Ok(LifecycleEvent {
                    action: row.try_get("action").map_err(read)?,
                    reason: row.try_get("reason").map_err(read)?,
                    note: row.try_get("note").map_err(read)?,
                    serials: serde_json::from_str(&serials).unwrap_or_default(),
                    token_id: row.try_get("token_id").map_err(read)?,
                    clerk_id: row.try_get("clerk_id").map_err(read)?,
                    supervisor_id: row.try_get("supervisor_id").map_err(read)?,
                    desk_id: row.try_get("desk_id").map_err(read)?,
                    created_at: row.try_get("created_at").map_err(read)?,
                })
            })
            .collect()
    }

    /// The citizen's current card, if one was activated.
    pub(crate) async fn current_card(
        &self,
        application_id: &str,
    ) -> Result<Option<CurrentCard>, EnrolmentError> {
        let row = sqlx::query(
            "SELECT token_id, auth_serial, sign_serial FROM enrol_activation \
             WHERE application_id = $1 AND state = 'done' AND carrier IN ('card', 'sim') \
             ORDER BY created_at DESC, activation_id LIMIT 1",
        )
        .bind(application_id)
        .fetch_optional(self.ctx().db.pool())
        .await
        .map_err(query("reading the current card"))?;
        let Some(row) = row else { return Ok(None) };
        let read = |e| query("reading the current card")(e);
        Ok(Some(CurrentCard {
            token_id: row.try_get("token_id").map_err(read)?,
            serials: [
                row.try_get::<Option<String>, _>("auth_serial")
                    .map_err(read)?,
                row.try_get::<Option<String>, _>("sign_serial")
                    .map_err(read)?,
            ]
            .into_iter()
            .flatten()
            .collect(),
        }))
    }

    /// The step is possible from the identity's status and the page's version is current.
    pub(crate) fn precheck(
        action: Action,
        application: &Application,
        version: i64,
    ) -> Result<(), EnrolmentError> {
        action.check(application.status)?;
        if application.version != version {
            return Err(EnrolmentError::Conflict(
                "the application changed since this page was shown (submitted twice?): reload it"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The certificates a step plans for, with their status at the CA (see [`plan`]).
    async fn planned_certificates(
        &self,
        application: &Application,
        action: Action,
    ) -> Result<(Vec<String>, Vec<KnownCertificate>), EnrolmentError> {
        let current = self
            .current_card(&application.application_id)
            .await?
            .map(|c| c.serials)
            .unwrap_or_default();
        let mut known = self
            .issuer()?
            .certificates_of(&application.national_id)
            .await
            .map_err(port)?;
        // A new card does not touch the remote signing credentials: they are not on
        // the card. (Suspension, resumption and deactivation are of the whole identity.)
        if action == Action::Replace {
            let remote: Vec<String> = self
                .remote_credentials(&application.national_id)
                .await?
                .into_iter()
                .map(|c| c.serial)
                .collect();
            known.retain(|c| !remote.contains(&c.serial));
        }
        Ok((plan(action, &known, &current)?, known))
    }

    /// Changes, at the CA, the status of the certificates the step plans for: `change`
    /// is `certificateHold`, `resume` or a revocation reason.
    async fn change_certificates(
        &self,
        session: &DeskSession,
        application: &Application,
        action: Action,
        change: &str,
    ) -> Result<Vec<String>, EnrolmentError> {
        let (serials, _) = self.planned_certificates(application, action).await?;
        let issuer = self.issuer()?;
        for serial in &serials {
            issuer
                .change_status(serial, change, &session.actor())
                .await
                .map_err(port)?;
        }
        Ok(serials)
    }

    /// Records a step: the application's new version (and status), the lifecycle row and
    /// the audit event, in one transaction. Returns the step's id.
    pub(crate) async fn record_step(
        &self,
        session: &DeskSession,
        application: &Application,
        version: i64,
        step: &Step<'_>,
    ) -> Result<String, EnrolmentError> {
        let ctx = self.ctx();
        let event_id = new_id("life");
        let serials = serde_json::to_string(step.serials)
            .map_err(|e| EnrolmentError::internal("recording a lifecycle step")(e.to_string()))?;
        let mut tx = ctx.db.begin_write().await?;
        self.advance(&mut tx, application, version, step.action.from(), step.to)
            .await?;
        sqlx::query(
            "INSERT INTO enrol_lifecycle (event_id, application_id, action, reason, note, serials, \
             token_id, clerk_id, supervisor_id, desk_id, centre_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&event_id)
        .bind(&application.application_id)
        .bind(step.action.name())
        .bind(step.reason)
        .bind(step.note)
        .bind(&serials)
        .bind(step.token_id)
        .bind(&session.staff_id)
        .bind(step.supervisor_id)
        .bind(&session.desk.desk_id)
        .bind(&session.desk.centre_id)
        .bind(ctx.clock.now().unix_timestamp())
        .execute(&mut *tx)
        .await
        .map_err(query("recording a lifecycle step"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                session.actor(),
                step.action.audit_action(),
                "application",
                &application.application_id,
            )
            .details(serde_json::json!({
                "event_id": event_id,
                "national_id": application.national_id,
                "clerk": session.staff_id,
                "supervisor": step.supervisor_id,
                "desk": session.desk.desk_id,
                "centre": session.desk.centre_id,
                "reason": step.reason,
                "note": step.note,
                "certificates": step.serials,
                "token": step.token_id,
                "status": step.to.map(|(s, _)| s.name()),
            })),
        )
        .await?;
        tx.commit()
            .await
            .map_err(query("recording a lifecycle step"))?;
        Ok(event_id)
    }

    /// Audits a refused step (the input or the state did not allow it), and returns the
    /// refusal.
    pub(crate) async fn refuse_step(
        &self,
        session: &DeskSession,
        action: Action,
        application_id: &str,
        error: EnrolmentError,
    ) -> EnrolmentError {
        if error.is_internal() || matches!(error, EnrolmentError::Unavailable(_)) {
            return error;
        }
        let event = AuditEvent::new(
            session.actor(),
            action.audit_action(),
            "application",
            application_id,
        )
        .outcome(Outcome::Denied)
        .details(serde_json::json!({
            "clerk": session.staff_id,
            "desk": session.desk.desk_id,
            "centre": session.desk.centre_id,
            "reason": error.to_string(),
        }));
        match audit::record(&self.ctx().db, self.ctx().clock.as_ref(), &event).await {
            Ok(_) => error,
            Err(e) => e.into(),
        }
    }

    /// Puts every valid certificate of the citizen on hold (a lost card): returns how
    /// many changed.
    pub(crate) async fn suspend(
        &self,
        session: &DeskSession,
        application_id: &str,
        version: i64,
        reason: &str,
        note_text: &str,
    ) -> Result<usize, EnrolmentError> {
        let reason = SuspendReason::parse(reason)?;
        let note = note(
            note_text,
            (reason == SuspendReason::Other)
                .then_some("say in the note why the certificates are suspended"),
        )?;
        let application = self.application(application_id).await?;
        Self::precheck(Action::Suspend, &application, version)?;
        let serials = self
            .change_certificates(session, &application, Action::Suspend, "certificateHold")
            .await?;
        self.record_step(
            session,
            &application,
            version,
            &Step {
                action: Action::Suspend,
                to: Some((ApplicationStatus::Suspended, Some(reason.code()))),
                reason: Some(reason.code()),
                note: note.as_deref(),
                serials: &serials,
                token_id: None,
                supervisor_id: None,
            },
        )
        .await?;
        Ok(serials.len())
    }

    /// Lifts the hold (the card was found); refused when a certificate of the current
    /// card was revoked for good.
    pub(crate) async fn resume(
        &self,
        session: &DeskSession,
        application_id: &str,
        version: i64,
        note_text: &str,
    ) -> Result<usize, EnrolmentError> {
        let note = note(note_text, None)?;
        let application = self.application(application_id).await?;
        Self::precheck(Action::Resume, &application, version)?;
        let serials = self
            .change_certificates(session, &application, Action::Resume, "resume")
            .await?;
        self.record_step(
            session,
            &application,
            version,
            &Step {
                action: Action::Resume,
                to: Some((ApplicationStatus::Active, None)),
                reason: Some("found"),
                note: note.as_deref(),
                serials: &serials,
                token_id: None,
                supervisor_id: None,
            },
        )
        .await?;
        Ok(serials.len())
    }

    /// Checks a deactivation's form before the supervisor is asked: the reason and the
    /// note (required: the evidence, e.g. the death certificate's number).
    pub(crate) fn deactivation_input(
        reason: &str,
        note_text: &str,
    ) -> Result<(DeactivateReason, String), EnrolmentError> {
        let reason = DeactivateReason::parse(reason)?;
        let note = note(
            note_text,
            Some("a deactivation needs a note: the evidence seen (e.g. the death certificate's number)"),
        )?
        .unwrap_or_default();
        Ok((reason, note))
    }

    /// Whether a deactivation can be asked for (before a supervisor is): the form and
    /// the identity's status.
    pub(crate) async fn check_deactivation(
        &self,
        application_id: &str,
        reason: &str,
        note_text: &str,
    ) -> Result<(), EnrolmentError> {
        Self::deactivation_input(reason, note_text)?;
        let application = self.application(application_id).await?;
        Action::Deactivate.check(application.status)
    }

    /// Deactivates the identity for good, approved by `supervisor_id` who has just
    /// authenticated at this desk: every certificate revoked, the status final.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn deactivate(
        &self,
        session: &DeskSession,
        application_id: &str,
        version: i64,
        supervisor_id: &str,
        role: crate::Role,
        reason: &str,
        note_text: &str,
    ) -> Result<usize, EnrolmentError> {
        let (reason, note) = Self::deactivation_input(reason, note_text)?;
        if supervisor_id == session.staff_id {
            return Err(EnrolmentError::Forbidden(
                "nobody approves their own action: another supervisor must authenticate".into(),
            ));
        }
        if !role.approves() {
            return Err(EnrolmentError::Forbidden(format!(
                "`{supervisor_id}` is not a supervisor"
            )));
        }
        let application = self.application(application_id).await?;
        Self::precheck(Action::Deactivate, &application, version)?;
        let serials = self
            .change_certificates(
                session,
                &application,
                Action::Deactivate,
                reason.revocation(),
            )
            .await?;
        self.record_step(
            session,
            &application,
            version,
            &Step {
                action: Action::Deactivate,
                to: Some((ApplicationStatus::Deactivated, Some(reason.code()))),
                reason: Some(reason.code()),
                note: Some(&note),
                serials: &serials,
                token_id: None,
                supervisor_id: Some(supervisor_id),
            },
        )
        .await?;
        // The remote signing keys of a deactivated identity are destroyed: their
        // certificates are revoked already, so nothing of them can sign again.
        for credential in self.remote_credentials(&application.national_id).await? {
            if credential.status != "disabled" {
                self.remote()?
                    .withdraw(
                        &credential.credential_id,
                        reason.revocation(),
                        &session.actor(),
                    )
                    .await
                    .map_err(|e| {
                        EnrolmentError::Unavailable(format!(
                            "the identity is deactivated, but withdrawing remote signing \
                             credential {} failed ({e}): withdraw it from the case page",
                            credential.credential_id
                        ))
                    })?;
            }
        }
        Ok(serials.len())
    }

    /// The first half of a card replacement: every valid certificate of the old card
    /// (all of the citizen's but the remote signing credentials) put on hold at once, so
    /// a stolen card signs nothing from now on, and recorded as a `replace` step. When
    /// the new card is written they are revoked for the step's reason
    /// ([`Enrolment::revoke_retired`]); if its activation fails they come off hold again
    /// ([`Enrolment::restore_retired`]), so a failed replacement does not leave the
    /// identity without a valid certificate. The caller has checked the new card and
    /// the PINs, and activates the new card next. Returns the step's id.
    pub(crate) async fn retire_card(
        &self,
        session: &DeskSession,
        application: &Application,
        version: i64,
        reason: ReplaceReason,
    ) -> Result<String, EnrolmentError> {
        Self::precheck(Action::Replace, application, version)?;
        let old = self.current_card(&application.application_id).await?;
        let (serials, known) = self
            .planned_certificates(application, Action::Replace)
            .await?;
        let issuer = self.issuer()?;
        for certificate in known
            .iter()
            .filter(|c| c.status == "active" && serials.contains(&c.serial))
        {
            issuer
                .change_status(&certificate.serial, "certificateHold", &session.actor())
                .await
                .map_err(port)?;
        }
        self.record_step(
            session,
            application,
            version,
            &Step {
                action: Action::Replace,
                to: None,
                reason: Some(reason.code()),
                note: None,
                serials: &serials,
                token_id: old.as_ref().map(|c| c.token_id.as_str()),
                supervisor_id: None,
            },
        )
        .await
    }

    /// The serials and reason a `replace` step recorded.
    async fn retired(&self, step_id: &str) -> Result<(Vec<String>, ReplaceReason), EnrolmentError> {
        let row = sqlx::query("SELECT serials, reason FROM enrol_lifecycle WHERE event_id = $1")
            .bind(step_id)
            .fetch_one(self.ctx().db.pool())
            .await
            .map_err(query("reading a replacement"))?;
        let read = |e| query("reading a replacement")(e);
        let serials: String = row.try_get("serials").map_err(read)?;
        let reason: Option<String> = row.try_get("reason").map_err(read)?;
        let serials = serde_json::from_str(&serials).map_err(|e| {
            EnrolmentError::internal("reading a replacement")(format!("serials: {e}"))
        })?;
        Ok((
            serials,
            <ReplaceReason as Reason>::parse(reason.as_deref().unwrap_or_default())?,
        ))
    }

    /// The second half of a card replacement, once the new card is written: the old
    /// card's certificates revoked for the step's reason (`superseded`, or
    /// `keyCompromise` for a stolen card). A suspended identity becomes active with the
    /// new card, so its remote signing credentials come off hold too. Repeatable.
    pub(crate) async fn revoke_retired(
        &self,
        session: &DeskSession,
        application: &Application,
        step_id: &str,
    ) -> Result<(), EnrolmentError> {
        let (serials, reason) = self.retired(step_id).await?;
        let issuer = self.issuer()?;
        for serial in &serials {
            change_unless(
                issuer.as_ref(),
                (serial, reason.revocation(), &session.actor()),
                "already revoked",
            )
            .await?;
        }
        if application.status == ApplicationStatus::Suspended {
            let held: Vec<String> = issuer
                .certificates_of(&application.national_id)
                .await
                .map_err(port)?
                .into_iter()
                .filter(|c| c.status == "suspended")
                .map(|c| c.serial)
                .collect();
            for credential in self.remote_credentials(&application.national_id).await? {
                if credential.status != "disabled" && held.contains(&credential.serial) {
                    issuer
                        .change_status(&credential.serial, "resume", &session.actor())
                        .await
                        .map_err(port)?;
                }
            }
        }
        Ok(())
    }

    /// Undoes the first half of a replacement whose new card failed: the old card's
    /// certificates come off hold, unless the card was stolen (they stay suspended:
    /// the clerk retries the replacement) or the identity was suspended before (they
    /// were on hold already). Certificates revoked meanwhile stay revoked.
    pub(crate) async fn restore_retired(
        &self,
        session: &DeskSession,
        application: &Application,
        step_id: &str,
    ) -> Result<(), EnrolmentError> {
        let (serials, reason) = self.retired(step_id).await?;
        if reason == ReplaceReason::Stolen || application.status != ApplicationStatus::Active {
            return Ok(());
        }
        let issuer = self.issuer()?;
        for serial in &serials {
            change_unless(
                issuer.as_ref(),
                (serial, "resume", &session.actor()),
                "not suspended",
            )
            .await?;
        }
        Ok(())
    }

    /// Unblocks (or resets a forgotten) PIN1 or PIN2 of the citizen's current card with
    /// the PUK the citizen types.
    pub(crate) async fn unblock_pin(
        &self,
        session: &DeskSession,
        application_id: &str,
        version: i64,
        pins: UnblockPins,
    ) -> Result<PinKind, EnrolmentError> {
        let (kind, puk, new_pin) = pins.checked()?;
        let application = self.application(application_id).await?;
        Self::precheck(Action::Unblock, &application, version)?;
        let reader = self.reader().cloned().ok_or_else(|| {
            EnrolmentError::Unavailable("this desk has no card reader configured".into())
        })?;
        let card = self.current_card(application_id).await?.ok_or_else(|| {
            EnrolmentError::Conflict("this identity has no activated card".into())
        })?;
        let card_id = CardId::new(card.token_id.as_str())?;
        let result = {
            let reader = reader.clone();
            let id = card_id.clone();
            tokio::task::spawn_blocking(move || -> Result<(), HsmError> {
                let info = reader.reader.card(&id)?;
                if info.state != CardState::Personalised {
                    return Err(HsmError::CardState {
                        card: id.to_string(),
                        detail: format!(
                            "it is {}, not a finished card: only an activated card is unblocked",
                            info.state
                        ),
                    });
                }
                reader.reader.unblock(&id, kind, &puk, &new_pin)
            })
            .await
            .map_err(|e| EnrolmentError::internal("a card operation")(e.to_string()))?
        };
        // A wrong PUK is audited by the caller, as every refusal (each costs the card a
        // try, so the log shows every one).
        result.map_err(|e| card_refusal(card_id.as_str(), e))?;
        let pin_name = match kind {
            PinKind::Pin1 => "pin1",
            _ => "pin2",
        };
        self.record_step(
            session,
            &application,
            version,
            &Step {
                action: Action::Unblock,
                to: None,
                reason: Some(pin_name),
                note: None,
                serials: &[],
                token_id: Some(card_id.as_str()),
                supervisor_id: None,
            },
        )
        .await?;
        Ok(kind)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn certificate(serial: &str, status: &str) -> KnownCertificate {
        KnownCertificate {
            serial: serial.into(),
            status: status.into(),
        }
    }

    fn secret(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    fn unblock(pin: &str, puk: &str, new: &str, confirm: &str) -> UnblockPins {
        UnblockPins {
            pin: pin.into(),
            puk: secret(puk),
            new_pin: secret(new),
            new_pin_confirm: secret(confirm),
        }
    }

    #[test]
    fn each_step_starts_only_where_it_may() {
        use ApplicationStatus::*;
        assert!(Action::Suspend.check(Active).is_ok());
        let refused = Action::Suspend.check(Suspended).unwrap_err();
        assert!(
            refused.to_string().contains("already suspended"),
            "{refused}"
        );
        let refused = Action::Resume.check(Active).unwrap_err();
        assert!(refused.to_string().contains("not suspended"), "{refused}");
        assert!(Action::Resume.check(Suspended).is_ok());
        for action in [
            Action::Suspend,
            Action::Resume,
            Action::Deactivate,
            Action::Replace,
            Action::Unblock,
        ] {
            let refused = action.check(Deactivated).unwrap_err();
            assert!(matches!(refused, EnrolmentError::Conflict(_)));
            assert!(refused.to_string().contains("final"), "{refused}");
            assert!(action.check(Pending).is_err());
            assert!(action.check(Rejected).is_err());
        }
        assert!(Action::Deactivate.check(Approved).is_ok());
        assert!(Action::Replace.check(Approved).is_err());
        assert!(Action::Replace.check(Suspended).is_ok());
        assert!(Action::Unblock.check(Suspended).is_ok());
    }

    #[test]
    fn plans_follow_the_status_at_the_ca() {
        let certificates = [
            certificate("01", "active"),
            certificate("02", "suspended"),
            certificate("03", "revoked"),
        ];
        let current = ["01".to_owned(), "02".to_owned()];
        assert_eq!(
            plan(Action::Suspend, &certificates, &current).unwrap(),
            ["01"]
        );
        assert_eq!(
            plan(Action::Resume, &certificates, &current).unwrap(),
            ["02"]
        );
        assert_eq!(
            plan(Action::Deactivate, &certificates, &current).unwrap(),
            ["01", "02"]
        );
        assert_eq!(
            plan(Action::Replace, &certificates, &current).unwrap(),
            ["01", "02"]
        );
        // A revoked certificate of an old card does not stop a resumption; one of the
        // current card does.
        let current = ["02".to_owned(), "03".to_owned()];
        let refused = plan(Action::Resume, &certificates, &current).unwrap_err();
        assert!(matches!(refused, EnrolmentError::Conflict(_)));
        assert!(
            refused.to_string().contains("03") && refused.to_string().contains("revoked for good"),
            "{refused}"
        );
        // Done already (a step cut short and tried again): nothing left to change.
        let held = [certificate("01", "suspended")];
        assert!(plan(Action::Suspend, &held, &[]).unwrap().is_empty());
    }

    #[test]
    fn revocation_reasons_are_the_ones_rfc_5280_means() {
        assert_eq!(ReplaceReason::Lost.revocation(), "superseded");
        assert_eq!(ReplaceReason::Damaged.revocation(), "superseded");
        assert_eq!(ReplaceReason::Stolen.revocation(), "keyCompromise");
        assert_eq!(DeactivateReason::Death.revocation(), "cessationOfOperation");
        assert_eq!(
            DeactivateReason::Withdrawn.revocation(),
            "privilegeWithdrawn"
        );
        for reason in DeactivateReason::ALL {
            assert_ne!(reason.revocation(), "unspecified");
        }
    }

    #[test]
    fn reasons_come_from_their_list() {
        assert_eq!(SuspendReason::parse("lost").unwrap(), SuspendReason::Lost);
        assert_eq!(
            DeactivateReason::parse(" death ").unwrap(),
            DeactivateReason::Death
        );
        let refused = ReplaceReason::parse("").unwrap_err();
        assert!(refused.to_string().contains("lost, stolen or damaged"));
        assert!(DeactivateReason::parse("bored").is_err());
        assert!(Enrolment::deactivation_input("death", "   ").is_err());
        let (reason, note) =
            Enrolment::deactivation_input("death", " certificate   2026/118 ").unwrap();
        assert_eq!(reason, DeactivateReason::Death);
        assert_eq!(note, "certificate 2026/118");
        assert!(note_checks_length());
    }

    fn note_checks_length() -> bool {
        note(&"x".repeat(501), None).is_err()
            && note("a\u{7}b", None).is_err()
            && note("", None).unwrap().is_none()
    }

    #[test]
    fn unblocking_input_is_checked_before_the_card() {
        let (kind, _, _) = unblock("pin1", "83920174", "6024", "6024")
            .checked()
            .unwrap();
        assert_eq!(kind, PinKind::Pin1);
        let refused = unblock("pin1", "83920174", "6024", "6025")
            .checked()
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("PIN1 and its confirmation differ"),
            "{refused}"
        );
        // Outside the policy: PIN2 has at least 5 digits; no straight runs.
        assert!(matches!(
            unblock("pin2", "83920174", "6024", "6024").checked(),
            Err(EnrolmentError::Invalid(_))
        ));
        assert!(
            unblock("pin1", "83920174", "1234", "1234")
                .checked()
                .is_err()
        );
        // A PUK that cannot be one costs no try on the card.
        let refused = unblock("pin1", "123", "6024", "6024")
            .checked()
            .unwrap_err();
        assert!(
            refused.to_string().contains("nothing was tried"),
            "{refused}"
        );
        assert!(unblock("pin1", "", "6024", "6024").checked().is_err());
        assert!(
            unblock("puk", "83920174", "6024", "6024")
                .checked()
                .is_err()
        );
        let debug = format!("{:?}", unblock("pin1", "83920174", "6024", "6024"));
        assert!(
            !debug.contains("83920174") && !debug.contains("6024"),
            "{debug}"
        );
    }

    #[test]
    fn the_key_layer_s_refusals_read_well_at_the_desk() {
        let refused = card_refusal(
            "EID-0001",
            HsmError::WrongPuk {
                token: "EID-0001 (PIN1)".into(),
            },
        );
        assert!(matches!(refused, EnrolmentError::Invalid(_)));
        assert!(refused.to_string().contains("refused the PUK"));
        let none = card_refusal(
            "EID-0001",
            HsmError::NoCard {
                module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            },
        );
        assert!(none.to_string().contains("no card in the reader"), "{none}");
        let locked = card_refusal(
            "EID-0001",
            HsmError::SoPinLocked {
                token: "EID-0001 (PIN1)".into(),
            },
        );
        assert!(locked.to_string().contains("Replace the card"), "{locked}");
    }

    fn application(status: ApplicationStatus, reason: Option<&str>) -> Application {
        Application {
            application_id: "app-1".into(),
            reference: "R-00000-00000".into(),
            national_id: "1234567890128".into(),
            given_name: "Anna".into(),
            family_name: "Eriksson".into(),
            birth_date: "1974-08-12".into(),
            email: None,
            phone: None,
            address: "1 Frederick Street".into(),
            duplicate_of: None,
            status,
            status_reason: reason.map(str::to_owned),
            status_since: 1_700_000_000,
            consent_at: None,
            version: 3,
            created_at: 1_600_000_000,
        }
    }

    #[test]
    fn relying_services_see_four_states_and_only_a_category() {
        use ApplicationStatus::*;
        let status = |s, r| IdentityStatus::of(&application(s, r));
        assert_eq!(status(Pending, None).status, "pending");
        assert_eq!(status(Approved, None).status, "pending");
        assert_eq!(status(Active, None).status, "active");
        let rejected = status(Rejected, Some("documents forged, see the file"));
        assert_eq!(rejected.status, "rejected");
        assert_eq!(
            rejected.reason, None,
            "a rejection's words stay at the desk"
        );
        let suspended = status(Suspended, Some("lost"));
        assert_eq!(
            (suspended.status, suspended.reason.as_deref()),
            ("suspended", Some("lost"))
        );
        let deactivated = status(Deactivated, Some("death"));
        assert_eq!(deactivated.status, "deactivated");
        assert_eq!(deactivated.reason.as_deref(), Some("death"));
        assert_eq!(deactivated.since, 1_700_000_000);
    }
}
