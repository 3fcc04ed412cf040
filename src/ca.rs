//! `eid ca`: the operator's commands for the certificate authority.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Subcommand;
use eid_ca::CertificateAuthority;
use eid_core::ServiceContext;

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
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
pub(crate) async fn run(ctx: &ServiceContext, command: CaCommand) -> anyhow::Result<ExitCode> {
    let ca = CertificateAuthority::open(ctx).await?;
    match command {
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

/// PEM (RFC 7468) of a DER document.
pub(crate) fn pem(label: &str, der: &[u8]) -> anyhow::Result<String> {
    Ok(der::pem::encode_string(
        label,
        der::pem::LineEnding::LF,
        der,
    )?)
}
