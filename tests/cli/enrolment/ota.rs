//! A SIM activated over the air: a second citizen, refused while not yet verified in
//! person, is verified at the desk (consent, two documents, approval); the operator
//! (`eid sim-gateway ota-activate`, its own SoftHSM2 SIM) sends the SIM's two
//! certificate requests to the registration authority, which has the CA certify them;
//! openssl verifies the certificates read back from the SIM; a second activation of the
//! now active identity is refused.

use eid_tests::mrz::{td1, td3};
use serde_json::Value;

use super::{
    super::{Eid, browser::Browser, text},
    Setup, record_document,
};

/// The operator's bearer token at the registration authority.
pub(super) const OPERATOR_TOKEN: &str = "a-mobile-operator-token-for-over-the-air-activation";

async fn ota_activate(
    setup: &Setup,
    eid: &Eid,
    national_id: &str,
    card: &str,
) -> std::process::Output {
    setup
        .command(
            eid,
            &[
                "sim-gateway",
                "ota-activate",
                "--phone",
                "+18685550190",
                "--national-id",
                national_id,
                "--card",
                card,
                "--registration-authority",
                &setup.desk_url(),
            ],
        )
        .env("EID_SIM_GATEWAY_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env("EID_SIM_GATEWAY_MODULE", &setup.module)
        .output()
        .await
        .unwrap()
}

/// Returns the second citizen's case page.
pub(super) async fn second_citizen_gets_a_sim_over_the_air(
    setup: &Setup,
    eid: &Eid,
    browser: &Browser,
    card: super::DeskCard<'_>,
) -> String {
    let desk = setup.desk_url();
    let created: Value = reqwest::Client::new()
        .post(format!("{desk}/api/v1/applications"))
        .json(&serde_json::json!({
            "given_name": "Ravi", "family_name": "Persad", "birth_date": "1980-03-15",
            "address": "4 Queen Street, Arima",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let national_id = created["national_id"].as_str().unwrap().to_owned();

    // Not verified in person yet: the registration authority refuses, nothing issued.
    let early = ota_activate(setup, eid, &national_id, "SIM-OTA-EARLY").await;
    assert!(!early.status.success());
    let said = text(&early.stderr);
    assert!(said.contains("not been verified in person"), "{said}");

    // The desk verifies them: consent, two documents (the ID card's name spelt
    // otherwise: a supervisor approves it with their own ID card), approval.
    browser.goto(&format!("{desk}/desk")).await;
    browser.type_into("#q", &national_id).await;
    browser
        .click_and_wait("form[action='/desk/search'] button")
        .await;
    assert_eq!(browser.text("#status").await, "pending");
    let case_url = browser.url().await;
    browser.click_and_wait("#record-consent").await;
    let passport = td3("PERSAD<<RAVI", "TB7654321", "800315", "320101");
    record_document(browser, "passport", "TB7654321", "2032-01-01", &passport).await;
    let id_card = td1("PERSAUD<<RAVI", "ID1122334", "800315", "310101");
    record_document(browser, "national-id", "ID1122334", "2031-01-01", &id_card).await;
    assert!(browser.text("#notice").await.contains("supervisor"));
    super::staff_card::supervisor_approves_with_their_card(setup, eid, browser, card).await;
    browser.click_and_wait("#approve-case").await;
    assert_eq!(browser.text("#status").await, "approved");

    // Over the air: keys made on the SIM, certified through the registration authority.
    let made = ota_activate(setup, eid, &national_id, "SIM-OTA-1").await;
    assert!(made.status.success(), "{}", text(&made.stderr));
    let made: Value = serde_json::from_slice(&made.stdout).unwrap();
    assert_eq!(made["sim"]["national_id"], national_id.as_str());
    assert_eq!(made["certificates"].as_array().unwrap().len(), 2);
    let status: Value = reqwest::Client::new()
        .get(format!("{desk}/api/v1/identities/{national_id}/status"))
        .bearer_auth(super::lifecycle::STATUS_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "active", "{status}");

    // The certificates on the SIM, judged by openssl against the exported hierarchy.
    let dir = eid.dir.path();
    for (token, pin, label, ca) in [
        (
            "SIM-OTA-1 (PIN1)",
            made["pin1"].as_str().unwrap(),
            "citizen-authentication",
            "citizen-auth-ca",
        ),
        (
            "SIM-OTA-1 (PIN2)",
            made["pin2"].as_str().unwrap(),
            "citizen-signing",
            "citizen-sign-ca",
        ),
    ] {
        let pem = super::lifecycle::card_certificate(setup, dir, token, pin, label);
        super::assert_citizen_certificate(dir, ca, &pem, None);
    }

    // Active now: a further SIM over the air is refused.
    let again = ota_activate(setup, eid, &national_id, "SIM-OTA-2").await;
    assert!(!again.status.success());
    let said = text(&again.stderr);
    assert!(said.contains("already has an active token"), "{said}");
    let tail = setup.run(eid, &["audit", "tail", "-n", "80"]).await;
    assert!(tail.contains("enrolment.ota.activate"), "{tail}");
    case_url.split('?').next().unwrap().to_owned()
}
