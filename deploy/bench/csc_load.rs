//! Load benchmark of remote signing through the CSC API v2 against a running `eid
//! serve` whose keys are on a SoftHSM2 token (class hsm), beside the raw rate of the
//! same credential key on the same token, measured in the same run (issue 4: signHash
//! ≥ 50% of the raw rate):
//! - raw: a credential's key signing SHA-256 digests through the key layer on two
//!   threads (both cores), from this process;
//! - authorize: `credentials/authorize` (PIN checked with Argon2id, SAD stored and
//!   audited) — reported, not part of the target (it is deliberately slow);
//! - signHash, one hash per SAD: each call checks the token and the SAD, asks the OCSP
//!   responder (cached responses), signs on the HSM, and commits the spent SAD with its
//!   audit entry;
//! - signHash, 20 hashes per SAD (`multisign`): hashes per second;
//! - organisation seals (`POST /api/v1/seals/{id}/sign`, a client-credentials token):
//!   a CAdES-B seal over a digest (prepare, sign on the HSM, finalize with the OCSP
//!   check, one call), a CAdES-LT seal (plus a time-stamp and validation data), and a
//!   PAdES B-LT seal of a one-page PDF; the seal key is a P-256 key on the same token,
//!   so the raw rate above is its reference too.
//!
//! Each client signs with a credential of its own (the citizen has one per client): the
//! PIN checks under way for one credential are limited to the attempts left, so one
//! citizen's authorisations at once beyond that are told to try again.
//!
//! The client runs on the same two cores as the server. SQLite always; PostgreSQL when
//! `EID_TEST_POSTGRES_URL` is set. `cargo bench --bench csc_load` (needs SoftHSM2,
//! `softhsm2-util`, `curl` and `openssl`). `EID_BENCH_SADS` (default 400),
//! `EID_BENCH_CONCURRENCY` (8).
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use base64ct::{Base64, Encoding};
use common::{card_login, eid, free_address, output, percentile, serving, test_card};
use serde_json::{Value, json};
use sha2::Digest;

#[path = "common.rs"]
mod common;

const PIN: &str = "48213";
const TOKEN_PIN: &str = "246810";
const SHA256: &str = "2.16.840.1.101.3.4.2.1";
const VERIFIER: &str = "bench-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn module() -> String {
    eid_tests::softhsm::pkcs11_module().display().to_string()
}

struct Stand {
    /// The server process, stopped when this is dropped.
    _server: common::Served,
    signing: String,
    /// One credential per client: a citizen's PIN checks are limited to the attempts
    /// left, so many clients at once are many citizens.
    credentials: Vec<String>,
    access_token: String,
    seal: String,
    seal_token: String,
    token_label: String,
    _dir: tempfile::TempDir,
}

/// The SoftHSM2 configuration with one token per backend, all made before this process
/// loads the module (SoftHSM2 sees only the tokens that exist when it loads).
fn softhsm(labels: &[&str]) -> std::path::PathBuf {
    for label in labels {
        eid_tests::softhsm::init_token(label, TOKEN_PIN);
    }
    eid_tests::softhsm::softhsm_environment().join("softhsm2.conf")
}

