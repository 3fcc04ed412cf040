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
    /// Make a test SIM for a test citizen in one step (development and pilots only):
    /// a blank SIM in the simulator's module, personalised with both key pairs,
    /// certified by this instance's CA and registered. It skips the desk's in-person
    /// check, so the production profile refuses it; real SIMs are activated at the
    /// desk. Prints the SIM's PINs and PUK, as the PIN envelope would.
    TestSim {
        /// The phone number, + and country code.
        #[arg(long)]
        phone: String,
        /// The test citizen's national identity number.
        #[arg(long)]
        national_id: String,
        /// The test citizen's given name.
        #[arg(long)]
        given_name: String,
        /// The test citizen's surname.
        #[arg(long)]
        surname: String,
        /// The SIM's identifier (its tokens' label without " (PIN1)").
        #[arg(long)]
        card: String,
    },
    /// Activate a SIM over the air, as the mobile operator does: a blank SIM is
    /// personalised with both key pairs, their requests go to the registration
    /// authority (the enrolment service's POST /api/v1/sims/activations, with the
    /// operator's bearer token from EID_SIM_GATEWAY_OPERATOR_TOKEN), which issues the
    /// certificates only for a citizen verified in person; they are stored on the SIM
    /// and the SIM registered. Prints the PINs, as the PIN envelope would.
    OtaActivate {
        /// The phone number, + and country code.
        #[arg(long)]
        phone: String,
        /// The citizen's national identity number.
        #[arg(long)]
        national_id: String,
        /// The SIM's identifier.
        #[arg(long)]
        card: String,
        /// The enrolment service's base URL.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8083")]
        registration_authority: String,
    },
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
        SimGatewayCommand::TestSim {
            phone,
            national_id,
            given_name,
            surname,
            card,
        } => {
            let made = test_sim(ctx, &phone, &national_id, &given_name, &surname, &card).await?;
            println!("{}", serde_json::to_string_pretty(&made)?);
        }
        SimGatewayCommand::OtaActivate {
            phone,
            national_id,
            card,
            registration_authority,
        } => {
            let made =
                ota_activate(ctx, &phone, &national_id, &card, &registration_authority).await?;
            println!("{}", serde_json::to_string_pretty(&made)?);
        }
        SimGatewayCommand::Pin => {
            let context = ctx.clone();
            let tls = tokio::task::spawn_blocking(move || GatewayTls::load(&context)).await??;
            println!("{}", tls.pin);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Random digits that pass the citizen PIN rules for `kind`.
fn random_pin(kind: eid_hsm::PinKind, digits: usize) -> anyhow::Result<eid_hsm::SecretString> {
    loop {
        let mut bytes = vec![0u8; digits];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("random PIN: {e}"))?;
        let pin: String = bytes.iter().map(|b| char::from(b'0' + b % 10)).collect();
        let pin = eid_hsm::SecretString::from(pin);
        if eid_hsm::PinPolicy::CITIZEN.check(kind, &pin).is_ok() {
            return Ok(pin);
        }
    }
}

/// A certificate request (DER) signed by `signer`.
fn certificate_request(signer: &eid_hsm::KeySigner) -> anyhow::Result<Vec<u8>> {
    Ok(signer.certification_request("CN=test SIM")?)
}

/// A SIM just personalised by the simulator's operator: both key pairs generated on it,
/// their certificate requests made, the evidence about the signing key read from it.
struct NewSim {
    card: CardId,
    reader: eid_hsm::CardReader,
    /// The PIN1 then the PIN2 token's store, the key's label, its request (DER).
    keys: Vec<(eid_hsm::KeyStore, eid_hsm::KeyLabel, Vec<u8>)>,
    /// The signing key and what the SIM says about it.
    signing_evidence: eid_ca::KeyEvidence,
    pins: eid_hsm::CitizenPins,
    transport: eid_hsm::SecretString,
}

