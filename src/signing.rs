//! The signing service's connections in this binary: the CSC API's ports (the idp's
//! citizen register, the CA certifying remote signing and seal keys) and `eid signing`,
//! the operator's commands for remote signing credentials and organisation seals.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context;
use clap::Subcommand;
use eid_ca::CertificateAuthority;
use eid_core::ServiceContext;
use eid_signing::{
    csc::{self, CertificateOrder, CscError, PortFuture},
    seal::{NewSeal, Seals},
};
use secrecy::SecretString;

/// The idp's register, read for the CSC API: a token's subject (the idp's internal
/// citizen id) to the national id, and whether the token's grant is in force.
#[derive(Debug)]
pub(crate) struct IdpCitizens(pub(crate) ServiceContext);

impl csc::CitizenDirectory for IdpCitizens {
    fn holder<'a>(&'a self, jti: &'a str, subject: &'a str) -> PortFuture<'a, csc::Holder> {
        Box::pin(async move {
            use eid_idp::flow::TokenHolder;
            Ok(
                match eid_idp::flow::token_holder(&self.0, jti, subject)
                    .await
                    .map_err(|e| {
                        CscError::Unavailable(format!("the identity provider's grants: {e}"))
                    })? {
                    TokenHolder::GrantNotInForce => csc::Holder::GrantNotInForce,
                    TokenHolder::UnknownCitizen => csc::Holder::UnknownCitizen,
                    TokenHolder::Citizen { national_id } => csc::Holder::Citizen(national_id),
                },
            )
        })
    }
}

/// The CA's answer to an issuance, in the signing service's terms: a refusal the
/// caller can act on, or an outage.
fn issue_error(e: eid_ca::CaError) -> CscError {
    match e {
        e @ (eid_ca::CaError::BadRequest(_) | eid_ca::CaError::Refused(_)) => {
            CscError::AccessDenied(e.to_string())
        }
        other => CscError::Unavailable(format!("the CA: {other}")),
    }
}

/// The CA in this process, certifying remote signing and seal keys.
#[derive(Debug)]
pub(crate) struct CaSigningCertificates(pub(crate) CertificateAuthority);

impl csc::SigningCertificates for CaSigningCertificates {
    fn issue(&self, order: CertificateOrder) -> PortFuture<'_, Vec<u8>> {
        Box::pin(async move {
            let (public_key, qscd) = order.key_evidence;
            let issued = self
                .0
                .issue(eid_ca::IssueRequest {
                    profile: eid_ca::Profile::CitizenSigning,
                    csr: order.csr,
                    holder: eid_ca::Holder::Citizen {
                        national_id: eid_ca::NationalId::new(&order.national_id)
                            .map_err(|e| CscError::InvalidRequest(e.to_string()))?,
                        name: eid_ca::PersonName::new(&order.given_name, &order.surname)
                            .map_err(|e| CscError::InvalidRequest(e.to_string()))?,
                    },
                    requested_by: order.requested_by,
                    key_evidence: Some(eid_ca::KeyEvidence { public_key, qscd }),
                })
                .await
                .map_err(issue_error)?;
            Ok(issued.der)
        })
    }

    fn issue_seal(&self, order: eid_signing::seal::SealOrder) -> PortFuture<'_, Vec<u8>> {
        Box::pin(async move {
            let (public_key, qscd) = order.key_evidence;
            let organisation =
                eid_ca::Organisation::new(&order.organisation, &order.organisation_id, &order.name)
                    .map_err(|e| CscError::InvalidRequest(e.to_string()))?;
            let issued = self
                .0
                .issue(eid_ca::IssueRequest {
                    profile: eid_ca::Profile::OrganisationSeal,
                    csr: order.csr,
                    holder: eid_ca::Holder::Organisation(organisation),
                    requested_by: order.requested_by,
                    key_evidence: Some(eid_ca::KeyEvidence { public_key, qscd }),
                })
                .await
                .map_err(issue_error)?;
            Ok(issued.der)
        })
    }

    fn revoke<'a>(
        &'a self,
        serial: &'a str,
        reason: &'a str,
        actor: &'a str,
    ) -> PortFuture<'a, ()> {
        Box::pin(async move {
            let serial = eid_ca::CertificateSerial::parse(serial)
                .map_err(|e| CscError::InvalidRequest(e.to_string()))?;
            let reason = eid_ca::reason::ReasonCode::parse(reason)
                .map_err(|e| CscError::InvalidRequest(e.to_string()))?;
            match self
                .0
                .change_status(&serial, eid_ca::StatusChange::Revoke(reason), actor)
                .await
            {
                Ok(_) => Ok(()),
                Err(eid_ca::CaError::Conflict(m)) if m.contains("already revoked") => Ok(()),
                Err(e) => Err(CscError::Unavailable(format!("the CA: {e}"))),
            }
        })
    }
}

