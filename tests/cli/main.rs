//! The `eid` command end to end: serving, initialising, verifying the audit log, and
//! clear failures on bad input. Database-backed tests run on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::print_stdout, unreachable_pub)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use eid_tests::{TestBackend, TestDatabase, on_both_backends};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

mod browser;
mod ca;
mod enrolment;
mod idp;

const EID: &str = env!("CARGO_BIN_EXE_eid");

/// One eid instance under test: a data folder, and a database of its own on PostgreSQL
/// (on SQLite, the default file inside the data folder).
struct Eid {
    dir: tempfile::TempDir,
    db: Option<TestDatabase>,
}

impl Eid {
    async fn new(backend: TestBackend) -> Self {
        let db = match backend {
            TestBackend::Sqlite => None,
            TestBackend::Postgres => Some(TestDatabase::create(backend).await.unwrap()),
        };
        Self {
            dir: tempfile::tempdir().unwrap(),
            db,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(EID);
        command
            .args(args)
            .env_remove("EID_CONFIG")
            .env_remove("EID_DATABASE_URL")
            .env_remove("RUST_LOG")
            .env("EID_DATA", self.data())
            .env("EID_IDP_LISTEN", "127.0.0.1:0")
            .env("EID_IDP_CARD_LISTEN", "127.0.0.1:0")
            .env("EID_ENROLMENT_CARD_LISTEN", "127.0.0.1:0")
            .env("EID_CA_LISTEN", "127.0.0.1:0")
            .env("EID_SIGNING_LISTEN", "127.0.0.1:0")
            .env("EID_ENROLMENT_LISTEN", "127.0.0.1:0")
            .env("EID_LOG", "warn")
            .kill_on_drop(true);
        if let Some(db) = &self.db {
            command.env("EID_DATABASE_URL", &db.url);
        }
        command
    }

    /// Runs a command to completion (a minute at most: a command that should fail
    /// but serves instead must not hang the suite).
    async fn run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("eid {args:?} did not finish within 60 s"))
            .unwrap()
    }

    async fn database(&self) -> eid_core::Database {
        let url = match &self.db {
            Some(db) => db.url.clone(),
            None => format!("sqlite://{}", self.data().join("eid.sqlite").display()),
        };
        eid_core::Database::connect(&secrecy::SecretString::from(url.clone()), &url, 2)
            .await
            .unwrap()
    }

    /// Starts `eid serve ARGS` and waits for the service URLs it prints.
    async fn serve(&self, args: &[&str]) -> Server {
        let mut command = self.command(&[&["serve"], args].concat());
        command.stdout(Stdio::piped());
        Server::start(command, if args.is_empty() { 4 } else { 1 }).await
    }
}

struct Server {
    child: Child,
    urls: BTreeMap<String, String>,
    banner: Vec<String>,
}

