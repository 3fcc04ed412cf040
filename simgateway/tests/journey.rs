//! The simulator end to end, with real components: a SoftHSM2 SIM made here (keys
//! generated on it, certificates from the in-process CA), the simulator served over
//! TLS, and the relying side's pinned client. Signatures are judged by openssl.
#![allow(clippy::unwrap_used, clippy::panic, unreachable_pub)]

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use eid_core::{
    Config, SystemClock,
    config::{Environment, Overrides},
    instance::{self, OpenMode},
};
use eid_hsm::{
    CardId, CardReader, CitizenPins, KeyLabel, KeySpec, PinKind, SecretString, TokenClass,
    mobile::{
        GatewayPin, HashType, Language, MobileIdClient, MobileIdClientOptions, MobileIdError,
        MobileIdRequest, MobileIdSession, Operation,
    },
};
use eid_sim_gateway::{GatewayTls, SimGateway, SimGatewayOptions};
use eid_tests::{TestBackend, TestDatabase};
use tokio_util::sync::CancellationToken;

const TRANSPORT: &str = "55667788";
const PIN1: &str = "4821";
const PIN2: &str = "73915";
const PUK: &str = "83920174";
const NATIONAL_ID: &str = "38001010003";

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

struct TestEnv(Vec<(String, String)>);

impl Environment for TestEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

use eid_tests::softhsm::{pkcs11_module as module, softhsm_environment};

struct Stand {
    client: MobileIdClient,
    gateway: SimGateway,
    pin: GatewayPin,
    url: String,
    phone: String,
    card_certificates: (Vec<u8>, Vec<u8>),
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    _db: TestDatabase,
}