/// Makes blank SIM `card` in the simulator's module and personalises it with random
/// PINs (SoftHSM2 sees a token made in this process only when the module is loaded
/// afterwards, so the reader opens after the card).
async fn personalise_sim(ctx: &ServiceContext, card: &str) -> anyhow::Result<NewSim> {
    use eid_hsm::{
        CITIZEN_AUTHENTICATION_LABEL, CITIZEN_SIGNING_LABEL, CardReader, CitizenPins, KeyLabel,
        KeySpec, PinKind, TokenClass,
    };
    anyhow::ensure!(
        ctx.config.profile != Profile::Production,
        "the SIM gateway simulator is for development, tests and pilots: the production profile refuses it"
    );
    let module = ctx.config.sim_gateway.module.clone().context(
        "the SIM gateway simulator needs the PKCS#11 module of its SIMs: set EID_SIM_GATEWAY_MODULE or [sim_gateway] module",
    )?;
    let card = CardId::new(card)?;
    let pins = CitizenPins {
        pin1: random_pin(PinKind::Pin1, 4)?,
        pin2: random_pin(PinKind::Pin2, 5)?,
        puk: random_pin(PinKind::Puk, 8)?,
    };
    let transport = random_pin(PinKind::Puk, 8)?;
    let (id, secrets, transport_code) = (card.clone(), pins.clone(), transport.clone());
    let (reader, keys, signing_evidence) = tokio::task::spawn_blocking(move || {
        eid_hsm::initialize_blank_card(&module, &id, &transport_code)?;
        let reader = CardReader::open(&module, TokenClass::Sim)?;
        reader.personalise(&id, &transport_code, &secrets, KeySpec::EcP256)?;
        let mut keys = Vec::new();
        let mut evidence = None;
        for (kind, pin, label) in [
            (PinKind::Pin1, &secrets.pin1, CITIZEN_AUTHENTICATION_LABEL),
            (PinKind::Pin2, &secrets.pin2, CITIZEN_SIGNING_LABEL),
        ] {
            let store = reader.store(&id, kind, pin)?;
            let label = KeyLabel::new(label)?;
            let signer = store.signer(&label, None)?.with_pin(pin.clone());
            let csr = certificate_request(&signer)?;
            evidence = Some(eid_ca::KeyEvidence {
                public_key: signer.public_key().clone(),
                qscd: store.qscd_evidence(&label)?,
            });
            keys.push((store, label, csr));
        }
        let evidence = evidence.context("the SIM has no signing key")?;
        anyhow::Ok((reader, keys, evidence))
    })
    .await??;
    Ok(NewSim {
        card,
        reader,
        keys,
        signing_evidence,
        pins,
        transport,
    })
}

impl NewSim {
    /// Stores the certificates (DER: authentication, signing), sets the PUK, and
    /// registers the SIM with the simulator; returns what the PIN envelope says.
    async fn finish(
        self,
        ctx: &ServiceContext,
        phone: &str,
        national_id: &str,
        certificates: [Vec<u8>; 2],
        actor: &str,
    ) -> anyhow::Result<serde_json::Value> {
        use secrecy::ExposeSecret;
        let Self {
            card,
            reader,
            keys,
            pins,
            transport,
            ..
        } = self;
        let (id, puk) = (card.clone(), pins.puk.clone());
        tokio::task::spawn_blocking(move || {
            for ((store, label, _), der) in keys.iter().zip(&certificates) {
                store.store_certificate(label, der)?;
            }
            drop(keys);
            reader.finish(&id, &transport, &puk)?;
            anyhow::Ok(())
        })
        .await??;
        let gateway = open(ctx)?;
        let sim = gateway.add_sim(phone, national_id, &card, actor).await?;
        Ok(serde_json::json!({
            "sim": sim,
            "pin1": pins.pin1.expose_secret(),
            "pin2": pins.pin2.expose_secret(),
            "puk": pins.puk.expose_secret(),
        }))
    }
}

