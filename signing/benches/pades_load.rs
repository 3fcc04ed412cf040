//! Benchmark of PAdES B-T on a 1 MiB PDF through the two-step API, as a relying party
//! drives it: `prepare` (the PDF in base64 JSON; parse, incremental update, ByteRange
//! digest, storage, audit), the card's signature (a SoftHSM2 token with a PIN for
//! every signature, as the citizen's middleware would), then `finalize` (signature
//! check, OCSP at our responder, a signature time-stamp from our TSA, the CMS into the
//! PDF, storage, audit; the signed PDF back).
//!
//! Reported: p50 and p99 of each step and of the service's share (prepare + finalize)
//! one signature at a time, then the rate with `EID_BENCH_CONCURRENCY` relying parties
//! (default 4) at once. Client, service, CA and TSA share the process and both cores.
//! SQLite with the soft store always; PostgreSQL when `EID_TEST_POSTGRES_URL` is set.
//! The card needs SoftHSM2 (`EID_TEST_PKCS11_MODULE`, default Debian's path).
//!
//! `cargo bench -p eid-signing --bench pades_load`. `EID_BENCH_SIGNATURES` (default 200),
//! `EID_BENCH_PDF_BYTES` (default 1 MiB).
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

use base64ct::{Base64, Encoding};
use common::{
    Card, Keys, Tsa, os_silent,
    pdf::{Sample, sample},
};
use eid_tests::TestBackend;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How long each step of one signature took.
#[derive(Clone, Copy)]
struct Timing {
    prepare: Duration,
    card: Duration,
    finalize: Duration,
}

async fn one(client: &reqwest::Client, tsa: &Tsa, card: &Card, request: &str) -> Timing {
    let started = Instant::now();
    let response = client
        .post(format!("{}/api/v1/signatures/prepare", tsa.url))
        .bearer_auth(&tsa.api_token)
        .header("content-type", "application/json")
        .body(request.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let prepared: serde_json::Value = response.json().await.unwrap();
    let prepare = started.elapsed();

    let started = Instant::now();
    let tbs = Base64::decode_vec(prepared["data_to_be_signed"].as_str().unwrap()).unwrap();
    let signature = card.sign(tbs).await;
    let card_time = started.elapsed();

    let started = Instant::now();
    let id = prepared["id"].as_str().unwrap();
    let response = client
        .post(format!("{}/api/v1/signatures/{id}/finalize", tsa.url))
        .bearer_auth(&tsa.api_token)
        .header("content-type", "application/json")
        .header("accept", "application/pdf")
        .body(serde_json::json!({ "signature": Base64::encode_string(&signature) }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let signed = response.bytes().await.unwrap();
    assert!(signed.len() > 1024 * 1024 / 2, "not a signed PDF");
    Timing {
        prepare,
        card: card_time,
        finalize: started.elapsed(),
    }
}

fn percentiles(mut values: Vec<Duration>) -> (f64, f64) {
    values.sort();
    let at = |q: f64| {
        values[((values.len() as f64 * q) as usize).min(values.len() - 1)].as_secs_f64() * 1e3
    };
    (at(0.50), at(0.99))
}

async fn run(tsa: Arc<Tsa>, card: Arc<Card>, request: Arc<String>, total: usize, clients: usize) {
    let client = reqwest::Client::new();
    for _ in 0..5 {
        one(&client, &tsa, &card, &request).await; // warm-up
    }
    let mut timings = Vec::with_capacity(total);
    for _ in 0..total {
        timings.push(one(&client, &tsa, &card, &request).await);
    }
    let row = |name: &str, pick: &dyn Fn(&Timing) -> Duration| {
        let (p50, p99) = percentiles(timings.iter().map(pick).collect());
        println!("  {name:<28} p50 {p50:>8.1} ms   p99 {p99:>8.1} ms");
    };
    row("prepare", &|t| t.prepare);
    row("card signature (SoftHSM2)", &|t| t.card);
    row("finalize (OCSP, TSA, embed)", &|t| t.finalize);
    row("service: prepare + finalize", &|t| t.prepare + t.finalize);
    row("end to end", &|t| t.prepare + t.card + t.finalize);

    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (client, next) = (client.clone(), next.clone());
            let (tsa, card, request) = (tsa.clone(), card.clone(), request.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                    one(&client, &tsa, &card, &request).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    println!(
        "  {clients} relying parties at once: {:.1} signatures/s",
        total as f64 / started.elapsed().as_secs_f64()
    );
}

fn main() {
    let total = env_number("EID_BENCH_SIGNATURES", 200);
    let clients = env_number("EID_BENCH_CONCURRENCY", 4);
    let size = env_number("EID_BENCH_PDF_BYTES", 1024 * 1024);
    let module = std::env::var("EID_TEST_PKCS11_MODULE")
        .unwrap_or_else(|_| "/usr/lib/softhsm/libsofthsm2.so".into());
    if !std::path::Path::new(&module).exists() {
        println!("PAdES benchmark skipped: the card needs SoftHSM2 ({module} not found)");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pdf = sample(&Sample {
        pages: 5,
        size,
        ..Sample::default()
    });
    let mut setups = vec![(TestBackend::Sqlite, "SQLite, soft store")];
    if std::env::var("EID_TEST_POSTGRES_URL").is_ok() {
        setups.push((TestBackend::Postgres, "PostgreSQL, soft store"));
    }
    println!(
        "PAdES B-T: a {} octet PDF, {total} signatures one at a time, P-256 card on SoftHSM2\n",
        pdf.len()
    );
    for (backend, name) in setups {
        let (tsa, card) = runtime.block_on(async {
            let tsa = Tsa::start(backend, Keys::Soft, "", os_silent()).await;
            let card = Card::issue(&tsa, "3900101123456").await;
            (tsa, card)
        });
        let request = serde_json::json!({
            "certificate": card.certificate_pem,
            "format": "pades",
            "document": Base64::encode_string(&pdf),
            "level": "B-T",
        })
        .to_string();
        println!("{name}");
        runtime.block_on(run(
            Arc::new(tsa),
            Arc::new(card),
            Arc::new(request),
            total,
            clients,
        ));
        println!();
    }
}
