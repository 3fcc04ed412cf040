//! Simulated SIMs for tests and benchmarks: a SoftHSM2 card of class sim, personalised
//! as the desk does it (both key pairs generated on it), with a certificate request for
//! each key, for the caller to have certified by the CA (`eid ca issue`) before
//! [`PersonalisedSim::finish`] stores the certificates and sets the PUK.

use std::path::{Path, PathBuf};

use eid_hsm::{
    CITIZEN_AUTHENTICATION_LABEL, CITIZEN_SIGNING_LABEL, CardId, CardReader, CitizenPins, HsmError,
    KeyLabel, KeySpec, KeyStore, PinKind, SecretString, TokenClass,
};

use crate::softhsm::{pkcs11_module, softhsm_environment};

/// The manufacturer's transport code of the blank SIMs.
pub const TRANSPORT: &str = "55667788";
/// The citizen's PIN1 (authentication).
pub const PIN1: &str = "4821";
/// The citizen's PIN2 (signing).
pub const PIN2: &str = "73915";
/// The citizen's PUK.
pub const PUK: &str = "83920174";

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

/// A SIM with its keys, waiting for its certificates.
pub struct PersonalisedSim {
    card: CardId,
    reader: CardReader,
    keys: Vec<(KeyStore, KeyLabel)>,
    /// PEM certificate requests: the authentication key's, then the signing key's.
    pub requests: [String; 2],
}

impl std::fmt::Debug for PersonalisedSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonalisedSim")
            .field("card", &self.card)
            .finish_non_exhaustive()
    }
}

fn request(store: &KeyStore, label: &KeyLabel, pin: &str) -> anyhow::Result<String> {
    use x509_cert::builder::{Builder, RequestBuilder};
    let signer = store.signer(label, None)?.with_pin(secret(pin));
    let subject: x509_cert::name::Name = "CN=sim".parse()?;
    let request = RequestBuilder::new(subject)?.build::<_, eid_hsm::Signature>(&signer)?;
    Ok(der::EncodePem::to_pem(&request, der::pem::LineEnding::LF)?)
}

/// Makes blank SIM `card` in the tests' SoftHSM2 folder and personalises it with a
/// P-256 key pair on each token. Blocks.
pub fn personalise(card: &str) -> anyhow::Result<PersonalisedSim> {
    softhsm_environment();
    let module = pkcs11_module();
    let card = CardId::new(card)?;
    eid_hsm::initialize_blank_card(&module, &card, &secret(TRANSPORT))?;
    let reader = CardReader::open(&module, TokenClass::Sim)?;
    let pins = CitizenPins {
        pin1: secret(PIN1),
        pin2: secret(PIN2),
        puk: secret(PUK),
    };
    reader.personalise(&card, &secret(TRANSPORT), &pins, KeySpec::EcP256)?;
    let mut keys = Vec::new();
    let mut requests = Vec::new();
    for (kind, pin, label) in [
        (PinKind::Pin1, PIN1, CITIZEN_AUTHENTICATION_LABEL),
        (PinKind::Pin2, PIN2, CITIZEN_SIGNING_LABEL),
    ] {
        let store = reader.store(&card, kind, &secret(pin))?;
        let label = KeyLabel::new(label)?;
        requests.push(request(&store, &label, pin)?);
        keys.push((store, label));
    }
    let requests = [requests.remove(0), requests.remove(0)];
    Ok(PersonalisedSim {
        card,
        reader,
        keys,
        requests,
    })
}

impl PersonalisedSim {
    /// The card's identifier.
    pub fn card(&self) -> &str {
        self.card.as_str()
    }

    /// Stores the certificates (PEM; the signing one may be left out) and finishes the
    /// SIM as the desk does: the transport code replaced by the PUK. Blocks.
    pub fn finish(self, authentication: &str, signing: Option<&str>) -> anyhow::Result<()> {
        use der::DecodePem;
        for ((store, label), pem) in self.keys.iter().zip([Some(authentication), signing]) {
            if let Some(pem) = pem {
                let certificate = x509_cert::Certificate::from_pem(pem.as_bytes())?;
                store.store_certificate(label, &der::Encode::to_der(&certificate)?)?;
            }
        }
        drop(self.keys);
        self.reader
            .finish(&self.card, &secret(TRANSPORT), &secret(PUK))
            .map_err(|e: HsmError| anyhow::anyhow!(e))?;
        Ok(())
    }
}

/// A configuration file whose `[keys]` section opens the PIN2 token of SIM `card`
/// (with its PIN in a file beside it): what `eid ca issue --key-store` reads the
/// signing key's QSCD evidence through.
pub fn signing_key_store_config(dir: &Path, card: &str) -> anyhow::Result<PathBuf> {
    let config = dir.join(format!("{card}-pin2.toml"));
    let pin_file = dir.join(format!("{card}-pin2.pin"));
    std::fs::write(&pin_file, PIN2)?;
    std::fs::write(
        &config,
        format!(
            "[keys]\nbackend = \"pkcs11\"\n[keys.pkcs11]\nmodule = {:?}\n\
             token_label = \"{card} (PIN2)\"\npin_file = {:?}\nclass = \"sim\"\n",
            pkcs11_module().display().to_string(),
            pin_file.display().to_string()
        ),
    )?;
    Ok(config)
}
