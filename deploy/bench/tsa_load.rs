//! Load benchmark of the TSA against a running `eid serve signing`, beside the raw
//! signing rate of the same TSU key in the same key store, measured in the same run
//! (issue 4: timestamps over HTTP ≥ 50% of raw, p99 under 10 ms at half that load):
//! - raw: the TSU key (P-256, `ca-tsa`) signing 64-octet messages through the key
//!   layer on two threads (both cores), from this process, the server idle;
//! - TSA: `wrk` posting a SHA-256 query (certReq, nonce) on `EID_BENCH_CONNECTIONS`
//!   connections (default 128) for 8 s; every token recorded and audited before it is
//!   released. That each answer was a token is checked afterwards: the token records
//!   (`timestamp_token`) grew by at least the number of answers wrk counted (refusals write nothing);
//! - ceiling: `wrk` on `GET /` (the service's small JSON self-description) with the
//!   same connections: what any route reaches on these cores;
//! - latency at half the measured TSA rate: requests paced evenly from this process
//!   for 5 s (after 1 s not counted, while its connections open) on at most 256
//!   connections, p50 and p99, each counted from when it was due (a request held back
//!   by the cap waits in its latency).
//!
//! The server runs the released binary (its allocator and all); wrk and the server
//! share the machine's two cores, as the raw rate does not. Setups: SQLite with the
//! soft store always; PostgreSQL when `EID_TEST_POSTGRES_URL` is set; SQLite with the
//! keys on a SoftHSM2 token when its module is found (`EID_TEST_PKCS11_MODULE`,
//! default Debian's path). `cargo bench --bench tsa_load` (needs `wrk` and, for
//! SoftHSM2, `softhsm2-util`).
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{free_address, percentile};
use der::Encode;
use eid_signing::tsa::asn1::{ID_SHA256, MessageImprint, TimeStampReq};
use eid_tests::softhsm::{init_token, pkcs11_module};

#[path = "common.rs"]
mod common;

const TOKEN_PIN: &str = "246810";
const SOFTHSM_TOKEN: &str = "eid-bench-tsa";

/// Where the keys are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keys {
    Soft,
    SoftHsm,
}

struct Server {
    /// The server process, stopped when this is dropped.
    _served: common::Served,
    url: String,
    dir: PathBuf,
}

fn config_text(dir: &Path, keys: Keys) -> String {
    let mut text = String::from("[log]\nlevel = \"warn\"\n");
    if keys == Keys::SoftHsm {
        std::fs::write(dir.join("hsm-pin"), format!("{TOKEN_PIN}\n")).unwrap();
        text.push_str(&format!(
            "[keys]\nbackend = \"pkcs11\"\n[keys.pkcs11]\nmodule = \"{}\"\ntoken_label = \"{SOFTHSM_TOKEN}\"\npin_file = \"{}\"\n",
            pkcs11_module().display(),
            dir.join("hsm-pin").display()
        ));
    }
    text
}

fn start(database_url: Option<&str>, keys: Keys) -> Server {
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(dir.join("eid.toml"), config_text(&dir, keys)).unwrap();
    let envs = BTreeMap::from([("EID_SIGNING_LISTEN", free_address())]);
    let mut command = common::eid(&dir, database_url, &envs);
    command
        .arg("--config")
        .arg(dir.join("eid.toml"))
        .args(["serve", "signing"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.trim()
                .strip_prefix("signing")
                .map(|rest| rest.trim().trim_end_matches('/').to_owned())
        })
        .expect("eid serve signing prints its URL");
    std::thread::spawn(move || for _ in lines {});
    Server {
        _served: common::Served(child),
        url,
        dir,
    }
}

/// Threads for the raw rate: one per core. Four (the token's sessions) gave no more on
/// either store (48,781 against 49,011 soft, 28,574 against 27,172 SoftHSM2, one run).
const RAW_THREADS: usize = 2;

