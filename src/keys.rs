//! `eid keys`: the key store the configuration names (the instance's, or a citizen's
//! token), without the database.

use std::process::ExitCode;

use anyhow::Context;
use eid_core::Config;
use eid_hsm::{KeyLabel, KeySpec, SecretString};

use crate::cli::KeysCommand;

#[allow(clippy::print_stdout)] // command output is the point of a CLI
pub(crate) async fn run(config: &Config, command: KeysCommand) -> anyhow::Result<ExitCode> {
    let store = eid_core::instance::open_key_store(&config.keys, false).await?;
    match command {
        KeysCommand::List => {
            let keys = store.clone();
            let list = tokio::task::spawn_blocking(move || keys.list()).await??;
            println!("{} (class {})", store.description(), store.class());
            for key in list {
                let a = key.attributes;
                println!(
                    "  {:<28} {:<9} {:<24} sensitive={} extractable={} never_extractable={} local={} always_authenticate={}",
                    key.label.as_str(),
                    key.spec.name(),
                    format!("{:?}", key.role),
                    a.sensitive,
                    a.extractable,
                    a.never_extractable,
                    a.local,
                    a.always_authenticate
                );
            }
        }
        KeysCommand::GenerateCitizen { spec } => {
            let spec = KeySpec::parse(&spec)?;
            let keys = store.clone();
            let pairs = tokio::task::spawn_blocking(move || keys.generate_citizen_key_pairs(spec))
                .await??;
            for key in [pairs.authentication, pairs.signing] {
                println!(
                    "generated {} ({}) on {}",
                    key.label,
                    key.spec,
                    store.description()
                );
            }
        }
        KeysCommand::Csr { label, pin_file } => {
            let label = KeyLabel::new(label)?;
            let pin = pin_file
                .map(|path| {
                    std::fs::read_to_string(&path)
                        .map(|text| {
                            SecretString::from(text.trim_end_matches(['\n', '\r']).to_owned())
                        })
                        .with_context(|| format!("cannot read the PIN file {}", path.display()))
                })
                .transpose()?;
            let subject = format!("CN={label}");
            let keys = store.clone();
            let der = tokio::task::spawn_blocking(move || {
                let mut signer = keys.signer(&label, None)?;
                if let Some(pin) = pin {
                    signer = signer.with_pin(pin);
                }
                anyhow::Ok(signer.certification_request(&subject)?)
            })
            .await??;
            print!("{}", crate::ca::pem("CERTIFICATE REQUEST", &der)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
