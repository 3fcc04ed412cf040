//! The signing service's connections in this binary: the CSC API's ports (the idp's
//! citizen register, the CA certifying remote signing keys) and `eid signing`, the
//! operator's commands for remote signing credentials.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context;
use clap::Subcommand;
use eid_ca::CertificateAuthority;
use eid_core::ServiceContext;
use eid_signing::csc::{self, CertificateOrder, CscError, PortFuture};
use secrecy::SecretString;

/// The idp's register, read for the CSC API: a token's subject (the idp's internal
/// citizen id) to the national id, and whether the token's grant is in force.
#[derive(Debug)]
pub(crate) struct IdpCitizens(pub(crate) ServiceContext);

impl csc::CitizenDirectory for IdpCitizens {
    fn national_id<'a>(&'a self, subject: &'a str) -> PortFuture<'a, Option<String>> {
        Box::pin(async move {
            eid_idp::flow::citizen(&self.0, subject)
                .await
                .map(|c| c.map(|c| c.national_id))
                .map_err(|e| CscError::Unavailable(format!("the citizen register: {e}")))
        })
    }

    fn grant_in_force<'a>(&'a self, jti: &'a str) -> PortFuture<'a, bool> {
        Box::pin(async move {
            eid_idp::flow::grant_in_force(&self.0, jti)
                .await
                .map_err(|e| CscError::Unavailable(format!("the identity provider's grants: {e}")))
        })
    }
}

/// The CA in this process, certifying remote signing keys.
#[derive(Debug)]
pub(crate) struct CaSigningCertificates(pub(crate) CertificateAuthority);

impl csc::SigningCertificates for CaSigningCertificates {
    fn issue(&self, order: CertificateOrder) -> PortFuture<'_, Vec<u8>> {
        Box::pin(async move {
            let refused = |e: eid_ca::CaError| CscError::AccessDenied(e.to_string());
            let (public_key, qscd) = order.key_evidence;
            let issued = self
                .0
                .issue(eid_ca::IssueRequest {
                    profile: eid_ca::Profile::CitizenSigning,
                    csr: order.csr,
                    national_id: eid_ca::NationalId::new(&order.national_id)
                        .map_err(|e| CscError::InvalidRequest(e.to_string()))?,
                    name: eid_ca::PersonName::new(&order.given_name, &order.surname)
                        .map_err(|e| CscError::InvalidRequest(e.to_string()))?,
                    requested_by: order.requested_by,
                    key_evidence: Some(eid_ca::KeyEvidence { public_key, qscd }),
                })
                .await
                .map_err(|e| match e {
                    e @ (eid_ca::CaError::BadRequest(_) | eid_ca::CaError::Refused(_)) => {
                        refused(e)
                    }
                    other => CscError::Unavailable(format!("the CA: {other}")),
                })?;
            Ok(issued.der)
        })
    }
}

/// The CSC API over `signatures`, with the ports of this process.
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
    }
    Ok(ExitCode::SUCCESS)
}

/// A signature service for commands (no TSA running: time-stamps over HTTP).
fn signatures(
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