/// The TSU key's raw rate in the server's own key store on `threads` threads.
fn raw_rate(server: &Server, threads: usize) -> f64 {
    let config = eid_core::config::Config::load(
        Some(&server.dir.join("eid.toml")),
        &eid_core::config::ProcessEnvironment,
        &eid_core::config::Overrides {
            data_dir: Some(server.dir.join("data")),
        },
    )
    .unwrap();
    // A runtime of its own, dropped after: with the store opened on the bench's
    // runtime, the paced run's p99 went from 7 to 20 ms (measured; cause not traced).
    let store = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(eid_core::instance::open_key_store(&config.keys, false))
        .unwrap();
    let signer = store
        .signer(&eid_hsm::KeyLabel::new("ca-tsa").unwrap(), None)
        .unwrap();
    let window = Duration::from_secs(3);
    let started = Instant::now();
    let threads: Vec<_> = (0..threads)
        .map(|_| {
            let signer = signer.clone();
            std::thread::spawn(move || {
                let mut count = 0u64;
                while started.elapsed() < window {
                    signer.sign(&[count as u8; 64]).unwrap();
                    count += 1;
                }
                count
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    total as f64 / started.elapsed().as_secs_f64()
}

/// A DER time-stamp query: SHA-256 imprint from `seed`, a nonce, certReq.
fn query(seed: u64) -> Vec<u8> {
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&seed.to_be_bytes());
    TimeStampReq {
        version: 1,
        message_imprint: MessageImprint {
            hash_algorithm: x509_cert::spki::AlgorithmIdentifierOwned {
                oid: ID_SHA256,
                parameters: None,
            },
            hashed_message: der::asn1::OctetString::new(digest.to_vec()).unwrap(),
        },
        req_policy: None,
        // 0x01 first: a minimal, positive INTEGER (the TSA refuses non-DER encodings).
        nonce: Some(der::asn1::Int::new(&(seed | (1 << 56)).to_be_bytes()).unwrap()),
        cert_req: true,
        extensions: None,
    }
    .to_der()
    .unwrap()
}

/// A wrk script posting one query file.
fn wrk_script(dir: &Path) -> PathBuf {
    let body = dir.join("query.tsq");
    std::fs::write(&body, query(7)).unwrap();
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        format!(
            "local f = io.open(\"{}\", \"rb\")\nwrk.method = \"POST\"\nwrk.body = f:read(\"*all\")\nf:close()\nwrk.headers[\"Content-Type\"] = \"application/timestamp-query\"\n",
            body.display()
        ),
    )
    .unwrap();
    script
}

/// `wrk` for `seconds` on `connections`: requests/s and the responses it counted.
fn wrk(url: &str, script: Option<&Path>, connections: usize, seconds: u32) -> (f64, u64) {
    let mut command = Command::new("wrk");
    command.args([
        "-t2".to_owned(),
        format!("-c{connections}"),
        format!("-d{seconds}s"),
    ]);
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let output = command
        .arg(url)
        .output()
        .expect("wrk is installed (Debian package wrk)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk saw errors: {text}"
    );
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in wrk's output: {text}"));
    let answered = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in wrk's output: {text}"));
    (rate, answered)
}

/// Tokens recorded so far.
async fn recorded(url: &str) -> u64 {
    let db = eid_core::Database::connect(&secrecy::SecretString::from(url.to_owned()), url, 1)
        .await
        .unwrap();
    let count: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) AS n FROM timestamp_token")
            .fetch_one(db.pool())
            .await
            .unwrap(),
        "n",
    );
    db.close().await;
    count as u64
}

/// One query; the latency counts from `scheduled`, when it was due to be sent.
async fn one(client: &reqwest::Client, url: &str, seed: u64, scheduled: Instant) -> Duration {
    let response = client
        .post(url)
        .header("content-type", "application/timestamp-query")
        .body(query(seed))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    // A granted response starts SEQUENCE { SEQUENCE { INTEGER 0 } ...
    assert!(body.len() > 100, "not a token: {} octets", body.len());
    scheduled.elapsed()
}

/// The most requests the paced client has in flight (connections it opens): a stall
/// of the server queues the rest here, and their wait counts in their latency.
const PACED_IN_FLIGHT: usize = 256;

