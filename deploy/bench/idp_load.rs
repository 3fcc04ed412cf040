//! Load benchmark of the identity provider against a running `eid serve`, on SQLite and,
//! when `EID_TEST_POSTGRES_URL` names a server, on PostgreSQL (durable: every grant,
//! rotation and login is committed with its audit entry before the answer):
//! - client-credentials grants (`client_secret_basic`);
//! - refresh-token grants (each rotates the token; every worker follows its own chain);
//! - full code flows with an existing session: authorize → token → userinfo;
//! - the provider's resident memory idle and after the load.
//!
//! Beside them, the raw P-256 signing rate of this machine (one ES256 signature is the
//! floor of every token), measured in the same run.
//!
//! `cargo bench --bench idp_load` (optimised build; needs `curl` and `openssl` for the
//! one ID-card login that makes the session). Environment: `EID_BENCH_SECONDS` (5 per
//! workload), `EID_BENCH_CONCURRENCY` (32).
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{card_login, eid, free_address, output, percentile, resident_mb, serving, test_card};

#[path = "common.rs"]
mod common;

struct Server {
    /// The server process, stopped when this is dropped.
    process: common::Served,
    issuer: String,
    dir: tempfile::TempDir,
}

struct Setup {
    server: Server,
    client_id: String,
    secret: String,
    service_id: String,
    service_secret: String,
    session_cookie: String,
    browser_cookie: String,
}

const VERIFIER: &str = "bench-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";

fn challenge() -> String {
    use base64ct::Encoding;
    use sha2::Digest;
    base64ct::Base64UrlUnpadded::encode_string(&sha2::Sha256::digest(VERIFIER.as_bytes()))
}

fn start(database_url: Option<&str>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let envs = BTreeMap::from([
        ("EID_IDP_LISTEN", free_address()),
        ("EID_CA_LISTEN", free_address()),
        ("EID_IDP_CARD_LISTEN", free_address()),
        ("EID_ENROLMENT_CARD_LISTEN", "127.0.0.1:0".to_owned()),
        ("EID_SIGNING_LISTEN", "127.0.0.1:0".to_owned()),
        ("EID_ENROLMENT_LISTEN", "127.0.0.1:0".to_owned()),
    ]);
    let path = dir.path();
    let mut init = eid(path, database_url, &envs);
    init.arg("init");
    output(init);
    // A test ID card for the one login that makes the session.
    test_card(path, database_url, &envs, "3900101999999");
    let register = |extra: &[&str]| {
        let mut rp = eid(path, database_url, &envs);
        rp.args([
            "rp",
            "add",
            "--name",
            "Bench",
            "--redirect-uri",
            "http://127.0.0.1:9/cb",
        ]);
        rp.args(extra);
        let client: serde_json::Value = serde_json::from_str(&output(rp)).unwrap();
        (
            client["client_id"].as_str().unwrap().to_owned(),
            client["client_secret"].as_str().unwrap().to_owned(),
        )
    };
    let (client_id, secret) = register(&["--scope", "profile"]);
    let (service_id, service_secret) = register(&["--grant", "client_credentials"]);

    let mut serve = eid(path, database_url, &envs);
    serve.arg("serve");
    let child = serving(serve);
    let issuer = format!("http://{}", envs["EID_IDP_LISTEN"]);
    let server = Server {
        process: common::Served(child),
        issuer: issuer.clone(),
        dir,
    };

    // One login with the card (curl plays the browser), consenting to `profile`.
    let authorize = format!(
        "{issuer}/authorize?response_type=code&client_id={client_id}&scope=openid%20profile&\
         redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&code_challenge={}&code_challenge_method=S256",
        challenge()
    );
    card_login(server.dir.path(), &envs["EID_IDP_CARD_LISTEN"], &authorize);
    let jar = server.dir.path().join("jar");
    let cookies = std::fs::read_to_string(&jar).unwrap();
    let cookie = |name: &str| {
        cookies
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                (fields.len() == 7 && fields[5] == name).then(|| fields[6].to_owned())
            })
            .unwrap()
    };
    Setup {
        session_cookie: cookie("eid_session"),
        browser_cookie: cookie("eid_browser"),
        server,
        client_id,
        secret,
        service_id,
        service_secret,
    }
}

