//! Remote signing credentials at the desk, in headless Chromium, for the citizen whose
//! card was just activated: refusals first (PIN and confirmation differ, a PIN outside
//! the policy, unlocking a credential that is not locked), then a credential created on
//! the instance's SoftHSM2 token of class hsm. Judges: pkcs11-tool finds the key on the
//! token (sensitive, never extractable) with its certificate, `openssl verify` chains
//! the certificate to our root, `openssl ocsp` asks the running responder. A withdrawn
//! credential's certificate is revoked (superseded) and its key gone from the token; a
//! second credential stays for the lifecycle that follows (suspended with the identity,
//! untouched by a card replacement, revoked at deactivation).

use std::path::PathBuf;

use serde_json::json;

use super::{
    SERVICE_PIN, SERVICE_TOKEN,
    lifecycle::{Journey, POST_FORM, card_certificate, ocsp},
};
use crate::text;

const REMOTE_PIN: &str = "58213";

/// The credential ids on the case page, in the order shown, with their status.
async fn credentials(journey: &Journey<'_>) -> Vec<(String, String)> {
    let rows = journey
        .browser
        .execute(
            "return [...document.querySelectorAll('#remote-credentials tbody tr')].map(row => \
             [row.querySelector('code').textContent, row.querySelector('.remote-status').textContent]);",
            json!([]),
        )
        .await;
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row[0].as_str().unwrap().to_owned(),
                row[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Types the signing PIN twice and asks for a credential.
async fn create(journey: &Journey<'_>, pin: &str, again: &str) {
    let browser = journey.browser;
    browser.goto(journey.case_url).await;
    browser.type_into("#remote-pin", pin).await;
    browser.type_into("#remote-pin_confirm", again).await;
    browser.click_and_wait("#remote-create").await;
}

/// The objects on the service token, as pkcs11-tool lists them.
fn service_objects(journey: &Journey<'_>) -> String {
    text(
        &journey
            .setup
            .pkcs11_tool(
                SERVICE_TOKEN,
                &["--login", "--pin", SERVICE_PIN, "--list-objects"],
            )
            .stdout,
    )
}

/// Reads a credential's certificate off the service token, as PEM.
fn certificate(journey: &Journey<'_>, credential: &str) -> PathBuf {
    card_certificate(
        journey.setup,
        journey.eid.dir.path(),
        SERVICE_TOKEN,
        SERVICE_PIN,
        credential,
    )
}

/// Creates, judges and withdraws a credential, then creates the one the lifecycle
/// goes on with. Returns that one's certificate (PEM).
pub(super) async fn desk_creates_remote_credentials(journey: &Journey<'_>) -> PathBuf {
    let Journey {
        setup,
        eid,
        browser,
        case_url,
        national_id,
        ..
    } = *journey;
    let dir = eid.dir.path();
    browser.goto(case_url).await;
    assert!(browser.has("#remote-none").await);

    // Refused at the desk, nothing created.
    create(journey, REMOTE_PIN, "58214").await;
    let error = browser.text("#error").await;
    assert!(error.contains("confirmation differ"), "{error}");
    create(journey, "34567", "34567").await;
    let error = browser.text("#error").await;
    assert!(error.contains("consecutive"), "{error}");
    assert!(browser.has("#remote-none").await);

    // Created: the key on the service token, the certificate from the signing CA.
    create(journey, REMOTE_PIN, REMOTE_PIN).await;
    let notice = browser.text("#notice").await;
    assert!(
        notice.contains("remote signing credential is created"),
        "{notice}"
    );
    let listed = credentials(journey).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let (first, status) = &listed[0];
    assert_eq!(status, "active");
    assert!(first.starts_with("csc-"), "{first}");
    let objects = service_objects(journey);
    assert!(objects.contains(first.as_str()), "{objects}");
    // pkcs11-tool lists one object a block: a header line, then indented attributes.
    let mut blocks: Vec<String> = Vec::new();
    for line in objects.lines() {
        match blocks.last_mut() {
            Some(block) if line.starts_with(char::is_whitespace) => {
                block.push('\n');
                block.push_str(line);
            }
            _ => blocks.push(line.to_owned()),
        }
    }
    let key_entry = blocks
        .iter()
        .find(|block| {
            block.starts_with("Private Key Object")
                && block
                    .lines()
                    .any(|l| l.trim() == format!("label:      {first}"))
        })
        .unwrap_or_else(|| panic!("no private key {first} in {objects}"));
    assert!(
        key_entry.contains("never extractable") && key_entry.contains("sensitive"),
        "{key_entry}"
    );
    let first_pem = certificate(journey, first);
    super::assert_citizen_certificate(dir, "citizen-sign-ca", &first_pem, Some(national_id));
    assert!(ocsp(setup, dir, "citizen-sign-ca", &first_pem).starts_with("good"));
    // The receipt names the credential; the record, sealed again, verifies.
    browser.click_and_wait("#receipt").await;
    let receipt = browser
        .source_when(|page| page.contains("Remote signing credential"))
        .await;
    assert!(receipt.contains(first.as_str()));
    let verified = setup
        .run(eid, &["enrolment", "verify-record", national_id])
        .await;
    assert!(
        verified.contains("intact") && verified.contains("1 earlier record(s)"),
        "{verified}"
    );

    // Unlocking a credential that is not locked: refused, saying so.
    browser.goto(case_url).await;
    browser
        .script_and_wait(
            POST_FORM,
            json!([format!("{case_url}/remote/unlock"), { "credential": first }]),
        )
        .await;
    let error = browser.text("#error").await;
    assert!(error.contains("not locked"), "{error}");
    // Another citizen's (or a made-up) credential is not found here.
    browser
        .script_and_wait(
            POST_FORM,
            json!([
                format!("{case_url}/remote/withdraw"),
                { "credential": "csc-00000000000000000000000000000000", "reason": "superseded" },
            ]),
        )
        .await;
    let error = browser.text("#error").await;
    assert!(error.contains("not a remote signing credential"), "{error}");

    // Withdrawn: certificate revoked (superseded), key destroyed on the token.
    browser.goto(case_url).await;
    browser
        .click(&format!("#withdraw-{first} option[value=\"superseded\"]"))
        .await;
    browser.click_and_wait(".withdraw-remote button").await;
    let notice = browser.text("#notice").await;
    assert!(notice.contains("withdrawn"), "{notice}");
    assert_eq!(
        credentials(journey).await,
        vec![(first.clone(), "withdrawn".to_owned())]
    );
    let answer = ocsp(setup, dir, "citizen-sign-ca", &first_pem);
    assert!(
        answer.starts_with("revoked") && answer.contains("Reason: superseded"),
        "{answer}"
    );
    let objects = service_objects(journey);
    assert!(!objects.contains(first.as_str()), "{objects}");
    // A step of the identity's life, shown on the case page (and bound by the next
    // sealed record).
    let steps = browser.text("#lifecycle").await;
    assert!(
        steps.contains("remote-withdraw") && steps.contains(first.as_str()),
        "{steps}"
    );

    // An attempt whose process died right after recording its start (a credential id,
    // nothing made yet): the next attempt cleans it up, then makes the credential the
    // citizen keeps.
    let application_id = case_url.rsplit('/').next().unwrap();
    let db = eid.database().await;
    let interrupted = |id: &'static str, credential: String, state: &'static str, serial| {
        let db = db.clone();
        async move {
            sqlx::query(
                "INSERT INTO enrol_activation (activation_id, application_id, carrier, token_id, \
                 state, sign_serial, clerk_id, desk_id, created_at, updated_at) \
                 VALUES ($1, $2, 'remote', $3, $4, $5, 'ann', 'desk-1', 1, 1)",
            )
            .bind(id)
            .bind(application_id)
            .bind(credential)
            .bind(state)
            .bind(serial)
            .execute(db.pool())
            .await
            .unwrap();
        }
    };
    let state_of = |id: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT state FROM enrol_activation WHERE activation_id = $1",
            )
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap()
        }
    };
    interrupted(
        "act-interrupted-start",
        format!("csc-{}", "0".repeat(31) + "1"),
        "started",
        None::<String>,
    )
    .await;
    create(journey, REMOTE_PIN, REMOTE_PIN).await;
    let notice = browser.text("#notice").await;
    assert!(notice.contains("is created"), "{notice}");
    assert_eq!(state_of("act-interrupted-start").await, "cleaned");
    let listed = credentials(journey).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let (second, status) = listed
        .iter()
        .find(|(id, _)| id != first)
        .unwrap_or_else(|| panic!("no new credential in {listed:?}"));
    assert_eq!(status, "active");
    let second_pem = certificate(journey, second);
    assert!(ocsp(setup, dir, "citizen-sign-ca", &second_pem).starts_with("good"));

    // One whose process died after the credential was made and recorded, before the
    // identity's record was sealed (the credential made here by the operator's
    // command): the next attempt completes it, then makes its own.
    let pin_file = dir.join("remote-pin");
    std::fs::write(&pin_file, format!("{REMOTE_PIN}\n")).unwrap();
    let made: serde_json::Value = serde_json::from_str(
        &setup
            .run(
                eid,
                &[
                    "signing",
                    "credential",
                    "create",
                    "--national-id",
                    national_id,
                    "--given-name",
                    "Anna Maria",
                    "--surname",
                    "Eriksson",
                    "--pin-file",
                    &pin_file.display().to_string(),
                ],
            )
            .await,
    )
    .unwrap();
    let recovered = made["credential_id"].as_str().unwrap().to_owned();
    interrupted(
        "act-interrupted-made",
        recovered.clone(),
        "certified",
        Some(made["serial"].as_str().unwrap().to_ascii_lowercase()),
    )
    .await;
    create(journey, REMOTE_PIN, REMOTE_PIN).await;
    assert_eq!(state_of("act-interrupted-made").await, "done");
    // (Listed by creation time in seconds: the last two may come in either order.)
    let listed = credentials(journey).await;
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert!(
        listed.contains(&(recovered.clone(), "active".to_owned())),
        "{listed:?}"
    );
    assert_eq!(
        listed
            .iter()
            .filter(|(_, status)| status == "active")
            .count(),
        3,
        "{listed:?}"
    );

    // Each step is audited with the clerk, desk and centre; no PIN in the log.
    let log = setup.run(eid, &["audit", "tail", "-n", "200"]).await;
    for action in ["csc.credential.create", "csc.credential.withdraw"] {
        assert!(log.contains(action), "{action} not in {log}");
    }
    for action in ["enrolment.activation.complete", "enrolment.remote.withdraw"] {
        super::assert_desk_step(&log, action, "csc-");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("enrolment.remote.unlock") && l.contains("denied")),
        "the refused unlocking is not in the log"
    );
    assert!(
        !log.contains(&format!("\"{REMOTE_PIN}\"")),
        "a PIN is in the audit log"
    );
    second_pem
}
