//! The enrolment desk through `eid serve`, walked in headless Chromium: a workstation
//! registered, a clerk and a supervisor enrolling passkeys (the WebDriver virtual
//! authenticator), a citizen pre-registered, two documents recorded (one refused first
//! for a wrong check digit), a name mismatch approved by the supervisor (after the clerk
//! is refused approving their own case), and a blank SoftHSM2 "card" activated. Then
//! independent judges: pkcs11-tool reads the card, openssl verifies its certificates
//! and a signature made on it, and curl (OpenSSL with the PKCS#11 engine) logs in at
//! the idp's ID-card listener with the card's key. The identity's life then goes on at
//! the desk (`lifecycle`): suspension, resumption, a PIN unblocked, the card replaced,
//! deactivation.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use eid_tests::{
    TestBackend,
    mrz::{td1, td3},
    on_both_backends,
};
use serde_json::Value;

use super::{
    Eid, Server,
    browser::Browser,
    ca::{free_address, judge},
    text,
};

mod lifecycle;
mod offline;
mod ota;
mod remote;
mod staff_card;

/// The PKCS#11 URI of `card`'s authentication key (PIN1 `pin`) and its certificate's
/// path, as curl's TLS arguments take them.
fn card_key_and_certificate(card: &str, pin: &str, certificate: &Path) -> (String, String) {
    (
        format!(
            "pkcs11:token={card}%20(PIN1);object=citizen-authentication;type=private;\
             pin-value={pin}"
        ),
        certificate.display().to_string(),
    )
}

/// curl's arguments presenting a card in the TLS handshake: the key on the token
/// through OpenSSL's PKCS#11 engine, and its certificate.
fn engine_tls<'a>(key: &'a str, certificate: &'a str) -> [&'a str; 8] {
    [
        "--engine",
        "pkcs11",
        "--key-type",
        "ENG",
        "--key",
        key,
        "--cert",
        certificate,
    ]
}

/// The first citizen's SoftHSM2 card as staff present it on the desk's card listener
/// (through curl and OpenSSL's PKCS#11 engine): the test's folder, the card's national
/// identity number, curl's TLS arguments and environment.
#[derive(Clone, Copy)]
struct DeskCard<'a> {
    dir: &'a Path,
    national_id: &'a str,
    tls: (&'a [&'a str], &'a [(&'a str, &'a str)]),
}

const TRANSPORT: &str = "55667788";
const PIN1: &str = "4821";
const PIN2: &str = "73915";
const PUK: &str = "83920174";
/// The token of class hsm holding the instance's keys, beside the cards in the reader.
const SERVICE_TOKEN: &str = "eid-service";
const SERVICE_PIN: &str = "246810";

/// The fixed addresses and the card reader (a SoftHSM2 configuration of the test's own).
struct Setup {
    config: PathBuf,
    idp: String,
    ca: String,
    card: String,
    /// The desk's own ID-card listener (staff login).
    desk_card: String,
    enrolment_port: String,
    softhsm: PathBuf,
    module: String,
}

