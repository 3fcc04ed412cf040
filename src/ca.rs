//! `eid ca`: the operator's commands for the certificate authority.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Subcommand;
use eid_ca::{
    CaRole, CertificateAuthority, CertificateSerial, CrlKind, Holder, IssueRequest, KeyEvidence,
    NationalId, Organisation, PersonName, Profile, StatusChange, reason::ReasonCode,
};
use eid_core::ServiceContext;

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Issue a citizen's (or an organisation's seal) certificate from a PKCS#10
    /// request; prints the certificate as PEM on stdout. The request's signature is the
    /// proof of possession.
    ///
    /// citizen-sign and org-seal (qualified) certify only a key on a qualified
    /// signature creation device: name the token's key store with --key-store (an eid
    /// config file whose [keys] section opens the card, SIM or HSM) and the key with
    /// --key-label.
    Issue {
        /// citizen-auth, citizen-sign or org-seal.
        #[arg(long)]
        profile: String,
        /// The certificate request, PEM or DER.
        #[arg(long, value_name = "FILE")]
        csr: PathBuf,
        /// The citizen's national identity number.
        #[arg(
            long,
            value_name = "ID",
            required_unless_present = "organisation",
            conflicts_with = "organisation",
            requires_all = ["given_name", "surname"]
        )]
        national_id: Option<String>,
        /// The citizen's given name.
        #[arg(long, value_name = "G", requires = "national_id")]
        given_name: Option<String>,
        /// The citizen's surname.
        #[arg(long, value_name = "S", requires = "national_id")]
        surname: Option<String>,
        /// For org-seal: the organisation's registered name.
        #[arg(long, value_name = "NAME", requires_all = ["organisation_id", "seal_name"])]
        organisation: Option<String>,
        /// For org-seal: the organisation's identifier (EN 319 412-1), e.g. NTRTT-4021877.
        #[arg(long, value_name = "ID", requires = "organisation")]
        organisation_id: Option<String>,
        /// For org-seal: the seal's name (the certificate's commonName).
        #[arg(long, value_name = "NAME", requires = "organisation")]
        seal_name: Option<String>,
        /// Config file whose [keys] section opens the token that holds the key.
        #[arg(long, value_name = "FILE", requires = "key_label")]
        key_store: Option<PathBuf>,
        /// Label of the key on that token.
        #[arg(long, value_name = "LABEL", requires = "key_store")]
        key_label: Option<String>,
        /// Who is asking, for the audit log (default: the operating-system user).
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
    /// Revoke a certificate for good, with an RFC 5280 reason (keyCompromise,
    /// cACompromise, affiliationChanged, superseded, cessationOfOperation,
    /// privilegeWithdrawn, aACompromise, unspecified). OCSP and the CRL change before
    /// the command returns.
    Revoke {
        /// The certificate's serial number (hex).
        #[arg(long, value_name = "HEX")]
        serial: String,
        /// The RFC 5280 reason name.
        #[arg(long, value_name = "REASON", default_value = "unspecified")]
        reason: String,
        /// Who is asking, for the audit log (default: the operating-system user).
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
    /// Revoke the certificate of a CA role (an issuing CA, an OCSP responder, the
    /// time-stamping unit, the idp's TLS certificate) for good, with an RFC 5280 reason
    /// (cACompromise, superseded, cessationOfOperation, ...): its issuer's CRL (the
    /// root's, for an issuing CA) lists it before the command returns, and a revoked
    /// issuing CA issues nothing more. The root cannot be revoked.
    RevokeCa {
        /// The role, as `eid ca export` names its file (citizen-auth-ca, ocsp-citizen-auth, ...).
        #[arg(long, value_name = "ROLE")]
        role: String,
        /// The RFC 5280 reason name.
        #[arg(long, value_name = "REASON")]
        reason: String,
        /// Who is asking, for the audit log (default: the operating-system user).
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
    /// Give a CA role whose certificate is revoked a fresh key and a new certificate
    /// from its issuer (same subject and length of validity); the revoked certificate
    /// stays on its issuer's CRL, the old key is destroyed, and what the role issued to
    /// other roles (an issuing CA's OCSP responder) is renewed under the new key.
    /// Service roles (responders, TSU, idp TLS) are re-keyed anyway by the next process
    /// that opens the CA.
    /// Running servers refuse to sign as the role until they restart.
    Rekey {
        /// The role, as `eid ca export` names its file.
        #[arg(long, value_name = "ROLE")]
        role: String,
        /// Who is asking, for the audit log (default: the operating-system user).
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
    /// Suspend a certificate (certificateHold), as when a citizen reports a card lost.
    Suspend {
        /// The certificate's serial number (hex).
        #[arg(long, value_name = "HEX")]
        serial: String,
        /// Who is asking, for the audit log.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
    /// Lift a suspension. A certificate revoked for good cannot be resumed.
    Resume {
        /// The certificate's serial number (hex).
        #[arg(long, value_name = "HEX")]
        serial: String,
        /// Who is asking, for the audit log.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
    /// Publish new CRLs now: the root's, and a full and a delta CRL for each issuing CA
    /// (the server also does this on every status change and when half a CRL's
    /// validity has passed) and print where.
    Crl {
        /// Also write them, as DER, to this folder.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Run the key ceremony that the --config file's [ceremony] section describes:
    /// fresh keys on the configured token for each listed CA role, certificates with
    /// the names, validity and policies the file gives, every step audited, and a
    /// transcript (JSON, with the file's SHA-256) written where the file says. Run it on
    /// a new instance before the first `eid serve`, which would otherwise create the
    /// roles with embedded defaults.
    Ceremony,
    /// Write every certificate of the CA hierarchy as PEM, named by role
    /// (root.pem, citizen-auth-ca.pem, citizen-sign-ca.pem, ocsp-*.pem, tsa.pem,
    /// idp-tls.pem), plus chain files for the two issuing CAs.
    Export {
        /// Folder to write to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[allow(clippy::print_stdout)] // command output is the point of a CLI
pub(crate) async fn run(
    ctx: &ServiceContext,
    checkpoint_signer: &eid_hsm::KeySigner,
    command: CaCommand,
) -> anyhow::Result<ExitCode> {
    if let CaCommand::Ceremony = command {
        return ceremony(ctx, checkpoint_signer).await;
    }
    let ca = CertificateAuthority::open(ctx).await?;
    match command {
        CaCommand::Issue {
            profile,
            csr,
            national_id,
            given_name,
            surname,
            organisation,
            organisation_id,
            seal_name,
            key_store,
            key_label,
            operator,
        } => {
            let csr =
                std::fs::read(&csr).with_context(|| format!("cannot read {}", csr.display()))?;
            let key_evidence = match (key_store, key_label) {
                (Some(config), Some(label)) => Some(key_evidence(&config, &label).await?),
                _ => None,
            };
            let request = IssueRequest {
                profile: Profile::parse(&profile)?,
                csr,
                holder: match (national_id, given_name, surname) {
                    (Some(national_id), Some(given), Some(surname)) => Holder::Citizen {
                        national_id: NationalId::new(&national_id)?,
                        name: PersonName::new(&given, &surname)?,
                    },
                    _ => Holder::Organisation(Organisation::new(
                        organisation.as_deref().unwrap_or_default(),
                        organisation_id.as_deref().unwrap_or_default(),
                        seal_name.as_deref().unwrap_or_default(),
                    )?),
                },
                requested_by: format!("operator:{}", operator_name(operator)),
                key_evidence,
            };
            let issued = ca.issue(request).await?;
            print!("{}", pem("CERTIFICATE", &issued.der)?);
            eprintln!(
                "issued {} certificate, serial {}",
                issued.profile.name(),
                issued.serial
            );
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Revoke {
            serial,
            reason,
            operator,
        } => {
            let reason = ReasonCode::parse(&reason)?;
            change(&ca, &serial, StatusChange::Revoke(reason), operator).await
        }
        CaCommand::RevokeCa {
            role,
            reason,
            operator,
        } => {
            let role = ca_role(&role)?;
            let reason = ReasonCode::parse(&reason)?;
            let revoked = ca
                .revoke_ca(
                    role,
                    reason,
                    &format!("operator:{}", operator_name(operator)),
                )
                .await?;
            tell_running_server(ca.config_listen()).await;
            println!(
                "the {} certificate ({}) is revoked: {}; listed on {}'s CRL number {}",
                revoked.role,
                revoked.serial,
                reason.name(),
                revoked.issuer,
                revoked.crl_number
            );
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Rekey { role, operator } => {
            let role = ca_role(&role)?;
            let rekeyed = ca
                .rekey(role, &format!("operator:{}", operator_name(operator)))
                .await?;
            tell_running_server(ca.config_listen()).await;
            println!(
                "the {} role has a new key `{}` and certificate {} (replacing the revoked {}); restart running servers to use it",
                rekeyed.role, rekeyed.key_label, rekeyed.serial, rekeyed.replaces
            );
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Suspend { serial, operator } => {
            change(&ca, &serial, StatusChange::Suspend, operator).await
        }
        CaCommand::Resume { serial, operator } => {
            change(&ca, &serial, StatusChange::Resume, operator).await
        }
        CaCommand::Crl { out } => {
            let actor = format!("operator:{}", operator_name(None));
            let kinds = CaRole::CRL_ISSUERS.into_iter().flat_map(|issuer| {
                let delta = issuer.is_issuing_ca().then_some((issuer, CrlKind::Delta));
                std::iter::once((issuer, CrlKind::Full)).chain(delta)
            });
            for (issuer, kind) in kinds {
                let published = ca.publish_crl(issuer, kind, &actor).await?;
                let file = kind.file_name(issuer);
                println!(
                    "{issuer}: CRL number {} published at {}/crl/{file}, next update {}",
                    published.number, ctx.config.ca.public_url, published.next_update
                );
                if let Some(out) = &out {
                    std::fs::create_dir_all(out)
                        .with_context(|| format!("cannot create {}", out.display()))?;
                    let path = out.join(&file);
                    std::fs::write(&path, &published.der)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        // Handled above, before opening the CA would create missing roles.
        CaCommand::Ceremony => ceremony(ctx, checkpoint_signer).await,
        CaCommand::Export { out } => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            for authority in ca.hierarchy().iter() {
                let path = out.join(format!("{}.pem", authority.role));
                std::fs::write(&path, pem("CERTIFICATE", &authority.der)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[allow(clippy::print_stdout)] // command output is the point of a CLI
async fn ceremony(
    ctx: &ServiceContext,
    checkpoint_signer: &eid_hsm::KeySigner,
) -> anyhow::Result<ExitCode> {
    let ceremony = ctx.config.ceremony.as_ref().context(
        "the --config file has no [ceremony] section: a ceremony runs from one reviewed file \
         (see deploy/ceremony.example.toml)",
    )?;
    let transcript = eid_ca::ceremony::run(ctx, ceremony, checkpoint_signer).await?;
    println!(
        "ceremony {:?} (file sha256 {}) witnessed by {}",
        transcript.ceremony,
        transcript.file_sha256,
        transcript.witnesses.join(", ")
    );
    for certificate in &transcript.certificates {
        println!(
            "  {:<18} serial {} key {} ({}) sha256 {}",
            certificate.role,
            certificate.serial,
            certificate.key_label,
            certificate.key_spec,
            certificate.fingerprint_sha256
        );
    }
    println!(
        "audit entries #{}-#{}, sealed by checkpoint #{}; transcript {}",
        transcript.audit.entries.0,
        transcript.audit.entries.1,
        transcript.audit.checkpoint,
        ceremony.transcript.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The key layer's evidence about a key on the token that `config` opens.
async fn key_evidence(config: &std::path::Path, label: &str) -> anyhow::Result<KeyEvidence> {
    let token = eid_core::Config::load(
        Some(config),
        &eid_core::config::ProcessEnvironment,
        &eid_core::config::Overrides::default(),
    )
    .with_context(|| format!("reading the key store config {}", config.display()))?;
    let store = eid_core::instance::open_key_store(&token.keys, false).await?;
    let label = eid_hsm::KeyLabel::new(label)?;
    let (public_key, qscd) = tokio::task::spawn_blocking(move || {
        let info = store
            .find(&label)?
            .ok_or_else(|| eid_hsm::HsmError::KeyNotFound {
                label: label.to_string(),
                store: store.description(),
            })?;
        anyhow::Ok((info.public_key, store.qscd_evidence(&label)?))
    })
    .await??;
    Ok(KeyEvidence { public_key, qscd })
}

#[allow(clippy::print_stdout)] // command output is the point of a CLI
async fn change(
    ca: &CertificateAuthority,
    serial: &str,
    change: StatusChange,
    operator: Option<String>,
) -> anyhow::Result<ExitCode> {
    let serial = CertificateSerial::parse(serial)?;
    let changed = ca
        .change_status(
            &serial,
            change,
            &format!("operator:{}", operator_name(operator)),
        )
        .await?;
    tell_running_server(ca.config_listen()).await;
    match changed.reason {
        Some(reason) => println!(
            "{} ({}) is now revoked: {}",
            changed.serial,
            changed.issuer,
            reason.name()
        ),
        None => println!("{} ({}) is valid again", changed.serial, changed.issuer),
    }
    Ok(ExitCode::SUCCESS)
}

/// A CA role named as `eid ca export` names its file.
fn ca_role(name: &str) -> anyhow::Result<CaRole> {
    CaRole::parse(name).with_context(|| {
        let roles: Vec<&str> = CaRole::ALL.iter().map(|r| r.name()).collect();
        format!("`{name}` is not a CA role ({})", roles.join(", "))
    })
}

/// Makes a CA server running on this configuration's listener drop OCSP answers the
/// change made stale before this command returns. No server: nothing to tell.
pub(crate) async fn tell_running_server(listen: std::net::SocketAddr) {
    let host = if listen.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        listen.ip()
    };
    let url = format!(
        "http://{}/internal/revocation-sync",
        std::net::SocketAddr::new(host, listen.port())
    );
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("warning: cannot reach a running CA server ({e}); it notices within 250 ms");
            return;
        }
    };
    match client.post(&url).send().await {
        Ok(response) if response.status().is_success() => {}
        Ok(response) => eprintln!(
            "warning: the CA server at {url} answered {}; it notices the change within 250 ms",
            response.status()
        ),
        // Nothing listening: no server holds a cache.
        Err(e) if e.is_connect() => {}
        Err(e) => eprintln!(
            "warning: the CA server at {url} did not confirm ({e}); it notices within 250 ms"
        ),
    }
}

pub(crate) fn operator_name(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// PEM (RFC 7468) of a DER document.
pub(crate) fn pem(label: &str, der: &[u8]) -> anyhow::Result<String> {
    Ok(der::pem::encode_string(
        label,
        der::pem::LineEnding::LF,
        der,
    )?)
}
