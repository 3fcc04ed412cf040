//! The desk keeps working when the CA cannot be reached. The desk asks the CA over its
//! registration-authority API (`[enrolment.ca]`) through a link this test can cut; a
//! clerk verifies a citizen in Chromium and activates a card while the link is down:
//! the card gets its PINs, keys and PUK, the activation is queued, nothing is lost.
//! When the link returns, the desk's queue has the certificates issued and written on
//! the card without anyone at the desk; the identity is active. Judges: pkcs11-tool
//! reads the certificates from the card, openssl verifies them up to our root and
//! verifies signatures made on the card with the PINs the citizen chose.

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use eid_tests::{
    TestBackend,
    mrz::{td1, td3},
    on_both_backends,
};
use serde_json::Value;

use super::{PIN1, PIN2, PUK, Setup, judge_card, record_document, register_desk, staff_links};
use crate::{Eid, Server, browser::Browser};

/// The desk's bearer token at the CA.
const DESK_TOKEN: &str = "desk-to-ca-bearer-token-0123456789abcdef";

/// A TCP link to `target` that can be cut: while down, every connection (new or
/// open) is closed at once, as a dead line looks to the desk. While it loses answers,
/// requests reach the target but the connection closes as its answer starts back.
struct Link {
    address: String,
    up: Arc<AtomicBool>,
    lose_answers: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Link {
    async fn to(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let lose_answers = Arc::new(AtomicBool::new(false));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let (flag, losing) = (up.clone(), lose_answers.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue;
                }
                let (target, mut cuts) = (target.clone(), cuts.clone());
                let lose = losing.load(Ordering::SeqCst);
                // Only cuts from now on close this connection.
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    if lose {
                        let (mut request, _) = inbound.split();
                        let (mut answer, mut to_target) = outbound.split();
                        let mut first = [0u8; 1];
                        tokio::select! {
                            _ = tokio::io::copy(&mut request, &mut to_target) => {}
                            _ = tokio::io::AsyncReadExt::read(&mut answer, &mut first) => {}
                        }
                        return;
                    }
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self {
            address,
            up,
            lose_answers,
            cut,
        }
    }

    fn set(&self, up: bool) {
        self.lose_answers.store(false, Ordering::SeqCst);
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

/// Chooses `card` on the case page and activates it with the citizen's PINs.
async fn activate(browser: &Browser, card: &str) {
    browser
        .click(&format!("#card option[value=\"{card}\"]"))
        .await;
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
}

on_both_backends!(desk_queues_an_activation_while_the_ca_is_unreachable);

async fn desk_queues_an_activation_while_the_ca_is_unreachable(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let dir = eid.dir.path().to_path_buf();
    let setup = Setup::new(&dir);
    let link = Link::to(setup.ca.clone()).await;
    let token = dir.join("desk-token");
    std::fs::write(&token, DESK_TOKEN).unwrap();
    let mut config = std::fs::read_to_string(&setup.config).unwrap();
    config.push_str(&format!(
        "[enrolment.ca]\nurl = \"http://{}/\"\ntoken_file = {:?}\ntimeout_secs = 3\n\
         [[ca.issuance_client]]\nname = \"desk-pos\"\ntoken_file = {:?}\n",
        link.address,
        token.display().to_string(),
        token.display().to_string()
    ));
    std::fs::write(&setup.config, config).unwrap();
    setup.run(&eid, &["init"]).await;
    for card in ["EID-0001", "EID-0002"] {
        setup.run(&eid, &["enrolment", "blank-card", card]).await;
    }
    let (desk_link, clerk_link, _) = staff_links(&setup, &eid).await;
    let _server = {
        let mut command = setup.command(&eid, &["serve"]);
        command.stdout(Stdio::piped());
        Server::start(command, 4).await
    };
    let desk = setup.desk_url();
    let created: Value = reqwest::Client::new()
        .post(format!("{desk}/api/v1/applications"))
        .json(&serde_json::json!({
            "given_name": "Brian", "family_name": "Lara", "birth_date": "1969-05-02",
            "address": "2 Queen's Park West, Port of Spain",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let national_id = created["national_id"].as_str().unwrap().to_owned();

    // The clerk verifies the citizen: two matching documents, the case approved.
    let browser = Browser::start().await;
    browser.add_virtual_authenticator().await;
    register_desk(&browser, &desk, &desk_link, &[&clerk_link]).await;
    browser.goto(&format!("{desk}/desk")).await;
    browser.type_into("#staff-id", "ann").await;
    browser.click("#login button").await;
    browser.find("#q").await;
    browser.type_into("#q", &national_id).await;
    browser
        .click_and_wait("form[action='/desk/search'] button")
        .await;
    browser.click_and_wait("#record-consent").await;
    let passport = td3("LARA<<BRIAN", "TB7654321", "690502", "320101");
    record_document(&browser, "passport", "TB7654321", "2032-01-01", &passport).await;
    let card_zone = td1("LARA<<BRIAN", "ID1234567", "690502", "310101");
    record_document(
        &browser,
        "national-id",
        "ID1234567",
        "2031-01-01",
        &card_zone,
    )
    .await;
    browser.click_and_wait("#approve-case").await;
    assert_eq!(browser.text("#status").await, "approved");

    // The link goes down; the clerk activates the card all the same.
    link.set(false);
    activate(&browser, "EID-0001").await;
    let case_url = browser.url().await;
    let notice = browser.text("#notice").await;
    assert!(notice.contains("CA cannot be reached"), "{notice}");
    assert_eq!(browser.text("#status").await, "approved");
    let activations = browser.text(".activation").await;
    assert!(activations.contains("queued"), "{activations}");
    // The card holds both keys and no certificate yet.
    let objects = super::text(
        &setup
            .pkcs11_tool(
                "EID-0001 (PIN1)",
                &["--login", "--pin", PIN1, "--list-objects"],
            )
            .stdout,
    );
    assert!(objects.contains("citizen-authentication"), "{objects}");
    assert!(!objects.contains("Certificate Object"), "{objects}");
    // Another card for the same citizen is refused while the first one waits.
    activate(&browser, "EID-0002").await;
    let refusal = browser.text("#error").await;
    assert!(refusal.contains("waits for the CA"), "{refusal}");
    // While the link is down, the queue keeps the activation (it tries every second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    browser.goto(&case_url).await;
    assert_eq!(browser.text("#status").await, "approved");

    // The link half returns: the CA gets the desk's request and issues, but its answer
    // is lost on the way back. The desk cannot know the certificate exists.
    link.lose_answers.store(true, Ordering::SeqCst);
    link.up.store(true, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !setup
        .run(&eid, &["audit", "tail", "-n", "20"])
        .await
        .lines()
        .any(|l| l.contains("certificate.issue success") && l.contains("via service:desk-pos"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the CA issued nothing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.goto(&case_url).await;
    assert_eq!(browser.text("#status").await, "approved");

    // The link returns: the queue finishes the activation by itself, the CA handing
    // back the certificate whose answer was lost (not a second one).
    link.set(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        browser.goto(&case_url).await;
        if browser.text("#status").await == "active" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still not active: {}",
            browser.text(".activation").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pki = dir.join("pki");
    setup
        .run(&eid, &["ca", "export", "--out", &pki.display().to_string()])
        .await;
    judge_card(&setup, &dir, "EID-0001", &national_id);
    let verified = setup
        .run(&eid, &["enrolment", "verify-record", &national_id])
        .await;
    assert!(verified.contains("intact"), "{verified}");

    // Audited: queued by the clerk, finished by the queue, issued for the desk's clerk
    // through the RA caller.
    let log = setup.run(&eid, &["audit", "tail", "-n", "200"]).await;
    super::assert_desk_step(&log, "enrolment.activation.queue", "");
    super::assert_desk_step(&log, "enrolment.activation.dequeue", "");
    assert!(
        log.lines().any(|l| l.contains("certificate.issue")
            && l.contains("staff:ann@desk:desk-1 via service:desk-pos")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("certificate.issue success") && l.contains("\"repeated\":true")),
        "{log}"
    );
    assert_eq!(
        log.matches("certificate.plan").count(),
        2,
        "two certificates in all, none issued twice: {log}"
    );
    assert!(!log.contains("certificate.revoke"), "{log}");
    browser.quit().await;
}