impl Setup {
    fn new(dir: &Path) -> Self {
        let tokens = dir.join("reader");
        std::fs::create_dir_all(&tokens).unwrap();
        let softhsm = dir.join("reader.conf");
        std::fs::write(
            &softhsm,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\n",
                tokens.display()
            ),
        )
        .unwrap();
        // The instance's own keys (CA, TSA, seals, remote signing credentials) on a
        // token of class hsm beside the cards: remote signing keys live only on one.
        let initialised = std::process::Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &softhsm)
            .args([
                "--init-token",
                "--free",
                "--label",
                SERVICE_TOKEN,
                "--so-pin",
                "83910274",
                "--pin",
                SERVICE_PIN,
            ])
            .output()
            .unwrap();
        assert!(
            initialised.status.success(),
            "softhsm2-util: {}",
            text(&initialised.stderr)
        );
        let service_pin = dir.join("service-pin");
        std::fs::write(&service_pin, format!("{SERVICE_PIN}\n")).unwrap();
        let module = std::env::var("EID_TEST_PKCS11_MODULE")
            .unwrap_or_else(|_| "/usr/lib/softhsm/libsofthsm2.so".into());
        let enrolment = free_address();
        // A relying service allowed to ask for identities' status.
        let token = dir.join("status-token");
        std::fs::write(&token, lifecycle::STATUS_TOKEN).unwrap();
        let config = dir.join("eid.toml");
        std::fs::write(
            &config,
            format!(
                "[keys]\nbackend = \"pkcs11\"\n[keys.pkcs11]\nmodule = {module:?}\n\
                 token_label = \"{SERVICE_TOKEN}\"\npin_file = {:?}\n\
                 [enrolment]\nstatus_queries_per_minute = 40\nqueue_retry_secs = 1\n\
                 [[enrolment.status_client]]\nname = \"benefits-office\"\ntoken_file = {:?}\n\
                 [[enrolment.operator_client]]\nname = \"tt-mobile\"\ntoken_env = \"EID_TEST_OPERATOR_TOKEN\"\n",
                service_pin.display().to_string(),
                token.display().to_string()
            ),
        )
        .unwrap();
        Self {
            config,
            idp: free_address(),
            ca: free_address(),
            card: free_address(),
            desk_card: free_address(),
            enrolment_port: enrolment.rsplit(':').next().unwrap().to_owned(),
            softhsm,
            module,
        }
    }

    fn desk_url(&self) -> String {
        format!("http://localhost:{}", self.enrolment_port)
    }

    fn command(&self, eid: &Eid, args: &[&str]) -> tokio::process::Command {
        let mut command = eid.command(args);
        command
            .env("EID_CONFIG", &self.config)
            .env("EID_IDP_LISTEN", &self.idp)
            .env("EID_CA_LISTEN", &self.ca)
            .env("EID_IDP_CARD_LISTEN", &self.card)
            .env("EID_ENROLMENT_CARD_LISTEN", &self.desk_card)
            .env("EID_IDP_ISSUER", format!("http://{}", self.idp))
            .env(
                "EID_ENROLMENT_LISTEN",
                format!("127.0.0.1:{}", self.enrolment_port),
            )
            .env("EID_ENROLMENT_READER_MODULE", &self.module)
            .env("EID_ENROLMENT_TRANSPORT_CODE", TRANSPORT)
            .env("EID_TEST_OPERATOR_TOKEN", ota::OPERATOR_TOKEN)
            .env("SOFTHSM2_CONF", &self.softhsm);
        command
    }

    async fn run(&self, eid: &Eid, args: &[&str]) -> String {
        let output = self.command(eid, args).output().await.unwrap();
        assert!(
            output.status.success(),
            "eid {args:?}: {}",
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    /// The path of the one-time link a command printed.
    async fn link(&self, eid: &Eid, args: &[&str]) -> String {
        let output = self.run(eid, args).await;
        let url = output
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no link in {output}"));
        assert!(url.starts_with(&self.desk_url()), "{url}");
        url.to_owned()
    }

    fn pkcs11_tool(&self, token: &str, args: &[&str]) -> std::process::Output {
        let output = std::process::Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &self.softhsm)
            .args(["--module", &self.module, "--token-label", token])
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run pkcs11-tool ({e}): deploy/test.sh installs opensc")
            });
        assert!(
            output.status.success(),
            "pkcs11-tool {args:?}: {}",
            text(&output.stderr)
        );
        output
    }
}

/// Records a document on the open case page.
async fn record_document(browser: &Browser, kind: &str, number: &str, expiry: &str, mrz: &str) {
    browser
        .click(&format!("#doc_type option[value=\"{kind}\"]"))
        .await;
    browser.type_into("#issuer", "TTO").await;
    browser.type_into("#number", number).await;
    browser.type_into("#expiry", expiry).await;
    browser.type_into("#mrz", mrz).await;
    browser.click_and_wait("#record-document").await;
}

/// openssl judges a citizen's certificate: `verify -x509_strict` up to the exported
/// root (`dir/pki`) through the issuing CA `issuer`, and, given a national id, the
/// subject's serialNumber in the ETSI form naming that citizen.
fn assert_citizen_certificate(dir: &Path, issuer: &str, pem: &Path, national_id: Option<&str>) {
    let pki = dir.join("pki");
    let verified = judge(
        "openssl",
        &[
            "verify",
            "-x509_strict",
            "-CAfile",
            &pki.join("root.pem").display().to_string(),
            "-untrusted",
            &pki.join(format!("{issuer}.pem")).display().to_string(),
            &pem.display().to_string(),
        ],
    );
    assert!(
        text(&verified.stdout).contains(": OK"),
        "{}: {}{}",
        pem.display(),
        text(&verified.stdout),
        text(&verified.stderr)
    );
    if let Some(national_id) = national_id {
        let subject = text(
            &judge(
                "openssl",
                &[
                    "x509",
                    "-in",
                    &pem.display().to_string(),
                    "-noout",
                    "-subject",
                ],
            )
            .stdout,
        );
        assert!(
            subject.contains(&format!("PNOTT-{national_id}")),
            "{subject}"
        );
    }
}

