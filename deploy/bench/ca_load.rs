//! Load benchmark of the CA against a running `eid serve ca`, on SQLite and, when
//! `EID_TEST_POSTGRES_URL` names a server, on PostgreSQL:
//! - issuance over the registration authority's API (CSR in, certificate out, audit
//!   log on), 32 concurrent clients;
//! - OCSP from the pre-produced cache: RFC 5019 GET of one certificate, driven by `wrk`;
//! - OCSP that must be signed (requests with a nonce), 16 concurrent clients.
//!
//! Beside them, the raw P-384 (CA key) and P-256 (responder key) signing rates of this
//! machine, measured in the same run.
//!
//! `cargo bench --bench ca_load` (optimised build). Environment:
//! `EID_BENCH_CERTIFICATES` (default 4000 per backend), `EID_BENCH_CONCURRENCY` (32).
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use common::percentile;
use der::Encode;
use p256::elliptic_curve::Generate;
use x509_cert::builder::{Builder, RequestBuilder};

#[path = "common.rs"]
mod common;

const TOKEN: &str = "bench-registration-authority-token-0123456789";

struct Server {
    /// The server process, stopped when this is dropped.
    _server: common::Served,
    url: String,
    _dir: tempfile::TempDir,
}

fn start(database_url: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ra-token"), TOKEN).unwrap();
    std::fs::write(
        dir.path().join("eid.toml"),
        "[log]\nlevel = \"warn\"\n[[ca.issuance_client]]\nname = \"bench\"\ntoken_file = \"ra-token\"\n",
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_eid"));
    command
        .args([
            "--config",
            &dir.path().join("eid.toml").display().to_string(),
            "serve",
            "ca",
        ])
        .env("EID_DATA", dir.path().join("data"))
        .env("EID_CA_LISTEN", "127.0.0.1:0")
        .env_remove("EID_DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(url) = database_url {
        command.env("EID_DATABASE_URL", url);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let url = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.trim()
                .strip_prefix("ca")
                .map(|rest| rest.trim().trim_end_matches('/').to_owned())
        })
        .expect("eid serve ca prints its URL");
    Server {
        _server: common::Served(child),
        url,
        _dir: dir,
    }
}

fn requests(count: usize) -> Vec<String> {
    (0..count)
        .map(|_| {
            let key =
                p256::ecdsa::SigningKey::try_generate_from_rng(&mut getrandom::SysRng).unwrap();
            let request = RequestBuilder::new("CN=bench".parse().unwrap())
                .unwrap()
                .build::<_, p256::ecdsa::DerSignature>(&key)
                .unwrap();
            der::pem::encode_string(
                "CERTIFICATE REQUEST",
                der::pem::LineEnding::LF,
                &request.to_der().unwrap(),
            )
            .unwrap()
        })
        .collect()
}

async fn issue_all(url: &str, csrs: Vec<String>, concurrency: usize) -> (Duration, Vec<Duration>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let queue = Arc::new(std::sync::Mutex::new(csrs));
    let endpoint = format!("{url}/api/v1/certificates");
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (client, queue, endpoint) = (client.clone(), queue.clone(), endpoint.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            loop {
                let Some(csr) = queue.lock().unwrap().pop() else {
                    break;
                };
                n += 1;
                let body = serde_json::json!({
                    "profile": "citizen-auth",
                    "csr": csr,
                    "national_id": format!("39{worker:04}{n:07}"),
                    "given_name": "Bench",
                    "surname": "Citizen",
                });
                let sent = Instant::now();
                let response = client
                    .post(&endpoint)
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    response.status(),
                    201,
                    "{}",
                    response.text().await.unwrap_or_default()
                );
                latencies.push(sent.elapsed());
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = workers.join_next().await {
        latencies.extend(done.unwrap());
    }
    (started.elapsed(), latencies)
}

const TBS_LIKE: &[u8] = b"a TBS certificate or response data of about this length, give or take";

/// Raw signing rates of this machine, one core, no layer: the references.
fn raw_signing_rates() -> (f64, f64) {
    use p256::ecdsa::signature::Signer;
    let rate = |sign: &dyn Fn()| {
        let started = Instant::now();
        let mut n = 0u32;
        while started.elapsed() < Duration::from_secs(2) {
            sign();
            n += 1;
        }
        f64::from(n) / started.elapsed().as_secs_f64()
    };
    let p384 = p384::ecdsa::SigningKey::try_generate_from_rng(&mut getrandom::SysRng).unwrap();
    let p256 = p256::ecdsa::SigningKey::try_generate_from_rng(&mut getrandom::SysRng).unwrap();
    (
        rate(&|| {
            let _: p384::ecdsa::Signature = p384.sign(TBS_LIKE);
        }),
        rate(&|| {
            let _: p256::ecdsa::Signature = p256.sign(TBS_LIKE);
        }),
    )
}

/// An OCSP request for `leaf`, made by openssl (with or without a nonce).
fn ocsp_request(dir: &std::path::Path, issuer_pem: &str, leaf_pem: &str, nonce: bool) -> Vec<u8> {
    std::fs::write(dir.join("issuer.pem"), issuer_pem).unwrap();
    std::fs::write(dir.join("leaf.pem"), leaf_pem).unwrap();
    let out = dir.join("req.der");
    let status = Command::new("openssl")
        .arg("ocsp")
        .arg("-issuer")
        .arg(dir.join("issuer.pem"))
        .arg("-cert")
        .arg(dir.join("leaf.pem"))
        .arg(if nonce { "-nonce" } else { "-no_nonce" })
        .arg("-reqout")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "openssl ocsp -reqout");
    std::fs::read(out).unwrap()
}

