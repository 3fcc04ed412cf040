//! The key layer's contract, checked on the soft store and on SoftHSM2 with the same
//! test bodies, and judged by openssl as well as by our own verifier.
#![allow(clippy::unwrap_used)]

mod common;

use std::{str::FromStr, time::Duration};

use common::{Backend, TestStore, secret};
use der::EncodePem;
use eid_hsm::{
    HsmError, KeyLabel, KeyRole, KeySigner, KeySpec, KeyStore, SignatureScheme, TokenClass,
    TokenSelector,
};
use x509_cert::{
    builder::{Builder, CertificateBuilder, profile::cabf::Root},
    name::Name,
    serial_number::SerialNumber,
    spki::SubjectPublicKeyInfo,
    time::Validity,
};

fn label(s: &str) -> KeyLabel {
    KeyLabel::new(s).unwrap()
}

const MESSAGE: &[u8] = b"eid key layer test message: sign me, then let openssl judge";

/// Signs in `scheme`, checks with our verifier and openssl, and checks that both
/// reject a different message.
fn assert_signs(t: &TestStore, signer: &KeySigner) {
    let backend = t.backend.name();
    let scheme = signer.scheme();
    let key = &signer.info().label;
    let signature = signer
        .sign(MESSAGE)
        .unwrap_or_else(|e| panic!("[{backend}] {key} {scheme}: signing failed: {e}"));
    signer
        .public_key()
        .verify(scheme, MESSAGE, signature.as_bytes())
        .unwrap_or_else(|e| panic!("[{backend}] {key} {scheme}: own verifier rejects: {e}"));
    assert!(
        common::openssl_verifies(signer.public_key(), scheme, MESSAGE, signature.as_bytes()),
        "[{backend}] {key} {scheme}: openssl rejects the signature"
    );
    assert!(
        signer
            .public_key()
            .verify(scheme, b"another message", signature.as_bytes())
            .is_err(),
        "[{backend}] {key} {scheme}: own verifier accepts a signature over another message"
    );
    assert!(
        !common::openssl_verifies(
            signer.public_key(),
            scheme,
            b"another message",
            signature.as_bytes()
        ),
        "[{backend}] {key} {scheme}: openssl accepts a signature over another message"
    );
}

fn generate_find_list_and_sign_every_scheme(backend: Backend) {
    let t = backend.open();
    let name = backend.name();
    let keys = [
        ("p256", KeySpec::EcP256),
        ("p384", KeySpec::EcP384),
        ("rsa3072", KeySpec::Rsa3072),
    ];
    for (l, spec) in keys {
        let info = t
            .store
            .generate(&label(l), spec, KeyRole::Service)
            .unwrap_or_else(|e| panic!("[{name}] generating {spec}: {e}"));
        assert_eq!(info.spec, spec, "[{name}] generated spec");
        assert_eq!(info.role, KeyRole::Service, "[{name}] generated role");
        let found = t.store.find(&label(l)).unwrap().unwrap();
        assert_eq!(found.public_key, info.public_key, "[{name}] {l}: find");
        assert_eq!(found.spec, spec, "[{name}] {l}: find spec");
        assert_eq!(found.id, info.id, "[{name}] {l}: find id");
    }
    let listed = t.store.list().unwrap();
    let labels: Vec<&str> = listed.iter().map(|k| k.label.as_str()).collect();
    assert_eq!(labels, ["p256", "p384", "rsa3072"], "[{name}] list");

    let schemes = [
        ("p256", SignatureScheme::EcdsaSha256),
        ("p256", SignatureScheme::EcdsaSha384),
        ("p384", SignatureScheme::EcdsaSha384),
        ("p384", SignatureScheme::EcdsaSha256),
        ("rsa3072", SignatureScheme::RsaPssSha256),
        ("rsa3072", SignatureScheme::RsaPkcs1Sha256),
    ];
    for (l, scheme) in schemes {
        let signer = t.store.signer(&label(l), Some(scheme)).unwrap();
        assert_signs(&t, &signer);
    }
    // A scheme that does not fit the key is refused before signing.
    assert!(
        matches!(
            t.store
                .signer(&label("p256"), Some(SignatureScheme::RsaPssSha256)),
            Err(HsmError::UnsupportedKey { .. })
        ),
        "[{name}] P-256 key must refuse RSA-PSS"
    );
}