/// Asserts the audit `log` has a successful `action` (on a line that also has
/// `about`) naming the clerk, desk and centre of the journey.
fn assert_desk_step(log: &str, action: &str, about: &str) {
    let line = log
        .lines()
        .find(|l| l.contains(action) && l.contains("success") && l.contains(about))
        .unwrap_or_else(|| panic!("no successful {action} in\n{log}"));
    assert!(
        line.contains("\"clerk\":\"ann\"")
            && line.contains("\"desk\":\"desk-1\"")
            && line.contains("\"centre\":\"pos\""),
        "{line}"
    );
}

/// Registers the centre `pos`, the workstation `desk-1` there, the clerk `ann` and the
/// supervisor `sam`; returns the one-time links of the desk, the clerk and the
/// supervisor.
async fn staff_links(setup: &Setup, eid: &Eid) -> (String, String, String) {
    setup
        .run(
            eid,
            &[
                "enrolment",
                "centre",
                "add",
                "pos",
                "--name",
                "Port of Spain",
            ],
        )
        .await;
    let desk_link = setup
        .link(
            eid,
            &[
                "enrolment",
                "desk",
                "add",
                "desk-1",
                "--centre",
                "pos",
                "--name",
                "Desk 1",
            ],
        )
        .await;
    let clerk_link = setup
        .link(
            eid,
            &[
                "enrolment",
                "staff",
                "add",
                "ann",
                "--name",
                "Ann Clerk",
                "--role",
                "clerk",
                "--centre",
                "pos",
            ],
        )
        .await;
    let supervisor_link = setup
        .link(
            eid,
            &[
                "enrolment",
                "staff",
                "add",
                "sam",
                "--name",
                "Sam Supervisor",
                "--role",
                "supervisor",
                "--centre",
                "pos",
            ],
        )
        .await;
    (desk_link, clerk_link, supervisor_link)
}

/// Registers the workstation in `browser` and enrols a passkey for each staff link
/// (on the virtual authenticator).
async fn register_desk(browser: &Browser, desk: &str, desk_link: &str, staff: &[&String]) {
    browser.goto(&format!("{desk}/desk")).await;
    browser
        .source_when(|page| page.contains("not a registered desk"))
        .await;
    browser.goto(desk_link).await;
    browser.click_and_wait("#register").await;
    assert!(browser.text("#notice").await.contains("Desk 1"));
    for link in staff {
        browser.goto(link).await;
        browser.click("#enrol").await;
        browser.wait_for_url(|url| url.ends_with("/desk")).await;
        // The login page loaded (the URL changes before): opening the next link now
        // would race the load and read an empty page.
        browser.find("#staff-id").await;
    }
}

