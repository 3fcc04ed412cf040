//! Mobile-ID login end to end: SoftHSM2 SIMs personalised here (keys generated on
//! them, authentication certificates from the provider's CA through `eid ca issue`),
//! the operator's gateway played by `eid serve sim-gateway` as a separate instance,
//! the provider pinned to it, a citizen in headless Chromium and the tester as the
//! phone through the simulator's phone API.

use std::{path::Path, process::Stdio, time::Duration};

use eid_hsm::{
    CardId, CardReader, CitizenPins, KeyLabel, KeySpec, PinKind, SecretString, TokenClass,
};
use eid_tests::{
    TestBackend, on_both_backends,
    softhsm::{pkcs11_module, softhsm_environment},
};
use serde_json::Value;

use super::{
    super::{Eid, Server, browser::Browser, text},
    Addresses, command, free_address, http, openssl_serial, payload_of, query_of, register, run,
};

const TRANSPORT: &str = "55667788";
const PIN1: &str = "4821";
const PIN2: &str = "73915";
const PUK: &str = "83920174";

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

/// A simulated SIM: its card id and the PEM file of its authentication certificate.
struct Sim {
    card: String,
    certificate: std::path::PathBuf,
}

/// Personalises a blank SoftHSM2 SIM (both key pairs generated on it) and certifies its
/// authentication key by `eid ca issue`, storing the certificate on the SIM.
async fn make_sim(
    eid: &Eid,
    addresses: &Addresses,
    dir: &Path,
    name: &str,
    national_id: &str,
) -> Sim {
    use x509_cert::builder::{Builder, RequestBuilder};
    softhsm_environment();
    let card = CardId::new(format!("SIM-{}-{name}", std::process::id())).unwrap();
    let (id, module) = (card.clone(), pkcs11_module());
    let (reader, store, csr) = tokio::task::spawn_blocking(move || {
        eid_hsm::initialize_blank_card(&module, &id, &secret(TRANSPORT)).unwrap();
        let reader = CardReader::open(&module, TokenClass::Sim).unwrap();
        let pins = CitizenPins {
            pin1: secret(PIN1),
            pin2: secret(PIN2),
            puk: secret(PUK),
        };
        reader
            .personalise(&id, &secret(TRANSPORT), &pins, KeySpec::EcP256)
            .unwrap();
        let store = reader.store(&id, PinKind::Pin1, &secret(PIN1)).unwrap();
        let label = KeyLabel::new(eid_hsm::CITIZEN_AUTHENTICATION_LABEL).unwrap();
        let signer = store.signer(&label, None).unwrap().with_pin(secret(PIN1));
        let subject: x509_cert::name::Name = "CN=sim".parse().unwrap();
        let request = RequestBuilder::new(subject)
            .unwrap()
            .build::<_, eid_hsm::Signature>(&signer)
            .unwrap();
        let csr = der::EncodePem::to_pem(&request, der::pem::LineEnding::LF).unwrap();
        (reader, store, csr)
    })
    .await
    .unwrap();
    let csr_path = dir.join(format!("{name}.csr"));
    std::fs::write(&csr_path, csr).unwrap();
    let pem = run(
        eid,
        addresses,
        &[
            "ca",
            "issue",
            "--profile",
            "citizen-auth",
            "--csr",
            &csr_path.display().to_string(),
            "--national-id",
            national_id,
            "--given-name",
            "Mary",
            "--surname",
            "Seacole",
        ],
    )
    .await;
    let certificate = dir.join(format!("{name}.pem"));
    std::fs::write(&certificate, &pem).unwrap();
    let id = card.clone();
    tokio::task::spawn_blocking(move || {
        let der = {
            use der::DecodePem;
            let cert = x509_cert::Certificate::from_pem(pem.as_bytes()).unwrap();
            der::Encode::to_der(&cert).unwrap()
        };
        let label = KeyLabel::new(eid_hsm::CITIZEN_AUTHENTICATION_LABEL).unwrap();
        store.store_certificate(&label, &der).unwrap();
        drop(store);
        reader
            .finish(&id, &secret(TRANSPORT), &secret(PUK))
            .unwrap();
    })
    .await
    .unwrap();
    Sim {
        card: card.to_string(),
        certificate,
    }
}

/// The operator's gateway: an instance of its own (the operator is not us), serving
/// the simulator with the SIMs registered.
struct Gateway {
    url: String,
    pin: String,
    _server: tokio::process::Child,
    _eid: Eid,
}