/// `eid sim-gateway test-sim`: see the command's help.
async fn test_sim(
    ctx: &ServiceContext,
    phone: &str,
    national_id: &str,
    given_name: &str,
    surname: &str,
    card: &str,
) -> anyhow::Result<serde_json::Value> {
    let national = eid_ca::NationalId::new(national_id)?;
    let name = eid_ca::PersonName::new(given_name, surname)?;
    let sim = personalise_sim(ctx, card).await?;
    let ca = eid_ca::CertificateAuthority::open(ctx).await?;
    let actor = "operator:sim-gateway-test-sim";
    let mut issued = Vec::new();
    for ((_, _, csr), (profile, evidence)) in sim.keys.iter().zip([
        (eid_ca::Profile::CitizenAuthentication, None),
        (
            eid_ca::Profile::CitizenSigning,
            Some(sim.signing_evidence.clone()),
        ),
    ]) {
        issued.push(
            ca.issue(eid_ca::IssueRequest {
                profile,
                csr: csr.clone(),
                holder: eid_ca::Holder::Citizen {
                    national_id: national.clone(),
                    name: name.clone(),
                },
                requested_by: actor.into(),
                key_evidence: evidence,
            })
            .await?,
        );
    }
    let serials: Vec<String> = issued.iter().map(|c| c.serial.to_hex()).collect();
    let [auth, sign] = [&issued[0], &issued[1]].map(|c| c.der.clone());
    let mut made = sim
        .finish(ctx, phone, national_id, [auth, sign], actor)
        .await?;
    made["certificates"] = serde_json::json!(serials);
    Ok(made)
}

/// `eid sim-gateway ota-activate`: see the command's help.
async fn ota_activate(
    ctx: &ServiceContext,
    phone: &str,
    national_id: &str,
    card: &str,
    registration_authority: &str,
) -> anyhow::Result<serde_json::Value> {
    use der::{DecodePem, Encode};
    let token = std::env::var("EID_SIM_GATEWAY_OPERATOR_TOKEN").context(
        "the registration authority knows the operator by a bearer token: set EID_SIM_GATEWAY_OPERATOR_TOKEN",
    )?;
    let sim = personalise_sim(ctx, card).await?;
    let pem = |der: &[u8]| -> anyhow::Result<String> {
        let request = <x509_cert::request::CertReq as der::Decode>::from_der(der)?;
        Ok(der::EncodePem::to_pem(&request, der::pem::LineEnding::LF)?)
    };
    let body = serde_json::json!({
        "national_id": national_id,
        "phone_number": phone,
        "sim_id": card,
        "authentication_csr": pem(&sim.keys[0].2)?,
        "signing_csr": pem(&sim.keys[1].2)?,
        "signing_key": sim.signing_evidence.qscd.attributes,
    });
    let url = format!(
        "{}/api/v1/sims/activations",
        registration_authority.trim_end_matches('/')
    );
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("the registration authority at {url} cannot be reached"))?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        // The SIM stays half-made (keys, no certificates); the operator wipes it.
        anyhow::bail!(
            "the registration authority refused the activation (HTTP {status}): {}",
            answer["detail"].as_str().unwrap_or("no reason given")
        );
    }
    let certificate = |field: &str| -> anyhow::Result<Vec<u8>> {
        let text = answer[field]
            .as_str()
            .with_context(|| format!("the answer has no {field}"))?;
        Ok(x509_cert::Certificate::from_pem(text.as_bytes())?.to_der()?)
    };
    let certificates = [
        certificate("authentication_certificate")?,
        certificate("signing_certificate")?,
    ];
    let mut made = sim
        .finish(
            ctx,
            phone,
            national_id,
            certificates,
            "operator:sim-gateway-ota",
        )
        .await?;
    made["activation_id"] = answer["activation_id"].clone();
    made["certificates"] =
        serde_json::json!([answer["authentication_serial"], answer["signing_serial"]]);
    Ok(made)
}
