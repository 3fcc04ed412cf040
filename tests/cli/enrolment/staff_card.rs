//! Staff log in at the desk with their own ID card. The citizen whose card the desk
//! just activated works at the centre: added as a clerk, then linked to that card's
//! national identity number. The browser (holding the desk's cookie) starts the login
//! and finishes it; the TLS step on the desk's card listener is curl's, presenting the
//! card's authentication certificate and signing the handshake on the SoftHSM2 card
//! through OpenSSL's PKCS#11 engine (headless Chromium cannot be given a client
//! certificate without a machine-wide policy). Refused first while the card is no
//! staff member's, and without a certificate; a used hand-off does not work twice.
//!
//! Later (a second citizen's case, with a name mismatch), a supervisor approves the
//! exception with that card: refused while the card is clerk Anna's, refused while the
//! case has changed since the clerk asked, then approved once it is linked to
//! supervisor Astrid; the browser's own button starts it, curl
//! presents the card, and the browser takes the approval back into the clerk's session.

use std::path::Path;

use super::{Browser, Eid, Setup};
use crate::text;

/// curl on the card listener: the HTTP status, where it redirects, and the page.
fn curl(dir: &Path, url: &str, tls: &[&str], envs: &[(&str, &str)]) -> (String, String, String) {
    let body = dir.join("desk-card.html");
    let output = std::process::Command::new("curl")
        .args(["-s", "-o"])
        .arg(&body)
        .args(["-w", "%{http_code} %{redirect_url}", "--cacert"])
        .arg(dir.join("pki/root.pem"))
        .args(tls)
        .arg(url)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let written = text(&output.stdout);
    let (status, location) = written.split_once(' ').unwrap_or((&written, ""));
    (
        status.to_owned(),
        location.to_owned(),
        std::fs::read_to_string(&body).unwrap_or_default(),
    )
}

/// curl at the desk with `cookie` (and the cookies of `jar`, which keeps what the desk
/// sets): `<status> <redirect>` and the page.
fn at_desk(
    dir: &Path,
    method: &str,
    url: &str,
    cookie: &str,
    jar: Option<&Path>,
) -> (String, String) {
    let page = dir.join("at-desk.html");
    // curl writes no file for an empty body: no earlier page may stand in for it.
    let _ = std::fs::remove_file(&page);
    let mut command = std::process::Command::new("curl");
    command.args(["-s", "-o"]).arg(&page).args([
        "-w",
        "%{http_code} %{redirect_url}",
        "-X",
        method,
        "-b",
        cookie,
    ]);
    if let Some(jar) = jar {
        command.arg("-b").arg(jar).arg("-c").arg(jar);
    }
    let output = command.arg(url).output().unwrap();
    (
        text(&output.stdout),
        std::fs::read_to_string(&page).unwrap_or_default(),
    )
}

/// The browser's desk cookie as `name=value` (read while it is on the desk's site).
async fn desk_cookie(browser: &Browser) -> String {
    browser
        .cookies()
        .await
        .into_iter()
        .find(|(name, _)| name == "eid_desk")
        .map(|(name, value)| format!("{name}={value}"))
        .expect("the desk cookie")
}

/// curl presenting the card (`tls`: its arguments and environment) on the card
/// listener at `url`: the HTTP status, where it redirects, and the page.
pub(super) fn present_card(
    dir: &Path,
    url: &str,
    (tls, envs): (&[&str], &[(&str, &str)]),
) -> (String, String, String) {
    curl(dir, url, tls, envs)
}

/// `eid enrolment staff card <staff> --national-id <national_id>`.
fn link_card<'a>(staff: &'a str, national_id: &'a str) -> [&'a str; 6] {
    [
        "enrolment",
        "staff",
        "card",
        staff,
        "--national-id",
        national_id,
    ]
}

/// `eid enrolment staff add` at centre `pos`: id, name, role.
async fn add_staff(setup: &Setup, eid: &Eid, (id, name, role): (&str, &str, &str)) {
    setup
        .run(
            eid,
            &[
                "enrolment",
                "staff",
                "add",
                id,
                "--name",
                name,
                "--role",
                role,
                "--centre",
                "pos",
            ],
        )
        .await;
}