impl Server {
    /// Spawns an `eid serve` command and waits for the `expected` service URLs it
    /// prints.
    async fn start(mut command: Command, expected: usize) -> Self {
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut urls = BTreeMap::new();
        let mut banner = Vec::new();
        let read = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                banner.push(line.clone());
                let words: Vec<&str> = line.split_whitespace().collect();
                if let [name, url] = words[..]
                    && url.starts_with("http://")
                {
                    urls.insert(name.to_owned(), url.trim_end_matches('/').to_owned());
                    if urls.len() == expected {
                        break;
                    }
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .is_err()
            || urls.len() != expected
        {
            let output = child.wait_with_output().await.unwrap();
            panic!(
                "eid serve did not print its URLs; stdout {banner:?}; stderr {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Self {
            child,
            urls,
            banner,
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("eid serve stops within 20 s of SIGTERM")
            .unwrap();
        assert!(status.success(), "eid serve exited with {status}");
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_fails_with(output: &Output, needles: &[&str]) {
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success(),
        "expected failure; stderr: {stderr}"
    );
    for needle in needles {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Every file under `dir` with its contents, except the SQLite database files (their
/// bytes change when SQLite checkpoints its journal, without any row changing).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if !path.to_string_lossy().contains("eid.sqlite") {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

async fn serve_brings_up_every_service_and_restart_reuses_the_data(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let server = eid.serve(&[]).await;
    assert!(
        server
            .banner
            .iter()
            .any(|l| l.contains("initialised a new eid instance"))
    );
    assert_eq!(
        server.urls.keys().collect::<Vec<_>>(),
        ["ca", "enrolment", "idp", "signing"]
    );
    let http = reqwest::Client::new();
    for (name, url) in &server.urls {
        let response = http.get(format!("{url}/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{name} /healthz");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["service"], name.as_str());
        let metrics = http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(&format!(
                "eid_http_requests_total{{service=\"{name}\",method=\"GET\",route=\"/healthz\",status=\"200\"}} 1"
            )),
            "{metrics}"
        );
        assert!(metrics.contains("eid_http_request_duration_seconds_bucket"));
        let missing = http
            .get(format!("{url}/no-such-thing"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        assert_eq!(
            missing.headers()["content-type"],
            "application/problem+json"
        );
    }
    server.stop().await;

    let before = snapshot(&eid.data());
    let server = eid.serve(&[]).await;
    assert!(
        !server.banner.iter().any(|l| l.contains("initialised")),
        "second start must reuse the data folder: {:?}",
        server.banner
    );
    let ca = &server.urls["ca"];
    assert_eq!(
        reqwest::get(format!("{ca}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    server.stop().await;
    assert_eq!(
        before,
        snapshot(&eid.data()),
        "restart changed the key store"
    );

    let verify = eid.run(&["audit", "verify"]).await;
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    // The instance, the ten CA certificates, the first CRLs (the root's, and a full
    // and a delta CRL of each issuing CA, published by the first start; the second
    // start found them current), the idp's first token-signing key, and the TSA's
    // start at each of the two starts.
    assert!(
        text(&verify.stdout).contains("audit log intact: 21 entries"),
        "{}",
        text(&verify.stdout)
    );
}

async fn serve_runs_one_service(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let server = eid.serve(&["signing"]).await;
    assert_eq!(server.urls.keys().collect::<Vec<_>>(), ["signing"]);
    let body: serde_json::Value = reqwest::get(format!("{}/", server.urls["signing"]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["service"], "signing");

    // The README's time-stamp walk-through: openssl makes the query, the served TSA
    // answers, `eid ca export` gives the root, and openssl verifies the token.
    let dir = eid.dir.path();
    let document = dir.join("contract.txt");
    std::fs::write(&document, "the document\n").unwrap();
    let (query, reply) = (dir.join("contract.tsq"), dir.join("contract.tsr"));
    let openssl = |args: &[&std::ffi::OsStr]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is installed (the independent judge)");
        (
            output.status.success(),
            format!("{}{}", text(&output.stdout), text(&output.stderr)),
        )
    };
    let (made, made_text) = openssl(&[
        "ts".as_ref(),
        "-query".as_ref(),
        "-data".as_ref(),
        document.as_os_str(),
        "-sha256".as_ref(),
        "-cert".as_ref(),
        "-out".as_ref(),
        query.as_os_str(),
    ]);
    assert!(made, "{made_text}");
    let response = reqwest::Client::new()
        .post(format!("{}/tsa", server.urls["signing"]))
        .header("content-type", "application/timestamp-query")
        .body(std::fs::read(&query).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/timestamp-reply"
    );
    std::fs::write(&reply, response.bytes().await.unwrap()).unwrap();
    server.stop().await;
    let pki = dir.join("pki");
    let export = eid
        .run(&["ca", "export", "--out", pki.to_str().unwrap()])
        .await;
    assert!(export.status.success(), "{}", text(&export.stderr));
    let (verified, verified_text) = openssl(&[
        "ts".as_ref(),
        "-verify".as_ref(),
        "-in".as_ref(),
        reply.as_os_str(),
        "-queryfile".as_ref(),
        query.as_os_str(),
        "-CAfile".as_ref(),
        pki.join("root.pem").as_os_str(),
    ]);
    assert!(
        verified && verified_text.contains("Verification: OK"),
        "{verified_text}"
    );
}

async fn init_is_idempotent(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let first = eid.run(&["init"]).await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stdout).starts_with("initialised eid in"));
    let files = snapshot(&eid.data());
    let tail = eid.run(&["audit", "tail"]).await;

    let second = eid.run(&["init"]).await;
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(text(&second.stdout).contains("already initialised; nothing changed"));
    assert_eq!(files, snapshot(&eid.data()));
    assert_eq!(tail.stdout, eid.run(&["audit", "tail"]).await.stdout);
    assert!(text(&tail.stdout).contains("instance.initialise success"));
}

async fn audit_verify_names_an_edited_row(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    assert!(eid.run(&["init"]).await.status.success());
    let verify = eid.run(&["audit", "verify"]).await;
    assert!(verify.status.success(), "{}", text(&verify.stderr));

    let db = eid.database().await;
    let disable = match db.backend() {
        eid_core::Backend::Sqlite => "DROP TRIGGER audit_log_no_update",
        _ => "ALTER TABLE audit_log DISABLE TRIGGER USER",
    };
    sqlx::raw_sql(disable).execute(db.pool()).await.unwrap();
    sqlx::raw_sql("UPDATE audit_log SET actor = 'operator:mallory' WHERE seq = 1")
        .execute(db.pool())
        .await
        .unwrap();
    db.close().await;

    let verify = eid.run(&["audit", "verify"]).await;
    assert_eq!(verify.status.code(), Some(1));
    let stderr = text(&verify.stderr);
    assert!(stderr.contains("AUDIT LOG BROKEN: entry #1"), "{stderr}");
    assert!(stderr.contains("modified"), "{stderr}");
}

on_both_backends!(
    serve_brings_up_every_service_and_restart_reuses_the_data,
    serve_runs_one_service,
    init_is_idempotent,
    audit_verify_names_an_edited_row,
);

async fn write_config(eid: &Eid, text: &str) -> String {
    let path = eid.dir.path().join("eid.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn help_explains_the_commands() {
    let eid = Eid::new(TestBackend::Sqlite).await;
    let help = text(&eid.run(&["--help"]).await.stdout);
    for word in [
        "serve", "init", "audit", "keys", "--data", "--config", "EID_DATA",
    ] {
        assert!(help.contains(word), "eid --help lacks {word}: {help}");
    }
    let serve = text(&eid.run(&["serve", "--help"]).await.stdout);
    for word in [
        "idp",
        "ca",
        "signing",
        "enrolment",
        "EID_IDP_LISTEN",
        "SIGTERM",
    ] {
        assert!(
            serve.contains(word),
            "eid serve --help lacks {word}: {serve}"
        );
    }
    let audit = text(&eid.run(&["audit", "verify", "--help"]).await.stdout);
    assert!(audit.contains("checkpoint"), "{audit}");
}

#[tokio::test]
async fn unknown_config_key_is_named_and_nothing_is_created() {
    let eid = Eid::new(TestBackend::Sqlite).await;
    let config = write_config(&eid, "[listen]\nidp = \"127.0.0.1:9\"\ncolour = \"blue\"\n").await;
    let output = eid.run(&["--config", &config, "init"]).await;
    assert_fails_with(&output, &["eid.toml", "colour"]);
    assert!(!eid.data().exists());
}

#[tokio::test]
async fn missing_config_file_is_named() {
    let eid = Eid::new(TestBackend::Sqlite).await;
    let output = eid
        .run(&["--config", "/nonexistent/eid.toml", "serve"])
        .await;
    assert_fails_with(&output, &["cannot read config file /nonexistent/eid.toml"]);
}

#[tokio::test]
async fn config_check_prints_settings_without_secrets() {
    let eid = Eid::new(TestBackend::Sqlite).await;
    let config = write_config(
        &eid,
        "[keys.soft]\npassphrase_env = \"EID_TEST_PASSPHRASE\"\n[database]\nurl = \"postgres://eid@db.internal/eid\"\npassword_env = \"EID_TEST_DB_PASSWORD\"\n",
    )
    .await;
    let output = eid
        .command(&["--config", &config, "config", "check"])
        .env("EID_TEST_PASSPHRASE", "correct-horse-battery")
        .env("EID_TEST_DB_PASSWORD", "s3cret-db")
        .output()
        .await
        .unwrap();
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        stdout.contains("postgres://eid@db.internal/eid"),
        "{stdout}"
    );
    assert!(stdout.contains("passphrase (Argon2id)"), "{stdout}");
    assert!(
        !stdout.contains("correct-horse") && !stdout.contains("s3cret"),
        "{stdout}"
    );
}

#[tokio::test]
async fn unreachable_database_fails_cleanly_and_leaves_nothing_behind() {
    let eid = Eid::new(TestBackend::Sqlite).await;
    let output = eid
        .command(&["init"])
        .env("EID_DATABASE_URL", "postgres://eid@127.0.0.1:1/eid")
        .output()
        .await
        .unwrap();
    assert_fails_with(
        &output,
        &["cannot connect to the database at postgres://eid@127.0.0.1:1/eid"],
    );
    assert!(
        !eid.data().exists(),
        "a failed first start must not leave a data folder"
    );
}

#[tokio::test]
async fn wrong_pkcs11_module_path_is_named() {
    let eid = Eid::new(TestBackend::Sqlite).await;
    let config = write_config(
        &eid,
        "[keys]\nbackend = \"pkcs11\"\n[keys.pkcs11]\nmodule = \"/nonexistent/libpkcs11.so\"\ntoken_label = \"eid\"\npin_env = \"EID_TEST_PIN\"\n",
    )
    .await;
    let output = eid
        .command(&["--config", &config, "init"])
        .env("EID_TEST_PIN", "123456")
        .output()
        .await
        .unwrap();
    assert_fails_with(&output, &["/nonexistent/libpkcs11.so"]);
    assert!(!text(&output.stderr).contains("123456"));
    assert!(!eid.data().exists());
}

#[tokio::test]
async fn corrupted_soft_key_store_is_named() {
    let eid = Eid::new(TestBackend::Sqlite).await;
    assert!(eid.run(&["init"]).await.status.success());
    let key_file = eid.data().join("keys").join("eid-audit-checkpoint.key");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&key_file).unwrap()).unwrap();
    let sealed = json["sealed"].as_str().unwrap().to_owned();
    let flipped = format!(
        "{}{}",
        &sealed[..sealed.len() - 1],
        if sealed.ends_with('0') { '1' } else { '0' }
    );
    json["sealed"] = serde_json::Value::String(flipped);
    std::fs::write(&key_file, json.to_string()).unwrap();
    let output = eid.run(&["audit", "verify"]).await;
    assert_fails_with(&output, &["eid-audit-checkpoint.key", "corrupted"]);

    std::fs::write(eid.data().join("keys").join("store.json"), "{ not json").unwrap();
    let output = eid.run(&["serve"]).await;
    assert_fails_with(&output, &["store.json", "corrupted"]);
}

#[tokio::test]
async fn wrong_passphrase_is_reported() {
    let eid = Eid::new(TestBackend::Sqlite).await;
    let config = write_config(
        &eid,
        "[keys.soft]\npassphrase_env = \"EID_TEST_PASSPHRASE\"\n",
    )
    .await;
    let init = eid
        .command(&["--config", &config, "init"])
        .env("EID_TEST_PASSPHRASE", "the right one")
        .output()
        .await
        .unwrap();
    assert!(init.status.success(), "{}", text(&init.stderr));
    let output = eid
        .command(&["--config", &config, "audit", "verify"])
        .env("EID_TEST_PASSPHRASE", "the wrong one")
        .output()
        .await
        .unwrap();
    assert_fails_with(&output, &["passphrase or key file does not open"]);
    assert!(!text(&output.stderr).contains("wrong one"));
    let missing = eid.run(&["--config", &config, "audit", "verify"]).await;
    assert_fails_with(&missing, &["EID_TEST_PASSPHRASE is not set"]);
}

#[tokio::test]
async fn commands_on_an_uninitialised_folder_say_so() {
    let eid = Eid::new(TestBackend::Sqlite).await;
    let output = eid.run(&["audit", "verify"]).await;
    assert_fails_with(&output, &["not initialised", "eid init"]);
    assert!(!eid.data().exists());
}

#[tokio::test]
async fn taken_port_fails_start_up_with_the_address() {
    let eid = Eid::new(TestBackend::Sqlite).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = eid
        .command(&["serve"])
        .env("EID_CA_LISTEN", &address)
        .output()
        .await
        .unwrap();
    assert_fails_with(&output, &[&format!("cannot listen on {address} for ca")]);
}

/// A SoftHSM2 token made with softhsm2-util, as the README shows, in a folder of the
/// test's own.
struct SoftHsmToken {
    conf: PathBuf,
    module: String,
}

impl SoftHsmToken {
    fn create(dir: &Path, label: &str, user_pin: &str) -> Self {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\n",
                tokens.display()
            ),
        )
        .unwrap();
        let output = std::process::Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                "83910274",
                "--pin",
                user_pin,
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "softhsm2-util: {}",
            text(&output.stderr)
        );
        Self {
            conf,
            module: std::env::var("EID_TEST_PKCS11_MODULE")
                .unwrap_or_else(|_| "/usr/lib/softhsm/libsofthsm2.so".into()),
        }
    }

    fn config(&self, eid: &Eid, token_label: &str, pin: &str) -> PathBuf {
        let pin_file = eid.dir.path().join("hsm-pin");
        std::fs::write(&pin_file, format!("{pin}\n")).unwrap();
        let config = eid.dir.path().join("eid.toml");
        std::fs::write(
            &config,
            format!(
                "[keys]\nbackend = \"pkcs11\"\n[keys.pkcs11]\nmodule = \"{}\"\ntoken_label = \"{token_label}\"\npin_file = \"hsm-pin\"\n",
                self.module
            ),
        )
        .unwrap();
        config
    }

    /// OpenSC's pkcs11-tool (nobody here wrote it) listing the private keys on token
    /// `token_label`, logged in with `pin`: its text.
    fn private_keys(&self, token_label: &str, pin: &str) -> String {
        let objects = std::process::Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &self.conf)
            .args([
                "--module",
                &self.module,
                "--token-label",
                token_label,
                "--login",
                "--pin",
                pin,
                "--list-objects",
                "--type",
                "privkey",
            ])
            .output()
            .unwrap();
        text(&objects.stdout)
    }

    async fn run(&self, eid: &Eid, config: &Path, args: &[&str]) -> Output {
        let config = config.display().to_string();
        eid.command(&[&["--config", config.as_str()], args].concat())
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn service_keys_live_on_a_pkcs11_token() {
    let eid = Eid::new(TestBackend::Sqlite).await;
    let token = SoftHsmToken::create(eid.dir.path(), "eid-service", "246810");
    let config = token.config(&eid, "eid-service", "246810");

    let init = token.run(&eid, &config, &["init"]).await;
    assert!(init.status.success(), "{}", text(&init.stderr));
    assert!(
        text(&init.stdout).contains("PKCS#11 token 'eid-service'"),
        "{}",
        text(&init.stdout)
    );
    let keys = token.run(&eid, &config, &["keys", "list"]).await;
    let listing = text(&keys.stdout);
    assert!(
        listing.contains("eid-audit-checkpoint")
            && listing
                .contains("sensitive=true extractable=false never_extractable=true local=true"),
        "{listing}"
    );
    assert!(
        !eid.data().join("keys").exists(),
        "no soft store when keys are on a token"
    );
    let verify = token.run(&eid, &config, &["audit", "verify"]).await;
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    // The CA hierarchy's keys are on the token too, and certificates it signs there verify.
    for label in [
        "ca-root",
        "ca-citizen-auth-ca",
        "ca-ocsp-citizen-auth",
        "ca-tsa",
    ] {
        assert!(
            listing.contains(label),
            "{label} not on the token: {listing}"
        );
    }
    let pki = eid.dir.path().join("pki").display().to_string();
    let export = token
        .run(&eid, &config, &["ca", "export", "--out", &pki])
        .await;
    assert!(export.status.success(), "{}", text(&export.stderr));
    let key = eid.dir.path().join("leaf.key").display().to_string();
    let csr = eid.dir.path().join("leaf.csr").display().to_string();
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &key,
        ],
        vec!["req", "-new", "-key", &key, "-subj", "/CN=x", "-out", &csr],
    ] {
        assert!(
            std::process::Command::new("openssl")
                .args(&args)
                .status()
                .unwrap()
                .success()
        );
    }
    let issued = token
        .run(
            &eid,
            &config,
            &[
                "ca",
                "issue",
                "--profile",
                "citizen-auth",
                "--csr",
                &csr,
                "--national-id",
                "3900101123456",
                "--given-name",
                "Mary",
                "--surname",
                "Seacole",
            ],
        )
        .await;
    assert!(issued.status.success(), "{}", text(&issued.stderr));
    let leaf = eid.dir.path().join("leaf.pem");
    std::fs::write(&leaf, &issued.stdout).unwrap();
    let verified = std::process::Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            &format!("{pki}/root.pem"),
            "-untrusted",
            &format!("{pki}/citizen-auth-ca.pem"),
        ])
        .arg(&leaf)
        .output()
        .unwrap();
    assert!(
        text(&verified.stdout).contains(": OK"),
        "{}{}",
        text(&verified.stdout),
        text(&verified.stderr)
    );

    // OpenSC's pkcs11-tool, which nobody here wrote, sees the same key on the token.
    let objects = token.private_keys("eid-service", "246810");
    assert!(
        objects.contains("label:      eid-audit-checkpoint"),
        "{objects}"
    );
    assert!(
        objects.contains("never extractable") && objects.contains("local"),
        "{objects}"
    );
    assert!(
        objects.contains("Usage:      sign") && !objects.contains("decrypt"),
        "{objects}"
    );
}

#[tokio::test]
async fn missing_token_and_wrong_pin_are_named_and_leave_nothing_behind() {
    let eid = Eid::new(TestBackend::Sqlite).await;
    let token = SoftHsmToken::create(eid.dir.path(), "eid-service", "246810");

    let config = token.config(&eid, "no-such-token", "246810");
    let output = token.run(&eid, &config, &["init"]).await;
    assert_fails_with(
        &output,
        &["no PKCS#11 token labelled 'no-such-token'", "eid-service"],
    );
    assert!(!eid.data().exists());

    let config = token.config(&eid, "eid-service", "999999");
    let output = token.run(&eid, &config, &["init"]).await;
    assert_fails_with(&output, &["eid-service", "refused the PIN"]);
    assert!(!text(&output.stderr).contains("999999"));
    assert!(!eid.data().exists());
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let eid = Eid::new(TestBackend::Sqlite).await;
    let output = eid
        .command(&["init"])
        .env("EID_LOG_FORMAT", "json")
        .env("EID_LOG", "info")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<serde_json::Value> = text(&output.stderr)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let initialised = lines
        .iter()
        .find(|l| l["message"] == "initialised a new eid instance")
        .unwrap_or_else(|| panic!("no initialisation record in {lines:?}"));
    assert_eq!(initialised["level"], "INFO");
    assert_eq!(initialised["instance_id"].as_str().map(str::len), Some(32));
    assert!(initialised["timestamp"].is_string());
}
