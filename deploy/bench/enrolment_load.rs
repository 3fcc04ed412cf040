//! Load benchmark of the enrolment desk against a running `eid serve` (all services,
//! the CA in the same process), on SQLite and, when `EID_TEST_POSTGRES_URL` names a
//! server, on PostgreSQL:
//! - activation of a blank SoftHSM2 card: PIN1 and PIN2 set, two P-256 key pairs
//!   generated on the card, both requests signed on it, two certificates issued by the
//!   CA and written to the card, the PUK set, the identity made active and the record
//!   sealed. One desk, one card at a time, as at a real desk; the time of the
//!   activation POST is what is measured (client side, on loopback: it bounds the
//!   server time);
//! - the desk's pages, one request at a time: the dashboard, a search, a case (active,
//!   and approved with the activation form, which lists the reader's blank cards) and
//!   the receipt.
//!
//! The clerk logs in once with a passkey in headless Chromium (WebDriver virtual
//! authenticator, as `tests/cli/enrolment.rs` does); the session cookie is then taken
//! out of the browser and everything else is plain HTTP: pre-registration through the
//! API, consent, two documents whose zones match the application (no exception, so no
//! supervisor), approval, activation.
//!
//! Beside it, in the same run: the same card work alone (`eid_hsm`'s card reader on a
//! SoftHSM2 token directory of its own, in a child process, no HTTP, CA or database):
//! personalise (PINs, both key pairs), a signature with each key, both certificates
//! written, the PUK set.
//!
//! `cargo bench --bench enrolment_load` (optimised build). Needs SoftHSM2
//! (`EID_TEST_PKCS11_MODULE`, default `/usr/lib/softhsm/libsofthsm2.so`), chromium and
//! chromedriver. Environment: `EID_BENCH_ACTIVATIONS` (default 40 per backend),
//! `EID_BENCH_PAGE_REQUESTS` (200 per page).
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    str::FromStr,
    time::{Duration, Instant},
};

use common::{free_address, percentile};
use der::Encode;
use eid_tests::{TestBackend, TestDatabase, mrz};

#[path = "common.rs"]
mod common;

/// What `tests/cli/browser.rs` imports from its sibling module.
mod ca {
    pub(crate) use super::common::free_address;
}

#[allow(dead_code)] // the bench uses part of the browser's vocabulary
#[path = "../../tests/cli/browser.rs"]
mod browser;

const TRANSPORT: &str = "55667788";
const PIN1: &str = "4821";
const PIN2: &str = "73915";
const PUK: &str = "83920174";
/// Set in the child process that measures the card work alone: how many cards.
const REFERENCE_CHILD: &str = "EID_BENCH_CARD_REFERENCE_CHILD";
const ACTIVATION_TARGET: Duration = Duration::from_millis(300);
const PAGE_TARGET: Duration = Duration::from_millis(100);

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn module() -> String {
    eid_tests::softhsm::pkcs11_module().display().to_string()
}

/// A SoftHSM2 configuration whose tokens live in `dir/tokens`.
fn softhsm_conf(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    conf
}

fn card_id(i: usize) -> String {
    format!("BENCH-{i:04}")
}

// ---- The reference: the card work alone ------------------------------------------------