/// Runs `work` on `concurrency` workers for `seconds`; each call is one operation.
async fn drive<S, F, Fut>(
    concurrency: usize,
    seconds: u64,
    state: Vec<S>,
    work: F,
) -> (f64, Vec<Duration>)
where
    S: Send + 'static,
    F: Fn(reqwest::Client, S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = S> + Send,
{
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let work = Arc::new(work);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for (_, mut s) in (0..concurrency).zip(state) {
        let client = client.clone();
        let work = work.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                s = work(client.clone(), s).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    (all.len() as f64 / elapsed.as_secs_f64(), all)
}

async fn code_flow(client: &reqwest::Client, setup: &SharedSetup) -> serde_json::Value {
    let response = client
        .get(&setup.authorize)
        .header("cookie", &setup.cookies)
        .send()
        .await
        .unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let code = reqwest::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code: {location}"));
    let tokens: serde_json::Value = client
        .post(format!("{}/token", setup.issuer))
        .basic_auth(&setup.client_id, Some(&setup.secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(tokens["id_token"].is_string(), "{tokens}");
    tokens
}

struct SharedSetup {
    issuer: String,
    authorize: String,
    cookies: String,
    client_id: String,
    secret: String,
}

fn raw_p256_rate() -> f64 {
    use p256::{ecdsa::signature::Signer, elliptic_curve::Generate};
    let key = p256::ecdsa::SigningKey::try_generate_from_rng(&mut getrandom::SysRng).unwrap();
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < Duration::from_secs(2) {
        let _: p256::ecdsa::Signature = key.sign(&n.to_be_bytes());
        n += 1;
    }
    f64::from(n) / started.elapsed().as_secs_f64()
}

fn main() {
    let seconds: u64 = std::env::var("EID_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
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
    let p256 = raw_p256_rate();
    println!("reference, raw P-256 (ES256) signing on one core: {p256:.0}/s");
    println!(
        "{:<10} {:<40} {:>10} {:>10} {:>10}",
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
        let setup = start(database.as_ref().map(|d| d.url.as_str()));
        let pid = setup.server.process.0.id();
        let idle = resident_mb(pid);
        let issuer = setup.server.issuer.clone();
        let report = |workload: &str, (rate, latencies): (f64, Vec<Duration>), extra: String| {
            println!(
                "{:<10} {:<40} {:>10.0} {:>10.2?} {:>10.2?}{extra}",
                name,
                workload,
                rate,
                percentile(&latencies, 0.50),
                percentile(&latencies, 0.99)
            );
        };

        let (service_id, service_secret) = (setup.service_id.clone(), setup.service_secret.clone());
        let token_url = format!("{issuer}/token");
        let result = runtime.block_on(drive(
            concurrency,
            seconds,
            vec![(); concurrency],
            move |client, ()| {
                let (url, id, secret) = (
                    token_url.clone(),
                    service_id.clone(),
                    service_secret.clone(),
                );
                async move {
                    let response = client
                        .post(url)
                        .basic_auth(id, Some(secret))
                        .form(&[("grant_type", "client_credentials")])
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    let _ = response.bytes().await;
                }
            },
        ));
        let ratio = format!("   = {:.0}% of raw P-256 signing", 100.0 * result.0 / p256);
        report("client-credentials grant", result, ratio);

        let shared = Arc::new(SharedSetup {
            issuer: issuer.clone(),
            authorize: format!(
                "{issuer}/authorize?response_type=code&client_id={}&scope=openid%20profile&\
                 redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&code_challenge={}&\
                 code_challenge_method=S256",
                setup.client_id,
                challenge()
            ),
            cookies: format!(
                "eid_session={}; eid_browser={}",
                setup.session_cookie, setup.browser_cookie
            ),
            client_id: setup.client_id.clone(),
            secret: setup.secret.clone(),
        });

        // Refresh: every worker starts its own chain from a code flow.
        let starts: Vec<String> = runtime.block_on(async {
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let mut tokens = Vec::new();
            for _ in 0..concurrency {
                let t = code_flow(&client, &shared).await;
                tokens.push(t["refresh_token"].as_str().unwrap().to_owned());
            }
            tokens
        });
        let refresh_shared = shared.clone();
        let result = runtime.block_on(drive(concurrency, seconds, starts, move |client, token| {
            let shared = refresh_shared.clone();
            async move {
                let body: serde_json::Value = client
                    .post(format!("{}/token", shared.issuer))
                    .basic_auth(&shared.client_id, Some(&shared.secret))
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", &token)])
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                body["refresh_token"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{body}"))
                    .to_owned()
            }
        }));
        report("refresh-token grant (rotating)", result, String::new());

        let flow_shared = shared.clone();
        let result = runtime.block_on(drive(
            concurrency,
            seconds,
            vec![(); concurrency],
            move |client, ()| {
                let shared = flow_shared.clone();
                async move {
                    let tokens = code_flow(&client, &shared).await;
                    let info: serde_json::Value = client
                        .get(format!("{}/userinfo", shared.issuer))
                        .bearer_auth(tokens["access_token"].as_str().unwrap())
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    assert!(info["sub"].is_string());
                }
            },
        ));
        report("code flow: authorize+token+userinfo", result, String::new());
        println!(
            "{:<10} resident memory of the whole server: {idle:.0} MB idle, {:.0} MB after the load",
            name,
            resident_mb(pid)
        );
    }
}