fn start(
    database_url: Option<&str>,
    token_label: &str,
    softhsm_conf: &Path,
    credentials: usize,
) -> Stand {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    std::fs::write(path.join("hsm-pin"), format!("{TOKEN_PIN}\n")).unwrap();
    let config = path.join("eid.toml");
    std::fs::write(
        &config,
        format!(
            "[keys]\nbackend = \"pkcs11\"\n[keys.pkcs11]\nmodule = \"{}\"\ntoken_label = \"{token_label}\"\npin_file = \"{}\"\n",
            module(),
            path.join("hsm-pin").display()
        ),
    )
    .unwrap();
    let signing = free_address();
    let envs = BTreeMap::from([
        ("EID_CONFIG", config.display().to_string()),
        ("SOFTHSM2_CONF", softhsm_conf.display().to_string()),
        ("EID_IDP_LISTEN", free_address()),
        ("EID_CA_LISTEN", free_address()),
        ("EID_IDP_CARD_LISTEN", free_address()),
        ("EID_ENROLMENT_CARD_LISTEN", "127.0.0.1:0".to_owned()),
        ("EID_SIGNING_LISTEN", signing.clone()),
        ("EID_SIGNING_PUBLIC_URL", format!("http://{signing}")),
        ("EID_ENROLMENT_LISTEN", "127.0.0.1:0".to_owned()),
    ]);
    let mut init = eid(path, database_url, &envs);
    init.arg("init");
    output(init);
    test_card(path, database_url, &envs, "3900101999999");
    std::fs::write(path.join("sign-pin"), format!("{PIN}\n")).unwrap();
    let credentials = (0..credentials.max(1))
        .map(|_| {
            let mut create = eid(path, database_url, &envs);
            create.args([
                "signing",
                "credential",
                "create",
                "--national-id",
                "3900101999999",
                "--given-name",
                "Bench",
                "--surname",
                "Citizen",
                "--pin-file",
            ]);
            create.arg(path.join("sign-pin"));
            let created: Value = serde_json::from_str(&output(create)).unwrap();
            created["credential_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut rp = eid(path, database_url, &envs);
    rp.args([
        "rp",
        "add",
        "--name",
        "Bench portal",
        "--redirect-uri",
        "http://127.0.0.1:9/cb",
    ]);
    rp.args(["--scope", "service", "--scope", "credential"]);
    let client: Value = serde_json::from_str(&output(rp)).unwrap();
    let (client_id, secret) = (
        client["client_id"].as_str().unwrap().to_owned(),
        client["client_secret"].as_str().unwrap().to_owned(),
    );
    // An agency's system and its seal.
    let mut rp = eid(path, database_url, &envs);
    rp.args(["rp", "add", "--name", "Bench agency"]);
    rp.args(["--grant", "client_credentials", "--scope", "eseal"]);
    let agency: Value = serde_json::from_str(&output(rp)).unwrap();
    let agency = (
        agency["client_id"].as_str().unwrap().to_owned(),
        agency["client_secret"].as_str().unwrap().to_owned(),
    );
    let mut create = eid(path, database_url, &envs);
    create.args([
        "signing",
        "seal",
        "create",
        "--organisation",
        "Bench Agency",
    ]);
    create.args(["--organisation-id", "NTRTT-1000001", "--name", "Bench seal"]);
    create.args(["--client", &agency.0]);
    let created: Value = serde_json::from_str(&output(create)).unwrap();
    let seal = created["seal_id"].as_str().unwrap().to_owned();
    let mut serve = eid(path, database_url, &envs);
    serve.arg("serve");
    let child = serving(serve);
    let issuer = format!("http://{}", envs["EID_IDP_LISTEN"]);
    let challenge = {
        use base64ct::Base64UrlUnpadded;
        Base64UrlUnpadded::encode_string(&sha2::Sha256::digest(VERIFIER.as_bytes()))
    };
    let authorize = format!(
        "{issuer}/authorize?response_type=code&client_id={client_id}&scope=openid%20service&\
         redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&code_challenge={challenge}&\
         code_challenge_method=S256"
    );
    let back = card_login(path, &envs["EID_IDP_CARD_LISTEN"], &authorize);
    let code = reqwest::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let tokens = token(
        &issuer,
        (&client_id, &secret),
        &[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("code_verifier", VERIFIER),
        ],
    );
    let seal_token = token(
        &issuer,
        (&agency.0, &agency.1),
        &[("grant_type", "client_credentials"), ("scope", "eseal")],
    );
    Stand {
        _server: common::Served(child),
        signing,
        credentials,
        access_token: tokens["access_token"].as_str().unwrap().to_owned(),
        seal,
        seal_token: seal_token["access_token"].as_str().unwrap().to_owned(),
        token_label: token_label.to_owned(),
        _dir: dir,
    }
}

/// The token endpoint's answer to `client` for `form`. Called inside `block_in_place`:
/// the runtime's handle runs the request.
fn token(issuer: &str, client: (&str, &str), form: &[(&str, &str)]) -> Value {
    tokio::runtime::Handle::current().block_on(async {
        reqwest::Client::new()
            .post(format!("{issuer}/token"))
            .basic_auth(client.0, Some(client.1))
            .form(form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

/// The credential key's raw rate on the same token, two threads, from this process.
fn raw_rate(stand: &Stand) -> f64 {
    let store = eid_hsm::KeyStore::open_pkcs11(eid_hsm::Pkcs11Options {
        module: module().into(),
        token: eid_hsm::TokenSelector::Label(stand.token_label.clone()),
        pin: secrecy::SecretString::from(TOKEN_PIN.to_owned()),
        sessions: 2,
        class: eid_hsm::TokenClass::Hsm,
    })
    .unwrap();
    let signer = store
        .signer(
            &eid_hsm::KeyLabel::new(stand.credentials[0].clone()).unwrap(),
            None,
        )
        .unwrap();
    let digest = sha2::Sha256::digest(b"raw");
    let seconds = Duration::from_secs(3);
    let started = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let signer = signer.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while started.elapsed() < seconds {
                    signer.sign_digest(&digest).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    total as f64 / started.elapsed().as_secs_f64()
}

/// One seal applied: the answer's JSON.
async fn seal(http: &reqwest::Client, stand: &Stand, body: Value) -> Value {
    let response = http
        .post(format!(
            "http://{}/api/v1/seals/{}/sign",
            stand.signing, stand.seal
        ))
        .bearer_auth(&stand.seal_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "seal: {status} {body}");
    body
}

async fn call(http: &reqwest::Client, stand: &Stand, method: &str, body: Value) -> Value {
    let response = http
        .post(format!("http://{}/csc/v2/{method}", stand.signing))
        .bearer_auth(&stand.access_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{method}: {status} {body}");
    body
}

fn hashes(batch: usize, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| Base64::encode_string(&sha2::Sha256::digest(format!("doc {batch} {i}"))))
        .collect()
}

/// Runs `jobs` on `concurrency` workers; the rate of jobs per second and latencies.
async fn drive<F, Fut>(
    concurrency: usize,
    jobs: Vec<Value>,
    work: F,
) -> (f64, Vec<Duration>, Vec<Value>)
where
    F: Fn(Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Value> + Send,
{
    let queue = Arc::new(std::sync::Mutex::new(jobs));
    let work = Arc::new(work);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let queue = queue.clone();
        let work = work.clone();
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let Some(job) = queue.lock().unwrap().pop() else {
                    break;
                };
                let t = Instant::now();
                let result = work(job).await;
                done.push((t.elapsed(), result));
            }
            done
        }));
    }
    let mut latencies = Vec::new();
    let mut results = Vec::new();
    for worker in workers {
        for (latency, result) in worker.await.unwrap() {
            latencies.push(latency);
            results.push(result);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    (latencies.len() as f64 / elapsed, latencies, results)
}

fn line(name: &str, rate: f64, unit: &str, latencies: &[Duration], raw: f64) {
    println!(
        "  {name:<34} {rate:>8.0} {unit}/s  ({:>5.1}% of raw)  p50 {:>6.1} ms  p99 {:>6.1} ms",
        100.0 * rate / raw,
        percentile(latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(latencies, 0.99).as_secs_f64() * 1000.0
    );
}

async fn measure(name: &str, database_url: Option<&str>, token_label: &str, conf: &Path) {
    let sads = env_number("EID_BENCH_SADS", 400);
    let concurrency = env_number("EID_BENCH_CONCURRENCY", 8);
    let stand = Arc::new(tokio::task::block_in_place(|| {
        start(database_url, token_label, conf, concurrency)
    }));
    let raw = tokio::task::block_in_place(|| raw_rate(&stand));
    println!("{name}: credential key on SoftHSM2, {concurrency} clients");
    println!("  raw (key layer, 2 threads)         {raw:>8.0} sig/s");
    let http = reqwest::Client::new();

    let authorize = |batch: usize| {
        let (stand, http) = (stand.clone(), http.clone());
        move |job: Value| {
            let (stand, http) = (stand.clone(), http.clone());
            async move {
                let (credential, hashes) = (job["credential"].clone(), job["hashes"].clone());
                let answer = call(
                    &http,
                    &stand,
                    "credentials/authorize",
                    json!({
                        "credentialID": credential,
                        "numSignatures": batch,
                        "hashes": hashes,
                        "hashAlgorithmOID": SHA256,
                        "authData": [{ "id": "PIN", "value": PIN }],
                    }),
                )
                .await;
                json!({ "SAD": answer["SAD"], "credential": credential, "hashes": hashes })
            }
        }
    };
    let sign = {
        let (stand, http) = (stand.clone(), http.clone());
        move |job: Value| {
            let (stand, http) = (stand.clone(), http.clone());
            async move {
                call(
                    &http,
                    &stand,
                    "signatures/signHash",
                    json!({
                        "credentialID": job["credential"],
                        "SAD": job["SAD"],
                        "hashes": job["hashes"],
                        "hashAlgorithmOID": SHA256,
                        "signAlgo": "1.2.840.10045.4.3.2",
                    }),
                )
                .await
            }
        }
    };

    for batch in [1usize, 20] {
        let count = if batch == 1 { sads } else { (sads / 4).max(10) };
        let jobs: Vec<Value> = (0..count)
            .map(|i| {
                let credential = &stand.credentials[i % stand.credentials.len()];
                json!({ "credential": credential, "hashes": hashes(i, batch) })
            })
            .collect();
        let (rate, latencies, authorised) = drive(concurrency, jobs, authorize(batch)).await;
        line(
            &format!("authorize ({batch} hash/SAD)"),
            rate,
            "SAD",
            &latencies,
            raw,
        );
        let (rate, latencies, _) = drive(concurrency, authorised, sign.clone()).await;
        line(
            &format!("signHash ({batch} hash/call)"),
            rate * batch as f64,
            "sig",
            &latencies,
            raw,
        );
    }

    // Organisation seals: one call each, the whole signature made on the server.
    let pdf = Base64::encode_string(&eid_tests::pdf::one_page("Permit"));
    for (label, count, body) in [
        (
            "seal, CAdES-B over a digest",
            sads,
            json!({ "level": "B", "digest_algorithm": "sha256" }),
        ),
        (
            "seal, CAdES-LT over a digest",
            (sads / 2).max(10),
            json!({ "level": "LT", "digest_algorithm": "sha256" }),
        ),
        (
            "seal, PAdES B-LT (1-page PDF)",
            (sads / 4).max(10),
            json!({ "level": "LT", "format": "pades", "document": pdf }),
        ),
    ] {
        let jobs: Vec<Value> = (0..count)
            .map(|i| {
                let mut job = body.clone();
                if job.get("document").is_none() {
                    job["digest"] = Value::from(hashes(i, 1)[0].clone());
                }
                job
            })
            .collect();
        let work = {
            let (stand, http) = (stand.clone(), http.clone());
            move |job: Value| {
                let (stand, http) = (stand.clone(), http.clone());
                async move { seal(&http, &stand, job).await }
            }
        };
        let (rate, latencies, _) = drive(concurrency, jobs, work).await;
        line(label, rate, "seal", &latencies, raw);
    }
    println!();
}

fn main() {
    let conf = softhsm(&["eid-bench-sqlite", "eid-bench-postgres"]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        measure("SQLite", None, "eid-bench-sqlite", &conf).await;
        if std::env::var("EID_TEST_POSTGRES_URL").is_ok() {
            // A database of its own, dropped after the run (the server stops first).
            let database = eid_tests::TestDatabase::create(eid_tests::TestBackend::Postgres)
                .await
                .unwrap();
            measure(
                "PostgreSQL",
                Some(&database.url),
                "eid-bench-postgres",
                &conf,
            )
            .await;
        } else {
            println!("EID_TEST_POSTGRES_URL not set: PostgreSQL is not measured");
        }
    });
}