/// A self-signed certificate over the card key, signed on the card: the one signature
/// per key that the desk's certificate request costs, and a certificate to write.
fn self_signed(signer: &eid_hsm::KeySigner, serial: u64) -> Vec<u8> {
    use x509_cert::{
        builder::{Builder, CertificateBuilder, profile::cabf::Root},
        name::Name,
        serial_number::SerialNumber,
        spki::SubjectPublicKeyInfo,
        time::Validity,
    };
    let subject = Name::from_str("CN=eID card key,O=eid bench,C=TT").unwrap();
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

/// In the child process (`SOFTHSM2_CONF` set by the parent, before the module loads):
/// makes `cards` blank cards, then personalises all but the last, printing the time
/// of each in nanoseconds (the first is a warm-up, not printed).
fn card_work_alone(cards: usize) {
    use eid_hsm::{
        CITIZEN_AUTHENTICATION_LABEL, CITIZEN_SIGNING_LABEL, CardId, CardReader, CitizenPins,
        KeyLabel, KeySpec, PinKind, SecretString, TokenClass,
    };
    let module = PathBuf::from(module());
    let transport = SecretString::from(TRANSPORT);
    let ids: Vec<CardId> = (0..cards)
        .map(|i| CardId::new(card_id(i)).unwrap())
        .collect();
    for id in &ids {
        eid_hsm::initialize_blank_card(&module, id, &transport).unwrap();
    }
    let reader = CardReader::open(&module, TokenClass::Smartcard).unwrap();
    let pins = CitizenPins {
        pin1: SecretString::from(PIN1),
        pin2: SecretString::from(PIN2),
        puk: SecretString::from(PUK),
    };
    let auth_label = KeyLabel::new(CITIZEN_AUTHENTICATION_LABEL).unwrap();
    let sign_label = KeyLabel::new(CITIZEN_SIGNING_LABEL).unwrap();
    for (i, id) in ids.iter().take(cards - 1).enumerate() {
        let started = Instant::now();
        reader
            .personalise(id, &transport, &pins, KeySpec::EcP256)
            .unwrap();
        let auth = reader.store(id, PinKind::Pin1, &pins.pin1).unwrap();
        let sign = reader.store(id, PinKind::Pin2, &pins.pin2).unwrap();
        let auth_cert = self_signed(&auth.signer(&auth_label, None).unwrap(), 1);
        let sign_cert = self_signed(
            &sign
                .signer(&sign_label, None)
                .unwrap()
                .with_pin(pins.pin2.clone()),
            2,
        );
        auth.store_certificate(&auth_label, &auth_cert).unwrap();
        sign.store_certificate(&sign_label, &sign_cert).unwrap();
        drop((auth, sign));
        reader.finish(id, &transport, &pins.puk).unwrap();
        if i > 0 {
            println!("{}", started.elapsed().as_nanos());
        }
    }
}

/// Runs [`card_work_alone`] in a child process on a token directory of its own, with
/// as many cards in it as the desk's reader holds: sorted times of `count` cards.
fn card_reference(count: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let conf = softhsm_conf(dir.path());
    let output = Command::new(std::env::current_exe().unwrap())
        .env(REFERENCE_CHILD, (count + 2).to_string())
        .env("SOFTHSM2_CONF", &conf)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "the card reference failed");
    let mut times: Vec<Duration> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| Duration::from_nanos(l.trim().parse().unwrap()))
        .collect();
    assert_eq!(times.len(), count);
    times.sort();
    times
}

// ---- The desk under test ---------------------------------------------------------------

struct Desk {
    /// The server process, stopped when this is dropped.
    _server: common::Served,
    /// `http://127.0.0.1:PORT`, for the plain HTTP client.
    base: String,
    /// `http://localhost:PORT`, the desk's public URL (passkeys need a host name).
    public: String,
    desk_link: String,
    clerk_link: String,
    _dir: tempfile::TempDir,
}

struct Eid<'a> {
    dir: &'a Path,
    database_url: Option<&'a str>,
    enrolment: &'a str,
    softhsm: &'a Path,
}