pub(super) async fn staff_log_in_with_their_card(
    setup: &Setup,
    eid: &Eid,
    browser: &Browser,
    card: super::DeskCard<'_>,
) {
    let (dir, national_id, (card_tls, card_env)) = (card.dir, card.national_id, card.tls);
    let desk = setup.desk_url();
    add_staff(setup, eid, ("anna", "Anna Eriksson", "clerk")).await;
    // Ann logs out; the login page offers the card.
    browser.goto(&format!("{desk}/desk")).await;
    browser
        .click_and_wait("form[action='/desk/logout'] button")
        .await;
    browser.goto(&format!("{desk}/desk")).await;
    assert!(browser.has("#card-login").await);
    let desk_cookie = desk_cookie(browser).await;
    let start = |cookie: &str| {
        at_desk(
            dir,
            "POST",
            &format!("{desk}/desk/login/card"),
            cookie,
            None,
        )
        .0
    };
    // Only a registered desk starts one.
    assert!(start("eid_desk=unknown").starts_with("403"));
    let started = start(&desk_cookie);
    let card_url = started
        .strip_prefix("303 ")
        .unwrap_or_else(|| panic!("{started}"));
    assert!(
        card_url.starts_with(&format!("https://{}/desk-card/", setup.desk_card)),
        "{card_url}"
    );

    // The listener presents the desk's own certificate (CA role desk-tls), which
    // OpenSSL verifies against the root for the listener's address.
    let served = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &setup.desk_card,
            "-verify_ip",
            "127.0.0.1",
        ])
        .arg("-CAfile")
        .arg(dir.join("pki/root.pem"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let served = text(&served.stdout);
    assert!(served.contains("Enrolment Desk"), "{served}");
    assert!(served.contains("Verify return code: 0 (ok)"), "{served}");

    // No certificate: refused, saying so.
    let (status, _, page) = curl(dir, card_url, &[], &[]);
    assert_eq!(status, "403", "{page}");
    assert!(page.contains("no ID card certificate"), "{page}");
    // The card, while it is nobody's staff card: refused.
    let (status, _, page) = curl(dir, card_url, card_tls, card_env);
    assert_eq!(status, "403", "{page}");
    assert!(page.contains("not a staff member"), "{page}");
    // Linked (a wrong check digit first), the card logs Anna in.
    let mut wrong = national_id.to_owned();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '9' {
        '0'
    } else {
        char::from(last as u8 + 1)
    });
    let refused = setup
        .command(eid, &link_card("anna", &wrong))
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("check digit"),
        "{}",
        text(&refused.stderr)
    );
    setup.run(eid, &link_card("anna", national_id)).await;
    let (status, back, page) = curl(dir, card_url, card_tls, card_env);
    assert_eq!(status, "303", "{page}");
    assert!(
        back.starts_with(&format!("{desk}/desk/login/card/")),
        "{back}"
    );
    // The hand-off is the browser's way back to its desk: the session opens there.
    browser.goto(&back).await;
    browser.find("#q").await;
    assert!(browser.text("#staff").await.contains("Anna Eriksson"));
    // Proved once, used once.
    let (status, _, _) = curl(dir, card_url, card_tls, card_env);
    assert_eq!(status, "404");
    browser
        .click_and_wait("form[action='/desk/logout'] button")
        .await;
    browser.goto(&back).await;
    browser.source_when(|page| page.contains("is used")).await;

    // Ann comes back with her passkey for the rest of the journey.
    browser.goto(&format!("{desk}/desk")).await;
    browser.type_into("#staff-id", "ann").await;
    browser.click("#login button").await;
    browser.find("#q").await;
    assert!(browser.text("#staff").await.contains("Ann Clerk"));
}

