//! Personalising a citizen's card, on SoftHSM2 cards made the way a manufacturer
//! delivers them (two tokens per card, transport code as SO PIN, nothing else), and
//! judged by OpenSC's pkcs11-tool and openssl as well as by our own code.
//!
//! Every test makes its own card with a unique identifier; the reader lists every
//! card of the process, so tests only assert about their own.
#![allow(clippy::unwrap_used)]

mod common;

use std::{path::Path, process::Command, str::FromStr, time::Duration};

use common::{module, secret, softhsm_environment, unique_label};
use der::Encode;
use eid_hsm::{
    CITIZEN_AUTHENTICATION_LABEL, CITIZEN_SIGNING_LABEL, CardId, CardReader, CardState,
    CitizenPins, HsmError, KeyLabel, KeyRole, KeySigner, KeySpec, PinKind, TokenClass,
    initialize_blank_card,
};
use x509_cert::{
    builder::{Builder, CertificateBuilder, profile::cabf::Root},
    name::Name,
    serial_number::SerialNumber,
    spki::SubjectPublicKeyInfo,
    time::Validity,
};

const TRANSPORT: &str = "30571946";
const PIN1: &str = "4821";
const PIN2: &str = "53917";
const PUK: &str = "83910274";
const MESSAGE: &[u8] = b"certificate request of the citizen: proof of possession";

fn pins() -> CitizenPins {
    CitizenPins {
        pin1: secret(PIN1),
        pin2: secret(PIN2),
        puk: secret(PUK),
    }
}

fn reader(class: TokenClass) -> CardReader {
    softhsm_environment();
    CardReader::open(&module(), class).unwrap()
}

/// A new blank card in the reader.
fn blank_card() -> CardId {
    softhsm_environment();
    let id = CardId::new(unique_label("EID")).unwrap();
    initialize_blank_card(&module(), &id, &secret(TRANSPORT)).unwrap();
    id
}

fn label(s: &str) -> KeyLabel {
    KeyLabel::new(s).unwrap()
}

/// Signs and checks the signature with our verifier and with openssl.
fn assert_signs(signer: &KeySigner) {
    let signature = signer.sign(MESSAGE).unwrap();
    signer
        .public_key()
        .verify(signer.scheme(), MESSAGE, signature.as_bytes())
        .unwrap();
    assert!(common::openssl_verifies(
        signer.public_key(),
        signer.scheme(),
        MESSAGE,
        signature.as_bytes()
    ));
}

/// A self-signed certificate over the card key, signed by the card.
fn self_signed(signer: &KeySigner, common_name: &str, serial: u64) -> Vec<u8> {
    let subject = Name::from_str(&format!("CN={common_name},O=eid card tests,C=EE")).unwrap();
    let builder = CertificateBuilder::new(
        Root::new(false, subject).unwrap(),
        SerialNumber::from(serial),
        Validity::from_now(Duration::from_secs(3600)).unwrap(),
        SubjectPublicKeyInfo::from_key(signer.public_key()).unwrap(),
    )
    .unwrap();
    builder
        .build::<_, eid_hsm::Signature>(signer)
        .unwrap()
        .to_der()
        .unwrap()
}