async fn start_gateway(sims: &[(&str, &str, &Sim)]) -> Gateway {
    let eid = Eid::new(TestBackend::Sqlite).await;
    let module = pkcs11_module();
    let gateway_command = |args: &[&str]| {
        let mut command = eid.command(args);
        command.env("EID_SIM_GATEWAY_MODULE", &module);
        command
    };
    let output = gateway_command(&["init"]).output().await.unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    for (phone, national_id, sim) in sims {
        let output = gateway_command(&[
            "sim-gateway",
            "add-sim",
            "--phone",
            phone,
            "--national-id",
            national_id,
            "--card",
            &sim.card,
        ])
        .output()
        .await
        .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    let output = gateway_command(&["sim-gateway", "pin"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let pin = text(&output.stdout).trim().to_owned();
    let address = free_address();
    let server = gateway_command(&["serve", "sim-gateway"])
        .env("EID_SIM_GATEWAY_LISTEN", &address)
        .env("EID_SIM_GATEWAY_ANSWER_SECS", "30")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(&address).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Gateway {
        url: format!("https://{address}"),
        pin,
        _server: server,
        _eid: eid,
    }
}

impl Gateway {
    /// The phone's side, through the simulator's phone API (curl: TLS to the
    /// simulator's self-signed certificate, which the phone trusts).
    fn phone(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let mut command = std::process::Command::new("curl");
        command
            .args([
                "-sS",
                "-k",
                "-X",
                method,
                "-H",
                "content-type: application/json",
            ])
            .arg(format!("{}{path}", self.url));
        if let Some(body) = body {
            command.args(["--data", &body.to_string()]);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", text(&output.stdout)))
    }

    /// The one prompt waiting on `phone`, once it arrives.
    async fn prompt(&self, phone: &str) -> Value {
        let path = format!("/phone/api/{}/pending", phone.replace('+', "%2B"));
        for _ in 0..100 {
            let pending = self.phone("GET", &path, None);
            if let Some(first) = pending.as_array().and_then(|a| a.first()) {
                return first.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no prompt reached {phone}");
    }

    fn answer(&self, phone: &str, prompt: &Value, action: &str, body: Option<&Value>) -> Value {
        let path = format!(
            "/phone/api/{}/sessions/{}/{action}",
            phone.replace('+', "%2B"),
            prompt["session_id"].as_str().unwrap()
        );
        self.phone("POST", &path, body)
    }
}

const PHONE: &str = "+18685550161";
const NATIONAL_ID: &str = "3900101123456";
const REVOKED_PHONE: &str = "+18685550162";
const REVOKED_ID: &str = "3900101654321";

async fn mobile_id_login_in_a_real_browser(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let addresses = Addresses::new();
    let dir = eid.dir.path().to_path_buf();
    run(&eid, &addresses, &["init"]).await;
    let sim = make_sim(
        &eid,
        &addresses,
        &dir,
        &format!("mid-{backend:?}"),
        NATIONAL_ID,
    )
    .await;
    let revoked = make_sim(
        &eid,
        &addresses,
        &dir,
        &format!("lost-{backend:?}"),
        REVOKED_ID,
    )
    .await;
    run(
        &eid,
        &addresses,
        &[
            "ca",
            "revoke",
            "--serial",
            &openssl_serial(&revoked.certificate),
            "--reason",
            "keyCompromise",
        ],
    )
    .await;
    let gateway = start_gateway(&[
        (PHONE, NATIONAL_ID, &sim),
        (REVOKED_PHONE, REVOKED_ID, &revoked),
    ])
    .await;
    let (client_id, secret) = register(&eid, &addresses, &[]).await;
    let server = {
        let mut command = command(&eid, &addresses, &["serve"]);
        command
            .env("EID_MOBILE_ID_GATEWAY_URL", &gateway.url)
            .env("EID_MOBILE_ID_GATEWAY_PIN", &gateway.pin)
            .stdout(Stdio::piped());
        Server::start(command, 4).await
    };
    let issuer = format!("http://{}", addresses.idp);
    let verifier = "a-pkce-verifier-for-the-mobile-id-login-0123456789";
    let challenge = {
        use base64ct::Encoding;
        use sha2::Digest;
        base64ct::Base64UrlUnpadded::encode_string(&sha2::Sha256::digest(verifier.as_bytes()))
    };
    let authorize = format!(
        "{issuer}/authorize?client_id={client_id}&response_type=code&scope=openid&\
         redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&state=mid&nonce=n-mid&\
         code_challenge={challenge}&code_challenge_method=S256&\
         acr_values=http%3A%2F%2Feidas.europa.eu%2FLoA%2Fhigh"
    );
    let browser = Browser::start().await;
    let login = |phone: &'static str, national_id: &'static str| {
        let browser = &browser;
        let authorize = &authorize;
        async move {
            browser.goto(authorize).await;
            browser.type_into("#mobile-phone", phone).await;
            browser.type_into("#mobile-national-id", national_id).await;
            browser.click("#mobile-id").await;
        }
    };

    // A phone number the gateway would refuse never leaves the provider.
    login("5550161", NATIONAL_ID).await;
    let message = browser.text_when_shown("#mobile-error").await;
    assert!(message.contains("Check the phone number"), "{message}");

    // The citizen cancels on the phone: the waiting page says so.
    login(PHONE, NATIONAL_ID).await;
    let code = browser.text_when_shown("#verification-code").await;
    let prompt = gateway.prompt(PHONE).await;
    assert_eq!(prompt["verification_code"], code.as_str());
    assert_eq!(prompt["pin"], "PIN1");
    assert!(
        prompt["prompt"]
            .as_str()
            .unwrap()
            .starts_with("Board of Inland Revenue"),
        "{prompt}"
    );
    gateway.answer(PHONE, &prompt, "cancel", None);
    let message = browser.text_when_shown("#mobile-error").await;
    assert_eq!(message, "You cancelled on your phone.");

    // A national identity number with no mobile ID on that phone.
    login(PHONE, "3900101999999").await;
    let message = browser.text_when_shown("#mobile-error").await;
    assert!(message.contains("no active mobile ID"), "{message}");

    // A revoked certificate: the SIM signs, the provider refuses.
    login(REVOKED_PHONE, REVOKED_ID).await;
    browser.text_when_shown("#verification-code").await;
    let prompt = gateway.prompt(REVOKED_PHONE).await;
    let confirmed = gateway.answer(
        REVOKED_PHONE,
        &prompt,
        "confirm",
        Some(&serde_json::json!({ "pin": PIN1 })),
    );
    assert_eq!(confirmed["outcome"], "signed", "{confirmed}");
    let message = browser.text_when_shown("#mobile-error").await;
    assert!(message.contains("revoked or suspended"), "{message}");

    // The real thing: code compared, PIN1 on the phone, logged in at level high.
    login(PHONE, NATIONAL_ID).await;
    let code = browser.text_when_shown("#verification-code").await;
    let prompt = gateway.prompt(PHONE).await;
    assert_eq!(prompt["verification_code"], code.as_str());
    let wrong = gateway.answer(
        PHONE,
        &prompt,
        "confirm",
        Some(&serde_json::json!({ "pin": "0000" })),
    );
    assert_eq!(wrong["outcome"], "wrong-pin", "{wrong}");
    gateway.answer(
        PHONE,
        &prompt,
        "confirm",
        Some(&serde_json::json!({ "pin": PIN1 })),
    );
    let next = browser
        .wait_for_url(|url| url.contains("/consent/") || url.starts_with("http://127.0.0.1:9/"))
        .await;
    if next.contains("/consent/") {
        browser.click_and_wait("#allow").await;
    }
    let back = browser
        .wait_for_url(|url| url.starts_with("http://127.0.0.1:9/callback"))
        .await;
    let query = query_of(&back);
    assert_eq!(query["state"], "mid");
    let tokens: Value = http()
        .post(format!("{issuer}/token"))
        .basic_auth(&client_id, Some(&secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", query["code"].as_str()),
            ("redirect_uri", "http://127.0.0.1:9/callback"),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let claims = payload_of(
        tokens["id_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{tokens}")),
    );
    assert_eq!(claims["acr"], "http://eidas.europa.eu/LoA/high");
    assert_eq!(
        claims["amr"],
        serde_json::json!(["hwk", "mca", "mfa", "pin"])
    );
    assert_eq!(claims["nonce"], "n-mid");
    browser.quit().await;
    server.stop().await;

    // Every refusal and the login are in the audit log, and the chain is intact.
    let tail = run(&eid, &addresses, &["audit", "tail", "-n", "60"]).await;
    for expected in [
        "idp.mobile-id.start",
        "USER_CANCELLED",
        "NOT_MID_CLIENT",
        "REVOKED",
        "idp.mobile-id.authenticated",
    ] {
        assert!(tail.contains(expected), "{expected} missing from {tail}");
    }
    run(&eid, &addresses, &["audit", "verify"]).await;
}

on_both_backends!(mobile_id_login_in_a_real_browser);