impl Eid<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_eid"));
        command
            .args(args)
            .env("EID_CONFIG", self.dir.join("eid.toml"))
            .env("EID_DATA", self.dir.join("data"))
            .env("EID_LOG", "warn")
            .env("EID_IDP_LISTEN", "127.0.0.1:0")
            .env("EID_IDP_CARD_LISTEN", "127.0.0.1:0")
            .env("EID_ENROLMENT_CARD_LISTEN", "127.0.0.1:0")
            .env("EID_CA_LISTEN", "127.0.0.1:0")
            .env("EID_SIGNING_LISTEN", "127.0.0.1:0")
            .env("EID_ENROLMENT_LISTEN", self.enrolment)
            .env("EID_ENROLMENT_READER_MODULE", module())
            .env("EID_ENROLMENT_TRANSPORT_CODE", TRANSPORT)
            .env("SOFTHSM2_CONF", self.softhsm)
            .env_remove("EID_DATABASE_URL")
            .env_remove("RUST_LOG");
        if let Some(url) = self.database_url {
            command.env("EID_DATABASE_URL", url);
        }
        command
    }

    fn run(&self, args: &[&str]) -> String {
        let output = self.command(args).output().unwrap();
        assert!(
            output.status.success(),
            "eid {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// The one-time link a command prints.
    fn link(&self, args: &[&str]) -> String {
        let output = self.run(args);
        output
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no link in {output}"))
            .to_owned()
    }
}

/// A fresh instance with `cards` blank cards in the reader, a centre, a desk and a
/// clerk, then `eid serve`.
fn start(database_url: Option<&str>, cards: usize) -> Desk {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("eid.toml"),
        // The bench pre-registers more than the 20 a minute one address may.
        "[enrolment]\napplications_per_minute = 1000000\n",
    )
    .unwrap();
    let softhsm = softhsm_conf(&dir.path().join("reader"));
    let enrolment = free_address();
    let port = enrolment.rsplit(':').next().unwrap().to_owned();
    let eid = Eid {
        dir: dir.path(),
        database_url,
        enrolment: &enrolment,
        softhsm: &softhsm,
    };
    eid.run(&["init"]);
    // The blank cards are in the reader before the desk starts: SoftHSM2 shows a
    // process only the tokens that existed when it loaded.
    for i in 0..cards {
        eid.run(&["enrolment", "blank-card", &card_id(i)]);
    }
    eid.run(&[
        "enrolment",
        "centre",
        "add",
        "pos",
        "--name",
        "Port of Spain",
    ]);
    let desk_link = eid.link(&[
        "enrolment",
        "desk",
        "add",
        "desk-1",
        "--centre",
        "pos",
        "--name",
        "Desk 1",
    ]);
    let clerk_link = eid.link(&[
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
    ]);
    let mut command = eid.command(&["serve"]);
    command.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut started = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.trim_start().starts_with("enrolment") && line.contains("http://") {
            started = true;
            break;
        }
    }
    assert!(started, "eid serve did not print the enrolment URL");
    // Keep draining the banner's pipe in the background.
    std::thread::spawn(move || for _ in lines {});
    Desk {
        _server: common::Served(child),
        base: format!("http://127.0.0.1:{port}"),
        public: format!("http://localhost:{port}"),
        desk_link,
        clerk_link,
        _dir: dir,
    }
}

/// Registers the workstation and the clerk's passkey in headless Chromium, logs the
/// clerk in, and returns the browser's cookies for the desk as a `Cookie` header.
async fn log_in(desk: &Desk) -> String {
    let browser = browser::Browser::start().await;
    browser.add_virtual_authenticator().await;
    browser.goto(&desk.desk_link).await;
    browser.click_and_wait("#register").await;
    browser.goto(&desk.clerk_link).await;
    browser.click("#enrol").await;
    browser.wait_for_url(|url| url.ends_with("/desk")).await;
    browser.goto(&format!("{}/desk", desk.public)).await;
    browser.type_into("#staff-id", "ann").await;
    browser.click("#login button").await;
    browser.find("#q").await;
    let cookies = browser.cookies().await;
    browser.quit().await;
    let header: Vec<String> = cookies
        .iter()
        .filter(|(name, _)| name.starts_with("eid_desk"))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    assert_eq!(header.len(), 2, "the desk and session cookies: {cookies:?}");
    header.join("; ")
}

