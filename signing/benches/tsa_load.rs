//! Load benchmark of the TSA over HTTP, beside the raw signing rate of the same TSU key
//! in the same key store, measured in the same run (issue 4's benchmark):
//! - raw: the TSU key signing 64-octet messages on two threads (both cores);
//! - built: whole tokens (TSTInfo, signed attributes, SignedData, response) signed
//!   directly on two threads: the protocol's cost without HTTP or storage;
//! - TSA: `POST /tsa` with SHA-256 queries (certReq, nonce), `EID_BENCH_CONCURRENCY`
//!   clients (default 16), every token recorded and audited (group commit);
//! - ceiling: `GET /` (nothing to do) with the same client and concurrency: what any
//!   route can reach on these cores with the client sharing them;
//! - latency at half the measured TSA rate: requests paced evenly, p50/p99 reported.
//!
//! The client runs in the same process as the server, so both share the two cores.
//! Soft store on SQLite always; PostgreSQL when `EID_TEST_POSTGRES_URL` is set; SoftHSM2
//! when its module is found (`EID_TEST_PKCS11_MODULE`, default Debian's path).
//!
//! `cargo bench -p eid-signing --bench tsa_load`. `EID_BENCH_REQUESTS` (default 20000).
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    missing_docs,
    unreachable_pub
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::{Keys, Tsa, os_silent};
use der::Encode;
use eid_signing::tsa::asn1::{MessageImprint, TimeStampReq};
use eid_tests::TestBackend;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn raw_rate(signer: &eid_hsm::KeySigner) -> f64 {
    let window = Duration::from_secs(3);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let signer = signer.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut count = 0u64;
                while started.elapsed() < window {
                    signer.sign(&[count as u8; 64]).unwrap();
                    count += 1;
                }
                count as f64 / started.elapsed().as_secs_f64()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

/// Tokens built and signed directly (no HTTP, no storage) on two threads.
fn token_rate(unit: &eid_signing::TimeStampUnit) -> f64 {
    use eid_signing::tsa::token::{TokenSigner, parse_request};
    let policy = der::asn1::ObjectIdentifier::new_unwrap("0.4.0.2023.1.1");
    let signer = TokenSigner::new(unit, policy, Duration::from_secs(1), false, true).unwrap();
    let parsed = parse_request(&request(7), policy).unwrap();
    let window = Duration::from_secs(3);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (signer, parsed) = (signer.clone(), parsed.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut count = 0u64;
                while started.elapsed() < window {
                    let serial = (count | (1 << 56)).to_be_bytes();
                    signer
                        .sign(&parsed, &serial, time::OffsetDateTime::now_utc())
                        .unwrap();
                    count += 1;
                }
                count as f64 / started.elapsed().as_secs_f64()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

fn request(seed: u64) -> Vec<u8> {
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&seed.to_be_bytes());
    TimeStampReq {
        version: 1,
        message_imprint: MessageImprint {
            hash_algorithm: spki::AlgorithmIdentifierOwned {
                oid: eid_signing::tsa::asn1::ID_SHA256,
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

async fn one(client: &reqwest::Client, url: &str, seed: u64) -> Duration {
    let started = Instant::now();
    let response = client
        .post(url)
        .header("content-type", "application/timestamp-query")
        .body(request(seed))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    // A granted response starts SEQUENCE { SEQUENCE { INTEGER 0 } ...
    assert!(body.len() > 100, "not a token: {} octets", body.len());
    started.elapsed()
}

/// What the same client and server stack do with nothing to do: `GET /` (the
/// service's small JSON self-description), at the same concurrency. The ceiling any
/// route reaches on these cores with the client sharing them.
async fn ceiling(base: &str, total: usize, concurrency: usize) -> f64 {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let per_worker = total / concurrency;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url) = (client.clone(), format!("{base}/"));
            tokio::spawn(async move {
                for _ in 0..per_worker {
                    let response = client.get(&url).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.bytes().await.unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    (per_worker * concurrency) as f64 / started.elapsed().as_secs_f64()
}

async fn throughput(url: &str, total: usize, concurrency: usize) -> f64 {
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, url) = (client.clone(), next.clone(), url.to_owned());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    one(&client, &url, i as u64).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn paced(url: &str, rate: f64, window: Duration) -> (Duration, Duration, usize) {
    let client = reqwest::Client::new();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut seed = 1u64 << 40;
    while started.elapsed() < window {
        ticker.tick().await;
        let (client, url) = (client.clone(), url.to_owned());
        seed += 1;
        tasks.push(tokio::spawn(async move { one(&client, &url, seed).await }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await.unwrap());
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (at(0.50), at(0.99), latencies.len())
}

fn main() {
    let total = env_number("EID_BENCH_REQUESTS", 20_000);
    let concurrency = env_number("EID_BENCH_CONCURRENCY", 16);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut setups = vec![(TestBackend::Sqlite, Keys::Soft, "SQLite, soft store")];
    if std::env::var("EID_TEST_POSTGRES_URL").is_ok() {
        setups.push((TestBackend::Postgres, Keys::Soft, "PostgreSQL, soft store"));
    }
    let module = std::env::var("EID_TEST_PKCS11_MODULE")
        .unwrap_or_else(|_| "/usr/lib/softhsm/libsofthsm2.so".into());
    if std::path::Path::new(&module).exists() {
        setups.push((TestBackend::Sqlite, Keys::SoftHsm, "SQLite, SoftHSM2"));
    }
    println!(
        "TSA load: {total} requests, {concurrency} clients in the same process; raw = TSU key (P-256) on 2 threads\n"
    );
    println!(
        "{:<24} {:>10} {:>12} {:>12} {:>8} {:>12} {:>10} {:>22}",
        "setup",
        "raw sig/s",
        "built tok/s",
        "HTTP tok/s",
        "of raw",
        "GET / req/s",
        "of GET /",
        "half load p50 / p99"
    );
    for (backend, keys, name) in setups {
        let tsa = runtime.block_on(Tsa::start(backend, keys, "", os_silent()));
        let url = format!("{}/tsa", tsa.url);
        let raw = raw_rate(&tsa.unit.signer);
        let built = token_rate(&tsa.unit);
        runtime.block_on(throughput(&url, 500, concurrency)); // warm-up
        let rate = runtime.block_on(throughput(&url, total, concurrency));
        let empty = runtime.block_on(ceiling(&tsa.url, total, concurrency));
        let (p50, p99, sent) = runtime.block_on(paced(&url, rate / 2.0, Duration::from_secs(5)));
        println!(
            "{:<24} {:>10.0} {:>12.0} {:>12.0} {:>7.0}% {:>12.0} {:>9.0}% {:>10.2} / {:.2} ms  ({sent} paced)",
            name,
            raw,
            built,
            rate,
            100.0 * rate / raw,
            empty,
            100.0 * rate / empty,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
        );
        drop(tsa);
    }
}
