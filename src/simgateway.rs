//! `eid sim-gateway …` and `eid serve sim-gateway`: the SIM gateway simulator
//! (development, tests and pilots; refused by the production profile).

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Subcommand;
use eid_core::{ServiceContext, config::Profile};
use eid_hsm::CardId;
use eid_sim_gateway::{GatewayTls, SimGateway, SimGatewayOptions};

#[derive(Debug, Subcommand)]
pub(crate) enum SimGatewayCommand {
    /// Register a simulated SIM: a card of class sim in the simulator's PKCS#11 module
    /// (tokens `<card> (PIN1)` and `<card> (PIN2)`, both key pairs on them), answering
    /// for a phone number and a national identity number.
    AddSim {
        /// The phone number, + and country code (e.g. +18685550123).
        #[arg(long)]
        phone: String,
        /// The national identity number of the SIM's holder.
        #[arg(long)]
        national_id: String,
        /// The card (SIM) identifier: its tokens' label without " (PIN1)".
        #[arg(long)]
        card: String,
    },
    /// Print the pin of the simulator's TLS key (what relying parties configure).
    Pin,
}

/// How long the simulated phone waits for the tester: `EID_SIM_GATEWAY_ANSWER_SECS`,
/// default 120 (MID REST's two minutes).
fn answer_timeout() -> anyhow::Result<Duration> {
    match std::env::var("EID_SIM_GATEWAY_ANSWER_SECS") {
        Ok(text) => {
            let secs: u64 = text.parse().with_context(|| {
                format!("EID_SIM_GATEWAY_ANSWER_SECS: `{text}` is not a whole number of seconds")
            })?;
            anyhow::ensure!(
                (1..=600).contains(&secs),
                "EID_SIM_GATEWAY_ANSWER_SECS must be 1 to 600"
            );
            Ok(Duration::from_secs(secs))
        }
        Err(_) => Ok(Duration::from_secs(120)),
    }
}

/// Opens the simulator, refusing the production profile and a missing module.
pub(crate) fn open(ctx: &ServiceContext) -> anyhow::Result<SimGateway> {
    anyhow::ensure!(
        ctx.config.profile != Profile::Production,
        "the SIM gateway simulator is for development, tests and pilots: the production profile refuses it"
    );
    let module = ctx.config.sim_gateway.module.clone().context(
        "the SIM gateway simulator needs the PKCS#11 module of its SIMs: set EID_SIM_GATEWAY_MODULE or [sim_gateway] module",
    )?;
    Ok(SimGateway::open(
        ctx,
        SimGatewayOptions {
            module,
            answer_timeout: answer_timeout()?,
        },
    )?)
}

#[allow(clippy::print_stdout)] // command output
pub(crate) async fn run(
    ctx: &ServiceContext,
    command: SimGatewayCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        SimGatewayCommand::AddSim {
            phone,
            national_id,
            card,
        } => {
            let gateway = open(ctx)?;
            let card = CardId::new(card)?;
            let sim = gateway
                .add_sim(&phone, &national_id, &card, "operator:cli")
                .await?;
            println!("{}", serde_json::to_string_pretty(&sim)?);
        }
        SimGatewayCommand::Pin => {
            let context = ctx.clone();
            let tls = tokio::task::spawn_blocking(move || GatewayTls::load(&context)).await??;
            println!("{}", tls.pin);
        }
    }
    Ok(ExitCode::SUCCESS)
}