/// Runs OpenSC's pkcs11-tool on the module (SOFTHSM2_CONF is inherited).
fn pkcs11_tool(token: &str, args: &[&str]) -> String {
    let output = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(module())
        .args(["--token-label", token])
        .args(args)
        .output()
        .expect("pkcs11-tool (opensc) is installed");
    assert!(
        output.status.success(),
        "pkcs11-tool {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `Access:` line pkcs11-tool prints for the private key labelled `key`.
fn private_key_access(listing: &str, key: &str) -> String {
    listing
        .split("Private Key Object")
        .skip(1)
        .find(|block| {
            block
                .lines()
                .any(|line| line.trim() == format!("label:      {key}"))
        })
        .and_then(|block| {
            block
                .lines()
                .find_map(|line| line.trim().strip_prefix("Access:"))
        })
        .map(|access| access.trim().to_owned())
        .unwrap_or_else(|| panic!("no private key `{key}` in:\n{listing}"))
}

/// Parses a DER certificate with `openssl x509` and returns its text output.
fn openssl_x509(der_file: &Path) -> String {
    let output = Command::new("openssl")
        .args([
            "x509", "-inform", "DER", "-noout", "-subject", "-serial", "-in",
        ])
        .arg(der_file)
        .output()
        .expect("openssl is installed");
    assert!(
        output.status.success(),
        "openssl x509 rejects the certificate: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn blank_card_is_personalised_used_and_finished() {
    let reader = reader(TokenClass::Smartcard);
    let id = blank_card();

    let card = reader.card(&id).unwrap();
    assert_eq!(card.state, CardState::Blank);
    assert_eq!(card.class, TokenClass::Smartcard);
    assert_eq!(card.pin1.label, format!("{id} (PIN1)"));
    assert_eq!(card.pin2.label, format!("{id} (PIN2)"));
    assert!(!card.pin1.serial.is_empty() && card.pin1.serial != card.pin2.serial);
    assert!(!card.pin1.user_pin_initialised && !card.pin2.user_pin_initialised);
    let listed = reader.cards().unwrap();
    assert_eq!(listed.iter().filter(|c| c.id == id).count(), 1);
    let blank = |reader: &CardReader| {
        reader
            .blank_cards()
            .unwrap()
            .iter()
            .any(|c| c.id == id && c.state == CardState::Blank)
    };
    assert!(blank(&reader));

    let personalised = reader
        .personalise(&id, &secret(TRANSPORT), &pins(), KeySpec::EcP256)
        .unwrap();
    assert_eq!(personalised.card.state, CardState::Personalising);
    // Half-made and finished cards are no blank cards.
    assert!(!blank(&reader));
    assert_eq!(personalised.card.pin1.keys, [CITIZEN_AUTHENTICATION_LABEL]);
    assert_eq!(personalised.card.pin2.keys, [CITIZEN_SIGNING_LABEL]);
    let authentication = &personalised.authentication;
    let signing = &personalised.signing;
    assert_eq!(authentication.label.as_str(), CITIZEN_AUTHENTICATION_LABEL);
    assert_eq!(authentication.role, KeyRole::CitizenAuthentication);
    assert_eq!(signing.label.as_str(), CITIZEN_SIGNING_LABEL);
    assert_eq!(signing.role, KeyRole::CitizenSigning);
    for info in [authentication, signing] {
        let a = info.attributes;
        assert!(a.sensitive && !a.extractable && a.never_extractable && a.local);
    }
    assert!(!authentication.attributes.always_authenticate);
    assert!(signing.attributes.always_authenticate);
    assert!(personalised.signing_evidence.is_qscd());
    assert_eq!(
        personalised.signing_evidence.token_class,
        TokenClass::Smartcard
    );
    assert!(!personalised.authentication_evidence.is_qscd());
    assert_ne!(authentication.public_key, signing.public_key);

    // The authentication key signs after PIN1, with no PIN per signature.
    let pin1_store = reader.store(&id, PinKind::Pin1, &secret(PIN1)).unwrap();
    let auth_signer = pin1_store
        .signer(&label(CITIZEN_AUTHENTICATION_LABEL), None)
        .unwrap();
    assert_eq!(auth_signer.public_key(), &authentication.public_key);
    assert_signs(&auth_signer);
    // While the store is open the process is logged in to the token, so a second
    // store could not have its PIN checked: refused.
    assert!(matches!(
        reader.store(&id, PinKind::Pin1, &secret("9090")),
        Err(HsmError::CardInUse { token, .. }) if token == card.pin1.label
    ));

    // The signing key needs PIN2 for every signature.
    let pin2_store = reader.store(&id, PinKind::Pin2, &secret(PIN2)).unwrap();
    let sign_signer = pin2_store
        .signer(&label(CITIZEN_SIGNING_LABEL), None)
        .unwrap();
    assert_eq!(sign_signer.public_key(), &signing.public_key);
    let without = sign_signer.sign(MESSAGE);
    assert!(
        matches!(without, Err(HsmError::PinRequired { .. })),
        "{without:?}"
    );
    let wrong = sign_signer.clone().with_pin(secret("90901")).sign(MESSAGE);
    assert!(matches!(wrong, Err(HsmError::WrongPin { .. })), "{wrong:?}");
    let sign_signer = sign_signer.with_pin(secret(PIN2));
    assert_signs(&sign_signer);
    assert_signs(&sign_signer);
    // The authentication key is not on the PIN2 token, nor the signing key on PIN1.
    assert!(
        pin2_store
            .find(&label(CITIZEN_AUTHENTICATION_LABEL))
            .unwrap()
            .is_none()
    );
    assert!(
        pin1_store
            .find(&label(CITIZEN_SIGNING_LABEL))
            .unwrap()
            .is_none()
    );

    // Certificates, made by the card's own keys, go beside the keys.
    let auth_certificate = self_signed(&auth_signer, "CARD TEST AUTHENTICATION", 0x0a01);
    let sign_certificate = self_signed(&sign_signer, "CARD TEST SIGNING", 0x0a02);
    let auth_label = label(CITIZEN_AUTHENTICATION_LABEL);
    let sign_label = label(CITIZEN_SIGNING_LABEL);
    assert_eq!(pin1_store.certificate(&auth_label).unwrap(), None);
    // A first certificate is replaced by the next (the card shows one, below).
    let provisional = self_signed(&auth_signer, "CARD TEST PROVISIONAL", 0x0901);
    pin1_store
        .store_certificate(&auth_label, &provisional)
        .unwrap();
    pin1_store
        .store_certificate(&auth_label, &auth_certificate)
        .unwrap();
    pin2_store
        .store_certificate(&sign_label, &sign_certificate)
        .unwrap();
    // Storing the same certificate again is harmless; one for another key is refused.
    pin1_store
        .store_certificate(&auth_label, &auth_certificate)
        .unwrap();
    assert!(matches!(
        pin2_store.store_certificate(&sign_label, &auth_certificate),
        Err(HsmError::CertificateMismatch { .. })
    ));
    assert!(matches!(
        pin2_store.store_certificate(&sign_label, b"not a certificate"),
        Err(HsmError::Encoding { .. })
    ));
    assert_eq!(
        pin1_store.certificate(&auth_label).unwrap().as_deref(),
        Some(auth_certificate.as_slice())
    );
    assert_eq!(
        pin2_store.certificate(&sign_label).unwrap().as_deref(),
        Some(sign_certificate.as_slice())
    );

    // The card in use cannot be finished; the stores (and their signers) go first.
    let in_use = reader.finish(&id, &secret(TRANSPORT), &secret(PUK));
    assert!(
        matches!(&in_use, Err(HsmError::CardInUse { token, .. }) if *token == card.pin1.label),
        "{in_use:?}"
    );
    drop((auth_signer, sign_signer, pin1_store, pin2_store));
    assert!(matches!(
        reader.store(&id, PinKind::Pin1, &secret("9090")),
        Err(HsmError::WrongPin { token }) if token == card.pin1.label
    ));
    let before_finish = reader.card(&id).unwrap();
    assert_eq!(before_finish.state, CardState::Personalising);
    assert_eq!(
        before_finish.pin1.certificates,
        [CITIZEN_AUTHENTICATION_LABEL]
    );
    assert_eq!(before_finish.pin2.certificates, [CITIZEN_SIGNING_LABEL]);

    let finished = reader
        .finish(&id, &secret(TRANSPORT), &secret(PUK))
        .unwrap();
    assert_eq!(finished.state, CardState::Personalised);
    assert!(finished.pin1.finished && finished.pin2.finished);
    assert_eq!(reader.card(&id).unwrap().state, CardState::Personalised);
    assert_eq!(
        reader
            .cards()
            .unwrap()
            .into_iter()
            .find(|c| c.id == id)
            .map(|c| c.state),
        Some(CardState::Personalised)
    );
    // Finishing twice, or personalising a card that is not blank, is refused.
    assert!(matches!(
        reader.finish(&id, &secret(TRANSPORT), &secret(PUK)),
        Err(HsmError::CardState { .. })
    ));
    let again = reader
        .personalise(&id, &secret(TRANSPORT), &pins(), KeySpec::EcP256)
        .unwrap_err();
    let message = again.to_string();
    assert!(matches!(again, HsmError::CardNotBlank { .. }), "{again:?}");
    assert!(
        message.starts_with(&format!("card {id} is not blank: it holds "))
            && message.contains(&format!("key {CITIZEN_SIGNING_LABEL}"))
            && message.contains("PUK set"),
        "{message}"
    );

    // The keys still work once finished.
    let pin2_store = reader.store(&id, PinKind::Pin2, &secret(PIN2)).unwrap();
    assert_signs(
        &pin2_store
            .signer(&sign_label, None)
            .unwrap()
            .with_pin(secret(PIN2)),
    );
    drop(pin2_store);

    // Independent judge: OpenSC's pkcs11-tool reads the card's attributes...
    let pin2_listing = pkcs11_tool(
        &card.pin2.label,
        &["--login", "--pin", PIN2, "--list-objects"],
    );
    assert_eq!(
        private_key_access(&pin2_listing, CITIZEN_SIGNING_LABEL),
        "always authenticate, sensitive, always sensitive, never extractable, local",
        "{pin2_listing}"
    );
    let pin1_listing = pkcs11_tool(
        &card.pin1.label,
        &["--login", "--pin", PIN1, "--list-objects"],
    );
    assert_eq!(
        private_key_access(&pin1_listing, CITIZEN_AUTHENTICATION_LABEL),
        "sensitive, always sensitive, never extractable, local",
        "{pin1_listing}"
    );
    // ... and the certificates it reads (without a login) parse with openssl.
    let dir = tempfile::tempdir().unwrap();
    for (token, key, common_name, serial) in [
        (
            &card.pin1.label,
            CITIZEN_AUTHENTICATION_LABEL,
            "CARD TEST AUTHENTICATION",
            "0A01",
        ),
        (
            &card.pin2.label,
            CITIZEN_SIGNING_LABEL,
            "CARD TEST SIGNING",
            "0A02",
        ),
    ] {
        let file = dir.path().join(format!("{key}.der"));
        let file_name = file.to_str().unwrap();
        pkcs11_tool(
            token,
            &[
                "--read-object",
                "--type",
                "cert",
                "--label",
                key,
                "--output-file",
                file_name,
            ],
        );
        let text = openssl_x509(&file);
        assert!(text.contains(&format!("CN = {common_name}")), "{text}");
        assert!(text.contains(&format!("serial={serial}")), "{text}");
    }
}

#[test]
fn pins_are_checked_against_the_policy_before_the_card_is_touched() {
    let reader = reader(TokenClass::Smartcard);
    let id = blank_card();
    let cases = [
        (PinKind::Pin1, "482", "PIN1"),
        (PinKind::Pin1, "1234", "PIN1"),
        (PinKind::Pin2, "4821", "PIN2"),
        (PinKind::Pin2, "5391a", "PIN2"),
        (PinKind::Puk, "8391027", "PUK"),
        (PinKind::Puk, "1111111111", "PUK"),
        // The PUK replaces the transport code, so it must not be the same.
        (PinKind::Puk, TRANSPORT, "PUK"),
    ];
    for (kind, value, name) in cases {
        let mut pins = pins();
        match kind {
            PinKind::Pin1 => pins.pin1 = secret(value),
            PinKind::Pin2 => pins.pin2 = secret(value),
            _ => pins.puk = secret(value),
        }
        let result = reader.personalise(&id, &secret(TRANSPORT), &pins, KeySpec::EcP256);
        match result {
            Err(error @ HsmError::PinPolicy { kind: refused, .. }) => {
                assert_eq!(refused, kind, "{value}");
                let message = error.to_string();
                assert!(message.starts_with(name), "{message}");
                assert!(
                    !message.contains(value),
                    "the message shows the PIN: {message}"
                );
            }
            other => panic!("{name} {value}: expected a policy error, got {other:?}"),
        }
    }
    assert_eq!(reader.card(&id).unwrap().state, CardState::Blank);
    // The PIN rules hold for finishing, unblocking and changing too.
    assert!(matches!(
        reader.finish(&id, &secret(TRANSPORT), &secret("123")),
        Err(HsmError::PinPolicy {
            kind: PinKind::Puk,
            ..
        })
    ));
    assert!(matches!(
        reader.unblock(&id, PinKind::Pin2, &secret(PUK), &secret("1111")),
        Err(HsmError::PinPolicy {
            kind: PinKind::Pin2,
            ..
        })
    ));
    assert!(matches!(
        reader.change_pin(&id, PinKind::Pin1, &secret(PIN1), &secret("98")),
        Err(HsmError::PinPolicy {
            kind: PinKind::Pin1,
            ..
        })
    ));
}

#[test]
fn wrong_transport_code_is_refused_and_the_card_stays_blank() {
    let reader = reader(TokenClass::Smartcard);
    let id = blank_card();
    let result = reader.personalise(&id, &secret("99999999"), &pins(), KeySpec::EcP256);
    match result {
        Err(error @ HsmError::WrongTransportCode { .. }) => {
            let message = error.to_string();
            assert!(message.contains(&format!("{id} (PIN1)")), "{message}");
            assert!(message.contains("transport code"), "{message}");
            assert!(!message.contains("99999999") && !message.contains(TRANSPORT));
        }
        other => panic!("expected WrongTransportCode, got {other:?}"),
    }
    let card = reader.card(&id).unwrap();
    assert_eq!(card.state, CardState::Blank);
    // A blank card has no key store to open and nothing to finish or unblock.
    assert!(matches!(
        reader.store(&id, PinKind::Pin1, &secret(PIN1)),
        Err(HsmError::CardState { .. })
    ));
    assert!(matches!(
        reader.finish(&id, &secret(TRANSPORT), &secret(PUK)),
        Err(HsmError::CardState { .. })
    ));
    assert!(matches!(
        reader.unblock(&id, PinKind::Pin1, &secret(TRANSPORT), &secret(PIN1)),
        Err(HsmError::CardState { .. })
    ));
    // The right code still works.
    reader
        .personalise(&id, &secret(TRANSPORT), &pins(), KeySpec::EcP384)
        .unwrap();
}

#[test]
fn reset_while_personalising_takes_the_transport_code() {
    let reader = reader(TokenClass::Smartcard);
    let id = blank_card();
    let first = reader
        .personalise(&id, &secret(TRANSPORT), &pins(), KeySpec::EcP256)
        .unwrap();
    assert!(matches!(
        reader.reset(&id, &secret("99999999"), None),
        Err(HsmError::WrongTransportCode { .. })
    ));
    let card = reader.reset(&id, &secret(TRANSPORT), None).unwrap();
    assert_eq!(card.state, CardState::Blank, "{}", card.contents());
    assert!(!card.pin1.user_pin_initialised && card.pin1.keys.is_empty());
    assert!(!card.pin2.user_pin_initialised && card.pin2.keys.is_empty());
    // The old PINs are gone with the keys.
    assert!(reader.store(&id, PinKind::Pin1, &secret(PIN1)).is_err());

    let second = reader
        .personalise(&id, &secret(TRANSPORT), &pins(), KeySpec::EcP256)
        .unwrap();
    assert_ne!(first.signing.public_key, second.signing.public_key);
    assert_ne!(
        first.authentication.public_key,
        second.authentication.public_key
    );
}

#[test]
fn reset_of_a_personalised_card_takes_the_puk_and_restores_the_transport_code() {
    let reader = reader(TokenClass::Smartcard);
    let id = blank_card();
    reader
        .personalise(&id, &secret(TRANSPORT), &pins(), KeySpec::EcP256)
        .unwrap();
    reader
        .finish(&id, &secret(TRANSPORT), &secret(PUK))
        .unwrap();
    // The transport code no longer opens a finished card.
    let without_puk = reader.reset(&id, &secret(TRANSPORT), None);
    assert!(
        matches!(&without_puk, Err(HsmError::CardState { detail, .. }) if detail.contains("needs the PUK")),
        "{without_puk:?}"
    );
    let wrong_puk = reader.reset(&id, &secret(TRANSPORT), Some(&secret("29475018")));
    assert!(
        matches!(wrong_puk, Err(HsmError::WrongPuk { .. })),
        "{wrong_puk:?}"
    );
    assert_eq!(reader.card(&id).unwrap().state, CardState::Personalised);

    let card = reader
        .reset(&id, &secret(TRANSPORT), Some(&secret(PUK)))
        .unwrap();
    assert_eq!(card.state, CardState::Blank, "{}", card.contents());
    // The transport code is the security officer PIN again: a new citizen's card.
    reader
        .personalise(&id, &secret(TRANSPORT), &pins(), KeySpec::EcP256)
        .unwrap();
    reader
        .finish(&id, &secret(TRANSPORT), &secret("61829374"))
        .unwrap();
}

#[test]
fn unblock_with_the_puk_sets_a_new_pin() {
    let reader = reader(TokenClass::Smartcard);
    let id = blank_card();
    reader
        .personalise(&id, &secret(TRANSPORT), &pins(), KeySpec::EcP256)
        .unwrap();
    reader
        .finish(&id, &secret(TRANSPORT), &secret(PUK))
        .unwrap();
    // SoftHSM never blocks a PIN; a forgotten one is reset the same way.
    assert!(matches!(
        reader.unblock(&id, PinKind::Pin1, &secret("29475018"), &secret("7315")),
        Err(HsmError::WrongPuk { .. })
    ));
    assert!(matches!(
        reader.unblock(&id, PinKind::Pin1, &secret(TRANSPORT), &secret("7315")),
        Err(HsmError::WrongPuk { .. })
    ));
    assert!(matches!(
        reader.unblock(&id, PinKind::Puk, &secret(PUK), &secret("61829374")),
        Err(HsmError::TokenPolicy { .. })
    ));
    reader
        .unblock(&id, PinKind::Pin1, &secret(PUK), &secret("7315"))
        .unwrap();
    let store = reader.store(&id, PinKind::Pin1, &secret("7315")).unwrap();
    assert_signs(
        &store
            .signer(&label(CITIZEN_AUTHENTICATION_LABEL), None)
            .unwrap(),
    );
    drop(store);
    assert!(matches!(
        reader.store(&id, PinKind::Pin1, &secret(PIN1)),
        Err(HsmError::WrongPin { .. })
    ));
    // PIN2 was not touched.
    let store = reader.store(&id, PinKind::Pin2, &secret(PIN2)).unwrap();
    drop(store);

    reader
        .unblock(&id, PinKind::Pin2, &secret(PUK), &secret("64208"))
        .unwrap();
    let store = reader.store(&id, PinKind::Pin2, &secret("64208")).unwrap();
    let signer = store.signer(&label(CITIZEN_SIGNING_LABEL), None).unwrap();
    assert!(matches!(
        signer.clone().with_pin(secret(PIN2)).sign(MESSAGE),
        Err(HsmError::WrongPin { .. })
    ));
    assert_signs(&signer.with_pin(secret("64208")));
}

#[test]
fn pins_and_the_puk_can_be_changed_knowing_the_old_one() {
    let reader = reader(TokenClass::Smartcard);
    let id = blank_card();
    reader
        .personalise(&id, &secret(TRANSPORT), &pins(), KeySpec::EcP256)
        .unwrap();
    // Before finishing there is no PUK to change.
    assert!(matches!(
        reader.change_pin(&id, PinKind::Puk, &secret(TRANSPORT), &secret("61829374")),
        Err(HsmError::CardState { .. })
    ));
    reader
        .finish(&id, &secret(TRANSPORT), &secret(PUK))
        .unwrap();

    assert!(matches!(
        reader.change_pin(&id, PinKind::Pin2, &secret("90901"), &secret("64208")),
        Err(HsmError::WrongPin { .. })
    ));
    reader
        .change_pin(&id, PinKind::Pin2, &secret(PIN2), &secret("64208"))
        .unwrap();
    assert!(matches!(
        reader.store(&id, PinKind::Pin2, &secret(PIN2)),
        Err(HsmError::WrongPin { .. })
    ));
    let store = reader.store(&id, PinKind::Pin2, &secret("64208")).unwrap();
    assert_signs(
        &store
            .signer(&label(CITIZEN_SIGNING_LABEL), None)
            .unwrap()
            .with_pin(secret("64208")),
    );
    drop(store);
    reader
        .change_pin(&id, PinKind::Pin1, &secret(PIN1), &secret("7315"))
        .unwrap();
    reader.store(&id, PinKind::Pin1, &secret("7315")).unwrap();

    assert!(matches!(
        reader.change_pin(&id, PinKind::Puk, &secret("29475018"), &secret("61829374")),
        Err(HsmError::WrongPuk { .. })
    ));
    reader
        .change_pin(&id, PinKind::Puk, &secret(PUK), &secret("61829374"))
        .unwrap();
    assert!(matches!(
        reader.unblock(&id, PinKind::Pin1, &secret(PUK), &secret("6024")),
        Err(HsmError::WrongPuk { .. })
    ));
    reader
        .unblock(&id, PinKind::Pin1, &secret("61829374"), &secret("6024"))
        .unwrap();
    assert_eq!(reader.card(&id).unwrap().state, CardState::Personalised);
}

#[test]
fn a_sim_is_personalised_the_same_way() {
    let reader = reader(TokenClass::Sim);
    let id = blank_card();
    let personalised = reader
        .personalise(&id, &secret(TRANSPORT), &pins(), KeySpec::EcP384)
        .unwrap();
    assert_eq!(personalised.card.class, TokenClass::Sim);
    assert_eq!(personalised.signing_evidence.token_class, TokenClass::Sim);
    assert!(personalised.signing_evidence.is_qscd());
    assert_eq!(personalised.signing.spec, KeySpec::EcP384);
    let store = reader.store(&id, PinKind::Pin2, &secret(PIN2)).unwrap();
    assert_eq!(store.class(), TokenClass::Sim);

    // A reader is for citizen tokens only.
    assert!(matches!(
        CardReader::open(&module(), TokenClass::Hsm),
        Err(HsmError::TokenPolicy { .. })
    ));
}

#[test]
fn cards_that_are_absent_or_half_present_are_named() {
    let reader = reader(TokenClass::Smartcard);
    let present = blank_card();
    let missing = CardId::new("EID-NOT-HERE").unwrap();
    match reader.card(&missing) {
        Err(HsmError::CardNotFound {
            card,
            present: list,
        }) => {
            assert_eq!(card, "EID-NOT-HERE");
            assert!(list.contains(present.as_str()), "{list}");
        }
        other => panic!("expected CardNotFound, got {other:?}"),
    }
    // A lone PIN1 token is half a card: named by `card`, left out by `cards`.
    let half = CardId::new(unique_label("HALF")).unwrap();
    eid_hsm::initialize_token(
        &module(),
        &format!("{half} (PIN1)"),
        &secret(TRANSPORT),
        &secret(PIN1),
    )
    .unwrap();
    let result = reader.card(&half);
    assert!(
        matches!(&result, Err(HsmError::CardState { detail, .. }) if detail.contains(&format!("'{half} (PIN2)' is missing"))),
        "{result:?}"
    );
    let cards = reader.cards().unwrap();
    assert!(cards.iter().all(|c| c.id != half));
    assert!(cards.iter().any(|c| c.id == present));
    // Tokens that are not cards (an HSM's) are not listed either.
    let service_token = common::new_token();
    assert!(
        reader
            .cards()
            .unwrap()
            .iter()
            .all(|c| !c.pin1.label.contains(&service_token))
    );
    // Making the same blank card twice is refused; the first stays as it was.
    assert!(initialize_blank_card(&module(), &present, &secret(TRANSPORT)).is_err());
    assert_eq!(reader.card(&present).unwrap().state, CardState::Blank);
}

#[test]
fn secrets_never_show_in_debug_output() {
    let rendered = format!("{:?}", pins());
    for pin in [PIN1, PIN2, PUK] {
        assert!(!rendered.contains(pin), "{rendered}");
    }
    let reader = reader(TokenClass::Smartcard);
    assert!(!format!("{reader:?}").contains(TRANSPORT));
}

/// Runs in a child process whose SoftHSM has an empty token directory, since the
/// module reads its configuration once per process.
#[test]
fn no_card_in_an_empty_reader() {
    const CHILD: &str = "EID_TEST_EMPTY_READER_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        // SAFETY: the child runs this one test, before anything loads the module.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", &conf);
        }
        let reader = CardReader::open(&module(), TokenClass::Smartcard).unwrap();
        assert!(reader.cards().unwrap().is_empty());
        let error = reader.card(&CardId::new("EID-0001").unwrap()).unwrap_err();
        assert!(matches!(error, HsmError::NoCard { .. }), "{error:?}");
        assert!(
            error.to_string().starts_with("no card in the reader"),
            "{error}"
        );
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "no_card_in_an_empty_reader", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child test failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Changes a token's security officer PIN behind the reader's back, through the
/// process's own module instance: SoftHSM keeps PINs in memory per process, so a
/// change by another process (pkcs11-tool) would not be seen here.
fn change_so_pin_directly(token: &str, old: &str, new: &str) {
    use cryptoki::{
        context::{CInitializeArgs, CInitializeFlags, Pkcs11},
        error::{Error, RvError},
        session::UserType,
    };
    let context = Pkcs11::new(module()).unwrap();
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = context
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|slot| context.get_token_info(*slot).unwrap().label().trim_end() == token)
        .unwrap();
    // Another test listing the reader may hold a read-only session on the token for
    // a moment, which an SO login does not allow.
    for _ in 0..50 {
        let session = context.open_rw_session(slot).unwrap();
        match session.login(UserType::So, Some(&secret(old))) {
            Ok(()) => {
                session.set_pin(&secret(old), &secret(new)).unwrap();
                session.logout().unwrap();
                return;
            }
            Err(Error::Pkcs11(RvError::SessionReadOnlyExists, _)) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("SO login: {e}"),
        }
    }
    panic!("could not log in as SO on {token}");
}

/// `finish` changes the SO PIN and then marks the token; a crash between the two
/// leaves a token that takes the PUK but does not say so.
#[test]
fn an_interrupted_finish_is_undone_by_reset_with_the_puk() {
    let reader = reader(TokenClass::Smartcard);
    let id = blank_card();
    let personalised = reader
        .personalise(&id, &secret(TRANSPORT), &pins(), KeySpec::EcP256)
        .unwrap();
    change_so_pin_directly(&personalised.card.pin2.label, TRANSPORT, PUK);
    let card = reader.card(&id).unwrap();
    assert_eq!(card.state, CardState::Personalising);
    // finish tries the transport code on both tokens before changing either.
    let finish = reader.finish(&id, &secret(TRANSPORT), &secret(PUK));
    assert!(
        matches!(&finish, Err(HsmError::WrongTransportCode { token }) if *token == card.pin2.label),
        "{finish:?}"
    );
    let card = reader.card(&id).unwrap();
    assert!(!card.pin1.finished && !card.pin2.finished);
    // The transport code alone cannot reset the PIN2 token, and nothing is wiped
    // until both tokens have taken their secret; with the PUK as well, the whole
    // card is blank again.
    assert!(matches!(
        reader.reset(&id, &secret(TRANSPORT), None),
        Err(HsmError::WrongTransportCode { .. })
    ));
    assert_eq!(
        reader.card(&id).unwrap().pin1.keys,
        [CITIZEN_AUTHENTICATION_LABEL]
    );
    let card = reader
        .reset(&id, &secret(TRANSPORT), Some(&secret(PUK)))
        .unwrap();
    assert_eq!(card.state, CardState::Blank, "{}", card.contents());
    reader
        .personalise(&id, &secret(TRANSPORT), &pins(), KeySpec::EcP256)
        .unwrap();
    reader
        .finish(&id, &secret(TRANSPORT), &secret(PUK))
        .unwrap();
}

#[test]
fn certificates_are_written_on_a_finished_card_without_a_pin() {
    let reader = reader(TokenClass::Smartcard);
    let id = blank_card();
    reader
        .personalise(&id, &secret(TRANSPORT), &pins(), KeySpec::EcP256)
        .unwrap();
    // Certificates made while the PINs were at hand, written after the PUK is set
    // and the PINs are gone (as when the CA answered late).
    let (auth_label, sign_label) = (
        label(CITIZEN_AUTHENTICATION_LABEL),
        label(CITIZEN_SIGNING_LABEL),
    );
    let auth_store = reader.store(&id, PinKind::Pin1, &secret(PIN1)).unwrap();
    let auth_certificate = self_signed(&auth_store.signer(&auth_label, None).unwrap(), "auth", 1);
    drop(auth_store);
    reader
        .finish(&id, &secret(TRANSPORT), &secret(PUK))
        .unwrap();
    reader
        .write_certificate(&id, PinKind::Pin1, &auth_label, &auth_certificate)
        .unwrap();
    // Again: the same certificate is a no-op.
    reader
        .write_certificate(&id, PinKind::Pin1, &auth_label, &auth_certificate)
        .unwrap();
    assert_eq!(
        reader
            .certificate(&id, PinKind::Pin1, &auth_label)
            .unwrap()
            .as_deref(),
        Some(auth_certificate.as_slice())
    );
    // A certificate of another key is refused, on the token that holds the key.
    let mismatch = reader.write_certificate(&id, PinKind::Pin2, &sign_label, &auth_certificate);
    assert!(
        matches!(mismatch, Err(HsmError::CertificateMismatch { .. })),
        "{mismatch:?}"
    );
    let garbage = reader.write_certificate(&id, PinKind::Pin2, &sign_label, b"not a certificate");
    assert!(
        matches!(garbage, Err(HsmError::Encoding { .. })),
        "{garbage:?}"
    );
    assert_eq!(
        reader.certificate(&id, PinKind::Pin2, &sign_label).unwrap(),
        None
    );
    // A card still blank has no key to pair the certificate with.
    let blank = blank_card();
    let no_key = reader.write_certificate(&blank, PinKind::Pin1, &auth_label, &auth_certificate);
    assert!(
        matches!(no_key, Err(HsmError::KeyNotFound { .. })),
        "{no_key:?}"
    );
}
