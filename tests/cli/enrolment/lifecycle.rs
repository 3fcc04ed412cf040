//! The identity's life after activation, at the desk in headless Chromium, judged by
//! `openssl ocsp` against the running CA responder, `openssl verify`, pkcs11-tool on the
//! SoftHSM2 cards and the status API as a relying service calls it: suspended (OCSP says
//! certificateHold) and resumed (good again), a PIN unblocked with the PUK, the card
//! replaced onto a second blank card (the old certificates revoked, the new ones valid),
//! and the identity deactivated with a supervisor's approval. Refusals on the way: a
//! status query without a token or with a bad number, resuming what is not suspended, a
//! stale form, a wrong PUK, PINs that differ from their confirmation, a deactivation
//! approved by the clerk who asked for it; each leaves the identity as it was.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{PIN1, PIN2, PUK, Setup};
use crate::{Eid, browser::Browser, ca::judge, text};

/// The bearer token of the relying service the test configures.
pub(super) const STATUS_TOKEN: &str = "a-benefits-office-status-token-of-some-length";

const NEW_PIN1: &str = "6024";
const NEW_CARD_PIN1: &str = "5173";
const NEW_CARD_PIN2: &str = "92648";
const NEW_CARD_PUK: &str = "40718293";

/// Where the journey stands after the card was activated.
pub(super) struct Journey<'a> {
    pub(super) setup: &'a Setup,
    pub(super) eid: &'a Eid,
    pub(super) browser: &'a Browser,
    pub(super) case_url: &'a str,
    pub(super) national_id: &'a str,
    /// The first card (its PIN1 changed at an unblock, then replaced onto EID-0002 on
    /// the way: revoked by the end).
    pub(super) card: super::DeskCard<'a>,
    /// The second citizen's case page (active, a SIM over the air).
    pub(super) second_case: &'a str,
}

/// Posts a form from the case page as a stale or hand-made page would: the page's CSRF
/// token, the page's version (if it shows one) unless `fields` names one.
pub(super) const POST_FORM: &str = "const [action, fields] = arguments;\
    const form = document.createElement('form'); form.method = 'post'; form.action = action;\
    fields.csrf = document.querySelector('input[name=csrf]').value;\
    const version = document.querySelector('input[name=version]');\
    if (!('version' in fields)) fields.version = version ? version.value : '0';\
    for (const [name, value] of Object.entries(fields)) {\
      const input = document.createElement('input'); input.type = 'hidden';\
      input.name = name; input.value = String(value); form.appendChild(input);\
    }\
    document.body.appendChild(form); form.submit();";

