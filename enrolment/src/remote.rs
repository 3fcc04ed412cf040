//! Remote signing credentials at the desk: a citizen whose identity is active (a card
//! or SIM to log in with) gets a signing key on the signing service's HSM, registered
//! as a CSC credential, with a signing PIN the citizen chooses at the desk. The desk
//! asks; the signing service generates the key on its HSM and the CA certifies it.
//!
//! The steps are recorded as an activation of carrier `remote` (its token is the
//! credential id, chosen and recorded before the signing service is asked):
//! `started`, `certified` (the credential exists, its serial stored), `done` (the
//! record sealed again, naming the credential). A failure or an interrupted attempt is
//! cleaned up as a card's is: the credential withdrawn (its certificate revoked, its
//! key destroyed, or only the key if the credential was never stored), and any
//! certificate of the citizen that nothing holds revoked.
//!
//! An active credential can be unlocked after wrong PINs (the citizen proved who they
//! are at the desk) and withdrawn; each is a lifecycle step of the identity (bound by the
//! next sealed record) with its audit event naming the clerk, desk and centre.

use eid_hsm::{PinKind, PinPolicy};
use secrecy::SecretString;
use serde::Deserialize;
use sqlx::Row;

use crate::{
    ActivationOutcome, Application, ApplicationStatus, Enrolment, EnrolmentError, PortError,
    RemoteCredential, RemoteCredentialRequest,
    error::query,
    lifecycle::{Action, Reason, Step},
    staff::DeskSession,
};

/// The signing PIN the citizen chose for a remote credential, twice. Never logged,
/// never stored by the desk.
#[derive(Deserialize)]
pub struct RemotePins {
    /// The signing PIN.
    pub pin: SecretString,
    /// The signing PIN again.
    pub pin_confirm: SecretString,
}

impl std::fmt::Debug for RemotePins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemotePins(<redacted>)")
    }
}

impl RemotePins {
    /// The PIN, once it equals its confirmation and keeps the PIN2 rules.
    fn confirmed(self) -> Result<SecretString, EnrolmentError> {
        crate::activation::same_twice("the signing PIN", &self.pin, &self.pin_confirm)?;
        PinPolicy::CITIZEN.check(PinKind::Pin2, &self.pin)?;
        Ok(self.pin)
    }
}

/// Why a remote credential is withdrawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WithdrawReason {
    /// The citizen no longer wants it.
    CitizenRequest,
    /// Someone else knows the signing PIN, or the citizen's account was misused.
    Compromised,
    /// A new credential takes its place.
    Superseded,
}

impl Reason for WithdrawReason {
    const ALL: &'static [Self] = &[Self::CitizenRequest, Self::Compromised, Self::Superseded];
    const MISSING: &'static str = "choose why the credential is withdrawn";

    fn code(self) -> &'static str {
        match self {
            Self::CitizenRequest => "citizen-request",
            Self::Compromised => "compromised",
            Self::Superseded => "superseded",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::CitizenRequest => "the citizen asks",
            Self::Compromised => "PIN disclosed or account misused (key compromise)",
            Self::Superseded => "replaced by a new credential",
        }
    }
}

impl WithdrawReason {
    /// The RFC 5280 reason its certificate is revoked with.
    pub(crate) fn revocation(self) -> &'static str {
        match self {
            Self::CitizenRequest => "cessationOfOperation",
            Self::Compromised => "keyCompromise",
            Self::Superseded => "superseded",
        }
    }
}

/// A refusal or failure of the signing service, for the clerk.
fn port(e: PortError) -> EnrolmentError {
    match e {
        PortError::Refused(m) => EnrolmentError::Token(format!("the signing service refused: {m}")),
        PortError::Unavailable(m) => {
            EnrolmentError::Unavailable(format!("the signing service is not reachable: {m}"))
        }
    }
}