fn self_signed_certificate_is_accepted_by_openssl(backend: Backend) {
    let t = backend.open();
    for (l, spec) in [("root-ec", KeySpec::EcP384), ("root-rsa", KeySpec::Rsa3072)] {
        t.store.generate(&label(l), spec, KeyRole::Service).unwrap();
        let signer = t.store.signer(&label(l), None).unwrap();
        let subject = Name::from_str(&format!("CN=eid test root {l},O=eid tests,C=EE")).unwrap();
        let profile = Root::new(false, subject).unwrap();
        let spki = SubjectPublicKeyInfo::from_key(signer.public_key()).unwrap();
        let builder = CertificateBuilder::new(
            profile,
            SerialNumber::from(0x0102_0304_0506_0708u64),
            Validity::from_now(Duration::from_secs(3600)).unwrap(),
            spki,
        )
        .unwrap();
        let certificate = builder
            .build::<_, eid_hsm::Signature>(&signer)
            .unwrap_or_else(|e| panic!("[{}] {l}: building: {e}", backend.name()));
        let pem = certificate.to_pem(der::pem::LineEnding::LF).unwrap();
        common::openssl_accepts_self_signed(&pem)
            .unwrap_or_else(|e| panic!("[{}] {l}: openssl verify: {e}", backend.name()));
    }
}

/// A self-signed certificate (DER) for the signer's key.
fn self_signed(signer: &KeySigner, serial: u64) -> Vec<u8> {
    use der::Encode;
    let subject = Name::from_str("CN=eid stored certificate,O=eid tests,C=EE").unwrap();
    CertificateBuilder::new(
        Root::new(false, subject).unwrap(),
        SerialNumber::from(serial),
        Validity::from_now(Duration::from_secs(3600)).unwrap(),
        SubjectPublicKeyInfo::from_key(signer.public_key()).unwrap(),
    )
    .unwrap()
    .build::<_, eid_hsm::Signature>(signer)
    .unwrap()
    .to_der()
    .unwrap()
}

fn certificate_is_stored_beside_its_key(backend: Backend) {
    let t = backend.open();
    let name = backend.name();
    for l in ["cert-key", "other-key"] {
        t.store
            .generate(&label(l), KeySpec::EcP256, KeyRole::Service)
            .unwrap();
    }
    let signer = t.store.signer(&label("cert-key"), None).unwrap();
    let (first, renewed) = (self_signed(&signer, 1), self_signed(&signer, 2));
    assert_eq!(
        t.store.certificate(&label("cert-key")).unwrap(),
        None,
        "[{name}]"
    );
    t.store
        .store_certificate(&label("cert-key"), &first)
        .unwrap();
    // Storing the same one again changes nothing; a renewed one replaces it.
    t.store
        .store_certificate(&label("cert-key"), &first)
        .unwrap();
    assert_eq!(
        t.store.certificate(&label("cert-key")).unwrap().as_deref(),
        Some(first.as_slice()),
        "[{name}]"
    );
    t.store
        .store_certificate(&label("cert-key"), &renewed)
        .unwrap();
    assert_eq!(
        t.store.certificate(&label("cert-key")).unwrap().as_deref(),
        Some(renewed.as_slice()),
        "[{name}] renewed"
    );
    // A certificate goes only with the key it certifies, and only with a key.
    let mismatch = t.store.store_certificate(&label("other-key"), &first);
    assert!(
        matches!(mismatch, Err(HsmError::CertificateMismatch { .. })),
        "[{name}] {mismatch:?}"
    );
    assert_eq!(t.store.certificate(&label("other-key")).unwrap(), None);
    assert!(matches!(
        t.store.store_certificate(&label("no-key"), &first),
        Err(HsmError::KeyNotFound { .. })
    ));
    assert!(matches!(
        t.store
            .store_certificate(&label("cert-key"), b"not a certificate"),
        Err(HsmError::Encoding { .. })
    ));
    // Certificates do not show up as keys.
    assert_eq!(t.store.list().unwrap().len(), 2, "[{name}]");
}

