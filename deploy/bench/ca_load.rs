//! Load benchmark of the CA against a running `eid serve ca`: certificate issuance over
//! the registration authority's API (CSR in, certificate out, audit log on), on SQLite
//! and, when `EID_TEST_POSTGRES_URL` names a server, on PostgreSQL.
//!
//! `cargo bench --bench ca_load` (optimised build). Environment:
//! `EID_BENCH_CERTIFICATES` (default 4000 per backend), `EID_BENCH_CONCURRENCY` (32).
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use der::Encode;
use p256::elliptic_curve::Generate;
use x509_cert::builder::{Builder, RequestBuilder};

const TOKEN: &str = "bench-registration-authority-token-0123456789";

struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
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
        child,
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
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

/// The raw P-384 signing rate of this machine (the CA key's algorithm): a reference
/// measured in the same run.
fn raw_p384_signing_rate() -> f64 {
    use p384::ecdsa::signature::Signer;
    let key = p384::ecdsa::SigningKey::try_generate_from_rng(&mut getrandom::SysRng).unwrap();
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < Duration::from_secs(2) {
        let _: p384::ecdsa::Signature =
            key.sign(b"a TBS certificate of about this length, give or take a few hundred bytes");
        n += 1;
    }
    f64::from(n) / started.elapsed().as_secs_f64()
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
    let reference = raw_p384_signing_rate();
    println!("reference: raw P-384 ECDSA signing on one core: {reference:.0}/s");
    println!(
        "{:<10} {:>8} {:>12} {:>10} {:>10}",
        "backend", "certs", "certs/s", "p50", "p99"
    );
    for (name, admin) in backends {
        let database = admin.map(|admin| {
            let db = format!("eid_bench_{}", std::process::id());
            runtime.block_on(async {
                use sqlx::{Connection, Executor};
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
                conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
                    .await
                    .unwrap();
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                    .await
                    .unwrap();
            });
            format!("{}/{db}", admin.rsplit_once('/').unwrap().0)
        });
        let server = start(database.as_deref());
        let csrs = requests(count);
        // Warm-up: connections, caches, the first SQLite pages.
        runtime.block_on(issue_all(&server.url, requests(200), concurrency));
        let (elapsed, mut latencies) = runtime.block_on(issue_all(&server.url, csrs, concurrency));
        latencies.sort();
        println!(
            "{:<10} {:>8} {:>12.0} {:>10.2?} {:>10.2?}",
            name,
            latencies.len(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99)
        );
        drop(server);
    }
}