/// The signing service's remote credentials as the enrolment desk reaches them.
#[derive(Debug)]
pub(crate) struct DeskCredentials(pub(crate) csc::Csc);

/// A serial in the CA's form (lower-case hex without leading zero octets), which the
/// desk compares with the CA's list; the signing service writes it in upper case.
fn ca_serial(serial: &str) -> String {
    eid_ca::CertificateSerial::parse(serial)
        .map(|s| s.to_hex())
        .unwrap_or_else(|_| serial.to_ascii_lowercase())
}

fn desk_error(e: CscError) -> eid_enrolment::PortError {
    match e {
        CscError::Unavailable(m) | CscError::Internal(m) => {
            eid_enrolment::PortError::Unavailable(m)
        }
        other => eid_enrolment::PortError::Refused(other.to_string()),
    }
}

impl eid_enrolment::RemoteSigning for DeskCredentials {
    fn creation_refusal(&self) -> Option<String> {
        self.0.creation_refusal().map(|e| e.to_string())
    }

    fn new_credential_id(&self) -> Result<String, eid_enrolment::PortError> {
        csc::new_credential_id().map_err(desk_error)
    }

    fn create(
        &self,
        request: eid_enrolment::RemoteCredentialRequest,
    ) -> eid_enrolment::PortFuture<'_, eid_enrolment::RemoteCredential> {
        Box::pin(async move {
            let created = self
                .0
                .create_credential(
                    &request.requested_by,
                    csc::NewCredential {
                        credential_id: Some(request.credential_id),
                        national_id: request.national_id,
                        given_name: request.given_name,
                        surname: request.surname,
                        pin: request.pin,
                    },
                )
                .await
                .map_err(desk_error)?;
            Ok(eid_enrolment::RemoteCredential {
                credential_id: created.credential_id,
                serial: ca_serial(&created.serial),
                status: "active".into(),
            })
        })
    }

    fn credentials_of<'a>(
        &'a self,
        national_id: &'a str,
    ) -> eid_enrolment::PortFuture<'a, Vec<eid_enrolment::RemoteCredential>> {
        Box::pin(async move {
            Ok(self
                .0
                .credentials_of(national_id)
                .await
                .map_err(desk_error)?
                .into_iter()
                .map(|c| eid_enrolment::RemoteCredential {
                    credential_id: c.credential_id,
                    serial: ca_serial(&c.serial),
                    status: c.status,
                })
                .collect())
        })
    }

    fn unlock<'a>(
        &'a self,
        credential_id: &'a str,
        actor: &'a str,
    ) -> eid_enrolment::PortFuture<'a, ()> {
        Box::pin(async move {
            csc::unlock(self.0.context(), actor, credential_id)
                .await
                .map_err(desk_error)
        })
    }

    fn withdraw<'a>(
        &'a self,
        credential_id: &'a str,
        reason: &'a str,
        actor: &'a str,
    ) -> eid_enrolment::PortFuture<'a, ()> {
        Box::pin(async move {
            self.0
                .withdraw(actor, credential_id, reason)
                .await
                .map(|_| ())
                .map_err(desk_error)
        })
    }
}