fn destroyed_key_is_gone_with_its_certificate(backend: Backend) {
    let t = backend.open();
    let name = backend.name();
    for l in ["doomed", "kept"] {
        t.store
            .generate(&label(l), KeySpec::EcP256, KeyRole::Service)
            .unwrap();
    }
    // A signer resolved before the key is destroyed: its handle must not outlive it.
    let signer = t.store.signer(&label("doomed"), None).unwrap();
    let certificate = self_signed(&signer, 7);
    t.store
        .store_certificate(&label("doomed"), &certificate)
        .unwrap();
    assert!(t.store.destroy(&label("doomed")).unwrap(), "[{name}]");
    assert!(
        t.store.find(&label("doomed")).unwrap().is_none(),
        "[{name}]"
    );
    assert_eq!(
        t.store.certificate(&label("doomed")).unwrap(),
        None,
        "[{name}]"
    );
    assert!(
        matches!(
            t.store.signer(&label("doomed"), None),
            Err(HsmError::KeyNotFound { .. })
        ),
        "[{name}] a signer for a destroyed key"
    );
    assert!(
        signer.sign(MESSAGE).is_err(),
        "[{name}] a destroyed key still signs"
    );
    // Again: nothing there, no error. The other key is untouched.
    assert!(!t.store.destroy(&label("doomed")).unwrap(), "[{name}]");
    let kept = t.store.signer(&label("kept"), None).unwrap();
    assert_signs(&t, &kept);
    assert_eq!(t.store.list().unwrap().len(), 1, "[{name}]");
    // The label is free for a new key.
    t.store
        .generate(&label("doomed"), KeySpec::EcP256, KeyRole::Service)
        .unwrap();
}

fn duplicate_label_is_refused(backend: Backend) {
    let t = backend.open();
    let info = t
        .store
        .generate(&label("dup"), KeySpec::EcP256, KeyRole::Service)
        .unwrap();
    let again = t
        .store
        .generate(&label("dup"), KeySpec::EcP256, KeyRole::Service);
    assert!(
        matches!(again, Err(HsmError::KeyExists { .. })),
        "[{}] second generate: {again:?}",
        backend.name()
    );
    // The first key is untouched, and `ensure` returns it.
    let ensured = t
        .store
        .ensure(&label("dup"), KeySpec::EcP256, KeyRole::Service)
        .unwrap();
    assert_eq!(ensured.public_key, info.public_key);
    assert!(matches!(
        t.store
            .ensure(&label("dup"), KeySpec::EcP384, KeyRole::Service),
        Err(HsmError::UnsupportedKey { .. })
    ));
}

fn unknown_label_is_key_not_found(backend: Backend) {
    let t = backend.open();
    assert!(t.store.find(&label("nothing")).unwrap().is_none());
    let signer = t.store.signer(&label("nothing"), None);
    assert!(
        matches!(signer, Err(HsmError::KeyNotFound { .. })),
        "[{}] signer for unknown key: {signer:?}",
        backend.name()
    );
    assert!(matches!(
        t.store.qscd_evidence(&label("nothing")),
        Err(HsmError::KeyNotFound { .. })
    ));
}