/// Judges the certificates on `card` and its keys: each certificate read from the card
/// verifies with openssl up to the root and names the citizen; each key signs (with its
/// PIN) and openssl verifies the signature with the certificate. Needs `ca export` in
/// `dir/pki`.
fn judge_card(setup: &Setup, dir: &Path, card: &str, national_id: &str) {
    for (token, pin, label, ca) in [
        (
            &format!("{card} (PIN1)"),
            PIN1,
            "citizen-authentication",
            "citizen-auth-ca",
        ),
        (
            &format!("{card} (PIN2)"),
            PIN2,
            "citizen-signing",
            "citizen-sign-ca",
        ),
    ] {
        let der = dir.join(format!("{label}.der"));
        setup.pkcs11_tool(
            token,
            &[
                "--login",
                "--pin",
                pin,
                "--read-object",
                "--type",
                "cert",
                "--label",
                label,
                "--output-file",
                &der.display().to_string(),
            ],
        );
        let pem = dir.join(format!("{label}.pem"));
        let converted = judge(
            "openssl",
            &[
                "x509",
                "-inform",
                "DER",
                "-in",
                &der.display().to_string(),
                "-out",
                &pem.display().to_string(),
            ],
        );
        assert!(converted.status.success(), "{}", text(&converted.stderr));
        assert_citizen_certificate(dir, ca, &pem, Some(national_id));
        // The key on the card signs, and openssl verifies it with the certificate.
        let data = dir.join("data.txt");
        std::fs::write(&data, b"signed on the card").unwrap();
        let hash = dir.join("data.sha256");
        let digest = judge(
            "openssl",
            &[
                "dgst",
                "-sha256",
                "-binary",
                "-out",
                &hash.display().to_string(),
                &data.display().to_string(),
            ],
        );
        assert!(digest.status.success());
        let signature = dir.join(format!("{label}.sig"));
        setup.pkcs11_tool(
            token,
            &[
                "--login",
                "--pin",
                pin,
                "--sign",
                "-m",
                "ECDSA",
                "--label",
                label,
                "--signature-format",
                "openssl",
                "--input-file",
                &hash.display().to_string(),
                "--output-file",
                &signature.display().to_string(),
            ],
        );
        let public = dir.join(format!("{label}.pub"));
        judge(
            "openssl",
            &[
                "x509",
                "-in",
                &pem.display().to_string(),
                "-noout",
                "-pubkey",
                "-out",
                &public.display().to_string(),
            ],
        );
        let checked = judge(
            "openssl",
            &[
                "dgst",
                "-sha256",
                "-verify",
                &public.display().to_string(),
                "-signature",
                &signature.display().to_string(),
                &data.display().to_string(),
            ],
        );
        assert!(
            text(&checked.stdout).contains("Verified OK"),
            "{}",
            text(&checked.stderr)
        );
    }
}

on_both_backends!(desk_journey_activates_a_card_that_logs_in);