impl Enrolment {
    /// The citizen's remote signing credentials (none when the desk has no way to the
    /// signing service).
    pub(crate) async fn remote_credentials(
        &self,
        national_id: &str,
    ) -> Result<Vec<RemoteCredential>, EnrolmentError> {
        match self.inner.remote.as_ref() {
            Some(remote) => remote.credentials_of(national_id).await.map_err(port),
            None => Ok(Vec::new()),
        }
    }

    /// Whether this desk can reach the signing service's credentials.
    pub(crate) fn offers_remote_signing(&self) -> bool {
        self.inner.remote.is_some()
    }

    /// Why the desk cannot create a credential now, if so (the form says it instead).
    pub(crate) fn remote_creation_refusal(&self) -> Option<String> {
        match self.inner.remote.as_ref() {
            Some(remote) => remote.creation_refusal(),
            None => Some("this desk cannot reach the signing service".into()),
        }
    }

    /// Creates a remote signing credential for an active identity.
    pub(crate) async fn create_remote_credential(
        &self,
        session: &DeskSession,
        application_id: &str,
        version: i64,
        pins: RemotePins,
    ) -> Result<ActivationOutcome, EnrolmentError> {
        let pin = pins.confirmed()?;
        let remote = self.remote()?.clone();
        if let Some(refusal) = remote.creation_refusal() {
            return Err(EnrolmentError::Unavailable(refusal));
        }
        let application = self.application(application_id).await?;
        Self::check_active(&application, version)?;
        // An earlier attempt cut short is cleaned up before a new one starts.
        self.recover_remote_attempts(session, &application).await?;
        let credential_id = remote.new_credential_id().map_err(port)?;
        let activation_id = self
            .start_activation(session, application_id, "remote", &credential_id, None)
            .await?;
        let result = async {
            let created = remote
                .create(RemoteCredentialRequest {
                    credential_id: credential_id.clone(),
                    national_id: application.national_id.clone(),
                    given_name: application.given_name.clone(),
                    surname: application.family_name.clone(),
                    pin,
                    requested_by: session.actor(),
                })
                .await
                .map_err(port)?;
            self.set_state(
                &activation_id,
                "certified",
                Some(("sign_serial", &created.serial)),
            )
            .await?;
            self.complete(session, &activation_id, application_id).await
        }
        .await;
        match result {
            Ok(outcome) => Ok(outcome),
            Err(error) => {
                let cleanup = self
                    .clean_up_remote(session, &credential_id, &application.national_id)
                    .await;
                self.fail(
                    session,
                    &activation_id,
                    application_id,
                    &error,
                    cleanup.is_ok(),
                )
                .await?;
                let message = match &cleanup {
                    Ok(()) => format!(
                        "the remote signing credential was not created: {error}. Nothing of it is left; fix the cause and try again."
                    ),
                    Err(e) => format!(
                        "the remote signing credential was not created: {error}. Cleaning up also failed ({e}); try again: the next attempt finishes the clean-up."
                    ),
                };
                Err(match error {
                    EnrolmentError::Invalid(_) => EnrolmentError::Invalid(message),
                    EnrolmentError::Unavailable(_) => EnrolmentError::Unavailable(message),
                    EnrolmentError::Conflict(_) => EnrolmentError::Conflict(message),
                    e if e.is_internal() => e,
                    _ => EnrolmentError::Token(message),
                })
            }
        }
    }