/// The CSC API over `signatures`, with the ports of this process.
/// The organisation seals, with the CA in this process certifying their keys.
pub(crate) fn seals(ca: &CertificateAuthority, signatures: &eid_signing::Signatures) -> Seals {
    Seals::new(
        signatures,
        Some(Arc::new(CaSigningCertificates(ca.clone()))),
    )
}

pub(crate) fn csc_api(
    ctx: &ServiceContext,
    ca: &CertificateAuthority,
    signatures: &eid_signing::Signatures,
) -> csc::Csc {
    csc::Csc::new(
        signatures,
        Arc::new(IdpCitizens(ctx.clone())),
        Some(Arc::new(CaSigningCertificates(ca.clone()))),
    )
}

#[derive(Debug, Subcommand)]
pub(crate) enum SigningCommand {
    /// Remote signing credentials (CSC API): a citizen's signing key on the HSM.
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// Organisation e-seals: an agency's seal key on the HSM, used by the OAuth
    /// clients it names through `POST /api/v1/seals/{id}/sign`.
    #[command(subcommand)]
    Seal(SealCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum SealCommand {
    /// Create a seal: a P-256 key generated on the service key store (which must be an
    /// HSM) and its qualified seal certificate from the organisation seal CA. Prints
    /// the seal as JSON.
    Create {
        /// The organisation's registered name.
        #[arg(long, value_name = "NAME")]
        organisation: String,
        /// Its identifier (ETSI EN 319 412-1: NTR, VAT, PSD or LEI, country, hyphen,
        /// number), e.g. NTRTT-4021877.
        #[arg(long, value_name = "ID")]
        organisation_id: String,
        /// The seal's name, as its certificate's commonName.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// An OAuth client (of the idp) allowed to seal with it; repeatable.
        #[arg(long = "client", value_name = "CLIENT_ID")]
        clients: Vec<String>,
    },
    /// List every seal (withdrawn ones too) as JSON.
    List,
    /// Allow an OAuth client to seal with a seal.
    Allow {
        /// The seal id.
        seal_id: String,
        /// The client id.
        #[arg(long = "client", value_name = "CLIENT_ID")]
        client: String,
    },
    /// Stop an OAuth client sealing with a seal.
    Disallow {
        /// The seal id.
        seal_id: String,
        /// The client id.
        #[arg(long = "client", value_name = "CLIENT_ID")]
        client: String,
    },
    /// Withdraw a seal for good: no client may use it, its certificate is revoked, its
    /// key destroyed on the HSM.
    Withdraw {
        /// The seal id.
        seal_id: String,
        /// The RFC 5280 revocation reason.
        #[arg(long, default_value = "cessationOfOperation")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CredentialCommand {
    /// Create a credential for a citizen whose identity was verified in person: a
    /// P-256 key generated on the service key store (which must be an HSM), its
    /// qualified certificate from the citizen signing CA, and the citizen's signing PIN.
    /// Prints the credential as JSON.
    Create {
        /// The citizen's national identity number.
        #[arg(long)]
        national_id: String,
        /// Given names.
        #[arg(long)]
        given_name: String,
        /// Surname.
        #[arg(long)]
        surname: String,
        /// File holding the signing PIN the citizen chose (5-12 digits).
        #[arg(long, value_name = "FILE")]
        pin_file: PathBuf,
    },
    /// Unlock a credential locked by wrong PINs (after the citizen proved who they are
    /// at a desk).
    Unlock {
        /// The credential id.
        credential_id: String,
    },
    /// List a citizen's credentials (withdrawn ones too) as JSON.
    List {
        /// The citizen's national identity number.
        #[arg(long)]
        national_id: String,
    },
    /// Withdraw a credential for good: disabled, its certificate revoked, its key
    /// destroyed on the HSM. Also finishes a withdrawal or a creation cut short.
    Withdraw {
        /// The credential id.
        credential_id: String,
        /// The RFC 5280 revocation reason.
        #[arg(long, default_value = "cessationOfOperation")]
        reason: String,
    },
}

/// Runs `eid signing ...`.
#[allow(clippy::print_stdout)] // the credential is the command's output
pub(crate) async fn run(ctx: &ServiceContext, command: SigningCommand) -> anyhow::Result<ExitCode> {
    let actor = format!("operator:{}", crate::ca::operator_name(None));
    match command {
        SigningCommand::Credential(CredentialCommand::Create {
            national_id,
            given_name,
            surname,
            pin_file,
        }) => {
            let pin = std::fs::read_to_string(&pin_file)
                .map(|text| SecretString::from(text.trim_end_matches(['\n', '\r']).to_owned()))
                .with_context(|| format!("cannot read the PIN file {}", pin_file.display()))?;
            let ca = CertificateAuthority::open(ctx).await?;
            let api = csc_api(ctx, &ca, &signatures(ctx, &ca)?);
            let created = api
                .create_credential(
                    &actor,
                    csc::NewCredential {
                        credential_id: None,
                        national_id,
                        given_name,
                        surname,
                        pin,
                    },
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&created)?);
        }
        SigningCommand::Credential(CredentialCommand::Unlock { credential_id }) => {
            csc::unlock(ctx, &actor, &credential_id).await?;
            println!("unlocked {credential_id}");
        }
        SigningCommand::Credential(CredentialCommand::List { national_id }) => {
            let ca = CertificateAuthority::open(ctx).await?;
            let api = csc_api(ctx, &ca, &signatures(ctx, &ca)?);
            let credentials = api.credentials_of(&national_id).await?;
            println!("{}", serde_json::to_string_pretty(&credentials)?);
        }
        SigningCommand::Credential(CredentialCommand::Withdraw {
            credential_id,
            reason,
        }) => {
            let ca = CertificateAuthority::open(ctx).await?;
            let api = csc_api(ctx, &ca, &signatures(ctx, &ca)?);
            let withdrawn = api.withdraw(&actor, &credential_id, &reason).await?;
            // The certificate is revoked: a running server's OCSP answers change now.
            crate::ca::tell_running_server(ca.config_listen()).await;
            if withdrawn {
                println!("withdrew {credential_id}");
            } else {
                println!("no credential {credential_id} was stored; its key, if any, is destroyed");
            }
        }
        SigningCommand::Seal(command) => seal_command(ctx, &actor, command).await?,
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)] // the seal is the command's output
async fn seal_command(
    ctx: &ServiceContext,
    actor: &str,
    command: SealCommand,
) -> anyhow::Result<()> {
    let ca = CertificateAuthority::open(ctx).await?;
    let seals = seals(&ca, &signatures(ctx, &ca)?);
    match command {
        SealCommand::Create {
            organisation,
            organisation_id,
            name,
            clients,
        } => {
            let created = seals
                .create(
                    actor,
                    NewSeal {
                        organisation,
                        organisation_id,
                        name,
                        clients,
                    },
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&created)?);
        }
        SealCommand::List => println!("{}", serde_json::to_string_pretty(&seals.list().await?)?),
        SealCommand::Allow { seal_id, client } => {
            seals.set_client(actor, &seal_id, &client, true).await?;
            println!("{client} may seal with {seal_id}");
        }
        SealCommand::Disallow { seal_id, client } => {
            seals.set_client(actor, &seal_id, &client, false).await?;
            println!("{client} may not seal with {seal_id}");
        }
        SealCommand::Withdraw { seal_id, reason } => {
            eid_ca::reason::ReasonCode::parse(&reason)?;
            seals.withdraw(actor, &seal_id, &reason).await?;
            crate::ca::tell_running_server(ca.config_listen()).await;
            println!("withdrew {seal_id}");
        }
    }
    Ok(())
}

/// A signature service for commands (no TSA running: time-stamps over HTTP).
pub(crate) fn signatures(
    ctx: &ServiceContext,
    ca: &CertificateAuthority,
) -> anyhow::Result<eid_signing::Signatures> {
    let tsa = eid_signing::cades::timestamp::TimeStampSource::Http {
        url: format!("{}/tsa", ctx.config.signing.public_url),
        http: reqwest::Client::new(),
    };
    Ok(eid_signing::Signatures::new(
        ctx,
        crate::serve::trusted_cas(ca)?,
        tsa,
    ))
}