async fn desk_journey_activates_a_card_that_logs_in(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let dir = eid.dir.path().to_path_buf();
    let setup = Setup::new(&dir);
    setup.run(&eid, &["init"]).await;
    // The card manufacturer's blank cards, in the reader before the desk starts
    // (SoftHSM2 shows a process only the tokens that existed when it loaded).
    for card in ["EID-0001", "EID-0002"] {
        setup.run(&eid, &["enrolment", "blank-card", card]).await;
    }
    // A card of another batch, whose transport code this desk does not have.
    let other_batch = setup
        .command(&eid, &["enrolment", "blank-card", "EID-0003"])
        .env("EID_ENROLMENT_TRANSPORT_CODE", "99887766")
        .output()
        .await
        .unwrap();
    assert!(
        other_batch.status.success(),
        "{}",
        text(&other_batch.stderr)
    );
    let (desk_link, clerk_link, supervisor_link) = staff_links(&setup, &eid).await;
    let server = {
        let mut command = setup.command(&eid, &["serve"]);
        command.stdout(Stdio::piped());
        Server::start(command, 4).await
    };
    let desk = setup.desk_url();

    // Pre-registration through the API (and its refusals).
    let http = reqwest::Client::new();
    let apply = |body: Value| {
        let http = http.clone();
        let url = format!("{desk}/api/v1/applications");
        async move { http.post(url).json(&body).send().await.unwrap() }
    };
    let bad = apply(serde_json::json!({
        "given_name": "Anna", "family_name": "Eriksson", "birth_date": "1974-02-30",
        "address": "1 Frederick Street",
    }))
    .await;
    assert_eq!(bad.status(), 422);
    let problem: Value = bad.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("date of birth"),
        "{problem}"
    );
    let created = apply(serde_json::json!({
        "given_name": "Anna Maria", "family_name": "Eriksson", "birth_date": "1974-08-12",
        "email": "anna@example.org", "address": "1 Frederick Street, Port of Spain",
    }))
    .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let national_id = created["national_id"].as_str().unwrap().to_owned();
    assert_eq!(national_id.len(), 13);
    assert!(eid_enrolment::national_id::NationalIdNumber::parse(&national_id).is_ok());
    assert_eq!(created["status"], "pending");

    // The workstation, then the two staff passkeys.
    let browser = Browser::start().await;
    let authenticator = browser.add_virtual_authenticator().await;
    register_desk(
        &browser,
        &desk,
        &desk_link,
        &[&supervisor_link, &clerk_link],
    )
    .await;
    assert_eq!(browser.credentials(&authenticator).await.len(), 2);
    // A used link does not work twice.
    browser.goto(&clerk_link).await;
    browser
        .source_when(|page| page.contains("used or expired"))
        .await;

    // The clerk logs in and finds the application.
    browser.goto(&format!("{desk}/desk")).await;
    browser.type_into("#staff-id", "ann").await;
    browser.click("#login button").await;
    browser.find("#q").await;
    assert!(browser.text("#staff").await.contains("Ann Clerk"));
    browser.type_into("#q", &national_id).await;
    browser
        .click_and_wait("form[action='/desk/search'] button")
        .await;
    assert_eq!(browser.text("#status").await, "pending");
    browser.click_and_wait("#record-consent").await;
    assert!(browser.text("#notice").await.contains("Consent"));

    // A passport whose document-number check digit is wrong is refused, naming the field.
    let good = td3("ERIKSSON<<ANNA<MARIA", "TA1234567", "740812", "310630");
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    let digit = lines[1].as_bytes()[9];
    let wrong = if digit == b'9' {
        '0'
    } else {
        char::from(digit + 1)
    };
    lines[1].replace_range(9..10, &wrong.to_string());
    record_document(
        &browser,
        "passport",
        "TA1234567",
        "2031-06-30",
        &lines.join("\n"),
    )
    .await;
    let error = browser.text("#error").await;
    assert!(error.contains("document number check digit"), "{error}");
    assert!(!browser.has("#documents").await);
    // Expired documents are refused too.
    let expired = td3("ERIKSSON<<ANNA<MARIA", "TA1234567", "740812", "240101");
    record_document(&browser, "passport", "TA1234567", "2024-01-01", &expired).await;
    assert!(browser.text("#error").await.contains("expired"));
    // The right zone: recorded, matching.
    record_document(&browser, "passport", "TA1234567", "2031-06-30", &good).await;
    assert!(
        browser
            .text("#notice")
            .await
            .contains("matches the application")
    );
    // The same document twice is a double submission.
    record_document(&browser, "passport", "TA1234567", "2031-06-30", &good).await;
    assert!(browser.text("#error").await.contains("already recorded"));
    // An ID card whose name differs (one S): recorded as an exception.
    let card_zone = td1("ERIKSON<<ANNA<MARIA", "ID7654321", "740812", "300101");
    record_document(
        &browser,
        "national-id",
        "ID7654321",
        "2030-01-01",
        &card_zone,
    )
    .await;
    assert!(browser.text("#notice").await.contains("supervisor"));
    assert!(
        browser
            .text("#exceptions")
            .await
            .contains("needs a supervisor")
    );
    // The case cannot be approved yet.
    browser.click_and_wait("#approve-case").await;
    assert!(browser.text("#error").await.contains("supervisor"));

    // The clerk cannot approve their own case; the supervisor, authenticating now, can.
    browser.type_into("#supervisor-id", "ann").await;
    browser.click("#approve button").await;
    let refusal = browser.text_when_shown("#passkey-error").await;
    assert!(refusal.contains("own case"), "{refusal}");
    browser.type_into("#supervisor-id", "sam").await;
    browser.click("#approve button").await;
    browser
        .wait_for_url(|url| url.contains("done=exceptions"))
        .await;
    assert!(
        browser
            .text("#notice")
            .await
            .contains("approved the exceptions")
    );
    assert!(
        browser
            .text("#exceptions")
            .await
            .contains("approved by a supervisor")
    );
    browser.click_and_wait("#approve-case").await;
    assert_eq!(browser.text("#status").await, "approved");

    // Activation: PINs that differ from their confirmation are refused; then the card.
    browser.click("#card option[value=\"EID-0001\"]").await;
    for (field, value) in [
        ("#pin1", PIN1),
        ("#pin1_confirm", "4822"),
        ("#pin2", PIN2),
        ("#pin2_confirm", PIN2),
        ("#puk", PUK),
        ("#puk_confirm", PUK),
    ] {
        browser.type_into(field, value).await;
    }
    browser.click_and_wait("#activate").await;
    assert!(
        browser
            .text("#error")
            .await
            .contains("PIN1 and its confirmation differ")
    );
    browser.click("#card option[value=\"EID-0001\"]").await;
    for (field, value) in [
        ("#pin1", PIN1),
        ("#pin1_confirm", PIN1),
        ("#pin2", PIN2),
        ("#pin2_confirm", PIN2),
        ("#puk", PUK),
        ("#puk_confirm", PUK),
    ] {
        browser.type_into(field, value).await;
    }
    browser.click_and_wait("#activate").await;
    let notice = browser.text("#notice").await;
    assert!(notice.contains("activated"), "{notice}");
    assert_eq!(browser.text("#status").await, "active");
    let case_url = browser.url().await;
    browser.click_and_wait("#receipt").await;
    assert_eq!(browser.text("#national-id").await, national_id);
    let record_hash = browser.text("#record-hash").await;
    assert_eq!(record_hash.len(), 64);

    // The sealed record verifies.
    let verified = setup
        .run(&eid, &["enrolment", "verify-record", &national_id])
        .await;
    assert!(verified.contains(&record_hash), "{verified}");

    // Judges on the card itself.
    let pki = dir.join("pki");
    setup
        .run(&eid, &["ca", "export", "--out", &pki.display().to_string()])
        .await;
    let objects = text(
        &setup
            .pkcs11_tool(
                "EID-0001 (PIN2)",
                &["--login", "--pin", PIN2, "--list-objects"],
            )
            .stdout,
    );
    assert!(objects.contains("always authenticate"), "{objects}");
    assert!(objects.contains("never extractable"), "{objects}");
    judge_card(&setup, &dir, "EID-0001", &national_id);

    // The card logs in at the idp: curl, through OpenSSL's PKCS#11 engine, presents the
    // authentication certificate and signs the TLS handshake on the card with PIN1.
    let engine_conf = dir.join("openssl-pkcs11.cnf");
    let engine = std::process::Command::new("sh")
        .args([
            "-c",
            "ls /usr/lib/*/engines-3/pkcs11.so 2>/dev/null | head -1",
        ])
        .output()
        .unwrap();
    let engine = text(&engine.stdout).trim().to_owned();
    assert!(
        !engine.is_empty(),
        "the OpenSSL PKCS#11 engine is missing: deploy/test.sh installs libengine-pkcs11-openssl"
    );
    std::fs::write(
        &engine_conf,
        format!(
            "openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n\
             [engine_section]\npkcs11 = pkcs11_section\n[pkcs11_section]\nengine_id = pkcs11\n\
             dynamic_path = {engine}\nMODULE_PATH = {}\ninit = 0\n",
            setup.module
        ),
    )
    .unwrap();
    let (key, cert) =
        card_key_and_certificate("EID-0001", PIN1, &dir.join("citizen-authentication.pem"));
    let card_tls = engine_tls(&key, &cert);
    let card_env = [
        ("OPENSSL_CONF", engine_conf.display().to_string()),
        ("SOFTHSM2_CONF", setup.softhsm.display().to_string()),
    ];
    let card_env: Vec<(&str, &str)> = card_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let status = super::idp::card_login_status_with(
        &format!("http://{}", setup.idp),
        &dir,
        &card_tls,
        &card_env,
    );
    assert!(status.starts_with('3'), "the card login answered {status}");

    // The citizen works at this centre: the same card logs them in at the desk.
    let card = DeskCard {
        dir: &dir,
        national_id: &national_id,
        tls: (&card_tls, &card_env),
    };
    staff_card::staff_log_in_with_their_card(&setup, &eid, &browser, card).await;

    // The second blank card is still blank: the desk touched only the one chosen.
    let blank = text(
        &setup
            .pkcs11_tool("EID-0002 (PIN1)", &["--list-objects"])
            .stdout,
    );
    assert!(!blank.contains("citizen-authentication"), "{blank}");

    // A second citizen gets a SIM over the air, once verified at this desk.
    let second_case =
        ota::second_citizen_gets_a_sim_over_the_air(&setup, &eid, &browser, card).await;

    // A remote signing credential on the instance's HSM; then the identity's life goes
    // on at the desk: suspended, resumed, a PIN unblocked, the card replaced onto
    // EID-0002, deactivated.
    let journey = lifecycle::Journey {
        setup: &setup,
        eid: &eid,
        browser: &browser,
        case_url: case_url.split('?').next().unwrap(),
        national_id: &national_id,
        card,
        second_case: &second_case,
    };
    let remote = remote::desk_creates_remote_credentials(&journey).await;
    lifecycle::after_activation(&journey, &remote).await;
    browser.quit().await;
    server.stop().await;
}