/// How long the paced client runs before it counts: its connections are opened then
/// (a few hundred TCP handshakes at once held the first 200 ms of a run at 25-48 ms).
const PACED_WARM_UP: Duration = Duration::from_secs(1);

/// Requests sent evenly at `rate` for `window` after [`PACED_WARM_UP`]: p50, p99 and
/// how many were counted.
async fn paced(url: &str, rate: f64, window: Duration) -> (Duration, Duration, usize) {
    let client = reqwest::Client::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(PACED_IN_FLIGHT));
    let mut tasks = Vec::new();
    let mut seed = 1u64 << 40;
    while started.elapsed() < PACED_WARM_UP + window {
        ticker.tick().await;
        let scheduled = Instant::now();
        let counted = started.elapsed() >= PACED_WARM_UP;
        let (client, url, in_flight) = (client.clone(), url.to_owned(), in_flight.clone());
        seed += 1;
        tasks.push(tokio::spawn(async move {
            let _permit = in_flight.acquire().await.unwrap();
            let latency = one(&client, &url, seed, scheduled).await;
            counted.then_some(latency)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    latencies.sort();
    (
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.len(),
    )
}

fn main() {
    let connections: usize = std::env::var("EID_BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut setups = vec![("SQLite, soft store", false, Keys::Soft)];
    if std::env::var("EID_TEST_POSTGRES_URL").is_ok() {
        setups.push(("PostgreSQL, soft store", true, Keys::Soft));
    } else {
        println!("EID_TEST_POSTGRES_URL not set: PostgreSQL is not measured");
    }
    if pkcs11_module().exists() {
        // Before this process loads the module; the server gets the same folder
        // through the environment.
        init_token(SOFTHSM_TOKEN, TOKEN_PIN);
        setups.push(("SQLite, SoftHSM2", false, Keys::SoftHsm));
    } else {
        println!(
            "no SoftHSM2 module at {}: not measured",
            pkcs11_module().display()
        );
    }
    println!(
        "TSA load: wrk, {connections} connections, 8 s, against eid serve signing; raw = TSU key (P-256) on 2 threads\n"
    );
    println!(
        "{:<24} {:>10} {:>12} {:>8} {:>12} {:>10} {:>22}",
        "setup",
        "raw sig/s",
        "HTTP tok/s",
        "of raw",
        "GET / req/s",
        "of GET /",
        "half load p50 / p99"
    );
    for (name, postgres, keys) in setups {
        // A database of its own, dropped after the run (the server stops first).
        let database = postgres.then(|| {
            runtime
                .block_on(eid_tests::TestDatabase::create(
                    eid_tests::TestBackend::Postgres,
                ))
                .unwrap()
        });
        let server = start(database.as_ref().map(|d| d.url.as_str()), keys);
        let database_url = match &database {
            Some(database) => database.url.clone(),
            None => format!("sqlite://{}", server.dir.join("data/eid.sqlite").display()),
        };
        let raw = raw_rate(&server, RAW_THREADS);
        let tsa = format!("{}/tsa", server.url);
        let script = wrk_script(&server.dir);
        wrk(&tsa, Some(&script), connections, 2); // warm-up
        let before = runtime.block_on(recorded(&database_url));
        let (rate, answered) = wrk(&tsa, Some(&script), connections, 8);
        let after = runtime.block_on(recorded(&database_url));
        assert!(
            after - before >= answered,
            "wrk counted {answered} answers but only {} tokens were recorded",
            after - before
        );
        let (ceiling, _) = wrk(&format!("{}/", server.url), None, connections, 4);
        let (p50, p99, sent) = runtime.block_on(paced(&tsa, rate / 2.0, Duration::from_secs(5)));
        println!(
            "{:<24} {:>10.0} {:>12.0} {:>7.0}% {:>12.0} {:>9.0}% {:>10.2} / {:.2} ms  ({sent} paced)",
            name,
            raw,
            rate,
            100.0 * rate / raw,
            ceiling,
            100.0 * rate / ceiling,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
        );
        let dir = server.dir.clone();
        drop(server);
        let _ = std::fs::remove_dir_all(dir);
        drop(database);
    }
}