fn roles_survive_lookup(backend: Backend) {
    let t = backend.open();
    for (l, role) in [
        ("svc", KeyRole::Service),
        ("auth", KeyRole::CitizenAuthentication),
        ("sign", KeyRole::CitizenSigning),
    ] {
        t.store.generate(&label(l), KeySpec::EcP256, role).unwrap();
        assert_eq!(
            t.store.find(&label(l)).unwrap().unwrap().role,
            role,
            "[{}] role of {l}",
            backend.name()
        );
    }
    let roles: Vec<KeyRole> = t.store.list().unwrap().iter().map(|k| k.role).collect();
    assert_eq!(
        roles,
        [
            KeyRole::CitizenAuthentication,
            KeyRole::CitizenSigning,
            KeyRole::Service
        ]
    );
}

fn async_signing_works(backend: Backend) {
    let t = backend.open();
    t.store
        .generate(&label("async"), KeySpec::EcP256, KeyRole::Service)
        .unwrap();
    let signer = t.store.signer(&label("async"), None).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let signature = runtime
        .block_on(signer.sign_async(MESSAGE.to_vec()))
        .unwrap();
    signer
        .public_key()
        .verify(signer.scheme(), MESSAGE, signature.as_bytes())
        .unwrap();
}

on_every_backend!(
    generate_find_list_and_sign_every_scheme,
    self_signed_certificate_is_accepted_by_openssl,
    certificate_is_stored_beside_its_key,
    destroyed_key_is_gone_with_its_certificate,
    duplicate_label_is_refused,
    unknown_label_is_key_not_found,
    roles_survive_lookup,
    async_signing_works,
);

/// Behaviour only a PKCS#11 token has.
mod softhsm_only {
    use super::*;
    use common::{USER_PIN, module, pkcs11_options, softhsm_store};

    /// The layer remembers what it read of a key; a key destroyed and made again under
    /// the same label by another process (another store on the token) must be the one
    /// the next signer uses, never the remembered one.
    #[test]
    fn a_key_replaced_elsewhere_is_found_again() {
        let t = softhsm_store(TokenClass::Hsm, 1);
        let replaced = label("replaced");
        t.store
            .generate(&replaced, KeySpec::EcP256, KeyRole::Service)
            .unwrap();
        let first = t.store.signer(&replaced, None).unwrap();
        assert_signs(&t, &first);
        // Remembered: the second lookup reads only the key's identifier.
        let again = t.store.signer(&replaced, None).unwrap();
        assert_eq!(again.public_key(), first.public_key());

        let other = KeyStore::open_pkcs11(pkcs11_options(&t.location, TokenClass::Hsm, 1)).unwrap();
        assert!(other.destroy(&replaced).unwrap());
        let made = other
            .generate(&replaced, KeySpec::EcP256, KeyRole::Service)
            .unwrap();
        assert_ne!(made.public_key, *first.public_key());

        let now = t.store.signer(&replaced, None).unwrap();
        assert_eq!(*now.public_key(), made.public_key);
        assert_signs(&t, &now);
    }

    #[test]
    fn attributes_are_read_back_from_the_token() {
        let t = softhsm_store(TokenClass::Smartcard, 1);
        let service = t
            .store
            .generate(&label("svc"), KeySpec::EcP256, KeyRole::Service)
            .unwrap();
        let signing = t
            .store
            .generate(&label("sig"), KeySpec::EcP256, KeyRole::CitizenSigning)
            .unwrap();
        for info in [&service, &signing] {
            let a = info.attributes;
            assert!(a.sensitive, "{}: sensitive", info.label);
            assert!(!a.extractable, "{}: not extractable", info.label);
            assert!(a.never_extractable, "{}: never extractable", info.label);
            assert!(a.local, "{}: generated on the token", info.label);
            assert_eq!(info.id.len(), 16);
        }
        assert!(!service.attributes.always_authenticate);
        assert!(signing.attributes.always_authenticate);
        // Also after a fresh lookup, not only as generate reported them.
        let again = t.store.find(&label("sig")).unwrap().unwrap();
        assert_eq!(again.attributes, signing.attributes);
        assert_ne!(service.id, signing.id);
    }