/// The browser, logged in as clerk Ann on a case with an open exception, has it
/// approved with the card of `national_id` (Anna's, a clerk: refused; then linked to
/// supervisor Astrid: approved). Ends on the case page, the exception approved.
pub(super) async fn supervisor_approves_with_their_card(
    setup: &Setup,
    eid: &Eid,
    browser: &Browser,
    card: super::DeskCard<'_>,
) {
    let (dir, national_id, (card_tls, card_env)) = (card.dir, card.national_id, card.tls);
    let desk = setup.desk_url();
    let case_url = browser.url().await;
    // Read while the browser is on the desk's site (for a second session below).
    let desk_cookie = desk_cookie(browser).await;

    // The page's own button sends the form to the card listener; headless Chromium
    // stops there (it has no card), so curl takes the URL on.
    browser.click("#approve-card").await;
    let card_url = browser
        .wait_for_url(|url| url.contains("/desk-card/"))
        .await;
    assert!(
        card_url.starts_with(&format!("https://{}/desk-card/", setup.desk_card)),
        "{card_url}"
    );
    let (status, _, page) = curl(dir, &card_url, &[], &[]);
    assert_eq!(status, "403", "{page}");
    assert!(page.contains("no ID card certificate"), "{page}");
    // Anna is a clerk: her card approves nothing.
    let (status, _, page) = curl(dir, &card_url, card_tls, card_env);
    assert_eq!(status, "403", "{page}");
    assert!(page.contains("not a supervisor"), "{page}");
    // The card moves to supervisor Astrid.
    add_staff(setup, eid, ("astrid", "Astrid Lindgren", "supervisor")).await;
    setup
        .run(eid, &["enrolment", "staff", "card", "anna", "--remove"])
        .await;
    setup.run(eid, &link_card("astrid", national_id)).await;
    // The case changes meanwhile (another clerk's edit, made here in the database): the
    // supervisor's card is refused at once, and the clerk asks again from the case as it
    // is now.
    let case_path = case_url.split('?').next().unwrap();
    let application_id = case_path.rsplit('/').next().unwrap();
    let db = eid.database().await;
    let changed =
        sqlx::query("UPDATE enrol_application SET version = version + 1 WHERE application_id = $1")
            .bind(application_id)
            .execute(db.pool())
            .await
            .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    let (status, _, page) = curl(dir, &card_url, card_tls, card_env);
    assert_eq!(status, "409", "{page}");
    assert!(page.contains("changed since the clerk asked"), "{page}");
    browser.goto(case_path).await;
    browser.click("#approve-card").await;
    let stale = card_url;
    let card_url = browser
        .wait_for_url(|url| url.contains("/desk-card/") && url != stale)
        .await;
    let (status, back, page) = curl(dir, &card_url, card_tls, card_env);
    assert_eq!(status, "303", "{page}");
    assert!(
        back.starts_with(&format!("{desk}/desk/approvals/card/")),
        "{back}"
    );
    // Proved once.
    let (status, _, _) = curl(dir, &card_url, card_tls, card_env);
    assert_eq!(status, "404");
    // Opened in another staff member's session at the same desk (Astrid, logged in
    // with the same card through curl), the hand-off is refused and not used up.
    let jar = dir.join("astrid-cookies.txt");
    let with_jar = |method: &str, url: &str| at_desk(dir, method, url, &desk_cookie, Some(&jar));
    let (started, _) = with_jar("POST", &format!("{desk}/desk/login/card"));
    let login_url = started
        .strip_prefix("303 ")
        .unwrap_or_else(|| panic!("{started}"));
    let (status, login_back, page) = curl(dir, login_url, card_tls, card_env);
    assert_eq!(status, "303", "{page}");
    let (opened, _) = with_jar("GET", &login_back);
    assert!(opened.starts_with("303"), "{opened}");
    let (refused, page) = with_jar("GET", &back);
    assert!(refused.starts_with("403"), "{refused}");
    assert!(page.contains("asked for by another clerk"), "{page}");
    // The clerk's browser takes the approval back: recorded, the case shown.
    browser.goto(&back).await;
    let notice = browser.text("#notice").await;
    assert!(notice.contains("supervisor approved"), "{notice}");
    assert!(
        browser
            .text("#exceptions")
            .await
            .contains("approved by a supervisor")
    );
    // Used once.
    browser.goto(&back).await;
    browser.source_when(|page| page.contains("is used")).await;
    browser.goto(&case_url).await;
    browser.find("#exceptions").await;

    let log = setup.run(eid, &["audit", "tail", "-n", "40"]).await;
    let approved = log
        .lines()
        .rev()
        .find(|l| l.contains("enrolment.exception.approve") && l.contains("success"))
        .unwrap_or_else(|| panic!("no approval in {log}"));
    assert!(approved.contains("\"supervisor\":\"astrid\""), "{approved}");
    assert!(
        log.lines()
            .any(|l| l.contains("enrolment.staff.authenticate")
                && l.contains("\"method\":\"idcard\"")
                && l.contains("\"purpose\":\"approve\"")
                && l.contains("success")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("enrolment.staff.authenticate") && l.contains("not a supervisor")),
        "{log}"
    );
}