/// RFC 5019 GET path: base64, then URL-encoded.
fn base64_url_path(der: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// `wrk` against one URL; requests/s, p50 and p99 as it reports them.
fn wrk(url: &str) -> (String, String, String) {
    let output = Command::new("wrk")
        .args(["-t2", "-c64", "-d5s", "--latency", url])
        .output()
        .expect("wrk is installed (Debian package wrk)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_owned()
    };
    assert!(!text.contains("Non-2xx"), "wrk saw errors: {text}");
    (field("Requests/sec:"), field("50%"), field("99%"))
}

/// POSTs the same nonce request for `seconds`: every answer is signed on demand.
async fn signed_ocsp(
    url: &str,
    request: Vec<u8>,
    concurrency: usize,
    seconds: u64,
) -> (f64, Vec<Duration>) {
    let client = reqwest::Client::new();
    let request = bytes::Bytes::from(request);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, request, url) = (client.clone(), request.clone(), url.to_owned());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/ocsp-request")
                    .body(request.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let body = response.bytes().await.unwrap();
                assert!(
                    body.len() > 100,
                    "an OCSP error instead of a signed response"
                );
                latencies.push(sent.elapsed());
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = workers.join_next().await {
        latencies.extend(done.unwrap());
    }
    (
        latencies.len() as f64 / started.elapsed().as_secs_f64(),
        latencies,
    )
}

fn main() {
    let count: usize = std::env::var("EID_BENCH_CERTIFICATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let concurrency: usize = std::env::var("EID_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut backends = vec![("sqlite", None)];
    if let Ok(admin) = std::env::var("EID_TEST_POSTGRES_URL") {
        backends.push(("postgres", Some(admin)));
    } else {
        println!("EID_TEST_POSTGRES_URL not set: PostgreSQL is not measured");
    }
    let (p384_rate, p256_rate) = raw_signing_rates();
    println!(
        "reference, raw ECDSA signing on one core: P-384 {p384_rate:.0}/s, P-256 {p256_rate:.0}/s"
    );
    println!(
        "{:<10} {:<34} {:>10} {:>10} {:>10}",
        "backend", "workload", "per second", "p50", "p99"
    );
    for (name, admin) in backends {
        // A database of its own, dropped after the run (the server stops first).
        let database = admin.map(|_| {
            runtime
                .block_on(eid_tests::TestDatabase::create(
                    eid_tests::TestBackend::Postgres,
                ))
                .unwrap()
        });
        let server = start(database.as_ref().map(|d| d.url.as_str()));
        let csrs = requests(count);
        // Warm-up: connections, caches, the first SQLite pages.
        runtime.block_on(issue_all(&server.url, requests(200), concurrency));
        let (elapsed, mut latencies) = runtime.block_on(issue_all(&server.url, csrs, concurrency));
        latencies.sort();
        println!(
            "{:<10} {:<34} {:>10.0} {:>10.2?} {:>10.2?}",
            name,
            format!("issuance ({} certificates)", latencies.len()),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99)
        );

        // OCSP for one issued certificate.
        let leaf = runtime.block_on(async {
            let body = serde_json::json!({
                "profile": "citizen-auth", "csr": requests(1).remove(0), "national_id": "3900000000001",
                "given_name": "Ocsp", "surname": "Bench",
            });
            let response = reqwest::Client::new()
                .post(format!("{}/api/v1/certificates", server.url))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let issued: serde_json::Value = response.json().await.unwrap();
            issued["certificate"].as_str().unwrap().to_owned()
        });
        let issuer_der = runtime.block_on(async {
            reqwest::get(format!("{}/ca/citizen-auth-ca.crt", server.url))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        });
        let issuer_pem =
            der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &issuer_der).unwrap();
        let work = tempfile::tempdir().unwrap();
        let cached_request = ocsp_request(work.path(), &issuer_pem, &leaf, false);
        let get_url = format!(
            "{}/ocsp/citizen-auth-ca/{}",
            server.url,
            base64_url_path(&cached_request)
        );
        let (rate, p50, p99) = wrk(&get_url);
        println!(
            "{:<10} {:<34} {:>10} {:>10} {:>10}",
            name, "OCSP GET, pre-produced (wrk)", rate, p50, p99
        );
        let nonce_request = ocsp_request(work.path(), &issuer_pem, &leaf, true);
        let (rate, mut latencies) = runtime.block_on(signed_ocsp(
            &format!("{}/ocsp/citizen-auth-ca", server.url),
            nonce_request,
            16,
            5,
        ));
        latencies.sort();
        println!(
            "{:<10} {:<34} {:>10.0} {:>10.2?} {:>10.2?}   = {:.0}% of raw P-256 signing",
            name,
            "OCSP POST with nonce, signed",
            rate,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            100.0 * rate / p256_rate
        );
        drop(server);
    }
}