    #[test]
    fn citizen_signing_key_on_a_smartcard_is_qscd_and_soft_keys_are_not() {
        let card = softhsm_store(TokenClass::Smartcard, 1);
        assert_eq!(card.store.class(), TokenClass::Smartcard);
        card.store
            .generate(&label("sig"), KeySpec::EcP256, KeyRole::CitizenSigning)
            .unwrap();
        card.store
            .generate(
                &label("auth"),
                KeySpec::EcP256,
                KeyRole::CitizenAuthentication,
            )
            .unwrap();
        assert!(card.store.qscd_evidence(&label("sig")).unwrap().is_qscd());
        // An authentication key is not a signature creation device's signing key.
        assert!(!card.store.qscd_evidence(&label("auth")).unwrap().is_qscd());

        let soft = common::soft_store();
        soft.store
            .generate(&label("sig"), KeySpec::EcP256, KeyRole::CitizenSigning)
            .unwrap();
        let evidence = soft.store.qscd_evidence(&label("sig")).unwrap();
        assert_eq!(evidence.token_class, TokenClass::Soft);
        assert!(!evidence.is_qscd());
    }

    #[test]
    fn citizen_token_gets_two_key_pairs_and_only_the_signing_one_is_qscd() {
        let sim = softhsm_store(TokenClass::Sim, 1);
        let pairs = sim
            .store
            .generate_citizen_key_pairs(KeySpec::EcP384)
            .unwrap();
        assert_eq!(pairs.authentication.role, KeyRole::CitizenAuthentication);
        assert_eq!(pairs.signing.role, KeyRole::CitizenSigning);
        assert!(!pairs.authentication.attributes.always_authenticate);
        assert!(pairs.signing.attributes.always_authenticate);
        assert!(pairs.signing.attributes.local && pairs.signing.attributes.never_extractable);
        assert_ne!(pairs.authentication.id, pairs.signing.id);
        let by_id = sim.store.find_by_id(&pairs.signing.id).unwrap().unwrap();
        assert_eq!(by_id.label.as_str(), eid_hsm::CITIZEN_SIGNING_LABEL);
        let evidence = |l: &str| sim.store.qscd_evidence(&label(l)).unwrap().is_qscd();
        assert!(evidence(eid_hsm::CITIZEN_SIGNING_LABEL));
        assert!(!evidence(eid_hsm::CITIZEN_AUTHENTICATION_LABEL));
        // A second pair on the same token is refused, not overwritten.
        assert!(matches!(
            sim.store.generate_citizen_key_pairs(KeySpec::EcP384),
            Err(HsmError::KeyExists { .. })
        ));
        // Service stores (an HSM, the soft store) do not hold citizen key pairs.
        let hsm = softhsm_store(TokenClass::Hsm, 1);
        assert!(matches!(
            hsm.store.generate_citizen_key_pairs(KeySpec::EcP256),
            Err(HsmError::TokenPolicy { .. })
        ));
        let soft = common::soft_store();
        assert!(matches!(
            soft.store.generate_citizen_key_pairs(KeySpec::EcP256),
            Err(HsmError::TokenPolicy { .. })
        ));
    }