/// Plain HTTP with the clerk's session.
struct Clerk {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

/// A hidden form field's value on a page.
fn hidden(page: &str, name: &str) -> String {
    page.split(&format!("name=\"{name}\" value=\""))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no field {name} on the page:\n{page}"))
        .to_owned()
}

/// The error a desk page shows, for failure messages.
fn page_error(page: &str) -> &str {
    page.split("id=\"error\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or(page)
}

struct Application {
    id: String,
    national_id: String,
}

impl Clerk {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap()
    }

    async fn page(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.text().await.unwrap()
    }

    /// Posts a case form with the case's current version; the redirect it answers.
    async fn post(&self, id: &str, action: &str, fields: &[(&str, &str)]) -> String {
        let case = self.page(&format!("/desk/applications/{id}")).await;
        let (csrf, version) = (hidden(&case, "csrf"), hidden(&case, "version"));
        let mut form = vec![("csrf", csrf.as_str()), ("version", version.as_str())];
        form.extend_from_slice(fields);
        let response = self
            .http
            .post(format!("{}/desk/applications/{id}/{action}", self.base))
            .header("cookie", &self.cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        let body = response.text().await.unwrap();
        location.unwrap_or_else(|| panic!("{action} answered {status}: {}", page_error(&body)))
    }

    /// Pre-registers citizen `i`, records consent and two documents that match, and
    /// approves the case: ready for a card.
    async fn approved_application(&self, i: usize) -> Application {
        // Everyone is Anna Maria Eriksson, born on a day of their own (the same name
        // and birth date twice would be flagged as a possible duplicate).
        let birth = time::Date::from_calendar_date(1950, time::Month::January, 1).unwrap()
            + time::Duration::days(i as i64);
        let (y, m, d) = (birth.year(), u8::from(birth.month()), birth.day());
        let created: serde_json::Value = self
            .http
            .post(format!("{}/api/v1/applications", self.base))
            .json(&serde_json::json!({
                "given_name": "Anna Maria", "family_name": "Eriksson",
                "birth_date": format!("{y:04}-{m:02}-{d:02}"),
                "address": "1 Frederick Street, Port of Spain",
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let national_id = created["national_id"]
            .as_str()
            .unwrap_or_else(|| panic!("pre-registration: {created}"))
            .to_owned();
        let found = self.get(&format!("/desk/search?q={national_id}")).await;
        assert_eq!(found.status(), 303);
        let id = found.headers()["location"]
            .to_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        let done = self.post(&id, "consent", &[]).await;
        assert!(done.ends_with("done=consent"), "{done}");
        let birth = format!("{:02}{m:02}{d:02}", y % 100);
        let passport_number = format!("TA{i:07}");
        let card_number = format!("ID{i:07}");
        let name = "ERIKSSON<<ANNA<MARIA";
        for (doc_type, number, expiry, zone) in [
            (
                "passport",
                &passport_number,
                "2031-06-30",
                mrz::td3(name, &passport_number, &birth, "310630"),
            ),
            (
                "national-id",
                &card_number,
                "2030-01-01",
                mrz::td1(name, &card_number, &birth, "300101"),
            ),
        ] {
            let done = self
                .post(
                    &id,
                    "documents",
                    &[
                        ("doc_type", doc_type),
                        ("issuer", "TTO"),
                        ("number", number.as_str()),
                        ("expiry", expiry),
                        ("mrz", zone.as_str()),
                    ],
                )
                .await;
            assert!(done.ends_with("done=document"), "{doc_type}: {done}");
        }
        let done = self.post(&id, "approve", &[]).await;
        assert!(done.ends_with("done=approved"), "{done}");
        Application { id, national_id }
    }

    /// Activates card `card` for an approved application: the time of the POST.
    async fn activate(&self, application: &Application, card: &str) -> Duration {
        let id = &application.id;
        let case = self.page(&format!("/desk/applications/{id}")).await;
        assert!(
            case.contains(&format!("<option value=\"{card}\">")),
            "card {card} is not offered"
        );
        let (csrf, version) = (hidden(&case, "csrf"), hidden(&case, "version"));
        let form = [
            ("csrf", csrf.as_str()),
            ("version", version.as_str()),
            ("card", card),
            ("pin1", PIN1),
            ("pin1_confirm", PIN1),
            ("pin2", PIN2),
            ("pin2_confirm", PIN2),
            ("puk", PUK),
            ("puk_confirm", PUK),
        ];
        let request = self
            .http
            .post(format!("{}/desk/applications/{id}/activate", self.base))
            .header("cookie", &self.cookie)
            .form(&form)
            .build()
            .unwrap();
        let sent = Instant::now();
        let response = self.http.execute(request).await.unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        let body = response.bytes().await.unwrap();
        let took = sent.elapsed();
        assert!(
            location
                .as_deref()
                .is_some_and(|l| l.ends_with("done=activated")),
            "activation answered {status}: {}",
            page_error(&String::from_utf8_lossy(&body))
        );
        took
    }

    /// `count` GETs of `path` one after the other, each answered `status`: sorted times.
    async fn time_page(&self, path: &str, status: u16, count: usize) -> Vec<Duration> {
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            let sent = Instant::now();
            let response = self.get(path).await;
            let answered = response.status();
            let body = response.bytes().await.unwrap();
            times.push(sent.elapsed());
            assert_eq!(answered, status, "GET {path}: {}", body.len());
            assert!(
                status != 200 || body.len() > 500,
                "GET {path}: a short page"
            );
        }
        times.sort();
        times
    }
}

struct Results {
    activations: Vec<Duration>,
    pages: Vec<(String, Vec<Duration>)>,
}

async fn measure(desk: &Desk, activations: usize, page_requests: usize) -> Results {
    let cookie = log_in(desk).await;
    let clerk = Clerk {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        base: desk.base.clone(),
        cookie,
    };
    // Card 0 is a warm-up; cards 1..=activations are timed; the last card stays blank
    // in the reader, for an approved case whose page offers it.
    let mut timed = Vec::with_capacity(activations);
    let mut active = Vec::with_capacity(activations);
    for i in 0..=activations {
        let application = clerk.approved_application(i).await;
        let took = clerk.activate(&application, &card_id(i)).await;
        if i > 0 {
            timed.push(took);
            active.push(application);
        }
    }
    timed.sort();
    let waiting = clerk.approved_application(activations + 1).await;

    // The pages, over the active cases in turn.
    let dashboard = clerk.time_page("/desk", 200, page_requests).await;
    let mut pages = vec![("GET /desk (dashboard)".to_owned(), dashboard)];
    let by_case = |path: fn(&Application) -> String| -> Vec<String> {
        (0..page_requests)
            .map(|n| path(&active[n % active.len()]))
            .collect()
    };
    for (name, status, paths) in [
        (
            "GET /desk/search (found: 303)",
            303,
            by_case(|a| format!("/desk/search?q={}", a.national_id)),
        ),
        (
            "GET /desk/search (not found: 404 page)",
            404,
            vec!["/desk/search?q=TT-NO-SUCH-ONE".to_owned(); page_requests],
        ),
        (
            "GET case page, active",
            200,
            by_case(|a| format!("/desk/applications/{}", a.id)),
        ),
        (
            "GET case page, approved (lists cards)",
            200,
            vec![format!("/desk/applications/{}", waiting.id); page_requests],
        ),
        (
            "GET receipt",
            200,
            by_case(|a| format!("/desk/applications/{}/receipt", a.id)),
        ),
    ] {
        let mut times = Vec::with_capacity(page_requests);
        for path in &paths {
            times.extend(clerk.time_page(path, status, 1).await);
        }
        times.sort();
        pages.push((name.to_owned(), times));
    }
    Results {
        activations: timed,
        pages,
    }
}

fn mark(value: Duration, target: Duration) -> &'static str {
    if value < target { "✔" } else { "✘" }
}

fn main() {
    if let Ok(cards) = std::env::var(REFERENCE_CHILD) {
        card_work_alone(cards.parse().unwrap());
        return;
    }
    let activations = env_number("EID_BENCH_ACTIVATIONS", 40).max(1);
    let page_requests = env_number("EID_BENCH_PAGE_REQUESTS", 200).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut backends = vec![TestBackend::Sqlite];
    if std::env::var("EID_TEST_POSTGRES_URL").is_ok() {
        backends.push(TestBackend::Postgres);
    } else {
        println!("EID_TEST_POSTGRES_URL not set: PostgreSQL is not measured");
    }
    println!(
        "{} cards in the desk's reader from the start, and as many in the reference's \
         (SoftHSM2 shows a process only the tokens present when it loads it)",
        activations + 2
    );
    println!(
        "{:<10} {:<40} {:>10} {:>10} {:>10}   target",
        "backend", "workload", "per second", "p50", "p99"
    );
    for backend in backends {
        let name = match backend {
            TestBackend::Sqlite => "sqlite",
            TestBackend::Postgres => "postgres",
        };
        let database = match backend {
            TestBackend::Sqlite => None,
            TestBackend::Postgres => Some(runtime.block_on(TestDatabase::create(backend)).unwrap()),
        };
        // The reference first, with as many cards in its reader as the desk's.
        let reference = card_reference(activations);
        let desk = start(database.as_ref().map(|d| d.url.as_str()), activations + 2);
        let results = runtime.block_on(measure(&desk, activations, page_requests));
        drop(desk);

        let row = |workload: &str, times: &[Duration], tail: String| {
            let total: Duration = times.iter().sum();
            println!(
                "{:<10} {:<40} {:>10.1} {:>10.2?} {:>10.2?}   {tail}",
                name,
                workload,
                times.len() as f64 / total.as_secs_f64(),
                percentile(times, 0.50),
                percentile(times, 0.99),
            );
        };
        let p50 = percentile(&results.activations, 0.50);
        let reference_p50 = percentile(&reference, 0.50);
        row(
            "card work alone (eid_hsm, reference)",
            &reference,
            String::new(),
        );
        row(
            &format!("activation ({activations} cards, one at a time)"),
            &results.activations,
            format!(
                "p50 < 300 ms {}   = {:.2}× the card work alone (p50)",
                mark(p50, ACTIVATION_TARGET),
                p50.as_secs_f64() / reference_p50.as_secs_f64()
            ),
        );
        for (workload, times) in &results.pages {
            let p99 = percentile(times, 0.99);
            row(
                workload,
                times,
                format!("p99 < 100 ms {}", mark(p99, PAGE_TARGET)),
            );
        }
    }
}