impl Drop for Stand {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Makes a SIM (keys on it, certificates from the CA), registers it, serves the
/// simulator over TLS with a short answer timeout, and a client pinned to it.
async fn stand(backend: TestBackend) -> Stand {
    use x509_cert::builder::{Builder, RequestBuilder};
    softhsm_environment();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let card = CardId::new(format!("SIM-{}-{n}", std::process::id())).unwrap();
    let phone = format!(
        "+1868555{:04}",
        (std::process::id() as usize * 7 + n) % 10000
    );
    let db = TestDatabase::create(backend).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = TestEnv(vec![("EID_DATABASE_URL".into(), db.url.clone())]);
    let config = Config::load(
        None,
        &env,
        &Overrides {
            data_dir: Some(dir.path().join("data")),
        },
    )
    .unwrap();
    let instance = instance::open(config, Arc::new(SystemClock), OpenMode::CreateIfMissing)
        .await
        .unwrap();
    let ctx = instance.ctx.clone();
    let ca = eid_ca::CertificateAuthority::open(&ctx).await.unwrap();

    // The SIM: blank, then personalised with both keys generated on it.
    let (id, m) = (card.clone(), module());
    let personalised = tokio::task::spawn_blocking(move || {
        eid_hsm::initialize_blank_card(&m, &id, &secret(TRANSPORT)).unwrap();
        let reader = CardReader::open(&m, TokenClass::Sim).unwrap();
        let pins = CitizenPins {
            pin1: secret(PIN1),
            pin2: secret(PIN2),
            puk: secret(PUK),
        };
        reader
            .personalise(&id, &secret(TRANSPORT), &pins, KeySpec::EcP256)
            .unwrap();
        reader
    })
    .await
    .unwrap();
    let mut certificates = Vec::new();
    for (kind, pin, label, profile) in [
        (
            PinKind::Pin1,
            PIN1,
            eid_hsm::CITIZEN_AUTHENTICATION_LABEL,
            eid_ca::Profile::CitizenAuthentication,
        ),
        (
            PinKind::Pin2,
            PIN2,
            eid_hsm::CITIZEN_SIGNING_LABEL,
            eid_ca::Profile::CitizenSigning,
        ),
    ] {
        let store = personalised.store(&card, kind, &secret(pin)).unwrap();
        let label = KeyLabel::new(label).unwrap();
        let signer = store.signer(&label, None).unwrap().with_pin(secret(pin));
        let csr = {
            let signer = signer.clone();
            tokio::task::spawn_blocking(move || {
                let subject: x509_cert::name::Name = "CN=sim".parse().unwrap();
                der::Encode::to_der(
                    &RequestBuilder::new(subject)
                        .unwrap()
                        .build::<_, eid_hsm::Signature>(&signer)
                        .unwrap(),
                )
                .unwrap()
            })
            .await
            .unwrap()
        };
        let issued = ca
            .issue(eid_ca::IssueRequest {
                profile,
                csr,
                holder: eid_ca::Holder::Citizen {
                    national_id: eid_ca::NationalId::new(NATIONAL_ID).unwrap(),
                    name: eid_ca::PersonName::new("Mari", "Maasikas").unwrap(),
                },
                requested_by: "operator:test".into(),
                key_evidence: Some(eid_ca::KeyEvidence {
                    public_key: signer.public_key().clone(),
                    qscd: store.qscd_evidence(&label).unwrap(),
                }),
            })
            .await
            .unwrap();
        store.store_certificate(&label, &issued.der).unwrap();
        certificates.push(issued.der);
    }
    // Finished as the desk finishes it: the transport code replaced by the PUK.
    let id = card.clone();
    tokio::task::spawn_blocking(move || {
        personalised
            .finish(&id, &secret(TRANSPORT), &secret(PUK))
            .unwrap();
    })
    .await
    .unwrap();
    let gateway = SimGateway::open(
        &ctx,
        SimGatewayOptions {
            module: module(),
            answer_timeout: Duration::from_secs(3),
        },
    )
    .unwrap();
    gateway
        .add_sim(&phone, NATIONAL_ID, &card, "operator:test")
        .await
        .unwrap();
    let context = ctx.clone();
    let tls = tokio::task::spawn_blocking(move || GatewayTls::load(&context))
        .await
        .unwrap()
        .unwrap();
    let pin = tls.pin;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(eid_sim_gateway::serve_tls(
        gateway.clone(),
        tls,
        listener,
        shutdown.clone(),
    ));
    let mut options = MobileIdClientOptions::new(
        &url,
        pin,
        "00000000-0000-0000-0000-000000000000",
        "eid test RP",
    );
    options.poll_timeout = Duration::from_secs(1);
    options.session_timeout = Duration::from_secs(20);
    let client = MobileIdClient::new(options).unwrap();
    let mut certificates = certificates.into_iter();
    Stand {
        client,
        gateway,
        pin,
        url,
        phone,
        card_certificates: (certificates.next().unwrap(), certificates.next().unwrap()),
        dir,
        shutdown,
        _db: db,
    }
}

fn request(stand: &Stand, hash: Vec<u8>, national_id: &str) -> MobileIdRequest {
    MobileIdRequest {
        phone_number: stand.phone.clone(),
        national_identity_number: national_id.into(),
        hash,
        hash_type: HashType::Sha256,
        language: Language::Eng,
        display_text: Some("Log in to the test service".into()),
    }
}

/// Waits for the session to show on the phone; returns its id after checking the
/// verification code and prompt.
/// Starts `operation` for `req` and finds its prompt on the phone (ending `prompt_end`):
/// the client's session and the phone's id of it.
async fn prompted(
    stand: &Stand,
    operation: Operation,
    req: &MobileIdRequest,
    prompt_end: &str,
) -> (MobileIdSession, String) {
    let session = stand.client.start(operation, req).await.unwrap();
    let code = req.verification_code().to_string();
    for _ in 0..50 {
        let pending = stand.gateway.pending(&stand.phone).await.unwrap();
        if let Some(p) = pending.into_iter().find(|p| p.verification_code == code) {
            assert!(p.prompt.ends_with(prompt_end), "{}", p.prompt);
            return (session, p.session_id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no prompt with code {code} on the phone");
}

/// openssl, as an independent judge: the signature verifies over the hash with the
/// certificate's key.
fn openssl_verifies(dir: &Path, certificate: &[u8], hash: &[u8], signature: &[u8]) -> bool {
    let cert = dir.join("cert.der");
    std::fs::write(&cert, certificate).unwrap();
    let key = dir.join("key.pem");
    let out = std::process::Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(&cert)
        .args(["-pubkey", "-noout", "-out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("hash"), hash).unwrap();
    std::fs::write(dir.join("sig"), signature).unwrap();
    std::process::Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(&key)
        .arg("-in")
        .arg(dir.join("hash"))
        .arg("-sigfile")
        .arg(dir.join("sig"))
        .output()
        .unwrap()
        .status
        .success()
}

async fn journeys(backend: TestBackend) {
    let stand = stand(backend).await;

    // Authentication, confirmed with PIN1: the signature verifies with the
    // authentication certificate over the hash.
    let hash = HashType::Sha256.digest(b"challenge one");
    let req = request(&stand, hash.clone(), NATIONAL_ID);
    let (session, id) = prompted(&stand, Operation::Authentication, &req, "Enter?").await;
    stand
        .gateway
        .confirm(&stand.phone, &id, secret(PIN1))
        .await
        .unwrap();
    let signed = stand.client.wait(&session).await.unwrap();
    assert_eq!(signed.algorithm, "SHA256WithECEncryption");
    assert_eq!(
        signed.certificate.as_deref(),
        Some(stand.card_certificates.0.as_slice())
    );
    assert!(openssl_verifies(
        stand.dir.path(),
        &stand.card_certificates.0,
        &hash,
        &signed.value
    ));
    assert!(!openssl_verifies(
        stand.dir.path(),
        &stand.card_certificates.0,
        &HashType::Sha256.digest(b"other"),
        &signed.value
    ));

    // A signature, with PIN2 and the signing key.
    let hash = HashType::Sha256.digest(b"a document");
    let mut req = request(&stand, hash.clone(), NATIONAL_ID);
    req.display_text = Some("Sign the contract".into());
    let (session, id) = prompted(&stand, Operation::Signature, &req, "Sign?").await;
    stand
        .gateway
        .confirm(&stand.phone, &id, secret(PIN2))
        .await
        .unwrap();
    let signed = stand.client.wait(&session).await.unwrap();
    assert!(openssl_verifies(
        stand.dir.path(),
        &stand.card_certificates.1,
        &hash,
        &signed.value
    ));

    // Cancel → USER_CANCELLED.
    let req = request(&stand, HashType::Sha256.digest(b"cancel me"), NATIONAL_ID);
    let (session, id) = prompted(&stand, Operation::Authentication, &req, "Enter?").await;
    stand.gateway.cancel(&stand.phone, &id).await.unwrap();
    assert!(matches!(
        stand.client.wait(&session).await,
        Err(MobileIdError::UserCancelled)
    ));

    // No answer → TIMEOUT (the simulator's phone waits 3 s here).
    let req = request(&stand, HashType::Sha256.digest(b"nobody home"), NATIONAL_ID);
    let session = stand
        .client
        .start(Operation::Authentication, &req)
        .await
        .unwrap();
    assert!(matches!(
        stand.client.wait(&session).await,
        Err(MobileIdError::Timeout)
    ));

    // Unknown phone, and a national id that is not the SIM holder's → NOT_MID_CLIENT.
    let mut req = request(&stand, HashType::Sha256.digest(b"who"), NATIONAL_ID);
    req.phone_number = "+10000000000".into();
    let session = stand
        .client
        .start(Operation::Authentication, &req)
        .await
        .unwrap();
    assert!(matches!(
        stand.client.wait(&session).await,
        Err(MobileIdError::NotMidClient)
    ));
    let req = request(&stand, HashType::Sha256.digest(b"who"), "39912319999");
    let session = stand
        .client
        .start(Operation::Authentication, &req)
        .await
        .unwrap();
    let error = stand.client.wait(&session).await.unwrap_err();
    assert!(matches!(error, MobileIdError::NotMidClient), "{error}");
    assert!(error.citizen_message().contains("no active mobile ID"));

    // Three wrong PIN1s block PIN1: SIM_ERROR now and for the next session; the PUK
    // unblocks, and the new PIN1 works.
    let req = request(&stand, HashType::Sha256.digest(b"wrong pins"), NATIONAL_ID);
    let (session, id) = prompted(&stand, Operation::Authentication, &req, "Enter?").await;
    for left in [2, 1] {
        assert_eq!(
            stand
                .gateway
                .confirm(&stand.phone, &id, secret("9999"))
                .await
                .unwrap(),
            eid_sim_gateway::Confirmation::WrongPin { tries_left: left }
        );
    }
    assert_eq!(
        stand
            .gateway
            .confirm(&stand.phone, &id, secret("9999"))
            .await
            .unwrap(),
        eid_sim_gateway::Confirmation::Blocked
    );
    assert!(matches!(
        stand.client.wait(&session).await,
        Err(MobileIdError::SimError)
    ));
    let req = request(
        &stand,
        HashType::Sha256.digest(b"still blocked"),
        NATIONAL_ID,
    );
    let session = stand
        .client
        .start(Operation::Authentication, &req)
        .await
        .unwrap();
    assert!(matches!(
        stand.client.wait(&session).await,
        Err(MobileIdError::SimError)
    ));
    assert!(
        stand
            .gateway
            .unblock(
                &stand.phone,
                PinKind::Pin1,
                secret("11112222"),
                secret("5826")
            )
            .await
            .is_err()
    );
    stand
        .gateway
        .unblock(&stand.phone, PinKind::Pin1, secret(PUK), secret("5826"))
        .await
        .unwrap();
    let req = request(
        &stand,
        HashType::Sha256.digest(b"after unblock"),
        NATIONAL_ID,
    );
    let (session, id) = prompted(&stand, Operation::Authentication, &req, "Enter?").await;
    stand
        .gateway
        .confirm(&stand.phone, &id, secret("5826"))
        .await
        .unwrap();
    assert!(stand.client.wait(&session).await.is_ok());

    // A display text too long: 400 with the rule, straight from the gateway.
    let body = serde_json::json!({
        "relyingPartyUUID": "00000000-0000-0000-0000-000000000000",
        "relyingPartyName": "eid test RP",
        "phoneNumber": stand.phone,
        "nationalIdentityNumber": NATIONAL_ID,
        "hash": <base64ct::Base64 as base64ct::Encoding>::encode_string(&[1u8; 32]),
        "hashType": "SHA256",
        "language": "ENG",
        "displayText": "x".repeat(41),
    });
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-H",
            "content-type: application/json",
            "-d",
        ])
        .arg(body.to_string())
        .arg(format!("{}/authentication", stand.url))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n400"), "{text}");
    assert!(
        text.contains("displayText is too long: GSM-7 allows at most 40 characters, this has 41"),
        "{text}"
    );

    // A wrong pin: refused before any request.
    let mut options = MobileIdClientOptions::new(
        &stand.url,
        GatewayPin::of_spki(b"another key"),
        "00000000-0000-0000-0000-000000000000",
        "eid test RP",
    );
    options.poll_timeout = Duration::from_secs(1);
    let wrong = MobileIdClient::new(options).unwrap();
    let req = request(&stand, HashType::Sha256.digest(b"mitm"), NATIONAL_ID);
    let error = wrong
        .start(Operation::Authentication, &req)
        .await
        .unwrap_err();
    assert!(
        matches!(error, MobileIdError::PinMismatch { .. }),
        "{error}"
    );
    assert_ne!(GatewayPin::of_spki(b"another key"), stand.pin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journeys_on_sqlite() {
    journeys(TestBackend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journeys_on_postgres() {
    if std::env::var("EID_TEST_POSTGRES_URL").is_err() {
        eprintln!("skipped: EID_TEST_POSTGRES_URL is not set");
        return;
    }
    journeys(TestBackend::Postgres).await;
}