    #[test]
    fn always_authenticate_key_needs_the_pin_for_every_signature() {
        let t = softhsm_store(TokenClass::Smartcard, 1);
        for (l, spec) in [("sig-ec", KeySpec::EcP256), ("sig-rsa", KeySpec::Rsa3072)] {
            t.store
                .generate(&label(l), spec, KeyRole::CitizenSigning)
                .unwrap();
            let signer = t.store.signer(&label(l), None).unwrap();
            assert!(signer.info().attributes.always_authenticate);

            let without = signer.sign(MESSAGE);
            assert!(
                matches!(without, Err(HsmError::PinRequired { .. })),
                "{l}: without PIN: {without:?}"
            );
            let wrong = signer.clone().with_pin(secret("00000")).sign(MESSAGE);
            assert!(
                matches!(wrong, Err(HsmError::WrongPin { .. })),
                "{l}: wrong PIN: {wrong:?}"
            );
            let right = signer.clone().with_pin(secret(USER_PIN));
            // Twice: the PIN is needed, and works, for each signature.
            assert_signs(&t, &right);
            assert_signs(&t, &right);
        }
        // A key without always-authenticate signs without the PIN, and a PIN given
        // to it anyway is ignored.
        t.store
            .generate(&label("svc"), KeySpec::EcP256, KeyRole::Service)
            .unwrap();
        let service = t.store.signer(&label("svc"), None).unwrap();
        assert_signs(&t, &service);
        assert_signs(&t, &service.with_pin(secret("not used")));
    }

    #[test]
    fn wrong_user_pin_at_open_is_wrong_pin() {
        let token = common::new_token();
        let mut options = pkcs11_options(&token, TokenClass::Hsm, 1);
        options.pin = secret("99999");
        let result = KeyStore::open_pkcs11(options);
        assert!(
            matches!(&result, Err(HsmError::WrongPin { token: t }) if *t == token),
            "{result:?}"
        );
        // The message names the token but never the PIN.
        let message = result.unwrap_err().to_string();
        assert!(!message.contains("99999") && !message.contains(USER_PIN));
    }

    #[test]
    fn unknown_token_is_token_not_found_and_lists_the_present_ones() {
        let token = common::new_token();
        let mut options = pkcs11_options("no-such-token", TokenClass::Hsm, 1);
        let result = KeyStore::open_pkcs11(options);
        match result {
            Err(HsmError::TokenNotFound { available, .. }) => {
                assert!(available.contains(&token), "available: {available}");
            }
            other => panic!("expected TokenNotFound, got {other:?}"),
        }
        options = pkcs11_options("", TokenClass::Hsm, 1);
        options.token = TokenSelector::Serial("0000000000000000".into());
        assert!(matches!(
            KeyStore::open_pkcs11(options),
            Err(HsmError::TokenNotFound { .. })
        ));
    }

    #[test]
    fn token_can_be_selected_by_serial() {
        common::softhsm_environment();
        let token = common::unique_label("by-serial");
        let serial = eid_hsm::initialize_token(
            &module(),
            &token,
            &secret(common::SO_PIN),
            &secret(USER_PIN),
        )
        .unwrap();
        let mut options = pkcs11_options(&token, TokenClass::Hsm, 1);
        options.token = TokenSelector::Serial(serial.clone());
        let store = KeyStore::open_pkcs11(options).unwrap();
        let description = store.description();
        assert!(
            description.contains(&token) && description.contains(&serial),
            "{description}"
        );
        // The same label twice would make selection by label ambiguous: refused.
        assert!(
            eid_hsm::initialize_token(
                &module(),
                &token,
                &secret(common::SO_PIN),
                &secret(USER_PIN)
            )
            .is_err()
        );
    }

    #[test]
    fn bad_module_path_is_module_load() {
        let mut options = pkcs11_options("any", TokenClass::Hsm, 1);
        options.module = "/nonexistent/libnothing.so".into();
        let result = KeyStore::open_pkcs11(options);
        assert!(
            matches!(&result, Err(HsmError::ModuleLoad { path, .. }) if path.ends_with("libnothing.so")),
            "{result:?}"
        );
        // A file that exists but is not a shared library: the loader's message.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake.so");
        std::fs::write(&fake, b"not an ELF file").unwrap();
        let mut options = pkcs11_options("any", TokenClass::Hsm, 1);
        options.module = fake;
        match KeyStore::open_pkcs11(options) {
            Err(HsmError::ModuleLoad { detail, .. }) => assert!(!detail.is_empty()),
            other => panic!("expected ModuleLoad, got {other:?}"),
        }
    }