/// What `openssl ocsp` says about `leaf` (issued by the CA `issuer`) at the running
/// responder: the status line and the lines under it (`Reason: …`), the response's
/// signature verified against the exported hierarchy.
pub(super) fn ocsp(setup: &Setup, dir: &Path, issuer: &str, leaf: &Path) -> String {
    let pki = dir.join("pki");
    let chain = dir.join(format!("{issuer}-chain.pem"));
    std::fs::write(
        &chain,
        [
            std::fs::read_to_string(pki.join("root.pem")).unwrap(),
            std::fs::read_to_string(pki.join(format!("{issuer}.pem"))).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let leaf = leaf.display().to_string();
    let output = judge(
        "openssl",
        &[
            "ocsp",
            "-issuer",
            &pki.join(format!("{issuer}.pem")).display().to_string(),
            "-cert",
            &leaf,
            "-url",
            &format!("http://{}/ocsp/{issuer}", setup.ca),
            "-CAfile",
            &chain.display().to_string(),
            "-no_nonce",
        ],
    );
    let out = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(out.contains("Response verify OK"), "openssl ocsp: {out}");
    let mut lines = out
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{leaf}: ")));
    let status = lines
        .next()
        .unwrap_or_else(|| panic!("no status line in {out}"))
        .trim_start_matches(&format!("{leaf}: "))
        .to_owned();
    let details: Vec<&str> = lines
        .take_while(|l| l.starts_with(char::is_whitespace))
        .map(str::trim)
        .collect();
    format!("{status}\n{}", details.join("\n"))
}

/// Reads a card's certificate with pkcs11-tool and converts it to PEM.
pub(super) fn card_certificate(
    setup: &Setup,
    dir: &Path,
    token: &str,
    pin: &str,
    label: &str,
) -> PathBuf {
    let der = dir.join(format!(
        "{}-{label}.der",
        token.replace([' ', '(', ')'], "")
    ));
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
    let pem = der.with_extension("pem");
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
    pem
}

/// Asks the status API as a relying service would.
async fn status(setup: &Setup, national_id: &str, token: Option<&str>) -> (u16, Value, String) {
    let mut request = reqwest::Client::new().get(format!(
        "{}/api/v1/identities/{national_id}/status",
        setup.desk_url()
    ));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let code = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if code >= 400 {
        assert_eq!(content_type, "application/problem+json", "{code} {body}");
    }
    (code, body, challenge)
}

async fn status_now(setup: &Setup, national_id: &str) -> Value {
    let (code, body, _) = status(setup, national_id, Some(STATUS_TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["national_id"], national_id);
    assert!(body["since"].as_str().unwrap().ends_with('Z'), "{body}");
    body
}

/// The lifecycle, with `remote` the certificate of the citizen's remote signing
/// credential (suspended and resumed with the identity, untouched by a card
/// replacement, revoked at deactivation).
pub(super) async fn after_activation(journey: &Journey<'_>, remote: &Path) {
    let Journey {
        setup,
        eid,
        browser,
        case_url,
        national_id,
        card,
        second_case,
    } = *journey;
    let dir = eid.dir.path();
    let old_auth = dir.join("citizen-authentication.pem");
    let old_sign = dir.join("citizen-signing.pem");
    assert!(ocsp(setup, dir, "citizen-auth-ca", &old_auth).starts_with("good"));

    // The status API is for configured relying services only, and says what is wrong.
    let (code, body, challenge) = status(setup, national_id, None).await;
    assert_eq!(code, 401, "{body}");
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let (code, _, _) = status(
        setup,
        national_id,
        Some("not-the-token-of-any-client-at-all"),
    )
    .await;
    assert_eq!(code, 401);
    let mut mistyped = national_id.to_owned();
    let last = mistyped.pop().unwrap().to_digit(10).unwrap();
    mistyped.push(char::from_digit((last + 1) % 10, 10).unwrap());
    let (code, body, _) = status(setup, &mistyped, Some(STATUS_TOKEN)).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("check digit"),
        "{body}"
    );
    let unknown: Vec<u8> = vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    let unknown = format!(
        "{}{}",
        unknown
            .iter()
            .map(|d| char::from(b'0' + d))
            .collect::<String>(),
        char::from(b'0' + eid_enrolment::national_id::check_digit(&unknown))
    );
    let (code, _, _) = status(setup, &unknown, Some(STATUS_TOKEN)).await;
    assert_eq!(code, 404);
    assert_eq!(status_now(setup, national_id).await["status"], "active");

    // Lost: every certificate suspended. OCSP says certificateHold at once.
    browser.goto(case_url).await;
    assert_eq!(browser.text("#current-token").await, "EID-0001");
    let page_version = browser
        .execute(
            "return document.querySelector('#suspend-form input[name=version]').value;",
            json!([]),
        )
        .await;
    browser
        .click("#suspend-reason option[value=\"lost\"]")
        .await;
    browser.type_into("#suspend-note", "lost on the bus").await;
    browser.click_and_wait("#suspend").await;
    let notice = browser.text("#notice").await;
    assert!(notice.contains("suspended"), "{notice}");
    assert_eq!(browser.text("#status").await, "suspended");
    for (issuer, leaf) in [
        ("citizen-auth-ca", old_auth.as_path()),
        ("citizen-sign-ca", old_sign.as_path()),
        ("citizen-sign-ca", remote),
    ] {
        let answer = ocsp(setup, dir, issuer, leaf);
        assert!(
            answer.starts_with("revoked") && answer.contains("Reason: certificateHold"),
            "{answer}"
        );
    }
    let suspended = status_now(setup, national_id).await;
    assert_eq!(suspended["status"], "suspended");
    assert_eq!(suspended["reason"], "lost");
    // The same form sent again (its page is stale): refused, nothing changes.
    browser
        .script_and_wait(
            POST_FORM,
            json!([
                format!("{case_url}/suspend"),
                { "reason": "lost", "version": page_version },
            ]),
        )
        .await;
    let error = browser.text("#error").await;
    assert!(error.contains("already suspended"), "{error}");

    // Found: resumed, OCSP good again.
    browser.goto(case_url).await;
    browser.type_into("#resume-note", "found at home").await;
    browser.click_and_wait("#resume").await;
    assert!(browser.text("#notice").await.contains("resumed"));
    assert_eq!(browser.text("#status").await, "active");
    assert!(ocsp(setup, dir, "citizen-auth-ca", &old_auth).starts_with("good"));
    assert!(ocsp(setup, dir, "citizen-sign-ca", &old_sign).starts_with("good"));
    assert!(ocsp(setup, dir, "citizen-sign-ca", remote).starts_with("good"));
    assert_eq!(status_now(setup, national_id).await["status"], "active");
    // Resuming what is not suspended is refused.
    browser
        .script_and_wait(POST_FORM, json!([format!("{case_url}/resume"), {}]))
        .await;
    let error = browser.text("#error").await;
    assert!(error.contains("not suspended"), "{error}");
    // A form from a page shown before the last change: refused as a double submission.
    browser
        .script_and_wait(
            POST_FORM,
            json!([
                format!("{case_url}/suspend"),
                { "reason": "lost", "version": page_version },
            ]),
        )
        .await;
    let error = browser.text("#error").await;
    assert!(error.contains("submitted twice"), "{error}");
    assert_eq!(browser.text("#status").await, "active");

    // PIN1 unblocked with the PUK (SoftHSM2 never blocks a PIN, so this is the way back
    // from a forgotten one too). Wrong PUK, differing PINs, a PIN outside the policy:
    // each refused with its reason.
    browser.goto(case_url).await;
    let unblock = |puk: &'static str, new: &'static str, again: &'static str| async move {
        browser.click("#unblock-pin option[value=\"pin1\"]").await;
        browser.type_into("#unblock-puk", puk).await;
        browser.type_into("#unblock-new_pin", new).await;
        browser.type_into("#unblock-new_pin_confirm", again).await;
        browser.click_and_wait("#unblock").await;
    };
    unblock("11223344", NEW_PIN1, NEW_PIN1).await;
    let error = browser.text("#error").await;
    assert!(error.contains("refused the PUK"), "{error}");
    unblock(PUK, NEW_PIN1, "6025").await;
    let error = browser.text("#error").await;
    assert!(
        error.contains("PIN1 and its confirmation differ"),
        "{error}"
    );
    unblock(PUK, "1111", "1111").await;
    let error = browser.text("#error").await;
    assert!(error.contains("PIN1"), "{error}");
    let refused_login = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", &setup.softhsm)
        .args([
            "--module",
            &setup.module,
            "--token-label",
            "EID-0001 (PIN1)",
            "--login",
            "--pin",
            NEW_PIN1,
            "--list-objects",
        ])
        .output()
        .unwrap();
    assert!(!refused_login.status.success(), "the refusals changed PIN1");
    unblock(PUK, NEW_PIN1, NEW_PIN1).await;
    assert!(browser.text("#notice").await.contains("unblocked"));
    // The card itself: the new PIN1 opens the authentication token, the old one no more.
    setup.pkcs11_tool(
        "EID-0001 (PIN1)",
        &["--login", "--pin", NEW_PIN1, "--list-objects"],
    );
    let old_pin = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", &setup.softhsm)
        .args([
            "--module",
            &setup.module,
            "--token-label",
            "EID-0001 (PIN1)",
            "--login",
            "--pin",
            PIN1,
            "--list-objects",
        ])
        .output()
        .unwrap();
    assert!(!old_pin.status.success(), "the old PIN1 still works");

    // Stolen: the card is replaced onto blank card EID-0002. PINs that differ from their
    // confirmation are refused before anything is revoked.
    let replace = |reason: &'static str, card: &'static str, pin1_again: &'static str| async move {
        browser.goto(case_url).await;
        browser
            .click(&format!("#replace-reason option[value=\"{reason}\"]"))
            .await;
        browser
            .click(&format!("#replace-card option[value=\"{card}\"]"))
            .await;
        for (field, value) in [
            ("#replace-pin1", NEW_CARD_PIN1),
            ("#replace-pin1_confirm", pin1_again),
            ("#replace-pin2", NEW_CARD_PIN2),
            ("#replace-pin2_confirm", NEW_CARD_PIN2),
            ("#replace-puk", NEW_CARD_PUK),
            ("#replace-puk_confirm", NEW_CARD_PUK),
        ] {
            browser.type_into(field, value).await;
        }
        browser.click_and_wait("#replace").await;
    };
    replace("stolen", "EID-0002", "5174").await;
    let error = browser.text("#error").await;
    assert!(
        error.contains("PIN1 and its confirmation differ"),
        "{error}"
    );
    assert!(ocsp(setup, dir, "citizen-auth-ca", &old_auth).starts_with("good"));
    // A new card that fails part-way (EID-0003 is of another batch: the desk's transport
    // code does not open it): the old card's certificates were on hold for the attempt
    // and are good again; for a stolen card they stay on hold.
    replace("damaged", "EID-0003", NEW_CARD_PIN1).await;
    let error = browser.text("#error").await;
    assert!(error.contains("activation failed"), "{error}");
    assert_eq!(browser.text("#current-token").await, "EID-0001");
    assert!(ocsp(setup, dir, "citizen-auth-ca", &old_auth).starts_with("good"));
    assert!(ocsp(setup, dir, "citizen-sign-ca", &old_sign).starts_with("good"));
    replace("stolen", "EID-0003", NEW_CARD_PIN1).await;
    let error = browser.text("#error").await;
    assert!(error.contains("stay suspended"), "{error}");
    let answer = ocsp(setup, dir, "citizen-auth-ca", &old_auth);
    assert!(
        answer.starts_with("revoked") && answer.contains("Reason: certificateHold"),
        "{answer}"
    );
    assert!(ocsp(setup, dir, "citizen-sign-ca", remote).starts_with("good"));
    replace("stolen", "EID-0002", NEW_CARD_PIN1).await;
    let notice = browser.text("#notice").await;
    assert!(notice.contains("new card is activated"), "{notice}");
    assert_eq!(browser.text("#status").await, "active");
    assert_eq!(browser.text("#current-token").await, "EID-0002");
    for (issuer, leaf) in [
        ("citizen-auth-ca", &old_auth),
        ("citizen-sign-ca", &old_sign),
    ] {
        let answer = ocsp(setup, dir, issuer, leaf);
        assert!(
            answer.starts_with("revoked") && answer.contains("Reason: keyCompromise"),
            "{answer}"
        );
    }
    // The new card's certificates verify up to the root and are good at the responder.
    let new_auth = card_certificate(
        setup,
        dir,
        "EID-0002 (PIN1)",
        NEW_CARD_PIN1,
        "citizen-authentication",
    );
    let new_sign = card_certificate(
        setup,
        dir,
        "EID-0002 (PIN2)",
        NEW_CARD_PIN2,
        "citizen-signing",
    );
    for (issuer, leaf) in [
        ("citizen-auth-ca", &new_auth),
        ("citizen-sign-ca", &new_sign),
    ] {
        super::assert_citizen_certificate(dir, issuer, leaf, Some(national_id));
        assert!(ocsp(setup, dir, issuer, leaf).starts_with("good"));
    }
    // Sealed again for the new card, naming the record it supersedes.
    let verified = setup
        .run(eid, &["enrolment", "verify-record", national_id])
        .await;
    // (The first card's, then one for each of the four remote credentials.)
    assert!(
        verified.contains("intact") && verified.contains("5 earlier record(s)"),
        "{verified}"
    );
    // The remote credential is not on the card: its certificate stays good.
    assert!(ocsp(setup, dir, "citizen-sign-ca", remote).starts_with("good"));
    browser.click_and_wait("#receipt").await;
    browser.source_when(|page| page.contains("EID-0002")).await;

    // A supervisor's ID card instead of a passkey: the form is checked before any card
    // is asked for (no evidence: refused at the desk), and a revoked card approves
    // nothing (the first card, linked to supervisor Astrid, was revoked when replaced).
    // The case page's deactivation form (death, with `note`) sent with the card
    // button: the desk's card listener URL the browser is sent to.
    let by_card = |note: &'static str| async move {
        browser
            .click("#deactivate-reason option[value=\"death\"]")
            .await;
        browser.type_into("#deactivate-note", note).await;
        browser.click("#deactivate-card").await;
        browser
            .wait_for_url(|url| url.contains("/desk-card/"))
            .await
    };
    browser.goto(case_url).await;
    browser
        .click("#deactivate-reason option[value=\"death\"]")
        .await;
    browser.click_and_wait("#deactivate-card").await;
    let refusal = browser.text("#error").await;
    assert!(refusal.contains("needs a note"), "{refusal}");
    let card_url = by_card("death certificate 2026/0042").await;
    // (Its PIN1 is the one set at the unblock above.)
    let pin_now = |arg: &&str| {
        arg.replace(
            &format!("pin-value={PIN1}"),
            &format!("pin-value={NEW_PIN1}"),
        )
    };
    let args_now: Vec<String> = card.tls.0.iter().map(pin_now).collect();
    let args_now: Vec<&str> = args_now.iter().map(String::as_str).collect();
    let (answer, _, page) =
        super::staff_card::present_card(card.dir, &card_url, (&args_now, card.tls.1));
    assert_eq!(answer, "403", "{page}");
    assert!(page.contains("cannot approve"), "{page}");
    assert!(page.contains("revoked"), "{page}");
    // The new card EID-0002 (the same national identity number: still supervisor
    // Astrid's) approves the second citizen's deactivation: the browser's button, curl
    // with the card, the browser back in the clerk's session.
    browser.goto(second_case).await;
    let card_url = by_card("death certificate 2026/0077").await;
    let (key, cert) = super::card_key_and_certificate("EID-0002", NEW_CARD_PIN1, &new_auth);
    let new_card = super::engine_tls(&key, &cert);
    let (answer, back, page) =
        super::staff_card::present_card(card.dir, &card_url, (&new_card, card.tls.1));
    assert_eq!(answer, "303", "{page}");
    browser.goto(&back).await;
    assert!(browser.text("#notice").await.contains("deactivated"));
    assert_eq!(browser.text("#status").await, "deactivated");
    assert!(browser.text("#deactivated").await.contains("death"));

    // Deactivation (death): not approved by the clerk who asks for it; then by the
    // supervisor, authenticating now with their own passkey.
    browser.goto(case_url).await;
    let deactivate = |supervisor: &'static str| async move {
        browser
            .click("#deactivate-reason option[value=\"death\"]")
            .await;
        browser
            .type_into("#deactivate-note", "death certificate 2026/0042")
            .await;
        browser
            .type_into("#deactivate-supervisor", supervisor)
            .await;
        browser.click("#deactivate button").await;
    };
    deactivate("ann").await;
    let refusal = browser.text_when_shown("#passkey-error").await;
    assert!(refusal.contains("own action"), "{refusal}");
    assert_eq!(browser.text("#status").await, "active");
    assert!(ocsp(setup, dir, "citizen-auth-ca", &new_auth).starts_with("good"));
    deactivate("sam").await;
    browser
        .wait_for_url(|url| url.contains("done=deactivated"))
        .await;
    // The new page (the URL changes before it loads): the old one has no notice.
    assert!(browser.text("#notice").await.contains("deactivated"));
    assert_eq!(browser.text("#status").await, "deactivated");
    assert!(browser.text("#deactivated").await.contains("death"));
    for (issuer, leaf) in [
        ("citizen-auth-ca", new_auth.as_path()),
        ("citizen-sign-ca", new_sign.as_path()),
        ("citizen-sign-ca", remote),
    ] {
        let answer = ocsp(setup, dir, issuer, leaf);
        assert!(
            answer.starts_with("revoked") && answer.contains("Reason: cessationOfOperation"),
            "{answer}"
        );
    }
    // The remote credential is withdrawn with the identity.
    browser
        .source_when(|page| page.contains("remote-credentials"))
        .await;
    assert!(
        browser
            .execute(
                "return [...document.querySelectorAll('.remote-status')].map(s => s.textContent);",
                json!([])
            )
            .await
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s == "withdrawn"),
        "a remote credential outlived the identity"
    );
    let deactivated = status_now(setup, national_id).await;
    assert_eq!(deactivated["status"], "deactivated", "{deactivated}");
    assert_eq!(deactivated["reason"], "death");
    // Final: nothing brings it back.
    browser
        .script_and_wait(POST_FORM, json!([format!("{case_url}/resume"), {}]))
        .await;
    let error = browser.text("#error").await;
    assert!(error.contains("final"), "{error}");

    // The records: each step names clerk, desk and centre, the deactivation its
    // supervisor; refusals are there too; no PIN or PUK anywhere.
    let log = setup.run(eid, &["audit", "tail", "-n", "400"]).await;
    for action in [
        "enrolment.identity.suspend",
        "enrolment.identity.resume",
        "enrolment.card.unblock",
        "enrolment.card.replace",
        "enrolment.identity.deactivate",
    ] {
        super::assert_desk_step(&log, action, "");
    }
    let deactivation = log
        .lines()
        .rev()
        .find(|l| l.contains("enrolment.identity.deactivate") && l.contains("success"))
        .unwrap();
    assert!(
        deactivation.contains("\"supervisor\":\"sam\""),
        "{deactivation}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("enrolment.card.unblock") && l.contains("denied")),
        "the wrong PUK is not in the log"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("enrolment.identity.status")
                && l.contains("service:benefits-office")),
        "status queries are not in the log"
    );
    // A relying service asks at most status_queries_per_minute (40 here) a minute.
    let mut limited = None;
    // (82 tries: a minute boundary within them restarts the count at most once.)
    for _ in 0..82 {
        let (code, body, _) = status(setup, national_id, Some(STATUS_TOKEN)).await;
        if code == 429 {
            limited = Some(body);
            break;
        }
        assert_eq!(code, 200, "{body}");
    }
    let limited = limited.expect("the 41st status query within a minute is refused");
    assert!(
        limited["type"]
            .as_str()
            .unwrap_or_default()
            .ends_with("rate-limited"),
        "{limited}"
    );
    for secret in [
        PUK,
        NEW_PIN1,
        NEW_CARD_PIN1,
        NEW_CARD_PIN2,
        NEW_CARD_PUK,
        PIN2,
    ] {
        assert!(
            !log.contains(&format!("\"{secret}\"")),
            "a PIN or PUK is in the audit log"
        );
    }
}
