//! The command line: what each subcommand means and does.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use eid_core::{
    Config, SystemClock,
    audit::{self, AuditError, CHECKPOINT_KEY_LABEL},
    config::{Overrides, ProcessEnvironment},
    instance::{self, Instance, OpenMode},
};

/// eid: national digital identity and trust services.
///
/// One command runs everything: an OpenID Connect identity provider (idp), a
/// certificate authority (ca), a signing and timestamping service (signing) and an
/// enrolment desk (enrolment). With no configuration it keeps everything in the
/// data folder (./eid-data): an SQLite database and a soft key store, created on
/// first start.
#[derive(Debug, Parser)]
#[command(name = "eid", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// Data folder: SQLite database and soft key store unless configured elsewhere.
    #[arg(long, global = true, env = "EID_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    /// Configuration file (TOML). Without one, embedded defaults apply; see
    /// deploy/eid.example.toml for every setting.
    #[arg(long, global = true, env = "EID_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in one process, or one service (the production topology).
    ///
    /// Initialises the data folder on first start, then prints each service's URL.
    /// Listeners: idp 127.0.0.1:8080, ca :8081, signing :8082, enrolment :8083
    /// (override with EID_IDP_LISTEN, EID_CA_LISTEN, EID_SIGNING_LISTEN,
    /// EID_ENROLMENT_LISTEN or [listen] in the config). Stops gracefully on
    /// SIGINT/SIGTERM: requests in flight finish, then the audit chain is checkpointed.
    Serve {
        /// Run only this service.
        #[arg(value_enum)]
        service: Option<ServiceName>,
    },
    /// Initialise the data folder, database and key store. Safe to repeat: on an
    /// initialised instance it changes nothing.
    Init,
    /// Check and inspect the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Inspect the key store.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Operate the certificate authority.
    #[command(subcommand)]
    Ca(crate::ca::CaCommand),
    /// Manage the relying parties (OpenID Connect clients) of the identity provider.
    #[command(subcommand)]
    Rp(crate::rp::RpCommand),
    /// Operate the identity provider (token-signing keys).
    #[command(subcommand)]
    Idp(crate::rp::IdpCommand),
    /// Administer the enrolment desk: centres, desks, staff.
    #[command(subcommand)]
    Enrolment(crate::enrolment::EnrolmentCommand),
    /// Operate the signing service: remote signing credentials (CSC API).
    #[command(subcommand)]
    Signing(crate::signing::SigningCommand),
    /// The SIM gateway simulator (development and tests): register simulated SIMs,
    /// print its TLS pin. Served by `eid serve sim-gateway` only.
    #[command(subcommand)]
    SimGateway(crate::simgateway::SimGatewayCommand),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ServiceName {
    /// OpenID Connect identity provider.
    Idp,
    /// Certificate authority.
    Ca,
    /// Signing and timestamping service.
    Signing,
    /// Enrolment desk.
    Enrolment,
    /// SIM gateway simulator (development and tests only; never part of `eid serve`
    /// without a name; needs EID_SIM_GATEWAY_MODULE).
    SimGateway,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain and check every signed checkpoint. Exits 0 when the
    /// log is intact; otherwise prints the first entry found modified, deleted or out
    /// of order and exits 1.
    Verify,
    /// Print the last entries.
    Tail {
        /// How many entries.
        #[arg(short = 'n', long, default_value_t = 20)]
        count: i64,
    },
    /// Sign a checkpoint of the current head now (the server also does this at
    /// intervals and on shutdown).
    Checkpoint,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// List the keys in the configured key store with their attributes.
    List,
    /// Generate a citizen token's two key pairs (citizen-authentication, and
    /// citizen-signing, which needs the PIN for every signature). Only on a store of
    /// class smartcard or sim.
    GenerateCitizen {
        /// Key type: ec-p256, ec-p384 or rsa-3072.
        #[arg(long, default_value = "ec-p384")]
        spec: String,
    },
    /// Print a PKCS#10 certificate request (PEM) signed by a key in the store: the
    /// proof of possession `eid ca issue` needs.
    Csr {
        /// The key's label.
        #[arg(long, value_name = "LABEL")]
        label: String,
        /// File holding the PIN that an always-authenticate key needs for the signature.
        #[arg(long, value_name = "FILE")]
        pin_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load and validate the configuration (file, environment, flags) and print the
    /// effective settings without secrets.
    Check,
}

fn load_config(global: &GlobalArgs) -> anyhow::Result<Config> {
    let overrides = Overrides {
        data_dir: global.data.clone(),
    };
    Ok(Config::load(
        global.config.as_deref(),
        &ProcessEnvironment,
        &overrides,
    )?)
}

async fn open(config: Config, mode: OpenMode) -> anyhow::Result<Instance> {
    Ok(instance::open(config, Arc::new(SystemClock), mode).await?)
}

/// Runs the parsed command.
#[allow(clippy::print_stdout)] // command output is the point of a CLI
pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = load_config(&cli.global)?;
    if let Err(e) = eid_core::init_logging(&config.log) {
        anyhow::bail!("cannot set up logging: {e}");
    }
    match cli.command {
        Command::Serve { service } => crate::serve::run(config, service).await,
        Command::Init => {
            let data_dir = config.data_dir.clone();
            let instance = open(config, OpenMode::CreateIfMissing).await?;
            eid_ca::CertificateAuthority::open(&instance.ctx).await?;
            if instance.created {
                println!(
                    "initialised eid in {} (database {}, keys in {})",
                    data_dir.display(),
                    instance.ctx.db.display_url(),
                    instance.ctx.keys.description()
                );
            } else {
                println!(
                    "{} is already initialised; nothing changed",
                    data_dir.display()
                );
            }
            instance.ctx.db.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(command) => audit_command(config, command).await,
        Command::Keys(command) => crate::keys::run(&config, command).await,
        Command::Ca(command) => {
            // A ceremony may be the first thing done with a new instance.
            let mode = match command {
                crate::ca::CaCommand::Ceremony => OpenMode::CreateIfMissing,
                _ => OpenMode::Existing,
            };
            let instance = open(config, mode).await?;
            let result = crate::ca::run(&instance.ctx, &instance.checkpoint_signer, command).await;
            instance.ctx.db.close().await;
            result
        }
        Command::Rp(command) => {
            let instance = open(config, OpenMode::Existing).await?;
            let result = crate::rp::run_rp(&instance.ctx, command).await;
            instance.ctx.db.close().await;
            result
        }
        Command::Idp(command) => {
            let instance = open(config, OpenMode::Existing).await?;
            let result = crate::rp::run_idp(&instance.ctx, command).await;
            instance.ctx.db.close().await;
            result
        }
        Command::Enrolment(command) => {
            let instance = open(config, OpenMode::Existing).await?;
            let result = crate::enrolment::run(&instance.ctx, command).await;
            instance.ctx.db.close().await;
            result
        }
        Command::Signing(command) => {
            let instance = open(config, OpenMode::Existing).await?;
            let result = crate::signing::run(&instance.ctx, command).await;
            instance.ctx.db.close().await;
            result
        }
        Command::SimGateway(command) => {
            let instance = open(config, OpenMode::CreateIfMissing).await?;
            let result = crate::simgateway::run(&instance.ctx, command).await;
            instance.ctx.db.close().await;
            result
        }
        Command::Config(ConfigCommand::Check) => {
            print!("{}", config.describe());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[allow(clippy::print_stdout)] // command output is the point of a CLI
async fn audit_command(config: Config, command: AuditCommand) -> anyhow::Result<ExitCode> {
    let instance = open(config, OpenMode::Existing).await?;
    let ctx = &instance.ctx;
    let code = match command {
        AuditCommand::Verify => {
            match audit::verify(&ctx.db, instance.checkpoint_signer.public_key()).await {
                Ok(report) => {
                    println!(
                        "audit log intact: {} entries, {} signed checkpoints verified (key `{CHECKPOINT_KEY_LABEL}`), last checkpoint at #{}, head {}",
                        report.entries,
                        report.checkpoints,
                        report.last_checkpoint.unwrap_or(0),
                        report.head_hash
                    );
                    if report.last_checkpoint.unwrap_or(0) < report.entries {
                        println!(
                            "note: entries after #{} are not yet covered by a checkpoint",
                            report.last_checkpoint.unwrap_or(0)
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(AuditError::Broken(why)) => {
                    eprintln!("AUDIT LOG BROKEN: {why}");
                    ExitCode::FAILURE
                }
                Err(e) => return Err(e).context("verifying the audit log"),
            }
        }
        AuditCommand::Tail { count } => {
            for entry in audit::tail(&ctx.db, count.max(0)).await? {
                println!("{entry} {}", entry.details);
            }
            ExitCode::SUCCESS
        }
        AuditCommand::Checkpoint => {
            match audit::checkpoint(&ctx.db, ctx.clock.as_ref(), &instance.checkpoint_signer)
                .await?
            {
                Some(c) => println!("signed checkpoint at #{} ({})", c.upto_seq, c.head_hash),
                None => println!("the latest checkpoint already covers the head; nothing to sign"),
            }
            ExitCode::SUCCESS
        }
    };
    ctx.db.close().await;
    Ok(code)
}