    #[test]
    fn pool_recovers_after_all_sessions_are_closed() {
        let t = softhsm_store(TokenClass::Hsm, 2);
        t.store
            .generate(&label("k"), KeySpec::EcP256, KeyRole::Service)
            .unwrap();
        let signer = t.store.signer(&label("k"), None).unwrap();
        assert_signs(&t, &signer);
        for round in 0..3 {
            t.store.danger_close_all_sessions_for_tests().unwrap();
            let signature = signer
                .sign(MESSAGE)
                .unwrap_or_else(|e| panic!("round {round}: sign after reset: {e}"));
            signer
                .public_key()
                .verify(signer.scheme(), MESSAGE, signature.as_bytes())
                .unwrap();
            // Lookups recover too.
            assert!(t.store.find(&label("k")).unwrap().is_some());
        }
        // And the always-authenticate path.
        t.store
            .generate(&label("sig"), KeySpec::EcP256, KeyRole::CitizenSigning)
            .unwrap();
        let citizen = t
            .store
            .signer(&label("sig"), None)
            .unwrap()
            .with_pin(secret(USER_PIN));
        t.store.danger_close_all_sessions_for_tests().unwrap();
        assert_signs(&t, &citizen);
    }

    #[test]
    fn concurrent_signing_through_a_pool_of_two() {
        let t = softhsm_store(TokenClass::Hsm, 2);
        t.store
            .generate(&label("k"), KeySpec::EcP256, KeyRole::Service)
            .unwrap();
        let signer = t.store.signer(&label("k"), None).unwrap();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..6)
                .map(|thread| {
                    let signer = signer.clone();
                    scope.spawn(move || {
                        for i in 0..25 {
                            let message = format!("thread {thread} message {i}");
                            let signature = signer.sign(message.as_bytes()).unwrap();
                            signer
                                .public_key()
                                .verify(signer.scheme(), message.as_bytes(), signature.as_bytes())
                                .unwrap();
                        }
                    })
                })
                .collect();
            for handle in handles {
                handle.join().unwrap();
            }
        });
    }

    #[test]
    fn async_signing_queues_on_the_tokens_own_threads() {
        let t = softhsm_store(TokenClass::Hsm, 2);
        t.store
            .generate(&label("k"), KeySpec::EcP256, KeyRole::Service)
            .unwrap();
        let signer = t.store.signer(&label("k"), None).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // 64 signatures asked for at once on a pool of two sessions: each comes
            // back to its own caller, made on one of the token's two signing threads.
            let jobs: Vec<_> = (0..64)
                .map(|i| {
                    let signer = signer.clone();
                    tokio::spawn(async move {
                        let message = format!("message {i}").into_bytes();
                        let inner = signer.clone();
                        let signed = message.clone();
                        let (thread, signature) = signer
                            .run_signing(move || {
                                let thread = std::thread::current().name().map(str::to_owned);
                                (thread, inner.sign(&signed))
                            })
                            .await
                            .unwrap();
                        (message, thread.unwrap_or_default(), signature.unwrap())
                    })
                })
                .collect();
            let mut threads = std::collections::BTreeSet::new();
            for job in jobs {
                let (message, thread, signature) = job.await.unwrap();
                signer
                    .public_key()
                    .verify(signer.scheme(), &message, signature.as_bytes())
                    .unwrap();
                threads.insert(thread);
            }
            assert!(
                threads
                    .iter()
                    .all(|name| name.starts_with("eid-pkcs11-sign-")),
                "{threads:?}"
            );
            assert!(threads.len() <= 2, "{threads:?}");
        });
    }

    #[test]
    fn debug_output_never_shows_the_pin() {
        let t = softhsm_store(TokenClass::Hsm, 1);
        let options = pkcs11_options(&t.location, TokenClass::Hsm, 1);
        let rendered = format!("{options:?} {:?}", t.store);
        assert!(!rendered.contains(USER_PIN), "{rendered}");
        t.store
            .generate(&label("k"), KeySpec::EcP256, KeyRole::Service)
            .unwrap();
        let signer = t
            .store
            .signer(&label("k"), None)
            .unwrap()
            .with_pin(secret(USER_PIN));
        assert!(!format!("{signer:?}").contains(USER_PIN));
    }
}