    /// A remote credential joins only an active identity, and the page must be current.
    fn check_active(application: &Application, version: i64) -> Result<(), EnrolmentError> {
        if application.status != ApplicationStatus::Active {
            return Err(EnrolmentError::Conflict(format!(
                "the identity is {}; a remote signing credential is added to an active identity \
                 (the citizen logs in with the card, SIM or a passkey to sign with it)",
                application.status.name()
            )));
        }
        if application.version != version {
            return Err(EnrolmentError::Conflict(
                "the application changed since this page was shown (submitted twice?): reload it"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Cleans up the application's remote attempts a crash cut short, completing one
    /// whose credential exists and is active.
    async fn recover_remote_attempts(
        &self,
        session: &DeskSession,
        application: &Application,
    ) -> Result<(), EnrolmentError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT activation_id FROM enrol_activation WHERE application_id = $1 \
             AND carrier = 'remote' AND state NOT IN ('done', 'cleaned')",
        )
        .bind(&application.application_id)
        .fetch_all(self.ctx().db.pool())
        .await
        .map_err(query("reading unfinished activations"))?;
        for id in ids {
            self.recover_remote(session, application, &id).await?;
        }
        Ok(())
    }

    /// One remote attempt cut short: completed when the credential was created and
    /// recorded (`certified`) and is active at the signing service; cleaned up
    /// otherwise.
    pub(crate) async fn recover_remote(
        &self,
        session: &DeskSession,
        application: &Application,
        activation_id: &str,
    ) -> Result<(), EnrolmentError> {
        let row = sqlx::query(
            "SELECT token_id, state, sign_serial FROM enrol_activation WHERE activation_id = $1",
        )
        .bind(activation_id)
        .fetch_one(self.ctx().db.pool())
        .await
        .map_err(query("reading an activation"))?;
        let read = |e| query("reading an activation")(e);
        let credential_id: String = row.try_get("token_id").map_err(read)?;
        let state: String = row.try_get("state").map_err(read)?;
        let serial: Option<String> = row.try_get("sign_serial").map_err(read)?;
        if state == "certified" && application.status == ApplicationStatus::Active {
            let exists = self
                .remote_credentials(&application.national_id)
                .await?
                .into_iter()
                .any(|c| {
                    c.credential_id == credential_id
                        && c.status == "active"
                        && Some(&c.serial) == serial.as_ref()
                });
            if exists {
                tracing::info!(activation = %activation_id, "completing an interrupted remote credential");
                self.complete(session, activation_id, &application.application_id)
                    .await?;
                return Ok(());
            }
        }
        tracing::info!(activation = %activation_id, %state, "cleaning up an interrupted remote credential");
        let cleaned = self
            .clean_up_remote(session, &credential_id, &application.national_id)
            .await;
        let error = EnrolmentError::Token(format!(
            "interrupted at step `{state}` (process stopped or the signing service failed)"
        ));
        self.fail(
            session,
            activation_id,
            &application.application_id,
            &error,
            cleaned.is_ok(),
        )
        .await?;
        cleaned
    }

    /// Undoes a remote attempt: the credential withdrawn (or, never stored, its key
    /// destroyed) and every certificate of the citizen that nothing holds revoked.
    async fn clean_up_remote(
        &self,
        session: &DeskSession,
        credential_id: &str,
        national_id: &str,
    ) -> Result<(), EnrolmentError> {
        self.remote()?
            .withdraw(credential_id, "cessationOfOperation", &session.actor())
            .await
            .map_err(port)?;
        let revoked = self.revoke_unheld(session, national_id, Vec::new()).await?;
        tracing::info!(
            credential = credential_id,
            revoked,
            "cleaned up a remote credential"
        );
        Ok(())
    }

    /// The citizen's credential `credential_id`, or a refusal.
    async fn own_credential(
        &self,
        application: &Application,
        credential_id: &str,
    ) -> Result<RemoteCredential, EnrolmentError> {
        self.remote()?;
        self.remote_credentials(&application.national_id)
            .await?
            .into_iter()
            .find(|c| c.credential_id == credential_id.trim())
            .ok_or_else(|| {
                EnrolmentError::NotFound(format!(
                    "`{}` is not a remote signing credential of this citizen",
                    credential_id.trim()
                ))
            })
    }

    /// Unlocks a credential locked by wrong PINs: the citizen is at the desk.
    pub(crate) async fn unlock_remote_credential(
        &self,
        session: &DeskSession,
        application_id: &str,
        version: i64,
        credential_id: &str,
    ) -> Result<(), EnrolmentError> {
        let application = self.application(application_id).await?;
        Self::precheck(Action::RemoteUnlock, &application, version)?;
        let credential = self.own_credential(&application, credential_id).await?;
        if credential.status != "locked" {
            return Err(EnrolmentError::Conflict(format!(
                "credential {} is {}, not locked",
                credential.credential_id, credential.status
            )));
        }
        self.remote()?
            .unlock(&credential.credential_id, &session.actor())
            .await
            .map_err(port)?;
        self.record_remote_step(
            session,
            &application,
            version,
            Action::RemoteUnlock,
            &credential,
            None,
        )
        .await
    }

    /// Withdraws a credential for good. Possible whatever the identity's status after
    /// activation: a suspended or deactivated identity's credential can still be
    /// withdrawn (its key destroyed).
    pub(crate) async fn withdraw_remote_credential(
        &self,
        session: &DeskSession,
        application_id: &str,
        version: i64,
        credential_id: &str,
        reason: &str,
    ) -> Result<(), EnrolmentError> {
        let reason = <WithdrawReason as Reason>::parse(reason)?;
        let application = self.application(application_id).await?;
        Self::precheck(Action::RemoteWithdraw, &application, version)?;
        let credential = self.own_credential(&application, credential_id).await?;
        if credential.status == "disabled" {
            return Err(EnrolmentError::Conflict(format!(
                "credential {} is withdrawn already",
                credential.credential_id
            )));
        }
        self.remote()?
            .withdraw(
                &credential.credential_id,
                reason.revocation(),
                &session.actor(),
            )
            .await
            .map_err(port)?;
        self.record_remote_step(
            session,
            &application,
            version,
            Action::RemoteWithdraw,
            &credential,
            Some(reason.code()),
        )
        .await
    }

    /// Records a step on a credential as a lifecycle step of the identity (the
    /// credential as its token, its certificate as what changed), audited.
    async fn record_remote_step(
        &self,
        session: &DeskSession,
        application: &Application,
        version: i64,
        action: Action,
        credential: &RemoteCredential,
        reason: Option<&str>,
    ) -> Result<(), EnrolmentError> {
        self.record_step(
            session,
            application,
            version,
            &Step {
                action,
                to: None,
                reason,
                note: None,
                serials: std::slice::from_ref(&credential.serial),
                token_id: Some(&credential.credential_id),
                supervisor_id: None,
            },
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use secrecy::ExposeSecret;

    use super::*;

    fn pins(pin: &str, confirm: &str) -> RemotePins {
        RemotePins {
            pin: SecretString::from(pin.to_owned()),
            pin_confirm: SecretString::from(confirm.to_owned()),
        }
    }

    #[test]
    fn the_signing_pin_is_typed_twice_and_keeps_the_pin2_rules() {
        assert_eq!(
            pins("24680", "24680").confirmed().unwrap().expose_secret(),
            "24680"
        );
        let differ = pins("24680", "24681").confirmed().unwrap_err().to_string();
        assert!(differ.contains("confirmation differ"), "{differ}");
        // PIN2 is at least five digits; the key layer's policy says so.
        assert!(matches!(
            pins("1357", "1357").confirmed(),
            Err(EnrolmentError::Invalid(_))
        ));
        assert!(matches!(
            pins("12a45", "12a45").confirmed(),
            Err(EnrolmentError::Invalid(_))
        ));
    }

    #[test]
    fn withdrawal_reasons_are_the_ones_rfc_5280_means() {
        let revocation = |code: &str| {
            <WithdrawReason as Reason>::parse(code)
                .unwrap()
                .revocation()
        };
        assert_eq!(revocation("citizen-request"), "cessationOfOperation");
        assert_eq!(revocation("compromised"), "keyCompromise");
        assert_eq!(revocation("superseded"), "superseded");
        assert!(<WithdrawReason as Reason>::parse("lost").is_err());
    }
}
