//! `eid enrolment`: the enrolment desk's administration — service centres, desk
//! workstations, staff and their one-time links — and, for development and tests,
//! blank cards in the desk's reader.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use eid_core::{ServiceContext, config::Profile};
use eid_enrolment::{Enrolment, Role, StaffLink};

#[derive(Debug, Subcommand)]
pub(crate) enum EnrolmentCommand {
    /// Service centres.
    #[command(subcommand)]
    Centre(CentreCommand),
    /// Desk workstations.
    #[command(subcommand)]
    Desk(DeskCommand),
    /// Staff: clerks, supervisors, administrators.
    #[command(subcommand)]
    Staff(StaffCommand),
    /// Make a blank card in the desk's reader, as a manufacturer delivers one (two
    /// tokens, `ID (PIN1)` and `ID (PIN2)`, with the transport code as SO PIN). For
    /// development, tests and pilots on SoftHSM2; refused in the production profile.
    BlankCard {
        /// The card's identifier (its document number), e.g. EID-0001.
        id: String,
    },
    /// Check an activated identity's sealed enrolment record: its hash and the desk's
    /// signature, and those of the earlier records it supersedes (of a replaced card,
    /// before a remote signing credential was added). Exits 1 if any does not match.
    VerifyRecord {
        /// The application's reference or the national identity number.
        reference: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CentreCommand {
    /// Add a service centre.
    Add {
        /// Its id (a-z 0-9 . -).
        id: String,
        /// Its name.
        #[arg(long)]
        name: String,
        /// Who is asking, for the audit log.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeskCommand {
    /// Add a desk workstation to a centre; prints the one-time link that registers
    /// the workstation's browser.
    Add {
        /// Its id (a-z 0-9 . -).
        id: String,
        /// The centre.
        #[arg(long)]
        centre: String,
        /// Its name, as clerks and records show it.
        #[arg(long)]
        name: String,
        /// Who is asking, for the audit log.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
    /// A new registration link for a desk (a replaced workstation).
    Link {
        /// The desk's id.
        id: String,
        /// Who is asking, for the audit log.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum StaffCommand {
    /// Add a staff member; prints the one-time link with which they enrol their
    /// passkey at a registered desk.
    Add {
        /// Their staff id, which they type to log in (a-z 0-9 . -).
        id: String,
        /// Their name.
        #[arg(long)]
        name: String,
        /// clerk, supervisor or administrator.
        #[arg(long)]
        role: String,
        /// Their centre.
        #[arg(long)]
        centre: String,
        /// Who is asking, for the audit log.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
    /// A new passkey link (a lost or additional authenticator).
    Link {
        /// The staff id.
        id: String,
        /// Who is asking, for the audit log.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
    /// Let a staff member log in at the desk with their own ID card: the national
    /// identity number its authentication certificate names.
    Card {
        /// The staff id.
        id: String,
        /// Their national identity number (13 digits).
        #[arg(long, conflicts_with = "remove", required_unless_present = "remove")]
        national_id: Option<String>,
        /// Stop their card logging them in.
        #[arg(long)]
        remove: bool,
        /// Who is asking, for the audit log.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
    /// Disable a staff member: their sessions end and their passkeys stop working.
    Disable {
        /// The staff id.
        id: String,
        /// Who is asking, for the audit log.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
    /// List staff as JSON lines.
    List,
}

fn actor(given: Option<String>) -> String {
    format!("operator:{}", crate::ca::operator_name(given))
}

#[allow(clippy::print_stdout)] // the link is the command's output
fn print_link(ctx: &ServiceContext, what: &str, link: &StaffLink) {
    let expires = time::OffsetDateTime::from_unix_timestamp(link.expires_at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    println!(
        "{what} `{}`: open {}{} (one use, until {expires})",
        link.subject_id, ctx.config.enrolment.public_url, link.path
    );
}

#[allow(clippy::print_stdout)] // command output is the point of a CLI
pub(crate) async fn run(
    ctx: &ServiceContext,
    command: EnrolmentCommand,
) -> anyhow::Result<ExitCode> {
    if let EnrolmentCommand::BlankCard { id } = &command {
        return blank_card(ctx, id).await;
    }
    let enrolment = Enrolment::open(ctx, None, None).await?;
    match command {
        EnrolmentCommand::Centre(CentreCommand::Add { id, name, operator }) => {
            enrolment.add_centre(&id, &name, &actor(operator)).await?;
            println!("added centre `{id}`");
        }
        EnrolmentCommand::Desk(DeskCommand::Add {
            id,
            centre,
            name,
            operator,
        }) => {
            let link = enrolment
                .add_desk(&id, &centre, &name, &actor(operator))
                .await?;
            print_link(ctx, "register desk", &link);
        }
        EnrolmentCommand::Desk(DeskCommand::Link { id, operator }) => {
            let link = enrolment.desk_link(&id, &actor(operator)).await?;
            print_link(ctx, "register desk", &link);
        }
        EnrolmentCommand::Staff(StaffCommand::Add {
            id,
            name,
            role,
            centre,
            operator,
        }) => {
            let role = Role::parse(&role).with_context(|| {
                format!("role `{role}` is not clerk, supervisor or administrator")
            })?;
            let link = enrolment
                .add_staff(&id, &name, role, &centre, &actor(operator))
                .await?;
            print_link(ctx, "passkey for", &link);
        }
        EnrolmentCommand::Staff(StaffCommand::Link { id, operator }) => {
            let link = enrolment.staff_link(&id, &actor(operator)).await?;
            print_link(ctx, "passkey for", &link);
        }
        EnrolmentCommand::Staff(StaffCommand::Card {
            id,
            national_id,
            remove: _,
            operator,
        }) => {
            enrolment
                .set_staff_card(&id, national_id.as_deref(), &actor(operator))
                .await?;
            match national_id {
                Some(n) => println!("`{id}` logs in at the desk with the ID card of {n}"),
                None => println!("`{id}` no longer logs in with an ID card"),
            }
        }
        EnrolmentCommand::Staff(StaffCommand::Disable { id, operator }) => {
            enrolment.disable_staff(&id, &actor(operator)).await?;
            println!("disabled `{id}`");
        }
        EnrolmentCommand::Staff(StaffCommand::List) => {
            for (id, name, role, centre, passkeys, disabled) in enrolment.list_staff().await? {
                println!(
                    "{}",
                    serde_json::json!({
                        "id": id, "name": name, "role": role, "centre": centre,
                        "passkeys": passkeys, "disabled": disabled,
                    })
                );
            }
        }
        EnrolmentCommand::VerifyRecord { reference } => {
            let application = enrolment
                .find(&reference)
                .await?
                .with_context(|| format!("no application {reference}"))?;
            let check = enrolment.verify_record(&application.application_id).await?;
            if check.valid {
                println!(
                    "record of {} intact: sha256 {} sealed by key `{}`{}",
                    application.reference,
                    check.sha256,
                    check.seal_key,
                    match check.superseded {
                        0 => String::new(),
                        n => format!("; with the {n} earlier record(s) it supersedes"),
                    }
                );
            } else {
                println!(
                    "RECORD OF {} DOES NOT MATCH its hash or seal (key `{}`)",
                    application.reference, check.seal_key
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        EnrolmentCommand::BlankCard { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
async fn blank_card(ctx: &ServiceContext, id: &str) -> anyhow::Result<ExitCode> {
    if ctx.config.profile == Profile::Production {
        anyhow::bail!("blank cards come from the card manufacturer in production");
    }
    let reader =
        ctx.config.enrolment.reader.clone().context(
            "no card reader configured ([enrolment.reader] or EID_ENROLMENT_READER_MODULE)",
        )?;
    let card = eid_hsm::CardId::new(id)?;
    let module = reader.module.clone();
    let transport = reader.transport_code.clone();
    tokio::task::spawn_blocking(move || eid_hsm::initialize_blank_card(&module, &card, &transport))
        .await??;
    println!(
        "blank card `{id}` is in the reader ({})",
        reader.module.display()
    );
    Ok(ExitCode::SUCCESS)
}