/// Behaviour only the soft store has.
mod soft_only {
    use super::*;
    use common::{PASSPHRASE, soft_options};
    use eid_hsm::{SoftSecret, SoftStoreOptions};

    #[test]
    fn wrong_passphrase_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        KeyStore::open_soft(soft_options(dir.path(), PASSPHRASE)).unwrap();
        let result = KeyStore::open_soft(soft_options(dir.path(), "wrong passphrase"));
        assert!(
            matches!(result, Err(HsmError::WrongPassphrase { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn reopened_store_finds_its_keys_and_signs() {
        let dir = tempfile::tempdir().unwrap();
        let info = {
            let store = KeyStore::open_soft(soft_options(dir.path(), PASSPHRASE)).unwrap();
            store
                .generate(&label("k"), KeySpec::EcP384, KeyRole::Service)
                .unwrap()
        };
        let store = KeyStore::open_soft(soft_options(dir.path(), PASSPHRASE)).unwrap();
        let found = store.find(&label("k")).unwrap().unwrap();
        assert_eq!(found.public_key, info.public_key);
        let signer = store.signer(&label("k"), None).unwrap();
        let signature = signer.sign(MESSAGE).unwrap();
        assert!(common::openssl_verifies(
            signer.public_key(),
            signer.scheme(),
            MESSAGE,
            signature.as_bytes()
        ));
    }

    #[test]
    fn tampered_key_file_is_corrupted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = KeyStore::open_soft(soft_options(dir.path(), PASSPHRASE)).unwrap();
            store
                .generate(&label("k"), KeySpec::EcP256, KeyRole::Service)
                .unwrap();
        }
        let path = dir.path().join("k.key");
        let mut file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let sealed = file["sealed"].as_str().unwrap().to_owned();
        // Flip one hex digit in the middle of the ciphertext.
        let mut chars: Vec<char> = sealed.chars().collect();
        let i = chars.len() / 2;
        chars[i] = if chars[i] == '0' { '1' } else { '0' };
        file["sealed"] = serde_json::Value::String(chars.into_iter().collect());
        std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();

        let store = KeyStore::open_soft(soft_options(dir.path(), PASSPHRASE)).unwrap();
        let result = store.signer(&label("k"), None);
        assert!(
            matches!(result, Err(HsmError::Corrupted { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn key_file_secret_is_created_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("secrets").join("store.key");
        let options = || {
            SoftStoreOptions::new(
                dir.path().join("store"),
                SoftSecret::KeyFile {
                    path: key_file.clone(),
                    create_if_missing: true,
                },
                true,
            )
        };
        let info = KeyStore::open_soft(options())
            .unwrap()
            .generate(&label("k"), KeySpec::EcP256, KeyRole::Service)
            .unwrap();
        assert_eq!(std::fs::read(&key_file).unwrap().len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let store = KeyStore::open_soft(options()).unwrap();
        assert_eq!(
            store.find(&label("k")).unwrap().unwrap().public_key,
            info.public_key
        );
        // Another key file does not open the store.
        std::fs::write(&key_file, [7u8; 32]).unwrap();
        assert!(matches!(
            KeyStore::open_soft(options()),
            Err(HsmError::WrongPassphrase { .. })
        ));
    }

    #[test]
    fn soft_store_has_no_sessions_to_close() {
        let t = common::soft_store();
        assert!(t.store.danger_close_all_sessions_for_tests().is_err());
    }
}
